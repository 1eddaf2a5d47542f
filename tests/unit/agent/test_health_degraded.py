"""/healthz tells the truth (issue 13): it said "ok" during 92 % kernel loss and during 54 s of failed uploads with
segments being evicted. It now says "degraded" with the reason (still 200, so a liveness probe does not restart a
capture that restarting would not help) when the last segments dropped more than the configured share of their
packets, an upload stage has failed for longer than a segment period, or the spool evicted segments; /metrics
carries the same. Real segmenter, spool and uploader; only S3 and the bus are stand-ins."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from freezeframe.capture.pcapio import PcapReader
from freezeframe.contracts.config import Settings
from freezeframe_agent import health as health_module
from freezeframe_agent.health import AgentMetrics, Health, HealthServer
from freezeframe_agent.segmenter import Segmenter
from freezeframe_agent.spool import Spool
from freezeframe_agent.uploader import Uploader
from tests.unit.agent.test_health import SAMPLE, T0, Bus, StubSource, get, parse_prometheus

S = 1_000_000_000


class FailingS3:
    def __init__(self) -> None:
        self.down = False

    def put_object(self, **kwargs: Any) -> dict[str, str]:
        if self.down:
            raise ConnectionError("S3 unreachable")
        return {"VersionId": "v-" + kwargs["Key"][-12:]}


def _parts(tmp_path: Path, kernel: Callable[[int], int]) -> tuple[Segmenter, Spool, bytes, int]:
    with open(SAMPLE, "rb") as handle:
        reader = PcapReader(handle)
        packet = next(iter(reader))
        link_type, snaplen = reader.link_type, reader.header.snaplen
    spool = Spool(tmp_path / "spool", clock_ns=lambda: T0)
    segmenter = Segmenter(cluster="c1", node="n1", spool_dir=tmp_path / "spool", link_type=link_type,
                          snaplen=snaplen, period_s=10.0, capture_filter="", agent_version="t", spool=spool,
                          clock_ns=lambda: T0, kernel_drops_until=kernel)
    return segmenter, spool, packet.data, packet.orig_len


def _metrics(segmenter: Segmenter, spool: Spool, uploader: Uploader, health: Health | None = None,
             **since_the_fix: Any) -> AgentMetrics:
    """AgentMetrics built with the arguments it has always taken; `since_the_fix` (drop_ratio, monotonic) only where
    a test checks what the fix added beyond the defect (a threshold, a clock for the memory of an eviction)."""
    return AgentMetrics(cluster="c1", node="n1", version="t", health=health or Health(period_s=10.0),
                        source=StubSource(), segmenter=segmenter, spool=spool, uploader=uploader,  # type: ignore[arg-type]
                        clock_ns=lambda: T0, **since_the_fix)


def _fill(segmenter: Segmenter, data: bytes, orig_len: int, segments: int, packets: int, start_s: int = 0,
          kernel_total: int = 0) -> None:
    for index in range(segments):
        for n in range(packets):
            segmenter.add(T0 + (start_s + index * 10) * S + n * 1000, data, orig_len)
    segmenter.flush(kernel_drops=kernel_total)


def _served(metrics: AgentMetrics) -> tuple[int, dict[str, Any], dict[str, Any]]:
    server = HealthServer(0, metrics.health_report, metrics.render, host="127.0.0.1").start()
    try:
        status, _, body = get(server, "/healthz")
        _, _, text = get(server, "/metrics")
    finally:
        server.stop()
    return status, json.loads(body), parse_prometheus(text.decode())


def test_recent_kernel_loss_above_the_threshold_is_degraded(tmp_path: Path) -> None:
    segmenter, spool, data, orig_len = _parts(tmp_path, lambda _end: 0)
    uploader = Uploader(Settings(cluster="c1", node_name="n1"), FailingS3(), spool, bus=Bus())
    metrics = _metrics(segmenter, spool, uploader)
    _fill(segmenter, data, orig_len, segments=3, packets=10)
    status, body, parsed = _served(metrics)
    assert (status, body["status"]) == (200, "ok")

    # 92 % loss in the newest segment (115 kernel drops beside 10 captured packets), 79 % over the last three.
    _fill(segmenter, data, orig_len, segments=1, packets=10, start_s=40, kernel_total=115)
    status, body, parsed = _served(metrics)
    assert status == 200 and body["status"] == "degraded", body  # before the fix: "ok"
    (reason,) = body["degraded"]
    assert "lost 115 of 145 packets (79.3 %: 115 kernel, 0 agent drops)" in reason
    assert parsed["freezeframe_agent_degraded"] == {(): 1.0}
    assert parsed["freezeframe_agent_recent_drop_ratio"] == {(): 115 / 145}
    assert list(parsed["freezeframe_agent_degraded_reason"].values()) == [1.0]

    # A loss under the configured threshold (FREEZEFRAME_HEALTH_DROP_RATIO, added by the fix) is not degraded.
    lenient = _metrics(segmenter, spool, uploader, drop_ratio=0.9)
    assert lenient.health_report().to_dict()["status"] == "ok"


def test_uploads_failing_for_longer_than_a_segment_period_are_degraded(tmp_path: Path) -> None:
    """Real time, a short segment period: S3 refuses every upload until the agent says degraded (bounded wait)."""
    segmenter, spool, data, orig_len = _parts(tmp_path, lambda _end: 0)
    s3 = FailingS3()
    s3.down = True
    uploader = Uploader(Settings(cluster="c1", node_name="n1"), s3, spool, bus=Bus())
    health = Health(period_s=0.3)
    metrics = _metrics(segmenter, spool, uploader, health)
    _fill(segmenter, data, orig_len, segments=2, packets=5)
    uploader.start()
    try:
        deadline = time.monotonic() + 10
        report = metrics.health_report().to_dict()
        while report["status"] != "degraded" and time.monotonic() < deadline:
            time.sleep(0.05)
            health.beat()  # the capture loop beats on every packet and idle tick; only the uploads fail
            report = metrics.health_report().to_dict()
        assert report["status"] == "degraded", report  # before the fix: "ok" for as long as S3 refused
        (reason,) = report["degraded"]
        assert reason.startswith("uploads (s3) failing for ") and "(longer than the 0.3 s segment period)" in reason
        assert "ConnectionError: S3 unreachable" in reason
        status, body, parsed = _served(metrics)
        assert status == 200 and body["status"] == "degraded"
        assert parsed["freezeframe_agent_upload_failing_seconds"][(("stage", '"s3"'),)] > 0.3
        s3.down = False  # S3 is back: the spool drains, the streak ends
        deadline = time.monotonic() + 15
        while metrics.health_report().to_dict()["status"] != "ok" and time.monotonic() < deadline:
            time.sleep(0.05)
            health.beat()
        assert metrics.health_report().to_dict()["status"] == "ok"
    finally:
        uploader.stop()


def test_uploads_failing_within_one_segment_period_are_not_degraded(tmp_path: Path) -> None:
    segmenter, spool, data, orig_len = _parts(tmp_path, lambda _end: 0)
    s3 = FailingS3()
    s3.down = True
    uploader = Uploader(Settings(cluster="c1", node_name="n1"), s3, spool, bus=Bus())
    _fill(segmenter, data, orig_len, segments=2, packets=5)
    uploader.start()
    try:
        deadline = time.monotonic() + 10
        while uploader.failing_since["s3"] is None and time.monotonic() < deadline:
            time.sleep(0.02)
        failing_since = uploader.failing_since["s3"]
        assert failing_since is not None
        clock = {"now": failing_since + 9.0}
        metrics = _metrics(segmenter, spool, uploader, monotonic=lambda: clock["now"])
        assert metrics.health_report().to_dict()["status"] == "ok"  # 9 s: within one segment period
        clock["now"] = failing_since + 54.0
        report = metrics.health_report().to_dict()
        assert report["degraded"][0].startswith("uploads (s3) failing for 54 s (longer than the 10 s segment period)")
    finally:
        uploader.stop()


def test_evicted_segments_keep_the_agent_degraded_for_a_while(tmp_path: Path) -> None:
    segmenter, spool, data, orig_len = _parts(tmp_path, lambda _end: 0)
    uploader = Uploader(Settings(cluster="c1", node_name="n1"), FailingS3(), spool, bus=Bus())
    metrics = _metrics(segmenter, spool, uploader)
    _fill(segmenter, data, orig_len, segments=3, packets=5)
    assert metrics.health_report().to_dict()["status"] == "ok"
    spool.evict(spool.entries()[:2], "spool_full")
    report = metrics.health_report().to_dict()
    assert report["status"] == "degraded", report  # before the fix: "ok" after evidence was evicted
    assert "evicted segments" in report["degraded"][0] and "(2 since start)" in report["degraded"][0]

    # The memory of an eviction ends after EVICTION_MEMORY_PERIODS segment periods (a clock the fix added).
    clock = {"now": 1000.0}
    remembering = _metrics(segmenter, spool, uploader, monotonic=lambda: clock["now"])
    spool.evict(spool.entries()[:1], "spool_full")
    assert remembering.health_report().to_dict()["status"] == "degraded"
    clock["now"] += health_module.EVICTION_MEMORY_PERIODS * 10.0 + 1
    assert remembering.health_report().to_dict()["status"] == "ok"
