"""The command-line reference page (docs/cli.md), written from the argparse parsers.

The page is committed, so it reads on GitHub as well as on the site. Regenerate it after changing
an option or a help text:

    make reference        # = python -m mkdocs_hooks.cli_reference --write

tests/test_docs.py fails, naming the command and option, when the committed page differs from
what the parsers generate (`--check` does the same from the command line). It also uses
`commands()` to refuse an option without help text. The environment variables and the exit codes
of each command are stated here, their names and defaults imported from the code that reads them.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "cli.md"
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
    params: dict[str, object] = {**vars(action), "prog": parser.prog}
    try:
        return text % params
    except (KeyError, TypeError, ValueError):
        return text


def _summary(parser: argparse.ArgumentParser) -> str:
    """The first line of a program's description."""
    return (parser.description or "").strip().split("\n")[0]


def _anchor(command: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", command.lower()).strip("-")


COMMON_EXITS = ("0 success, 2 bad input or usage, 3 a server or model unavailable, 130/143 "
                "interrupted, 1 anything else")


def exit_codes() -> dict[str, dict[int, str]]:
    """Per command, the exit codes whose meaning differs from the common rule."""
    from orchestrator.commands.status import EXIT_DISAGREE, EXIT_NONE_USABLE, EXIT_OK

    return {
        "orchestrator compare": {
            0: "every call agrees and every chunk is within --max-score-diff",
            1: "the runs differ (calls, or chunks over the tolerance)",
            2: "the runs cannot be compared (other inputs, chunk size, classifier type or call "
               "thresholds; an unfinished run; a missing file or malformed row)",
        },
        "orchestrator status": {
            EXIT_OK: "at least one endpoint usable, and the usable ones agree on the weights",
            EXIT_DISAGREE: "usable endpoints disagree on the models (predict would refuse to run)",
            EXIT_NONE_USABLE: "no endpoint usable (predict would stop)",
        },
    }


def environment() -> list[tuple[str, str, str]]:
    """(variable, default, meaning) of every environment variable the commands read."""
    from orchestrator.embed.dispatch.replay import DEBUG_DISPATCH_ENV
    from orchestrator.embed.priority import DEFAULT_PRIORITY, PRIORITY_ENV
    from orchestrator.embed.triton.discovery import DEFAULT_DISCOVERY_INTERVAL_S, DISCOVERY_INTERVAL_ENV
    from orchestrator.embed.triton.lockdown import ADMIN_KEY_ENV
    from orchestrator.embed.triton.startup import (
        CONNECT_TIMEOUT_ENV,
        DEFAULT_CONNECT_TIMEOUT_S,
        DEFAULT_REQUEST_TIMEOUT_S,
        DEFAULT_RETRY_DEADLINE_S,
        REQUEST_TIMEOUT_ENV,
        RETRY_DEADLINE_ENV,
    )
    from orchestrator.pipeline.options import DEFAULT_SERVER, SERVER_ENV

    return [
        (SERVER_ENV, DEFAULT_SERVER, "the servers when --server is not given (same syntax: "
         "host:port lists, dns:///, file:///)"),
        (PRIORITY_ENV, DEFAULT_PRIORITY, "the request priority when --priority is not given "
         "(high, normal, low)"),
        (DISCOVERY_INTERVAL_ENV, f"{DEFAULT_DISCOVERY_INTERVAL_S:g}", "seconds between "
         "re-resolutions of dns:/// server names when --discovery-interval is not given"),
        (CONNECT_TIMEOUT_ENV, f"{DEFAULT_CONNECT_TIMEOUT_S:g}", "seconds a server has to answer "
         "at the start of a run (connect, health, model settings)"),
        (REQUEST_TIMEOUT_ENV, f"{DEFAULT_REQUEST_TIMEOUT_S:g}", "seconds one inference request "
         "may take"),
        (RETRY_DEADLINE_ENV, f"{DEFAULT_RETRY_DEADLINE_S:g}", "seconds a run keeps retrying "
         "while no server answers, before it ends with exit 3 (finished work kept)"),
        (DEBUG_DISPATCH_ENV, "unset (no log)", "a file that `predict` and `embed` write the "
         "dispatch core's events to, one JSON line each, when --debug-dispatch is not given "
         "(replayed by `python -m orchestrator.embed.dispatch.replay FILE`)"),
        (ADMIN_KEY_ENV, "unset (administrative calls refused to everyone)", "the admin key of "
         "`orchestrator serve` and of the server image when --admin-key is not given; with it "
         "`orchestrator status` also says why a model failed to load"),
    ]


# argparse wraps usage lines at the terminal's width ($COLUMNS): the page is rendered at this one,
# so it is the same on every machine.
PAGE_COLUMNS = "100"


def render() -> str:
    """The whole page, in Markdown, the same wherever it is rendered."""
    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = PAGE_COLUMNS
    try:
        return _render()
    finally:
        if previous is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = previous


def _render() -> str:
    rows = list(commands())
    out = [
        "# Command-line reference",
        "",
        "Generated from the commands' own argument parsers by `make reference`, so it says what "
        "`--help` says (a test fails when the two differ).",
        "",
        "| command | what it does |",
        "|---|---|",
    ]
    out += [f"| [`{name}`](#{_anchor(name)}) | {_cell(text or _summary(parser))} |"
            for name, text, parser in rows]
    special = exit_codes()
    out += ["", "## Exit codes {#exit-codes}", "",
            "Every command exits 0 on success, 2 on bad input or usage, 3 when a server or model is "
            "unavailable, 130 when interrupted by Ctrl-C (SIGINT) and 143 by SIGTERM, and 1 "
            "otherwise (see [bad input](inputs.md#bad-input-and-exit-codes)); a run interrupted or "
            "stopped by exit 3 keeps its finished work. These commands' codes say more:", "",
            "| command | exit code | meaning |", "|---|---|---|"]
    out += [f"| `{name}` | {code} | {_cell(text)} |"
            for name, codes in special.items() for code, text in sorted(codes.items())]
    out += ["", "## Environment variables {#environment}", "",
            "An option given on the command line wins over its variable.", "",
            "| variable | default | meaning |", "|---|---|---|"]
    out += [f"| `{name}` | {_cell(default)} | {_cell(text)} |"
            for name, default, text in environment()]
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
        if name in special:
            out += ["", "Exit codes: " + "; ".join(f"{code} {text}" for code, text
                                                   in sorted(special[name].items())) + "; "
                    "otherwise as every command ([exit codes](#exit-codes))."]
        else:
            out += ["", f"Exit codes: {COMMON_EXITS} ([exit codes](#exit-codes))."]
        if parser.epilog:
            out += ["", "```text", parser.epilog.strip(), "```"]
    return "\n".join(out) + "\n"


def _sections(page: str) -> dict[str, list[str]]:
    """A page's lines per `## ` section (the part before the first: "")."""
    sections: dict[str, list[str]] = {"": []}
    current = ""
    for line in page.splitlines():
        if line.startswith("## "):
            current = line[3:].split(" {#")[0]
            sections[current] = []
        sections[current].append(line)
    return sections


def differences(committed: str, generated: str) -> list[str]:
    """Where the committed page differs from the generated one: per section (a command, the exit
    codes, the environment), the option or line that differs."""
    have, want = _sections(committed), _sections(generated)
    problems = []
    for name in dict.fromkeys([*want, *have]):
        if name not in have:
            problems.append(f"`{name or 'the introduction'}` is missing from the committed page")
            continue
        if name not in want:
            problems.append(f"`{name}` is on the committed page but no parser generates it")
            continue
        for line in difflib.unified_diff(have[name], want[name], lineterm="", n=0):
            if line.startswith(("---", "+++", "@@")):
                continue
            option = re.match(r"[-+]\| (`[^|]*`) \|", line)
            what = f"option {option.group(1)}" if option else f"line {line[1:]!r}"
            verb = ("committed, not generated as is" if line[0] == "-"
                    else "generated, not committed as is")
            problems.append(f"`{name or 'the introduction'}`: {what} {verb}")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    """`--write` the page, or `--check` it (exit 1, listing the differences, when it is stale)."""
    parser = argparse.ArgumentParser(prog="python -m mkdocs_hooks.cli_reference",
                                     description="Write or check docs/cli.md from the parsers.")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="write docs/cli.md")
    mode.add_argument("--check", action="store_true", help="exit 1 when docs/cli.md is stale")
    args = parser.parse_args(argv)
    page = render()
    if args.write:
        PAGE.write_text(page)
        print(f"wrote {PAGE.relative_to(ROOT)}")
        return 0
    problems = differences(PAGE.read_text() if PAGE.is_file() else "", page)
    for problem in problems:
        print(f"{PAGE.relative_to(ROOT)}: {problem}", file=sys.stderr)
    if problems:
        print("regenerate it with `make reference`", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
