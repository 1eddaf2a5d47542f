"""Late segments: a freeze whose window reaches into the future keeps a hold open; segments announced on the real
Kafka topic afterwards are locked in place by the segment indexer (through the local Kafka event source, in the
Lambda Kafka event shape) and appended as manifest parts; a resolved incident's hold no longer locks."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from freezeframe_local.functions import load_handler
from freezeframe_local.kafka import create_topics
from freezeframe_local.kafka_source import KafkaEventSource
from kafka import KafkaProducer

from freezeframe.adapters import s3 as s3io
from freezeframe.adapters.bus import KafkaBus
from freezeframe.contracts.keys import incident_key, manifest_key
from freezeframe.contracts.models import FreezeRequest, LockSpec, Scope
from freezeframe.freeze.freeze import freeze
from freezeframe.freeze.holds import manifest_parts, open_holds
from freezeframe.intake.accept import record_resolved
from freezeframe_agent.main import run_replay
from tests.fixtures.waiting import until

pytestmark = pytest.mark.integration
SAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "sample.pcap"


def test_segments_announced_after_the_freeze_are_locked_into_the_open_hold(local: Any, handler_env: Any,
                                                                             tmp_path: Path) -> None:
    config, s3, _ = local
    config = config.with_(segments_topic=f"ff-segments-{uuid.uuid4().hex[:8]}", hold_grace_s=60)
    handler_env(config)
    create_topics(config.kafka_bootstrap, [config.segments_topic])
    now = datetime.now(UTC)
    request = FreezeRequest(incident_id="it-late-1", source="api", title="t", severity="high",
                            window_start=now - timedelta(minutes=1), window_end=now + timedelta(minutes=3),
                            scope=Scope(config.cluster), lock=LockSpec("COMPLIANCE", now + timedelta(days=1)))
    s3io.put_json(s3, config.evidence_bucket, incident_key(request.incident_id), {"incident_id": "it-late-1"})
    result = freeze(config, s3, request)
    assert result.segments == 0
    assert [h.incident_id for h in open_holds(config, s3, datetime.now(UTC))] == ["it-late-1"]

    producer = KafkaProducer(bootstrap_servers=config.kafka_bootstrap)
    producer.send(config.segments_topic, key=b"junk", value=b"{not json").get(timeout=10)  # must not block the rest
    producer.close()
    bus = KafkaBus(config.kafka_bootstrap)
    records = run_replay(config, SAMPLE, speedup=1000.0, s3=s3, bus=bus)
    bus.close()

    source = KafkaEventSource(config.kafka_bootstrap, config.segments_topic, f"indexer-{uuid.uuid4().hex[:6]}",
                              load_handler(config, "segment_indexer"), "freezeframe-segment-indexer",
                              retry_backoff_s=0.5).start()
    try:
        until(lambda: len(manifest_parts(config, s3, request.incident_id)) == len(records), 30,
              "every late segment appended as a manifest part", poll_s=0.3)
    finally:
        source.stop()
    assert source.dead_letters == []
    parts = manifest_parts(config, s3, request.incident_id)
    assert sorted((p["segments"][0]["key"], p["segments"][0]["version_id"]) for p in parts) == sorted(
        (r.key, r.version_id) for r in records)
    for record in records:
        head = s3.head_object(Bucket=config.raw_bucket, Key=record.key, VersionId=record.version_id)
        assert head["ObjectLockMode"] == "COMPLIANCE"
    assert s3io.get_json(s3, config.evidence_bucket, manifest_key(request.incident_id))["hold"]["incident_id"] == (
        request.incident_id)

    # Resolving closes the hold: later segments are no longer locked for this incident.
    record_resolved(config, s3, [request.incident_id], datetime.now(UTC))
    assert open_holds(config, s3, datetime.now(UTC)) == []
    later = run_replay(config.with_(spool_dir=tmp_path / "spool2", node_name=config.node_name + "-b"), SAMPLE,
                       speedup=1000.0, s3=s3, bus=KafkaBus(config.kafka_bootstrap))
    source = KafkaEventSource(config.kafka_bootstrap, config.segments_topic, f"indexer-{uuid.uuid4().hex[:6]}",
                              load_handler(config, "segment_indexer"), "freezeframe-segment-indexer").start()
    try:
        until(lambda: source.batches > 0, 30, "the indexer to take the later batch", poll_s=0.3)
        time.sleep(1.0)
    finally:
        source.stop()
    assert len(manifest_parts(config, s3, request.incident_id)) == len(records)
    head = s3.head_object(Bucket=config.raw_bucket, Key=later[0].key, VersionId=later[0].version_id)
    assert "ObjectLockMode" not in head
