"""Local S3 endpoints from freezeframe_local.s3: LocalStack enforces Object Lock like AWS S3, moto does not.

Expected values come from the S3 API reference (what AWS refuses, and with which code) and from hashlib,
never from the code under test.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from botocore.exceptions import ClientError
from freezeframe_local.s3 import (
    S3Endpoint,
    check_object_lock_enforcement,
    s3_client,
    start_localstack,
    start_moto,
    stop_process,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

pytestmark = pytest.mark.integration

BODY = b"freezeframe segment bytes\n" * 64
ALL_REFUSED = {
    "refuses_delete": True,
    "refuses_shorten": True,
    "refuses_governance_switch": True,
    "refuses_bypass_delete": True,
}


@pytest.fixture(scope="module")
def localstack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Endpoint]:
    endpoint = start_localstack(tmp_path_factory.mktemp("localstack"))
    try:
        yield endpoint
    finally:
        # test_stop_process_ends_localstack stops it first; a second stop must be a no-op.
        assert endpoint.pid is not None
        stop_process(endpoint.pid)


@pytest.fixture
def moto_endpoint() -> Iterator[S3Endpoint]:
    server, endpoint = start_moto()
    try:
        yield endpoint
    finally:
        server.stop()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _lock_bucket(client: S3Client) -> str:
    bucket = f"test-lock-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    return bucket


def _locked_version(client: S3Client, bucket: str, key: str, retain_until: dt.datetime) -> str:
    put = client.put_object(Bucket=bucket, Key=key, Body=BODY, ChecksumAlgorithm="SHA256")
    version_id = put["VersionId"]
    client.put_object_retention(
        Bucket=bucket, Key=key, VersionId=version_id, Retention={"Mode": "COMPLIANCE", "RetainUntilDate": retain_until}
    )
    return version_id


def _error(exc_info: pytest.ExceptionInfo[ClientError]) -> tuple[str, int]:
    response = exc_info.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


def _port_open(url: str) -> bool:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((host, int(port))) == 0


def test_localstack_endpoint_shape(localstack: S3Endpoint) -> None:
    assert localstack.kind == "localstack"
    assert localstack.url.startswith("http://127.0.0.1:")
    assert localstack.pid is not None and localstack.pid > 0
    # Detached: it leads its own process group, so it outlives a CLI that exits.
    assert os.getpgid(localstack.pid) == localstack.pid != os.getpgrp()
    assert localstack.workdir is not None and localstack.log_path is not None
    assert localstack.log_path.parent == localstack.workdir and localstack.log_path.exists()


def test_localstack_keeps_object_files_in_workdir(localstack: S3Endpoint) -> None:
    # Unpatched, LocalStack writes every instance's objects under /tmp/localstack-s3-storage/<bucket>.
    assert localstack.workdir is not None
    client = s3_client(localstack.url)
    bucket = _lock_bucket(client)
    client.put_object(Bucket=bucket, Key="raw/big.pcap", Body=BODY * 1024)  # above the 512 KiB in-memory limit
    assert (localstack.workdir / "s3-storage" / bucket).is_dir()
    assert not (Path("/tmp/localstack-s3-storage") / bucket).exists()


def test_localstack_enforces_compliance_lock(localstack: S3Endpoint) -> None:
    client = s3_client(localstack.url)
    bucket = _lock_bucket(client)
    # ObjectLockEnabledForBucket turns versioning on by itself.
    assert client.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"

    put = client.put_object(Bucket=bucket, Key="raw/seg.pcap", Body=BODY, ChecksumAlgorithm="SHA256")
    assert put["ChecksumSHA256"] == base64.b64encode(hashlib.sha256(BODY).digest()).decode()
    version_id = put["VersionId"]
    retain_until = _now() + dt.timedelta(days=1)
    client.put_object_retention(
        Bucket=bucket,
        Key="raw/seg.pcap",
        VersionId=version_id,
        Retention={"Mode": "COMPLIANCE", "RetainUntilDate": retain_until},
    )
    head = client.head_object(Bucket=bucket, Key="raw/seg.pcap", VersionId=version_id)
    assert head["ObjectLockMode"] == "COMPLIANCE"
    assert head["ObjectLockRetainUntilDate"] == retain_until

    with pytest.raises(ClientError) as deleted:
        client.delete_object(Bucket=bucket, Key="raw/seg.pcap", VersionId=version_id)
    assert _error(deleted) == ("AccessDenied", 403)

    with pytest.raises(ClientError) as shortened:
        client.put_object_retention(
            Bucket=bucket,
            Key="raw/seg.pcap",
            VersionId=version_id,
            Retention={"Mode": "COMPLIANCE", "RetainUntilDate": retain_until - dt.timedelta(hours=12)},
        )
    assert _error(shortened) == ("AccessDenied", 403)

    with pytest.raises(ClientError) as overwritten:
        client.put_object(Bucket=bucket, Key="raw/seg.pcap", Body=b"other", IfNoneMatch="*")
    assert _error(overwritten) == ("PreconditionFailed", 412)

    # The version and its lock are untouched by the refused calls.
    head = client.head_object(Bucket=bucket, Key="raw/seg.pcap", VersionId=version_id, ChecksumMode="ENABLED")
    assert head["ObjectLockMode"] == "COMPLIANCE"
    assert head["ObjectLockRetainUntilDate"] == retain_until
    assert head["ChecksumSHA256"] == put["ChecksumSHA256"]
    versions = client.list_object_versions(Bucket=bucket, Prefix="raw/seg.pcap")["Versions"]
    assert [v["VersionId"] for v in versions] == [version_id]

    # Extending a COMPLIANCE lock is allowed (a late freeze of the same segment does this).
    client.put_object_retention(
        Bucket=bucket,
        Key="raw/seg.pcap",
        VersionId=version_id,
        Retention={"Mode": "COMPLIANCE", "RetainUntilDate": retain_until + dt.timedelta(days=1)},
    )
    head = client.head_object(Bucket=bucket, Key="raw/seg.pcap", VersionId=version_id)
    assert head["ObjectLockRetainUntilDate"] == retain_until + dt.timedelta(days=1)


def test_localstack_rejects_wrong_checksum_and_past_dates(localstack: S3Endpoint) -> None:
    # botocore retries BadDigest (4 retries with backoff, about 8 s); one attempt shows the refusal at once.
    client = s3_client(localstack.url, max_attempts=1)
    bucket = _lock_bucket(client)
    wrong = base64.b64encode(hashlib.sha256(b"not the body").digest()).decode()
    with pytest.raises(ClientError) as corrupted:
        client.put_object(Bucket=bucket, Key="raw/bad.pcap", Body=BODY, ChecksumSHA256=wrong)
    assert _error(corrupted) == ("BadDigest", 400)
    assert client.list_object_versions(Bucket=bucket).get("Versions", []) == []

    version_id = client.put_object(Bucket=bucket, Key="raw/ok.pcap", Body=BODY)["VersionId"]
    with pytest.raises(ClientError) as past:
        client.put_object_retention(
            Bucket=bucket,
            Key="raw/ok.pcap",
            VersionId=version_id,
            Retention={"Mode": "COMPLIANCE", "RetainUntilDate": _now() - dt.timedelta(days=1)},
        )
    assert _error(past) == ("InvalidArgument", 400)


def test_localstack_locks_multipart_uploads(localstack: S3Endpoint) -> None:
    # pyarrow's S3 filesystem always uploads multipart, so a lock must survive CompleteMultipartUpload.
    client = s3_client(localstack.url)
    bucket = _lock_bucket(client)
    retain_until = _now() + dt.timedelta(days=1)
    upload = client.create_multipart_upload(
        Bucket=bucket, Key="results/part.parquet", ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=retain_until
    )
    part = client.upload_part(
        Bucket=bucket, Key="results/part.parquet", UploadId=upload["UploadId"], PartNumber=1, Body=BODY
    )
    done = client.complete_multipart_upload(
        Bucket=bucket,
        Key="results/part.parquet",
        UploadId=upload["UploadId"],
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
    )
    head = client.head_object(Bucket=bucket, Key="results/part.parquet", VersionId=done["VersionId"])
    assert head["ObjectLockMode"] == "COMPLIANCE"
    assert head["ObjectLockRetainUntilDate"] == retain_until
    with pytest.raises(ClientError) as deleted:
        client.delete_object(Bucket=bucket, Key="results/part.parquet", VersionId=done["VersionId"])
    assert _error(deleted) == ("AccessDenied", 403)


def test_check_object_lock_enforcement_on_localstack(localstack: S3Endpoint) -> None:
    assert check_object_lock_enforcement(localstack.url) == ALL_REFUSED
    probe_buckets = [b["Name"] for b in s3_client(localstack.url).list_buckets()["Buckets"]]
    assert any(name.startswith("freezeframe-lockprobe-") for name in probe_buckets)


def test_moto_is_not_worm(moto_endpoint: S3Endpoint) -> None:
    """moto 5.2.5 refuses deleting a locked version, but lets a COMPLIANCE lock be shortened or downgraded
    to GOVERNANCE and then deleted with the bypass header: fine for the demo, no proof of WORM."""
    assert moto_endpoint.kind == "moto" and moto_endpoint.pid is None
    assert check_object_lock_enforcement(moto_endpoint.url) == {
        "refuses_delete": True,
        "refuses_shorten": False,
        "refuses_governance_switch": False,
        "refuses_bypass_delete": True,
    }

    client = s3_client(moto_endpoint.url)
    bucket = _lock_bucket(client)
    retain_until = _now() + dt.timedelta(days=1)
    version_id = _locked_version(client, bucket, "raw/seg.pcap", retain_until)
    shorter = retain_until - dt.timedelta(hours=23)
    client.put_object_retention(
        Bucket=bucket,
        Key="raw/seg.pcap",
        VersionId=version_id,
        Retention={"Mode": "COMPLIANCE", "RetainUntilDate": shorter},
    )
    head = client.head_object(Bucket=bucket, Key="raw/seg.pcap", VersionId=version_id)
    assert head["ObjectLockRetainUntilDate"] == shorter

    # Two calls destroy a COMPLIANCE-locked version on moto; AWS refuses both.
    client.put_object_retention(
        Bucket=bucket,
        Key="raw/seg.pcap",
        VersionId=version_id,
        Retention={"Mode": "GOVERNANCE", "RetainUntilDate": retain_until},
    )
    client.delete_object(Bucket=bucket, Key="raw/seg.pcap", VersionId=version_id, BypassGovernanceRetention=True)
    assert client.list_object_versions(Bucket=bucket, Prefix="raw/seg.pcap").get("Versions", []) == []


def test_stop_process_ends_localstack(localstack: S3Endpoint) -> None:
    assert localstack.pid is not None
    assert _port_open(localstack.url)
    stop_process(localstack.pid)
    with pytest.raises(ProcessLookupError):
        os.kill(localstack.pid, 0)
    assert not _port_open(localstack.url)
    stop_process(localstack.pid)  # already gone: silent
