"""The golden files are what their provenance note (tests/golden/README.md) says they are."""

from __future__ import annotations

import csv
import hashlib

from golden_data import BROAD, GOLDEN


def manifest_rows() -> dict[str, dict[str, str]]:
    rows = {}
    for folder in (GOLDEN, BROAD):
        with open(folder / "MANIFEST.tsv", newline="") as fh:
            for row in csv.DictReader(fh, delimiter="\t"):
                rows[str((folder / row["file"]).relative_to(GOLDEN))] = row
    return rows


def test_every_golden_file_matches_its_manifest_row() -> None:
    rows = manifest_rows()
    on_disk = {str(p.relative_to(GOLDEN)) for p in GOLDEN.rglob("*")
               if p.is_file() and p.name not in ("MANIFEST.tsv", "README.md")}
    assert on_disk == set(rows), "files and manifest rows differ"
    for name, row in rows.items():
        data = (GOLDEN / name).read_bytes()
        assert len(data) == int(row["bytes"]), name
        assert hashlib.sha256(data).hexdigest() == row["sha256"], name
