"""Agent -> LocalStack S3 (Object Lock enforced) + real Kafka -> freeze: every segment version is locked in place,
the manifest matches the Kafka records, and the endpoint refuses to delete or shorten anything."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from freezeframe_local.kafka import create_topics

from freezeframe.adapters import s3 as s3io
from freezeframe.adapters.bus import KafkaBus
from freezeframe.contracts.keys import manifest_key
from freezeframe.contracts.models import FreezeRequest, LockSpec, ManifestEntry, Scope, from_ns
from freezeframe.custody.manifest import root_hash
from freezeframe.freeze.freeze import freeze
from freezeframe_agent.main import run_replay

pytestmark = pytest.mark.integration
SAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "sample.pcap"


def request_for(config: Any, records: list[Any], incident: str, days: int = 1) -> FreezeRequest:
    start = from_ns(min(r.start_ns for r in records)) - timedelta(seconds=1)
    end = from_ns(max(r.end_ns for r in records)) + timedelta(seconds=1)
    return FreezeRequest(incident_id=incident, source="api", title="t", severity="critical", window_start=start,
                         window_end=end, scope=Scope(config.cluster),
                         lock=LockSpec("COMPLIANCE", datetime.now(UTC) + timedelta(days=days)))


@pytest.fixture
def replayed(local: Any) -> tuple[Any, Any, list[Any], KafkaBus]:
    config, s3, _ = local
    create_topics(config.kafka_bootstrap, [config.segments_topic])
    bus = KafkaBus(config.kafka_bootstrap)
    records = run_replay(config, SAMPLE, speedup=1000.0, s3=s3, bus=bus)
    return config, s3, records, bus


def test_segments_reach_s3_with_a_verified_checksum_and_kafka_with_the_same_fields(replayed: Any) -> None:
    config, s3, records, bus = replayed
    assert len(records) >= 5
    on_kafka = {r.value["key"]: r.value for r in bus.read(config.segments_topic, timeout_s=10)
                if r.value["node"] == config.node_name}
    bus.close()
    assert set(on_kafka) == {r.key for r in records}
    for record in records:
        head = s3.head_object(Bucket=config.raw_bucket, Key=record.key, VersionId=record.version_id,
                              ChecksumMode="ENABLED")
        body = s3.get_object(Bucket=config.raw_bucket, Key=record.key, VersionId=record.version_id)["Body"].read()
        assert hashlib.sha256(body).hexdigest() == record.sha256 == on_kafka[record.key]["sha256"]
        assert base64.b64decode(head["ChecksumSHA256"]).hex() == record.sha256
        assert head["Metadata"]["seq"] == str(record.seq)
        assert on_kafka[record.key]["version_id"] == record.version_id
    assert sorted(r.seq for r in records) == list(range(len(records)))


def test_a_resend_after_a_crash_reuses_the_version(replayed: Any) -> None:
    config, s3, records, bus = replayed
    bus.close()
    record = records[0]
    body = s3.get_object(Bucket=config.raw_bucket, Key=record.key)["Body"].read()
    version = s3io.put_segment(s3, config.raw_bucket, record.key, body, record.sha256, {"sha256": record.sha256})
    assert version == record.version_id
    assert len(s3.list_object_versions(Bucket=config.raw_bucket, Prefix=record.key)["Versions"]) == 1


def test_freeze_locks_every_version_in_place_and_the_endpoint_enforces_it(replayed: Any) -> None:
    config, s3, records, bus = replayed
    bus.close()
    request = request_for(config, records, "it-freeze-1")
    result = freeze(config, s3, request)
    assert result.created and result.segments == len(records)
    manifest = s3io.get_json(s3, config.evidence_bucket, manifest_key(request.incident_id))
    assert {(s["key"], s["version_id"], s["sha256"]) for s in manifest["segments"]} == {
        (r.key, r.version_id, r.sha256) for r in records}
    assert manifest["root_hash"] == root_hash([ManifestEntry.from_dict(s) for s in manifest["segments"]])
    for record in records:
        head = s3.head_object(Bucket=config.raw_bucket, Key=record.key, VersionId=record.version_id)
        assert head["ObjectLockMode"] == "COMPLIANCE"
        assert head["ObjectLockRetainUntilDate"] >= request.lock.retain_until - timedelta(seconds=1)
        with pytest.raises(ClientError) as refused:
            s3.delete_object(Bucket=config.raw_bucket, Key=record.key, VersionId=record.version_id)
        assert refused.value.response["Error"]["Code"] == "AccessDenied"
    with pytest.raises(ClientError):
        s3.put_object_retention(Bucket=config.raw_bucket, Key=records[0].key, VersionId=records[0].version_id,
                                Retention={"Mode": "COMPLIANCE", "RetainUntilDate": datetime.now(UTC)
                                           + timedelta(hours=1)})
    manifest_head = s3.head_object(Bucket=config.evidence_bucket, Key=manifest_key(request.incident_id))
    assert manifest_head["ObjectLockMode"] == "COMPLIANCE"
    with pytest.raises(ClientError):
        s3.delete_object(Bucket=config.evidence_bucket, Key=manifest_key(request.incident_id),
                         VersionId=manifest_head["VersionId"])


def test_a_second_freeze_never_shortens_a_lock_and_a_retry_is_a_no_op(replayed: Any) -> None:
    config, s3, records, bus = replayed
    bus.close()
    longer = request_for(config, records, "it-freeze-long", days=3)
    shorter = request_for(config, records, "it-freeze-short", days=1)
    freeze(config, s3, longer)
    freeze(config, s3, shorter)  # the later, shorter request must not fail nor shorten anything
    for record in records:
        head = s3.head_object(Bucket=config.raw_bucket, Key=record.key, VersionId=record.version_id)
        assert head["ObjectLockRetainUntilDate"] >= longer.lock.retain_until - timedelta(seconds=1)
    retry = freeze(config, s3, shorter)
    assert retry.created is False and retry.segments == len(records)
