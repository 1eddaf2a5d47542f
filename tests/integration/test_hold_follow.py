"""Dissection follows the hold, on the real stack (LocalStack S3 with Object Lock, a real Kafka broker, the local
gateway standing in for the dissection state machine).

A long TCP connection is replayed by the agent in two halves: the first half's segments are uploaded before the
freeze (the manifest's), the second half's after it (announced on Kafka, locked by the segment indexer into the
open hold, appended as manifest parts). The dissection's passes follow the hold: the tables say they are partial
until the hold closes, and the last pass, after it closed, has the connection as ONE row with every packet of the
capture (counted from the fixture's frames, not from the dissector), in one Parquet part per node and table that
the passes overwrote. A freeze of a window that starts now (nothing uploaded yet) ends with tables too.

Only interfaces the code had before the fix are used (the stack, the settings' environment variables, the documents in
S3), so on that code the test fails where the defect is: the late half is never in the tables.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from freezeframe_local.functions import load_handler
from freezeframe_local.kafka import create_topics
from freezeframe_local.kafka_source import KafkaEventSource

from freezeframe.adapters import s3 as s3io
from freezeframe.adapters.bus import KafkaBus
from freezeframe.contracts.keys import dissect_status_key, incident_key
from freezeframe.contracts.models import FreezeRequest, LockSpec, Scope
from freezeframe.dissect.finalize import summary_key
from freezeframe.intake.accept import incident_status
from freezeframe_agent.main import run_replay
from tests.fixtures.hold_follow import FAST_FOLLOW, after_the_hold, locked_into, with_env
from tests.fixtures.node_parts import node_part_keys, node_table
from tests.fixtures.tcp_captures import Capture, Conversation
from tests.fixtures.waiting import until

pytestmark = pytest.mark.integration
GRID_S = 10


def long_connection(start_ns: int, seconds: int) -> Capture:
    """One HTTP-like TCP connection: a handshake, then one request/response exchange a second, then a close."""
    capture = Capture(now_ns=start_ns)
    conversation = Conversation(capture, 40_123, 8080, client_ip="10.9.0.1", server_ip="10.9.0.2")
    conversation.handshake(rtt_us=300)
    for _ in range(seconds):
        capture.tick(1_000_000)
        conversation.data(True, 200)
        capture.tick(300)
        conversation.data(False, 1200)
        capture.tick(200)
        conversation.ack(True)
    conversation.close()
    return capture


def write_frames(frames: list[tuple[int, bytes]], path: Path) -> Path:
    capture = Capture()
    capture.frames = list(frames)
    return capture.write(path)


@pytest.mark.parametrize("frozen_before", [True, False], ids=["spans-the-freeze-point", "window-starts-now"])
def test_the_dissection_follows_the_hold_until_it_closes(local: Any, handler_env: Any, tmp_path: Path,
                                                         frozen_before: bool) -> None:
    config, s3, gateway = local
    config = with_env(config.with_(segments_topic=f"ff-follow-{uuid.uuid4().hex[:8]}", hold_grace_s=4,
                                   segment_seconds=float(GRID_S)), FAST_FOLLOW)
    handler_env(config)
    gateway.settings = config
    create_topics(config.kafka_bootstrap, [config.segments_topic])
    now = datetime.now(UTC)
    grid_ns = GRID_S * 1_000_000_000
    # The capture starts 35 s ago on the 10 s grid (plus 1 s) and lasts 30 s; it splits on a grid boundary, so the
    # two halves never share a segment key.
    start_ns = (int(now.timestamp() * 1e9) - 35 * 1_000_000_000) // grid_ns * grid_ns + 1_000_000_000
    capture = long_connection(start_ns, 30)
    split_ns = start_ns - 1_000_000_000 + 2 * grid_ns if frozen_before else start_ns - 1_000_000_000
    before = [f for f in capture.frames if f[0] < split_ns]
    after = [f for f in capture.frames if f[0] >= split_ns]
    assert bool(before) == frozen_before and after

    agent = config.with_(spool_dir=tmp_path / "spool")
    bus = KafkaBus(config.kafka_bootstrap)
    try:
        if before:
            run_replay(agent, write_frames(before, tmp_path / "before.pcap"), speedup=1000.0, retime=False, s3=s3,
                       bus=bus)
        incident = f"it-follow-{uuid.uuid4().hex[:6]}"
        request = FreezeRequest(incident_id=incident, source="api", title="follow", severity="high",
                                window_start=datetime.fromtimestamp(start_ns / 1e9 - 5, UTC),
                                window_end=datetime.now(UTC) + timedelta(seconds=8), scope=Scope(config.cluster),
                                lock=LockSpec("COMPLIANCE", now + timedelta(days=1)))
        s3io.put_json(s3, config.evidence_bucket, incident_key(incident),
                      {"incident_id": incident, "state": "accepted", "request": request.to_dict()})
        gateway.invoke_async("freeze", {"request": request.to_dict()})
        until(lambda: incident_status(config, s3, incident)["state"] != "accepted", 60, "the freeze")
        gateway.wait_idle(60)  # the first pass (its summary is read below, whether there is one or not)
        first = (s3io.get_json(s3, config.evidence_bucket, summary_key(incident))
                 if s3io.exists(s3, config.evidence_bucket, summary_key(incident)) else {})
        first_api = incident_status(config, s3, incident)

        # The second half arrives after the freeze: the segment indexer locks it into the hold.
        source = KafkaEventSource(config.kafka_bootstrap, config.segments_topic, f"indexer-{uuid.uuid4().hex[:6]}",
                                  load_handler(config, "segment_indexer"), "freezeframe-segment-indexer",
                                  retry_backoff_s=0.5).start()
        try:
            late = run_replay(agent, write_frames(after, tmp_path / "after.pcap"), speedup=1000.0, retime=False,
                              s3=s3, bus=bus)
            assert late
            until(lambda: locked_into(config, s3, incident, late), 60, "the late segments locked", poll_s=0.5)
            after_the_hold(config, s3, gateway, incident,
                           request.window_end + timedelta(seconds=config.hold_grace_s))
        finally:
            source.stop()
        assert source.dead_letters == []
    finally:
        bus.close()

    # The node has tables, and they hold the late half: one row for the connection across the freeze point,
    # carrying every frame of the capture.
    status_key = dissect_status_key(incident, config.node_name)
    assert s3io.exists(s3, config.evidence_bucket, status_key), "the node's segments were never dissected"
    status = s3io.get_json(s3, config.evidence_bucket, status_key)
    rows = [r for r in node_table(s3, config.evidence_bucket, status, "connections").to_pylist() if r["proto"] == "tcp"]
    assert len(rows) == 1, rows
    frames = len(capture.frames)
    assert rows[0]["packets_out"] + rows[0]["packets_in"] == frames
    assert rows[0]["completeness"] == 31  # SYN, SYN-ACK, ACK, data and FIN: the handshake and the close both seen
    summary = s3io.get_json(s3, config.evidence_bucket, summary_key(incident))
    assert summary["partial_until"] is None and summary["state"] == "complete", summary
    # While the hold was open, the first pass said its tables were partial and that another pass would come.
    assert first["partial_until"] is not None and first["follow"]["again"] is True, first
    assert first_api["tables"] == "partial", first_api
    # The passes overwrote the node's parts (the same keys, several versions), never added a stray file: what is under
    # the node's prefix is exactly its part and the chunk parts its last status names.
    prefix = status["parts"]["connections"].rsplit("/", 1)[0] + "/"
    assert sorted(s3io.list_keys(s3, config.evidence_bucket, prefix)) == node_part_keys(status, "connections")
    if frozen_before:  # the first pass dissected the first half, a later one everything: the same key, rewritten
        versions = s3.list_object_versions(Bucket=config.evidence_bucket, Prefix=status["parts"]["connections"])
        assert len(versions["Versions"]) >= 2
    api = incident_status(config, s3, incident)
    assert api["tables"] == "complete" and api["partial_until"] is None and api["state"] == "dissected", api
