"""The freeze: find the segment versions overlapping a request's window, lock them in place, write the manifest.

`plan_freeze` decides everything that needs no store (window, prefixes, scope, lock, hold); `freeze` then runs the
named steps in order: settle a retry, open the hold, list and lock, preserve the context (and lock node state), write
the manifest. Every parallel request goes through `freezeframe.contracts.parallel`."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from freezeframe.adapters import s3 as s3io
from freezeframe.adapters.s3 import ObjectStore
from freezeframe.contracts.config import Settings
from freezeframe.contracts.errors import NotFoundError
from freezeframe.contracts.keys import hour_prefixes, manifest_key, node_prefix, parse_raw_segment_key
from freezeframe.contracts.models import FreezeRequest, LockSpec, ManifestEntry, SegmentRecord, iso
from freezeframe.contracts.parallel import LOCK_LIMIT, Tasks, gather
from freezeframe.custody.chain import seal_written
from freezeframe.custody.manifest import build_manifest, entries_of
from freezeframe.freeze import k8s_context, legal_hold, node_state, segment_index
from freezeframe.freeze.consolidate import consolidate
from freezeframe.freeze.holds import Hold, hold_for, open_hold
from freezeframe.freeze.unverified import UnverifiedSegment, attach, metadata_problem, size_problem, unverified_of
from freezeframe.intake import postback

logger = logging.getLogger(__name__)
LOCK_WORKERS = LOCK_LIMIT
LIST_WORKERS = 4
AUX_WORKERS = 4  # the manifest check, the segment index, the Kubernetes context read and snapshot, node state


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
    unverified: int = 0  # versions locked but left out of the entries (see freezeframe.freeze.unverified)


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


@dataclass(frozen=True, slots=True)
class FreezePlan:
    """Everything a freeze decides before it touches the store (`plan_freeze`)."""

    incident_id: str
    manifest_key: str
    cluster: str
    window_start_ns: int
    window_end_ns: int
    hour_prefixes: tuple[str, ...]  # the raw hour folders the window touches, plus the hour before
    nodes: tuple[str, ...]  # the scope's own nodes; empty: every node, unless the context narrows it
    namespaces: tuple[str, ...]
    pods: tuple[str, ...]
    nodes_from_context: bool  # a namespace/pod scope naming no nodes: its nodes come from the Kubernetes context
    lock: LockSpec  # mode, retain-until and legal hold of every version locked
    hold: Hold | None  # opened before the listing when the window (plus grace) is not over yet
    consolidate: bool

    @property
    def settle_retry_first(self) -> bool:
        """A retry must not open a second hold or add legal-hold references, so with either the retry question is
        settled before anything is written. Without them, re-applying the same retention to a version a finished
        freeze locked changes nothing, so the check runs alongside the listing."""
        return self.hold is not None or self.lock.legal_hold

    def prefixes(self, nodes: tuple[str, ...]) -> tuple[str, ...]:
        """The folders to list: every hour's, or, when the scope names (or resolves to) nodes, only theirs."""
        if not nodes:
            return self.hour_prefixes
        return tuple(node_prefix(prefix, node) for prefix in self.hour_prefixes for node in nodes)


def plan_freeze(request: FreezeRequest, settings: Settings, now: datetime) -> FreezePlan:
    """Pure: the plan of a freeze at `now`."""
    scope = request.scope
    return FreezePlan(
        incident_id=request.incident_id, manifest_key=manifest_key(request.incident_id), cluster=scope.cluster,
        window_start_ns=request.window_start_ns, window_end_ns=request.window_end_ns,
        hour_prefixes=tuple(hour_prefixes(scope.cluster, request.window_start_ns, request.window_end_ns)),
        nodes=scope.nodes, namespaces=scope.namespaces, pods=scope.pods,
        nodes_from_context=not scope.nodes and bool(scope.namespaces or scope.pods), lock=request.lock,
        hold=hold_for(request, settings.hold_grace_s, now), consolidate=settings.consolidate)


@dataclass(frozen=True, slots=True)
class Pools:
    """The freeze's three bounded pools: reads beside the listing, the listers, and the lockers."""

    aux: Tasks
    listers: Tasks
    lockers: Tasks


@dataclass(frozen=True, slots=True)
class Listing:
    """The listing and locking under way: each listed page's segments are locked while the next page is fetched."""

    nodes: tuple[str, ...]
    listed: list[Future[None]]
    locks: list[Future[ManifestEntry | UnverifiedSegment | None]]  # appended to by the listers
    index: Future[tuple[dict[tuple[str, str], SegmentRecord], list[dict[str, Any]]]]
    context_objects: Future[list[k8s_context.ContextObject]]

    def drain(self) -> list[ManifestEntry | UnverifiedSegment | None]:
        """Waits for every listing and then every lock; the first error (listing first) is raised."""
        gather(self.listed)
        return gather(self.locks)


def freeze(settings: Settings, s3: ObjectStore, request: FreezeRequest, now: datetime | None = None) -> FreezeResult:
    """Plans the freeze, then runs its steps in order; reads and locks overlap through three bounded pools, and any
    error is raised once every task started has finished (`freezeframe.contracts.parallel`)."""
    plan = plan_freeze(request, settings, now or datetime.now(UTC))
    with Tasks(AUX_WORKERS) as aux, Tasks(LIST_WORKERS) as listers, Tasks(LOCK_WORKERS) as lockers:
        pools = Pools(aux, listers, lockers)
        # Every read a freeze needs starts at once and overlaps: the manifest check, the segment index, the
        # Kubernetes context and the listing. A freeze then costs about its PutObjectRetention calls, not their sum
        # plus a chain of round trips.
        existing = aux.submit(_existing_manifest, settings, s3, plan.manifest_key)
        if plan.settle_retry_first and (retried := settle_retry(settings, s3, request, plan, existing)) is not None:
            return retried
        open_the_hold(settings, s3, plan)
        listing = list_and_lock(settings, s3, request, plan, existing, pools)
        if (retried := settle_retry(settings, s3, request, plan, existing, listing)) is not None:
            return retried
        context = preserve_context(settings, s3, request, listing, aux)
        # Node state is locked beside the segments, and a node that has only node state still gets dissected.
        node_states = aux.submit(node_state.freeze_node_state, settings, s3, request, listing.nodes)
        locked = listing.drain()
        _, gap_records = listing.index.result()
        context_entries = context.result()
        state_entries = node_states.result()
    return write_manifest(settings, s3, request, plan, listing.nodes, locked, gap_records, context_entries,
                          state_entries, now)


def settle_retry(settings: Settings, s3: ObjectStore, request: FreezeRequest, plan: FreezePlan,
                 existing: Future[dict[str, Any] | None], pending: Listing | None = None) -> FreezeResult | None:
    """Step 1 (again after the listing started): a retry of a finished freeze seals the written manifest (completing a
    freeze that died between the write and the seal) and returns its result unchanged, once the locks under way
    (`pending`) have finished; None when no manifest exists."""
    manifest = existing.result()
    if manifest is None:
        return None
    if pending is not None:
        pending.drain()  # the locks already under way; the rest return at once (see list_and_lock)
    _seal_manifest(settings, s3, request, None, b"")
    return _already_frozen(request, plan.manifest_key, manifest)


def open_the_hold(settings: Settings, s3: ObjectStore, plan: FreezePlan) -> None:
    """Step 2: the hold goes before the listing, so a segment uploaded after it is caught by the segment indexer."""
    if plan.hold is not None:
        open_hold(settings, s3, plan.hold)


def list_and_lock(settings: Settings, s3: ObjectStore, request: FreezeRequest, plan: FreezePlan,
                  existing: Future[dict[str, Any] | None], pools: Pools) -> Listing:
    """Step 3: starts listing the plan's prefixes and locking every overlapping version as its page arrives, the
    segment index load, and the Kubernetes context read (first, and waited for, when it decides the nodes)."""

    def read_context() -> Future[list[k8s_context.ContextObject]]:
        return pools.aux.submit(k8s_context.read_window, settings, s3, plan.cluster, plan.window_start_ns,
                                plan.window_end_ns)

    # The listing goes out first: the first lock waits for its first page (and the manifest check), while the
    # segment index is needed only once a version is locked and the Kubernetes context only at the end, unless a
    # namespace/pod scope needs the context to find its nodes.
    objects = read_context() if plan.nodes_from_context else None
    nodes = scope_nodes(request, objects)
    index: Future[tuple[dict[tuple[str, str], SegmentRecord], list[dict[str, Any]]]] = Future()
    locks: list[Future[ManifestEntry | UnverifiedSegment | None]] = []
    submitted = threading.Lock()

    def lock(candidate: Candidate) -> ManifestEntry | UnverifiedSegment | None:
        # A lock never waits for the manifest check: re-applying a finished freeze's own retention changes nothing
        # (and a hold or legal hold was settled first), so only once the check has answered does a retry of a
        # finished freeze skip the rest.
        if existing.done() and existing.result() is not None:
            return None
        return _lock_one(settings, s3, request, candidate,
                         lambda: index.result()[0].get((candidate.key, candidate.version_id)))

    def list_prefix(prefix: str) -> None:
        for version in s3io.list_versions(s3, settings.raw_bucket, prefix):
            for candidate in select_segments(request, [version], nodes):
                future = pools.lockers.submit(lock, candidate)
                with submitted:
                    locks.append(future)

    listed = [pools.listers.submit(list_prefix, prefix) for prefix in plan.prefixes(nodes)]
    _forward(pools.aux.submit(segment_index.load, settings, s3, plan.cluster, plan.window_start_ns,
                              plan.window_end_ns, nodes), index)
    return Listing(nodes, listed, locks, index, objects or read_context())


def preserve_context(settings: Settings, s3: ObjectStore, request: FreezeRequest, listing: Listing, aux: Tasks
                     ) -> Future[list[k8s_context.ContextEntry]]:
    """Step 4: snapshots the context of every node, not only the scope's, under the incident's own lock: the peers of
    the frozen traffic run elsewhere, and their IPs must resolve to pods too."""
    return aux.submit(lambda: k8s_context.preserve(settings, s3, request.incident_id, listing.context_objects.result(),
                                                   request.lock.mode, request.lock.retain_until))


def write_manifest(settings: Settings, s3: ObjectStore, request: FreezeRequest, plan: FreezePlan,
                   nodes: tuple[str, ...], locked: list[ManifestEntry | UnverifiedSegment | None],
                   gap_records: list[dict[str, Any]], context: list[k8s_context.ContextEntry],
                   state_entries: list[node_state.NodeStateEntry], now: datetime | None) -> FreezeResult:
    """Step 5: the manifest (after the consolidation copies, when configured), written create-only under the
    incident's lock and sealed into the custody chain; the postback goes out only when this call wrote it."""
    entries = [entry for entry in locked if isinstance(entry, ManifestEntry)]
    unverified = [entry for entry in locked if isinstance(entry, UnverifiedSegment)]
    manifest = build_manifest(request, entries, now or datetime.now(UTC), settings.raw_bucket,
                              [g for g in gap_records if not nodes or g.get("node") in nodes])
    manifest["hold"] = plan.hold.to_dict() if plan.hold else None
    attach(manifest, unverified)
    for item in unverified:
        manifest["coverage"].setdefault(item.node, {}).setdefault("unverified", []).append(
            {"key": item.key, "version_id": item.version_id, "start_ns": item.start_ns, "end_ns": item.end_ns,
             "reason": item.reason})
    manifest["scope_nodes"] = list(nodes)  # empty: every node of the cluster
    if plan.consolidate:
        manifest["consolidated"] = consolidate(settings, s3, request, entries)
    manifest["k8s_context"] = [entry.to_dict() for entry in context]
    manifest["k8s_root_hash"] = k8s_context.context_root_hash(context)
    manifest["node_state"] = [entry.to_dict() for entry in state_entries]
    manifest["node_state_root_hash"] = node_state.root_hash(state_entries)
    written = s3io.put_json(s3, settings.evidence_bucket, plan.manifest_key, manifest, create_only=True,
                            lock=(plan.lock.mode, plan.lock.retain_until))
    _seal_manifest(settings, s3, request, written, s3io.encode_json(manifest))
    logger.info("manifest written", extra={"incident_id": request.incident_id, "segments": len(entries),
                                           "manifest_created": written is not None})
    if written is not None:  # a retried freeze does not post twice
        postback.after_freeze(settings, manifest)
    return FreezeResult(request.incident_id, plan.manifest_key, len(entries),
                        tuple(sorted({e.node for e in entries} | {u.node for u in unverified}
                                     | {s.node for s in state_entries})),
                        created=written is not None, hold_open=plan.hold is not None, unverified=len(unverified))


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
