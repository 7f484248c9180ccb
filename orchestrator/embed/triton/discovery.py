"""Where a run's servers are: fixed addresses, DNS names and endpoint files, read again mid-run.

A `--server` value is `HOST:PORT` (fixed), `dns:///HOST:PORT` (every address HOST resolves to,
e.g. each ready pod behind a Kubernetes headless Service; resolved again every discovery
interval) or `file:///PATH` (a list of `HOST:PORT` lines with `#` comments, read again whenever
the file changes: how a Slurm job, a batch system or an operator tells running clients about
servers). `Discovery` turns the sources into the current address list; `EmbeddingClient` adds the
addresses that appear and retires the ones that go.
"""

from __future__ import annotations

import logging
import os
import re
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from orchestrator.errors import InputError, ServerUnavailable

log = logging.getLogger("orchestrator")

DNS_PREFIX = "dns:///"
FILE_PREFIX = "file:///"
DISCOVERY_INTERVAL_ENV = "VIRNUCPRO_DISCOVERY_INTERVAL"
DEFAULT_DISCOVERY_INTERVAL_S = 30.0
# An endpoint file is checked for changes (size, mtime) this often: a stat, nothing more.
FILE_POLL_S = 1.0

_HOST_PORT = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")
_ADDRESS_HELP = ("e.g. node1:8001; several: a:8001,b:8001; every address of a name: "
                 "dns:///name:8001; a list file: file:///path/servers.txt")

# The resolver's answers that a name has no address (a headless Service without ready pods);
# any other failure (EAI_AGAIN, a timeout) keeps the name's last answer.
_NO_SUCH_NAME = {socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)}

# (host, port) -> "ADDRESS:PORT" strings; socket.gaierror when the name does not resolve
Resolver = Callable[[str, int], list[str]]


def _host_port(text: str) -> str | None:
    match = _HOST_PORT.match(text)
    if match is None or not 0 < int(match.group(2)) < 65536:
        return None
    return text


def parse_servers(values: Iterable[str]) -> list[str]:
    """HOST:PORT addresses from repeated and/or comma-separated values, in order, without repeats.

    `dns:///HOST:PORT` and `file:///PATH` stay as they are (`Discovery` expands them); an endpoint
    file must be readable, list at least one endpoint and nothing else (InputError, exit 2).
    """
    urls: list[str] = []
    for value in values:
        for part in value.split(","):
            url = part.strip()
            if not url:
                continue
            if url.startswith(FILE_PREFIX):
                read_server_file(url[len(FILE_PREFIX) - 1:])  # checked now, read again later
            else:
                dns = url.startswith(DNS_PREFIX)
                address = url[len(DNS_PREFIX):] if dns else url.removeprefix("grpc://")
                if _host_port(address) is None:
                    raise InputError(f"server address {url!r} is not HOST:PORT ({_ADDRESS_HELP})")
                url = DNS_PREFIX + address if dns else address
            if url not in urls:
                urls.append(url)
    if not urls:
        raise InputError("no server address given (--server HOST:PORT)")
    return urls


def read_server_file(path: str) -> list[str]:
    """The endpoints an endpoint file lists: one HOST:PORT a line, `#` starts a comment."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"endpoint file {path}: cannot read it "
                         f"({getattr(exc, 'strerror', None) or exc})") from exc
    found: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        if _host_port(entry.removeprefix("grpc://")) is None:
            raise InputError(f"endpoint file {path} line {number}: {entry!r} is not HOST:PORT")
        if entry.removeprefix("grpc://") not in found:
            found.append(entry.removeprefix("grpc://"))
    if not found:
        raise InputError(f"endpoint file {path} lists no endpoint (one HOST:PORT a line)")
    return found


def discovery_interval(value: str | float | None) -> float:
    """Seconds between re-resolutions of dns:/// names: the value, else $VIRNUCPRO_DISCOVERY_INTERVAL,
    else 30 (InputError for anything but a positive number)."""
    if value is None:
        value = os.environ.get(DISCOVERY_INTERVAL_ENV) or DEFAULT_DISCOVERY_INTERVAL_S
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not seconds > 0 or seconds == float("inf"):
        raise InputError(f"discovery interval {value!r} is not a positive number of seconds "
                         f"(--discovery-interval or ${DISCOVERY_INTERVAL_ENV})")
    return seconds


def system_resolver(host: str, port: int) -> list[str]:
    """Every address `host` resolves to, as HOST:PORT ([IPv6]:PORT), in the resolver's order."""
    found: list[str] = []
    for family, _, _, _, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        ip = str(sockaddr[0])
        address = f"[{ip}]:{port}" if family == socket.AF_INET6 else f"{ip}:{port}"
        if address not in found:
            found.append(address)
    return found


def resolve_servers(urls: Iterable[str], resolver: Resolver = system_resolver) -> list[str]:
    """Each source replaced by its endpoints now (a name that does not resolve: ServerUnavailable);
    in order, without repeats."""
    out: list[str] = []
    for url in urls:
        try:
            found = _expand(url, resolver)
        except socket.gaierror as exc:
            raise ServerUnavailable(f"cannot resolve {url}: {exc.strerror}") from exc
        if url.startswith(DNS_PREFIX):
            log.info("%s: %d endpoint(s): %s", url, len(found), ", ".join(found))
        out.extend(a for a in found if a not in out)
    return out


def _expand(url: str, resolver: Resolver) -> list[str]:
    if url.startswith(DNS_PREFIX):
        host, _, port = url[len(DNS_PREFIX):].rpartition(":")
        return resolver(host.strip("[]"), int(port))
    if url.startswith(FILE_PREFIX):
        return read_server_file(url[len(FILE_PREFIX) - 1:])
    return [url]


@dataclass
class Discovery:
    """A run's server sources and what they list now.

    `poll(now)` re-reads what is due (endpoint files when they changed, names every `interval`
    seconds) and returns the new address list, or None when nothing changed. A name that does not
    exist or has no address gives no address (a headless Service without ready pods); any other
    failure mid-run (a resolver timeout or "try again", a file being rewritten) keeps the
    source's last answer.
    """

    urls: list[str]
    interval: float = DEFAULT_DISCOVERY_INTERVAL_S
    resolver: Resolver = system_resolver
    problems: dict[str, str] = field(default_factory=dict)  # source -> why it gave nothing
    _last: dict[str, list[str]] = field(default_factory=dict)
    _file_stamp: dict[str, tuple[int, int] | None] = field(default_factory=dict)
    _next_dns: float = 0.0
    _next_file: float = 0.0

    @property
    def dynamic(self) -> bool:
        """True when a source can change during the run (a name or an endpoint file)."""
        return any(u.startswith((DNS_PREFIX, FILE_PREFIX)) for u in self.urls)

    def describe(self) -> str:
        return ", ".join(u for u in self.urls if u.startswith((DNS_PREFIX, FILE_PREFIX)))

    def addresses(self) -> list[str]:
        """The current endpoints of every source, in order, without repeats."""
        out: list[str] = []
        for url in self.urls:
            out.extend(a for a in self._last.get(url, []) if a not in out)
        return out

    def refresh(self, now: float, *, force: bool = False) -> list[str] | None:
        """Read every due source again; the new address list when it changed, else None."""
        before = self.addresses()
        dns_due = force or now >= self._next_dns
        file_due = force or now >= self._next_file
        if dns_due:
            self._next_dns = now + self.interval
        if file_due:
            self._next_file = now + min(FILE_POLL_S, self.interval)
        for url in self.urls:
            if url.startswith(DNS_PREFIX) and dns_due:
                self._read_name(url)
            elif url.startswith(FILE_PREFIX) and file_due:
                self._read_file(url)
            elif url not in self._last and not url.startswith((DNS_PREFIX, FILE_PREFIX)):
                self._last[url] = [url]
        after = self.addresses()
        return after if after != before or force else None

    def _read_name(self, url: str) -> None:
        try:
            found = _expand(url, self.resolver)
        except OSError as exc:  # socket.gaierror included
            problem = f"cannot resolve {url}: {getattr(exc, 'strerror', None) or exc}"
            if getattr(exc, "errno", None) not in _NO_SUCH_NAME:
                # a resolver that could not answer (timeout, "try again") says nothing about
                # the servers: keep the last answer rather than retire every endpoint
                if problem != self.problems.get(url):
                    log.warning("warning: %s; keeping its previous %d endpoint(s)", problem,
                                len(self._last.get(url, [])))
                self.problems[url] = problem
                return
            found = []
            self.problems[url] = problem
        else:
            self.problems.pop(url, None)
        if found != self._last.get(url):
            log.info("%s: %d endpoint(s): %s", url, len(found), ", ".join(found) or "none")
        self._last[url] = found

    def _read_file(self, url: str) -> None:
        path = url[len(FILE_PREFIX) - 1:]
        try:
            st = os.stat(path)
            stamp: tuple[int, int] | None = (st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = None
        if url in self._last and stamp == self._file_stamp.get(url):
            return
        self._file_stamp[url] = stamp
        try:
            found = read_server_file(path)
        except InputError as exc:
            if url not in self._last:
                raise
            if str(exc) != self.problems.get(url):
                log.warning("warning: %s; keeping its previous %d endpoint(s)", exc,
                            len(self._last[url]))
            self.problems[url] = str(exc)
            return
        self.problems.pop(url, None)
        if url in self._last and found != self._last[url]:
            log.info("%s changed: %d endpoint(s): %s", url, len(found), ", ".join(found))
        self._last[url] = found
