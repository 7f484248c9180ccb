"""One self-contained HTML page (OUTDIR/report.html) summarising a finished run.

The page must open anywhere, offline, and stay small and responsive however large the run was:
plotly's JavaScript is inlined once, nothing is fetched from the network, and every input file is
streamed line by line into fixed-size summaries (top-N heaps, fixed-bin histograms, per-track
bins), so memory and page size do not grow with the number of chunks or records.
"""

from __future__ import annotations

import heapq
import html
import json
import math
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.atomic import write_atomic
from orchestrator.errors import InputError
from orchestrator.write.formats import CALLS_COLUMNS
from orchestrator.write.paths import BEDGRAPH_NAME, CALLS_NAME, HIGHEST_NAME, REGIONS_NAME, REPORT_NAME, RUN_JSON_NAME

SCORE_BINS = 50  # chunk-score histogram bins over [0, 1]
TRACK_POINTS = 2000  # chunks drawn one by one per track; longer tracks are drawn as this many bins
TRACK_REGIONS = 500  # region rectangles drawn one by one per track; more are merged into bins
_FLUSH = 65536  # scores buffered before they are added to the histogram

CALL_CLASSES = ("viral", "non-viral", "ambiguous", "no-frames")
CONFIDENCE_TIERS = ("high", "moderate", "low", "review", "NA")
_CALL_COLOURS = {"viral": "#c0392b", "non-viral": "#2471a3", "ambiguous": "#b7950b", "no-frames": "#7f8c8d"}
_TIER_COLOURS = {"high": "#1e8449", "moderate": "#58d68d", "low": "#f5b041", "review": "#e74c3c", "NA": "#aab7b8"}
_PLOT_CONFIG = {"displaylogo": False, "responsive": True}


# --------------------------------------------------------------------------- streaming readers


def _lines(path: Path) -> Iterator[str]:
    """Lines without their line ending; a missing file reads as empty (optional outputs)."""
    try:
        fh = open(path, encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return
    with fh:
        for line in fh:
            yield line.rstrip("\r\n")


def _number(text: str) -> float | None:
    """A finite float, or None for NA / garbage, so one bad cell never sinks the page."""
    try:
        x = float(text)
    except ValueError:
        return None
    return x if math.isfinite(x) else None


def _integer(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


class _Track:
    """Chunk scores and viral regions of one long sequence, bounded however many chunks it has.

    Up to TRACK_POINTS chunks are kept exactly; past that they fold into TRACK_POINTS bins over the
    sequence (max and mean per bin). Regions likewise fold into a bin mask past TRACK_REGIONS.
    """

    def __init__(self, seq_id: str, length: int) -> None:
        self.seq_id = seq_id
        self.length = length
        self.n_chunks = 0
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.scores: list[float] = []
        self.span = max(length, 1)
        self.bin_max: list[float] | None = None
        self.bin_sum: list[float] = []
        self.bin_n: list[int] = []
        self.n_regions = 0
        self.regions: list[tuple[int, int]] = []  # 0-based half-open
        self.region_mask: list[bool] | None = None

    def _bin(self, pos: int) -> int:
        return min(max(pos, 0) * TRACK_POINTS // self.span, TRACK_POINTS - 1)

    def add_chunk(self, start: int, end: int, score: float) -> None:
        self.n_chunks += 1
        if self.bin_max is None:
            self.starts.append(start)
            self.ends.append(end)
            self.scores.append(score)
            if len(self.starts) > TRACK_POINTS:
                self._fold_chunks()
            return
        b = self._bin(start)
        if score > self.bin_max[b]:
            self.bin_max[b] = score
        self.bin_sum[b] += score
        self.bin_n[b] += 1

    def _fold_chunks(self) -> None:
        self.span = max(self.length, max(self.ends), 1)
        self.bin_max = [-math.inf] * TRACK_POINTS
        self.bin_sum = [0.0] * TRACK_POINTS
        self.bin_n = [0] * TRACK_POINTS
        starts, scores = self.starts, self.scores
        self.starts, self.ends, self.scores = [], [], []
        self.n_chunks -= len(starts)
        for s, v in zip(starts, scores, strict=True):
            self.add_chunk(s, s, v)

    def add_region(self, start1: int, end1: int) -> None:
        self.n_regions += 1
        lo, hi = start1 - 1, end1
        if self.region_mask is None:
            self.regions.append((lo, hi))
            if len(self.regions) > TRACK_REGIONS:
                self.region_mask = [False] * TRACK_POINTS
                regions, self.regions = self.regions, []
                for a, b in regions:
                    self._mark(a, b)
            return
        self._mark(lo, hi)

    def _mark(self, lo: int, hi: int) -> None:
        assert self.region_mask is not None
        for b in range(self._bin(lo), self._bin(max(hi - 1, lo)) + 1):
            self.region_mask[b] = True

    def region_spans(self) -> list[tuple[float, float]]:
        """Rectangles to shade: exact regions merged where they touch, or runs of marked bins."""
        if self.region_mask is None:
            merged: list[list[float]] = []
            for lo, hi in sorted(self.regions):
                if merged and lo <= merged[-1][1]:
                    merged[-1][1] = max(merged[-1][1], hi)
                else:
                    merged.append([lo, hi])
            return [(a, b) for a, b in merged]
        width = self.span / TRACK_POINTS
        spans: list[tuple[float, float]] = []
        run_start: int | None = None
        for i, on in enumerate([*self.region_mask, False]):
            if on and run_start is None:
                run_start = i
            elif not on and run_start is not None:
                spans.append((run_start * width, i * width))
                run_start = None
        return spans


class _Calls:
    """Counts by call and confidence, the top rows for the table, and the longest sequences."""

    def __init__(self) -> None:
        self.columns: list[str] = list(CALLS_COLUMNS)
        self.total = 0
        self.malformed = 0
        self.cross: Counter[tuple[str, str]] = Counter()
        self._top: list[tuple[Any, ...]] = []  # min-heap on the negated sort key: root = worst kept row
        self._long: list[tuple[int, int, str]] = []  # min-heap of (length, -index, seq_id)

    def scan(self, path: Path, top_rows: int, tracks: int) -> None:
        lines = _lines(path)
        header = next(lines, None)
        if header is None:
            return
        self.columns = header.split("\t")
        col = {name: i for i, name in enumerate(self.columns)}
        i_id, i_len = col.get("seq_id", 0), col.get("length")
        i_call, i_conf, i_wd = col.get("call"), col.get("confidence"), col.get("weighted_delta")
        width = len(self.columns)
        for index, line in enumerate(lines):
            if not line:
                continue
            f = line.split("\t")
            if len(f) != width:
                self.malformed += 1
                continue
            self.total += 1
            call = f[i_call] if i_call is not None else "NA"
            self.cross[(call, f[i_conf] if i_conf is not None else "NA")] += 1
            if top_rows > 0:
                wd = _number(f[i_wd]) if i_wd is not None else None
                # Sort key (smaller first): viral first, then weighted_delta descending (NA last),
                # then file order. Stored negated so the heap root is the worst row kept.
                entry = (-(call != "viral"), -math.inf if wd is None else wd, -index, f)
                if len(self._top) < top_rows:
                    heapq.heappush(self._top, entry)
                elif entry[:3] > self._top[0][:3]:
                    heapq.heapreplace(self._top, entry)
            length = _integer(f[i_len]) if i_len is not None else None
            if tracks > 0 and length is not None:
                item = (length, -index, f[i_id])
                if len(self._long) < tracks:
                    heapq.heappush(self._long, item)
                elif item > self._long[0]:
                    heapq.heapreplace(self._long, item)

    def top(self) -> list[list[str]]:
        """Kept rows in display order."""
        return [e[3] for e in sorted(self._top, reverse=True)]

    def longest(self) -> list[tuple[str, int]]:
        return [(sid, length) for length, _, sid in sorted(self._long, reverse=True)]

    def by(self, which: int) -> Counter[str]:
        out: Counter[str] = Counter()
        for key, n in self.cross.items():
            out[key[which]] += n
        return out


class _Scores:
    """Fixed-bin histogram of chunk virus scores, filled while the bedgraph streams past."""

    def __init__(self) -> None:
        self.hist = np.zeros(SCORE_BINS, dtype=np.int64)
        self.n = 0
        self.malformed = 0
        self.out_of_range = 0
        self.n_high = 0
        self.total = 0.0
        self._buf: list[float] = []

    def scan(self, path: Path, tracks: dict[str, _Track]) -> None:
        buf = self._buf
        for line in _lines(path):
            if not line or line.startswith(("track", "browser", "#")):
                continue
            f = line.split("\t")
            if len(f) < 4:
                self.malformed += 1
                continue
            score = _number(f[3])
            if score is None:
                self.malformed += 1
                continue
            buf.append(score)
            if len(buf) >= _FLUSH:
                self._flush()
            track = tracks.get(f[0])
            if track is not None:
                start, end = _integer(f[1]), _integer(f[2])
                if start is not None and end is not None:
                    track.add_chunk(start, end, score)
        self._flush()

    def _flush(self) -> None:
        if not self._buf:
            return
        a = np.asarray(self._buf, dtype=np.float64)
        self._buf.clear()
        self.n += a.size
        self.total += float(a.sum())
        self.n_high += int(np.count_nonzero(a >= 0.5))
        self.out_of_range += int(np.count_nonzero((a < 0) | (a > 1)))
        bins = np.clip(np.floor(a * SCORE_BINS).astype(np.int64), 0, SCORE_BINS - 1)
        self.hist += np.bincount(bins, minlength=SCORE_BINS)


class _Regions:
    """Region totals, plus the regions of the sequences that get a track."""

    def __init__(self) -> None:
        self.present = False
        self.n = 0
        self.bases = 0
        self.sequences = 0  # counted as seq_id changes: the pipeline writes a record's regions together
        self.malformed = 0

    def scan(self, path: Path, tracks: dict[str, _Track]) -> None:
        self.present = path.exists()
        lines = _lines(path)
        header = next(lines, None)
        if header is None:
            return
        col = {name: i for i, name in enumerate(header.split("\t"))}
        i_id, i_start, i_end = col.get("seq_id", 0), col.get("start", 2), col.get("end", 3)
        need = max(i_id, i_start, i_end) + 1
        previous: str | None = None
        for line in lines:
            if not line:
                continue
            f = line.split("\t")
            start = _integer(f[i_start]) if len(f) >= need else None
            end = _integer(f[i_end]) if len(f) >= need else None
            if start is None or end is None:
                self.malformed += 1
                continue
            self.n += 1
            self.bases += max(end - start + 1, 0)
            if f[i_id] != previous:
                self.sequences += 1
                previous = f[i_id]
            track = tracks.get(f[i_id])
            if track is not None:
                track.add_region(start, end)


# --------------------------------------------------------------------------- figures


def _figure_html(fig: Any, div_id: str, height: int, top: int = 50) -> str:
    import plotly.io as pio

    fig.update_layout(height=height, margin={"l": 60, "r": 20, "t": top, "b": 50}, template="plotly_white")
    return pio.to_html(fig, full_html=False, include_plotlyjs=False, div_id=div_id, config=_PLOT_CONFIG,
                       default_height=f"{height}px", validate=True)


def _score_histogram(scores: _Scores) -> str:
    import plotly.graph_objects as go

    edges = np.linspace(0.0, 1.0, SCORE_BINS + 1)
    fig = go.Figure(go.Bar(
        x=(edges[:-1] + edges[1:]) / 2, y=scores.hist, width=1.0 / SCORE_BINS,
        customdata=np.stack([edges[:-1], edges[1:]], axis=1), marker_color="#c0392b",
        hovertemplate="score %{customdata[0]:.2f}–%{customdata[1]:.2f}: %{y} chunks<extra></extra>",
    ))
    fig.add_vline(x=0.5, line_dash="dash", line_color="#555")
    fig.update_layout(
        title="Chunk virus scores", xaxis={"title": "virus score", "range": [0, 1]},
        yaxis={"title": "chunks"}, bargap=0,
        updatemenus=[{"type": "buttons", "direction": "right", "x": 1, "xanchor": "right", "y": 1.02,
                      "yanchor": "bottom", "pad": {"b": 4},
                      "buttons": [{"label": "linear", "method": "relayout", "args": [{"yaxis.type": "linear"}]},
                                  {"label": "log", "method": "relayout", "args": [{"yaxis.type": "log"}]}]}],
    )
    return _figure_html(fig, "fig-score-histogram", 400, top=80)


def _calls_chart(calls: _Calls, classes: list[str], tiers: list[str]) -> str:
    import plotly.graph_objects as go

    fig = go.Figure([
        go.Bar(name=html.escape(tier), x=[html.escape(c) for c in classes],
               y=[calls.cross.get((c, tier), 0) for c in classes],
               marker_color=_TIER_COLOURS.get(tier, "#5d6d7e"))
        for tier in tiers
    ])
    fig.update_layout(title="Sequence calls by confidence tier", barmode="stack",
                      xaxis={"title": "call"}, yaxis={"title": "sequences"}, legend={"title": "confidence"})
    return _figure_html(fig, "fig-calls", 340)


def _length_histogram(hist: list[Any]) -> str | None:
    import plotly.graph_objects as go

    labels: list[str] = []
    counts: list[int] = []
    for b in hist:
        if not isinstance(b, dict):
            continue
        lo, hi = b.get("lo"), b.get("hi")
        labels.append(f"{lo}–{hi}" if hi is not None else f"≥{lo}")
        counts.append(int(b.get("count") or 0))
    if not labels:
        return None
    fig = go.Figure(go.Bar(x=[html.escape(x) for x in labels], y=counts, marker_color="#2471a3"))
    fig.update_layout(title="Input sequence lengths", xaxis={"title": "length (bp)", "type": "category"},
                      yaxis={"title": "records"})
    return _figure_html(fig, "fig-input-lengths", 320)


def _track_figure(track: _Track, number: int) -> str:
    import plotly.graph_objects as go

    fig = go.Figure()
    if track.bin_max is None:
        xs: list[float | None] = []
        ys: list[float | None] = []
        prev_end: int | None = None
        for s, e, v in zip(track.starts, track.ends, track.scores, strict=True):
            if prev_end is not None and s != prev_end:
                xs.append(None)  # gap or overlap between chunks: break the line
                ys.append(None)
            xs += [s, e]
            ys += [v, v]
            prev_end = e
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name="chunk score", line={"color": "#c0392b"},
                                 hovertemplate="%{x:,} bp: %{y:.3f}<extra></extra>"))
        note = f"{track.n_chunks:,} chunks"
    else:
        width = track.span / TRACK_POINTS
        xs_b: list[float | None] = []
        ys_max: list[float | None] = []
        ys_mean: list[float | None] = []
        for i, (mx, total, n) in enumerate(zip(track.bin_max, track.bin_sum, track.bin_n, strict=True)):
            if n == 0:
                xs_b.append(None)
                ys_max.append(None)
                ys_mean.append(None)
                continue
            xs_b += [i * width, (i + 1) * width]
            ys_max += [mx, mx]
            ys_mean += [total / n, total / n]
        fig.add_trace(go.Scatter(x=xs_b, y=ys_max, mode="lines", name="max per bin", line={"color": "#c0392b"},
                                 hovertemplate="%{x:,.0f} bp: max %{y:.3f}<extra></extra>"))
        fig.add_trace(go.Scatter(x=xs_b, y=ys_mean, mode="lines", name="mean per bin",
                                 line={"color": "#2471a3", "width": 1},
                                 hovertemplate="%{x:,.0f} bp: mean %{y:.3f}<extra></extra>"))
        note = f"{track.n_chunks:,} chunks in {TRACK_POINTS:,} bins of {width:,.0f} bp"
    shapes = [
        {"type": "rect", "xref": "x", "yref": "paper", "x0": a, "x1": b, "y0": 0, "y1": 1,
         "fillcolor": "rgba(192,57,43,0.18)", "line": {"width": 0}, "layer": "below"}
        for a, b in track.region_spans()
    ]
    shapes.append({"type": "line", "xref": "paper", "yref": "y", "x0": 0, "x1": 1, "y0": 0.5, "y1": 0.5,
                   "line": {"color": "#555", "width": 1, "dash": "dash"}})
    if track.n_chunks == 0:
        fig.add_annotation(text="no chunk scores for this sequence", showarrow=False,
                           xref="paper", yref="paper", x=0.5, y=0.5)
    regions = f"{track.n_regions:,} viral region{'s' if track.n_regions != 1 else ''}"
    fig.update_layout(
        title=f"{html.escape(track.seq_id)} ({track.length:,} bp; {note}; {regions})",
        shapes=shapes, showlegend=track.bin_max is not None,
        xaxis={"title": "position (bp, 0-based)", "range": [0, max(track.span, track.length, 1)]},
        yaxis={"title": "virus score", "range": [0, 1]},
    )
    return _figure_html(fig, f"fig-track-{number}", 300)


# --------------------------------------------------------------------------- HTML


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;color:#222;
background:#f7f7f9;line-height:1.4}
main{max-width:1200px;margin:0 auto;padding:1rem 1.5rem 3rem}
h1{margin:.2rem 0 .2rem;font-size:1.6rem}h2{margin-top:2rem;border-bottom:2px solid #ddd;padding-bottom:.2rem}
h3{font-size:1rem;margin:1.2rem 0 .3rem;word-break:break-all}
section{background:#fff;border-radius:6px;padding:.5rem 1rem 1rem;margin-top:1rem;box-shadow:0 1px 2px #0001}
.muted{color:#666;font-size:.9rem}.note{color:#8a5a00;font-size:.9rem}
.grid{display:flex;flex-wrap:wrap;gap:1.5rem;align-items:flex-start}
table{border-collapse:collapse;font-size:.88rem}
th,td{padding:.25rem .6rem;border-bottom:1px solid #e5e5e5;text-align:left;vertical-align:top}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
table.kv th{font-weight:600;color:#444;white-space:nowrap}
.scroll{max-height:70vh;overflow:auto;border:1px solid #e5e5e5}
.scroll table{width:100%}
.scroll thead th{position:sticky;top:0;background:#eef1f5;z-index:1}
table.sortable th{cursor:pointer;user-select:none;white-space:nowrap}
table.sortable th[aria-sort=ascending]::after{content:" \\25B2"}
table.sortable th[aria-sort=descending]::after{content:" \\25BC"}
td.id{white-space:nowrap;max-width:24rem;overflow:hidden;text-overflow:ellipsis}
.scroll td{white-space:nowrap}
.call{font-weight:600}.call-viral{color:#c0392b}.call-non-viral{color:#2471a3}
.call-ambiguous{color:#9a7d0a}.call-no-frames{color:#7f8c8d}
.fig{width:100%}
"""

# Click a header to sort by it (again to reverse); numeric columns sort by value with NA last.
_SORT_JS = """
(function () {
  function key(cell, numeric) {
    var t = cell.textContent.trim();
    if (!numeric) return t.toLowerCase();
    var v = parseFloat(t);
    return isNaN(v) ? null : v;
  }
  function sortBy(table, th, col) {
    var numeric = th.classList.contains('num');
    var dir = th.getAttribute('aria-sort') === (numeric ? 'descending' : 'ascending')
      ? (numeric ? 'ascending' : 'descending') : (numeric ? 'descending' : 'ascending');
    var sign = dir === 'ascending' ? 1 : -1;
    var body = table.tBodies[0];
    var rows = Array.prototype.map.call(body.rows, function (r, i) {
      return [key(r.cells[col], numeric), i, r];
    });
    rows.sort(function (a, b) {
      if (a[0] === null || b[0] === null) {
        if (a[0] === b[0]) return a[1] - b[1];
        return a[0] === null ? 1 : -1;
      }
      if (a[0] < b[0]) return -sign;
      if (a[0] > b[0]) return sign;
      return a[1] - b[1];
    });
    var frag = document.createDocumentFragment();
    rows.forEach(function (r) { frag.appendChild(r[2]); });
    body.appendChild(frag);
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (h) { h.removeAttribute('aria-sort'); });
    th.setAttribute('aria-sort', dir);
  }
  Array.prototype.forEach.call(document.querySelectorAll('table.sortable'), function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
      th.addEventListener('click', function () { sortBy(table, th, col); });
      th.addEventListener('keydown', function (e) {
        if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); sortBy(table, th, col); }
      });
    });
  });
})();
"""

_NUMERIC_CALL_COLUMNS = {
    "length", "weighted_delta", "n_chunks", "n_confident_viral", "n_confident_nonviral", "n_ambiguous",
    "viral_proportion", "nonviral_proportion",
}


def _esc(value: Any) -> str:
    return html.escape(str(value))


def _show(value: Any) -> str:
    """A run.json value as short text: lists joined, mappings as JSON, None as a dash."""
    if value is None:
        return "—"
    if isinstance(value, list | tuple):
        return ", ".join(_show(v) for v in value) if value else "—"
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _kv_table(rows: list[tuple[str, Any]], caption: str | None = None) -> str:
    out = ['<table class="kv">']
    if caption:
        out.append(f"<caption class=\"muted\">{_esc(caption)}</caption>")
    out += [f"<tr><th>{_esc(k)}</th><td>{_esc(_show(v))}</td></tr>" for k, v in rows]
    out.append("</table>")
    return "".join(out)


def _cross_table(calls: _Calls, classes: list[str], tiers: list[str]) -> str:
    by_call, by_tier = calls.by(0), calls.by(1)
    head = "".join(f'<th class="num">{_esc(t)}</th>' for t in tiers)
    out = [f'<table><thead><tr><th>call \\ confidence</th>{head}<th class="num">total</th></tr></thead><tbody>']
    for c in classes:
        cells = "".join(f'<td class="num">{calls.cross.get((c, t), 0):,}</td>' for t in tiers)
        out.append(f'<tr><th class="call call-{_esc(c)}">{_esc(c)}</th>{cells}'
                   f'<td class="num">{by_call.get(c, 0):,}</td></tr>')
    totals = "".join(f'<td class="num">{by_tier.get(t, 0):,}</td>' for t in tiers)
    out.append(f'<tr><th>total</th>{totals}<td class="num">{calls.total:,}</td></tr></tbody></table>')
    return "".join(out)


def _calls_table(calls: _Calls, rows: list[list[str]]) -> str:
    cols = calls.columns
    numeric = [
        name in _NUMERIC_CALL_COLUMNS or (bool(rows) and all(r[i] == "NA" or _number(r[i]) is not None for r in rows))
        for i, name in enumerate(cols)
    ]
    i_call = cols.index("call") if "call" in cols else None
    i_id = cols.index("seq_id") if "seq_id" in cols else 0
    num_attr = ' class="num"'
    head = ['<th class="num" tabindex="0" title="report order">#</th>']
    head += [f'<th{num_attr if num else ""} tabindex="0">{_esc(name)}</th>'
             for name, num in zip(cols, numeric, strict=True)]
    out = ['<div class="scroll"><table class="sortable" id="calls-table"><thead><tr>', "".join(head),
           "</tr></thead><tbody>"]
    for rank, row in enumerate(rows, 1):
        cells = [f'<td class="num">{rank}</td>']
        for i, value in enumerate(row):
            if i == i_call:
                cells.append(f'<td class="call call-{_esc(value)}">{_esc(value)}</td>')
            elif i == i_id:
                cells.append(f'<td class="id" title="{_esc(value)}">{_esc(value)}</td>')
            else:
                cells.append(f'<td class="num">{_esc(value)}</td>' if numeric[i] else f"<td>{_esc(value)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def _ordered(seen: Counter[str], known: tuple[str, ...]) -> list[str]:
    """All known labels in their usual order (zeros included), then any unexpected ones the file holds."""
    return list(known) + sorted(k for k in seen if k not in known)


def _read_run_json(path: Path) -> tuple[dict[str, Any], str | None]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}, f"{RUN_JSON_NAME} is missing"
    except (OSError, ValueError) as exc:
        return {}, f"{RUN_JSON_NAME} could not be read ({exc.__class__.__name__})"
    if not isinstance(data, dict):
        return {}, f"{RUN_JSON_NAME} is not a JSON object"
    return data, None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def write_report(outdir: str | Path, *, top_rows: int = 1000, tracks: int = 10) -> Path:
    """Write OUTDIR/report.html from a finished run's output files and return its path.

    Every input is optional (a missing or header-only file renders as "none"), so a report can be
    made for any run, including an empty one. The page is replaced atomically: a browser or a
    second reader never sees a half-written report.
    """
    import plotly.offline

    out = Path(outdir)
    if not out.is_dir():
        raise InputError(f"{out}: no such output directory")
    top_rows = max(int(top_rows), 0)
    tracks = max(int(tracks), 0)

    run, run_problem = _read_run_json(out / RUN_JSON_NAME)
    calls = _Calls()
    calls.scan(out / CALLS_NAME, top_rows, tracks)
    track_list = [_Track(sid, length) for sid, length in calls.longest()]
    by_id = {t.seq_id: t for t in track_list}
    scores = _Scores()
    scores.scan(out / BEDGRAPH_NAME, by_id)
    regions = _Regions()
    regions.scan(out / REGIONS_NAME, by_id)

    params = _dict(run.get("parameters"))
    counts = _dict(run.get("counts"))
    notes: list[str] = [run_problem] if run_problem else []
    for name in (CALLS_NAME, BEDGRAPH_NAME, REGIONS_NAME):
        if not (out / name).exists():
            notes.append(f"{name} is missing")
    for what, n in ((CALLS_NAME, calls.malformed), (BEDGRAPH_NAME, scores.malformed),
                    (REGIONS_NAME, regions.malformed)):
        if n:
            notes.append(f"{n:,} malformed line{'s' if n != 1 else ''} skipped in {what}")
    if scores.out_of_range:
        notes.append(f"{scores.out_of_range:,} chunk scores outside [0, 1] were counted in the edge bins")

    parts: list[str] = []
    add = parts.append

    # -- run facts
    facts = [("version", run.get("version")), ("finished", run.get("finished")),
             ("inputs", params.get("inputs")), ("chunk size", params.get("chunk_size"))]
    if "backend" in run:
        facts.append(("backend", run.get("backend")))
    add('<section id="run"><h2>Run</h2>')
    add(_kv_table(facts))
    if notes:
        add("<ul>" + "".join(f'<li class="note">{_esc(n)}</li>' for n in notes) + "</ul>")
    add("</section>")

    # -- counts
    count_rows: list[tuple[str, Any]] = [
        (k, counts[k]) for k in ("records", "bases", "chunks", "frames", "windows") if k in counts
    ]
    count_rows += [("sequences called", calls.total), ("chunks scored (with frames)", scores.n)]
    if regions.present:
        count_rows += [("viral regions", regions.n), ("sequences with regions", regions.sequences),
                       ("bases in regions", regions.bases)]
    classes = _ordered(calls.by(0), CALL_CLASSES)
    tiers = _ordered(calls.by(1), CONFIDENCE_TIERS)
    add('<section id="counts"><h2>Counts</h2><div class="grid">')
    add(_kv_table(count_rows))
    if calls.total:
        add(_cross_table(calls, classes, tiers))
    add("</div>")
    if calls.total:
        add(f'<div class="fig">{_calls_chart(calls, classes, tiers)}</div>')
    else:
        add('<p class="muted">No sequence calls.</p>')
    add("</section>")

    # -- chunk score histogram
    add('<section id="scores"><h2>Chunk scores</h2>')
    if scores.n:
        mean = scores.total / scores.n
        add(f'<p class="muted">{scores.n:,} chunk scores; mean {mean:.3f}; '
            f"{scores.n_high:,} ({scores.n_high / scores.n:.1%}) at or above 0.5. "
            f"{SCORE_BINS} fixed bins over [0, 1].</p>")
        add(f'<div class="fig">{_score_histogram(scores)}</div>')
    else:
        add(f'<p class="muted">No chunk scores ({_esc(BEDGRAPH_NAME)} missing or empty).</p>')
    add("</section>")

    # -- calls table
    shown = calls.top()
    add('<section id="calls"><h2>Sequence calls</h2>')
    add(f'<p class="muted">showing {len(shown):,} of {calls.total:,}; full table: '
        f'<a href="{_esc(CALLS_NAME)}">{_esc(CALLS_NAME)}</a>. Viral calls first by weighted_delta '
        "(highest first), then the rest by weighted_delta. Click a column header to sort.</p>")
    add(_calls_table(calls, shown))
    add("</section>")

    # -- tracks
    add('<section id="tracks"><h2>Longest sequences</h2>')
    if track_list:
        add(f'<p class="muted">Chunk virus score along the {len(track_list)} longest sequences; shaded: viral '
            f"regions from {_esc(REGIONS_NAME)}; dashed: 0.5.</p>")
        for number, track in enumerate(track_list, 1):
            add(f"<h3>{number}. {_esc(track.seq_id)}</h3>")
            add(f'<div class="fig">{_track_figure(track, number)}</div>')
    else:
        add('<p class="muted">No sequences.</p>')
    add("</section>")

    # -- parameters, thresholds, input lengths
    add('<section id="parameters"><h2>Parameters</h2><div class="grid">')
    if params:
        add(_kv_table(list(params.items()), "parameters"))
    thresholds = _dict(run.get("calls"))
    if thresholds:
        add(_kv_table(list(thresholds.items()), "call thresholds"))
    lengths = _dict(run.get("input_lengths"))
    scalar_lengths = [(k, v) for k, v in lengths.items() if k != "histogram"]
    if scalar_lengths:
        add(_kv_table(scalar_lengths, "input lengths"))
    if not (params or thresholds or scalar_lengths):
        add('<p class="muted">None recorded.</p>')
    add("</div>")
    length_hist = lengths.get("histogram")
    if isinstance(length_hist, list):
        fig = _length_histogram(length_hist)
        if fig:
            add(f'<div class="fig">{fig}</div>')
    add("</section>")

    generated = datetime.now(timezone.utc).isoformat(timespec="seconds")
    present = [name for name in (CALLS_NAME, BEDGRAPH_NAME, REGIONS_NAME, HIGHEST_NAME) if (out / name).exists()]
    links = " &middot; outputs: " + ", ".join(f'<a href="{_esc(n)}">{_esc(n)}</a>' for n in present) if present else ""
    page = "".join([
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n',
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n',
        f"<title>VirNucPro report: {_esc(out.resolve().name)}</title>\n",
        f"<style>{_CSS}</style>\n",
        f'<script type="text/javascript">{plotly.offline.get_plotlyjs()}</script>\n',
        "</head>\n<body>\n<main>\n",
        f"<h1>VirNucPro run report</h1>\n<p class=\"muted\">{_esc(out.resolve())} &middot; report generated "
        f"{_esc(generated)}{links}</p>\n",
        *parts,
        f"\n</main>\n<script>{_SORT_JS}</script>\n</body>\n</html>\n",
    ])
    target = out / REPORT_NAME
    write_atomic(target, page)
    return target
