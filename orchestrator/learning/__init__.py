"""Kept vectors and new classifiers: `embed` to an HDF5 file, `train`, `evaluate` and its metrics."""
