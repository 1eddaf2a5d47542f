"""The embedded demo's evidence, kept in a local directory after the demo exits.

The demo runs on an in-process moto S3 that goes away with it. Before it stops, `save` copies every object version
of its buckets (bytes, metadata, content type, Object Lock mode, retain-until and legal hold, version id) into
`DIR/store/`, the evidence bucket's tables into `DIR/tables/` (what `freezeframe query --dir DIR` reads), and writes
`DIR/demo.json` naming the incident. `open_demo(DIR)` starts a fresh embedded moto and puts every version back under
its original version id, so `report`, `export-pcap` and `verify` run on the same objects the custody chain signed.

Restoring a version id is not something the S3 API allows; it goes through moto's own backend (the only place this
module touches moto internals), and only into the embedded server this process just started.

The directory is trusted as a whole: whoever can write it can change the evidence and the demo key that vouches for
it (`verify --demo` says so). It is a demo, not a custody store.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from freezeframe.adapters import s3 as s3io
from freezeframe.adapters.s3 import ObjectStore
from freezeframe.contracts.config import Settings
from freezeframe.contracts.errors import ConfigError, StackError
from freezeframe.contracts.keys import TABLES_ROOT

DEMO_DOCUMENT = "demo.json"
DEMO_SCHEMA = "freezeframe.demo/v1"
STORE = "store"
PUBLIC_KEY = "demo-public-key.pem"
TSA_ROOTS = "demo-tsa-ca.pem"


@dataclass(frozen=True, slots=True)
class DemoDirectory:
    """What demo.json records."""

    directory: Path
    incident_id: str
    cluster: str
    raw_bucket: str
    evidence_bucket: str

    @classmethod
    def load(cls, directory: Path) -> DemoDirectory:
        path = directory / DEMO_DOCUMENT
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{directory} is not a freezeframe demo directory (no readable {DEMO_DOCUMENT}: "
                              f"{exc})") from exc
        if not isinstance(raw, dict) or raw.get("schema") != DEMO_SCHEMA:
            raise ConfigError(f"{path} is not a freezeframe demo document ({DEMO_SCHEMA})")
        return cls(directory, str(raw["incident_id"]), str(raw["cluster"]), str(raw["raw_bucket"]),
                   str(raw["evidence_bucket"]))

    @property
    def public_key(self) -> Path:
        return self.directory / PUBLIC_KEY

    @property
    def tsa_roots(self) -> Path:
        return self.directory / TSA_ROOTS


def save(s3: ObjectStore, config: Settings, directory: Path, incident_id: str) -> None:
    """Copies both buckets (every version) and the evidence tables into `directory`, then writes demo.json last,
    so a directory with demo.json is complete."""
    store = directory / STORE
    blobs = store / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    for bucket in (config.raw_bucket, config.evidence_bucket):
        index = []
        for key, version_id, marker in _oldest_first(s3, bucket):
            if marker:
                index.append({"key": key, "version_id": version_id, "delete_marker": True})
                continue
            head = s3io.head_version(s3, bucket, key, version_id, checksum=True)
            body = s3io.get_bytes(s3, bucket, key, version_id)
            digest = hashlib.sha256(body).hexdigest()
            (blobs / digest).write_bytes(body)
            until = head.get("ObjectLockRetainUntilDate")
            index.append({"key": key, "version_id": version_id, "sha256": digest,
                          "last_modified": head["LastModified"].astimezone(UTC).isoformat(),
                          "content_type": head.get("ContentType"), "metadata": head.get("Metadata") or {},
                          "lock_mode": head.get("ObjectLockMode"),
                          "lock_until": until.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if until else None,
                          "legal_hold": head.get("ObjectLockLegalHoldStatus") == "ON",
                          "checksum_sha256": head.get("ChecksumSHA256")})
            if bucket == config.evidence_bucket and key.startswith(f"{TABLES_ROOT}/"):  # oldest first: newest stays
                target = directory / key
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(body)
        (store / f"{bucket}.jsonl").write_text("".join(json.dumps(item) + "\n" for item in index), encoding="utf-8")
    document = {"schema": DEMO_SCHEMA, "incident_id": incident_id, "cluster": config.cluster,
                "raw_bucket": config.raw_bucket, "evidence_bucket": config.evidence_bucket,
                "saved_at": datetime.now(UTC).isoformat(), "public_key": PUBLIC_KEY, "tsa_roots": TSA_ROOTS}
    (directory / DEMO_DOCUMENT).write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


def _oldest_first(s3: ObjectStore, bucket: str) -> list[tuple[str, str, bool]]:
    by_key: dict[str, list[tuple[str, str, bool]]] = {}
    for key, version_id, marker in s3io.list_all_versions(s3, bucket, ""):
        by_key.setdefault(key, []).append((key, version_id, marker))
    # Versions come newest first per key (markers after them, which a demo never writes): reverse each key's list.
    return [item for key in sorted(by_key) for item in reversed(by_key[key])]


@contextmanager
def open_demo(directory: Path) -> Iterator[tuple[Settings, Any, DemoDirectory]]:
    """A fresh embedded moto holding the demo's objects at their original version ids, with the settings and
    client to read it; stopped on exit. Nothing the caller writes there outlives the block."""
    demo = DemoDirectory.load(directory)
    from freezeframe_local.s3 import start_moto

    server, endpoint = start_moto()
    try:
        # Built from nothing but the directory: no configured KMS key or running stack's key is ever trusted here.
        config = Settings(cluster=demo.cluster, s3_endpoint=endpoint.url, raw_bucket=demo.raw_bucket,
                          evidence_bucket=demo.evidence_bucket, lock_retain_days=1,
                          signing_public_key_file=demo.public_key, tsa_ca_file=demo.tsa_roots)
        s3 = s3io.client(config)
        s3io.ensure_buckets(s3, config)
        for bucket in (demo.raw_bucket, demo.evidence_bucket):
            _restore_bucket(directory / STORE, bucket)
        yield config, s3, demo
    finally:
        server.stop()


def _restore_bucket(store: Path, bucket: str) -> None:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    try:
        lines = (store / f"{bucket}.jsonl").read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise StackError(f"the demo directory's store has no index for bucket {bucket}: {exc}") from exc
    for line in lines:
        item = json.loads(line)
        if item.get("delete_marker"):
            backend.delete_object(bucket, item["key"])  # a new delete marker, newest under the key
            backend.get_bucket(bucket).keys.getlist(item["key"])[-1]._version_id = item["version_id"]
            continue
        body = (store / "blobs" / item["sha256"]).read_bytes()
        if hashlib.sha256(body).hexdigest() != item["sha256"]:
            raise StackError(f"the demo directory's copy of {bucket}/{item['key']} does not hash to its index entry")
        key = backend.put_object(bucket, item["key"], body, checksum_value=item.get("checksum_sha256"))
        key._version_id = item["version_id"]
        # moto keeps naive UTC times
        key.last_modified = datetime.fromisoformat(item["last_modified"]).astimezone(UTC).replace(tzinfo=None)
        metadata = {f"x-amz-meta-{name}": value for name, value in item["metadata"].items()}
        if item.get("content_type"):
            metadata["Content-Type"] = item["content_type"]
        key.set_metadata(metadata)
        key.lock_mode = item.get("lock_mode")
        key.lock_until = item.get("lock_until")
        key.lock_legal_status = "ON" if item.get("legal_hold") else "OFF"


def reset_directory(directory: Path) -> None:
    """Removes a previous demo's copy (only a directory that holds demo.json, or an empty one)."""
    if not directory.exists():
        return
    if any(directory.iterdir()) and not (directory / DEMO_DOCUMENT).exists():
        raise ConfigError(f"{directory} exists and is not a freezeframe demo directory; choose another --dir")
    shutil.rmtree(directory)
