"""The replay log: the events a run fed its `Dispatcher`, and their replay into a fresh one.

`--debug-dispatch FILE` (or $VIRNUCPRO_DEBUG_DISPATCH) makes the client write one JSON line per
event: first a header (the run's setup, policy and random seed), then `{"t", "event", "actions"}`.
`python -m orchestrator.embed.dispatch.replay FILE` feeds the events to a fresh core and checks
that it takes the same actions: how an odd run is reproduced exactly, without a server.
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Iterator
from typing import IO, Any

from orchestrator.embed.dispatch.core import Dispatcher
from orchestrator.embed.dispatch.events import Action, Event, RunSetup, from_json, to_json
from orchestrator.embed.dispatch.policy import Policy
from orchestrator.errors import InputError

DEBUG_DISPATCH_ENV = "VIRNUCPRO_DEBUG_DISPATCH"
FORMAT = "virnucpro-dispatch-log"
VERSION = 1


class Recorder:
    """Writes a run's events and actions to `path` (one JSON line each, flushed per line, so a
    run that crashes leaves a readable log)."""

    def __init__(self, path: str) -> None:
        try:
            self._fh: IO[str] = open(path, "w", encoding="utf-8")  # noqa: SIM115 (closed by close())
        except OSError as exc:
            raise InputError(f"--debug-dispatch {path}: cannot write it ({exc.strerror})") from exc

    def header(self, setup: RunSetup, policy: Policy, seed: int) -> None:
        """The first line: what a fresh core needs to take the same decisions."""
        self._line({"format": FORMAT, "version": VERSION, "setup": setup.to_json(),
                    "policy": policy.to_json(), "seed": seed})

    def write(self, now: float, event: Event, actions: list[Action]) -> None:
        self._line({"t": now, "event": to_json(event), "actions": [to_json(a) for a in actions]})

    def _line(self, record: dict[str, Any]) -> None:
        self._fh.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def read_log(path: str) -> tuple[Dispatcher, Iterator[tuple[int, float, Event, list[Any]]]]:
    """A fresh core set up as the logged run's, and the logged (line, time, event, actions).
    InputError when the file is not a replay log (or is cut short inside a line)."""
    try:
        fh = open(path, encoding="utf-8")  # noqa: SIM115 (closed by the generator)
        header = _parse(fh.readline(), path, 1)
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"replay log {path}: cannot read it "
                         f"({getattr(exc, 'strerror', None) or exc})") from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        fh.close()
        raise InputError(f"replay log {path}: not a dispatch log (no {FORMAT} header on line 1; "
                         "write one with --debug-dispatch FILE)")
    if header.get("version") != VERSION:
        fh.close()
        raise InputError(f"replay log {path}: version {header.get('version')!r}, this tool reads "
                         f"version {VERSION}")
    try:
        core = Dispatcher(RunSetup.from_json(header["setup"]), Policy(**header["policy"]),
                          random.Random(header["seed"]))
    except (KeyError, TypeError, ValueError) as exc:
        fh.close()
        raise InputError(f"replay log {path} line 1: a broken header ({exc})") from exc

    def lines() -> Iterator[tuple[int, float, Event, list[Any]]]:
        with fh:
            for number, text in enumerate(fh, 2):
                record = _parse(text, path, number)
                try:
                    yield number, float(record["t"]), from_json(record["event"]), record["actions"]
                except (KeyError, TypeError, ValueError) as exc:
                    raise InputError(f"replay log {path} line {number}: not an event "
                                     f"({exc})") from exc

    return core, lines()


def _parse(text: str, path: str, number: int) -> Any:
    if not text.endswith("\n"):
        raise InputError(f"replay log {path} line {number}: cut short (the run was killed while "
                         "writing it?)" if text else f"replay log {path}: empty")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"replay log {path} line {number}: not JSON ({exc.msg})") from exc


def replay(path: str) -> tuple[int, list[str]]:
    """Feed the log's events to a fresh core: (events replayed, the lines whose actions differ)."""
    core, lines = read_log(path)
    count = 0
    differences = []
    for number, now, event, logged in lines:
        got = [to_json(a) for a in core.handle(now, event)]
        count += 1
        if got != logged:
            differences.append(f"line {number}: logged {json.dumps(logged)[:200]}, "
                               f"replayed {json.dumps(got)[:200]}")
    return count, differences


def main(argv: list[str] | None = None, stdout: IO[str] | None = None,
         stderr: IO[str] | None = None) -> int:
    """`python -m orchestrator.embed.dispatch.replay FILE`: 0 when the replay takes the logged
    actions, 1 when it differs, 2 for a file that is not a replay log."""
    out, err = stdout or sys.stdout, stderr or sys.stderr
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m orchestrator.embed.dispatch.replay FILE (a --debug-dispatch log)",
              file=err)
        return 2
    try:
        count, differences = replay(args[0])
    except InputError as exc:
        print(f"error: {exc}", file=err)
        return 2
    for line in differences[:10]:
        print(line, file=out)
    verdict = (f"{len(differences)} of them took other actions" if differences
               else "every one took the logged actions")
    print(f"{args[0]}: {count} events replayed; {verdict}", file=out)
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
