"""A dissection job: one node's frozen segments of one incident, in time order, into Parquet parts.

Every segment's stored bytes are checked against the manifest's sha256 before a single packet is read; a
mismatch fails that segment loudly (recorded in the job status and raised), and never feeds the tables.
A verified segment that is damaged inside (truncated, garbage, not a capture at all) is dissected as far as it
can be, and its problems are counted in the ``dissect_errors`` table and the job's stats (``errors_<stage>_<kind>``).

Segments are read by ``pcapio.open_capture`` (pcap or pcapng, zstd or not, detected by magic), streamed in
bounded chunks. A long window can be split into time chunks dissected in parallel processes and merged at the
chunk edges (``dissect.chunks``).

``dissect_node`` is a plan plus named steps, as the freeze is (``freezeframe.freeze.freeze``): ``read_inputs``,
``plan_node_pass`` (pure), ``run_engine``, ``add_evidence``, ``write_parts``, ``write_status``.
"""

from __future__ import annotations

import calendar
import dataclasses
import functools
import hashlib
import json
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from freezeframe.adapters import s3 as s3io
from freezeframe.adapters.s3 import ObjectStore
from freezeframe.capture.pcapio import MAX_TS_NS, open_capture
from freezeframe.contracts.config import Settings
from freezeframe.contracts.documents import DISSECT_STATUS_SCHEMA as STATUS_SCHEMA
from freezeframe.contracts.errors import CaptureFormatError, SegmentCorruptError
from freezeframe.contracts.keys import dissect_status_key, table_part_key
from freezeframe.contracts.models import ManifestEntry, iso
from freezeframe.contracts.parallel import run_in_processes
from freezeframe.contracts.schemas import TABLES
from freezeframe.custody.manifest import entries_of
from freezeframe.dissect.apps import AppTracker
from freezeframe.dissect.chunks import (
    CHUNK_TABLES,
    Chunk,
    edge_pairs,
    merge_ids,
    merge_tables,
    pull_pairs,
    shared_udp_pairs,
    sort_rows,
    split_chunk,
    udp_pairs,
    warm_rows_of,
    with_rows,
)
from freezeframe.dissect.compact import parquet_bytes
from freezeframe.dissect.connections import ConnectionTracker, collector_paused
from freezeframe.dissect.crosslayer import CLUSTER_PART, cluster_tables, node_tables
from freezeframe.dissect.engine import EngineResult, SegmentSource, dissect_segments, mixed_engine, owns_segment
from freezeframe.dissect.enrich import IpTimeline, enrich
from freezeframe.dissect.node_state import frozen_documents
from freezeframe.dissect.plan import SegmentSpan, plan_node
from freezeframe.dissect.problems import APP_KINDS, DECODE_KINDS, SegmentProblems, SegmentRef
from freezeframe.dissect.tcp.batch import feed_batches
from freezeframe.dissect.warmup import ChunkState, begin_chunk
from freezeframe.freeze.follow import inputs_digest
from freezeframe.freeze.node_state import entries_of as node_state_entries
from freezeframe.freeze.unverified import UnverifiedSegment, unverified_of

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class DissectReport:
    incident_id: str
    node: str
    segments: int = 0
    tables: dict[str, int] = field(default_factory=dict)
    parts: dict[str, str] = field(default_factory=dict)
    corrupt_segments: list[dict[str, str]] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)
    # What this pass read (freezeframe.freeze.follow.inputs_digest): a later pass with the same inputs is skipped.
    inputs_digest: str = ""
    # Locked but unverified segments of this node, left out of the tables (one dissect_errors row each).
    unverified_segments: list[dict[str, str]] = field(default_factory=list)
    skipped: bool = False  # True when this pass found the same inputs as the last and kept its tables
    engine: str = ""  # which engine made the tables (EngineResult.engine)

    @property
    def state(self) -> str:
        return "failed" if self.corrupt_segments else "done"

    def to_dict(self) -> dict[str, Any]:
        return {"schema": STATUS_SCHEMA, "incident_id": self.incident_id, "node": self.node, "state": self.state,
                "segments": self.segments, "tables": self.tables, "parts": self.parts,
                "corrupt_segments": self.corrupt_segments, "stats": self.stats, "finished_at": iso(datetime.now(UTC)),
                "inputs_digest": self.inputs_digest, "unverified_segments": self.unverified_segments,
                "engine": self.engine}

    @classmethod
    def from_status(cls, status: dict[str, Any]) -> DissectReport:
        """The report a previous pass wrote (its status document), for a pass that found nothing new."""
        return cls(incident_id=str(status["incident_id"]), node=str(status["node"]),
                   segments=int(status.get("segments", 0)), tables=dict(status.get("tables", {})),
                   parts=dict(status.get("parts", {})), corrupt_segments=list(status.get("corrupt_segments", [])),
                   stats=dict(status.get("stats", {})), inputs_digest=str(status.get("inputs_digest", "")),
                   unverified_segments=list(status.get("unverified_segments", [])), skipped=True,
                   engine=str(status.get("engine", "")))


def verify_segment(stored: bytes, entry: ManifestEntry) -> None:
    """Raise ``SegmentCorruptError`` unless the stored bytes hash to the manifest's sha256."""
    actual = hashlib.sha256(stored).hexdigest()
    if actual != entry.sha256:
        raise SegmentCorruptError(f"segment {entry.key} version {entry.version_id}: sha256 {actual} does not match "
                                  f"the manifest's {entry.sha256}")


def reference_segments(node: str, segments: Sequence[SegmentSource], chunk: Chunk | None = None) -> EngineResult:
    """`engine.dissect_segments` on the reference engine (this module's trackers, in Python)."""
    warmed = chunk is not None and chunk.warmup_start_ns is not None and chunk.warmup_start_ns < chunk.start_ns
    app = AppTracker(node)
    tracker = ConnectionTracker(node, app)
    problems = SegmentProblems(node)
    corrupt: list[dict[str, str]] = []
    warm = None
    if warmed and chunk is not None and chunk.warmup_start_ns is not None:
        warm = _warm_up(tracker, segments, chunk.warmup_start_ns, chunk.start_ns)
    own_from = chunk.start_ns if warm is not None and chunk is not None else None
    for segment in segments:
        if own_from is not None and segment.ref.end_ns is not None and segment.ref.end_ns < own_from:
            continue  # read for the warm-up only
        try:
            opened = segment.open()
        except SegmentCorruptError as exc:
            logger.error("segment rejected", extra={"node": node, "segment": segment.ref.key, "reason": str(exc)})
            corrupt.append({"key": segment.ref.key, "version_id": segment.ref.version_id or "", "reason": str(exc)})
            continue
        with opened as stream:
            try:
                reader = open_capture(stream)
            except CaptureFormatError as exc:
                if owns_segment(chunk, segment.ref):
                    logger.warning("segment is not a capture", extra={"node": node, "segment": segment.ref.key,
                                                                      "reason": str(exc)})
                    problems.add_rejected(segment.ref, "not_a_capture", str(exc))
                continue
            decode_before, app_before = tracker.stats.as_dict(), app.stats.as_dict()
            feed_batches(tracker, reader.record_batches(), None if chunk is None else (chunk.start_ns, chunk.end_ns))
            if owns_segment(chunk, segment.ref):
                problems.add_reader(segment.ref, reader)
            problems.add_counters(segment.ref, "decode", DECODE_KINDS, decode_before, tracker.stats.as_dict())
            problems.add_counters(segment.ref, "app", APP_KINDS, app_before, app.stats.as_dict())
    stats = {**tracker.stats.as_dict(), **app.stats.as_dict()}
    with collector_paused():
        tables = {"connections": tracker.finish(), **tracker.app_tables()}
        payload_segments = tracker.payload_segments() if chunk is not None else {}
        extras = (warm or ChunkState()).extras(tracker) if chunk is not None else {}
        if warm is not None:
            tables["connections"] = warm.fix(tracker, tables["connections"])
    tracker.close()  # breaks the flow <-> handler cycles so reference counting frees them at once
    return EngineResult(tables, problems, stats, corrupt, payload_segments, extras)


def _warm_up(tracker: ConnectionTracker, segments: Sequence[SegmentSource], low: int, high: int) -> ChunkState:
    """Feeds ``[low, high)`` of the segments that overlap it, then keeps the state and zeroes the counts."""
    for segment in segments:
        ref = segment.ref
        if ref.start_ns is not None and ref.start_ns >= high or ref.end_ns is not None and ref.end_ns < low:
            continue
        try:
            with segment.open() as stream:
                feed_batches(tracker, open_capture(stream).record_batches(), (low, high))
        except (SegmentCorruptError, CaptureFormatError):
            continue  # reported by the chunk that owns the segment
    return begin_chunk(tracker)


def _dissect_chunk(args: tuple[str, list[SegmentSource], Chunk]) -> EngineResult:
    node, segments, chunk = args
    return dissect_segments(node, segments, chunk)


def dissect_chunked(node: str, segments: Sequence[SegmentSource], chunks: Sequence[Chunk],
                    workers: int | None = None) -> EngineResult:
    """``dissect_segments`` per time chunk in a process pool, merged into one row per connection.

    Each chunk gets the segments that overlap it (all of them when a segment's times are unknown). The first and
    last chunks are open-ended, so a packet stamped outside the planned window (clock skew) is still counted once.
    """
    chunks = list(chunks)
    chunks[0] = dataclasses.replace(chunks[0], start_ns=0, warmup_start_ns=None)
    chunks[-1] = dataclasses.replace(chunks[-1], end_ns=MAX_TS_NS + 1)
    jobs = []
    for chunk in chunks:
        low = chunk.start_ns if chunk.warmup_start_ns is None else min(chunk.warmup_start_ns, chunk.start_ns)
        overlapping = [s for s in segments if s.ref.start_ns is None or s.ref.end_ns is None
                       or (s.ref.start_ns < chunk.end_ns and s.ref.end_ns >= low)]
        jobs.append((node, overlapping, chunk))
    return merge_chunk_results(node, chunks, run_in_processes(_dissect_chunk, jobs, workers))


def merge_chunk_results(node: str, chunks: Sequence[Chunk], results: Sequence[EngineResult]) -> EngineResult:
    """The results of a node's chunks (in order, the node's first to its last) as one: each chunk's rows split into
    body and edge (``dissect.chunks.split_chunk``), the bodies' rows of the edges' endpoint pairs moved to the edge
    (``pull_pairs``), the edge rows merged (``merge_tables``: connections folded, application rows re-pointed and
    completed from the warm-up) and the bodies kept as they are -- the fan-out's merge step does the same with the
    bodies in S3 (``dissect.fanout``)."""
    last = len(results) - 1
    warmup_ns = max((c.start_ns - c.warmup_start_ns for c in chunks if c.warmup_start_ns is not None), default=0)
    bodies: list[dict[str, pa.Table]] = []
    edges: list[dict[str, pa.Table]] = []
    warms: list[dict[str, pa.Table]] = []
    udp = []
    for number, (chunk, result) in enumerate(zip(chunks, results, strict=True)):
        body, edge, warm = split_chunk(result.tables, chunk, number == 0, number == last)
        bodies.append(body)
        edges.append(edge)
        warms.append(warm)
        udp.append(udp_pairs(result.tables["connections"], chunk, number == 0, number == last, warmup_ns))
    edge_rows = sum(edge["connections"].num_rows for edge in edges)
    pairs = edge_pairs(edges, shared_udp_pairs(chunks, udp, warmup_ns))
    pulled = 0
    for number, body in enumerate(bodies):
        bodies[number], moved = pull_pairs(body, pairs)
        pulled += moved["connections"].num_rows
        edges[number] = {name: with_rows(edges[number][name], moved[name]) for name in CHUNK_TABLES}
    ids = merge_ids(edges)
    for number, warm in enumerate(warms):
        kept = warm_rows_of(warm, ids)
        edges[number] = {name: with_rows(edges[number][name], kept[name]) if name in kept else edges[number][name]
                         for name in CHUNK_TABLES}
    merged = merge_tables(node, chunks, edges, [result.payload_segments for result in results],
                          [result.extras for result in results])
    tables = {}
    for name in CHUNK_TABLES:
        combined = merged.tables[name].cast(TABLES[name])
        for body in bodies:
            combined = with_rows(combined, body[name])
        tables[name] = sort_rows(name, combined)
    problems = SegmentProblems(node)
    stats: dict[str, int] = {}
    corrupt = []
    for result in results:
        corrupt += result.corrupt
        problems.extend(result.problems)
        for key, value in result.stats.items():
            stats[key] = stats.get(key, 0) + value
    stats["chunks"] = len(results)
    stats["chunk_rows_merged"] = merged.merged_rows
    stats["chunk_edge_rows"] = edge_rows
    stats["chunk_rows_pulled"] = pulled
    return EngineResult(tables, problems, stats, corrupt, engine=mixed_engine(result.engine for result in results))


@dataclass(frozen=True, slots=True)
class NodeInputs:
    """What a node's pass reads before any segment: the incident's frozen documents and the node's last status."""

    manifest: dict[str, Any]
    parts: list[dict[str, Any]]  # the manifest parts: the hold's late segments
    previous: dict[str, Any] | None  # the last pass's status document; None before the first pass, or when forced


@dataclass(frozen=True, slots=True)
class NodePlan:
    """Everything a node's pass decides before it reads a segment (`plan_node_pass`)."""

    incident_id: str
    node: str
    raw_bucket: str
    window_start_ns: int
    window_end_ns: int
    entries: tuple[ManifestEntry, ...]  # the node's segments of the manifest and its parts, once each, in time order
    unverified: tuple[UnverifiedSegment, ...]  # locked but unverified: one dissect_errors row each, never read
    inputs_digest: str  # freezeframe.freeze.follow.inputs_digest of the entries, the unverified and the chunking
    skip: bool  # the last pass read the same inputs and succeeded: its tables stand
    chunks: tuple[Chunk, ...] | None  # the time chunks dissected in parallel processes; None: one pass

    def ref(self, entry: ManifestEntry) -> SegmentRef:
        return SegmentRef(entry.key, entry.version_id, entry.start_ns, entry.end_ns)


def plan_node_pass(settings: Settings, incident_id: str, node: str, inputs: NodeInputs,
                   chunk_ns: int | None = None) -> NodePlan:
    """Pure: the plan of one node's pass over the incident's documents. A segment in the manifest and in a part
    counts once; the chunks are cut only for a pass that runs."""
    manifest, parts = inputs.manifest, inputs.parts
    late = [e for part in parts for e in entries_of(part)]
    unique = {(e.key, e.version_id): e for e in [*entries_of(manifest), *late] if e.node == node}
    entries = sorted(unique.values(), key=lambda e: (e.start_ns, e.key))
    unverified = sorted({(u.key, u.version_id): u for document in [manifest, *parts] for u in unverified_of(document)
                         if u.node == node}.values(), key=lambda u: (u.start_ns, u.key))
    state_shas = ",".join(e.sha256 for e in node_state_entries(manifest) if e.node == node)
    digest = inputs_digest(entries, [u.to_dict() for u in unverified], f"chunk_ns={chunk_ns};node_state={state_shas}")
    previous = inputs.previous
    skip = previous is not None and previous.get("state") == "done" and previous.get("inputs_digest") == digest
    window = (_ns(manifest["request"]["window_start"]), _ns(manifest["request"]["window_end"]))
    chunks = None
    if chunk_ns is not None and not skip:
        planned = plan_node(node, [SegmentSpan.from_entry(e) for e in entries], window=window, chunk_ns=chunk_ns,
                            warmup_ns=settings.dissect_warmup_s * 1_000_000_000)
        chunks = tuple(Chunk(c.index, c.start_ns, c.end_ns, None if c.open_start else c.warmup_start_ns)
                       for c in planned)
    return NodePlan(incident_id=incident_id, node=node, raw_bucket=manifest.get("raw_bucket", settings.raw_bucket),
                    window_start_ns=window[0], window_end_ns=window[1], entries=tuple(entries),
                    unverified=tuple(unverified), inputs_digest=digest, skip=skip, chunks=chunks)


def dissect_node(settings: Settings, s3: ObjectStore, incident_id: str, node: str,
                 chunk_ns: int | None = None, workers: int | None = None, force: bool = False) -> DissectReport:
    """Dissect one node's segments of an incident; with ``chunk_ns``, in parallel time chunks of that length.

    Every pass reads the node's segments of the manifest and of every manifest part (the hold's late segments) from
    the first, in time order, so TCP state runs across the freeze point, and overwrites the node's Parquet parts
    (deterministic keys). A pass whose inputs equal the last successful pass's (`inputs_digest`) keeps its tables
    and returns at once, unless `force`.

    The named steps run in order: read the inputs, plan the pass (`plan_node_pass`, pure: what to read, whether to
    skip, the chunks), run the engine over the verified segments, add the cross-layer evidence, write the parts,
    write the status. The chunks' processes go through `freezeframe.contracts.parallel`."""
    inputs = read_inputs(settings, s3, incident_id, node, force)
    plan = plan_node_pass(settings, incident_id, node, inputs, chunk_ns)
    if plan.skip and inputs.previous is not None:
        logger.info("node unchanged since its last pass", extra={"incident_id": incident_id, "node": node})
        return DissectReport.from_status(inputs.previous)
    report = DissectReport(incident_id, node, inputs_digest=plan.inputs_digest,
                           unverified_segments=[{"key": u.key, "version_id": u.version_id, "reason": u.reason}
                                                for u in plan.unverified])
    result = run_engine(s3, plan, workers)
    report.segments = len(plan.entries) - len(result.corrupt)
    report.engine = result.engine
    tables, cluster = add_evidence(s3, plan, inputs.manifest, result, report)
    write_parts(settings, s3, plan, tables, cluster, report)
    write_status(settings, s3, report)
    return report


def read_inputs(settings: Settings, s3: ObjectStore, incident_id: str, node: str, force: bool) -> NodeInputs:
    """Step 1: the manifest and its parts, through the custody chain, and (unless `force`) the node's last status."""
    # The custody chain (cryptography) only here: a local `freezeframe dissect` never imports it.
    from freezeframe.custody.incident import load_incident, read_status  # noqa: PLC0415

    incident = load_incident(settings, s3, incident_id, record=False, statuses=False, summary=False)
    manifest, parts = incident.manifest_document, incident.part_documents
    status = None if force else read_status(settings, s3, incident_id, node)
    return NodeInputs(manifest, parts, status.to_dict() if status is not None else None)


def run_engine(s3: ObjectStore, plan: NodePlan, workers: int | None = None) -> EngineResult:
    """Step 2: the verified segments through the engine, in one pass (each segment fetched and verified when its turn
    comes, so one is in memory at a time) or in the plan's time chunks (`spool_verified` first)."""
    if plan.chunks is None:
        fetch = functools.partial(fetch_verified, s3, plan.raw_bucket)
        return dissect_segments(plan.node, [SegmentSource(plan.ref(e), fetch=functools.partial(fetch, e))
                                            for e in plan.entries])
    with tempfile.TemporaryDirectory(prefix="freezeframe-dissect-") as spool:
        sources, corrupt = spool_verified(s3, plan, Path(spool))
        result = dissect_chunked(plan.node, sources, plan.chunks, workers)
    result.corrupt[:0] = corrupt
    return result


def fetch_verified(s3: ObjectStore, raw_bucket: str, entry: ManifestEntry) -> bytes:
    """A segment's stored bytes, once they hash to the manifest's sha256 (`SegmentCorruptError` otherwise)."""
    stored: bytes = s3io.get_bytes(s3, raw_bucket, entry.key, entry.version_id)
    verify_segment(stored, entry)
    return stored


def spool_verified(s3: ObjectStore, plan: NodePlan, spool: Path) -> tuple[list[SegmentSource], list[dict[str, str]]]:
    """Chunk workers are other processes: each segment is verified once, here, and spooled to disk for them. Returns
    the spooled segments and the rejected ones (as corrupt-segment records)."""
    sources = []
    corrupt = []
    for index, entry in enumerate(plan.entries):
        try:
            stored = fetch_verified(s3, plan.raw_bucket, entry)
        except SegmentCorruptError as exc:
            logger.error("segment rejected", extra={"incident_id": plan.incident_id, "node": plan.node,
                                                    "segment": entry.key, "reason": str(exc)})
            corrupt.append({"key": entry.key, "version_id": entry.version_id, "reason": str(exc)})
            continue
        path = spool / f"{index:06d}.seg"
        path.write_bytes(stored)
        sources.append(SegmentSource(plan.ref(entry), path=path))
    return sources, corrupt


def add_evidence(s3: ObjectStore, plan: NodePlan, manifest: dict[str, Any], result: EngineResult,
                 report: DissectReport) -> tuple[dict[str, pa.Table], dict[str, pa.Table]]:
    """Step 3: the engine's tables enriched with the Kubernetes context, the cross-layer tables (the node's own
    state, the connections to Services: freezeframe.dissect.crosslayer) and dissect_errors; the report takes the
    counts. Returns the node's tables and the cluster's (Services and EndpointSlices, the same from every node)."""
    records = context_records(s3, manifest)
    timeline = IpTimeline.from_records(records)
    tables = {name: enrich(table, timeline) for name, table in result.tables.items()}
    documents, state_corrupt, state_malformed = frozen_documents(s3, manifest, plan.node, plan.raw_bucket)
    result.corrupt += state_corrupt
    tables.update(node_tables(tables["connections"], records, documents, timeline))
    report.stats["node_state_documents"] = len(documents)
    report.stats["node_state_malformed"] = state_malformed
    report.corrupt_segments = result.corrupt
    for item in plan.unverified:
        result.problems.add_unverified(SegmentRef(item.key, item.version_id, item.start_ns, item.end_ns), item.reason)
    tables["dissect_errors"] = result.problems.table()
    report.stats.update(result.stats)
    report.stats.update(result.problems.totals())
    report.stats["truncated_records"] = report.stats.get("errors_read_truncated", 0)
    return tables, cluster_tables(records)


def write_parts(settings: Settings, s3: ObjectStore, plan: NodePlan, tables: dict[str, pa.Table],
                cluster: dict[str, pa.Table], report: DissectReport) -> None:
    """Step 4: one Parquet part per table under its deterministic key (a retry overwrites, never duplicates). The
    cluster's tables go to one shared part, rewritten with the same bytes by every node's pass."""
    for name, table in [*tables.items(), *cluster.items()]:
        owner = CLUSTER_PART if name in cluster else plan.node
        key = table_part_key(name, plan.window_start_ns, plan.incident_id, owner)
        s3io.put_bytes(s3, settings.evidence_bucket, key, parquet_bytes(table),
                       content_type="application/vnd.apache.parquet")
        report.tables[name] = table.num_rows
        report.parts[name] = key


def write_status(settings: Settings, s3: ObjectStore, report: DissectReport) -> None:
    """Step 5: the node's status document; then a pass that rejected a segment fails loudly."""
    s3io.put_json(s3, settings.evidence_bucket, dissect_status_key(report.incident_id, report.node), report.to_dict())
    if report.corrupt_segments:
        raise SegmentCorruptError(f"incident {report.incident_id} node {report.node}: "
                                  f"{len(report.corrupt_segments)} segment(s) failed verification: "
                                  f"{', '.join(c['key'] for c in report.corrupt_segments)}")


def _ns(text: str) -> int:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (calendar.timegm(moment.utctimetuple()) * 1_000_000 + moment.microsecond) * 1000


def context_records(s3: ObjectStore, manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The incident's preserved Kubernetes context records (pod IPs and events), read from their frozen snapshots."""
    records = []
    for entry in manifest.get("k8s_context") or []:
        body = s3io.get_bytes(s3, entry["bucket"], entry["key"], entry["version_id"])
        records += [json.loads(line) for line in body.decode().splitlines() if line.strip()]
    return records


