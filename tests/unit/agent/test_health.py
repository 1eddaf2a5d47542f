"""/healthz and /metrics: a heartbeat that stalls for more than two segment periods is unhealthy, and the metrics are
valid Prometheus text carrying the figures of the parts (checked against the fixture, not against the collector)."""

from __future__ import annotations

import json
import math
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from freezeframe.capture.pcapio import PcapReader
from freezeframe.contracts.config import Settings
from freezeframe_agent.health import CONTENT_TYPE, AgentMetrics, Health, HealthServer, Sample, render
from freezeframe_agent.segmenter import Segmenter
from freezeframe_agent.spool import Spool
from freezeframe_agent.uploader import Uploader

SAMPLE = Path(__file__).resolve().parents[2] / "fixtures" / "sample.pcap"
S = 1_000_000_000
T0 = 1_800_000_000 * S

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
_SAMPLE_LINE = re.compile(rf"^(?P<name>{_NAME})(?:\{{(?P<labels>{_LABEL}(?:,{_LABEL})*)?\}})? (?P<value>\S+)"
                          r"(?: -?\d+)?$")
_HELP = re.compile(rf"^# HELP (?P<name>{_NAME}) (?P<text>.*)$")
_TYPE = re.compile(rf"^# TYPE (?P<name>{_NAME}) (?P<type>counter|gauge|histogram|summary|untyped)$")


def parse_prometheus(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """A strict reader of the text exposition format 0.0.4 (flat families only, which is all the agent emits):
    every line is HELP, TYPE or a sample; HELP and TYPE come at most once per family and before its samples;
    a family's samples are contiguous; values are floats; counters are not negative."""
    assert text.endswith("\n"), "the exposition ends with a line feed"
    families: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    types: dict[str, str] = {}
    helps: set[str] = set()
    closed: set[str] = set()
    current: str | None = None
    for line in text[:-1].split("\n"):
        if match := _HELP.match(line):
            name = match["name"]
            assert name not in helps and name not in families, f"HELP for {name} repeated or after its samples"
            helps.add(name)
        elif match := _TYPE.match(line):
            name = match["name"]
            assert name not in types and name not in families, f"TYPE for {name} repeated or after its samples"
            types[name] = match["type"]
        elif match := _SAMPLE_LINE.match(line):
            name = match["name"]
            assert name in types and name in helps, f"{name} has no TYPE/HELP before its samples"
            if current != name:
                assert name not in closed, f"samples of {name} are not contiguous"
                if current is not None:
                    closed.add(current)
                current = name
            labels = tuple(tuple(pair.split("=", 1)) for pair in re.findall(_LABEL, match["labels"] or ""))
            value = float(match["value"])  # NaN and +Inf parse too
            if types[name] == "counter":
                assert not math.isnan(value) and value >= 0, f"counter {name} is {value}"
            series = families.setdefault(name, {})
            assert labels not in series, f"duplicate series {name}{labels}"
            series[labels] = value  # type: ignore[index]
        else:
            raise AssertionError(f"not a valid exposition line: {line!r}")
    return families


class Clock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


class StubSource:
    link_type, snaplen, capture_filter = 1, 262144, ""
    kernel_drops, agent_drops = 3, 1


class Bus:
    def __init__(self) -> None:
        self.down = False

    def publish(self, topic: str, key: str, value: Any) -> None:
        if self.down:
            raise ConnectionError("down")

    def read(self, topic: str, timeout_s: float = 5.0) -> list[Any]:
        return []

    def close(self) -> None:
        return None


class S3:
    def put_object(self, **kwargs: Any) -> dict[str, str]:
        return {"VersionId": "v-" + kwargs["Key"][-12:]}


@pytest.fixture
def server() -> Iterator[tuple[HealthServer, Health, Clock]]:
    clock = Clock()
    health = Health(period_s=10.0, clock=clock)
    http = HealthServer(0, health.report, lambda: render([Sample("up", "gauge", "Up.", 1)]), host="127.0.0.1")
    http.start()
    try:
        yield http, health, clock
    finally:
        http.stop()


def get(server: HealthServer, path: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}", timeout=10) as reply:
            return reply.status, reply.headers["Content-Type"], reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


def test_healthz_turns_503_once_the_heartbeat_stalls_for_more_than_two_periods(server: Any) -> None:
    http, health, clock = server
    assert get(http, "/healthz")[0] == 200
    clock.now += 20.0  # exactly two periods: still within the limit
    assert get(http, "/healthz")[0] == 200
    clock.now += 0.5
    status, content_type, body = get(http, "/healthz")
    assert status == 503 and content_type == "application/json"
    reply = json.loads(body)
    assert reply["status"] == "unhealthy" and "heartbeat" in reply["reasons"][0]
    assert reply["heartbeat_age_s"] == 20.5
    health.beat()  # capture resumed
    assert get(http, "/healthz")[0] == 200


def test_a_failure_or_a_failing_check_is_unhealthy_with_its_reason(server: Any) -> None:
    http, health, _ = server
    health.add_check(lambda: "an upload thread is not running")
    health.fail("capture engine exited: tcpdump: eth9: No such device")
    status, _, body = get(http, "/healthz")
    assert status == 503
    assert json.loads(body)["reasons"] == ["capture engine exited: tcpdump: eth9: No such device",
                                           "an upload thread is not running"]


def test_metrics_are_served_as_prometheus_text_and_other_paths_are_404(server: Any) -> None:
    http, _, _ = server
    status, content_type, body = get(http, "/metrics")
    assert (status, content_type) == (200, CONTENT_TYPE)
    assert parse_prometheus(body.decode()) == {"freezeframe_agent_up": {(): 1.0}}
    assert get(http, "/nope")[0] == 404


def test_label_values_and_help_are_escaped() -> None:
    text = render([Sample("info", "gauge", "Back\\slash and\nnewline.", 1, (("node", 'a"b\\c\nd'),)),
                   Sample("lag_seconds", "gauge", "Lag.", float("nan"))])
    parsed = parse_prometheus(text)
    assert parsed["freezeframe_agent_info"] == {(("node", '"a\\"b\\\\c\\nd"'),): 1.0}
    assert math.isnan(parsed["freezeframe_agent_lag_seconds"][()])
    assert "# HELP freezeframe_agent_info Back\\\\slash and\\nnewline." in text


def test_agent_metrics_report_the_capture_spool_and_upload_figures(tmp_path: Path) -> None:
    with open(SAMPLE, "rb") as handle:
        reader = PcapReader(handle)
        packets = list(reader)
    expected_segments = len({p.ts_ns // (10 * S) for p in packets})  # 10 s grid slots holding packets
    spool = Spool(tmp_path, clock_ns=lambda: T0)
    segmenter = Segmenter(cluster="c1", node="n1", spool_dir=tmp_path, link_type=reader.link_type,
                          snaplen=reader.header.snaplen, period_s=10.0, capture_filter="", agent_version="t",
                          spool=spool, clock_ns=lambda: T0)
    for packet in packets:
        segmenter.add(packet.ts_ns, packet.data, packet.orig_len)
    segmenter.flush()
    spool.evict([spool.entries()[0]], "spool_full")
    bus = Bus()
    bus.down = True  # S3 takes them all, the bus none: every segment still counts as not uploaded
    uploader = Uploader(Settings(cluster="c1", node_name="n1"), S3(), spool, bus=bus)
    with pytest.raises(ConnectionError):
        uploader.drain()
    clock = Clock()
    health = Health(period_s=10.0, clock=clock)
    clock.now += 4.0
    metrics = AgentMetrics(cluster="c1", node="n1", version="t", health=health, source=StubSource(),  # type: ignore[arg-type]
                           segmenter=segmenter, spool=spool, uploader=uploader, clock_ns=lambda: T0 + 7 * S)
    parsed = {name.removeprefix("freezeframe_agent_"): series
              for name, series in parse_prometheus(metrics.render()).items()}
    flat = {name: next(iter(series.values())) for name, series in parsed.items() if len(series) == 1}
    assert flat["packets_captured_total"] == len(packets)
    assert flat["bytes_captured_total"] == sum(p.orig_len for p in packets)
    assert flat["segments_closed_total"] == expected_segments
    assert flat["segments_stored_total"] == expected_segments - 1
    assert flat["segments_uploaded_total"] == 0
    assert flat["segments_evicted_total"] == 1 and flat["gap_records_pending"] == 1
    assert flat["spool_segments"] == expected_segments - 1 and flat["spool_bytes"] == 0
    assert flat["upload_lag_seconds"] == 7.0 and flat["last_segment_age_seconds"] == 7.0
    assert flat["kernel_drops_total"] == 3 and flat["agent_drops_total"] == 1
    assert flat["heartbeat_age_seconds"] == 4.0 and flat["healthy"] == 1
    assert parsed["upload_failures_total"] == {(("stage", '"s3"'),): 0.0, (("stage", '"bus"'),): 0.0}
    assert parsed["info"] == {(("version", '"t"'), ("cluster", '"c1"'), ("node", '"n1"'),
                               ("engine", '"StubSource"')): 1.0}
