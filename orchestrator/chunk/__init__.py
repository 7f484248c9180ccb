"""Stage 2, chunk: records -> chunks (the original's overlap arithmetic) -> six frames, kept when
stop-free (optionally only those in an annotated CDS) -> windows of frames."""
