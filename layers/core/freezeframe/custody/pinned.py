"""Pinned reads: the manifest and manifest parts at the versions the signed chain names, nothing else.

A reader never takes "the latest version under the key": an attacker who can write to the bucket can add a version,
a part without `.json`, or a part with its own weaker lock. With signing configured, only documents a link names
(checked: the chain's signatures and links, the object's sha256) are read; anything else raises CustodyError.
Without signing (a deployment with no key), each key's original version is read, the one written create-only.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from freezeframe.adapters import kms as kmsio
from freezeframe.adapters import s3 as s3io
from freezeframe.adapters.s3 import ObjectStore
from freezeframe.contracts.config import Settings
from freezeframe.contracts.errors import CustodyError, NotFoundError
from freezeframe.contracts.keys import manifest_key, manifest_parts_prefix
from freezeframe.custody.chain import Envelope, ObjectRef, Trust, chain_prefix, check_links
from freezeframe.custody.signatures import load_roots, sha256_hex

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PinnedDocument:
    key: str
    version_id: str
    document: dict[str, Any]


@dataclass(frozen=True, slots=True)
class PinnedIncident:
    incident_id: str
    manifest: PinnedDocument
    parts: tuple[PinnedDocument, ...]
    signed: bool  # False: a deployment without a signing key, read at original versions


def online_trust(settings: Settings, public_key: bytes | None = None, tsa_roots_pem: bytes | None = None) -> Trust:
    """The key to trust: `public_key` when given, else the configured KMS key's public half; the TSA roots:
    `tsa_roots_pem`, else the configured file."""
    if public_key is not None:
        from freezeframe.custody.signatures import load_public_key

        der: bytes | None = load_public_key(public_key)
        source = "the given public key"
    elif kmsio.signer(settings) is None and settings.signing_public_key_file is not None:
        from freezeframe.custody.signatures import load_public_key

        try:
            der = load_public_key(settings.signing_public_key_file.read_bytes())
        except OSError as exc:
            raise CustodyError(f"cannot read the public key {settings.signing_public_key_file}: {exc}") from exc
        source = f"public key file {settings.signing_public_key_file}"
    else:
        signer = kmsio.signer(settings)
        der = signer.public_key_der() if signer is not None else None
        source = ("no signing key configured (FREEZEFRAME_SIGNING_KEY_ID) and none given" if signer is None
                  else f"KMS key {settings.signing_key_id}" if settings.signing_key_id
                  else f"local key file {settings.signing_key_file}")
    if tsa_roots_pem is None and settings.tsa_ca_file is not None:
        try:
            tsa_roots_pem = settings.tsa_ca_file.read_bytes()
        except OSError as exc:
            raise CustodyError(f"cannot read the time-stamping roots {settings.tsa_ca_file}: {exc}") from exc
    return Trust(der, source, load_roots(tsa_roots_pem) if tsa_roots_pem else ())


def chain_versions(s3: ObjectStore, bucket: str, incident_id: str) -> dict[str, list[tuple[str, bool]]]:
    grouped: dict[str, list[tuple[str, bool]]] = {}
    for key, version_id, marker in s3io.list_all_versions(s3, bucket, chain_prefix(incident_id)):
        grouped.setdefault(key, []).append((version_id, marker))
    return grouped


def read_pinned(settings: Settings, s3: ObjectStore, incident_id: str, trust: Trust | None = None) -> PinnedIncident:
    bucket = settings.evidence_bucket
    grouped = chain_versions(s3, bucket, incident_id)
    if not grouped:
        if settings.signing_key_id:
            if not [v for v in s3io.list_all_versions(s3, bucket, manifest_key(incident_id)) if not v[2]]:
                raise NotFoundError(f"incident {incident_id} not found: no manifest at s3://{bucket}/"
                                    f"{manifest_key(incident_id)}")
            raise CustodyError(f"incident {incident_id} has no signed custody chain at s3://{bucket}/"
                               f"{chain_prefix(incident_id)}: its documents cannot be trusted")
        return _unsigned(settings, s3, incident_id)
    stored = []
    for key in sorted(grouped):
        versions = grouped[key]
        if len(versions) != 1 or versions[0][1]:
            raise CustodyError(f"{key}: the custody link has {len(versions)} versions or delete markers")
        stored.append((key, s3io.get_bytes(s3, bucket, key, versions[0][0])))
    for result in check_links(incident_id, stored, trust or online_trust(settings), check_time=False):
        if not result.ok:
            problem = result.problems[0]
            raise CustodyError(f"{problem.subject}: {problem.name}: {problem.detail} (run `freezeframe verify`)")
    links = [Envelope.from_bytes(raw).link for _, raw in stored]
    manifests = [link.object for link in links if link.kind == "manifest"]
    if not manifests:
        raise NotFoundError(f"incident {incident_id} has no sealed manifest yet")
    if len(manifests) > 1 or manifests[0].key != manifest_key(incident_id):
        raise CustodyError(f"incident {incident_id}: the chain names {len(manifests)} manifests")
    parts = [link.object for link in links if link.kind == "manifest-part"]
    return PinnedIncident(incident_id, _read(s3, manifests[0]), tuple(_read(s3, ref) for ref in parts), True)


def pinned_manifest(settings: Settings, s3: ObjectStore, incident_id: str) -> dict[str, Any]:
    return read_pinned(settings, s3, incident_id).manifest.document


def pinned_parts(settings: Settings, s3: ObjectStore, incident_id: str) -> list[dict[str, Any]]:
    return [part.document for part in read_pinned(settings, s3, incident_id).parts]


def _read(s3: ObjectStore, ref: ObjectRef) -> PinnedDocument:
    body = s3io.get_bytes(s3, ref.bucket, ref.key, ref.version_id)
    if sha256_hex(body) != ref.sha256:
        raise CustodyError(f"{ref.key}@{ref.version_id}: stored bytes hash to {sha256_hex(body)}, the signed "
                           f"chain records {ref.sha256}")
    return PinnedDocument(ref.key, ref.version_id, _object(ref.key, body))


def _object(key: str, body: bytes) -> dict[str, Any]:
    try:
        document = json.loads(body)
    except ValueError as exc:
        raise CustodyError(f"{key}: not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise CustodyError(f"{key}: not a JSON object")
    return document


def _unsigned(settings: Settings, s3: ObjectStore, incident_id: str) -> PinnedIncident:
    """No signing configured: each document's original (create-only) version, never a later one."""
    bucket = settings.evidence_bucket
    originals: dict[str, str] = {}
    for key, version_id, marker in [*s3io.list_all_versions(s3, bucket, manifest_key(incident_id)),
                                    *s3io.list_all_versions(s3, bucket, manifest_parts_prefix(incident_id))]:
        if not marker and (key == manifest_key(incident_id) or key.startswith(manifest_parts_prefix(incident_id))):
            originals[key] = version_id  # newest first: the last one seen is the original
    key = manifest_key(incident_id)
    if key not in originals:
        raise NotFoundError(f"incident {incident_id} not found: no manifest at s3://{bucket}/{key}")
    parts = []
    for part_key in sorted(k for k in originals if k != key):
        body = s3io.get_bytes(s3, bucket, part_key, originals[part_key])
        try:
            parts.append(PinnedDocument(part_key, originals[part_key], _object(part_key, body)))
        except CustodyError:
            logger.warning("unreadable manifest part skipped", extra={"incident_id": incident_id, "key": part_key})
    manifest_body = s3io.get_bytes(s3, bucket, key, originals[key])
    return PinnedIncident(incident_id, PinnedDocument(key, originals[key], _object(key, manifest_body)),
                          tuple(parts), False)

