"""Segments a freeze locked but could not verify: the manifest's `unverified` list.

Locking preserves evidence, so a freeze locks every version in its window and scope, even one whose integrity it
cannot establish: no or a malformed sha256 in its metadata, a sha256 that disagrees with the checksum S3 computed
at upload, a size that differs from the one announced, or a version it cannot read. Such a version is not a
`ManifestEntry` (an entry promises a sha256 that dissection and `verify` check the bytes against); it is recorded
beside the entries with the reason, the lock it holds, and the hash of the list (`unverified_hash`) so a reader can
tell the list was not altered. Dissection leaves it out and writes a `dissect_errors` row (stage `verify`, kind
`unverified`); `verify`, the incident status and the report's coverage show it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from freezeframe.contracts.errors import PayloadError

_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True, slots=True)
class UnverifiedSegment:
    """One locked version whose integrity the freeze could not establish."""

    key: str
    version_id: str
    node: str
    start_ns: int
    end_ns: int
    size: int  # the listed size of the version
    reason: str  # why it is unverified, for people
    lock_mode: str  # the lock the version holds after the freeze ("" when it could not be read back)
    retain_until: str
    legal_hold: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> UnverifiedSegment:
        try:
            return cls(key=str(raw["key"]), version_id=str(raw["version_id"]), node=str(raw["node"]),
                       start_ns=int(raw["start_ns"]), end_ns=int(raw["end_ns"]), size=int(raw["size"]),
                       reason=str(raw["reason"]), lock_mode=str(raw.get("lock_mode") or ""),
                       retain_until=str(raw.get("retain_until") or ""), legal_hold=bool(raw.get("legal_hold")))
        except (KeyError, TypeError, ValueError) as exc:
            raise PayloadError(f"malformed unverified segment record: {exc}") from exc


def unverified_of(document: Mapping[str, Any]) -> list[UnverifiedSegment]:
    """The unverified segments of a manifest or manifest part (none in documents written before the list)."""
    return [UnverifiedSegment.from_dict(raw) for raw in document.get("unverified") or []]


def unverified_hash(items: Iterable[UnverifiedSegment]) -> str:
    """sha256 over the canonical JSON of the records sorted by (node, start_ns, key, version_id)."""
    digest = hashlib.sha256()
    for item in sorted(items, key=lambda u: (u.node, u.start_ns, u.key, u.version_id)):
        digest.update(json.dumps(item.to_dict(), sort_keys=True, separators=(",", ":")).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def attach(document: dict[str, Any], items: Iterable[UnverifiedSegment]) -> dict[str, Any]:
    """Adds the `unverified` list and its hash to a manifest or part (always, so an empty list is explicit)."""
    ordered = sorted(items, key=lambda u: (u.node, u.start_ns, u.key, u.version_id))
    document["unverified"] = [item.to_dict() for item in ordered]
    document["unverified_hash"] = unverified_hash(ordered)
    return document


def metadata_problem(metadata: Mapping[str, str], checksum_b64: str | None) -> str | None:
    """Pure: why a version's metadata cannot vouch for its bytes, or None when it can.

    `checksum_b64` is the SHA-256 checksum S3 computed at upload (HEAD with checksum mode), when it has one."""
    sha256 = metadata.get("sha256")
    if not sha256:
        return "no sha256 metadata"
    if not _SHA256_HEX.match(sha256):
        return f"sha256 metadata {sha256[:80]!r} is not a SHA-256 hex digest"
    if checksum_b64:
        try:
            stored = base64.b64decode(checksum_b64, validate=True).hex()
        except (binascii.Error, ValueError):
            stored = ""
        # A full-object checksum is 32 bytes; a multipart composite checksum ("...-N") cannot be compared.
        if len(stored) == 64 and stored != sha256:
            return f"sha256 metadata {sha256} does not match the checksum S3 computed at upload ({stored})"
    return None


def size_problem(announced: int | None, listed: int) -> str | None:
    if announced is not None and announced != listed:
        return f"size mismatch: the segment record says {announced} bytes, the version holds {listed}"
    return None
