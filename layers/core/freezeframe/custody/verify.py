"""Chain of custody: `freezeframe verify INCIDENT` re-checks a frozen incident against what S3 holds now.

For the manifest and every `manifest-parts/*.json`: the key has one version only (a second version is an altered
copy; a delete marker hides the original), the root hash recomputes, and the document itself is locked at least as
strongly as its request asked. For every segment the manifest lists: that exact version still exists, its bytes hash
to the recorded sha256, its lock is at least the requested (and the recorded) one and has not expired, and no newer
version or delete marker shadows it. When the manifest was altered, its original version is verified as well, so
the report shows whether the frozen evidence itself still holds.

Verification only reads: nothing here deletes, writes or re-locks. The S3 reads sit behind `EvidenceStore`, so the
decisions can be tested on an in-memory store.

Why verify does not read through `freezeframe.custody.incident.load_incident`, the one reader of an incident every
other consumer uses (dissect, finalize, report, export, the incident API, MCP, the CLI): that reader is pinned
(freezeframe.custody.pinned): it reads only the versions the signed chain names and raises CustodyError at the
first thing the chain does not vouch for. Verify has the opposite job: it lists every stored version of the
manifest, its parts and the chain's links, forged ones included (a second version, a part no link names, a delete
marker, a link with a bad signature), and reports each as a failed check instead of stopping at the first, and
without a chain it checks both the current and the original version. What it shares with the pinned reader is
shared as code, not as a read: the chain's checks are `freezeframe.custody.chain.check_links` (the pinned reader
refuses what they fail), and the document checks here (`document_checks`) are the ones export runs on what
load_incident read.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from botocore.exceptions import ClientError

from freezeframe.adapters import s3 as s3io
from freezeframe.adapters.s3 import ObjectStore
from freezeframe.contracts.config import Settings
from freezeframe.contracts.errors import CustodyError, FreezeframeError, NotFoundError, PayloadError
from freezeframe.contracts.keys import (
    chain_prefix,
    ledger_prefix,
    manifest_key,
    manifest_parts_prefix,
    public_key_key,
    report_key,
    summary_key,
)
from freezeframe.contracts.models import LockSpec, ManifestEntry, iso, parse_iso
from freezeframe.custody.chain import Trust, check_links
from freezeframe.custody.manifest import entries_of, root_hash
from freezeframe.custody.pinned import online_trust
from freezeframe.custody.signatures import fingerprint, load_public_key
from freezeframe.freeze import node_state
from freezeframe.freeze.k8s_context import ContextEntry, context_root_hash
from freezeframe.freeze.unverified import unverified_hash, unverified_of

logger = logging.getLogger(__name__)
VERIFY_WORKERS = 8
CHUNK_BYTES = 1 << 20
LOCK_STRENGTH = {"GOVERNANCE": 1, "COMPLIANCE": 2}
_GONE = {"404", "NoSuchKey", "NoSuchVersion", "NotFound", "405", "MethodNotAllowed"}  # 405: a delete marker's id


@dataclass(frozen=True, slots=True)
class Check:
    subject: str  # an evidence key, with "@<version_id>" when one version of it is meant
    name: str
    ok: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class VerifyReport:
    incident_id: str
    checks: tuple[Check, ...]
    # Versions the freeze locked but could not verify (freezeframe.freeze.unverified): shown, with their reasons; their
    # locks and the lists' hashes are checked like everything else.
    unverified: tuple[dict[str, Any], ...] = ()

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(check.ok for check in self.checks)

    @property
    def failures(self) -> tuple[Check, ...]:
        return tuple(check for check in self.checks if not check.ok)

    def to_dict(self) -> dict[str, Any]:
        return {"incident_id": self.incident_id, "ok": self.ok, "checked": len(self.checks),
                "unverified": list(self.unverified),
                "failures": [check.to_dict() for check in self.failures],
                "checks": [check.to_dict() for check in self.checks]}


@dataclass(frozen=True, slots=True)
class StoredVersion:
    key: str
    version_id: str
    is_latest: bool
    delete_marker: bool


class EvidenceStore(Protocol):
    """The reads verification needs. `versions` lists every version and delete marker under a prefix; the
    versions (not the markers) of one key come newest first, as S3 lists them."""

    def versions(self, bucket: str, prefix: str) -> list[StoredVersion]: ...
    def head(self, bucket: str, key: str, version_id: str) -> Mapping[str, Any] | None: ...
    def read(self, bucket: str, key: str, version_id: str) -> bytes: ...
    def digest(self, bucket: str, key: str, version_id: str) -> tuple[str, int] | None: ...


class S3Store:
    """EvidenceStore on an S3 client. Lock state comes from head_object (moto answers get_object_retention with a
    500; LocalStack and AWS answer both)."""

    def __init__(self, s3: ObjectStore) -> None:
        self.s3 = s3

    def versions(self, bucket: str, prefix: str) -> list[StoredVersion]:
        return [StoredVersion(entry.key, entry.version_id, entry.is_latest, entry.delete_marker)
                for entry in s3io.list_version_entries(self.s3, bucket, prefix)]

    def head(self, bucket: str, key: str, version_id: str) -> Mapping[str, Any] | None:
        try:
            return s3io.head_version(self.s3, bucket, key, version_id)
        except ClientError as exc:
            if _error_code(exc) in _GONE:
                return None
            raise

    def read(self, bucket: str, key: str, version_id: str) -> bytes:
        return s3io.get_bytes(self.s3, bucket, key, version_id)

    def digest(self, bucket: str, key: str, version_id: str) -> tuple[str, int] | None:
        """sha256 and size of one version's stored bytes, streamed in chunks (segments can be large)."""
        try:
            body = s3io.open_version(self.s3, bucket, key, version_id)
        except ClientError as exc:
            if _error_code(exc) in _GONE:
                return None
            raise
        sha, size = hashlib.sha256(), 0
        try:
            for chunk in body.iter_chunks(CHUNK_BYTES):
                sha.update(chunk)
                size += len(chunk)
        finally:
            body.close()
        return sha.hexdigest(), size


def verify_incident(settings: Settings, s3: ObjectStore, incident_id: str, now: datetime | None = None,
                    trust: Trust | None = None) -> VerifyReport:
    """Verify one incident on S3. Raises NotFoundError when the incident has no manifest at all. `trust`: the
    signing key and time-stamping roots to check against (default: the configured KMS key and TSA roots)."""
    report = check_incident(S3Store(s3), settings, incident_id, now, trust or online_trust(settings))
    logger.info("incident verified", extra={"incident_id": incident_id, "checks": len(report.checks),
                                            "failures": len(report.failures)})
    return report


def check_incident(store: EvidenceStore, settings: Settings, incident_id: str,
                   now: datetime | None = None, trust: Trust | None = None) -> VerifyReport:
    """With a custody chain, only the document versions its valid links name are evidence: any other version, or
    a part no link names, fails and contributes no segment. Without one (an unsigned deployment), the chain check
    fails and the documents are checked at their current and original versions."""
    now = now or datetime.now(UTC)
    bucket = settings.evidence_bucket
    key = manifest_key(incident_id)
    by_key = _group(store.versions(bucket, key))
    if key not in by_key:
        raise NotFoundError(f"incident {incident_id} has no manifest at s3://{bucket}/{key}")

    checks: list[Check] = []
    named = _chain_checks(store, settings, incident_id, trust or Trust(None, "no trust given"), checks)
    claims: dict[tuple[str, ManifestEntry], list[LockSpec | None]] = {}
    main_lock: LockSpec | None = None
    for subject, version_id in _pinned_documents(key, by_key[key], named, checks):
        lock, listed = _check_document(store, bucket, subject, key, version_id, incident_id, None, settings, now,
                                       checks, is_part=False)
        main_lock = stronger(main_lock, lock)  # an altered copy cannot weaken what the original asked
        for claim, required in listed:
            claims.setdefault(claim, []).append(required)
        for claim in _context_claims(store, bucket, subject, key, version_id, checks):
            claims.setdefault(claim, []).append(lock)
        for claim in _node_state_claims(store, bucket, subject, key, version_id, settings.raw_bucket, checks):
            claims.setdefault(claim, []).append(lock)

    parts_prefix = manifest_parts_prefix(incident_id)
    for part_key, versions in sorted(_group(store.versions(bucket, parts_prefix)).items()):
        # Every key under the prefix, whatever its name: readers used to take what verify skipped.
        for subject, version_id in _pinned_documents(part_key, versions, named, checks):
            own, listed = _check_document(store, bucket, subject, part_key, version_id, incident_id, main_lock,
                                          settings, now, checks, is_part=True)
            for claim, required in listed:
                # A part cannot lower the bar: its own request's lock counts only where it is stronger.
                claims.setdefault(claim, []).append(stronger(required, main_lock))

    if named is not None:
        # The other signed documents (summary, report, ledger entries): a version no link names was written by
        # someone without signing authority.
        for prefix in (summary_key(incident_id), report_key(incident_id), ledger_prefix(incident_id)):
            for doc_key, versions in sorted(_group(store.versions(bucket, prefix)).items()):
                checks.extend(_unnamed_versions(doc_key, versions, named))

    with ThreadPoolExecutor(max_workers=VERIFY_WORKERS) as pool:
        results = pool.map(lambda item: check_segment(store, item[0][0], item[0][1], _strongest(item[1]), now),
                           sorted(claims.items(), key=lambda item: (item[0][1].key, item[0][1].version_id)))
        for segment_checks in results:
            checks.extend(segment_checks)
    unverified = unverified_checks(store, settings, incident_id, now, checks)
    return VerifyReport(incident_id, tuple(checks), tuple(unverified))


def _chain_checks(store: EvidenceStore, settings: Settings, incident_id: str, trust: Trust,
                  checks: list[Check]) -> dict[str, set[str]] | None:
    """The chain's own checks (each link's single version, signature, predecessor, timestamp) and, for every valid
    link, that the object version it names still hashes to what it signed. Returns key -> the versions valid links
    name, or None when the incident has no chain at all."""
    bucket = settings.evidence_bucket
    grouped = _group(store.versions(bucket, chain_prefix(incident_id)))
    if not grouped:
        checks.append(Check(chain_prefix(incident_id), "chain", False,
                            "no signed custody chain: nothing vouches for the documents (frozen without a signing "
                            "key, or the chain was never written)"))
        return None
    stored: list[tuple[str, bytes]] = []
    for link_key_, versions in sorted(grouped.items()):
        checks.append(version_list_check(link_key_, versions))
        real = [v for v in versions if not v.delete_marker]
        if real:
            stored.append((link_key_, store.read(bucket, link_key_, real[-1].version_id)))
    checks.extend(_published_key_checks(store, bucket, incident_id, trust))
    named: dict[str, set[str]] = {}
    for result in check_links(incident_id, stored, trust):
        checks.extend(Check(p.subject, p.name, False, p.detail) for p in result.problems)
        if not result.ok or result.envelope is None:
            continue
        link = result.envelope.link
        ref = link.object
        checks.append(Check(result.subject, "signature", True,
                            f"{link.kind} {ref.key}@{ref.version_id} signed by {trust.source} "
                            f"({link.signed_by}), time-stamped {iso(result.stamped_at) if result.stamped_at else '-'}"))
        subject = f"{ref.key}@{ref.version_id}"
        digest = store.digest(ref.bucket, ref.key, ref.version_id)
        if digest is None:
            checks.append(Check(subject, "signed", False, f"deleted: the version link {link.seq} names is gone"))
        else:
            content = content_check(subject, ref.sha256, ref.size, *digest)
            checks.append(Check(subject, "signed", content.ok, content.detail))
        if ref.bucket == bucket:
            named.setdefault(ref.key, set()).add(ref.version_id)
    return named


def _published_key_checks(store: EvidenceStore, bucket: str, incident_id: str, trust: Trust) -> list[Check]:
    """The public key published beside the evidence is the one the chain verifies under, in its only version."""
    key = public_key_key(incident_id)
    versions = _group(store.versions(bucket, key)).get(key, [])
    real = [v for v in versions if not v.delete_marker]
    if not real or trust.public_key_der is None:
        return [Check(key, "public_key", False, "no public key published beside the evidence")] if not real else []
    checks = [version_list_check(key, versions)]
    try:
        published = fingerprint(load_public_key(store.read(bucket, key, real[-1].version_id)))
    except CustodyError as exc:
        return [*checks, Check(key, "public_key", False, str(exc))]
    trusted = fingerprint(trust.public_key_der)
    checks.append(Check(key, "public_key", published == trusted,
                        f"sha256 {published}" + ("" if published == trusted else f", the trusted key is {trusted}")))
    return checks


def _unnamed_versions(key: str, versions: Sequence[StoredVersion], named: dict[str, set[str]]) -> list[Check]:
    pinned = named.get(key, set())
    return [Check(f"{key}@{v.version_id}", "chain", False,
                  "not named by the signed custody chain: written by someone without signing authority")
            for v in versions if not v.delete_marker and v.version_id not in pinned]


def _pinned_documents(key: str, versions: Sequence[StoredVersion], named: dict[str, set[str]] | None,
                      checks: list[Check]) -> list[tuple[str, str]]:
    """The versions of a manifest or part key to verify: those the chain names; without a chain, the current and
    the original ones. A key or version the chain does not name is reported, and is not evidence."""
    if named is None:
        return _documents(key, versions, checks)
    checks.append(version_list_check(key, versions))
    real = [v.version_id for v in versions if not v.delete_marker]
    pinned = named.get(key, set())
    if not pinned & set(real):
        checks.append(Check(key, "chain", False,
                            f"not named by the signed custody chain: no function with signing authority wrote "
                            f"{'it' if len(real) < 2 else 'any of its ' + str(len(real)) + ' versions'}; "
                            f"what it lists is not evidence"))
        return []
    return [(key if version_id == real[0] else f"{key}@{version_id}", version_id)
            for version_id in real if version_id in pinned]


def _context_claims(store: EvidenceStore, bucket: str, subject: str, key: str, version_id: str,
                    checks: list[Check]) -> list[tuple[str, ManifestEntry]]:
    """The manifest's Kubernetes context snapshots, checked like segments, and their own root hash."""
    try:
        document = json.loads(store.read(bucket, key, version_id))
        raw = document.get("k8s_context") if isinstance(document, dict) else None
        if raw is None:
            return []  # a manifest written before the context was preserved
        context = [ContextEntry(**item) for item in raw]
    except (ValueError, TypeError) as exc:
        checks.append(Check(subject, "k8s_context", False, f"unreadable k8s_context: {exc}"))
        return []
    recomputed, recorded = context_root_hash(context), document.get("k8s_root_hash")
    checks.append(Check(subject, "k8s_root_hash", recomputed == recorded,
                        f"recomputed {recomputed}" if recomputed == recorded
                        else f"recomputed {recomputed}, the manifest records {recorded}"))
    return [(c.bucket, ManifestEntry(key=c.key, version_id=c.version_id, sha256=c.sha256, size=c.size, node=c.node,
                                     start_ns=0, end_ns=0, seq=None, packets=None, lock_mode=c.lock_mode,
                                     retain_until=c.retain_until, legal_hold=False)) for c in context]


def _node_state_claims(store: EvidenceStore, bucket: str, subject: str, key: str, version_id: str,
                       raw_bucket: str, checks: list[Check]) -> list[tuple[str, ManifestEntry]]:
    """The manifest's node-state documents (freezeframe.freeze.node_state), checked like segments, and their root
    hash."""
    try:
        document = json.loads(store.read(bucket, key, version_id))
        if not isinstance(document, dict) or document.get("node_state") is None:
            return []  # a manifest written before node state was recorded
        entries = node_state.entries_of(document)
    except (ValueError, FreezeframeError) as exc:
        checks.append(Check(subject, "node_state", False, f"unreadable node_state: {exc}"))
        return []
    recomputed, recorded = node_state.root_hash(entries), document.get("node_state_root_hash")
    checks.append(Check(subject, "node_state_root_hash", recomputed == recorded,
                        f"recomputed {recomputed}" if recomputed == recorded
                        else f"recomputed {recomputed}, the manifest records {recorded}"))
    document_bucket = str(document.get("raw_bucket") or raw_bucket)
    return [(document_bucket, entry.as_manifest_entry()) for entry in entries]


def check_segment(store: EvidenceStore, bucket: str, entry: ManifestEntry, requested: LockSpec | None,
                  now: datetime) -> list[Check]:
    """One listed segment version: present, unchanged, locked, not shadowed."""
    subject = f"{entry.key}@{entry.version_id}"
    versions = _group(store.versions(bucket, entry.key)).get(entry.key, [])
    head = store.head(bucket, entry.key, entry.version_id)
    if head is None:
        return [Check(subject, "version", False,
                      f"deleted: version {entry.version_id} of s3://{bucket}/{entry.key} no longer exists"),
                shadow_check(subject, entry.version_id, versions)]
    checks = [Check(subject, "version", True, f"version {entry.version_id} exists")]
    digest = store.digest(bucket, entry.key, entry.version_id)
    if digest is None:
        checks.append(Check(subject, "sha256", False, "deleted: the version vanished while being read"))
    else:
        checks.append(content_check(subject, entry.sha256, entry.size, *digest))
    checks.append(lock_check(subject, s3io.lock_state(head), stronger(requested, recorded_lock(entry)), now))
    checks.append(shadow_check(subject, entry.version_id, versions))
    return checks


def content_check(subject: str, expected_sha256: str, expected_size: int, sha256: str, size: int) -> Check:
    if sha256 != expected_sha256:
        return Check(subject, "sha256", False, f"stored bytes hash to {sha256}, the manifest records {expected_sha256}")
    if size != expected_size:
        return Check(subject, "sha256", False, f"stored size {size} bytes, the manifest records {expected_size}")
    return Check(subject, "sha256", True, f"sha256 {sha256} over {size} bytes")


def shadow_check(subject: str, version_id: str, versions: Sequence[StoredVersion]) -> Check:
    """A newer version or a delete marker under a frozen key is tampering evidence even though the frozen version
    itself is intact: readers without a version id now see something else."""
    real = [v for v in versions if not v.delete_marker]
    markers = [v for v in versions if v.delete_marker]
    ids = [v.version_id for v in real]
    newer = ids[:ids.index(version_id)] if version_id in ids else []
    problems = []
    if newer:
        problems.append(f"shadowed by {len(newer)} newer version(s), latest {newer[0]}")
    if markers:
        problems.append(f"{len(markers)} delete marker(s), latest {markers[0].version_id}")
    if problems:
        return Check(subject, "latest", False, "; ".join(problems))
    if version_id not in ids:
        return Check(subject, "latest", True, "no other version under the key")  # "version" reports the loss
    return Check(subject, "latest", True, "the frozen version is the latest")


def lock_strength(mode: str | None) -> int:
    """0 unlocked, 1 GOVERNANCE, 2 COMPLIANCE: a stronger mode satisfies a weaker request."""
    return LOCK_STRENGTH.get(mode or "", 0)


def stronger(first: LockSpec | None, second: LockSpec | None) -> LockSpec | None:
    if first is None or second is None:
        return first or second
    mode = first.mode if lock_strength(first.mode) >= lock_strength(second.mode) else second.mode
    return LockSpec(mode, max(first.retain_until, second.retain_until), first.legal_hold or second.legal_hold)


def recorded_lock(entry: ManifestEntry) -> LockSpec | None:
    """The lock the manifest says the version had when frozen; locks never get shorter, so it is a requirement too."""
    if entry.lock_mode not in LOCK_STRENGTH or not entry.retain_until:
        return None
    try:
        until = parse_iso(entry.retain_until, "retain_until")
    except PayloadError:
        return None
    return LockSpec(entry.lock_mode, until, entry.legal_hold)


def lock_check(subject: str, actual: s3io.LockState, required: LockSpec | None, now: datetime) -> Check:
    """S3 keeps retain-until to the second, so the requirement is compared at that precision."""
    have = f"{actual.mode or 'unlocked'}" + (f" until {iso(actual.retain_until)}" if actual.retain_until else "")
    if required is None:
        return Check(subject, "lock", False, f"{have}; no requested lock to compare with")
    want_until = required.retain_until.replace(microsecond=0)
    problems = []
    if lock_strength(actual.mode) < lock_strength(required.mode):
        problems.append(f"mode {actual.mode or 'none'} is weaker than {required.mode}")
    if actual.retain_until is None or actual.retain_until < want_until:
        problems.append(f"retain-until is before {iso(want_until)}")
    elif actual.retain_until <= now:
        problems.append(f"expired at {iso(actual.retain_until)}")
    if required.legal_hold and not actual.legal_hold:
        problems.append("legal hold recorded ON, now OFF")
    if problems:
        return Check(subject, "lock", False, f"{have}: " + "; ".join(problems))
    return Check(subject, "lock", True, f"{have}, requires {required.mode} until {iso(want_until)}")


def document_checks(subject: str, body: bytes, incident_id: str, *, is_part: bool = False
                    ) -> tuple[list[Check], list[ManifestEntry], LockSpec | None, str | None]:
    """Pure: a manifest (or part) document's own checks, its entries, its request's lock and its raw bucket.
    A part need not name its incident or carry the request (the manifest's requested lock then applies)."""
    try:
        document = json.loads(body)
        if not isinstance(document, dict) or not isinstance(document.get("segments"), list):
            raise PayloadError("not a manifest: no 'segments' list")
        entries = entries_of(document)
    except (ValueError, PayloadError) as exc:
        return [Check(subject, "readable", False, f"unreadable manifest: {exc}")], [], None, None
    checks = [Check(subject, "readable", True, f"{len(entries)} segment(s) listed")]
    if (not is_part or "incident_id" in document) and document.get("incident_id") != incident_id:
        checks.append(Check(subject, "incident_id", False,
                            f"names incident {document.get('incident_id')!r}, expected {incident_id!r}"))
    recomputed, recorded = root_hash(entries), document.get("root_hash")
    checks.append(Check(subject, "root_hash", recomputed == recorded,
                        f"recomputed {recomputed}" if recomputed == recorded
                        else f"recomputed {recomputed}, the manifest records {recorded}"))
    lock: LockSpec | None = None
    request = document.get("request")
    if isinstance(request, dict) and isinstance(request.get("lock"), dict):
        try:
            # Freeze never applies the request's legal hold, so only mode and retain-until are required.
            spec = LockSpec.from_dict(request["lock"])
            lock = LockSpec(spec.mode, spec.retain_until)
        except PayloadError as exc:
            checks.append(Check(subject, "request", False, f"unreadable requested lock: {exc}"))
    raw_bucket = document.get("raw_bucket")
    return checks, entries, lock, raw_bucket if isinstance(raw_bucket, str) and raw_bucket else None


def version_list_check(subject: str, versions: Sequence[StoredVersion]) -> Check:
    """Freeze writes a manifest create-only, once: any second version or delete marker means it was replaced."""
    real = [v for v in versions if not v.delete_marker]
    markers = [v for v in versions if v.delete_marker]
    if len(real) == 1 and not markers:
        return Check(subject, "versions", True, f"one version, {real[0].version_id}")
    problems = []
    if len(real) > 1:
        current = f"the current {real[0].version_id}" if real[0].is_latest else "the newest"
        problems.append(f"{len(real)} versions: {current} is not the original {real[-1].version_id}")
    if markers:
        hides = ", the current one hides the document" if any(m.is_latest for m in markers) else ""
        problems.append(f"{len(markers)} delete marker(s){hides}")
    return Check(subject, "versions", False, "; ".join(problems))


def format_report(report: VerifyReport) -> str:
    subjects = {check.subject for check in report.checks}
    notes = [f"  {len(report.unverified)} segment(s) locked but unverified (left out of the tables):"]
    notes += [f"    {item['key']}@{item['version_id']} ({item['node']}): {item['reason']}"
              for item in report.unverified]
    if report.ok:
        head = f"incident {report.incident_id}: OK ({len(report.checks)} checks on {len(subjects)} objects)"
        return "\n".join([head, *notes]) if report.unverified else head
    lines = [f"incident {report.incident_id}: FAILED ({len(report.failures)} of {len(report.checks)} checks "
             f"failed on {len(subjects)} objects)"]
    lines.extend(f"  {check.subject}: {check.name}: {check.detail}" for check in report.failures)
    if report.unverified:
        lines += notes
    return "\n".join(lines)


def _documents(key: str, versions: Sequence[StoredVersion], checks: list[Check]) -> list[tuple[str, str]]:
    """The versions of a manifest key to verify: the current one, and the original when they differ."""
    checks.append(version_list_check(key, versions))
    real = [v for v in versions if not v.delete_marker]
    if not real:
        return []
    current = real[0] if real[0].is_latest else None
    original = real[-1]
    chosen = [] if current is None else [(key, current.version_id)]
    if current is None or current.version_id != original.version_id:
        chosen.append((f"{key}@{original.version_id}", original.version_id))
    return chosen


def _check_document(store: EvidenceStore, bucket: str, subject: str, key: str, version_id: str,
                    incident_id: str, main_lock: LockSpec | None, settings: Settings, now: datetime,
                    checks: list[Check], *, is_part: bool
                    ) -> tuple[LockSpec | None, list[tuple[tuple[str, ManifestEntry], LockSpec | None]]]:
    """A part without a request of its own is held to the manifest's requested lock (`main_lock`)."""
    own, entries, lock, raw_bucket = document_checks(subject, store.read(bucket, key, version_id), incident_id,
                                                     is_part=is_part)
    checks.extend(own)
    head = store.head(bucket, key, version_id)
    if head is None:
        checks.append(Check(subject, "lock", False, f"deleted: version {version_id} vanished while being verified"))
    else:
        checks.append(lock_check(subject, s3io.lock_state(head), lock or main_lock, now))
    segment_bucket = raw_bucket or settings.raw_bucket
    return lock, [((segment_bucket, entry), lock or main_lock) for entry in entries]


def _strongest(locks: Iterable[LockSpec | None]) -> LockSpec | None:
    result: LockSpec | None = None
    for lock in locks:
        result = stronger(result, lock)
    return result


def _group(versions: Iterable[StoredVersion]) -> dict[str, list[StoredVersion]]:
    grouped: dict[str, list[StoredVersion]] = {}
    for version in versions:
        grouped.setdefault(version.key, []).append(version)
    return grouped


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "")) or str(
        exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))


def unverified_checks(store: EvidenceStore, settings: Settings, incident_id: str, now: datetime,
                      checks: list[Check]) -> list[dict[str, Any]]:
    """The unverified lists of the manifest and its parts (latest versions): each list's hash recomputes, and each
    listed version still exists and holds at least the lock it recorded. Returns the records, for the report."""
    bucket = settings.evidence_bucket
    found: list[dict[str, Any]] = []
    keys = [manifest_key(incident_id)] + sorted(
        k for k, versions in _group(store.versions(bucket, manifest_parts_prefix(incident_id))).items()
        if k.endswith(".json") and any(v.is_latest and not v.delete_marker for v in versions))
    for key in keys:
        latest = [v for v in store.versions(bucket, key) if v.key == key and v.is_latest and not v.delete_marker]
        if not latest:
            continue
        try:
            document = json.loads(store.read(bucket, key, latest[0].version_id))
            items = unverified_of(document)
        except (ValueError, PayloadError) as exc:
            checks.append(Check(key, "unverified", False, f"unreadable unverified list: {exc}"))
            continue
        if "unverified_hash" in document:
            recomputed = unverified_hash(items)
            checks.append(Check(key, "unverified_hash", recomputed == document["unverified_hash"],
                                f"recomputed {recomputed}, the document records {document['unverified_hash']}"))
        raw_bucket = document.get("raw_bucket") or settings.raw_bucket
        for item in items:
            subject = f"{item.key}@{item.version_id}"
            head = store.head(raw_bucket, item.key, item.version_id)
            if head is None:
                checks.append(Check(subject, "version", False, "the unverified version no longer exists"))
            else:
                recorded = (LockSpec(item.lock_mode, parse_iso(item.retain_until, "retain_until"))
                            if item.lock_mode in LOCK_STRENGTH and item.retain_until else None)
                checks.append(lock_check(subject, s3io.lock_state(head), recorded, now))
            found.append(item.to_dict())
    return found
