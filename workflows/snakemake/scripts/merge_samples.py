"""One row per sample from each sample's predict folder: sample, records, chunks scored, viral
chunks, fraction viral.

    python merge_samples.py OUT.tsv results/A/run.json results/B/run.json ...

The sample is the name of the folder holding run.json; records come from run.json, chunks from
prediction_results_highestscore.csv (one row per chunk with a scored frame, Is_Virus True/False).
"""

from __future__ import annotations

import csv
import json
import os
import sys
import tempfile
from pathlib import Path

COLUMNS = ("sample", "records", "chunks_scored", "viral_chunks", "fraction_viral")


def sample_row(run_json: Path) -> dict[str, str]:
    folder = run_json.parent
    records = json.loads(run_json.read_text())["counts"]["records"]
    chunks = viral = 0
    with open(folder / "prediction_results_highestscore.csv", newline="") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            chunks += 1
            viral += row["Is_Virus"] == "True"
    fraction = f"{viral / chunks:.4f}" if chunks else "NA"
    return {"sample": folder.name, "records": str(records), "chunks_scored": str(chunks),
            "viral_chunks": str(viral), "fraction_viral": fraction}


def merge(out: Path, run_jsons: list[Path]) -> None:
    rows = sorted((sample_row(p) for p in run_jsons), key=lambda r: r["sample"])
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.")
    with os.fdopen(fd, "w", newline="") as fh:
        writer = csv.DictWriter(fh, COLUMNS, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, out)


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(f"usage: {sys.argv[0]} OUT.tsv RUN_JSON...")
    merge(Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]])
