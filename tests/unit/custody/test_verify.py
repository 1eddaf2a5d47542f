"""verify's decisions on an in-memory evidence store: expected hashes come from hashlib over the fixture bytes, and
expected failures from the tampering each test applies, never from the code under test."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from freezeframe.adapters.s3 import LockState
from freezeframe.contracts.config import Settings
from freezeframe.contracts.errors import NotFoundError
from freezeframe.contracts.keys import manifest_key
from freezeframe.contracts.models import FreezeRequest, LockSpec, ManifestEntry, Scope, iso, to_ns
from freezeframe.custody.manifest import build_manifest
from freezeframe.custody.verify import (
    Check,
    StoredVersion,
    VerifyReport,
    check_incident,
    format_report,
    lock_check,
    lock_strength,
    stronger,
)

NOW = datetime(2026, 11, 21, 12, 10, tzinfo=UTC)
UNTIL = datetime(2026, 12, 21, 12, 0, 0, 957_031, tzinfo=UTC)  # sub-second, as datetime.now() + days gives
STORED_UNTIL = UNTIL.replace(microsecond=0)  # S3 keeps retain-until to the second
SETTINGS = Settings(cluster="c", raw_bucket="raw", evidence_bucket="evidence")
INCIDENT = "inc-1"
MANIFEST = manifest_key(INCIDENT)
W0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
S = 1_000_000_000


@dataclass
class Stored:
    version_id: str
    body: bytes | None  # None: a delete marker
    head: dict[str, Any] = field(default_factory=dict)


class MemoryStore:
    """Versions per (bucket, key), newest first, like S3's ListObjectVersions."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], list[Stored]] = {}
        self._next = 0

    def put(self, bucket: str, key: str, body: bytes, mode: str | None = None,
            until: datetime | None = None) -> str:
        self._next += 1
        version_id = f"v{self._next}"
        head: dict[str, Any] = {}
        if mode:
            head = {"ObjectLockMode": mode, "ObjectLockRetainUntilDate": until}
        self.objects.setdefault((bucket, key), []).insert(0, Stored(version_id, body, head))
        return version_id

    def delete_marker(self, bucket: str, key: str) -> None:
        self._next += 1
        self.objects[(bucket, key)].insert(0, Stored(f"dm{self._next}", None))

    def remove(self, bucket: str, key: str, version_id: str) -> None:
        self.objects[(bucket, key)] = [v for v in self.objects[(bucket, key)] if v.version_id != version_id]

    def versions(self, bucket: str, prefix: str) -> list[StoredVersion]:
        return [StoredVersion(key, item.version_id, index == 0, item.body is None)
                for (b, key), items in sorted(self.objects.items()) if b == bucket and key.startswith(prefix)
                for index, item in enumerate(items)]

    def _find(self, bucket: str, key: str, version_id: str) -> Stored | None:
        for item in self.objects.get((bucket, key), []):
            if item.version_id == version_id and item.body is not None:
                return item
        return None

    def head(self, bucket: str, key: str, version_id: str) -> Mapping[str, Any] | None:
        item = self._find(bucket, key, version_id)
        return None if item is None else item.head

    def read(self, bucket: str, key: str, version_id: str) -> bytes:
        item = self._find(bucket, key, version_id)
        if item is None or item.body is None:
            raise NotFoundError(key)
        return item.body

    def digest(self, bucket: str, key: str, version_id: str) -> tuple[str, int] | None:
        item = self._find(bucket, key, version_id)
        if item is None or item.body is None:
            return None
        return hashlib.sha256(item.body).hexdigest(), len(item.body)


SEGMENTS = {f"raw/c/2026/11/21/12/node-a/{to_ns(W0) + i * 10 * S}-{to_ns(W0) + (i + 1) * 10 * S}.pcap.zst":
            f"segment {i} bytes\n".encode() * (i + 3) for i in range(2)}


def request(lock_mode: str = "COMPLIANCE") -> FreezeRequest:
    return FreezeRequest(incident_id=INCIDENT, source="api", title="t", severity="critical", window_start=W0,
                         window_end=W0 + timedelta(seconds=20), scope=Scope("c"), lock=LockSpec(lock_mode, UNTIL),
                         received_at=W0)


def frozen_store() -> tuple[MemoryStore, list[ManifestEntry], dict[str, Any]]:
    """What a freeze leaves behind: COMPLIANCE-locked segment versions and a locked create-only manifest."""
    store = MemoryStore()
    entries = []
    for index, (key, body) in enumerate(SEGMENTS.items()):
        version_id = store.put("raw", key, body, "COMPLIANCE", STORED_UNTIL)
        entries.append(ManifestEntry(key=key, version_id=version_id, sha256=hashlib.sha256(body).hexdigest(),
                                     size=len(body), node="node-a", start_ns=to_ns(W0) + index * 10 * S,
                                     end_ns=to_ns(W0) + (index + 1) * 10 * S, seq=index, packets=3,
                                     lock_mode="COMPLIANCE", retain_until=iso(STORED_UNTIL), legal_hold=False))
    manifest = build_manifest(request(), entries, NOW, "raw")
    store.put("evidence", MANIFEST, json.dumps(manifest).encode(), "COMPLIANCE", STORED_UNTIL)
    return store, entries, manifest


# These incidents were frozen without a signing key (the in-memory store has no chain): verify fails them for
# that alone, and reports the storage checks beside it (tests/unit/custody/test_custody_chain.py and
# tests/integration/test_custody.py cover signed incidents).
UNSIGNED = (f"incidents/{INCIDENT}/chain/", "chain")


def failed(report: VerifyReport) -> set[tuple[str, str]]:
    return {(check.subject, check.name) for check in report.failures}


def storage_failures(report: VerifyReport) -> list[Check]:
    return [check for check in report.failures if (check.subject, check.name) != UNSIGNED]


def test_lock_strength_orders_compliance_above_governance_above_none() -> None:
    assert lock_strength("COMPLIANCE") > lock_strength("GOVERNANCE") > lock_strength(None) == lock_strength("")
    both = stronger(LockSpec("GOVERNANCE", UNTIL + timedelta(days=1)), LockSpec("COMPLIANCE", UNTIL))
    assert both == LockSpec("COMPLIANCE", UNTIL + timedelta(days=1))
    assert stronger(None, LockSpec("GOVERNANCE", UNTIL)) == LockSpec("GOVERNANCE", UNTIL)


@pytest.mark.parametrize(("actual", "required", "ok"), [
    (LockState("COMPLIANCE", STORED_UNTIL, False), LockSpec("GOVERNANCE", UNTIL), True),
    (LockState("COMPLIANCE", STORED_UNTIL, False), LockSpec("COMPLIANCE", UNTIL), True),  # second precision
    (LockState("GOVERNANCE", STORED_UNTIL, False), LockSpec("COMPLIANCE", UNTIL), False),
    (LockState("COMPLIANCE", STORED_UNTIL - timedelta(seconds=1), False), LockSpec("COMPLIANCE", UNTIL), False),
    (LockState(None, None, False), LockSpec("GOVERNANCE", UNTIL), False),
    (LockState("COMPLIANCE", STORED_UNTIL, False), LockSpec("COMPLIANCE", UNTIL, legal_hold=True), False),
    (LockState("COMPLIANCE", STORED_UNTIL, True), LockSpec("COMPLIANCE", UNTIL, legal_hold=True), True),
    (LockState("COMPLIANCE", STORED_UNTIL, False), None, False),
])
def test_lock_check_requires_mode_retention_and_hold(actual: LockState, required: LockSpec | None,
                                                     ok: bool) -> None:
    assert lock_check("k", actual, required, NOW).ok is ok


def test_an_expired_lock_fails_even_when_it_met_the_request() -> None:
    check = lock_check("k", LockState("COMPLIANCE", STORED_UNTIL, False), LockSpec("COMPLIANCE", UNTIL),
                       now=UNTIL + timedelta(seconds=1))
    assert not check.ok and "expired" in check.detail


def test_an_untouched_incident_verifies() -> None:
    store, entries, _ = frozen_store()
    report = check_incident(store, SETTINGS, INCIDENT, NOW)
    assert failed(report) == {UNSIGNED}, format_report(report)
    assert "no signed custody chain" in report.failures[0].detail
    # chain; manifest: versions, readable, root_hash, lock; each segment: version, sha256, lock, latest
    assert len(report.checks) == 5 + 4 * len(entries)
    hashes = {c.detail for c in report.checks if c.name == "sha256"}
    assert hashes == {f"sha256 {hashlib.sha256(b).hexdigest()} over {len(b)} bytes" for b in SEGMENTS.values()}
    assert format_report(report).startswith(f"incident {INCIDENT}: FAILED (1 of")


def test_no_manifest_is_not_found() -> None:
    with pytest.raises(NotFoundError):
        check_incident(MemoryStore(), SETTINGS, INCIDENT, NOW)


def test_a_root_hash_that_does_not_recompute_fails() -> None:
    store, entries, manifest = frozen_store()
    manifest["segments"][0]["sha256"] = "0" * 64  # edited entry, root hash left as it was
    store.objects[("evidence", MANIFEST)] = []
    store.put("evidence", MANIFEST, json.dumps(manifest).encode(), "COMPLIANCE", STORED_UNTIL)
    report = check_incident(store, SETTINGS, INCIDENT, NOW)
    first = f"{entries[0].key}@{entries[0].version_id}"
    assert failed(report) == {UNSIGNED, (MANIFEST, "root_hash"), (first, "sha256")}


def test_a_newer_version_shadowing_a_segment_is_reported_and_the_frozen_one_still_checks() -> None:
    store, entries, _ = frozen_store()
    newer = store.put("raw", entries[1].key, b"forged bytes")
    report = check_incident(store, SETTINGS, INCIDENT, NOW)
    subject = f"{entries[1].key}@{entries[1].version_id}"
    assert failed(report) == {UNSIGNED, (subject, "latest")}
    assert newer in storage_failures(report)[0].detail
    assert {c.name: c.ok for c in report.checks if c.subject == subject} == {
        "version": True, "sha256": True, "lock": True, "latest": False}


def test_a_deleted_segment_version_is_reported_as_deleted() -> None:
    store, entries, _ = frozen_store()
    store.remove("raw", entries[0].key, entries[0].version_id)
    report = check_incident(store, SETTINGS, INCIDENT, NOW)
    subject = f"{entries[0].key}@{entries[0].version_id}"
    assert failed(report) == {UNSIGNED, (subject, "version")}
    assert storage_failures(report)[0].detail.startswith("deleted")


def test_changed_bytes_and_a_weak_lock_are_reported() -> None:
    store, entries, _ = frozen_store()
    stored = store.objects[("raw", entries[0].key)][0]
    stored.body = b"changed in place"
    stored.head = {"ObjectLockMode": "GOVERNANCE", "ObjectLockRetainUntilDate": STORED_UNTIL}
    report = check_incident(store, SETTINGS, INCIDENT, NOW)
    subject = f"{entries[0].key}@{entries[0].version_id}"
    assert failed(report) == {UNSIGNED, (subject, "sha256"), (subject, "lock")}
    assert hashlib.sha256(b"changed in place").hexdigest() in next(
        c.detail for c in report.failures if c.name == "sha256")


def test_an_altered_manifest_copy_is_reported_and_the_original_is_verified_too() -> None:
    store, entries, manifest = frozen_store()
    original = store.objects[("evidence", MANIFEST)][0].version_id
    altered = dict(manifest, segments=manifest["segments"][:1])  # drops a segment, keeps the old root hash
    # the evidence bucket's default retention locks the copy, GOVERNANCE
    store.put("evidence", MANIFEST, json.dumps(altered).encode(), "GOVERNANCE", STORED_UNTIL)
    report = check_incident(store, SETTINGS, INCIDENT, NOW)
    assert failed(report) == {UNSIGNED, (MANIFEST, "versions"), (MANIFEST, "root_hash"), (MANIFEST, "lock")}
    versions = next(c for c in report.failures if c.name == "versions")
    assert original in versions.detail and "2 versions" in versions.detail
    original_subject = f"{MANIFEST}@{original}"
    assert {c.name for c in report.checks if c.subject == original_subject} == {"readable", "root_hash", "lock"}
    assert all(c.ok for c in report.checks if c.subject == original_subject)
    assert {c.subject for c in report.checks if c.name == "sha256"} == {f"{e.key}@{e.version_id}" for e in entries}


def test_a_delete_marker_hiding_the_manifest_is_reported_and_the_original_still_verifies() -> None:
    store, _, _ = frozen_store()
    original = store.objects[("evidence", MANIFEST)][0].version_id
    store.delete_marker("evidence", MANIFEST)
    report = check_incident(store, SETTINGS, INCIDENT, NOW)
    assert failed(report) == {UNSIGNED, (MANIFEST, "versions")}
    assert "hides" in storage_failures(report)[0].detail
    assert any(c.subject == f"{MANIFEST}@{original}" and c.name == "root_hash" and c.ok for c in report.checks)


def test_manifest_parts_are_verified_with_the_same_rules() -> None:
    store, entries, _ = frozen_store()
    late_key = "raw/c/2026/11/21/12/node-b/late.pcap.zst"
    late_body = b"late segment"
    late_version = store.put("raw", late_key, late_body)  # never locked
    late = ManifestEntry(key=late_key, version_id=late_version, sha256=hashlib.sha256(late_body).hexdigest(),
                         size=len(late_body), node="node-b", start_ns=to_ns(W0), end_ns=to_ns(W0) + S, seq=None,
                         packets=None, lock_mode="COMPLIANCE", retain_until=iso(STORED_UNTIL), legal_hold=False)
    # Same shape as the manifest, but without a request: the manifest's requested lock applies.
    part = {"segments": [late.to_dict()], "root_hash": "f" * 64}
    part_key = f"incidents/{INCIDENT}/manifest-parts/0001.json"
    store.put("evidence", part_key, json.dumps(part).encode(), "COMPLIANCE", STORED_UNTIL)
    report = check_incident(store, SETTINGS, INCIDENT, NOW)
    late_subject = f"{late_key}@{late_version}"
    assert failed(report) == {UNSIGNED, (part_key, "root_hash"), (late_subject, "lock")}
    assert "unlocked" in next(c.detail for c in report.failures if c.subject == late_subject)


def test_a_part_naming_another_incident_is_reported() -> None:
    store, _, _ = frozen_store()
    part = {"incident_id": "someone-else", "segments": [], "root_hash": hashlib.sha256(b"").hexdigest()}
    part_key = f"incidents/{INCIDENT}/manifest-parts/node-a-000000000007.json"
    store.put("evidence", part_key, json.dumps(part).encode(), "COMPLIANCE", STORED_UNTIL)
    report = check_incident(store, SETTINGS, INCIDENT, NOW)
    assert failed(report) == {UNSIGNED, (part_key, "incident_id")}


def test_report_formatting_lists_each_failure() -> None:
    report = VerifyReport("inc-9", (Check("a", "sha256", True, "fine"),
                                    Check("raw/x@v1", "latest", False, "shadowed by 1 newer version(s), latest v2"),
                                    Check("incidents/inc-9/manifest.json", "versions", False, "2 versions")))
    assert not report.ok and len(report.failures) == 2
    assert format_report(report).splitlines() == [
        "incident inc-9: FAILED (2 of 3 checks failed on 3 objects)",
        "  raw/x@v1: latest: shadowed by 1 newer version(s), latest v2",
        "  incidents/inc-9/manifest.json: versions: 2 versions",
    ]
    as_dict = report.to_dict()
    assert as_dict["ok"] is False and as_dict["checked"] == 3
    assert [f["subject"] for f in as_dict["failures"]] == ["raw/x@v1", "incidents/inc-9/manifest.json"]
    json.dumps(as_dict)
