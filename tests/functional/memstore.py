"""An in-memory object store with S3's versioning and Object Lock semantics: the ObjectStore of the functional tier.

It answers the same operations as the boto3 S3 client (freezeframe.adapters.s3.ObjectStore), with the same error
codes in the same botocore ClientError, so the adapters' own code (create-only conflicts, the lock retry, the
error-code mapping) runs unchanged on it. The semantics follow the S3 user guide's Object Lock chapter
(https://docs.aws.amazon.com/AmazonS3/latest/userguide/object-lock.html) and the API reference:

- Object Lock needs a versioned bucket, enabled when the bucket is created; versioning cannot then be suspended.
- A lock belongs to one version. A retention period or legal hold does not stop new versions or delete markers
  (a DELETE without a version id adds a marker and succeeds); it stops deleting (or overwriting) that version.
- COMPLIANCE: nobody can delete the version, change its mode or shorten its period until it expires.
- GOVERNANCE: deleting the version, shortening or removing its period, or changing its mode needs the
  s3:BypassGovernanceRetention permission AND the x-amz-bypass-governance-retention header; extending the period
  needs neither. The permission is a constructor flag, off by default, and no product code sends the header.
- A legal hold (ON/OFF) stops deletion of the version until removed, independently of any retention.
- A put or copy may carry a lock (mode and retain-until date, both or neither, the date in the future); without
  one, the bucket's default retention applies.
- A conditional put (If-None-Match: *) fails with 412 PreconditionFailed when the key has a current version.
- A supplied x-amz-checksum-sha256 must match the body (400 BadDigest); HEAD with ChecksumMode=ENABLED returns it.
- User metadata is stored as sent.

Thread-safe (the code under test locks segments from a pool), and the clock is injectable, so expiry is testable.
"""

from __future__ import annotations

import base64
import hashlib
import io
import itertools
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError
from botocore.response import StreamingBody

from freezeframe.adapters.s3 import ObjectStore

MODES = ("GOVERNANCE", "COMPLIANCE")


def s3_error(code: str, status: int, message: str, operation: str) -> ClientError:
    response: Any = {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError(response, operation)


@dataclass
class StoredVersion:
    version_id: str
    body: bytes | None  # None: a delete marker
    last_modified: datetime
    metadata: dict[str, str] = field(default_factory=dict)
    content_type: str = "binary/octet-stream"
    checksum_sha256: str | None = None  # base64, as S3 returns it
    mode: str | None = None
    retain_until: datetime | None = None
    legal_hold: bool = False

    @property
    def delete_marker(self) -> bool:
        return self.body is None


@dataclass
class BucketState:
    versioned: bool = False
    lock_enabled: bool = False
    default_retention: tuple[str, timedelta] | None = None
    keys: dict[str, list[StoredVersion]] = field(default_factory=dict)  # each key's versions, oldest first


class MemoryS3:
    """The operations of freezeframe.adapters.s3.ObjectStore, in memory, with Object Lock enforced."""

    def __init__(self, *, clock: Callable[[], datetime] | None = None, allow_governance_bypass: bool = False,
                 page_size: int = 1000) -> None:
        self.clock = clock or (lambda: datetime.now(UTC))
        self.allow_governance_bypass = allow_governance_bypass  # the IAM permission s3:BypassGovernanceRetention
        self.page_size = page_size
        self.buckets: dict[str, BucketState] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []  # every operation and its arguments, for assertions
        self._mutex = threading.RLock()
        self._ids = itertools.count(1)

    # ------------------------------------------------------------------ buckets

    def create_bucket(self, *, Bucket: str, ObjectLockEnabledForBucket: bool = False, **_: Any) -> dict[str, Any]:
        with self._mutex:
            self._log("create_bucket", Bucket=Bucket, ObjectLockEnabledForBucket=ObjectLockEnabledForBucket)
            if Bucket in self.buckets:
                raise s3_error("BucketAlreadyOwnedByYou", 409, f"{Bucket} exists", "CreateBucket")
            # Enabling Object Lock at creation enables versioning too.
            self.buckets[Bucket] = BucketState(versioned=ObjectLockEnabledForBucket,
                                                lock_enabled=ObjectLockEnabledForBucket)
            return {"Location": f"/{Bucket}"}

    def put_bucket_versioning(self, *, Bucket: str, VersioningConfiguration: Mapping[str, str]) -> dict[str, Any]:
        with self._mutex:
            bucket = self._bucket(Bucket, "PutBucketVersioning")
            status = VersioningConfiguration.get("Status")
            if status == "Suspended" and bucket.lock_enabled:
                raise s3_error("InvalidBucketState", 409, "versioning cannot be suspended with Object Lock",
                               "PutBucketVersioning")
            bucket.versioned = status == "Enabled" or bucket.versioned
            return {}

    def put_object_lock_configuration(self, *, Bucket: str, ObjectLockConfiguration: Mapping[str, Any]
                                      ) -> dict[str, Any]:
        with self._mutex:
            bucket = self._bucket(Bucket, "PutObjectLockConfiguration")
            if not bucket.lock_enabled:
                raise s3_error("InvalidBucketState", 409, "Object Lock is not enabled on this bucket",
                               "PutObjectLockConfiguration")
            rule = ObjectLockConfiguration.get("Rule", {}).get("DefaultRetention")
            if rule:
                days = int(rule.get("Days", 0)) + 365 * int(rule.get("Years", 0))
                bucket.default_retention = (self._mode(rule["Mode"], "PutObjectLockConfiguration"),
                                            timedelta(days=days))
            else:
                bucket.default_retention = None
            return {}

    # ------------------------------------------------------------------ writes

    def put_object(self, *, Bucket: str, Key: str, Body: bytes | Any = b"", ContentType: str | None = None,
                   Metadata: Mapping[str, str] | None = None, ChecksumAlgorithm: str | None = None,
                   ChecksumSHA256: str | None = None, IfNoneMatch: str | None = None,
                   ObjectLockMode: str | None = None, ObjectLockRetainUntilDate: datetime | None = None,
                   ObjectLockLegalHoldStatus: str | None = None) -> dict[str, Any]:
        body = Body if isinstance(Body, bytes | bytearray) else Body.read()
        body = bytes(body)
        with self._mutex:
            self._log("put_object", Bucket=Bucket, Key=Key, IfNoneMatch=IfNoneMatch, ObjectLockMode=ObjectLockMode,
                      ObjectLockRetainUntilDate=ObjectLockRetainUntilDate)
            bucket = self._bucket(Bucket, "PutObject")
            if IfNoneMatch == "*" and self._current(bucket, Key) is not None:
                raise s3_error("PreconditionFailed", 412, "At least one of the pre-conditions you specified did not "
                               "hold", "PutObject")
            computed = base64.b64encode(hashlib.sha256(body).digest()).decode()
            if ChecksumSHA256 is not None and ChecksumSHA256 != computed:
                raise s3_error("BadDigest", 400, "The SHA256 you specified did not match the calculated checksum.",
                               "PutObject")
            stored = self._new_version(bucket, Key, body, dict(Metadata or {}), ContentType,
                                       computed if (ChecksumAlgorithm or ChecksumSHA256) else None,
                                       ObjectLockMode, ObjectLockRetainUntilDate, ObjectLockLegalHoldStatus,
                                       "PutObject")
            reply: dict[str, Any] = {"VersionId": stored.version_id, "ETag": self._etag(body)}
            if stored.checksum_sha256:
                reply["ChecksumSHA256"] = stored.checksum_sha256
            return reply

    def copy_object(self, *, Bucket: str, Key: str, CopySource: Mapping[str, str], ChecksumAlgorithm: str | None = None,
                    MetadataDirective: str = "COPY", Metadata: Mapping[str, str] | None = None,
                    ContentType: str | None = None, ObjectLockMode: str | None = None,
                    ObjectLockRetainUntilDate: datetime | None = None,
                    ObjectLockLegalHoldStatus: str | None = None) -> dict[str, Any]:
        with self._mutex:
            self._log("copy_object", Bucket=Bucket, Key=Key, CopySource=dict(CopySource))
            source = self._version(CopySource["Bucket"], CopySource["Key"], CopySource.get("VersionId"), "CopyObject")
            assert source.body is not None
            metadata: dict[str, str]
            content_type: str | None
            if MetadataDirective == "COPY":
                metadata, content_type = dict(source.metadata), source.content_type
            else:
                metadata, content_type = dict(Metadata or {}), ContentType
            computed = base64.b64encode(hashlib.sha256(source.body).digest()).decode()
            stored = self._new_version(self._bucket(Bucket, "CopyObject"), Key, source.body, metadata, content_type,
                                       computed if ChecksumAlgorithm else None, ObjectLockMode,
                                       ObjectLockRetainUntilDate, ObjectLockLegalHoldStatus, "CopyObject")
            result: dict[str, Any] = {"ETag": self._etag(source.body), "LastModified": stored.last_modified}
            if stored.checksum_sha256:
                result["ChecksumSHA256"] = stored.checksum_sha256
            return {"VersionId": stored.version_id, "CopyObjectResult": result,
                    "CopySourceVersionId": source.version_id}

    def put_object_retention(self, *, Bucket: str, Key: str, VersionId: str, Retention: Mapping[str, Any],
                             BypassGovernanceRetention: bool = False) -> dict[str, Any]:
        with self._mutex:
            self._log("put_object_retention", Bucket=Bucket, Key=Key, VersionId=VersionId, Retention=dict(Retention),
                      BypassGovernanceRetention=BypassGovernanceRetention)
            bucket = self._bucket(Bucket, "PutObjectRetention")
            if not bucket.lock_enabled:
                raise s3_error("InvalidRequest", 400, "Bucket is missing Object Lock Configuration",
                               "PutObjectRetention")
            version = self._version(Bucket, Key, VersionId, "PutObjectRetention")
            mode = self._mode(Retention.get("Mode"), "PutObjectRetention")
            until = Retention.get("RetainUntilDate")
            if not isinstance(until, datetime) or until <= self.clock():
                raise s3_error("InvalidArgument", 400, "The retain until date must be in the future",
                               "PutObjectRetention")
            if self._active(version):
                extends = version.retain_until is not None and until >= version.retain_until
                if version.mode == "COMPLIANCE" and not (mode == "COMPLIANCE" and extends):
                    raise s3_error("AccessDenied", 403, "Access Denied: a COMPLIANCE lock cannot be shortened or "
                                   "changed", "PutObjectRetention")
                if version.mode == "GOVERNANCE" and not (mode == "GOVERNANCE" and extends) \
                        and not self._bypass(BypassGovernanceRetention):
                    raise s3_error("AccessDenied", 403, "Access Denied: changing a GOVERNANCE lock needs "
                                   "s3:BypassGovernanceRetention", "PutObjectRetention")
            version.mode, version.retain_until = mode, until
            return {}

    def put_object_legal_hold(self, *, Bucket: str, Key: str, VersionId: str, LegalHold: Mapping[str, str]
                              ) -> dict[str, Any]:
        with self._mutex:
            self._log("put_object_legal_hold", Bucket=Bucket, Key=Key, VersionId=VersionId, LegalHold=dict(LegalHold))
            if not self._bucket(Bucket, "PutObjectLegalHold").lock_enabled:
                raise s3_error("InvalidRequest", 400, "Bucket is missing Object Lock Configuration",
                               "PutObjectLegalHold")
            status = LegalHold.get("Status")
            if status not in ("ON", "OFF"):
                raise s3_error("MalformedXML", 400, f"legal hold status {status!r}", "PutObjectLegalHold")
            self._version(Bucket, Key, VersionId, "PutObjectLegalHold").legal_hold = status == "ON"
            return {}

    def delete_object(self, *, Bucket: str, Key: str, VersionId: str | None = None,
                      BypassGovernanceRetention: bool = False) -> dict[str, Any]:
        with self._mutex:
            self._log("delete_object", Bucket=Bucket, Key=Key, VersionId=VersionId,
                      BypassGovernanceRetention=BypassGovernanceRetention)
            bucket = self._bucket(Bucket, "DeleteObject")
            if VersionId is None:
                if not bucket.versioned:
                    bucket.keys.pop(Key, None)
                    return {}
                # Locks never stop a delete marker: the locked versions stay, listed under it.
                marker = StoredVersion(self._next_id(), None, self.clock())
                bucket.keys.setdefault(Key, []).append(marker)
                return {"DeleteMarker": True, "VersionId": marker.version_id}
            versions = bucket.keys.get(Key, [])
            version = next((v for v in versions if v.version_id == VersionId), None)
            if version is None:
                return {"VersionId": VersionId}  # S3 answers a delete of a missing version with 204
            if not version.delete_marker:
                if version.legal_hold:
                    raise s3_error("AccessDenied", 403, "Access Denied: the version is under a legal hold",
                                   "DeleteObject")
                if self._active(version) and (version.mode == "COMPLIANCE"
                                              or not self._bypass(BypassGovernanceRetention)):
                    raise s3_error("AccessDenied", 403, f"Access Denied: the version is locked {version.mode} "
                                   f"until {version.retain_until}", "DeleteObject")
            versions.remove(version)
            return {"VersionId": VersionId, "DeleteMarker": version.delete_marker}

    # ------------------------------------------------------------------ reads

    def head_object(self, *, Bucket: str, Key: str, VersionId: str | None = None,
                    ChecksumMode: str | None = None) -> dict[str, Any]:
        with self._mutex:
            try:
                version = self._version(Bucket, Key, VersionId, "HeadObject")
            except ClientError as exc:
                # HEAD has no body, so the client sees only the status as the code.
                status = exc.response["ResponseMetadata"]["HTTPStatusCode"]
                raise s3_error(str(status), status, "Not Found", "HeadObject") from exc
            return self._describe(version, checksum=ChecksumMode == "ENABLED")

    def get_object(self, *, Bucket: str, Key: str, VersionId: str | None = None,
                   Range: str | None = None) -> dict[str, Any]:
        with self._mutex:
            version = self._version(Bucket, Key, VersionId, "GetObject")
            assert version.body is not None
            reply = self._describe(version, checksum=False)
            body = version.body
            if Range is not None:
                # S3's single byte range: "bytes=first-last", last inclusive and clipped to the object; 206.
                match = re.fullmatch(r"bytes=(\d+)-(\d+)", Range)
                assert match, f"unsupported Range {Range!r}"
                first, last = int(match[1]), min(int(match[2]), len(body) - 1)
                if first >= len(body) or first > last:
                    raise ClientError({"Error": {"Code": "InvalidRange", "Message": Range}}, "GetObject")
                reply["ContentRange"] = f"bytes {first}-{last}/{len(body)}"
                reply["ResponseMetadata"] = {"HTTPStatusCode": 206}
                body = body[first:last + 1]
                reply["ContentLength"] = len(body)
            reply["Body"] = StreamingBody(io.BytesIO(body), len(body))
            return reply

    def get_paginator(self, operation_name: str) -> _Paginator:
        if operation_name not in ("list_object_versions", "list_objects_v2"):
            raise NotImplementedError(operation_name)
        return _Paginator(self, operation_name)

    def _list_object_versions_pages(self, Bucket: str, Prefix: str = "") -> Iterator[dict[str, Any]]:
        with self._mutex:
            bucket = self._bucket(Bucket, "ListObjectVersions")
            listed = []
            for key in sorted(k for k in bucket.keys if k.startswith(Prefix)):
                versions = bucket.keys[key]
                for position, version in enumerate(reversed(versions)):  # newest first
                    item: dict[str, Any] = {"Key": key, "VersionId": version.version_id, "IsLatest": position == 0,
                                            "LastModified": version.last_modified}
                    if not version.delete_marker:
                        assert version.body is not None
                        item.update(Size=len(version.body), ETag=self._etag(version.body))
                    listed.append((version.delete_marker, item))
        for start in range(0, max(len(listed), 1), self.page_size):
            chunk = listed[start:start + self.page_size]
            yield {"Versions": [item for marker, item in chunk if not marker],
                   "DeleteMarkers": [item for marker, item in chunk if marker],
                   "IsTruncated": start + self.page_size < len(listed)}

    def _list_objects_v2_pages(self, Bucket: str, Prefix: str = "", Delimiter: str | None = None
                               ) -> Iterator[dict[str, Any]]:
        with self._mutex:
            bucket = self._bucket(Bucket, "ListObjectsV2")
            contents, prefixes = [], set()
            for key in sorted(k for k in bucket.keys if k.startswith(Prefix)):
                current = self._current(bucket, key)
                if current is None:
                    continue
                rest = key[len(Prefix):]
                if Delimiter and Delimiter in rest:
                    prefixes.add(Prefix + rest[:rest.index(Delimiter) + len(Delimiter)])
                    continue
                assert current.body is not None
                contents.append({"Key": key, "Size": len(current.body), "LastModified": current.last_modified})
        entries = [("c", c) for c in contents] + [("p", {"Prefix": p}) for p in sorted(prefixes)]
        for start in range(0, max(len(entries), 1), self.page_size):
            chunk = entries[start:start + self.page_size]
            page: dict[str, Any] = {"KeyCount": len(chunk)}
            if any(kind == "c" for kind, _ in chunk):
                page["Contents"] = [item for kind, item in chunk if kind == "c"]
            if any(kind == "p" for kind, _ in chunk):
                page["CommonPrefixes"] = [item for kind, item in chunk if kind == "p"]
            yield page

    # ------------------------------------------------------------------ test helpers

    def versions_of(self, bucket: str, key: str) -> list[StoredVersion]:
        """A key's versions and delete markers, oldest first."""
        with self._mutex:
            return list(self.buckets[bucket].keys.get(key, []))

    def all_keys(self, bucket: str, prefix: str = "") -> list[str]:
        with self._mutex:
            return sorted(k for k in self.buckets[bucket].keys if k.startswith(prefix))

    def operations(self, name: str) -> list[dict[str, Any]]:
        with self._mutex:
            return [args for operation, args in self.calls if operation == name]

    # ------------------------------------------------------------------ internals

    def _log(self, operation: str, **args: Any) -> None:
        self.calls.append((operation, args))

    def _next_id(self) -> str:
        # Opaque like S3's: not ordered by any property a test could lean on.
        return hashlib.sha256(str(next(self._ids)).encode()).hexdigest()[:32]

    @staticmethod
    def _etag(body: bytes) -> str:
        return f'"{hashlib.md5(body, usedforsecurity=False).hexdigest()}"'

    def _bucket(self, name: str, operation: str) -> BucketState:
        bucket = self.buckets.get(name)
        if bucket is None:
            raise s3_error("NoSuchBucket", 404, f"The specified bucket {name} does not exist", operation)
        return bucket

    @staticmethod
    def _mode(mode: Any, operation: str) -> str:
        if mode not in MODES:
            raise s3_error("InvalidArgument", 400, f"Unknown Object Lock mode {mode!r}", operation)
        return str(mode)

    def _bypass(self, requested: bool) -> bool:
        return bool(requested) and self.allow_governance_bypass

    def _active(self, version: StoredVersion) -> bool:
        return version.mode is not None and version.retain_until is not None and version.retain_until > self.clock()

    @staticmethod
    def _current(bucket: BucketState, key: str) -> StoredVersion | None:
        versions = bucket.keys.get(key)
        if not versions or versions[-1].delete_marker:
            return None
        return versions[-1]

    def _version(self, bucket_name: str, key: str, version_id: str | None, operation: str) -> StoredVersion:
        bucket = self._bucket(bucket_name, operation)
        if version_id is None:
            current = self._current(bucket, key)
            if current is None:
                raise s3_error("NoSuchKey", 404, "The specified key does not exist.", operation)
            return current
        found = next((v for v in bucket.keys.get(key, []) if v.version_id == version_id), None)
        if found is None:
            raise s3_error("NoSuchVersion", 404, "The specified version does not exist.", operation)
        if found.delete_marker:
            raise s3_error("MethodNotAllowed", 405, "The specified method is not allowed against this resource.",
                           operation)
        return found

    def _new_version(self, bucket: BucketState, key: str, body: bytes, metadata: dict[str, str],
                     content_type: str | None, checksum: str | None, mode: str | None, until: datetime | None,
                     legal_hold: str | None, operation: str) -> StoredVersion:
        if (mode is None) != (until is None):
            raise s3_error("InvalidArgument", 400, "x-amz-object-lock-mode and x-amz-object-lock-retain-until-date "
                           "must both be supplied", operation)
        if (mode is not None or legal_hold is not None) and not bucket.lock_enabled:
            raise s3_error("InvalidRequest", 400, "Bucket is missing Object Lock Configuration", operation)
        now = self.clock()
        if mode is not None:
            mode = self._mode(mode, operation)
            if until is None or until <= now:
                raise s3_error("InvalidArgument", 400, "The retain until date must be in the future", operation)
        elif bucket.default_retention is not None:
            mode, until = bucket.default_retention[0], now + bucket.default_retention[1]
        stored = StoredVersion(self._next_id() if bucket.versioned else "null", body, now, metadata,
                               content_type or "binary/octet-stream", checksum, mode, until, legal_hold == "ON")
        versions = bucket.keys.setdefault(key, [])
        if not bucket.versioned:
            versions.clear()
        versions.append(stored)
        return stored

    def _describe(self, version: StoredVersion, *, checksum: bool) -> dict[str, Any]:
        assert version.body is not None
        reply: dict[str, Any] = {"VersionId": version.version_id, "ContentLength": len(version.body),
                                 "ContentType": version.content_type, "Metadata": dict(version.metadata),
                                 "LastModified": version.last_modified, "ETag": self._etag(version.body)}
        if version.mode is not None:
            reply["ObjectLockMode"], reply["ObjectLockRetainUntilDate"] = version.mode, version.retain_until
        reply["ObjectLockLegalHoldStatus"] = "ON" if version.legal_hold else "OFF"
        if checksum and version.checksum_sha256:
            reply["ChecksumSHA256"] = version.checksum_sha256
        return reply


class _Paginator:
    def __init__(self, store: MemoryS3, operation: str) -> None:
        self._store, self._operation = store, operation

    def paginate(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
        if self._operation == "list_object_versions":
            return self._store._list_object_versions_pages(**kwargs)
        return self._store._list_objects_v2_pages(**kwargs)


def as_object_store(store: MemoryS3) -> ObjectStore:
    """The store as the adapters' interface (mypy checks that MemoryS3 implements every ObjectStore operation)."""
    return store
