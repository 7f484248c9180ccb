"""examples/README.md is a worked example: its command runs, every file its table names is
written, and every excerpt starts with the real first line of that file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from predict_fixtures import run_cli

pytestmark = pytest.mark.server  # runs `orchestrator predict` as a subprocess

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "examples" / "README.md"


def _excerpts(text: str) -> dict[str, str]:
    """File name -> first line of the ```text block under its `#### `name`` heading."""
    return {m["name"]: m["first"] for m in re.finditer(
        r"^#### `(?P<name>[^`]+)`\n(?:.*\n)*?```text\n(?P<first>.*)\n", text, re.M)}


def test_the_worked_example_shows_the_files_its_command_writes(demo_artifacts, tmp_path):
    text = README.read_text()
    command = re.search(r"orchestrator predict (.+?)\n\s*--classifier .*?\n\s*--backend local .*\n",
                        text)
    assert command and "examples/example.fa -o example_out --chunk-size 300" in command.group(0)
    out = tmp_path / "example_out"
    proc = run_cli("predict", str(ROOT / "examples" / "example.fa"), "-o", str(out),
                   "--chunk-size", "300", "--classifier",
                   str(demo_artifacts / "classifiers" / "300_model.pth"), "--backend", "local",
                   "--model-repository", str(demo_artifacts / "model_repository"))
    assert proc.returncode == 0, proc.stderr
    table = text.split("## The files, and how to read each")[1].split("\n\n")[1]
    named = re.findall(r"`([\w.]+\.(?:txt|csv|tsv|bed|bedgraph|html|json))`", table)
    assert len(named) >= 12
    missing = [name for name in named if not (out / name).is_file()]
    assert not missing, missing
    written = {p.name for p in out.iterdir() if p.is_file() and not p.name.startswith(".")}
    assert written <= set(named), sorted(written - set(named))
    excerpts = _excerpts(text)
    assert len(excerpts) >= 8
    for name, first in excerpts.items():
        if name == "run.json":
            continue
        assert (out / name).read_text().splitlines()[0] == first, name
