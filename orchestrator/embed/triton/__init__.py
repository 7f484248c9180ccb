"""Triton: the gRPC client spreading requests over many servers (`client`), one server as the
client sees it (`endpoints`), and the tritonserver launcher behind `orchestrator serve` (`server`)."""
