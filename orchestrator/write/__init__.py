"""Stage 5, write: output paths and formats, per-record tallies, checkpoints and the OUTDIR lock,
the embeddings file, the answers derived from a finished run, and the report."""
