"""Consolidation on the enforcing endpoint: server-side copies of the frozen segments under the incident, locked
with the incident's lock and proven byte-identical by the S3-computed SHA-256."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError

from freezeframe.adapters import s3 as s3io
from freezeframe.contracts.keys import manifest_key, raw_segment_key
from freezeframe.contracts.models import FreezeRequest, LockSpec, Scope, from_ns, to_ns
from freezeframe.freeze.freeze import freeze

pytestmark = pytest.mark.integration
S = 1_000_000_000


def test_copies_are_locked_and_identical(local: Any) -> None:
    config, s3, _ = local
    config = config.with_(consolidate=True)
    t0 = to_ns(datetime.now(UTC) - timedelta(hours=3))
    sources = {}
    for seq in range(3):
        body = f"segment bytes {seq}".encode() * 100
        digest = hashlib.sha256(body).hexdigest()
        key = raw_segment_key(config.cluster, config.node_name, t0 + seq * 10 * S, t0 + (seq + 1) * 10 * S, "pcap.zst")
        s3io.put_segment(s3, config.raw_bucket, key, body, digest, {"sha256": digest, "seq": str(seq)})
        sources[key] = body
    request = FreezeRequest(incident_id="it-consolidate-1", source="api", title="t", severity="high",
                            window_start=from_ns(t0), window_end=from_ns(t0 + 30 * S), scope=Scope(config.cluster),
                            lock=LockSpec("COMPLIANCE", datetime.now(UTC) + timedelta(days=2)))
    freeze(config, s3, request)
    manifest = s3io.get_json(s3, config.evidence_bucket, manifest_key(request.incident_id))
    copies = manifest["consolidated"]
    assert sorted(c["source_key"] for c in copies) == sorted(sources)
    for copy in copies:
        body = s3io.get_bytes(s3, copy["bucket"], copy["key"], copy["version_id"])
        assert body == sources[copy["source_key"]]
        assert hashlib.sha256(body).hexdigest() == copy["sha256"]
        head = s3.head_object(Bucket=copy["bucket"], Key=copy["key"], VersionId=copy["version_id"])
        assert head["ObjectLockMode"] == "COMPLIANCE"
        assert head["ObjectLockRetainUntilDate"] >= request.lock.retain_until.replace(microsecond=0)
        with pytest.raises(ClientError):
            s3.delete_object(Bucket=copy["bucket"], Key=copy["key"], VersionId=copy["version_id"])


def test_without_the_option_nothing_is_copied(local: Any) -> None:
    config, s3, _ = local
    t0 = to_ns(datetime.now(UTC) - timedelta(hours=3))
    body = b"one segment"
    digest = hashlib.sha256(body).hexdigest()
    key = raw_segment_key(config.cluster, config.node_name, t0, t0 + 10 * S, "pcap.zst")
    s3io.put_segment(s3, config.raw_bucket, key, body, digest, {"sha256": digest, "seq": "0"})
    request = FreezeRequest(incident_id="it-consolidate-2", source="api", title="t", severity="high",
                            window_start=from_ns(t0), window_end=from_ns(t0 + 10 * S), scope=Scope(config.cluster),
                            lock=LockSpec("COMPLIANCE", datetime.now(UTC) + timedelta(days=1)))
    freeze(config, s3, request)
    assert "consolidated" not in s3io.get_json(s3, config.evidence_bucket, manifest_key(request.incident_id))
    assert list(s3io.list_keys(s3, config.evidence_bucket, "incidents/it-consolidate-2/segments/")) == []
