"""`make bench`: every benchmark of the project, one after the other, figures printed side by side.

Each bench module measures our path and its baseline in the same run and returns its figures;
this script only runs them and prints one summary at the end.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_cluster  # noqa: E402
import bench_dedup  # noqa: E402
import bench_discovery  # noqa: E402
import bench_dispatch_scale  # noqa: E402
import bench_embeddings  # noqa: E402
import bench_inputs  # noqa: E402
import bench_predict  # noqa: E402
import bench_prepare  # noqa: E402
import bench_reads  # noqa: E402
import bench_shard  # noqa: E402
import bench_simulation  # noqa: E402
import bench_tenancy  # noqa: E402
import bench_triton  # noqa: E402
import bench_weights_check  # noqa: E402


def main() -> int:
    figures = {}
    for name, module in (("prepare", bench_prepare), ("inputs", bench_inputs), ("triton", bench_triton),
                         ("predict", bench_predict), ("cluster", bench_cluster),
                         ("embeddings", bench_embeddings), ("tenancy", bench_tenancy),
                         ("dedup", bench_dedup), ("reads", bench_reads), ("shard", bench_shard),
                         ("discovery", bench_discovery), ("weights_check", bench_weights_check),
                         ("simulation", bench_simulation), ("dispatch scale", bench_dispatch_scale)):
        print(f"\n=== bench: {name} ===", flush=True)
        figures[name] = module.main()
    print("\n=== summary (JSON) ===")
    print(json.dumps(figures, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
