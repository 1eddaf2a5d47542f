"""Legal holds on the enforcing endpoint: two incidents hold the same segment versions; releasing one leaves the
other's hold in place, and only the last release turns the flag off."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError

from freezeframe.adapters import s3 as s3io
from freezeframe.contracts.keys import raw_segment_key
from freezeframe.contracts.models import FreezeRequest, LockSpec, Scope, from_ns, to_ns
from freezeframe.custody.manifest import entries_of
from freezeframe.freeze import legal_hold
from freezeframe.freeze.freeze import freeze

pytestmark = pytest.mark.integration
S = 1_000_000_000


def put_segments(config: Any, s3: Any, start_ns: int, count: int) -> list[tuple[str, str]]:
    out = []
    for seq in range(count):
        body = f"segment {seq}".encode()
        digest = hashlib.sha256(body).hexdigest()
        key = raw_segment_key(config.cluster, config.node_name, start_ns + seq * 10 * S, start_ns + (seq + 1) * 10 * S,
                              "pcap.zst")
        version = s3io.put_segment(s3, config.raw_bucket, key, body, digest, {"sha256": digest, "seq": str(seq)})
        out.append((key, version))
    return out


def request(config: Any, incident: str, start_ns: int, end_ns: int) -> FreezeRequest:
    return FreezeRequest(incident_id=incident, source="api", title="t", severity="high",
                         window_start=from_ns(start_ns), window_end=from_ns(end_ns), scope=Scope(config.cluster),
                         lock=LockSpec("COMPLIANCE", datetime.now(UTC) + timedelta(days=1), legal_hold=True))


def status(s3: Any, bucket: str, key: str, version: str) -> str | None:
    return s3.head_object(Bucket=bucket, Key=key, VersionId=version).get("ObjectLockLegalHoldStatus")


def test_releasing_one_incident_never_releases_another(local: Any) -> None:
    config, s3, _ = local
    t0 = to_ns(datetime.now(UTC) - timedelta(hours=2))
    segments = put_segments(config, s3, t0, 3)
    first = request(config, "it-hold-a", t0, t0 + 30 * S)      # all three
    second = request(config, "it-hold-b", t0 + 15 * S, t0 + 30 * S)  # the last two
    manifest_a = freeze(config, s3, first)
    freeze(config, s3, second)
    assert manifest_a.segments == 3
    assert all(status(s3, config.raw_bucket, k, v) == "ON" for k, v in segments)

    versions = [legal_hold.HeldVersion(config.raw_bucket, k, v) for k, v in segments]
    still = legal_hold.release(config, s3, "it-hold-a", versions, datetime.now(UTC))
    assert still == {f"{k}@{v}": i > 0 for i, (k, v) in enumerate(segments)}
    assert status(s3, config.raw_bucket, *segments[0]) == "OFF"
    assert status(s3, config.raw_bucket, *segments[1]) == "ON" and status(s3, config.raw_bucket, *segments[2]) == "ON"
    with pytest.raises(ClientError):  # the retention lock still protects the released one
        s3.delete_object(Bucket=config.raw_bucket, Key=segments[0][0], VersionId=segments[0][1])

    legal_hold.release(config, s3, "it-hold-b", versions[1:], datetime.now(UTC))
    assert all(status(s3, config.raw_bucket, k, v) == "OFF" for k, v in segments)
    manifest = s3io.get_json(s3, config.evidence_bucket, "incidents/it-hold-b/manifest.json")
    assert all(e.legal_hold for e in entries_of(manifest))


def test_active_holders_reads_the_registry_names() -> None:
    keys = ["legal-holds/d/a.json", "legal-holds/d/a.released.json", "legal-holds/d/b.json"]
    assert legal_hold.active_holders(keys) == {"b"}
