"""The command-line reference page (cli.md), written from the argparse parsers at build time.

An MkDocs hook (mkdocs.yml `hooks:`): every `mkdocs build` renders each command's usage,
description and options from the same `build_parser()` the commands run, so the page cannot
drift from `--help`. tests/test_docs.py uses `commands()` to refuse an option without help text.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Iterator
from typing import Any

PAGE = "cli.md"
# (program as users type it, module:function that builds its parser)
PROGRAMS: tuple[tuple[str, str], ...] = (
    ("orchestrator", "orchestrator.commands.cli:build_parser"),
    ("python -m export", "export.cli:build_parser"),
)


def _builder(spec: str) -> Callable[[], argparse.ArgumentParser]:
    import importlib

    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, str | None, argparse.ArgumentParser]]:
    """(name, help, parser) of each subcommand, in declaration order."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            found += [(name, helps.get(name), sub) for name, sub in action.choices.items()]
    return found


def commands() -> Iterator[tuple[str, str | None, argparse.ArgumentParser]]:
    """Every documented command: (full command line, its one-line help, its parser). The
    programs themselves come first with help None (their description says what they are)."""
    for program, spec in PROGRAMS:
        parser = _builder(spec)()
        yield program, None, parser
        for name, text, sub in _subcommands(parser):
            yield f"{program} {name}", text, sub


def options(parser: argparse.ArgumentParser) -> Iterator[argparse.Action]:
    """The parser's own arguments and options (not --help, not the subcommand selector)."""
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        yield action


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell (no HTML, no emphasis, no column breaks)."""
    text = " ".join(text.split())
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace("*", "\\*")


def _names(action: argparse.Action) -> str:
    if not action.option_strings:
        return f"`{action.metavar or action.dest}`"
    metavar = ""
    if action.nargs != 0:
        metavar = action.metavar or (
            "{" + ",".join(map(str, action.choices)) + "}" if action.choices else action.dest.upper())
        metavar = f" {metavar}" + (" ..." if action.nargs in ("+", "*") else "")
    return ", ".join(f"`{name}{metavar}`" for name in action.option_strings)


def _default(action: argparse.Action) -> str:
    if action.required:
        return "required"
    if action.nargs == 0 or action.default in (None, argparse.SUPPRESS, [], ()):
        return ""
    return f"`{action.default}`"


def _help(action: argparse.Action, parser: argparse.ArgumentParser) -> str:
    text = action.help or ""
    params: dict[str, Any] = {**vars(action), "prog": parser.prog}
    try:
        return text % params
    except (KeyError, TypeError, ValueError):
        return text


def _summary(parser: argparse.ArgumentParser) -> str:
    """The first line of a program's description."""
    return (parser.description or "").strip().split("\n")[0]


def _anchor(command: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", command.lower()).strip("-")


def render() -> str:
    """The whole page, in Markdown."""
    rows = list(commands())
    out = [
        "# Command-line reference",
        "",
        "Generated from the commands' own argument parsers each time the site is built, so it "
        "says what `--help` says. Every command exits 0 on success, 2 on bad input or usage, "
        "3 when a server or model is unavailable, 130/143 when interrupted and 1 otherwise "
        "(see [exit codes](inputs.md#bad-input-and-exit-codes)).",
        "",
        "| command | what it does |",
        "|---|---|",
    ]
    out += [f"| [`{name}`](#{_anchor(name)}) | {_cell(text or _summary(parser))} |"
            for name, text, parser in rows]
    for name, text, parser in rows:
        out += ["", f"## {name} {{#{_anchor(name)}}}", ""]
        description = (parser.description or text or "").strip()
        if "\n" in description:  # laid out by hand (RawDescriptionHelpFormatter): keep its lines
            out += ["```text", description, "```", ""]
        elif description:
            out += [description.replace("<", "&lt;").replace("*", "\\*"), ""]
        usage = parser.format_usage().removeprefix("usage: ").strip()
        out += ["```text", usage, "```", ""]
        acts = list(options(parser))
        if acts:
            out += ["| argument or option | default | meaning |", "|---|---|---|"]
            out += [f"| {_names(a)} | {_cell(_default(a))} | {_cell(_help(a, parser))} |" for a in acts]
        if parser.epilog:
            out += ["", "```text", parser.epilog.strip(), "```"]
    return "\n".join(out) + "\n"


def on_files(files: Any, config: Any) -> Any:
    """MkDocs hook: add cli.md, rendered now, to the site's files."""
    from mkdocs.structure.files import File

    files.append(File.generated(config, PAGE, content=render()))
    return files
