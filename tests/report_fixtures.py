"""Synthetic finished-run folders for the report tests, and a real headless Chromium to open pages.

`make_outdir` writes the files `orchestrator predict` leaves in OUTDIR (run.json, sequence_calls.tsv,
chunk_scores.bedgraph, viral_regions.tsv) from random chunk scores, and returns what a correct
report must show. `render` opens a copy of a page in Chromium with a probe that records JS errors.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import numpy as np

CHUNK = 300
CALLS_HEADER = ("seq_id\tlength\tcall\tconfidence\tweighted_delta\tn_chunks\tn_confident_viral\t"
                "n_confident_nonviral\tn_ambiguous\tviral_proportion\tnonviral_proportion\n")
REGIONS_HEADER = ("seq_id\tregion_id\tstart\tend\tlength\tn_chunks\tn_viral_chunks\tmean_virus_score\t"
                  "max_virus_score\n")


@dataclass
class Expected:
    records: int = 0
    chunks: int = 0
    regions: int = 0
    most_viral: str | None = None  # seq_id of the viral row with the highest weighted_delta
    longest: list[str] = field(default_factory=list)  # seq_ids by length, longest first
    ids: list[str] = field(default_factory=list)


def make_outdir(outdir: Path, *, n_short: int, long_chunks: list[int], seed: int = 0,
                long_ids: list[str] | None = None, regions: bool = True, run_json: bool = True,
                no_frames_every: int = 97) -> Expected:
    """Write a finished run with `len(long_chunks)` long records (n chunks each) and `n_short` short ones.

    Scores are random (vectorised over all chunks, so 100k records take seconds); a record's call
    follows from its mean score. The rule does not matter to the report, only that columns and
    classes look like the pipeline's.
    """
    rng = np.random.default_rng(seed)
    outdir.mkdir(parents=True, exist_ok=True)
    exp = Expected()
    names = list(long_ids or []) + [f"long_{i}" for i in range(len(long_chunks) - len(long_ids or []))]
    ids = names + [f"contig_{i:06d}" for i in range(n_short)]
    lengths = np.concatenate([
        np.array(long_chunks, dtype=np.int64) * CHUNK - rng.integers(0, CHUNK // 2, size=len(long_chunks)),
        rng.integers(CHUNK // 2, 5 * CHUNK + 1, size=n_short),
    ])
    order = rng.permutation(len(ids))  # long records somewhere in the middle, not first
    ids = [ids[i] for i in order]
    lengths = lengths[order]
    n_rec = len(ids)
    n_chunks = np.maximum(1, -(-lengths // CHUNK))
    scored = np.ones(n_rec, dtype=bool)
    if no_frames_every:
        scored[5::no_frames_every] = False  # no-frames records: a calls row, no chunk scores

    # Chunk scores of every scored record, in file order.
    n_sc = n_chunks[scored]
    rec_of_chunk = np.repeat(np.flatnonzero(scored), n_sc)
    first = np.concatenate([[0], np.cumsum(n_sc)[:-1]])
    index_in_rec = np.arange(rec_of_chunk.size) - np.repeat(first, n_sc)
    viral_like = rng.random(n_rec) < 0.3
    long_rec = n_chunks > 200  # long records: mostly low with a few viral islands
    a = np.where(long_rec, 1.0, np.where(viral_like, 5.0, 1.2))[rec_of_chunk]
    b = np.where(long_rec, 8.0, np.where(viral_like, 1.5, 5.0))[rec_of_chunk]
    scores = rng.beta(a, b)
    for r in np.flatnonzero(long_rec & scored):
        base = first[np.searchsorted(np.flatnonzero(scored), r)]
        n = int(n_chunks[r])
        for s0 in rng.integers(0, n - 20, size=max(3, n // 150)):
            scores[base + s0:base + s0 + int(rng.integers(3, 20))] = rng.uniform(0.6, 1.0)
    scores = np.round(scores, 4)
    starts = index_in_rec * CHUNK
    ends = np.minimum(starts + CHUNK, lengths[rec_of_chunk])
    exp.chunks = int(scores.size)

    # Per-record numbers.
    wd = np.round(np.add.reduceat(2 * scores - 1, first) / n_sc, 3) if scores.size else np.zeros(0)
    n_vconf = np.add.reduceat(scores >= 0.9, first) if scores.size else np.zeros(0, int)
    n_nconf = np.add.reduceat(scores <= 0.1, first) if scores.size else np.zeros(0, int)
    vprop = np.add.reduceat(scores >= 0.5, first) / n_sc if scores.size else np.zeros(0)
    tiers = ("high", "moderate", "low", "review")
    calls_out = [CALLS_HEADER]
    best = (-math.inf, None)
    j = 0
    for k in range(n_rec):
        sid, length, n = ids[k], int(lengths[k]), int(n_chunks[k])
        if not scored[k]:
            calls_out.append(f"{sid}\t{length}\tno-frames\tNA\tNA\t{n}\t0\t0\t0\t0.000\t0.000\n")
            continue
        w = float(wd[j])
        call = "viral" if w > 0.2 else "non-viral" if w < -0.2 else "ambiguous"
        nv, nn = int(n_vconf[j]), int(n_nconf[j])
        calls_out.append(f"{sid}\t{length}\t{call}\t{tiers[k % 4]}\t{w:.3f}\t{n}\t{nv}\t{nn}\t{n - nv - nn}\t"
                         f"{vprop[j]:.3f}\t{1 - vprop[j]:.3f}\n")
        if call == "viral" and w > best[0]:
            best = (w, sid)
        j += 1
    (outdir / "sequence_calls.tsv").write_text("".join(calls_out))

    bed_out = ['track type=bedGraph name="virus score" description="VirNucPro chunk virus score"\n']
    bed_out += [f"{ids[r]}\t{s}\t{e}\t{v:.4f}\n" for r, s, e, v in
                zip(rec_of_chunk.tolist(), starts.tolist(), ends.tolist(), scores.tolist(), strict=True)]
    (outdir / "chunk_scores.bedgraph").write_text("".join(bed_out))

    if regions:  # runs of chunks >= 0.5 within one record
        viral = scores >= 0.5
        new_rec = index_in_rec == 0
        begin = np.flatnonzero(viral & (new_rec | ~np.concatenate([[False], viral[:-1]])))
        last_in_rec = np.concatenate([new_rec[1:], [True]])
        finish = np.flatnonzero(viral & (last_in_rec | ~np.concatenate([viral[1:], [False]])))
        reg_out = [REGIONS_HEADER]
        region_no: dict[int, int] = {}
        for c0, c1 in zip(begin.tolist(), finish.tolist(), strict=True):
            r = int(rec_of_chunk[c0])
            region_no[r] = region_no.get(r, 0) + 1
            seg = scores[c0:c1 + 1]
            start, end = int(starts[c0]) + 1, int(ends[c1])
            reg_out.append(f"{ids[r]}\t{ids[r]}_r{region_no[r]}\t{start}\t{end}\t{end - start + 1}\t{seg.size}\t"
                           f"{seg.size}\t{seg.mean():.3f}\t{seg.max():.3f}\n")
        exp.regions = len(reg_out) - 1
        (outdir / "viral_regions.tsv").write_text("".join(reg_out))

    if run_json:
        run = {
            "tool": "virnucpro-triton orchestrator", "version": "0.1.0", "finished": "2025-01-01T00:00:00+00:00",
            "parameters": {"inputs": ["reads<1>.fasta", "more & more.fa"], "outdir": str(outdir),
                           "chunk_size": CHUNK, "backend": "local", "servers": None, "restart": False},
            "backend": "local",
            "counts": {"records": n_rec, "bases": int(lengths.sum()), "chunks": exp.chunks,
                       "frames": exp.chunks * 6, "windows": 3},
            "input_lengths": {"n": n_rec, "min": int(lengths.min()), "max": int(lengths.max()),
                              "mean": round(float(lengths.mean()), 1), "fraction_short": 0.0,
                              "histogram": [{"lo": 0, "hi": 500, "count": int(np.sum(lengths < 500))},
                                            {"lo": 500, "hi": 1000,
                                             "count": int(np.sum((lengths >= 500) & (lengths < 1000)))},
                                            {"lo": 1000, "hi": None, "count": int(np.sum(lengths >= 1000))}]},
            "calls": {"viral_delta": 0.2, "nonviral_delta": -0.2, "confident_score": 0.9},
        }
        (outdir / "run.json").write_text(json.dumps(run, indent=2) + "\n")
    exp.records = n_rec
    exp.most_viral = best[1]
    exp.longest = [ids[i] for i in np.argsort(-lengths, kind="stable")]
    exp.ids = ids
    return exp


# --------------------------------------------------------------------------- Chromium

PROBE = """<script>
(function () {
  var errors = [];
  var root = document.documentElement;
  function record(msg) { errors.push(String(msg)); root.setAttribute('data-js-errors', JSON.stringify(errors)); }
  root.setAttribute('data-js-errors', '[]');
  window.addEventListener('error', function (e) {
    record((e.message || 'error') + ' at ' + (e.filename || '?') + ':' + (e.lineno || 0));
  });
  window.addEventListener('unhandledrejection', function (e) {
    record('unhandled rejection: ' + (e.reason && e.reason.message ? e.reason.message : e.reason));
  });
  window.addEventListener('load', function () {
    root.setAttribute('data-load-ms', String(Math.round(performance.now())));
    setTimeout(function () {
      try {
        var table = document.getElementById('calls-table');
        if (table) {
          var ths = table.tHead.rows[0].cells, col = -1;
          for (var i = 0; i < ths.length; i++) if (ths[i].textContent === 'length') col = i;
          if (col >= 0) {
            ths[col].click();  // numeric columns sort descending first
            var idCol = -1;
            for (var j = 0; j < ths.length; j++) if (ths[j].textContent === 'seq_id') idCol = j;
            var first = table.tBodies[0].rows[0];
            root.setAttribute('data-sorted-first', first.cells[idCol].textContent);
            root.setAttribute('data-sorted-length', first.cells[col].textContent);
          }
        }
      } catch (err) { record('probe: ' + err); }
      root.setAttribute('data-probe-done', '1');
    }, 200);
  });
})();
</script>"""

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass
class Rendered:
    dom: str
    seconds: float
    errors: list[str]
    figures: dict[str, tuple[int, int]]  # plotly div id -> (main-svg count, plot-container count)
    attrs: dict[str, str]  # attributes of <html> after the probe ran


class _FigureScan(HTMLParser):
    """Counts the plotly-rendered elements inside each `plotly-graph-div`, and <html>'s attributes."""

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, str | None]] = []  # (tag, figure id this element opens)
        self.current: list[str] = []  # open figure ids, innermost last
        self.figures: dict[str, list[int]] = {}
        self.html_attrs: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        classes = a.get("class", "").split()
        if tag == "html":
            self.html_attrs = a
        if self.current:
            fig = self.figures[self.current[-1]]
            fig[0] += "main-svg" in classes
            fig[1] += "plot-container" in classes
        opened = None
        if "plotly-graph-div" in classes:
            opened = a.get("id", f"anon-{len(self.figures)}")
            self.figures[opened] = [0, 0]
            self.current.append(opened)
        if tag in self.VOID:
            if opened:
                self.current.pop()
            return
        self.stack.append((tag, opened))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in self.VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        while self.stack:  # tolerate omitted end tags: pop to the matching element
            open_tag, opened = self.stack.pop()
            if opened:
                self.current.pop()
            if open_tag == tag:
                return


def render(page: Path, workdir: Path, *, timeout: float = 60.0) -> Rendered:
    """Open a probed copy of `page` in headless Chromium (network blocked) and parse the dumped DOM."""
    assert CHROMIUM is not None
    text = page.read_text(encoding="utf-8")
    assert text.count("<head>") >= 1
    probe = page.with_name(page.stem + ".probe.html")
    probe.write_text(text.replace("<head>", "<head>\n" + PROBE, 1), encoding="utf-8")
    profile = workdir / "chromium-profile"
    cmd = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        f"--user-data-dir={profile}", "--run-all-compositor-stages-before-draw",
        "--virtual-time-budget=10000", "--host-resolver-rules=MAP * ~NOTFOUND",
        "--no-first-run", "--dump-dom", probe.resolve().as_uri(),
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - t0
    assert proc.returncode == 0, f"chromium exit {proc.returncode}:\n{proc.stderr[-3000:]}"
    dom = proc.stdout
    scan = _FigureScan()
    scan.feed(dom)
    scan.close()
    errors = json.loads(scan.html_attrs.get("data-js-errors", '["probe never ran"]'))
    return Rendered(dom=dom, seconds=seconds, errors=errors,
                    figures={k: (v[0], v[1]) for k, v in scan.figures.items()}, attrs=scan.html_attrs)
