"""What a reader of the report sees on its timeline and coverage figures (issue 13, item 7): whole-number count axes,
the alert's firing time marked where it happened, and a reason on every coverage gap.

Only what the report had as input before those fixes goes in (a manifest document, fixture tables, `render`), so
the tests fail on that code at the behaviour, not at a name: the alert's time is the `alert_at` field of the
manifest's request (the document the freeze writes from the alert's startsAt), which older code ignored. Expected
values come from the fixtures: the fixture times, the manifest's sequence numbers, and counts of fixture rows."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from freezeframe.contracts.models import FreezeRequest, LockSpec, Scope, from_ns, iso
from freezeframe.custody.manifest import build_manifest
from freezeframe.investigate.query import connect_local
from freezeframe.investigate.report import ReportData, render, run_queries
from tests.fixtures.evidence_tables import at, write_tables
from tests.unit.investigate.test_report import INCIDENT, _entry

GENERATED = datetime(2025, 11, 21, tzinfo=UTC)


def _manifest(alert_s: float | None = None) -> dict[str, Any]:
    request = FreezeRequest(incident_id=INCIDENT, source="alertmanager", title="t", severity="high",
                            window_start=from_ns(at(0)), window_end=from_ns(at(100)), scope=Scope("c"),
                            lock=LockSpec("COMPLIANCE", datetime(2099, 1, 1, tzinfo=UTC)))
    # node-a: 0..30 s and 40..50 s, seq 1 and 3 (seq 2 never arrived); the window runs to 100 s.
    manifest = build_manifest(request, [_entry("node-a", 1, 0, 30), _entry("node-a", 3, 40, 50)], GENERATED, "raw")
    if alert_s is not None:  # the alert's startsAt, as the freeze records it in the manifest's request
        manifest["request"]["alert_at"] = iso(from_ns(at(alert_s)))
    return manifest


def _render(root: Path, manifest: dict[str, Any], tables: dict[str, list[dict[str, Any]]]) -> str:
    write_tables(root, tables, incident_id=INCIDENT)
    queries, bucket_ns = run_queries(connect_local(root), INCIDENT, at(0), at(100))
    return render(ReportData(manifest, (), queries, bucket_ns), GENERATED)


def _section(page: str, name: str) -> str:
    start = page.index(f'id="{name}"')
    return page[start:page.index("</section>", start)]


def _clock(seconds: float) -> str:
    moment = from_ns(at(seconds))
    return f"{moment:%H:%M:%S}.{moment.microsecond // 1000:03d}"


def test_the_count_axis_has_whole_numbers_only(tmp_path: Path) -> None:
    # Two 5xx in one bucket, one 200: the busiest bucket holds 2 errors, so the axis runs 0..2 in whole steps.
    page = _render(tmp_path, _manifest(), {"http": [{"ts_ns": at(10), "status": 500},
                                                    {"ts_ns": at(10.01), "status": 502},
                                                    {"ts_ns": at(30), "status": 200}]})
    labels = re.findall(r'text-anchor="end" class="axis">([^<]*)</text>', _section(page, "timeline"))
    assert labels, "the timeline has no count axis"
    assert all(re.fullmatch(r"\d+", label) for label in labels), f"count axis labels with fractions: {labels}"
    assert labels[-1] == "2" and labels[0] == "0"
    assert len(labels) == len(set(labels)), f"a count axis label repeats: {labels}"


def test_the_alert_is_marked_where_it_fired_on_the_timeline_and_the_coverage(tmp_path: Path) -> None:
    alert_s = 22.5
    page = _render(tmp_path, _manifest(alert_s), {"http": [{"ts_ns": at(alert_s), "status": 503},
                                                           {"ts_ns": at(71), "status": 500},
                                                           {"ts_ns": at(72), "status": 500}]})
    timeline = _section(page, "timeline")
    marker = re.search(r'<line x1="([\d.]+)" x2="\1" [^>]*class="alert"/><text [^>]*>alert fired ([\d:.]+)</text>',
                       timeline)
    assert marker is not None, "the timeline does not mark when the alert fired"
    assert marker.group(2) == _clock(alert_s)
    # The marker stands inside the slot of the bucket that holds the alert's own error (a bar drawn over 80 % of
    # its slot, 10 % in from its left edge).
    bars = {tip.split(": ")[0]: (float(x), float(w)) for x, w, tip in re.findall(
        r'<rect x="([\d.]+)" y="[\d.]+" width="([\d.]+)" height="[\d.]+" fill="[^"]*" class="bar"><title>([^<]*)',
        timeline)}
    # The earliest bar is the alert's own error (the others come 48 s and more later).
    x, width = min(bars.values())
    assert len(bars) >= 2 and min(bars.values()) != max(bars.values()), bars
    slot = width / 0.8
    assert x - 0.1 * slot <= float(marker.group(1)) <= x + 0.9 * slot, (marker.group(1), x, slot)
    assert f"alert fired {_clock(alert_s)}" in _section(page, "coverage")


def test_every_coverage_gap_says_why(tmp_path: Path) -> None:
    page = _render(tmp_path, _manifest(), {"connections": [{"ts_ns": at(1)}]})
    coverage = page[page.index('id="coverage"'):page.index('id="timeline"')]
    # Two gaps in the manifest: 30..40 s (between seq 1 and seq 3: seq 2 never arrived) and 50..100 s.
    gaps = re.findall(r'class="gap"><title>([^<]*)</title>', coverage)
    drawn = re.findall(r'<rect [^>]*class="gap"[^>]*>(?:<title>[^<]*</title>)?', coverage)
    assert len(gaps) == 2, f"coverage gaps drawn without a reason: {drawn}"
    assert gaps[0] == f"{_clock(30)} to {_clock(40)}: segments 2 missing (lost before upload)"
    # After seq 3 nothing came: the missing seq 2 does not explain the tail.
    assert gaps[1] == f"{_clock(50)} to {_clock(100)}: no segment uploaded"
    # The table says it too.
    assert (f"{_clock(30)}–{_clock(40)} (10.0 s): segments 2 missing (lost before upload); "
            f"{_clock(50)}–{_clock(100)} (50.0 s): no segment uploaded") in coverage
