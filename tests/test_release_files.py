"""The release files a user and a citation manager read: CITATION.cff is valid Citation File
Format 1.2.0 (checked against its JSON Schema, vendored in tests/data: no network) and names this
version; CHANGELOG.md follows Keep a Changelog with this version's entry; LICENSE is MIT and states
the terms of the models next to it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[1]
VERSION = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)


def _citation() -> dict:
    # YAML 1.2 reads dates and numbers as the schema expects once dumped to JSON and back
    return json.loads(json.dumps(yaml.safe_load((ROOT / "CITATION.cff").read_text()), default=str))


def test_citation_is_valid_cff_1_2_0_for_this_version():
    schema = json.loads((ROOT / "tests" / "data" / "cff-1.2.0-schema.json").read_text())
    citation = _citation()
    validator = jsonschema.Draft7Validator(schema, format_checker=jsonschema.FormatChecker())
    problems = [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
                for e in validator.iter_errors(citation)]
    assert not problems, "\n".join(problems)
    assert citation["version"] == VERSION and citation["license"] == "MIT"
    titles = " ".join(r["title"] for r in citation["references"])
    assert "VirNucPro" in titles and "DNABERT-S" in titles and "protein structure" in titles


def test_the_schema_check_refuses_what_cff_refuses():
    schema = json.loads((ROOT / "tests" / "data" / "cff-1.2.0-schema.json").read_text())
    broken = {k: v for k, v in _citation().items() if k != "authors"}
    broken["cff-version"] = "1.2"
    errors = list(jsonschema.Draft7Validator(schema).iter_errors(broken))
    assert len(errors) >= 2


def test_changelog_follows_keep_a_changelog_with_this_version():
    text = (ROOT / "CHANGELOG.md").read_text()
    assert text.startswith("# Changelog\n") and "Keep a Changelog" in text
    versions = re.findall(r"^## \[([^\]]+)\](?: - (\d{4}-\d{2}-\d{2}))?$", text, re.M)
    assert versions[0] == ("Unreleased", "")
    assert versions[1][0] == VERSION and versions[1][1], versions
    sections = re.findall(r"^### (\w+)$", text, re.M)
    assert sections and set(sections) <= {"Added", "Changed", "Deprecated", "Removed", "Fixed",
                                          "Security"}


def test_license_is_mit_and_states_the_models_terms():
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n")
    for work in ("ESM-2", "DNABERT-S", "VirNucPro classifiers"):
        assert work in text, work
