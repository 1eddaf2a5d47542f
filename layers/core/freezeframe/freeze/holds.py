"""Holds: the part of a freeze window whose segments are not uploaded yet.

A freeze writes its hold (create-only) BEFORE it lists the raw bucket, so every segment is either listed by the
freeze or announced on Kafka after the hold exists and locked by the segment indexer. A hold closes at window end
plus a grace period, or as soon as the incident is resolved. Holds live at `holds/<close date>/<incident>.json`,
so the indexer lists only the few dates a hold can still be open on.

Late segments are appended as manifest parts, `incidents/<id>/manifest-parts/<node>-<seq>.json`, each with the
manifest's shape (segments and root hash) and locked like the manifest.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from freezeframe.adapters import s3 as s3io
from freezeframe.adapters.s3 import ObjectStore
from freezeframe.contracts.config import Settings
from freezeframe.contracts.documents import Hold, ManifestPart
from freezeframe.contracts.errors import NotFoundError
from freezeframe.contracts.keys import follow_key, hold_key, holds_day_prefix, manifest_part_key, resolved_key
from freezeframe.contracts.models import FreezeRequest, ManifestEntry, SegmentRecord, iso
from freezeframe.custody.chain import seal_written
from freezeframe.custody.manifest import root_hash
from freezeframe.custody.pinned import pinned_parts
from freezeframe.freeze import legal_hold
from freezeframe.freeze.follow import FollowUp
from freezeframe.freeze.unverified import UnverifiedSegment, attach, metadata_problem, size_problem

logger = logging.getLogger(__name__)
# A hold closes at most MAX_WINDOW (2 days) + grace after it opens, so a few dates cover every open one.
OPEN_DAYS_AHEAD = 4




def hold_for(request: FreezeRequest, grace_s: int, now: datetime) -> Hold | None:
    """Pure: the hold a request needs, or None when its window (plus grace) is already over."""
    closes_at = request.window_end + timedelta(seconds=grace_s)
    if closes_at <= now:
        return None
    return Hold(request.incident_id, request.scope.cluster, request.scope.nodes, request.window_start_ns,
                request.window_end_ns, closes_at, request.lock)


def open_hold(settings: Settings, s3: ObjectStore, hold: Hold) -> None:
    s3io.put_json(s3, settings.evidence_bucket, hold_key(hold.incident_id, hold.closes_at), hold.to_dict(),
                  create_only=True)


def open_holds(settings: Settings, s3: ObjectStore, now: datetime) -> list[Hold]:
    holds = []
    for day in range(OPEN_DAYS_AHEAD + 1):
        prefix = holds_day_prefix(now + timedelta(days=day))
        for key in s3io.list_keys(s3, settings.evidence_bucket, prefix):
            hold = Hold.from_dict(s3io.get_json(s3, settings.evidence_bucket, key))
            if hold.closes_at > now and not s3io.exists(s3, settings.evidence_bucket, resolved_key(hold.incident_id)):
                holds.append(hold)
    return holds


def lock_late_segment(settings: Settings, s3: ObjectStore, hold: Hold, record: SegmentRecord) -> ManifestEntry | None:
    """Locks one late segment version in place under a hold and appends it as a manifest part (idempotent).

    A version another incident locked more strongly or for longer keeps that lock, recorded as the entry's
    `lock_outcome`; a concurrent locker is not an error (`adapters.s3.lock_at_least`). A version whose stored
    sha256 disagrees with its record (or whose size does) is locked all the same and appended as unverified
    (returns None): no segment of a hold is left unlocked or dead-lettered for what a retry cannot change."""
    head = s3io.head_version(s3, record.bucket, record.key, record.version_id, checksum=True)
    state = s3io.lock_at_least(s3, record.bucket, record.key, record.version_id, hold.lock.mode,
                               hold.lock.retain_until, s3io.lock_state(head))
    if hold.lock.legal_hold:
        legal_hold.place(settings, s3, hold.incident_id,
                         legal_hold.HeldVersion(record.bucket, record.key, record.version_id), datetime.now(UTC))
        state = s3io.LockState(state.mode, state.retain_until, True, state.outcome)
    metadata = head.get("Metadata", {})
    problem = metadata_problem(metadata, head.get("ChecksumSHA256")) or size_problem(
        record.stored_bytes, int(head.get("ContentLength", record.stored_bytes)))
    if problem is None and metadata.get("sha256") != record.sha256:
        problem = (f"the segment record's sha256 {record.sha256} does not match the object's metadata "
                   f"{metadata.get('sha256')}")
    entry: ManifestEntry | None = None
    unverified: list[UnverifiedSegment] = []
    if problem is None:
        entry = ManifestEntry(key=record.key, version_id=record.version_id, sha256=record.sha256,
                              size=record.stored_bytes, node=record.node, start_ns=record.start_ns,
                              end_ns=record.end_ns, seq=record.seq, packets=record.packets, lock_mode=str(state.mode),
                              retain_until=iso(state.retain_until) if state.retain_until else "",
                              legal_hold=state.legal_hold, lock_outcome=state.outcome)
    else:
        logger.warning("late segment locked but unverified", extra={"incident_id": hold.incident_id,
                                                                    "segment": record.key, "reason": problem})
        unverified.append(UnverifiedSegment(
            key=record.key, version_id=record.version_id, node=record.node, start_ns=record.start_ns,
            end_ns=record.end_ns, size=int(head.get("ContentLength", record.stored_bytes)), reason=problem,
            lock_mode=str(state.mode or ""), retain_until=iso(state.retain_until) if state.retain_until else "",
            legal_hold=state.legal_hold))
    entries = [entry] if entry is not None else []
    part = ManifestPart(incident_id=hold.incident_id, part_of=hold.incident_id, raw_bucket=record.bucket,
                        segments=tuple(entries), root_hash=root_hash(entries),
                        created_at=iso(datetime.now(UTC))).to_dict()
    attach(part, unverified)
    part_key = manifest_part_key(hold.incident_id, record.node, record.seq)
    written = s3io.put_json(s3, settings.evidence_bucket, part_key, part, create_only=True,
                            lock=(hold.lock.mode, hold.lock.retain_until))
    seal_written(settings, s3, hold.incident_id, "manifest-part", part_key, written, s3io.encode_json(part),
                 (hold.lock.mode, hold.lock.retain_until))
    logger.info("late segment locked", extra={"incident_id": hold.incident_id, "node": record.node,
                                              "segment": record.key, "lock_outcome": state.outcome})
    return entry


def index_segment(settings: Settings, s3: ObjectStore, record: SegmentRecord, holds: Iterable[Hold]) -> list[str]:
    """The incidents a newly announced segment was locked into."""
    locked = []
    for hold in holds:
        if hold.covers(record):
            lock_late_segment(settings, s3, hold, record)
            locked.append(hold.incident_id)
    return locked


def manifest_parts(settings: Settings, s3: ObjectStore, incident_id: str) -> list[dict[str, Any]]:
    """The incident's manifest parts at the versions its signed custody chain names (see custody.pinned)."""
    return pinned_parts(settings, s3, incident_id)


def read_follow(settings: Settings, s3: ObjectStore, incident_id: str) -> FollowUp | None:
    """What the last dissection pass said comes next (None before the first pass ends).

    Here rather than in finalize, which writes it, so the webhook can read it without the query stack."""
    try:
        raw = s3io.get_json(s3, settings.evidence_bucket, follow_key(incident_id))
    except NotFoundError:
        return None
    return FollowUp.from_dict(raw)
