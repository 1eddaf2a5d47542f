"""The incident report on the real endpoint, rendered by headless Chromium: a fixture manifest and fixture Parquet
tables in LocalStack go in, `write_incident_report` stores the page in the evidence bucket, and the DOM Chromium
builds from it must hold every section, the SVG figures, the fixtures' numbers, and hostile values as inert text."""

from __future__ import annotations

import io
import os
import re
import shutil
import struct
import subprocess
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from freezeframe.adapters import s3 as s3io
from freezeframe.contracts.config import Settings
from freezeframe.contracts.keys import manifest_key, report_key, table_part_key
from freezeframe.contracts.models import FreezeRequest, LockSpec, ManifestEntry, Scope, from_ns
from freezeframe.custody.manifest import build_manifest
from freezeframe.dissect.views import write_incident_views
from tests.fixtures.evidence_tables import at, table_of

pytestmark = pytest.mark.integration

INCIDENT = "it-report-1"
WINDOW_START = at(-300)
WINDOW_END = at(600)
SNI_ATTACK = "<script>alert(1)</script>"
QNAME_ATTACK = '"><img src=x onerror=alert(2)>.evil'
PATH_ATTACK = "/api/<svg onload=alert(3)>"
WORKLOAD_ATTACK = "</title><script>alert(4)</script>"
FRONTEND = {"src_ip": "10.0.0.10", "src_namespace": "shop", "src_workload": "frontend"}
CHECKOUT = {"dst_ip": "10.0.0.20", "dst_port": 8080, "dst_namespace": "shop", "dst_workload": "checkout"}
SECTIONS = ["Coverage per node", "Timeline of errors", "Node health", "Endpoint readiness", "Service map", "Services",
            "TCP health", "DNS failures", "TLS handshake failures", "Slowest endpoints", "SQL behind each section"]


def _connections() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for i in range(6):  # full lives, the last one ended by a reset after data (completeness 47), TCP analysis filled
        rows.append({**FRONTEND, **CHECKOUT, "ts_ns": at(5 + i * 12), "duration_us": 40_000,
                     "completeness": 47 if i == 5 else 31, "retransmissions": i, "retransmission_rate": i / 100,
                     "dup_acks": i, "zero_window_events": 0, "handshake_us": 300 + i * 10, "rtt_max_us": 900 + i})
    for i in range(2):  # refused by an address no pod owns: the map shows the bare IP
        rows.append({**FRONTEND, "dst_ip": "10.0.0.30", "dst_port": 5432, "ts_ns": at(30 + i), "completeness": 37})
    rows.append({**FRONTEND, "proto": "udp", "dst_ip": "10.0.0.53", "dst_port": 53, "dst_namespace": "kube-system",
                 "dst_workload": "coredns", "ts_ns": at(2)})
    rows.append({"src_ip": "10.0.0.20", "src_namespace": "shop", "src_workload": "checkout", "dst_ip": "10.0.0.40",
                 "dst_port": 443, "dst_namespace": "shop", "dst_workload": WORKLOAD_ATTACK, "ts_ns": at(40),
                 "completeness": 31})
    rows.append({"node": "node-b", "src_ip": "10.0.1.7", "src_namespace": "shop", "src_workload": "cart",
                 "dst_ip": "10.0.1.5", "dst_port": 6379, "dst_namespace": "shop", "dst_workload": "redis",
                 "ts_ns": at(50), "completeness": 31})
    return rows


HTTP = [
    *({**FRONTEND, **CHECKOUT, "ts_ns": at(6 + i * 5), "path": "/api/cart", "status": 200, "latency_us": 2_000 + i}
      for i in range(6)),
    {**FRONTEND, **CHECKOUT, "ts_ns": at(10), "method": "POST", "path": "/api/checkout?id=1", "status": 503,
     "latency_us": 2_500_000},
    {**FRONTEND, **CHECKOUT, "ts_ns": at(20), "method": "POST", "path": "/api/checkout?id=2", "status": 503,
     "latency_us": 1_900_000},
    {**FRONTEND, **CHECKOUT, "ts_ns": at(70), "method": "POST", "path": "/api/checkout?id=3", "status": 502,
     "latency_us": 900_000},
    {**FRONTEND, **CHECKOUT, "ts_ns": at(75), "path": PATH_ATTACK, "status": 404, "latency_us": 1_000},
]
DNS = [
    {**FRONTEND, "dst_ip": "10.0.0.53", "ts_ns": at(1), "qname": "checkout.shop.svc.cluster.local", "rcode": 0,
     "rcode_name": "NOERROR"},
    {**FRONTEND, "dst_ip": "10.0.0.53", "ts_ns": at(3), "qname": "payments.shop.svc.cluster.local", "rcode": 3,
     "rcode_name": "NXDOMAIN"},
    {**FRONTEND, "dst_ip": "10.0.0.53", "ts_ns": at(4), "qname": QNAME_ATTACK, "rcode": 3, "rcode_name": "NXDOMAIN"},
    {**FRONTEND, "dst_ip": "10.0.0.53", "ts_ns": at(8), "qname": "db.shop.svc.cluster.local", "rcode": 2,
     "rcode_name": "SERVFAIL"},
    {**FRONTEND, "dst_ip": "10.0.0.53", "ts_ns": at(9), "qname": "metrics.shop.svc.cluster.local"},  # no answer
]
TLS = [
    {**FRONTEND, "dst_ip": "10.0.0.40", "dst_port": 443, "ts_ns": at(12), "sni": "api.example.com",
     "established": True},
    {**FRONTEND, "dst_ip": "10.0.0.40", "dst_port": 443, "ts_ns": at(44), "sni": SNI_ATTACK, "established": False,
     "alert": "fatal:handshake_failure", "alert_from": "server"},
]


def _entry(node: str, seq: int, start_s: float, end_s: float, kernel_drops: int = 0) -> ManifestEntry:
    start, end = at(start_s), at(end_s)
    return ManifestEntry(key=f"raw/it/{node}/{start}-{end}.pcap", version_id=f"v{seq}", sha256="0" * 64, size=100,
                         node=node, start_ns=start, end_ns=end, seq=seq, packets=10, lock_mode="COMPLIANCE",
                         retain_until="2099-01-01T00:00:00.000Z", legal_hold=False, kernel_drops=kernel_drops)


# node-a: segments 1, 2 and 4 (3 is missing: a seq gap and a hole in the covered time); node-b: one segment with drops
ENTRIES = [_entry("node-a", 1, -300, 0), _entry("node-a", 2, 0, 100), _entry("node-a", 4, 200, 600),
           _entry("node-b", 7, -300, 600, kernel_drops=7)]


@dataclass
class Dom:
    """What a test needs from Chromium's serialized DOM: headings, every element, texts per section and per table row,
    and the <title> tooltips of each SVG."""

    h2: list[str] = field(default_factory=list)
    elements: list[tuple[str, dict[str, str | None]]] = field(default_factory=list)
    section_text: dict[str, str] = field(default_factory=lambda: defaultdict(str))
    rows: dict[str, list[list[str]]] = field(default_factory=lambda: defaultdict(list))
    svg_titles: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))


class _DomReader(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.dom = Dom()
        self.section = ""
        self.svg = ""
        self.capture: list[str] | None = None
        self.capture_tag = ""
        self.row: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.dom.elements.append((tag, attributes))
        if tag == "section":
            self.section = attributes.get("id") or ""
        elif tag == "svg":
            self.svg = attributes.get("aria-label") or ""
        elif tag == "tr":
            self.row = []
        if tag in ("h2", "td", "th", "title") and self.capture is None:
            self.capture, self.capture_tag = [], tag

    def handle_endtag(self, tag: str) -> None:
        if tag == self.capture_tag and self.capture is not None:
            text = "".join(self.capture)
            if tag == "h2":
                self.dom.h2.append(text)
            elif tag in ("td", "th") and self.row is not None:
                self.row.append(text)
            elif tag == "title" and self.svg:
                self.dom.svg_titles[self.svg].append(text)
            self.capture = None
        if tag == "tr" and self.row is not None:
            self.dom.rows[self.section].append(self.row)
            self.row = None
        elif tag == "svg":
            self.svg = ""
        elif tag == "section":
            self.section = ""

    def handle_data(self, data: str) -> None:
        if self.capture is not None:
            self.capture.append(data)
        if self.section:
            self.dom.section_text[self.section] += data


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("headless Chromium is not installed (.ci/setup installs Debian's chromium)")
    return path


def run_chromium(*args: str) -> str:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--disable-extensions",
             "--no-first-run", "--disable-dev-shm-usage"]
    done = subprocess.run([chromium(), *flags, *args], capture_output=True, text=True, timeout=90, check=True)
    return done.stdout


@pytest.fixture(scope="module")
def evidence(stack: Any) -> Settings:
    """Buckets of the module's own on the stack's LocalStack, holding the fixture manifest and tables."""
    suffix = uuid.uuid4().hex[:10]
    config = Settings(cluster=f"it-{suffix}", s3_endpoint=stack.s3_endpoint, raw_bucket=f"ff-raw-{suffix}",
                      evidence_bucket=f"ff-evidence-{suffix}", lock_retain_days=1)
    s3 = s3io.client(config)
    s3io.ensure_buckets(s3, config)
    request = FreezeRequest(incident_id=INCIDENT, source="api", title="checkout 5xx", severity="critical",
                            window_start=from_ns(WINDOW_START), window_end=from_ns(WINDOW_END),
                            scope=Scope(config.cluster), lock=LockSpec("COMPLIANCE", datetime.now(UTC)
                                                                       + timedelta(days=1)))
    manifest = build_manifest(request, ENTRIES, datetime.now(UTC), config.raw_bucket)
    s3io.put_json(s3, config.evidence_bucket, manifest_key(INCIDENT), manifest)
    by_node: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for table, rows in (("connections", _connections()), ("http", HTTP), ("dns", DNS), ("tls", TLS)):
        for row in rows:
            by_node[(table, row.get("node", "node-a"))].append(row)
    for (table, node), rows in by_node.items():
        buffer = io.BytesIO()
        pq.write_table(table_of(table, rows), buffer)
        s3io.put_bytes(s3, config.evidence_bucket, table_part_key(table, WINDOW_START, INCIDENT, node),
                       buffer.getvalue(), content_type="application/vnd.apache.parquet")
    # What finalize does before it writes the report: the incident's views, which the report's SQL reads.
    write_incident_views(config.evidence_bucket, s3, INCIDENT,
                         [table_part_key(table, WINDOW_START, INCIDENT, node) for table, node in by_node])
    return config


@pytest.fixture(scope="module")
def report(evidence: Settings, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Dom, Path]:
    """Rendered once for the module, one Chromium run."""
    from freezeframe.investigate.report import write_incident_report

    config, s3 = evidence, s3io.client(evidence)

    key = write_incident_report(config, s3, INCIDENT)
    page = s3io.get_bytes(s3, config.evidence_bucket, key).decode()
    path = tmp_path_factory.mktemp("report") / "report.html"
    path.write_text(page, encoding="utf-8")
    reader = _DomReader()
    reader.feed(run_chromium("--dump-dom", path.as_uri()))
    return key, reader.dom, path


def test_the_report_is_stored_in_the_evidence_bucket_and_renders_every_section(report: Any) -> None:
    key, dom, _ = report
    assert key == report_key(INCIDENT) == f"incidents/{INCIDENT}/report.html"
    assert dom.h2 == SECTIONS
    charts = {attrs.get("aria-label") for tag, attrs in dom.elements if tag == "svg"}
    assert charts == {"coverage per node", "timeline of errors", "service map"}
    # Self-contained: nothing is fetched from anywhere.
    for tag, attrs in dom.elements:
        assert not (tag in ("link", "img", "iframe", "object", "embed", "script") or
                    (tag != "a" and attrs.get("src")) or (attrs.get("href") or "#").split("#")[0]), (tag, attrs)


def test_coverage_shows_the_manifest_gaps_and_drops(report: Any) -> None:
    _, dom, _ = report
    rows = {r[0]: r for r in dom.rows["coverage"][1:]}
    header = dom.rows["coverage"][0]
    node_a, node_b = (dict(zip(header, rows[n], strict=True)) for n in ("node-a", "node-b"))
    assert node_a["segments"] == "3" and node_a["seq gaps"] == "3"
    assert node_a["window covered"] == f"{(400 + 400) * 100 / 900:.1f} %"  # -300..100 s and 200..600 s of -300..600
    assert node_b["kernel drops"] == "7" and node_b["gaps"] == "none"
    assert node_a["connections"] == str(sum(1 for r in _connections() if r.get("node", "node-a") == "node-a"))
    assert node_a["http"] == str(len(HTTP)) and node_a["dns"] == str(len(DNS)) and node_a["tls"] == str(len(TLS))
    assert node_b["connections"] == "1"
    covered = [t for t in dom.svg_titles["coverage per node"] if t.startswith("covered")]
    assert len(covered) == 3  # node-a's two runs and node-b's one


def test_the_timeline_plots_every_error_of_the_fixtures(report: Any) -> None:
    _, dom, _ = report
    totals: dict[str, int] = defaultdict(int)
    for title in dom.svg_titles["timeline of errors"]:
        match = re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3}: (\d+) (.+)", title)
        assert match, title
        totals[match[2]] += int(match[1])
    assert totals == {
        "HTTP 5xx": sum(1 for r in HTTP if r["status"] >= 500),
        "TCP resets": sum(1 for r in _connections() if (r.get("completeness") or 0) & 32),
        "DNS failures": sum(1 for r in DNS if r.get("rcode") != 0),
        "TLS failures": sum(1 for r in TLS if not r["established"]),
    }


def test_the_service_map_names_workloads_or_ips_with_error_counts(report: Any) -> None:
    _, dom, _ = report
    header, *rows = dom.rows["service-map"]
    edges = {(r[0], r[1]): dict(zip(header, r, strict=True)) for r in rows}
    edge = edges[("shop/frontend", "shop/checkout")]
    assert edge["connections"] == "6" and edge["HTTP requests"] == str(len(HTTP))
    assert edge["HTTP 5xx"] == str(sum(1 for r in HTTP if r["status"] >= 500))
    assert edge["failed (reset, refused, unanswered)"] == "1"  # the connection ended by a reset
    assert edges[("shop/frontend", "10.0.0.30")]["failed (reset, refused, unanswered)"] == "2"
    assert ("shop/cart", "shop/redis") in edges  # node-b's traffic is on the same map
    nodes = {t for t in dom.svg_titles["service map"] if "→" not in t}
    assert {"shop/frontend", "shop/checkout", "10.0.0.30", "kube-system/coredns", f"shop/{WORKLOAD_ATTACK}"} <= nodes


def test_tcp_dns_tls_and_slowest_sections_show_the_fixture_values(report: Any) -> None:
    _, dom, _ = report
    tcp = dom.section_text["tcp"]
    tcp_rows = sum(1 for r in _connections() if r.get("proto", "tcp") == "tcp")
    assert f"{tcp_rows}TCP connections" in tcp and "2refused" in tcp
    # Only the frontend-checkout rows carry TCP analysis values; the nulls of the others must not blank the sums.
    assert f"{sum(r.get('retransmissions') or 0 for r in _connections())}retransmissions" in tcp
    assert f"{max(r.get('retransmission_rate') or 0 for r in _connections()) * 100:.2f} %max retransmission" in tcp
    assert f"{max(r.get('rtt_max_us') or 0 for r in _connections()) / 1000:,.1f} msmax RTT" in tcp
    hot = dom.rows["tcp"][1:]
    assert hot[0][:3] == ["shop/frontend", "shop/checkout", "8080"] and hot[1][4:6] == ["2", "n/a"]
    dns = {r[1]: r for r in dom.rows["dns"][1:]}
    assert dns[QNAME_ATTACK][3] == "NXDOMAIN" and dns["db.shop.svc.cluster.local"][3] == "SERVFAIL"
    assert dns["metrics.shop.svc.cluster.local"][3] == "no response"
    assert "checkout.shop.svc.cluster.local" not in dns
    tls = dom.rows["tls"][1:]
    assert [r[:3] for r in tls] == [[SNI_ATTACK, "fatal:handshake_failure", "server"]]
    slowest = dom.rows["slowest"][1:]
    slowest_http = max(HTTP, key=lambda r: r["latency_us"])
    assert slowest[0][3] == slowest_http["path"].split("?")[0]
    assert slowest[0][4] == str(sum(1 for r in HTTP if r["path"].startswith("/api/checkout")))  # query strings merged
    assert slowest[0][-1] == f"{slowest_http['latency_us'] / 1000:,.1f} ms"


def test_each_section_shows_the_sql_that_produced_it(report: Any) -> None:
    _, dom, _ = report
    for section in ("coverage", "timeline", "service-map", "tcp", "dns", "tls", "slowest"):
        text = dom.section_text[section]
        assert "SELECT" in text and f"incident_id = '{INCIDENT}'" in text, section
    assert dom.section_text["sql"].count("SELECT") >= 8


def test_hostile_values_stay_text(report: Any) -> None:
    _, dom, path = report
    assert not [e for e in dom.elements if e[0] in ("script", "img")]
    assert not [e for e in dom.elements if any(name.startswith("on") for name in e[1])]
    assert SNI_ATTACK in dom.section_text["tls"] and QNAME_ATTACK in dom.section_text["dns"]
    assert PATH_ATTACK in dom.section_text["slowest"]
    raw = path.read_text()
    for attack in (SNI_ATTACK, QNAME_ATTACK, PATH_ATTACK, WORKLOAD_ATTACK):
        assert attack not in raw


def test_screenshot(report: Any, tmp_path: Path) -> None:
    _, _, path = report
    shot = tmp_path / "report.png"
    run_chromium("--window-size=1280,2600", f"--screenshot={shot}", path.as_uri())
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", data[16:24]) == (1280, 2600)
    assert len(data) > 50_000  # a blank page compresses to a few kB
    if os.environ.get("FREEZEFRAME_REPORT_SCREENSHOT"):  # refresh the README's picture
        shutil.copyfile(shot, os.environ["FREEZEFRAME_REPORT_SCREENSHOT"])


def test_the_report_command_writes_the_file_and_stores_it(evidence: Settings, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    from freezeframe_local.cli import main

    from freezeframe.contracts.config import env_overrides, reset_settings_cache

    for name, value in env_overrides(evidence.with_(state_dir=tmp_path / "no-stack")).items():
        monkeypatch.setenv(name, value)
    reset_settings_cache()
    out = tmp_path / "out.html"
    assert main(["report", INCIDENT, "-o", str(out), "--store"]) == 0
    page = out.read_text(encoding="utf-8")
    assert all(f"<h2>{title}</h2>" in page for title in SECTIONS)
    stored = s3io.get_bytes(s3io.client(evidence), evidence.evidence_bucket, report_key(INCIDENT)).decode()
    assert stored == page
    assert f"s3://{evidence.evidence_bucket}/{report_key(INCIDENT)}" in capsys.readouterr().out
    assert main(["report", "no-such-incident", "-o", str(tmp_path / "x.html")]) == 2
    assert "not found" in capsys.readouterr().err
