"""Stage 3, embed: a window's frames -> DNABERT-S and ESM-2 vectors, from Triton servers
(`triton/`) or the same encoders in-process (`local`), behind one contract (`contract`)."""
