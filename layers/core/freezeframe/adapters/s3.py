"""The object store: segment uploads, version listing, in-place locks and create-only evidence writes.

`ObjectStore` is the typed interface: the S3 operations freezeframe uses, with the parameters it passes. The boto3
S3 client (`client`) is one implementation, the in-memory store with Object Lock semantics of the functional tests
(tests/functional/memstore.py) the other. Modules outside adapters/ never call an operation themselves: they call
the functions below (list versions, head, get or stream, create-only put with a lock, retention, legal hold, copy).

Nothing here ever passes BypassGovernanceRetention. The one delete (`delete_refused`) is the demo's proof that a
locked version refuses deletion.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, Protocol, cast

from botocore.exceptions import ClientError

from freezeframe.contracts.config import Settings
from freezeframe.contracts.errors import NotFoundError, ObjectLockError

logger = logging.getLogger(__name__)
_CREATE_CONFLICT = {"PreconditionFailed", "ConditionalRequestConflict", "412", "409"}
_LOCK_REFUSED = {"AccessDenied", "InvalidRequest", "InvalidArgument", "403", "400"}
LOCAL_CREDENTIALS = {"aws_access_key_id": "test", "aws_secret_access_key": "test"}  # noqa: S105 - local endpoints only


@dataclass(frozen=True, slots=True)
class ObjectVersion:
    key: str
    version_id: str
    size: int
    last_modified: datetime


@dataclass(frozen=True, slots=True)
class LockState:
    mode: str | None
    retain_until: datetime | None
    legal_hold: bool
    # How the lock came to be: "applied" (this call set it), "kept" (it already was at least the requested one),
    # "kept_stronger" (another lock, stronger or longer, stood and was kept).
    outcome: str = "applied"


class Paginator(Protocol):
    def paginate(self, **kwargs: Any) -> Iterator[Mapping[str, Any]]: ...


class ReadableBody(Protocol):
    """A streamed object body (botocore's StreamingBody)."""

    def read(self, amt: int | None = None) -> bytes: ...
    def iter_chunks(self, chunk_size: int = ...) -> Iterator[bytes]: ...
    def close(self) -> None: ...


class ObjectStore(Protocol):
    """The S3 operations freezeframe uses, with exactly the parameters it passes (keyword-only, as boto3 takes
    them; failures raise botocore's ClientError with S3's error code). There is no governance bypass parameter:
    the interface cannot ask for one. Pagination: `get_paginator("list_object_versions" | "list_objects_v2")`."""

    def put_object(self, *, Bucket: str, Key: str, Body: bytes, ContentType: str = ...,
                   Metadata: Mapping[str, str] = ..., ChecksumAlgorithm: str = ..., ChecksumSHA256: str = ...,
                   IfNoneMatch: str = ..., ObjectLockMode: str = ..., ObjectLockRetainUntilDate: datetime = ...
                   ) -> Mapping[str, Any]: ...
    def head_object(self, *, Bucket: str, Key: str, VersionId: str = ..., ChecksumMode: str = ...
                    ) -> Mapping[str, Any]: ...
    def get_object(self, *, Bucket: str, Key: str, VersionId: str = ..., Range: str = ...) -> Mapping[str, Any]: ...
    def copy_object(self, *, Bucket: str, Key: str, CopySource: Mapping[str, str], ChecksumAlgorithm: str = ...,
                    MetadataDirective: str = ..., ObjectLockMode: str = ..., ObjectLockRetainUntilDate: datetime = ...
                    ) -> Mapping[str, Any]: ...
    def put_object_retention(self, *, Bucket: str, Key: str, VersionId: str, Retention: Mapping[str, Any]
                             ) -> Mapping[str, Any]: ...
    def put_object_legal_hold(self, *, Bucket: str, Key: str, VersionId: str, LegalHold: Mapping[str, str]
                              ) -> Mapping[str, Any]: ...
    def delete_object(self, *, Bucket: str, Key: str, VersionId: str = ...) -> Mapping[str, Any]: ...
    def get_paginator(self, operation_name: str) -> Paginator: ...
    def create_bucket(self, *, Bucket: str, ObjectLockEnabledForBucket: bool = ...) -> Mapping[str, Any]: ...
    def put_bucket_versioning(self, *, Bucket: str, VersioningConfiguration: Mapping[str, str]
                              ) -> Mapping[str, Any]: ...
    def put_object_lock_configuration(self, *, Bucket: str, ObjectLockConfiguration: Mapping[str, Any]
                                      ) -> Mapping[str, Any]: ...


@lru_cache(maxsize=16)
def client(settings: Settings) -> ObjectStore:
    """One client per settings per process (boto3 clients are thread-safe, and building one costs milliseconds that
    a warm Lambda should not pay per request)."""
    import boto3  # noqa: PLC0415 - lazy: boto3 takes 0.5 s to import
    from botocore.config import Config  # noqa: PLC0415 - lazy: boto3 takes 0.5 s to import
    kwargs: dict[str, Any] = {"region_name": settings.region,
                              "config": Config(retries={"max_attempts": settings.s3_max_attempts, "mode": "adaptive"},
                                               connect_timeout=settings.s3_connect_timeout_s, max_pool_connections=32)}
    if settings.s3_endpoint:
        # A local endpoint: path-style addressing and throwaway credentials unless real ones are configured.
        kwargs["endpoint_url"] = settings.s3_endpoint
        kwargs["config"] = kwargs["config"].merge(Config(s3={"addressing_style": "path"}))
        if boto3.session.Session().get_credentials() is None:
            kwargs.update(LOCAL_CREDENTIALS)
    # The boto3 client implements ObjectStore; its stubs type each operation's keywords as one TypedDict, which
    # mypy cannot match structurally against the explicit keywords above, hence the cast at this one boundary.
    return cast(ObjectStore, boto3.client("s3", **kwargs))


def credentials(settings: Settings) -> tuple[str, str, str | None] | None:
    """The credentials boto3 would use, or the throwaway local ones for a local endpoint; None means the default
    chain (instance role) is left to the caller's SDK."""
    import boto3  # noqa: PLC0415 - lazy: boto3 takes 0.5 s to import
    resolved = boto3.session.Session().get_credentials()
    if resolved is not None:
        frozen = resolved.get_frozen_credentials()
        return str(frozen.access_key), str(frozen.secret_key), frozen.token
    if settings.s3_endpoint:
        return LOCAL_CREDENTIALS["aws_access_key_id"], LOCAL_CREDENTIALS["aws_secret_access_key"], None
    return None


def sha256_b64(hex_digest: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_digest)).decode()


def put_segment(s3: ObjectStore, bucket: str, key: str, body: bytes, sha256_hex: str,
                metadata: Mapping[str, str]) -> str:
    """Create-only upload with an S3-verified SHA-256. A re-send of the same bytes returns the existing version,
    so at-least-once delivery never makes a second segment."""
    try:
        reply = s3.put_object(Bucket=bucket, Key=key, Body=body, ChecksumAlgorithm="SHA256",
                              ChecksumSHA256=sha256_b64(sha256_hex),
                              Metadata=dict(metadata), IfNoneMatch="*")
        return str(reply["VersionId"])
    except ClientError as exc:
        if _error_code(exc) not in _CREATE_CONFLICT:
            raise
    head = s3.head_object(Bucket=bucket, Key=key)
    existing = head.get("Metadata", {}).get("sha256")
    if existing != sha256_hex:
        raise FileExistsError(f"s3://{bucket}/{key} already holds different bytes (sha256 {existing})")
    return str(head["VersionId"])


def list_versions(s3: ObjectStore, bucket: str, prefix: str) -> Iterator[ObjectVersion]:
    """The latest version of every key under prefix (delete markers skipped)."""
    paginator = s3.get_paginator("list_object_versions")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        for version in page.get("Versions", []):
            if version.get("IsLatest"):
                yield ObjectVersion(version["Key"], version["VersionId"], int(version["Size"]),
                                    version["LastModified"])


def list_all_versions(s3: ObjectStore, bucket: str, prefix: str) -> Iterator[tuple[str, str, bool]]:
    """(key, version id, is a delete marker) of every version and delete marker under prefix, each key's newest
    first."""
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Versions", []):
            yield item["Key"], item["VersionId"], False
        for item in page.get("DeleteMarkers", []):
            yield item["Key"], item["VersionId"], True


def list_keys(s3: ObjectStore, bucket: str, prefix: str) -> Iterator[str]:
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            yield item["Key"]


def head_version(s3: ObjectStore, bucket: str, key: str, version_id: str, *, checksum: bool = False) -> dict[str, Any]:
    """HEAD of one version; with `checksum`, also the checksum S3 computed at upload (ChecksumSHA256)."""
    if checksum:
        return dict(s3.head_object(Bucket=bucket, Key=key, VersionId=version_id, ChecksumMode="ENABLED"))
    return dict(s3.head_object(Bucket=bucket, Key=key, VersionId=version_id))


def lock_state(head: Mapping[str, Any]) -> LockState:
    return LockState(mode=head.get("ObjectLockMode"), retain_until=head.get("ObjectLockRetainUntilDate"),
                     legal_hold=head.get("ObjectLockLegalHoldStatus") == "ON")


def lock_version(s3: ObjectStore, bucket: str, key: str, version_id: str, mode: str, retain_until: datetime,
                 current: LockState) -> LockState:
    """Lock one version in place. Never shortens an existing lock and never weakens COMPLIANCE to GOVERNANCE:
    the stronger of the existing and the requested lock wins."""
    effective_mode = "COMPLIANCE" if "COMPLIANCE" in (mode, current.mode) else mode
    effective_until = retain_until if current.retain_until is None else max(retain_until, current.retain_until)
    if current.mode == effective_mode and current.retain_until is not None and current.retain_until >= effective_until:
        return current
    s3.put_object_retention(Bucket=bucket, Key=key, VersionId=version_id,
                            Retention={"Mode": effective_mode, "RetainUntilDate": effective_until})
    return LockState(effective_mode, effective_until, current.legal_hold)


LOCK_ATTEMPTS = 5
_LOCK_STRENGTH = {"GOVERNANCE": 1, "COMPLIANCE": 2}


def lock_at_least(s3: ObjectStore, bucket: str, key: str, version_id: str, mode: str, retain_until: datetime,
                  current: LockState | None = None) -> LockState:
    """Lock one version at least as strongly and as long as requested, keeping any stronger lock, safe against a
    concurrent locker (another incident's freeze or hold locking the same version at the same time).

    The retention put is computed from the lock last read; when the endpoint refuses it (because the lock changed
    in between and the put would now shorten or weaken it), the lock is read again and the stronger of the two is
    put, up to LOCK_ATTEMPTS times. A version already locked at least as requested is not written at all."""
    for _ in range(LOCK_ATTEMPTS):
        if current is None:
            current = lock_state(head_version(s3, bucket, key, version_id))
        if _covers(current, mode, retain_until):
            return LockState(current.mode, current.retain_until, current.legal_hold,
                             "kept" if current.mode == mode and current.retain_until == retain_until
                             else "kept_stronger")
        effective_mode = "COMPLIANCE" if "COMPLIANCE" in (mode, current.mode) else mode
        effective_until = retain_until if current.retain_until is None else max(retain_until, current.retain_until)
        try:
            s3.put_object_retention(Bucket=bucket, Key=key, VersionId=version_id,
                                    Retention={"Mode": effective_mode, "RetainUntilDate": effective_until})
        except ClientError as exc:
            if _error_code(exc) not in _LOCK_REFUSED:
                raise
            logger.info("retention refused; re-reading the lock", extra={"segment": key, "version_id": version_id})
            current = None
            continue
        applied = (effective_mode, effective_until) == (mode, retain_until)
        return LockState(effective_mode, effective_until, current.legal_hold,
                         "applied" if applied else "kept_stronger")
    final = lock_state(head_version(s3, bucket, key, version_id))
    if final.retain_until is not None and final.retain_until >= retain_until:
        # A longer lock in a mode this caller may not convert (GOVERNANCE over a requested COMPLIANCE): it stands,
        # and the entry records the mode the version really holds.
        return LockState(final.mode, final.retain_until, final.legal_hold, "kept_stronger")
    raise ObjectLockError(f"s3://{bucket}/{key}@{version_id}: could not lock it {mode} until {retain_until} "
                          f"after {LOCK_ATTEMPTS} attempts (it holds {final.mode} until {final.retain_until})")


def _covers(current: LockState, mode: str, retain_until: datetime) -> bool:
    return (current.retain_until is not None and current.retain_until >= retain_until
            and _LOCK_STRENGTH.get(current.mode or "", 0) >= _LOCK_STRENGTH[mode])


def try_put_retention(s3: ObjectStore, bucket: str, key: str, version_id: str, mode: str,
                      retain_until: datetime) -> bool:
    """PutObjectRetention without reading the current lock first. False when the endpoint refuses it, which S3 does
    when it would shorten or weaken an existing lock: the caller then reads the lock and keeps the stronger one."""
    try:
        s3.put_object_retention(Bucket=bucket, Key=key, VersionId=version_id,
                                Retention={"Mode": mode, "RetainUntilDate": retain_until})
    except ClientError as exc:
        if _error_code(exc) in _LOCK_REFUSED:
            return False
        raise
    return True


def set_legal_hold(s3: ObjectStore, bucket: str, key: str, version_id: str, *, on: bool) -> None:
    s3.put_object_legal_hold(Bucket=bucket, Key=key, VersionId=version_id,
                             LegalHold={"Status": "ON" if on else "OFF"})


def put_bytes(s3: ObjectStore, bucket: str, key: str, body: bytes, *, content_type: str, create_only: bool = False,
              lock: tuple[str, datetime] | None = None) -> str | None:
    """Put with a SHA-256 checksum. create_only: returns None when the key exists already (a retry or a duplicate)."""
    kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key, "Body": body, "ContentType": content_type,
                              "ChecksumAlgorithm": "SHA256",
                              "ChecksumSHA256": base64.b64encode(hashlib.sha256(body).digest()).decode()}
    if create_only:
        kwargs["IfNoneMatch"] = "*"
    if lock is not None:
        kwargs["ObjectLockMode"], kwargs["ObjectLockRetainUntilDate"] = lock
    try:
        reply = s3.put_object(**kwargs)
    except ClientError as exc:
        if create_only and _error_code(exc) in _CREATE_CONFLICT:
            return None
        raise
    return str(reply.get("VersionId") or "")


def encode_json(document: Mapping[str, Any]) -> bytes:
    """The bytes put_json stores (what a custody link's sha256 is taken over)."""
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def put_json(s3: ObjectStore, bucket: str, key: str, document: Mapping[str, Any], **kwargs: Any) -> str | None:
    return put_bytes(s3, bucket, key, encode_json(document), content_type="application/json", **kwargs)


def get_bytes(s3: ObjectStore, bucket: str, key: str, version_id: str | None = None) -> bytes:
    kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key}
    if version_id:
        kwargs["VersionId"] = version_id
    try:
        return bytes(s3.get_object(**kwargs)["Body"].read())
    except ClientError as exc:
        if _error_code(exc) in {"NoSuchKey", "NoSuchVersion", "404"}:
            raise NotFoundError(f"s3://{bucket}/{key} not found") from exc
        raise


def get_range(s3: ObjectStore, bucket: str, key: str, start: int, end: int) -> bytes:
    """Bytes ``start`` to ``end`` (exclusive) of an object, in one ranged GetObject (HTTP Range is inclusive); an
    empty range asks nothing."""
    if end <= start:
        return b""
    try:
        return bytes(s3.get_object(Bucket=bucket, Key=key, Range=f"bytes={start}-{end - 1}")["Body"].read())
    except ClientError as exc:
        if _error_code(exc) in {"NoSuchKey", "NoSuchVersion", "404"}:
            raise NotFoundError(f"s3://{bucket}/{key} not found") from exc
        raise


def exists(s3: ObjectStore, bucket: str, key: str) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if _error_code(exc) in {"NoSuchKey", "404", "NotFound"}:
            return False
        raise
    return True


def get_json_version(s3: ObjectStore, bucket: str, key: str, version_id: str) -> dict[str, Any]:
    document = json.loads(get_bytes(s3, bucket, key, version_id))
    if not isinstance(document, dict):
        raise NotFoundError(f"s3://{bucket}/{key}?versionId={version_id} is not a JSON object")
    return document


def get_json(s3: ObjectStore, bucket: str, key: str) -> dict[str, Any]:
    document = json.loads(get_bytes(s3, bucket, key))
    if not isinstance(document, dict):
        raise NotFoundError(f"s3://{bucket}/{key} is not a JSON object")
    return document


def ensure_buckets(s3: ObjectStore, settings: Settings, evidence_default_days: int = 1) -> None:
    """Local mode only (AWS buckets come from template.yaml): raw bucket versioned with Object Lock and no default
    retention; evidence bucket with a default GOVERNANCE retention."""
    for bucket in (settings.raw_bucket, settings.evidence_bucket):
        try:
            s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
        except ClientError as exc:
            if _error_code(exc) not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                raise
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object_lock_configuration(
        Bucket=settings.evidence_bucket,
        ObjectLockConfiguration={"ObjectLockEnabled": "Enabled",
                                 "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": evidence_default_days}}})


def retain_until_days(days: int, now: datetime | None = None) -> datetime:
    return (now or datetime.now(UTC)) + timedelta(days=days)


def error_code(exc: ClientError) -> str:
    """The S3 error code of a failed call (or its HTTP status when the body named none)."""
    return _error_code(exc)


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "")) or str(
        exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))


@dataclass(frozen=True, slots=True)
class VersionEntry:
    """One version or delete marker as the version listing shows it."""

    key: str
    version_id: str
    is_latest: bool
    delete_marker: bool


def list_version_entries(s3: ObjectStore, bucket: str, prefix: str) -> Iterator[VersionEntry]:
    """Every version, then every delete marker, of each listed page under prefix; a key's versions newest first."""
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Versions", []):
            yield VersionEntry(item["Key"], item["VersionId"], bool(item.get("IsLatest")), False)
        for item in page.get("DeleteMarkers", []):
            yield VersionEntry(item["Key"], item["VersionId"], bool(item.get("IsLatest")), True)


def list_prefixes(s3: ObjectStore, bucket: str, prefix: str, delimiter: str = "/") -> Iterator[str]:
    """The common prefixes (one folder level) under prefix."""
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, Delimiter=delimiter):
        for item in page.get("CommonPrefixes", []):
            yield str(item["Prefix"])


def head_latest(s3: ObjectStore, bucket: str, key: str) -> dict[str, Any]:
    """HEAD of a key's latest version."""
    return dict(s3.head_object(Bucket=bucket, Key=key))


def open_version(s3: ObjectStore, bucket: str, key: str, version_id: str) -> ReadableBody:
    """The body of one version, streamed (the caller reads and closes it)."""
    body: ReadableBody = s3.get_object(Bucket=bucket, Key=key, VersionId=version_id)["Body"]
    return body


@dataclass(frozen=True, slots=True)
class Copied:
    version_id: str
    sha256: str | None  # hex of the SHA-256 the store computed over the copy, None when it reported none


def copy_version(s3: ObjectStore, source_bucket: str, source_key: str, source_version_id: str, bucket: str, key: str,
                 lock: tuple[str, datetime]) -> Copied:
    """Server-side copy of one version (metadata kept) into a new object locked `lock` = (mode, retain until), with
    the SHA-256 of the copied bytes computed by the store."""
    reply = s3.copy_object(Bucket=bucket, Key=key, ChecksumAlgorithm="SHA256",
                           CopySource={"Bucket": source_bucket, "Key": source_key, "VersionId": source_version_id},
                           ObjectLockMode=lock[0], ObjectLockRetainUntilDate=lock[1], MetadataDirective="COPY")
    checksum = reply.get("CopyObjectResult", {}).get("ChecksumSHA256")
    return Copied(str(reply.get("VersionId", "")), base64.b64decode(checksum).hex() if checksum else None)


def delete_refused(s3: ObjectStore, bucket: str, key: str, version_id: str) -> bool:
    """Try to delete one version (without any bypass): True when the store refused. Only the demo calls it, on a
    version it has just seen locked, to show the lock holding."""
    try:
        s3.delete_object(Bucket=bucket, Key=key, VersionId=version_id)
    except ClientError:
        return True
    return False
