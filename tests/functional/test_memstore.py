"""The in-memory store's semantics, each stated by the S3 user guide's Object Lock chapter
(https://docs.aws.amazon.com/AmazonS3/latest/userguide/object-lock.html, "Retention modes", "Legal holds",
"How deletes work with S3 Object Lock") or the API reference (PutObject's If-None-Match, x-amz-checksum-sha256).
The expected answers are S3's documented ones, not the store's output; the same checks hold on LocalStack in
tests/integration/test_s3_endpoint.py and test_freeze_worm.py."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError

from freezeframe.adapters import s3 as s3io
from freezeframe.contracts.config import Settings
from tests.functional.memstore import MemoryS3

T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
BUCKET = "locked"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock: Clock) -> MemoryS3:
    s3 = MemoryS3(clock=clock)
    s3.create_bucket(Bucket=BUCKET, ObjectLockEnabledForBucket=True)
    return s3


def put(s3: MemoryS3, key: str = "k", body: bytes = b"evidence", **kwargs: Any) -> str:
    return str(s3.put_object(Bucket=BUCKET, Key=key, Body=body, **kwargs)["VersionId"])


def code_of(call: Any) -> str:
    with pytest.raises(ClientError) as refused:
        call()
    return str(refused.value.response["Error"]["Code"])


def retention(mode: str, until: datetime) -> dict[str, Any]:
    return {"Mode": mode, "RetainUntilDate": until}


def test_every_put_makes_a_new_version_and_the_old_one_stays_readable(store: MemoryS3) -> None:
    first, second = put(store, body=b"one"), put(store, body=b"two")
    assert first != second
    assert store.get_object(Bucket=BUCKET, Key="k")["Body"].read() == b"two"
    assert store.get_object(Bucket=BUCKET, Key="k", VersionId=first)["Body"].read() == b"one"


def test_compliance_refuses_delete_shortening_and_a_switch_to_governance(store: MemoryS3) -> None:
    version = put(store)
    until = T0 + timedelta(days=2)
    store.put_object_retention(Bucket=BUCKET, Key="k", VersionId=version, Retention=retention("COMPLIANCE", until))
    assert code_of(lambda: store.delete_object(Bucket=BUCKET, Key="k", VersionId=version)) == "AccessDenied"
    assert code_of(lambda: store.put_object_retention(
        Bucket=BUCKET, Key="k", VersionId=version,
        Retention=retention("COMPLIANCE", until - timedelta(hours=1)))) == "AccessDenied"
    assert code_of(lambda: store.put_object_retention(
        Bucket=BUCKET, Key="k", VersionId=version, Retention=retention("GOVERNANCE", until))) == "AccessDenied"
    # Even with the bypass header and the permission: COMPLIANCE has no bypass.
    bypassing = MemoryS3(clock=store.clock, allow_governance_bypass=True)
    bypassing.buckets = store.buckets
    assert code_of(lambda: bypassing.delete_object(Bucket=BUCKET, Key="k", VersionId=version,
                                                   BypassGovernanceRetention=True)) == "AccessDenied"
    head = store.head_object(Bucket=BUCKET, Key="k", VersionId=version)
    assert (head["ObjectLockMode"], head["ObjectLockRetainUntilDate"]) == ("COMPLIANCE", until)


def test_compliance_can_be_extended(store: MemoryS3) -> None:
    version = put(store)
    store.put_object_retention(Bucket=BUCKET, Key="k", VersionId=version,
                               Retention=retention("COMPLIANCE", T0 + timedelta(days=1)))
    store.put_object_retention(Bucket=BUCKET, Key="k", VersionId=version,
                               Retention=retention("COMPLIANCE", T0 + timedelta(days=5)))
    assert store.head_object(Bucket=BUCKET, Key="k", VersionId=version)["ObjectLockRetainUntilDate"] == \
        T0 + timedelta(days=5)


@pytest.mark.parametrize("permitted", [False, True])
def test_governance_extends_freely_but_shortening_switching_and_deleting_need_the_bypass(clock: Clock,
                                                                                         permitted: bool) -> None:
    s3 = MemoryS3(clock=clock, allow_governance_bypass=permitted)
    s3.create_bucket(Bucket=BUCKET, ObjectLockEnabledForBucket=True)
    version = put(s3)
    until = T0 + timedelta(days=2)
    s3.put_object_retention(Bucket=BUCKET, Key="k", VersionId=version, Retention=retention("GOVERNANCE", until))
    s3.put_object_retention(Bucket=BUCKET, Key="k", VersionId=version,
                            Retention=retention("GOVERNANCE", until + timedelta(days=1)))
    # Without the header, the permission alone changes nothing.
    assert code_of(lambda: s3.delete_object(Bucket=BUCKET, Key="k", VersionId=version)) == "AccessDenied"
    assert code_of(lambda: s3.put_object_retention(
        Bucket=BUCKET, Key="k", VersionId=version, Retention=retention("GOVERNANCE", until))) == "AccessDenied"
    assert code_of(lambda: s3.put_object_retention(
        Bucket=BUCKET, Key="k", VersionId=version,
        Retention=retention("COMPLIANCE", until + timedelta(days=1)))) == "AccessDenied"
    if not permitted:
        assert code_of(lambda: s3.delete_object(Bucket=BUCKET, Key="k", VersionId=version,
                                                BypassGovernanceRetention=True)) == "AccessDenied"
        assert [v.version_id for v in s3.versions_of(BUCKET, "k")] == [version]
    else:
        s3.put_object_retention(Bucket=BUCKET, Key="k", VersionId=version, Retention=retention("GOVERNANCE", until),
                                BypassGovernanceRetention=True)
        assert s3.head_object(Bucket=BUCKET, Key="k", VersionId=version)["ObjectLockRetainUntilDate"] == until
        s3.delete_object(Bucket=BUCKET, Key="k", VersionId=version, BypassGovernanceRetention=True)
        assert s3.versions_of(BUCKET, "k") == []


def test_a_legal_hold_blocks_deletion_until_it_is_removed(store: MemoryS3) -> None:
    version = put(store)
    store.put_object_legal_hold(Bucket=BUCKET, Key="k", VersionId=version, LegalHold={"Status": "ON"})
    assert store.head_object(Bucket=BUCKET, Key="k", VersionId=version)["ObjectLockLegalHoldStatus"] == "ON"
    assert code_of(lambda: store.delete_object(Bucket=BUCKET, Key="k", VersionId=version)) == "AccessDenied"
    store.put_object_legal_hold(Bucket=BUCKET, Key="k", VersionId=version, LegalHold={"Status": "OFF"})
    store.delete_object(Bucket=BUCKET, Key="k", VersionId=version)
    assert store.versions_of(BUCKET, "k") == []


def test_a_lock_does_not_stop_a_delete_marker_and_the_locked_version_survives_it(store: MemoryS3) -> None:
    version = put(store, ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=T0 + timedelta(days=1))
    marker = store.delete_object(Bucket=BUCKET, Key="k")
    assert marker["DeleteMarker"] is True
    assert code_of(lambda: store.get_object(Bucket=BUCKET, Key="k")) == "NoSuchKey"
    assert store.get_object(Bucket=BUCKET, Key="k", VersionId=version)["Body"].read() == b"evidence"
    listed = next(iter(store.get_paginator("list_object_versions").paginate(Bucket=BUCKET, Prefix="k")))
    assert [(v["VersionId"], v["IsLatest"]) for v in listed["Versions"]] == [(version, False)]
    assert [(m["VersionId"], m["IsLatest"]) for m in listed["DeleteMarkers"]] == [(marker["VersionId"], True)]


def test_an_expired_lock_no_longer_protects(store: MemoryS3, clock: Clock) -> None:
    version = put(store, ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=T0 + timedelta(hours=1))
    clock.now = T0 + timedelta(hours=1, seconds=1)
    store.delete_object(Bucket=BUCKET, Key="k", VersionId=version)
    assert store.versions_of(BUCKET, "k") == []


def test_create_only_put_conflicts_with_412_and_leaves_the_first_version(store: MemoryS3) -> None:
    first = put(store, IfNoneMatch="*")
    with pytest.raises(ClientError) as conflict:
        put(store, body=b"other", IfNoneMatch="*")
    assert conflict.value.response["Error"]["Code"] == "PreconditionFailed"
    assert conflict.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    assert [v.version_id for v in store.versions_of(BUCKET, "k")] == [first]
    # After a delete marker the key has no current version, so a create-only put succeeds again.
    store.delete_object(Bucket=BUCKET, Key="k")
    put(store, body=b"again", IfNoneMatch="*")


def test_a_wrong_sha256_checksum_is_refused_and_the_right_one_is_returned_on_head(store: MemoryS3) -> None:
    body = b"segment bytes"
    right = base64.b64encode(hashlib.sha256(body).digest()).decode()
    wrong = base64.b64encode(hashlib.sha256(b"other").digest()).decode()
    assert code_of(lambda: put(store, body=body, ChecksumSHA256=wrong)) == "BadDigest"
    version = put(store, body=body, ChecksumAlgorithm="SHA256", ChecksumSHA256=right,
                  Metadata={"sha256": hashlib.sha256(body).hexdigest()})
    head = store.head_object(Bucket=BUCKET, Key="k", VersionId=version, ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == right
    assert head["Metadata"] == {"sha256": hashlib.sha256(body).hexdigest()}
    assert "ChecksumSHA256" not in store.head_object(Bucket=BUCKET, Key="k", VersionId=version)


def test_lock_arguments_must_come_together_in_the_future_on_a_lock_bucket(store: MemoryS3, clock: Clock) -> None:
    assert code_of(lambda: put(store, ObjectLockMode="COMPLIANCE")) == "InvalidArgument"
    assert code_of(lambda: put(store, ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=T0)) == \
        "InvalidArgument"
    store.create_bucket(Bucket="plain")
    assert code_of(lambda: store.put_object(Bucket="plain", Key="k", Body=b"x", ObjectLockMode="GOVERNANCE",
                                            ObjectLockRetainUntilDate=T0 + timedelta(days=1))) == "InvalidRequest"
    assert code_of(lambda: store.put_bucket_versioning(
        Bucket=BUCKET, VersioningConfiguration={"Status": "Suspended"})) == "InvalidBucketState"


def test_the_default_retention_applies_to_a_put_without_a_lock(clock: Clock) -> None:
    s3 = MemoryS3(clock=clock)
    settings = Settings(raw_bucket="raw", evidence_bucket="evidence")
    s3io.ensure_buckets(s3, settings, evidence_default_days=3)
    evidence = s3.put_object(Bucket="evidence", Key="doc", Body=b"{}")["VersionId"]
    raw = s3.put_object(Bucket="raw", Key="seg", Body=b"x")["VersionId"]
    head = s3.head_object(Bucket="evidence", Key="doc", VersionId=evidence)
    assert (head["ObjectLockMode"], head["ObjectLockRetainUntilDate"]) == ("GOVERNANCE", T0 + timedelta(days=3))
    assert "ObjectLockMode" not in s3.head_object(Bucket="raw", Key="seg", VersionId=raw)


def test_listings_page_like_s3(store: MemoryS3) -> None:
    small = MemoryS3(page_size=2)
    small.create_bucket(Bucket=BUCKET, ObjectLockEnabledForBucket=True)
    for name in ("a/1", "a/2", "b/1", "c"):
        small.put_object(Bucket=BUCKET, Key=name, Body=b"x")
    small.put_object(Bucket=BUCKET, Key="a/1", Body=b"y")
    pages = list(small.get_paginator("list_object_versions").paginate(Bucket=BUCKET, Prefix=""))
    assert [len(p["Versions"]) for p in pages] == [2, 2, 1]
    assert list(s3io.list_prefixes(small, BUCKET, "")) == ["a/", "b/"]
    assert sorted(v.key for v in s3io.list_versions(small, BUCKET, "a/")) == ["a/1", "a/2"]


def test_the_adapters_lock_at_least_never_weakens_and_reports_what_stood(store: MemoryS3) -> None:
    version = put(store)
    longer = T0 + timedelta(days=3)
    first = s3io.lock_at_least(store, BUCKET, "k", version, "COMPLIANCE", longer)
    assert (first.mode, first.retain_until, first.outcome) == ("COMPLIANCE", longer, "applied")
    second = s3io.lock_at_least(store, BUCKET, "k", version, "GOVERNANCE", T0 + timedelta(days=1))
    assert (second.mode, second.retain_until, second.outcome) == ("COMPLIANCE", longer, "kept_stronger")
    # A stale view of the lock: the put is refused, the lock re-read, and the stronger one kept.
    stale = s3io.LockState(None, None, False)
    third = s3io.lock_at_least(store, BUCKET, "k", version, "COMPLIANCE", T0 + timedelta(days=2), stale)
    assert (third.mode, third.retain_until) == ("COMPLIANCE", longer)
    assert store.head_object(Bucket=BUCKET, Key="k", VersionId=version)["ObjectLockRetainUntilDate"] == longer
    # And the product never asked for a bypass.
    assert not any(call.get("BypassGovernanceRetention") for call in store.operations("put_object_retention"))


def test_a_ranged_get_returns_the_inclusive_range_with_206_as_s3_does(store: MemoryS3) -> None:
    put(store, "r", b"0123456789")
    reply = store.get_object(Bucket=BUCKET, Key="r", Range="bytes=2-5")
    assert reply["Body"].read() == b"2345" and reply["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert reply["ContentRange"] == "bytes 2-5/10" and reply["ContentLength"] == 4
    assert store.get_object(Bucket=BUCKET, Key="r", Range="bytes=8-20")["Body"].read() == b"89"  # clipped
    with pytest.raises(ClientError) as refused:
        store.get_object(Bucket=BUCKET, Key="r", Range="bytes=10-12")
    assert refused.value.response["Error"]["Code"] == "InvalidRange"
    # The adapter's end is exclusive; an empty range asks nothing.
    assert s3io.get_range(store, BUCKET, "r", 0, 3) == b"012" and s3io.get_range(store, BUCKET, "r", 4, 4) == b""
