"""Triton entry point of the DNABERT-S nucleotide encoder; the work is in encoders.triton_adapter."""

from encoders.triton_adapter import EmbeddingModel


class TritonPythonModel(EmbeddingModel):
    kind = "dnabert_s"
