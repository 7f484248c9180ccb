"""Benchmark of the weights check a server runs at load (encoders.repository.verify_weights).

The check is a sha256 of the version's weight files, read in 4 MiB blocks (encoders.common
.sha256_files). Measured side by side in one run: sha256 of a GIB-sized file through that
function (the file just written, so mostly from the page cache, as a weight file a node has read
before), and hashlib alone over the same bytes in memory (the CPU bound). The figures project the
cost for ESM-2 3B's checkpoint: about 2.84e9 parameters (36 layers of 2560 wide, FFN 10240),
so 11.4 GB in fp32 and 5.7 GB in fp16; DNABERT-S's 468 MB adds 4%.
Run alone: `.venv/bin/python bench/bench_weights_check.py [--gib N]`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from encoders.common import sha256_files  # noqa: E402

ESM2_3B_PARAMETERS = 36 * (4 * 2560 * 2560 + 2 * 2560 * 10240) + 33 * 2560
BLOCK = 1 << 24  # written and hashed in memory in 16 MiB pieces


def measure(gib: float) -> dict:
    size = int(gib * (1 << 30))
    block = os.urandom(BLOCK)
    with tempfile.TemporaryDirectory(prefix="bench-weights-") as tmp:
        path = Path(tmp) / "weights.pt"
        with open(path, "wb") as fh:
            for _ in range(size // BLOCK):
                fh.write(block)
        begin = time.perf_counter()
        sha256_files([path])
        file_s = time.perf_counter() - begin
    digest = hashlib.sha256()
    view = memoryview(block)
    begin = time.perf_counter()
    for _ in range(size // BLOCK):
        digest.update(view)
    memory_s = time.perf_counter() - begin
    file_gbps, memory_gbps = size / file_s / 1e9, size / memory_s / 1e9
    fp32, fp16 = ESM2_3B_PARAMETERS * 4, ESM2_3B_PARAMETERS * 2
    return {
        "file_gib": gib, "file_seconds": round(file_s, 2), "file_gb_per_s": round(file_gbps, 3),
        "memory_seconds": round(memory_s, 2), "memory_gb_per_s": round(memory_gbps, 3),
        "esm2_3b_fp32_gb": round(fp32 / 1e9, 1), "esm2_3b_fp16_gb": round(fp16 / 1e9, 1),
        "esm2_3b_fp32_check_s": round(fp32 / 1e9 / file_gbps, 1),
        "esm2_3b_fp16_check_s": round(fp16 / 1e9 / file_gbps, 1),
    }


def main(gib: float = 2.0) -> dict:
    figures = measure(gib)
    print(json.dumps(figures, indent=2))
    print(f"\nsummary: sha256 {figures['file_gb_per_s']} GB/s from a file "
          f"({figures['memory_gb_per_s']} GB/s in memory); ESM-2 3B check at load "
          f"{figures['esm2_3b_fp32_check_s']} s fp32 ({figures['esm2_3b_fp32_gb']} GB), "
          f"{figures['esm2_3b_fp16_check_s']} s fp16 ({figures['esm2_3b_fp16_gb']} GB)")
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=2.0, help="file size in GiB (default 2)")
    main(parser.parse_args().gib)
