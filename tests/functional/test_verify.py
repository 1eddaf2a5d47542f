"""verify on the in-memory store: a frozen, signed incident verifies (every sha256 recomputed from the stored bytes
equals the agent's upload record); the tampering Object Lock allows (a new version over a segment, an altered
manifest copy, forged manifest parts) is reported by name and never counted as evidence; what it refuses (deleting
or shortening a locked version) leaves the incident verifying."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError

from freezeframe.adapters import s3 as s3io
from freezeframe.contracts.keys import manifest_key, manifest_parts_prefix, raw_segment_key
from freezeframe.contracts.models import ManifestEntry
from freezeframe.custody.chain import link_key
from freezeframe.custody.manifest import MANIFEST_SCHEMA, root_hash
from freezeframe.custody.pinned import read_pinned
from freezeframe.custody.verify import VerifyReport, format_report, verify_incident
from tests.functional.conftest import Harness

INCIDENT = "fn-verify-1"


@pytest.fixture
def frozen(harness: Harness) -> tuple[Harness, list[Any], Any]:
    records = harness.replay()
    request = harness.request(INCIDENT, records)
    assert harness.call("freeze", {"request": request.to_dict()})["created"] is True
    return harness, records, request


def failed(report: VerifyReport) -> set[tuple[str, str]]:
    return {(check.subject, check.name) for check in report.failures}


def test_an_untouched_incident_verifies_against_the_agents_records(frozen: Any) -> None:
    harness, records, _ = frozen
    report = verify_incident(harness.settings, harness.store, INCIDENT)
    assert report.ok, format_report(report)
    checked = {c.subject: c.detail for c in report.checks if c.name == "sha256"}
    assert checked == {f"{r.key}@{r.version_id}": f"sha256 {r.sha256} over {r.stored_bytes} bytes" for r in records}
    assert [c.subject for c in report.checks if c.name == "signature"] == [link_key(INCIDENT, 0)]


def test_a_new_version_over_a_frozen_segment_is_reported_and_the_frozen_version_still_checks(frozen: Any) -> None:
    harness, records, _ = frozen
    config, store = harness.settings, harness.store
    target = records[2]
    forged = store.put_object(Bucket=config.raw_bucket, Key=target.key, Body=b"forged capture")["VersionId"]
    report = verify_incident(config, store, INCIDENT)
    subject = f"{target.key}@{target.version_id}"
    assert failed(report) == {(subject, "latest")}
    assert forged in report.failures[0].detail
    assert {c.name: c.ok for c in report.checks if c.subject == subject} == {
        "version": True, "sha256": True, "lock": True, "latest": False}


def test_an_altered_manifest_copy_is_not_evidence(frozen: Any) -> None:
    harness, records, _ = frozen
    config, store = harness.settings, harness.store
    key = manifest_key(INCIDENT)
    manifest = s3io.get_json(store, config.evidence_bucket, key)
    manifest["segments"] = manifest["segments"][1:]
    manifest["root_hash"] = root_hash([ManifestEntry.from_dict(s) for s in manifest["segments"]])
    altered = store.put_object(Bucket=config.evidence_bucket, Key=key, Body=json.dumps(manifest).encode())
    report = verify_incident(config, store, INCIDENT)
    assert failed(report) == {(key, "versions")}
    assert altered["VersionId"] in report.failures[0].detail
    assert {c.subject for c in report.checks if c.name == "sha256" and c.ok} == {
        f"{r.key}@{r.version_id}" for r in records}


def plant(harness: Harness, records: list[Any], mode: str, until: datetime) -> ManifestEntry:
    config = harness.settings
    start_ns = max(r.end_ns for r in records) + 5_000_000_000
    key = raw_segment_key(config.cluster, config.node_name, start_ns, start_ns + 1_000_000_000, "pcap")
    body = b"planted capture bytes"
    version_id = harness.store.put_object(Bucket=config.raw_bucket, Key=key, Body=body, ObjectLockMode=mode,
                                          ObjectLockRetainUntilDate=until)["VersionId"]
    return ManifestEntry(key=key, version_id=version_id, sha256=hashlib.sha256(body).hexdigest(), size=len(body),
                         node=config.node_name, start_ns=start_ns, end_ns=start_ns + 1_000_000_000, seq=999,
                         packets=1, lock_mode=mode, retain_until=until.isoformat(), legal_hold=False)


@pytest.mark.parametrize("forgery", ["part without .json", "locked COMPLIANCE part", "part with a weaker lock"])
def test_a_forged_manifest_part_fails_by_name_and_its_segment_is_not_evidence(frozen: Any, forgery: str) -> None:
    harness, records, _ = frozen
    config, store = harness.settings, harness.store
    until = datetime.now(UTC) + timedelta(hours=2)
    prefix = manifest_parts_prefix(INCIDENT)
    mode = "GOVERNANCE" if forgery == "part with a weaker lock" else "COMPLIANCE"
    entry = plant(harness, records, mode, until)
    part: dict[str, Any] = {"schema": MANIFEST_SCHEMA, "incident_id": INCIDENT, "part_of": INCIDENT,
                            "segments": [entry.to_dict()], "root_hash": root_hash([entry]),
                            "created_at": "2026-12-05T00:00:00.000Z"}
    if mode == "GOVERNANCE":
        part["request"] = {"lock": {"mode": mode, "retain_until": until.isoformat().replace("+00:00", "Z")}}
    key = f"{prefix}{config.node_name}-000000000999" + ("" if forgery == "part without .json" else ".json")
    assert s3io.put_json(store, config.evidence_bucket, key, part, create_only=True, lock=(mode, until))

    report = verify_incident(config, store, INCIDENT)
    assert (key, "chain") in failed(report), format_report(report)
    assert not [c for c in report.checks if c.subject.startswith(entry.key)]
    assert read_pinned(config, store, INCIDENT).parts == ()


def test_what_the_lock_refuses_leaves_the_incident_verifying(frozen: Any) -> None:
    harness, records, request = frozen
    config, store = harness.settings, harness.store
    target = records[1]
    attempts = {
        "delete": lambda: store.delete_object(Bucket=config.raw_bucket, Key=target.key, VersionId=target.version_id),
        "bypass delete": lambda: store.delete_object(Bucket=config.raw_bucket, Key=target.key,
                                                     VersionId=target.version_id, BypassGovernanceRetention=True),
        "shorten": lambda: store.put_object_retention(
            Bucket=config.raw_bucket, Key=target.key, VersionId=target.version_id,
            Retention={"Mode": "COMPLIANCE", "RetainUntilDate": datetime.now(UTC) + timedelta(hours=1)}),
        "weaken": lambda: store.put_object_retention(
            Bucket=config.raw_bucket, Key=target.key, VersionId=target.version_id, BypassGovernanceRetention=True,
            Retention={"Mode": "GOVERNANCE", "RetainUntilDate": request.lock.retain_until}),
    }
    for name, attempt in attempts.items():
        with pytest.raises(ClientError) as refused:
            attempt()
        assert refused.value.response["Error"]["Code"] == "AccessDenied", name
    report = verify_incident(config, store, INCIDENT)
    assert report.ok, format_report(report)
