"""The documentation's style rules, checked on every page of docs/ and on README.md.

A page fails, with its file, line and the phrase, when it refers to files outside the repository,
when it reads like a development log (a diary phrase from DIARY below), when it is missing from
mkdocs.yml's nav, or when the committed command-line reference lacks an option that `--help`
lists. Plain file reading: no server, no subprocess.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [*sorted(DOCS.glob("*.md")), ROOT / "README.md"]

sys.path.insert(0, str(ROOT / "mkdocs_hooks"))
import cli_reference  # noqa: E402  (the generator of docs/cli.md)

# Files that live beside the repository during development, never in it.
OUTSIDE = re.compile(r"\.\./shared/|\b(?:REFERENCE|DESIGN|STYLE|MODELS)\.md\b")
# Phrases that describe a change instead of the tool as it is (pages are in the present tense).
DIARY = (
    "as before",
    "earlier versions",
    "no longer",
    "used to",
    "previously",
    "this issue",
    "now",
    "we added",
    "has been",
    "from now on",
    "new in this",
)
_DIARY = re.compile(r"\b(?:" + "|".join(re.escape(p) for p in DIARY) + r")\b", re.I)
_ISSUE = re.compile(r"\bissues? #?\d+", re.I)  # a work item, not a feature


def _lines(path: Path) -> list[tuple[int, str]]:
    """(number, text) of a page's prose lines: fenced code blocks are skipped (commands and
    program output are quoted, not written)."""
    out, fenced = [], False
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            out.append((n, line))
    return out


def _where(path: Path, n: int) -> str:
    return f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}:{n}"


def outside_references(pages: list[Path]) -> list[str]:
    return [f"{_where(p, n)}: refers to {m.group(0)!r}, which is not in the repository"
            for p in pages for n, line in _lines(p) for m in OUTSIDE.finditer(line)]


def diary_phrases(pages: list[Path]) -> list[str]:
    return [f"{_where(p, n)}: diary phrase {m.group(0)!r} (say what the tool does)"
            for p in pages for n, line in _lines(p)
            for prose in [_INLINE_CODE.sub("", line)]
            for m in [*_DIARY.finditer(prose), *_ISSUE.finditer(prose)]]


_INLINE_CODE = re.compile(r"`[^`]*`")  # code names things (`handle(now, event)`): not prose


def nav_pages(mkdocs_yml: str) -> set[str]:
    """The pages mkdocs.yml's nav lists."""
    nav = mkdocs_yml.split("\nnav:", 1)[1]
    return set(re.findall(r":\s*([\w./-]+\.md)\s*$", nav, re.M))


def test_no_page_refers_to_files_outside_the_repository():
    problems = outside_references(PAGES)
    assert not problems, "\n".join(problems)


def test_pages_are_in_the_present_tense_without_diary_phrases():
    problems = diary_phrases(PAGES)
    assert not problems, "\n".join(problems)


def test_the_checks_find_what_they_look_for(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# T\n\nAs before, see ../shared/REFERENCE.md (issue 34), `now`.\n\n```text\nnow\n```\n")
    assert [p.split(": ", 1)[1] for p in diary_phrases([page])] == [
        "diary phrase 'As before' (say what the tool does)",
        "diary phrase 'issue 34' (say what the tool does)"]
    assert len(outside_references([page])) == 2
    assert nav_pages("site_name: x\nnav:\n  - Home: index.md\n  - A:\n      - B b: b.md\n") == {
        "index.md", "b.md"}


def test_every_page_is_in_the_nav():
    listed = nav_pages((ROOT / "mkdocs.yml").read_text())
    missing = sorted(p.name for p in DOCS.glob("*.md") if p.name not in listed)
    assert not missing, f"pages missing from mkdocs.yml's nav: {', '.join(missing)}"


def test_the_committed_reference_has_every_help_option():
    page = (DOCS / "cli.md").read_text()
    missing = []
    for name, _, parser in cli_reference.commands():
        parts = page.split(f"\n## {name} {{#")
        if len(parts) < 2:
            missing.append(f"`{name}` (the whole command)")
            continue
        section = parts[1].split("\n## ")[0]
        for action in cli_reference.options(parser):
            for option in action.option_strings or [action.metavar or action.dest]:
                if f"`{option}" not in section:
                    missing.append(f"`{name} {option}`")
    assert not missing, "docs/cli.md lacks (run `make reference`): " + ", ".join(missing)


def test_the_predict_page_covers_every_predict_option():
    page = (DOCS / "predict.md").read_text()
    predict = next(parser for name, _, parser in cli_reference.commands()
                   if name == "orchestrator predict")
    missing = [option for action in cli_reference.options(predict)
               for option in action.option_strings if f"`{option}" not in page]
    assert not missing, "docs/predict.md lacks: " + ", ".join(missing)
