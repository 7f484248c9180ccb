"""What goes into `Dispatcher` (events) and what comes out (actions), and their JSON form.

Every event is handed over with the current time (`Dispatcher.handle(now, event)`); an action is
an instruction to the driver (the gRPC client, a simulator, a replay). The JSON form is the
replay log's: one object per event or action, `"type"` naming its class.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from orchestrator.embed.dispatch.identity import ModelSettings

# Reply outcomes: the answer is good (OK), could not be read (MALFORMED: the run fails unless
# another copy answered first), the server sheds load (BUSY: retry later, never a failure), the
# call failed for a reason of the server or connection (FAILED: re-send elsewhere), or the server
# rejected the request itself (REJECTED: the run fails).
OK, MALFORMED, BUSY, FAILED, REJECTED = "ok", "malformed", "busy", "failed", "rejected"
OUTCOMES = (OK, MALFORMED, BUSY, FAILED, REJECTED)
# Fail's exit class: no server answered long enough (exit 3) or anything else (exit 1).
UNAVAILABLE, ERROR = "unavailable", "error"


# -- events ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Request:
    """One request of a window: `rows` strings of `model`. Ids grow with submission order."""

    id: int
    model: str
    rows: int


@dataclass(frozen=True)
class StartEndpoint:
    """An endpoint at start: its settings if it came up (else None) and why not; `listed`:
    still listed by its discovery source (else it starts "gone")."""

    url: str
    settings: dict[str, ModelSettings] | None
    error: str = ""
    listed: bool = True


@dataclass(frozen=True)
class Start:
    """The first event: every endpoint the run starts with (up ones are admitted)."""

    endpoints: tuple[StartEndpoint, ...]


@dataclass(frozen=True)
class Submit:
    """A window's requests (possibly none); handed back with `Finished(window)`."""

    window: int
    requests: tuple[Request, ...]


@dataclass(frozen=True)
class Reply:
    """The answer to `Send(token)`: an outcome of OUTCOMES and the error text, if any."""

    token: int
    outcome: str
    detail: str = ""


@dataclass(frozen=True)
class Liveness:
    """The answer to `CheckLive(url, epoch)`: live, or no answer within the timeout."""

    url: str
    epoch: int
    live: bool


@dataclass(frozen=True)
class Identity:
    """After `Connect(url, epoch)`: the endpoint is live and ready and serves these settings."""

    url: str
    epoch: int
    settings: dict[str, ModelSettings]


@dataclass(frozen=True)
class Unreachable:
    """After `Connect(url, epoch)`: a probe failed (the driver keeps probing)."""

    url: str
    epoch: int
    error: str


@dataclass(frozen=True)
class Listed:
    """The discovery sources' current address list (in order)."""

    addresses: tuple[str, ...]


@dataclass(frozen=True)
class Tick:
    """Time passed: backoffs end, liveness checks fall due, requests become overdue."""


Event = Start | Submit | Reply | Liveness | Identity | Unreachable | Listed | Tick


# -- actions -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Send:
    """Send request `request` (of `model`, pinned `version`, Triton `priority`) to `url`; its
    answer comes back as `Reply(token)`. A hedged request has several tokens."""

    token: int
    request: int
    url: str
    model: str
    version: str
    priority: int


@dataclass(frozen=True)
class Cancel:
    """Cancel the call of `token` (a hedged copy that lost); its Reply is ignored."""

    token: int


@dataclass(frozen=True)
class Connect:
    """Open a fresh channel to `url` (closing the old one ends its calls), then probe it until it
    is live and ready: report `Identity(url, epoch, ...)`, or `Unreachable` per failed probe."""

    url: str
    epoch: int


@dataclass(frozen=True)
class Close:
    """Close the channel to `url`: it is refused or no longer listed."""

    url: str


@dataclass(frozen=True)
class CheckLive:
    """Ask `url` "live?" within `timeout` seconds; report `Liveness(url, epoch, live)`."""

    url: str
    epoch: int
    timeout: float


@dataclass(frozen=True)
class Marked:
    """An endpoint changed state ("up", "down", "refused", "gone") for `reason`."""

    url: str
    state: str
    reason: str = ""


@dataclass(frozen=True)
class Deliver:
    """The answer of `token` is request `request`'s result (the first answer of its copies)."""

    token: int
    request: int


@dataclass(frozen=True)
class Finished:
    """Every request of `window` is delivered: hand it back."""

    window: int


@dataclass(frozen=True)
class Fail:
    """The run cannot go on: UNAVAILABLE (exit 3) or ERROR (exit 1), with the sentence to show."""

    exit_class: str
    message: str


@dataclass(frozen=True)
class Log:
    """A line for the run's log ("info" or "warning")."""

    level: str
    message: str


Action = Send | Cancel | Connect | Close | CheckLive | Marked | Deliver | Finished | Fail | Log

_TYPES: dict[str, type] = {t.__name__: t for t in (
    Start, Submit, Reply, Liveness, Identity, Unreachable, Listed, Tick,
    Send, Cancel, Connect, Close, CheckLive, Marked, Deliver, Finished, Fail, Log)}


def to_json(item: Any) -> dict[str, Any]:
    """An event or action as a JSON-ready dict."""
    return {"type": type(item).__name__, **dataclasses.asdict(item)}


def _settings(value: dict[str, Any] | None) -> dict[str, ModelSettings] | None:
    if value is None:
        return None
    return {m: ModelSettings(**{**s, "versions": tuple(s.get("versions", ()))})
            for m, s in value.items()}


def from_json(data: Any) -> Any:
    """The event or action of `to_json`; ValueError (or TypeError, KeyError) when it is not one."""
    if not isinstance(data, dict) or data.get("type") not in _TYPES:
        raise ValueError(f"not an event or action: {str(data)[:80]}")
    kind = _TYPES[data["type"]]
    fields = {k: v for k, v in data.items() if k != "type"}
    if kind is Start:
        fields["endpoints"] = tuple(
            StartEndpoint(e["url"], _settings(e["settings"]), e["error"], e["listed"])
            for e in fields["endpoints"])
    elif kind is Submit:
        fields["requests"] = tuple(Request(**r) for r in fields["requests"])
    elif kind is Identity:
        fields["settings"] = _settings(fields["settings"])
    elif kind is Listed:
        fields["addresses"] = tuple(fields["addresses"])
    return kind(**fields)


@dataclass
class RunSetup:
    """What a run fixed at start: the pinned identity, versions, request sizes and priority, and
    the discovery sources' description (for log lines)."""

    reference: dict[str, ModelSettings]
    versions: dict[str, str]
    batch_size: dict[str, int]
    priority: int = 0
    sources: str = ""

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunSetup:
        return cls(**{**data, "reference": _settings(data["reference"])})
