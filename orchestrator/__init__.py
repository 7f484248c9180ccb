"""VirNucPro on Triton: the client package and CLI.

OpenBLAS (numpy's BLAS) worker threads busy-wait for ~2^28 cycles after every call; between the
classifier's small per-window matmuls that spinning cost as much CPU as all the rest of the client
and took cores from a tritonserver on the same machine. A short timeout keeps BLAS multithreaded
for large matrices but lets idle workers sleep. Set here because OpenBLAS reads it once, when
numpy is first imported; a value already in the environment wins.
"""

import os

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

__version__ = "0.1.0"
