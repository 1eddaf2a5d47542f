"""A freeze never aborts as a whole (issue 13), on the real stack (LocalStack S3 enforcing Object Lock, a real Kafka
broker, the local gateway running the freeze, dissect and finalize handlers with their async retries).

- A stray version without metadata at a raw key inside the window (the agent's role may write there): the incident
  is still frozen, every other segment locked and dissected; the stray one is locked too, recorded as unverified
  with its reason, left out of the tables with a dissect_errors row, and shown by verify, the report's coverage and
  the incident API. Before the fix the whole freeze failed three times and dead-lettered with nothing locked.
- A freeze that fails on every attempt (its raw bucket does not exist) ends in the terminal state "failed" with its
  error, instead of "accepted" forever.
"""

from __future__ import annotations

import io
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from freezeframe_local.kafka import create_topics

from freezeframe.adapters import s3 as s3io
from freezeframe.adapters.bus import KafkaBus
from freezeframe.contracts.keys import dissect_status_key, incident_key, manifest_key, raw_segment_key, report_key
from freezeframe.contracts.models import FreezeRequest, LockSpec, Scope, from_ns
from freezeframe.custody.verify import verify_incident
from freezeframe.dissect.finalize import summary_key
from freezeframe.intake.accept import incident_status
from freezeframe_agent.main import run_replay
from tests.fixtures.waiting import until

pytestmark = pytest.mark.integration
SAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "sample.pcap"


def _request(incident: str, cluster: str, start_ns: int, end_ns: int) -> FreezeRequest:
    return FreezeRequest(incident_id=incident, source="api", title="stray", severity="high",
                         window_start=from_ns(start_ns), window_end=from_ns(end_ns), scope=Scope(cluster),
                         lock=LockSpec("COMPLIANCE", datetime.now(UTC) + timedelta(days=1)))


def _accept(s3: Any, bucket: str, request: FreezeRequest) -> None:
    s3io.put_json(s3, bucket, incident_key(request.incident_id),
                  {"incident_id": request.incident_id, "state": "accepted", "request": request.to_dict()})


def test_a_stray_version_without_metadata_is_locked_reported_and_the_rest_dissected(local: Any, handler_env: Any,
                                                                                     tmp_path: Path) -> None:
    config, s3, gateway = local
    config = config.with_(segments_topic=f"ff-stray-{uuid.uuid4().hex[:8]}", hold_grace_s=0)
    handler_env(config)
    gateway.settings = config
    create_topics(config.kafka_bootstrap, [config.segments_topic])
    bus = KafkaBus(config.kafka_bootstrap)
    try:
        # The sample's own timestamps (2026-01-01): the window is over, so the freeze opens no hold.
        records = run_replay(config.with_(spool_dir=tmp_path / "spool"), SAMPLE, speedup=1000.0, retime=False,
                             s3=s3, bus=bus)
    finally:
        bus.close()
    first, last = min(r.start_ns for r in records), max(r.end_ns for r in records)
    stray_key = raw_segment_key(config.cluster, config.node_name, first + 5_500_000_000, first + 6_000_000_000,
                                "pcap.zst")
    stray_version = s3.put_object(Bucket=config.raw_bucket, Key=stray_key, Body=b"not a segment")["VersionId"]

    request = _request(f"it-stray-{uuid.uuid4().hex[:6]}", config.cluster, first - 1_000_000_000, last)
    _accept(s3, config.evidence_bucket, request)
    gateway.invoke_async("freeze", {"request": request.to_dict()})
    until(lambda: s3io.exists(s3, config.evidence_bucket, summary_key(request.incident_id)), 90, "finalize")
    assert gateway.wait_idle(60)
    assert [i for i in gateway.invocations if i.state == "failed"] == []

    manifest = s3io.get_json(s3, config.evidence_bucket, manifest_key(request.incident_id))
    assert sorted((e["key"], e["version_id"]) for e in manifest["segments"]) == sorted(
        (r.key, r.version_id) for r in records)
    (stray,) = manifest["unverified"]
    assert (stray["key"], stray["version_id"], stray["reason"]) == (stray_key, stray_version, "no sha256 metadata")
    assert manifest["coverage"][config.node_name]["unverified"][0]["key"] == stray_key
    for key, version in [(stray_key, stray_version), *((r.key, r.version_id) for r in records)]:
        head = s3.head_object(Bucket=config.raw_bucket, Key=key, VersionId=version)
        assert head["ObjectLockMode"] == "COMPLIANCE", key

    status = s3io.get_json(s3, config.evidence_bucket, dissect_status_key(request.incident_id, config.node_name))
    assert status["state"] == "done" and status["segments"] == len(records) and status["tables"]["connections"] > 0
    errors = pq.read_table(io.BytesIO(s3io.get_bytes(s3, config.evidence_bucket,
                                                     status["parts"]["dissect_errors"]))).to_pylist()
    flagged = [e for e in errors if e["kind"] == "unverified"]
    assert [(e["segment"], e["segment_version"], e["stage"], e["message"]) for e in flagged] == [
        (stray_key, stray_version, "verify", "no sha256 metadata")]

    summary = s3io.get_json(s3, config.evidence_bucket, summary_key(request.incident_id))
    assert summary["state"] == "complete" and summary["unverified"][0]["key"] == stray_key
    report = verify_incident(config, s3, request.incident_id)
    assert report.ok, report.failures
    assert [u["key"] for u in report.unverified] == [stray_key]
    api = incident_status(config, s3, request.incident_id)
    assert api["state"] == "dissected" and [u["reason"] for u in api["unverified"]] == ["no sha256 metadata"]
    page = s3io.get_bytes(s3, config.evidence_bucket, report_key(request.incident_id)).decode()
    assert f"{stray_key} ({stray_version}): no sha256 metadata" in page


def test_a_freeze_that_fails_every_attempt_ends_failed_with_its_error(local: Any, handler_env: Any) -> None:
    config, s3, gateway = local
    broken = config.with_(raw_bucket=f"ff-missing-{uuid.uuid4().hex[:8]}", hold_grace_s=0)
    handler_env(broken)
    gateway.settings = broken
    now = datetime.now(UTC)
    request = _request(f"it-fail-{uuid.uuid4().hex[:6]}", config.cluster,
                       int((now - timedelta(minutes=10)).timestamp() * 1e9),
                       int((now - timedelta(minutes=5)).timestamp() * 1e9))
    _accept(s3, config.evidence_bucket, request)
    assert incident_status(config, s3, request.incident_id)["state"] == "accepted"
    gateway.invoke_async("freeze", {"request": request.to_dict()})
    until(lambda: incident_status(config, s3, request.incident_id)["state"] == "failed", 60,
          "the terminal failed state", poll_s=0.3)
    status = incident_status(config, s3, request.incident_id)
    assert status["attempts"] == 3 and "NoSuchBucket" in status["error"]
    assert gateway.wait_idle(20)
    assert [i.attempts for i in gateway.invocations if i.function == "freeze"] == [3]
