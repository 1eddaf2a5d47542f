"""The freeze: find the segment versions overlapping a request's window, lock them in place, write the manifest."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from freezeframe import k8s_context, legal_hold, node_state, postback, segment_index
from freezeframe.adapters import s3 as s3io
from freezeframe.adapters.s3 import ObjectStore
from freezeframe.config import Settings
from freezeframe.consolidate import consolidate
from freezeframe.custody.chain import seal_written
from freezeframe.errors import NotFoundError
from freezeframe.holds import hold_for, open_hold
from freezeframe.keys import check_name, hour_prefixes, manifest_key, parse_raw_segment_key
from freezeframe.manifest import build_manifest, entries_of
from freezeframe.models import FreezeRequest, ManifestEntry, SegmentRecord, iso
from freezeframe.unverified import UnverifiedSegment, attach, metadata_problem, size_problem, unverified_of

logger = logging.getLogger(__name__)
LOCK_WORKERS = 16
LIST_WORKERS = 4


@dataclass(frozen=True, slots=True)
class Candidate:
    key: str
    version_id: str
    size: int
    node: str
    start_ns: int
    end_ns: int


@dataclass(frozen=True, slots=True)
class FreezeResult:
    incident_id: str
    manifest_key: str
    segments: int
    nodes: tuple[str, ...]
    created: bool  # False when a retry found the manifest already written
    hold_open: bool = False  # segments uploaded later are still being locked: dissection follows the hold
    unverified: int = 0  # versions locked but left out of the entries (see freezeframe.unverified)


def select_segments(request: FreezeRequest, versions: Iterable[s3io.ObjectVersion],
                    nodes: tuple[str, ...] | None = None) -> list[Candidate]:
    """Pure: the versions whose key is a raw segment of the scope's cluster and nodes (the request's, or `nodes`
    when a namespace/pod scope was resolved to nodes) overlapping the window."""
    nodes = request.scope.nodes if nodes is None else nodes
    chosen = []
    for version in versions:
        parsed = parse_raw_segment_key(version.key)
        if parsed is None or parsed.cluster != request.scope.cluster or (nodes and parsed.node not in nodes):
            continue
        if parsed.start_ns <= request.window_end_ns and parsed.end_ns >= request.window_start_ns:
            chosen.append(Candidate(version.key, version.version_id, version.size, parsed.node, parsed.start_ns,
                                    parsed.end_ns))
    return sorted(chosen, key=lambda c: (c.node, c.start_ns))


def freeze(settings: Settings, s3: ObjectStore, request: FreezeRequest, now: datetime | None = None) -> FreezeResult:
    key = manifest_key(request.incident_id)
    hold = hold_for(request, settings.hold_grace_s, now or datetime.now(UTC))
    locks: list[Future[ManifestEntry | UnverifiedSegment | None]] = []
    submitted = threading.Lock()
    with ThreadPoolExecutor(max_workers=4) as aux, ThreadPoolExecutor(max_workers=LIST_WORKERS) as listers, \
            ThreadPoolExecutor(max_workers=LOCK_WORKERS) as lockers:
        # Every read a freeze needs starts at once and overlaps: the manifest check, the segment index, the
        # Kubernetes context and the listing; each listed page's segments are locked while the next page is fetched.
        # A freeze then costs about its PutObjectRetention calls, not their sum plus a chain of round trips.
        existing_future = aux.submit(_existing_manifest, settings, s3, key)
        if hold is not None or request.lock.legal_hold:
            # A retry must not open a second hold or add legal-hold references: settle the retry question first.
            # Without either, re-applying the same retention to a version a finished freeze locked changes nothing,
            # so the check runs alongside.
            existing = existing_future.result()
            if existing is not None:
                _seal_manifest(settings, s3, request, None, b"")
                return _already_frozen(request, key, existing)
        if hold is not None:
            # The hold goes before the listing: a segment uploaded after it is then caught by the segment indexer.
            open_hold(settings, s3, hold)

        def read_context() -> Future[list[k8s_context.ContextObject]]:
            return aux.submit(k8s_context.read_window, settings, s3, request.scope.cluster, request.window_start_ns,
                              request.window_end_ns)

        # The listing goes out first: the first lock waits for its first page (and the manifest check), while the
        # segment index is needed only once a version is locked and the Kubernetes context only at the end, unless
        # a namespace/pod scope needs the context to find its nodes.
        objects_future = read_context() if _needs_context(request) else None
        nodes = scope_nodes(request, objects_future)
        index_future: Future[tuple[dict[tuple[str, str], SegmentRecord], list[dict[str, Any]]]] = Future()
        prefixes = hour_prefixes(request.scope.cluster, request.window_start_ns, request.window_end_ns)
        if nodes:
            # A scope that names (or resolves to) nodes lists only their folders, not every node's segments.
            prefixes = [f"{prefix}{check_name('node', node)}/" for prefix in prefixes for node in nodes]

        def lock(candidate: Candidate) -> ManifestEntry | UnverifiedSegment | None:
            # A lock never waits for the manifest check: re-applying a finished freeze's own retention changes
            # nothing (and a hold or legal hold was settled above), so only once the check has answered does a
            # retry of a finished freeze skip the rest.
            if existing_future.done() and existing_future.result() is not None:
                return None
            return _lock_one(settings, s3, request, candidate,
                             lambda: index_future.result()[0].get((candidate.key, candidate.version_id)))

        def list_and_lock(prefix: str) -> None:
            for version in s3io.list_versions(s3, settings.raw_bucket, prefix):
                for candidate in select_segments(request, [version], nodes):
                    future = lockers.submit(lock, candidate)
                    with submitted:
                        locks.append(future)

        listed = listers.map(list_and_lock, prefixes)
        _forward(aux.submit(segment_index.load, settings, s3, request.scope.cluster, request.window_start_ns,
                            request.window_end_ns, nodes), index_future)
        context_objects = objects_future or read_context()
        existing = existing_future.result()
        if existing is not None:
            list(listed)
            for future in locks:
                future.result()  # the locks already under way; the rest return at once (see lock())
            _seal_manifest(settings, s3, request, None, b"")
            return _already_frozen(request, key, existing)
        # The context of every node, not only the scope's: the peers of the frozen traffic run elsewhere, and their
        # IPs must resolve to pods too.
        context_future = aux.submit(lambda: k8s_context.preserve(settings, s3, request.incident_id,
                                                                 context_objects.result(), request.lock.mode,
                                                                 request.lock.retain_until))
        # Node state is locked beside the segments, and a node that has only node state still gets dissected.
        node_state_future = aux.submit(node_state.freeze_node_state, settings, s3, request, nodes)
        list(listed)
        locked = [future.result() for future in locks]
        entries = [entry for entry in locked if isinstance(entry, ManifestEntry)]
        unverified = [entry for entry in locked if isinstance(entry, UnverifiedSegment)]
        _, gap_records = index_future.result()
        context = context_future.result()
        state_entries = node_state_future.result()
    manifest = build_manifest(request, entries, now or datetime.now(UTC), settings.raw_bucket,
                              [g for g in gap_records if not nodes or g.get("node") in nodes])
    manifest["hold"] = hold.to_dict() if hold else None
    attach(manifest, unverified)
    for item in unverified:
        manifest["coverage"].setdefault(item.node, {}).setdefault("unverified", []).append(
            {"key": item.key, "version_id": item.version_id, "start_ns": item.start_ns, "end_ns": item.end_ns,
             "reason": item.reason})
    manifest["scope_nodes"] = list(nodes)  # empty: every node of the cluster
    if settings.consolidate:
        manifest["consolidated"] = consolidate(settings, s3, request, entries)
    manifest["k8s_context"] = [entry.to_dict() for entry in context]
    manifest["k8s_root_hash"] = k8s_context.context_root_hash(context)
    manifest["node_state"] = [entry.to_dict() for entry in state_entries]
    manifest["node_state_root_hash"] = node_state.root_hash(state_entries)
    written = s3io.put_json(s3, settings.evidence_bucket, key, manifest, create_only=True,
                            lock=(request.lock.mode, request.lock.retain_until))
    _seal_manifest(settings, s3, request, written, s3io.encode_json(manifest))
    logger.info("manifest written", extra={"incident_id": request.incident_id, "segments": len(entries),
                                           "manifest_created": written is not None})
    if written is not None:  # a retried freeze does not post twice
        postback.after_freeze(settings, manifest)
    return FreezeResult(request.incident_id, key, len(entries),
                        tuple(sorted({e.node for e in entries} | {u.node for u in unverified}
                                     | {s.node for s in state_entries})),
                        created=written is not None, hold_open=hold is not None, unverified=len(unverified))


def _seal_manifest(settings: Settings, s3: ObjectStore, request: FreezeRequest, version_id: str | None,
                   body: bytes) -> None:
    """Signs the manifest into the incident's custody chain; a retry (version_id None) seals the original version,
    so a freeze that died between the write and the seal is completed by its retry."""
    seal_written(settings, s3, request.incident_id, "manifest", manifest_key(request.incident_id), version_id, body,
                 (request.lock.mode, request.lock.retain_until))


def _existing_manifest(settings: Settings, s3: ObjectStore, key: str) -> dict[str, Any] | None:
    try:
        return s3io.get_json(s3, settings.evidence_bucket, key)
    except NotFoundError:
        return None


def _already_frozen(request: FreezeRequest, key: str, existing: dict[str, Any]) -> FreezeResult:
    """A retry of a freeze whose manifest is already written: its result, unchanged."""
    unverified = unverified_of(existing)
    nodes = tuple(sorted({entry.node for entry in entries_of(existing)} | {u.node for u in unverified}
                         | {s.node for s in node_state.entries_of(existing)}))
    return FreezeResult(request.incident_id, key, len(existing["segments"]), nodes, created=False,
                        hold_open=bool(existing.get("hold")), unverified=len(unverified))


def _needs_context(request: FreezeRequest) -> bool:
    """Whether the scope's nodes come from the Kubernetes context: a namespace/pod scope that names no nodes."""
    scope = request.scope
    return not scope.nodes and bool(scope.namespaces or scope.pods)


def _forward(source: Future[Any], target: Future[Any]) -> None:
    """Completes `target` with `source`'s result or exception once `source` is done."""
    def done(finished: Future[Any]) -> None:
        error = finished.exception()
        if error is not None:
            target.set_exception(error)
        else:
            target.set_result(finished.result())

    source.add_done_callback(done)


def scope_nodes(request: FreezeRequest, context: Future[list[k8s_context.ContextObject]] | None) -> tuple[str, ...]:
    """The nodes to freeze: the scope's own, or, for a namespace/pod scope, the nodes where those pods ran according
    to the Kubernetes context; empty (every node) when nothing narrows it, because over-freezing loses nothing."""
    scope = request.scope
    if not _needs_context(request) or context is None:
        return scope.nodes
    resolved = k8s_context.nodes_in(k8s_context.records_of(context.result()), scope.namespaces, scope.pods)
    if not resolved:
        logger.warning("namespace/pod scope not found in the Kubernetes context; freezing every node",
                       extra={"incident_id": request.incident_id})
    return tuple(sorted(resolved))


def _lock_one(settings: Settings, s3: ObjectStore, request: FreezeRequest, candidate: Candidate,
              record_of: Callable[[], SegmentRecord | None]) -> ManifestEntry | UnverifiedSegment:
    """Locks one version and returns its manifest entry, or its unverified record when its integrity cannot be
    established (it is locked all the same: locking preserves evidence). The retention goes first, without reading
    the version: the endpoint itself refuses a retention that would shorten or weaken an existing lock, and only such
    a refusal takes the HEAD path, which keeps the stronger lock. The segment's sha256, seq and counts come from the
    segment index (`record_of` waits for it, so the lock never does), or from the version's metadata when it is not
    indexed.
    """
    held = legal_hold.HeldVersion(settings.raw_bucket, candidate.key, candidate.version_id)
    state: s3io.LockState | None = None
    if s3io.try_put_retention(s3, settings.raw_bucket, candidate.key, candidate.version_id, request.lock.mode,
                              request.lock.retain_until):
        state = s3io.LockState(request.lock.mode, request.lock.retain_until, request.lock.legal_hold)
        if request.lock.legal_hold:
            legal_hold.place(settings, s3, request.incident_id, held, datetime.now(UTC))
        record = record_of()
        if record is not None and metadata_problem({"sha256": record.sha256}, None) is None:
            problem = size_problem(record.stored_bytes, candidate.size)
            if problem is not None:
                return _unverified(candidate, problem, state)
            return ManifestEntry(
                key=candidate.key, version_id=candidate.version_id, sha256=record.sha256, size=candidate.size,
                node=candidate.node, start_ns=candidate.start_ns, end_ns=candidate.end_ns, seq=record.seq,
                packets=record.packets, lock_mode=request.lock.mode, retain_until=iso(request.lock.retain_until),
                legal_hold=request.lock.legal_hold, kernel_drops=record.kernel_drops, agent_drops=record.agent_drops,
                lock_outcome=state.outcome)
    try:
        head = s3io.head_version(s3, settings.raw_bucket, candidate.key, candidate.version_id, checksum=True)
    except ClientError as exc:
        # Locked (or refused, which means a lock already stands), but unreadable: kept, recorded, never dissected.
        reason = f"unreadable: HEAD failed with {s3io.error_code(exc)}"
        if state is None:
            reason += "; the requested retention was refused, so an existing lock stands"
        return _unverified(candidate, reason, state or s3io.LockState(None, None, False, "unknown"))
    if state is None:
        state = s3io.lock_at_least(s3, settings.raw_bucket, candidate.key, candidate.version_id, request.lock.mode,
                                   request.lock.retain_until, s3io.lock_state(head))
        if request.lock.legal_hold:
            legal_hold.place(settings, s3, request.incident_id, held, datetime.now(UTC))
            state = s3io.LockState(state.mode, state.retain_until, True, state.outcome)
    else:
        state = s3io.LockState(state.mode, state.retain_until, state.legal_hold or s3io.lock_state(head).legal_hold,
                               state.outcome)
    problem = metadata_problem(head.get("Metadata", {}), head.get("ChecksumSHA256")) or size_problem(
        head.get("ContentLength"), candidate.size)
    if problem is not None:
        logger.warning("segment locked but unverified", extra={"incident_id": request.incident_id,
                                                               "segment": candidate.key, "reason": problem})
        return _unverified(candidate, problem, state)
    return _entry_from_head(candidate, head, state)


def _unverified(candidate: Candidate, reason: str, state: s3io.LockState) -> UnverifiedSegment:
    return UnverifiedSegment(key=candidate.key, version_id=candidate.version_id, node=candidate.node,
                             start_ns=candidate.start_ns, end_ns=candidate.end_ns, size=candidate.size, reason=reason,
                             lock_mode=str(state.mode or ""),
                             retain_until=iso(state.retain_until) if state.retain_until else "",
                             legal_hold=state.legal_hold)


def _entry_from_head(candidate: Candidate, head: dict[str, Any], state: s3io.LockState) -> ManifestEntry:
    metadata = head.get("Metadata", {})
    return ManifestEntry(
        key=candidate.key, version_id=candidate.version_id, sha256=metadata["sha256"], size=candidate.size,
        node=candidate.node, start_ns=candidate.start_ns, end_ns=candidate.end_ns,
        seq=int(metadata["seq"]) if metadata.get("seq", "").isdigit() else None,
        packets=int(metadata["packets"]) if metadata.get("packets", "").isdigit() else None,
        lock_mode=str(state.mode), retain_until=iso(state.retain_until) if state.retain_until else "",
        legal_hold=state.legal_hold, kernel_drops=_metadata_int(metadata, "kernel_drops"),
        agent_drops=_metadata_int(metadata, "agent_drops"), lock_outcome=state.outcome,
    )


def _metadata_int(metadata: dict[str, str], name: str) -> int | None:
    value = metadata.get(name, "")
    return int(value) if value.isdigit() else None
