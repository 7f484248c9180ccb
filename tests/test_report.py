"""orchestrator.write.report: a self-contained, offline HTML report, checked as text and in real Chromium.

Every test writes a synthetic finished OUTDIR (tests/report_fixtures.py), runs the real
write_report, then parses the page; the Chromium tests open it headless with the network blocked
and a probe that records JavaScript errors into the dumped DOM.
"""

from __future__ import annotations

import html
import json
import os
import re
import time
import tracemalloc
from pathlib import Path

import pytest

pytest.importorskip("plotly", reason="the report needs plotly (pip install plotly)")

import plotly.offline  # noqa: E402
from report_fixtures import CHROMIUM, Expected, make_outdir, render  # noqa: E402

from orchestrator.errors import InputError  # noqa: E402
from orchestrator.write import report  # noqa: E402

needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no `chromium` on PATH (apt-get install chromium)")

WEIRD = 'weird<id>&"x"</script><b>'  # a FASTA ID may hold any non-space byte


def _calls_rows(page: str) -> list[str]:
    body = page.split('id="calls-table"', 1)[1].split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    return re.findall(r"<tr>.*?</tr>", body)


def _cells(row: str) -> list[str]:
    return [html.unescape(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row)]


def _figure_ids(page: str) -> list[str]:
    return re.findall(r'<div id="([^"]+)" class="plotly-graph-div"', page)


def _outside_plotly_js(page: str) -> str:
    js = plotly.offline.get_plotlyjs()
    assert page.count(js) == 1, "plotly.js must be inlined exactly once"
    return page.replace(js, "")


def _assert_offline(page: str) -> None:
    rest = _outside_plotly_js(page)
    low = rest.lower()
    for bad in ("http://", "https://", "<script src", "<link", "@import", "url(", "<img", "<iframe", "//cdn"):
        assert bad not in low, f"external reference {bad!r} in the report"
    assert len(re.findall(r"<script\b[^>]*\bsrc\s*=", page, re.I)) == 0


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Expected]:
    out = tmp_path_factory.mktemp("small_run")
    # Long records: one past TRACK_POINTS chunks (binned track, regions folded into bins), two drawn exactly.
    exp = make_outdir(out, n_short=3000, long_chunks=[report.TRACK_POINTS + 1500, 400, 250, 210],
                      long_ids=[WEIRD, "long&amp;2"], seed=1)
    return out, exp


def test_report_content(small_run: tuple[Path, Expected]) -> None:
    out, exp = small_run
    path = report.write_report(out, top_rows=500, tracks=5)
    assert path == out / "report.html"
    page = path.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert not [p for p in os.listdir(out) if p.endswith(".tmp")], "temp file left behind"
    _assert_offline(page)

    rows = _calls_rows(page)
    assert len(rows) == min(500, exp.records)
    assert f"showing 500 of {exp.records:,}" in page
    assert '<a href="sequence_calls.tsv">sequence_calls.tsv</a>' in page
    first = _cells(rows[0])
    assert first[1] == exp.most_viral and first[3] == "viral"
    # Order: viral by weighted_delta descending, then the rest by weighted_delta, NA last.
    calls = [_cells(r)[3] for r in rows]
    n_viral = calls.count("viral")
    assert calls[:n_viral] == ["viral"] * n_viral and "viral" not in calls[n_viral:]
    wd = [float(_cells(r)[5]) for r in rows[:n_viral]]
    assert wd == sorted(wd, reverse=True)

    # User text is escaped everywhere: table, headings, plot titles (plotly JSON escapes < as \u003c).
    assert WEIRD not in page and "<b>" not in _outside_plotly_js(page)
    assert html.escape(WEIRD) in page
    assert "long&amp;amp;2" in page
    assert "reads&lt;1&gt;.fasta" in page  # run.json parameters too

    # Figures: calls chart, score histogram, 5 tracks, input-length histogram.
    ids = _figure_ids(page)
    assert len(ids) == 1 + 1 + 5 + 1, ids
    assert [i for i in ids if i.startswith("fig-track-")] == [f"fig-track-{n}" for n in range(1, 6)]
    for sid in exp.longest[:5]:
        assert f". {html.escape(sid)}</h3>" in page
    # Run facts, counts and thresholds are shown.
    for text in ("0.1.0", "2025-01-01T00:00:00+00:00", "chunk size", "call thresholds", "viral_delta",
                 "input lengths", "fraction_short", f"{exp.chunks:,}", f"{exp.regions:,}"):
        assert text in page, text


@pytest.mark.browser
@needs_chromium
def test_report_renders_in_chromium(small_run: tuple[Path, Expected], tmp_path: Path) -> None:
    out, exp = small_run
    path = report.write_report(out, top_rows=300, tracks=4)
    page = path.read_text(encoding="utf-8")
    expected = _figure_ids(page)
    assert len(expected) == 1 + 1 + 4 + 1

    r = render(path, tmp_path)
    print(f"chromium opened the small report in {r.seconds:.2f} s")
    assert r.errors == [], r.errors
    assert r.attrs.get("data-probe-done") == "1"
    assert sorted(r.figures) == sorted(expected)
    for fig_id, (main_svg, containers) in r.figures.items():
        assert main_svg >= 1 and containers == 1, (fig_id, main_svg, containers)
    assert r.dom.count('class="plot-container plotly"') == len(expected)
    # The probe clicked the "length" header: the longest shown record is now first.
    rows = [_cells(row) for row in _calls_rows(page)]
    assert int(r.attrs["data-sorted-length"]) == max(int(c[2]) for c in rows)
    longest = max(int(c[2]) for c in rows)
    assert r.attrs["data-sorted-first"] in {c[1] for c in rows if int(c[2]) == longest}


def test_missing_optional_files(tmp_path: Path) -> None:
    """No regions, header-only calls, no bedgraph rows, no run.json: still a valid, offline page."""
    out = tmp_path / "empty"
    out.mkdir()
    (out / "sequence_calls.tsv").write_text("seq_id\tlength\tcall\tconfidence\tweighted_delta\tn_chunks\n")
    (out / "chunk_scores.bedgraph").write_text("track type=bedGraph name=virus_score\n")
    page = report.write_report(out).read_text(encoding="utf-8")
    _assert_offline(page)
    assert _calls_rows(page) == []
    assert "showing 0 of 0" in page
    assert _figure_ids(page) == []
    assert "run.json is missing" in page and "viral_regions.tsv is missing" in page

    # Completely empty folder (only run.json with odd types): no crash.
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "run.json").write_text(json.dumps({"counts": None, "parameters": [], "input_lengths": {"histogram": 3}}))
    page = report.write_report(bare, top_rows=0, tracks=0).read_text(encoding="utf-8")
    assert "sequence_calls.tsv is missing" in page

    with pytest.raises(InputError):
        report.write_report(tmp_path / "nope")


def test_regions_missing_but_calls_present(tmp_path: Path) -> None:
    exp = make_outdir(tmp_path, n_short=50, long_chunks=[30], regions=False, run_json=False, seed=3)
    page = report.write_report(tmp_path, tracks=3).read_text(encoding="utf-8")
    assert len(_calls_rows(page)) == exp.records
    assert f"showing {exp.records} of {exp.records}" in page
    ids = _figure_ids(page)
    assert len(ids) == 1 + 1 + 3  # no input-length histogram without run.json


def test_malformed_lines_are_skipped(tmp_path: Path) -> None:
    make_outdir(tmp_path, n_short=20, long_chunks=[10], seed=4)
    with open(tmp_path / "chunk_scores.bedgraph", "a") as fh:
        fh.write("broken line\nx\t0\t300\tnot-a-number\n")
    with open(tmp_path / "sequence_calls.tsv", "a") as fh:
        fh.write("too\tfew\n")
    page = report.write_report(tmp_path).read_text(encoding="utf-8")
    assert "2 malformed lines skipped in chunk_scores.bedgraph" in page
    assert "1 malformed line skipped in sequence_calls.tsv" in page


@pytest.mark.slow
@pytest.mark.browser
@needs_chromium
def test_large_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """100k records, ~300k chunk scores: bounded page size and memory, and Chromium still renders it."""
    out = tmp_path / "big"
    t0 = time.perf_counter()
    exp = make_outdir(out, n_short=100_000, long_chunks=[6000, 3000, 1200, 900], seed=7)
    gen_s = time.perf_counter() - t0
    assert exp.records == 100_004 and exp.chunks > 250_000

    t0 = time.perf_counter()
    path = report.write_report(out)
    write_s = time.perf_counter() - t0

    tracemalloc.start()  # a second run, traced: peak Python memory stays far below the table sizes
    try:
        report.write_report(out)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    size = path.stat().st_size
    page = path.read_text(encoding="utf-8")
    assert len(_calls_rows(page)) == 1000
    assert f"showing 1,000 of {exp.records:,}" in page
    assert _cells(_calls_rows(page)[0])[1] == exp.most_viral
    _assert_offline(page)

    r = render(path, tmp_path, timeout=120)
    with capsys.disabled():
        print(f"\n[report 100k] synthetic data {gen_s:.1f} s; write_report {write_s:.2f} s; "
              f"traced peak {peak / 2**20:.1f} MiB; report.html {size / 2**20:.2f} MiB; "
              f"chromium open+render {r.seconds:.2f} s")
    assert write_s < 60
    assert size < 8 * 2**20
    assert peak < 64 * 2**20  # bedgraph + calls are ~20 MB of text; nothing tabular is held
    assert r.seconds < 60
    assert r.errors == [], r.errors
    expected = _figure_ids(page)
    assert sorted(r.figures) == sorted(expected) and len(expected) == 1 + 1 + 10 + 1
    assert all(main >= 1 and cont == 1 for main, cont in r.figures.values()), r.figures
