"""The documentation: the site builds strictly, every command-line option says what it does, and
the landing README stays a landing page.

A broken link or anchor fails with the page and line that hold it; an option without help text
fails with the file and line of its `add_argument`.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README_MAX_LINES = 200  # issue 26: a landing page, the rest lives in the site

sys.path.insert(0, str(ROOT / "mkdocs_hooks"))
import cli_reference  # noqa: E402  (the generator the site's build runs)

# mkdocs' link and anchor warnings name the page and the link, not the line
_LINK_WARNING = re.compile(r"Doc file '(?P<page>[^']+)' contains (?:a|an unrecognized relative) link "
                           r"'(?P<link>[^']+)'")


def _located(message: str) -> str:
    """A warning of mkdocs prefixed with docs/PAGE:LINE of the link it is about."""
    match = _LINK_WARNING.search(message)
    if not match:
        return message
    page = DOCS / match["page"]
    lines = page.read_text().splitlines() if page.is_file() else []
    target = match["link"].lstrip("#")
    number = next((i for i, line in enumerate(lines, 1) if target in line), 0)
    return f"docs/{match['page']}:{number}: {message}"


@pytest.mark.workflow
def test_the_site_builds_strictly_with_every_link_and_anchor_resolved(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                           str(tmp_path / "site")], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})  # no theme banner in the log
    problems = [_located(line) for line in proc.stderr.splitlines() if "WARNING" in line or "ERROR" in line]
    assert proc.returncode == 0 and not problems, "\n".join(problems) + "\n\n" + proc.stderr[-3000:]
    reference = (tmp_path / "site" / "cli" / "index.html").read_text()
    assert "orchestrator predict" in reference and "--dedup-memory" in reference


def test_link_warnings_are_located_at_their_line():
    message = ("WARNING -  Doc file 'operating.md' contains a link 'many-servers.md#servers-that-go-away', "
               "but the doc 'many-servers.md' does not contain an anchor '#servers-that-go-away'.")
    page, line, _ = _located(message).split(":", 2)
    assert page == "docs/operating.md"
    assert "many-servers.md#servers-that-go-away" in (DOCS / "operating.md").read_text().splitlines()[int(line) - 1]


def _record_definitions(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every add_argument / add_parser remember the file and line that called it."""

    def recording(original):
        def call(self, *args, **kwargs):
            made = original(self, *args, **kwargs)
            caller = sys._getframe(1)
            where = os.path.relpath(caller.f_code.co_filename, ROOT)
            made.defined_at = f"{where}:{caller.f_lineno}"
            return made
        return call

    monkeypatch.setattr(argparse._ActionsContainer, "add_argument",
                        recording(argparse._ActionsContainer.add_argument))
    monkeypatch.setattr(argparse._SubParsersAction, "add_parser",
                        recording(argparse._SubParsersAction.add_parser))


def _undocumented(commands: Iterator[tuple[str, str | None, argparse.ArgumentParser]]) -> list[str]:
    """FILE:LINE: what lacks help, for every command without a one-line help and every
    argument or option without help text."""
    missing = []
    for name, text, parser in commands:
        if text is None and not parser.description:
            missing.append(f"{getattr(parser, 'defined_at', '?')}: `{name}` has no help or description")
        elif text is not None and not text.strip():
            missing.append(f"{getattr(parser, 'defined_at', '?')}: `{name}` has no help")
        for action in cli_reference.options(parser):
            if not (action.help or "").strip() or action.help == argparse.SUPPRESS:
                label = "/".join(action.option_strings) or action.dest
                missing.append(f"{getattr(action, 'defined_at', '?')}: `{name} {label}` has no help text")
    return missing


def test_every_command_and_option_has_help_text(monkeypatch):
    _record_definitions(monkeypatch)
    commands = list(cli_reference.commands())
    names = [name for name, _, _ in commands]
    assert {"orchestrator predict", "orchestrator serve", "orchestrator status", "python -m export demo",
            "python -m export pretrained"} <= set(names)
    missing = _undocumented(iter(commands))
    assert not missing, "\n".join(missing)


def test_an_option_without_help_is_named_with_its_file_and_line(monkeypatch):
    _record_definitions(monkeypatch)
    parser = argparse.ArgumentParser(prog="toy", description="a toy command")
    parser.add_argument("--documented", help="says what it does")
    line = sys._getframe().f_lineno + 1
    parser.add_argument("--silent")
    sub = parser.add_subparsers()
    sub.add_parser("quiet")
    (problem, quiet) = _undocumented(iter([("toy", None, parser), ("toy quiet", "", sub.choices["quiet"])]))
    assert problem == f"tests/test_docs.py:{line}: `toy --silent` has no help text"
    assert quiet.endswith("`toy quiet` has no help")


def test_the_reference_lists_every_option_of_every_command():
    page = cli_reference.render()
    for name, _, parser in cli_reference.commands():
        section = page.split(f"\n## {name} {{#")[1].split("\n## ")[0]
        for action in cli_reference.options(parser):
            for option in action.option_strings or [action.metavar or action.dest]:
                assert option in section, (name, option)


def test_the_readme_is_a_landing_page():
    readme = (ROOT / "README.md").read_text()
    lines = readme.splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail into docs/"
    top = "\n".join(lines[:12])
    assert "make demo" in top and "make test" in top  # the two set-up commands come first
    for target in re.findall(r"\]\((?!https?://|#)([^)#]+)", readme):
        assert (ROOT / target).exists(), f"README.md links to {target}, which does not exist"
    assert "docs/" in readme and re.search(r"^## .*cite", readme, re.I | re.M)
