"""`orchestrator call OUTDIR`: a finished run's calls again, with other thresholds, offline.

Everything the calls need stays in OUTDIR after `predict` (the summary and the chunk table in
the state folder), so tuning thresholds after the cluster job ended needs no server, no model and
no classifier: this reads those files and writes the same bytes a `predict` rerun with the same
options would. A folder that is not a finished run is refused before anything is written.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from orchestrator.classify.calls import CallSettings
from orchestrator.write.lock import OutdirLock
from orchestrator.write.rederive import (
    derive_answers,
    finished_run,
    run_sample,
    write_report_or_warn,
)

log = logging.getLogger("orchestrator")


def run_call(outdir: str | Path, settings: CallSettings, *, sample: str | None = None,
             report: bool = True) -> dict[str, Any]:
    """Re-derive OUTDIR's answers with `settings` (and `sample`, default the recorded one);
    returns the updated run record. Always writes, so a deleted or edited answer file is
    restored too."""
    settings.validate()
    _, recorded = finished_run(outdir)  # before the lock: a refused folder gets no lock file
    run_sample(recorded, sample)
    with OutdirLock(outdir):  # a predict into OUTDIR now would race this
        paths, run_json = finished_run(outdir)
        name = run_sample(run_json, sample)
        chunk_size = int(run_json["parameters"]["chunk_size"])
        derive_answers(paths, run_json, chunk_size, settings, name)
        log.info("wrote the calls of %s with the given thresholds (sample %s)", paths.outdir, name)
        if report:
            write_report_or_warn(paths)
    return run_json
