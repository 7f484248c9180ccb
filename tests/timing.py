"""Wall-clock margins scaled by this machine's measured speed: the one home for them.

A few tests assert promptness: a frozen server noticed within seconds, a signal obeyed while models
load, an offline export failing fast. Their bounds are written for the reference machine (2 cores,
tests, servers and other work sharing them) and multiplied by `slowness()`: how much longer than
there a cold start of our command line takes here, the step every one of these waits includes.
It is measured once, at first use, inside the running suite, so a loaded machine, one core
(`taskset -c 0`) or a slow disk widens every margin alike; a faster machine never narrows them.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from functools import cache
from pathlib import Path

# A cold `python -c "import orchestrator.commands.cli"`, median of 3, on the reference machine with
# the suite running beside it (measured 1.06-1.18 s at a load average of 11).
REFERENCE_CLI_IMPORT_S = 1.0
ROOT = Path(__file__).resolve().parents[1]


@cache
def slowness() -> float:
    """This machine's cold CLI import time over the reference's, at least 1."""
    times = []
    for _ in range(3):
        t0 = time.monotonic()
        subprocess.run([sys.executable, "-c", "import orchestrator.commands.cli"], check=True,
                       cwd=ROOT)
        times.append(time.monotonic() - t0)
    return max(1.0, statistics.median(times) / REFERENCE_CLI_IMPORT_S)


def margin(seconds: float) -> float:
    """`seconds` on the reference machine, scaled to this one."""
    return seconds * slowness()
