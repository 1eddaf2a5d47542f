"""The report while a hold is open and around gaps (issue 13): the alert's firing time is marked, the hold's still-open
part is drawn apart from a gap, each gap says why, unverified segments are listed, and count axes have integer
ticks. Fixture tables in a local directory, the manifest in memory, as tests/unit/investigate/test_report.py."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from freezeframe.contracts.models import FreezeRequest, LockSpec, Scope, from_ns, iso
from freezeframe.custody.manifest import build_manifest
from freezeframe.freeze.unverified import UnverifiedSegment, attach
from freezeframe.investigate.query import connect_local
from freezeframe.investigate.report import ReportData, count_ticks, render, run_queries
from tests.fixtures.evidence_tables import at, write_tables
from tests.unit.investigate.test_report import INCIDENT, _entry


def _manifest(alert_s: float | None = 60) -> dict[str, Any]:
    request = FreezeRequest(incident_id=INCIDENT, source="alertmanager", title="t", severity="high",
                            window_start=from_ns(at(0)), window_end=from_ns(at(100)), scope=Scope("c"),
                            lock=LockSpec("COMPLIANCE", datetime(2099, 1, 1, tzinfo=UTC)),
                            alert_at=from_ns(at(alert_s)) if alert_s is not None else None)
    # node-a: 0..30 s and 40..50 s, seq 1 and 3 (seq 2 lost); the window runs to 100 s.
    return build_manifest(request, [_entry("node-a", 1, 0, 30), _entry("node-a", 3, 40, 50)],
                          datetime(2025, 11, 21, tzinfo=UTC), "raw")


def _render(root: Path, manifest: dict[str, Any], follow: dict[str, Any] | None,
            tables: dict[str, list[dict[str, Any]]]) -> str:
    write_tables(root, tables, incident_id=INCIDENT)
    queries, bucket_ns = run_queries(connect_local(root), INCIDENT, at(0), at(100))
    return render(ReportData(manifest, (), queries, bucket_ns, follow), datetime(2025, 11, 21, tzinfo=UTC))


def _coverage(page: str) -> str:
    return page[page.index('id="coverage"'):page.index('id="timeline"')]


def _timeline(page: str) -> str:
    start = page.index('id="timeline"')
    return page[start:page.index("</section>", start)]


@pytest.mark.parametrize(("top", "ticks"), [(0, [0, 1]), (1, [0, 1]), (2, [0, 1, 2]), (3, [0, 1, 2, 3]),
                                            (5, [0, 2, 4, 6]), (10, [0, 3, 6, 9, 12]), (100, [0, 25, 50, 75, 100])])
def test_count_axes_have_integer_ticks(top: int, ticks: list[int]) -> None:
    assert count_ticks(top) == ticks


def test_the_timeline_axis_shows_whole_counts_and_the_alert(tmp_path: Path) -> None:
    # Two 5xx in one bucket: the old axis labelled 0, 0.5, 1, 1.5, 2.
    page = _render(tmp_path, _manifest(alert_s=20), None,
                   {"http": [{"ts_ns": at(10), "status": 500}, {"ts_ns": at(10.01), "status": 502},
                             {"ts_ns": at(30), "status": 200}]})
    timeline = _timeline(page)
    labels = re.findall(r'text-anchor="end" class="axis">([^<]*)</text>', timeline)
    assert labels and all(re.fullmatch(r"\d+", label) for label in labels), labels
    assert labels[-1] == "2"
    alert_clock = f"{from_ns(at(20)):%H:%M:%S}"
    assert re.search(rf'class="alertlabel">alert fired {alert_clock}', timeline)


def test_the_open_hold_is_drawn_apart_from_gaps_and_every_gap_has_its_reason(tmp_path: Path) -> None:
    follow = {"again": True, "wait_s": 30, "nodes": ["node-a"], "partial_until": iso(from_ns(at(110)))}
    page = _render(tmp_path, _manifest(), follow, {"connections": [{"ts_ns": at(1)}]})
    coverage = _coverage(page)
    # 30..40 s: seq 2 lost; 50..100 s: the hold is still open (pending), not a gap.
    assert re.search(r'class="gap"><title>[^<]*segments 2 missing', coverage)
    assert re.search(r'class="pending"><title>[^<]*hold open', coverage)
    assert "partial until" in page and "the hold is open" in page
    gaps = re.findall(r'class="(gap|pending)"', coverage)
    assert gaps.count("pending") == 1 and gaps.count("gap") == 1
    assert f"alert fired {from_ns(at(60)):%H:%M:%S}" in coverage


def test_once_the_hold_closed_the_tail_is_a_gap_and_the_tables_complete(tmp_path: Path) -> None:
    follow = {"again": False, "wait_s": 0, "nodes": ["node-a"], "partial_until": None}
    page = _render(tmp_path, _manifest(), follow, {"connections": [{"ts_ns": at(1)}]})
    coverage = _coverage(page)
    assert 'class="pending"' not in coverage
    assert len(re.findall(r'class="gap"><title>', coverage)) == 2
    assert "<dt>tables</dt><dd>complete</dd>" in page


def test_unverified_segments_are_listed_with_their_reason(tmp_path: Path) -> None:
    manifest = _manifest()
    attach(manifest, [UnverifiedSegment(key="raw/c/node-b/stray.pcap", version_id="v9", node="node-b",
                                        start_ns=at(0), end_ns=at(10), size=3, reason="no sha256 metadata",
                                        lock_mode="COMPLIANCE", retain_until="2099-01-01T00:00:00.000Z",
                                        legal_hold=False)])
    page = _render(tmp_path, manifest, None, {"connections": [{"ts_ns": at(1)}]})
    coverage = _coverage(page)
    assert "raw/c/node-b/stray.pcap (v9): no sha256 metadata" in coverage
    assert re.search(r'class="gap"><title>[^<]*unverified segment: no sha256 metadata', coverage)
    header = re.findall(r"<th>([^<]*)</th>", coverage)
    rows = re.findall(r"<tr>((?:<td[^>]*>[^<]*</td>)+)</tr>", coverage)
    by_node = {cells[0]: dict(zip(header, cells, strict=True))
               for cells in (re.findall(r"<td[^>]*>([^<]*)</td>", row) for row in rows)}
    assert by_node["node-b"]["unverified segments"] == "1" and by_node["node-a"]["unverified segments"] == "0"
