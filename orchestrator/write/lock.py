"""One live `predict` per output folder: an advisory lock on OUTDIR/.virnucpro.lock.

The kernel drops an flock when its process dies, however it dies, so a run killed with kill -9
never blocks the next one. The file holds the holder's pid, host and start time, to name it
when a second run is refused. (flock also locks across hosts on NFSv4 and most cluster file
systems; the host in the message helps when the other run is on another node.)
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType

from orchestrator.errors import InputError

LOCK_NAME = ".virnucpro.lock"


class OutdirLock:
    """Context manager: hold OUTDIR's lock for the run, or raise InputError (exit 2) naming the
    run that holds it."""

    def __init__(self, outdir: str | os.PathLike[str]) -> None:
        self.path = Path(outdir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(os.pread(fd, 4096, 0))
            os.close(fd)
            raise InputError(f"{self.path.parent} is in use by another orchestrator predict "
                             f"({holder}); wait for it to finish or choose another -o/--outdir"
                             ) from None
        except OSError:
            os.close(fd)
            raise
        holder = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Unlock; the file stays (removing it could let two runs lock two different files)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> OutdirLock:
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


def _describe(content: bytes) -> str:
    try:
        holder = json.loads(content.decode())
        return f"pid {holder['pid']} on host {holder['host']}, started {holder['started']}"
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return "pid and host unknown"
