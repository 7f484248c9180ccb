"""Choose and open the embedding backend of a run: Triton servers, or the encoders in-process.

Each backend is imported only when chosen, so a Triton run never imports torch and an
in-process run never imports the gRPC client.
"""

from __future__ import annotations

from orchestrator.embed.contract import EmbeddingBackend
from orchestrator.embed.triton.endpoints import ConnectionOptions
from orchestrator.errors import InputError

BACKENDS = ("triton", "local")


def open_backend(backend: str, *, servers: list[str], model_repository: str | None,
                 batch_size: int | None, max_in_flight: int | None,
                 connection: ConnectionOptions | None, priority: str | None = None,
                 model_versions: dict[str, str] | None = None,
                 discovery_interval: str | None = None,
                 debug_dispatch: str | None = None) -> EmbeddingBackend:
    if backend == "triton":
        from orchestrator.embed.triton.client import EmbeddingClient

        return EmbeddingClient(servers, batch_size=batch_size, max_in_flight=max_in_flight,
                               options=connection, priority=priority,
                               model_versions=model_versions,
                               discovery_interval_s=discovery_interval,
                               debug_dispatch=debug_dispatch)
    if backend == "local":
        from orchestrator.embed.local import LocalBackend

        return LocalBackend(model_repository)
    raise InputError(f"unknown backend {backend!r} (triton or local)")
