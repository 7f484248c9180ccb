"""Scenario files: the cluster, the clients and the faults a run is simulated (or run) with.

A scenario is YAML (see docs/scale.md). Every key is checked here, once, so the simulator and the
real runner can trust what they get; a mistake is one `ScenarioError` naming the key (exit 2).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.embed.priority import PRIORITIES
from orchestrator.errors import InputError
from orchestrator.pipeline.options import DEFAULT_LOOKAHEAD, DEFAULT_WINDOW

FAULT_KINDS = ("kill", "freeze", "stuck", "restart", "add", "remove")
# Faults a server comes back from after `back_after_s` (restart comes back at once, refused).
RECOVERABLE = ("kill", "freeze", "stuck")
GPU_CURVES = ("h200",)


class ScenarioError(InputError):
    """A scenario file that cannot be run: the message names the key (exit 2)."""


@dataclass(frozen=True)
class Server:
    """One Triton server serving both models with the same settings.

    `request_ms`: a fixed time per executed batch (toy servers), or None when `gpu` names a
    measured service curve (rows and tokens decide the time). `batching`: Triton's dynamic batcher
    (off: one request is one execution, as the benches' toy servers run).
    """

    index: int
    instances: int
    max_batch: int
    queue_delay_ms: float
    max_queue: int
    request_ms: float | None
    gpu: str | None
    batching: bool
    network_ms: float
    overhead_ms: float = 0.0  # per execution beyond request_ms (Python backend, gRPC, shared CPU)


@dataclass(frozen=True)
class ClientGroup:
    """`count` identical `predict` runs: `frames` frames each, in windows, both models."""

    count: int
    frames: int
    priority: str
    start_s: float
    window: int
    lookahead: int
    batch: int
    tokens_per_frame: int
    user: str
    startup_s: float = 0.0  # process start to first request (imports, classifier, server checks)
    frames_per_cpu_s: float = 0.0  # client work per window (read, translate, classify); 0: free


@dataclass(frozen=True)
class Fault:
    at_s: float
    kind: str
    servers: tuple[int, ...]
    back_after_s: float | None


@dataclass(frozen=True)
class Scenario:
    seed: int
    servers: tuple[Server, ...]
    clients: tuple[ClientGroup, ...]
    faults: tuple[Fault, ...]
    policy: dict[str, Any] = field(default_factory=dict)
    discovery_interval_s: float = 5.0
    until_s: float | None = None

    def client_count(self) -> int:
        return sum(g.count for g in self.clients)

    def initially_listed(self) -> set[int]:
        """Servers in the discovery list at the start: all but those an `add` fault brings."""
        added = {i for f in self.faults if f.kind == "add" for i in f.servers}
        return {s.index for s in self.servers} - added


_TOP = {"seed", "servers", "clients", "faults", "policy", "discovery_interval_s", "until_s"}
_SERVER = {"count", "instances", "max_batch", "queue_delay_ms", "max_queue", "request_ms", "gpu",
           "batching", "network_ms", "overhead_ms"}
_CLIENT = {"count", "frames", "priority", "start_s", "window", "lookahead", "batch",
           "tokens_per_frame", "user", "startup_s",
           "frames_per_cpu_s"}
_FAULT = {"at_s", "kind", "server", "back_after_s"}


def _unknown(where: str, given: dict[str, Any], known: set[str]) -> None:
    extra = sorted(set(given) - known)
    if extra:
        raise ScenarioError(f"{where}{extra[0]}: unknown key (known: {', '.join(sorted(known))})")


def _number(where: str, value: Any, minimum: float = 0.0, integer: bool = False,
            above: bool = False) -> Any:
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise ScenarioError(f"{where}: {value!r} is not {'an integer' if integer else 'a number'}")
    if value < minimum or (above and value == minimum):
        raise ScenarioError(f"{where}: {value!r} must be {'>' if above else '>='} {minimum:g}")
    return value


def _mapping(where: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ScenarioError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def _list(where: str, value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise ScenarioError(f"{where}: expected a list, got {type(value).__name__}")
    return value


def _servers(groups: list[Any]) -> tuple[Server, ...]:
    out: list[Server] = []
    for g, raw in enumerate(groups):
        at = f"servers[{g}]."
        group = _mapping(f"servers[{g}]", raw)
        _unknown(at, group, _SERVER)
        count = _number(at + "count", group.get("count", 1), 1, integer=True)
        gpu = group.get("gpu")
        if gpu is not None and gpu not in GPU_CURVES:
            raise ScenarioError(f"{at}gpu: {gpu!r} is not one of {', '.join(GPU_CURVES)}")
        request = group.get("request_ms")
        if (request is None) == (gpu is None):
            raise ScenarioError(f"{at}request_ms: give request_ms (toy server) or gpu, not both or neither")
        if isinstance(request, list):
            if len(request) != count:
                raise ScenarioError(f"{at}request_ms: {len(request)} values for count {count}")
            times = [_number(f"{at}request_ms[{i}]", r, 0, above=True) for i, r in enumerate(request)]
        else:
            times = [None if request is None else _number(at + "request_ms", request, 0, above=True)] * count
        batching = group.get("batching", True)
        if not isinstance(batching, bool):
            raise ScenarioError(f"{at}batching: {batching!r} is not true or false")
        common = dict(
            instances=_number(at + "instances", group.get("instances", 1), 1, integer=True),
            max_batch=_number(at + "max_batch", group.get("max_batch", 64), 1, integer=True),
            queue_delay_ms=_number(at + "queue_delay_ms", group.get("queue_delay_ms", 0)),
            max_queue=_number(at + "max_queue", group.get("max_queue", 0), 0, integer=True),
            gpu=gpu, batching=batching,
            network_ms=_number(at + "network_ms", group.get("network_ms", 0.5)),
            overhead_ms=_number(at + "overhead_ms", group.get("overhead_ms", 0)))
        out += [Server(index=len(out) + i, request_ms=t, **common) for i, t in enumerate(times)]
    return tuple(out)


def _clients(groups: list[Any]) -> tuple[ClientGroup, ...]:
    out = []
    for g, raw in enumerate(groups):
        at = f"clients[{g}]."
        group = _mapping(f"clients[{g}]", raw)
        _unknown(at, group, _CLIENT)
        priority = group.get("priority", "normal")
        if priority not in PRIORITIES:
            raise ScenarioError(f"{at}priority: {priority!r} is not one of {', '.join(PRIORITIES)}")
        user = group.get("user", f"group{g}")
        if not isinstance(user, str) or not user:
            raise ScenarioError(f"{at}user: {user!r} is not a name")
        out.append(ClientGroup(
            count=_number(at + "count", group.get("count", 1), 1, integer=True),
            frames=_number(at + "frames", group.get("frames"), 1, integer=True),
            priority=priority,
            start_s=float(_number(at + "start_s", group.get("start_s", 0))),
            window=_number(at + "window", group.get("window", DEFAULT_WINDOW), 1, integer=True),
            lookahead=_number(at + "lookahead", group.get("lookahead", DEFAULT_LOOKAHEAD), 0,
                              integer=True),
            batch=_number(at + "batch", group.get("batch", 64), 1, integer=True),
            tokens_per_frame=_number(at + "tokens_per_frame", group.get("tokens_per_frame", 52), 1,
                                     integer=True),
            user=user,
            startup_s=float(_number(at + "startup_s", group.get("startup_s", 0))),
            frames_per_cpu_s=float(_number(at + "frames_per_cpu_s", group.get("frames_per_cpu_s", 0)))))
    return tuple(out)


def _faults(items: list[Any], servers: int) -> tuple[Fault, ...]:
    out = []
    for n, raw in enumerate(items):
        at = f"faults[{n}]."
        fault = _mapping(f"faults[{n}]", raw)
        _unknown(at, fault, _FAULT)
        kind = fault.get("kind")
        if kind not in FAULT_KINDS:
            raise ScenarioError(f"{at}kind: {kind!r} is not one of {', '.join(FAULT_KINDS)}")
        target = fault.get("server")
        targets = target if isinstance(target, list) else [target]
        if not targets:
            raise ScenarioError(f"{at}server: names no server")
        for i, t in enumerate(targets):
            where = at + ("server" if not isinstance(target, list) else f"server[{i}]")
            _number(where, t, 0, integer=True)
            if t >= servers:
                raise ScenarioError(f"{where}: {t} is not a server (0..{servers - 1})")
        back = fault.get("back_after_s")
        if back is not None:
            if kind not in RECOVERABLE:
                raise ScenarioError(f"{at}back_after_s: a {kind} fault does not come back")
            back = float(_number(at + "back_after_s", back, 0, above=True))
        out.append(Fault(at_s=float(_number(at + "at_s", fault.get("at_s"))), kind=kind,
                         servers=tuple(targets), back_after_s=back))
    return tuple(sorted(out, key=lambda f: f.at_s))


def parse(data: Any) -> Scenario:
    """The checked scenario from its parsed YAML."""
    top = _mapping("scenario", data)
    _unknown("", top, _TOP)
    servers = _servers(_list("servers", top.get("servers")))
    if not servers:
        raise ScenarioError("servers: at least one server group is needed")
    clients = _clients(_list("clients", top.get("clients")))
    if not clients:
        raise ScenarioError("clients: at least one client group is needed")
    policy = _mapping("policy", top.get("policy") or {})
    until = top.get("until_s")
    scenario = Scenario(
        seed=_number("seed", top.get("seed", 1), 0, integer=True),
        servers=servers, clients=clients,
        faults=_faults(_list("faults", top.get("faults") or []), len(servers)),
        policy=dict(policy),
        discovery_interval_s=float(_number("discovery_interval_s", top.get("discovery_interval_s", 5.0),
                                           0, above=True)),
        until_s=None if until is None else float(_number("until_s", until, 0, above=True)))
    if not scenario.initially_listed():
        raise ScenarioError("faults: every server is brought by an add fault; none is there at the start")
    return scenario


def load(path: str | Path) -> Scenario:
    """Read and check a scenario file; any problem is one ScenarioError line."""
    import yaml

    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ScenarioError(f"{path}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ScenarioError(f"{path}: not YAML{where}: {getattr(exc, 'problem', exc)}") from None
    return parse(data)
