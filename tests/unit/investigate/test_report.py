"""The report's SQL and page without S3 or a browser: fixture tables in a local directory (query.connect_local),
a manifest built in memory; the Chromium test lives in tests/integration/test_report.py."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest

from freezeframe.contracts.models import FreezeRequest, LockSpec, ManifestEntry, Scope, from_ns
from freezeframe.contracts.schemas import TABLES
from freezeframe.custody.manifest import build_manifest
from freezeframe.investigate.query import connect_local
from freezeframe.investigate.report import ReportData, bucket_width_ns, render, run_queries
from tests.fixtures.evidence_tables import at, write_tables

INCIDENT = "inc-1"
HOSTILE = "<script>alert('x')</script><img src=x onerror=alert(1)>"


def _entry(node: str, seq: int, start_s: float, end_s: float) -> ManifestEntry:
    start, end = at(start_s), at(end_s)
    return ManifestEntry(key=f"raw/c/{node}/{start}-{end}.pcap", version_id=f"v{seq}", sha256="0" * 64, size=1,
                         node=node, start_ns=start, end_ns=end, seq=seq, packets=5, lock_mode="COMPLIANCE",
                         retain_until="2099-01-01T00:00:00.000Z", legal_hold=False)


def _manifest(title: str = "checkout 5xx", gap_records: tuple[dict[str, Any], ...] = ()) -> dict[str, Any]:
    request = FreezeRequest(incident_id=INCIDENT, source="api", title=title, severity="high",
                            window_start=from_ns(at(0)), window_end=from_ns(at(100)), scope=Scope("c"),
                            lock=LockSpec("COMPLIANCE", datetime(2099, 1, 1, tzinfo=UTC)))
    return build_manifest(request, [_entry("node-a", 1, 0, 50)], datetime(2025, 11, 21, tzinfo=UTC), "raw",
                          gap_records)


def _page(root: Path, tables: dict[str, list[dict[str, Any]]], manifest: dict[str, Any] | None = None,
          parts: tuple[dict[str, Any], ...] = ()) -> str:
    write_tables(root, tables, incident_id=INCIDENT)
    queries, bucket_ns = run_queries(connect_local(root), INCIDENT, at(0), at(100))
    return render(ReportData(manifest or _manifest(), parts, queries, bucket_ns), datetime(2025, 11, 21, tzinfo=UTC))


@pytest.mark.parametrize(("span_s", "bucket_s"), [(0, 0.1), (5.9, 0.1), (59, 1), (60, 2), (1200, 30), (10**7, 86400)])
def test_the_timeline_keeps_under_sixty_buckets(span_s: float, bucket_s: float) -> None:
    assert bucket_width_ns(int(span_s * 1e9)) == int(bucket_s * 1e9)


def test_null_tcp_insights_and_empty_tables_are_said_so(tmp_path: Path) -> None:
    page = _page(tmp_path, {"connections": [{"ts_ns": at(1), "completeness": 37}, {"ts_ns": at(2)}]})
    tiles = dict((name, value) for value, name in re.findall(
        r'<div class="value">([^<]*)</div><div class="name">([^<]*)</div>', page))
    assert tiles["TCP connections"] == "2" and tiles["refused"] == "1" and tiles["retransmissions"] == "n/a"
    assert "No DNS failures." in page and "No TLS handshake failures." in page and "No HTTP requests." in page
    assert page.count("<svg ") == 3


def test_rows_of_other_incidents_stay_out(tmp_path: Path) -> None:
    page = _page(tmp_path, {"http": [{"ts_ns": at(1), "status": 500, "path": "/mine"},
                                     {"ts_ns": at(1), "status": 500, "path": "/theirs", "incident_id": "inc-2"}]})
    assert "/mine" in page and "/theirs" not in page


def test_late_parts_join_the_coverage(tmp_path: Path) -> None:
    late = _entry("node-c", 9, 0, 100)
    part = {"incident_id": INCIDENT, "segments": [late.to_dict()]}
    page = _page(tmp_path, {"connections": [{"ts_ns": at(1)}]}, parts=(part,))
    coverage = page[page.index('id="coverage"'):page.index('id="timeline"')]
    assert ">node-c</td>" in coverage and "2 (1 late)" in page
    assert "50.0 %" in coverage and "100.0 %" in coverage  # node-a: 0..50 s of 0..100 s; node-c: all of it


def test_every_string_from_the_tables_and_the_alert_is_escaped(tmp_path: Path) -> None:
    # Each row is an error, so it shows up in every section that lists rows.
    errors = {"connections": {"proto": "tcp", "completeness": 37}, "http": {"status": 503, "latency_us": 10},
              "dns": {"rcode": 3}, "tls": {"established": False}}
    tables: dict[str, list[dict[str, Any]]] = {}
    for name, error in errors.items():
        strings = {f.name: f"{f.name}{HOSTILE}" for f in TABLES[name]
                   if str(f.type) == "string" and f.name not in ("proto", "conn_id")}
        tables[name] = [{"ts_ns": at(3), **strings, **error}]
    page = _page(tmp_path, tables, manifest=_manifest(title=HOSTILE))
    assert "<script" not in page.lower() and "<img" not in page.lower()
    for shown in ("sni", "qname", "path", "host", "alert", "src_workload", "dst_namespace", "node"):
        assert f"{shown}&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;&lt;img" in page, shown


def test_the_sql_shown_is_the_sql_that_ran(tmp_path: Path) -> None:
    write_tables(tmp_path, {"http": [{"ts_ns": at(1), "status": 502}]}, incident_id=INCIDENT)
    queries, bucket_ns = run_queries(connect_local(tmp_path), INCIDENT, at(0), at(100))
    page = render(ReportData(_manifest(), (), queries, bucket_ns), datetime.now(UTC) + timedelta(0))
    for query, result in queries:
        assert result.sql == query.sql
        assert query.sql.replace("'", "&#x27;").replace(">", "&gt;").replace("<", "&lt;") in page


def test_coverage_lists_intervals_gaps_and_the_agents_evicted_segments(tmp_path: Path) -> None:
    evicted = {"node": "node-a", "start_ns": at(50), "end_ns": at(80), "first_seq": 2, "last_seq": 4, "segments": 3}
    page = _page(tmp_path, {"connections": [{"ts_ns": at(1)}]}, manifest=_manifest(gap_records=(evicted,)))
    coverage = page[page.index('id="coverage"'):page.index('id="timeline"')]
    header = re.findall(r"<th>([^<]*)</th>", coverage)
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", coverage)
    row = dict(zip(header, cells, strict=True))
    start, middle, end = (f"{from_ns(at(s)):%H:%M:%S}.000" for s in (0, 50, 100))
    assert row["covered intervals"] == f"{start}–{middle}"
    assert row["gaps"] == f"{middle}–{end} (50.0 s): evicted by the agent (spool full)"
    assert row["evicted segments"] == "3" and row["seq gaps"] == "none"


def test_each_figure_is_well_formed_svg(tmp_path: Path) -> None:
    page = _page(tmp_path, {"connections": [{"ts_ns": at(1), "completeness": 37, "dst_workload": HOSTILE,
                                             "dst_namespace": "shop"}],
                            "http": [{"ts_ns": at(2), "status": 500, "path": HOSTILE}]})
    figures = re.findall(r"<svg .*?</svg>", page, flags=re.S)
    assert len(figures) == 3
    for figure in figures:
        root = ElementTree.fromstring(figure)  # noqa: S314 - our own output, parsed to prove it is well formed
        assert root.tag == "{http://www.w3.org/2000/svg}svg" and len(root) > 0
