"""verify on LocalStack S3 (Object Lock enforced): a replayed, frozen incident verifies, and each kind of tampering
that the endpoint allows (a new version, an altered manifest copy, a delete marker, an unlocked segment) is reported,
while what it refuses (deleting or shortening a locked version) leaves the incident verifying."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from freezeframe.adapters import s3 as s3io
from freezeframe.contracts.keys import manifest_key, raw_segment_key
from freezeframe.contracts.models import FreezeRequest, LockSpec, ManifestEntry, Scope, from_ns
from freezeframe.custody.chain import chain_prefix
from freezeframe.custody.manifest import build_manifest
from freezeframe.custody.verify import VerifyReport, format_report, verify_incident
from freezeframe.freeze.freeze import freeze
from freezeframe_agent.main import run_replay
from tests.fixtures.buses import MemoryBus

pytestmark = pytest.mark.integration
SAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "sample.pcap"


def request_for(config: Any, records: list[Any], incident: str) -> FreezeRequest:
    start = from_ns(min(r.start_ns for r in records)) - timedelta(seconds=1)
    end = from_ns(max(r.end_ns for r in records)) + timedelta(seconds=1)
    return FreezeRequest(incident_id=incident, source="api", title="t", severity="critical", window_start=start,
                         window_end=end, scope=Scope(config.cluster),
                         lock=LockSpec("COMPLIANCE", datetime.now(UTC) + timedelta(days=1)))


@pytest.fixture
def frozen(local: Any) -> tuple[Any, Any, list[Any], FreezeRequest]:
    config, s3, _ = local
    records = run_replay(config, SAMPLE, speedup=1000.0, s3=s3, bus=MemoryBus())
    assert len(records) >= 5
    request = request_for(config, records, "it-verify-1")
    assert freeze(config, s3, request).created
    return config, s3, records, request


def failed(report: VerifyReport) -> set[tuple[str, str]]:
    return {(check.subject, check.name) for check in report.failures}


def test_an_untouched_incident_verifies(frozen: Any) -> None:
    config, s3, records, request = frozen
    report = verify_incident(config, s3, request.incident_id)
    assert report.ok, format_report(report)
    # every recorded hash was recomputed from the stored bytes: compare with the agent's records
    checked = {c.subject: c.detail for c in report.checks if c.name == "sha256"}
    assert checked == {f"{r.key}@{r.version_id}": f"sha256 {r.sha256} over {r.stored_bytes} bytes" for r in records}
    assert all(c.ok for c in report.checks if c.name == "lock")


def test_a_new_version_under_a_segment_key_is_reported_and_the_frozen_version_still_checks(frozen: Any) -> None:
    config, s3, records, request = frozen
    target = records[2]
    forged = s3.put_object(Bucket=config.raw_bucket, Key=target.key, Body=b"forged capture")["VersionId"]
    report = verify_incident(config, s3, request.incident_id)
    subject = f"{target.key}@{target.version_id}"
    assert failed(report) == {(subject, "latest")}
    assert forged in report.failures[0].detail
    assert target.key in format_report(report)
    assert {c.name: c.ok for c in report.checks if c.subject == subject} == {
        "version": True, "sha256": True, "lock": True, "latest": False}


def test_an_altered_manifest_copy_is_reported(frozen: Any) -> None:
    config, s3, records, request = frozen
    key = manifest_key(request.incident_id)
    original = s3.head_object(Bucket=config.evidence_bucket, Key=key)["VersionId"]
    manifest = s3io.get_json(s3, config.evidence_bucket, key)
    manifest["segments"] = manifest["segments"][1:]  # one segment quietly dropped
    # A plain put (no If-None-Match) is allowed in a versioned bucket: it adds a version over the locked one.
    altered = s3.put_object(Bucket=config.evidence_bucket, Key=key, Body=json.dumps(manifest).encode())["VersionId"]
    assert altered != original
    report = verify_incident(config, s3, request.incident_id)
    # The altered version is named by no signed link, so it is not evidence at all: only the key's versions fail.
    assert failed(report) == {(key, "versions")}
    versions = next(c for c in report.failures if c.name == "versions")
    assert original in versions.detail and altered in versions.detail
    # the original, locked version still verifies, and so does every segment it lists
    assert all(c.ok for c in report.checks if c.subject == f"{key}@{original}")
    assert {c.subject for c in report.checks if c.name == "sha256" and c.ok} == {
        f"{r.key}@{r.version_id}" for r in records}


def test_a_delete_without_version_is_allowed_as_a_delete_marker_and_reported(frozen: Any) -> None:
    config, s3, records, request = frozen
    target = records[0]
    marker = s3.delete_object(Bucket=config.raw_bucket, Key=target.key)
    assert marker["DeleteMarker"] is True
    report = verify_incident(config, s3, request.incident_id)
    subject = f"{target.key}@{target.version_id}"
    assert failed(report) == {(subject, "latest")}
    assert "delete marker" in report.failures[0].detail


def test_a_segment_that_was_never_locked_is_reported_unlocked_then_deleted(frozen: Any) -> None:
    config, s3, records, request = frozen
    start_ns = max(r.end_ns for r in records) + 1_000_000_000
    key = raw_segment_key(config.cluster, config.node_name, start_ns, start_ns + 10_000_000_000, "pcap.zst")
    body = b"an extra segment nobody locked"
    version_id = s3.put_object(Bucket=config.raw_bucket, Key=key, Body=body)["VersionId"]
    # A manifest written by hand that claims the segment is COMPLIANCE-locked.
    entry = ManifestEntry(key=key, version_id=version_id, sha256=hashlib.sha256(body).hexdigest(), size=len(body),
                          node=config.node_name, start_ns=start_ns, end_ns=start_ns + 10_000_000_000, seq=None,
                          packets=None, lock_mode="COMPLIANCE", retain_until="", legal_hold=False)
    hand = FreezeRequest(incident_id="it-verify-hand", source="api", title="t", severity="critical",
                         window_start=from_ns(start_ns), window_end=from_ns(start_ns + 10_000_000_000),
                         scope=Scope(config.cluster), lock=request.lock)
    s3io.put_json(s3, config.evidence_bucket, manifest_key(hand.incident_id),
                  build_manifest(hand, [entry], datetime.now(UTC), config.raw_bucket), create_only=True,
                  lock=(hand.lock.mode, hand.lock.retain_until))
    subject = f"{key}@{version_id}"

    # Written by hand, it has no signed chain: verify says so, and checks what it lists all the same.
    unsigned = (chain_prefix(hand.incident_id), "chain")
    unlocked = verify_incident(config, s3, hand.incident_id)
    assert failed(unlocked) == {unsigned, (subject, "lock")}
    assert next(c for c in unlocked.failures if c.subject == subject).detail.startswith("unlocked")

    s3.delete_object(Bucket=config.raw_bucket, Key=key, VersionId=version_id)  # nothing stops it: no lock
    deleted = verify_incident(config, s3, hand.incident_id)
    assert failed(deleted) == {unsigned, (subject, "version")}
    assert next(c for c in deleted.failures if c.subject == subject).detail.startswith("deleted")
    assert verify_incident(config, s3, request.incident_id).ok  # the real incident is untouched


def test_deleting_or_shortening_locked_versions_is_refused_and_verify_still_passes(frozen: Any) -> None:
    config, s3, records, request = frozen
    target = records[1]
    shorter = datetime.now(UTC) + timedelta(hours=1)
    attempts = {
        "delete": lambda: s3.delete_object(Bucket=config.raw_bucket, Key=target.key, VersionId=target.version_id),
        "bypass delete": lambda: s3.delete_object(Bucket=config.raw_bucket, Key=target.key,
                                                  VersionId=target.version_id, BypassGovernanceRetention=True),
        "shorten": lambda: s3.put_object_retention(
            Bucket=config.raw_bucket, Key=target.key, VersionId=target.version_id,
            Retention={"Mode": "COMPLIANCE", "RetainUntilDate": shorter}),
        "weaken": lambda: s3.put_object_retention(
            Bucket=config.raw_bucket, Key=target.key, VersionId=target.version_id, BypassGovernanceRetention=True,
            Retention={"Mode": "GOVERNANCE", "RetainUntilDate": request.lock.retain_until}),
    }
    manifest = s3.head_object(Bucket=config.evidence_bucket, Key=manifest_key(request.incident_id))
    attempts["delete manifest"] = lambda: s3.delete_object(
        Bucket=config.evidence_bucket, Key=manifest_key(request.incident_id), VersionId=manifest["VersionId"])
    for name, attempt in attempts.items():
        with pytest.raises(ClientError) as refused:
            attempt()
        assert refused.value.response["Error"]["Code"] == "AccessDenied", name
    report = verify_incident(config, s3, request.incident_id)
    assert report.ok, format_report(report)
