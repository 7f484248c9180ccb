"""Triton entry point of the ESM-2 protein encoder; the work is in encoders.triton_adapter."""

from encoders.triton_adapter import EmbeddingModel


class TritonPythonModel(EmbeddingModel):
    kind = "esm2"
