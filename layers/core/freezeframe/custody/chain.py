"""The incident's chain of signed links: the documents, their encoding, sealing (append) and the pure checks.

A link (`freezeframe.custody-link/v1`) is canonical JSON (sorted keys, no spaces, ASCII) naming one evidence object
version, its sha256 and size, the previous link's digest and signature digest, the signing key and who signed when.
Its envelope, stored create-only and locked at `incidents/<id>/chain/<seq:08d>.json`, carries the link's exact bytes
(base64), the DER ECDSA signature over them and the DER RFC 3161 response over the signature.
"""

from __future__ import annotations

import base64
import binascii
import getpass
import json
import logging
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from cryptography import x509

from freezeframe.adapters import kms as kmsio
from freezeframe.adapters import s3 as s3io
from freezeframe.adapters.s3 import ObjectStore
from freezeframe.adapters.tsa import HttpTimeStamper, TimeStamper
from freezeframe.contracts.config import Settings
from freezeframe.contracts.errors import CustodyError
from freezeframe.contracts.keys import chain_prefix, link_key, public_key_key
from freezeframe.contracts.models import iso
from freezeframe.custody.signatures import fingerprint, sha256_hex, signature_ok, timestamp_time

logger = logging.getLogger(__name__)
LINK_SCHEMA = "freezeframe.custody-link/v1"
ENVELOPE_SCHEMA = "freezeframe.custody-envelope/v1"
SIGNING_ALGORITHM = kmsio.SIGNING_ALGORITHM
# What a link may name: each kind is written (and sealed) by one function only.
KINDS = ("manifest", "manifest-part", "summary", "report", "export", "custody")
SEAL_ATTEMPTS = 16








def canonical(document: dict[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


@dataclass(frozen=True, slots=True)
class ObjectRef:
    """One evidence object version as a link names it."""

    bucket: str
    key: str
    version_id: str
    sha256: str  # of the stored bytes of that version
    size: int

    def to_dict(self) -> dict[str, Any]:
        return {"bucket": self.bucket, "key": self.key, "version_id": self.version_id, "sha256": self.sha256,
                "size": self.size}


@dataclass(frozen=True, slots=True)
class PreviousRef:
    """The link before this one: its seq, the sha256 of its bytes and of its signature (CloudTrail's
    previousDigestSignature)."""

    seq: int
    sha256: str
    signature_sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "sha256": self.sha256, "signature_sha256": self.signature_sha256}


@dataclass(frozen=True, slots=True)
class Link:
    incident_id: str
    seq: int  # 0 for the first link; the envelope's key carries the same number
    kind: str  # one of KINDS
    object: ObjectRef
    previous: PreviousRef | None  # None only for seq 0
    key_id: str  # the KMS key that signed
    public_key_sha256: str  # sha256 of its DER public key: the verifier compares it with the key it trusts
    signed_by: str  # the principal that sealed (IAM ARN, or local:<user>@<host>)
    signed_at: str  # UTC, ISO 8601, the signer's clock (the RFC 3161 token is the trusted time)
    algorithm: str = SIGNING_ALGORITHM
    schema: str = LINK_SCHEMA

    def to_bytes(self) -> bytes:
        return canonical({"schema": self.schema, "incident_id": self.incident_id, "seq": self.seq,
                          "kind": self.kind, "object": self.object.to_dict(),
                          "previous": self.previous.to_dict() if self.previous else None, "key_id": self.key_id,
                          "public_key_sha256": self.public_key_sha256, "signed_by": self.signed_by,
                          "signed_at": self.signed_at, "algorithm": self.algorithm})

    @classmethod
    def from_bytes(cls, raw: bytes) -> Link:
        try:
            doc = json.loads(raw)
            if not isinstance(doc, dict) or doc.get("schema") != LINK_SCHEMA:
                raise ValueError(f"schema must be {LINK_SCHEMA!r}")
            obj, prev = doc["object"], doc["previous"]
            link = cls(incident_id=str(doc["incident_id"]), seq=_int(doc["seq"]), kind=str(doc["kind"]),
                       object=ObjectRef(str(obj["bucket"]), str(obj["key"]), str(obj["version_id"]),
                                        str(obj["sha256"]), _int(obj["size"])),
                       previous=None if prev is None else PreviousRef(_int(prev["seq"]), str(prev["sha256"]),
                                                                      str(prev["signature_sha256"])),
                       key_id=str(doc["key_id"]), public_key_sha256=str(doc["public_key_sha256"]),
                       signed_by=str(doc["signed_by"]), signed_at=str(doc["signed_at"]),
                       algorithm=str(doc["algorithm"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise CustodyError(f"not a custody link: {exc}") from exc
        if link.kind not in KINDS:
            raise CustodyError(f"not a custody link: unknown kind {link.kind!r}")
        if link.to_bytes() != raw:
            raise CustodyError("not a custody link: its bytes are not in canonical form")
        return link


@dataclass(frozen=True, slots=True)
class Envelope:
    link_bytes: bytes  # exactly the signed bytes
    signature: bytes  # DER ECDSA over sha256(link_bytes)
    timestamp: bytes | None  # DER TimeStampResp over sha256(signature)

    @property
    def link(self) -> Link:
        return Link.from_bytes(self.link_bytes)

    @property
    def digest(self) -> str:
        return sha256_hex(self.link_bytes)

    def to_bytes(self) -> bytes:
        return canonical({"schema": ENVELOPE_SCHEMA, "link": _b64(self.link_bytes),
                          "signature": _b64(self.signature),
                          "timestamp": _b64(self.timestamp) if self.timestamp is not None else None})

    @classmethod
    def from_bytes(cls, raw: bytes) -> Envelope:
        try:
            doc = json.loads(raw)
            if not isinstance(doc, dict) or doc.get("schema") != ENVELOPE_SCHEMA:
                raise ValueError(f"schema must be {ENVELOPE_SCHEMA!r}")
            stamp = doc.get("timestamp")
            return cls(_unb64(doc["link"]), _unb64(doc["signature"]), None if stamp is None else _unb64(stamp))
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise CustodyError(f"not a custody envelope: {exc}") from exc

    def previous_ref(self) -> PreviousRef:
        return PreviousRef(self.link.seq, self.digest, sha256_hex(self.signature))


# ------------------------------------------------------------------------------------------------------ checks


@dataclass(frozen=True, slots=True)
class Trust:
    """What a verifier trusts: the signing key's public half, and the roots a time-stamping authority chains to."""

    public_key_der: bytes | None
    source: str  # where the key came from, for the report ("KMS key ...", "file ...", "bundle ...")
    tsa_roots: tuple[x509.Certificate, ...] = ()


@dataclass(frozen=True, slots=True)
class LinkProblem:
    subject: str
    name: str
    detail: str


@dataclass(frozen=True, slots=True)
class LinkResult:
    """One stored link as checked: the problems found (none: it holds) and the trusted time of its signature."""

    subject: str
    envelope: Envelope | None
    problems: tuple[LinkProblem, ...]
    stamped_at: datetime | None

    @property
    def ok(self) -> bool:
        return not self.problems


def check_links(incident_id: str, stored: Sequence[tuple[str, bytes]], trust: Trust, *,
                check_time: bool = True) -> list[LinkResult]:
    """Pure: each (subject, envelope bytes) of a chain in key order; the signature under the trusted key, the seq
    the key names, the predecessor's digests (so an inserted, dropped or reordered link fails) and the RFC 3161
    token over the signature."""
    results: list[LinkResult] = []
    previous: Envelope | None = None
    for index, (subject, raw) in enumerate(stored):
        problems: list[LinkProblem] = []
        stamped: datetime | None = None
        try:
            envelope = Envelope.from_bytes(raw)
            link = envelope.link
        except CustodyError as exc:
            results.append(LinkResult(subject, None, (LinkProblem(subject, "readable", str(exc)),), None))
            previous = None
            continue
        if link.incident_id != incident_id:
            problems.append(LinkProblem(subject, "incident_id", f"names incident {link.incident_id!r}"))
        if not subject.split("@")[0].endswith(f"/{link.seq:08d}.json") or link.seq != index:
            problems.append(LinkProblem(subject, "seq", f"link {link.seq} stored as chain entry {index}"))
        problems.extend(_signature_problems(subject, envelope, link, trust))
        expected = previous.previous_ref() if previous is not None else None
        if index == 0 and link.previous is not None:
            problems.append(LinkProblem(subject, "previous", "the first link names a predecessor"))
        elif index > 0 and link.previous != expected:
            problems.append(LinkProblem(subject, "previous", (
                f"names predecessor {link.previous.to_dict() if link.previous else None}, "
                f"the chain holds {expected.to_dict() if expected else 'an unreadable link'}")))
        if check_time:
            if envelope.timestamp is None:
                problems.append(LinkProblem(subject, "timestamp", "no RFC 3161 token"))
            else:
                try:
                    stamped = timestamp_time(envelope.timestamp, envelope.signature, trust.tsa_roots)
                except CustodyError as exc:
                    problems.append(LinkProblem(subject, "timestamp", str(exc)))
        results.append(LinkResult(subject, envelope, tuple(problems), stamped))
        previous = envelope
    return results


def _signature_problems(subject: str, envelope: Envelope, link: Link, trust: Trust) -> list[LinkProblem]:
    if trust.public_key_der is None:
        return [LinkProblem(subject, "signature", f"no trusted signing key ({trust.source})")]
    trusted = fingerprint(trust.public_key_der)
    if link.public_key_sha256 != trusted:
        return [LinkProblem(subject, "signature", f"signed by key {link.public_key_sha256}, the trusted key "
                                                  f"({trust.source}) is {trusted}")]
    if link.algorithm != SIGNING_ALGORITHM or not signature_ok(trust.public_key_der, envelope.link_bytes,
                                                                 envelope.signature):
        return [LinkProblem(subject, "signature", f"the signature does not verify under {trust.source}")]
    return []


# ------------------------------------------------------------------------------------------------------ sealing


@dataclass(frozen=True, slots=True)
class Sealer:
    signer: kmsio.DigestSigner
    stamper: TimeStamper | None
    principal: str


@lru_cache(maxsize=8)
def sealer(settings: Settings) -> Sealer | None:
    """The configured sealer, or None when this deployment signs nothing (no signing key configured)."""
    signer = kmsio.signer(settings)
    if signer is None:
        return None
    stamper = HttpTimeStamper(settings.tsa_url) if settings.tsa_url else None
    return Sealer(signer, stamper, principal(settings))


def principal(settings: Settings) -> str:
    """Who acts: the caller's IAM ARN in AWS, the local user on a local stack."""
    if settings.kms_endpoint or settings.s3_endpoint:
        return f"local:{getpass.getuser()}@{socket.gethostname()}"
    return kmsio.caller_arn(settings)


def sign_link(link: Link, signer: kmsio.DigestSigner, stamper: TimeStamper | None) -> Envelope:
    """The envelope of a link: its bytes, their signature, and the time-stamp of the signature."""
    body = link.to_bytes()
    signature = signer.sign_digest(bytes.fromhex(sha256_hex(body)))
    return Envelope(body, signature, stamper.stamp(signature) if stamper is not None else None)


def read_chain(s3: ObjectStore, bucket: str, incident_id: str) -> list[tuple[str, Envelope]]:
    """The current envelope of every chain key, in key order (sealing appends after the last)."""
    out = []
    for key in sorted(s3io.list_keys(s3, bucket, chain_prefix(incident_id))):
        out.append((key, Envelope.from_bytes(s3io.get_bytes(s3, bucket, key))))
    return out


def seal(settings: Settings, s3: ObjectStore, seal_with: Sealer, incident_id: str, kind: str, ref: ObjectRef,
         lock: tuple[str, datetime] | None, now: datetime | None = None) -> Envelope:
    """Appends a signed, time-stamped link naming `ref` (idempotent: an object version already named returns its
    link). Concurrent sealers race on the create-only key of the next seq; the loser re-reads and retries."""
    if kind not in KINDS:
        raise CustodyError(f"unknown custody kind {kind!r}")
    bucket = settings.evidence_bucket
    public_sha = fingerprint(seal_with.signer.public_key_der())
    for _attempt in range(SEAL_ATTEMPTS):
        chain = read_chain(s3, bucket, incident_id)
        if not chain:  # the first sealer publishes the key beside the evidence (create-only: once)
            _publish_key(settings, s3, incident_id, seal_with.signer.public_key_der(), lock)
        for _key, existing in chain:
            named = existing.link.object
            if (named.bucket, named.key, named.version_id) == (ref.bucket, ref.key, ref.version_id):
                return existing
        last = chain[-1][1] if chain else None
        seq = last.link.seq + 1 if last is not None else 0
        link = Link(incident_id=incident_id, seq=seq, kind=kind, object=ref,
                    previous=last.previous_ref() if last is not None else None, key_id=seal_with.signer.key_id,
                    public_key_sha256=public_sha, signed_by=seal_with.principal,
                    signed_at=iso(now or datetime.now(UTC)))
        envelope = sign_link(link, seal_with.signer, seal_with.stamper)
        written = s3io.put_bytes(s3, bucket, link_key(incident_id, seq), envelope.to_bytes(),
                                 content_type="application/json", create_only=True, lock=lock)
        if written is not None:
            logger.info("custody link sealed", extra={"incident_id": incident_id, "seq": seq, "kind": kind,
                                                      "object_key": ref.key})
            return envelope
    raise CustodyError(f"could not append to the custody chain of {incident_id} after {SEAL_ATTEMPTS} attempts")


def seal_written(settings: Settings, s3: ObjectStore, incident_id: str, kind: str, key: str, version_id: str | None,
                 body: bytes, lock: tuple[str, datetime] | None) -> Envelope | None:
    """Seals what a signing function just wrote (`version_id`), or, when a create-only write found the key taken
    (None: a retry), the key's original version, whose bytes are then read back. None when signing is off."""
    seal_with = sealer(settings)
    if seal_with is None:
        return None
    bucket = settings.evidence_bucket
    if not version_id:
        version_id = original_version(s3, bucket, key)
        body = s3io.get_bytes(s3, bucket, key, version_id)
    ref = ObjectRef(bucket, key, version_id, sha256_hex(body), len(body))
    return seal(settings, s3, seal_with, incident_id, kind, ref, lock)


def original_version(s3: ObjectStore, bucket: str, key: str) -> str:
    versions = [v for v in s3io.list_all_versions(s3, bucket, key) if v[0] == key and not v[2]]
    if not versions:
        raise CustodyError(f"s3://{bucket}/{key} has no version to seal")
    return versions[-1][1]  # S3 lists a key's versions newest first


def _publish_key(settings: Settings, s3: ObjectStore, incident_id: str, public_key_der: bytes,
                 lock: tuple[str, datetime] | None) -> None:
    from freezeframe.custody.signatures import public_key_pem

    s3io.put_bytes(s3, settings.evidence_bucket, public_key_key(incident_id), public_key_pem(public_key_der),
                   content_type="application/x-pem-file", create_only=True, lock=lock)


def objects_named(results: Iterable[LinkResult]) -> list[tuple[Link, ObjectRef]]:
    return [(r.envelope.link, r.envelope.link.object) for r in results if r.envelope is not None and r.ok]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: object) -> bytes:
    if not isinstance(text, str):
        raise TypeError("expected base64 text")
    return base64.b64decode(text, validate=True)


def _int(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"expected an integer, got {value!r}")
    return value
