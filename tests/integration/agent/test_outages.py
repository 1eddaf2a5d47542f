"""Outages mid-run against the real stack: a Kafka broker of this test's own is stopped and restarted, and LocalStack
S3 is cut off behind a forwarder (LocalStack runs with PERSISTENCE=0, so restarting it would lose the bucket: the
forwarder takes the endpoint away from the agent instead, refusing connections and resetting open ones). The agent
keeps spooling meanwhile; afterwards no segment is lost and none is stored or published twice. With a storage cap
too small for the outage, the evicted segments are reported by a gap record while S3 is still down."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from freezeframe_local.kafka import create_topics, start_kafka, stop_kafka

from freezeframe.adapters import s3 as s3io
from freezeframe_agent.main import run_replay

pytestmark = pytest.mark.integration


class AgentThread:
    """The agent replaying a capture in-process, in a thread of its own."""

    def __init__(self, config: Any, path: Path, s3: Any) -> None:
        self.records: list[Any] = []
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(config, path, s3), daemon=True)
        self._thread.start()

    def _run(self, config: Any, path: Path, s3: Any) -> None:
        try:
            self.records = run_replay(config, path, speedup=1.0, s3=s3)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread by join()
            self.error = exc

    def join(self, timeout_s: float) -> list[Any]:
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), "the agent did not finish uploading"
        if self.error is not None:
            raise self.error
        return self.records


def stored_unpublished(spool_dir: Path) -> int:
    """Segments S3 holds whose record is not on the bus yet (their sidecar carries the version id)."""
    return sum("version_id" in json.loads(p.read_text()) for p in spool_dir.glob("0*.json"))


def spooled(spool_dir: Path) -> int:
    """Segments whose bytes are still in the spool (S3 does not have them)."""
    return len(list(spool_dir.glob("*.pcap.zst")))


def test_kafka_stopped_and_restarted_mid_run_loses_and_duplicates_nothing(
        local: Any, tmp_path: Path, udp_capture: Any, helpers: Any) -> None:
    config, s3, _ = local
    broker = start_kafka(tmp_path / "kafka")  # our own broker: the session's must stay up for the other tests
    try:
        port = int(broker.bootstrap.rsplit(":", 1)[1])
        create_topics(broker.bootstrap, [config.segments_topic])
        config = config.with_(kafka_bootstrap=broker.bootstrap, segment_seconds=1.0)
        capture = udp_capture(seconds=24, rate_pps=25)
        agent = AgentThread(config, capture.path, s3)
        helpers.until(lambda: len(helpers.node_records(broker.bootstrap, config, 1.0)) >= 3, 30, "records on Kafka")

        stop_kafka(broker.pid)
        stored_before = len(helpers.s3_versions(s3, config))
        # S3 goes on while Kafka is away: segments keep being stored, their records wait in the spool.
        helpers.until(lambda: len(helpers.s3_versions(s3, config)) >= stored_before + 4, 30, "S3 puts during outage")
        helpers.until(lambda: stored_unpublished(config.spool_dir) >= 4, 10, "stored segments waiting for Kafka")
        broker = start_kafka(tmp_path / "kafka", port=port)

        records = agent.join(120)
        state = json.loads((config.spool_dir / "state.json").read_text())
        on_kafka = helpers.node_records(broker.bootstrap, config)
        segments, gaps = helpers.check_delivery(on_kafka, helpers.s3_versions(s3, config), state["next_seq"])
        assert gaps == []
        assert [r["seq"] for r in segments] == [r.seq for r in records]
        assert sum(r["packets"] for r in segments) == capture.packets
        assert sum(r["bytes"] for r in segments) == capture.capture_bytes
    finally:
        stop_kafka(broker.pid)


def test_s3_unreachable_mid_run_loses_and_duplicates_nothing(
        proxied_s3: Any, udp_capture: Any, helpers: Any) -> None:
    config, endpoint, direct = proxied_s3()
    capture = udp_capture(seconds=20, rate_pps=25)
    agent = AgentThread(config, capture.path, s3io.client(config))
    helpers.until(lambda: len(helpers.s3_versions(direct, config)) >= 3, 30, "segments in S3")

    endpoint.down()
    stored_before = len(helpers.s3_versions(direct, config))
    helpers.until(lambda: spooled(config.spool_dir) >= 5, 30, "segments spooled during the outage")
    assert len(helpers.s3_versions(direct, config)) == stored_before
    endpoint.up()

    records = agent.join(180)
    state = json.loads((config.spool_dir / "state.json").read_text())
    on_kafka = helpers.node_records(config.kafka_bootstrap, config)
    segments, gaps = helpers.check_delivery(on_kafka, helpers.s3_versions(direct, config), state["next_seq"])
    assert gaps == []
    assert [r["seq"] for r in segments] == [r.seq for r in records]
    assert sum(r["packets"] for r in segments) == capture.packets


def test_a_full_spool_during_an_s3_outage_reports_the_evicted_segments_while_s3_is_still_down(
        proxied_s3: Any, udp_capture: Any, helpers: Any) -> None:
    # About three one-second segments of 25 x 242-byte frames fit: the rest of a 12 s outage has to be evicted.
    config, endpoint, direct = proxied_s3(spool_max_bytes=20_000)
    capture = udp_capture(seconds=12, rate_pps=25)
    endpoint.down()
    agent = AgentThread(config, capture.path, s3io.client(config))

    def gap_published() -> bool:
        return any(r.get("schema") == "freezeframe.gap/v1"
                   for r in helpers.node_records(config.kafka_bootstrap, config, 1.0))

    helpers.until(gap_published, 40, "a gap record on Kafka")
    assert helpers.s3_versions(direct, config) == {}, "the gap was reported while S3 was still down"
    helpers.until(lambda: (config.spool_dir / "state.json").exists() and json.loads(
        (config.spool_dir / "state.json").read_text())["next_seq"] >= capture.duration_s, 40, "the replay's end")
    endpoint.up()

    agent.join(120)
    state = json.loads((config.spool_dir / "state.json").read_text())
    on_kafka = helpers.node_records(config.kafka_bootstrap, config)
    segments, gaps = helpers.check_delivery(on_kafka, helpers.s3_versions(direct, config), state["next_seq"])
    assert gaps and all(g["reason"] == "spool_full" for g in gaps)
    assert segments, "the newest segments survive the cap"
    assert max(r["seq"] for r in segments) == state["next_seq"] - 1
    # Loss is never silent: what the segments hold plus what the gaps report is the whole capture.
    assert sum(r["packets"] for r in segments) + sum(g["packets"] for g in gaps) == capture.packets
    assert sum(r["bytes"] for r in segments) + sum(g["bytes"] for g in gaps) == capture.capture_bytes
