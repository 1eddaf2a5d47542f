"""Dissection fanned out over (node, time chunk): the plan, chunk and merge steps of the state machine.

template.yaml's DissectionStateMachine runs, per pass:

1. ``plan_dissection`` (the dissect function, ``{"action": "plan"}``): every node's segments of the manifest and its
   parts, cut by ``dissect.plan`` into chunks that fit the function; the items are written to
   ``keys.dissect_plan_key`` for the Distributed Map's ItemReader. Nodes whose inputs did not change since their
   last merged pass get no chunks (``inputs_digest``).
2. ``dissect_chunk`` (``{"action": "chunk", ...item}``), one task per item, in a Distributed Map with retries and a
   catch per chunk: the chunk's segments are fetched and verified, dissected with the chunk's warm-up
   (``dissect.warmup``), and its unmerged tables and status written under ``keys.chunk_prefix``.
3. ``merge_node`` (``{"action": "merge", "node": ...}``), one per node in a Map: the node's chunk parts merged
   (``dissect.job.merge_chunk_results``), enriched, joined with the node's cross-layer tables and written as the
   node's parts (``keys.table_part_key``, as a one-pass ``dissect_node`` writes them); its dissect status names the
   parts and every hole: a chunk without a status of this pass (its task failed for good) or with
   corrupt segments. A hole fails only itself: the other chunks' rows are written, and the status (and so the
   incident summary) reports the hole and its time range.
4. finalize (``freezeframe.finalize``) once: builds the incident's views from every node's parts
   (``freezeframe.views``), splits a view larger than about 128 MB into numbered files (``freezeframe.compact``),
   registers the partitions, writes report and summary.

``run_locally`` runs the same steps in order in one process, with the state machine's retries, for the local stack
(``LocalGateway._run_dissection``) and the tests.
"""

from __future__ import annotations

import io
import json
import logging
import resource
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from freezeframe.adapters import s3 as s3io
from freezeframe.config import Settings
from freezeframe.crosslayer import CLUSTER_PART, cluster_tables, node_tables
from freezeframe.dissect.chunks import Chunk
from freezeframe.dissect.enrich import IpTimeline, enrich
from freezeframe.dissect.job import (
    DissectReport,
    EngineResult,
    SegmentSource,
    _ns,
    context_records,
    dissect_segments,
    merge_chunk_results,
    parquet_bytes,
    verify_segment,
)
from freezeframe.dissect.node_state import frozen_documents
from freezeframe.dissect.plan import PlannedChunk, SegmentSpan, chunk_of_item, plan_node
from freezeframe.dissect.problems import ProblemRow, SegmentProblems, SegmentRef
from freezeframe.errors import NotFoundError, SegmentCorruptError
from freezeframe.follow import inputs_digest
from freezeframe.incident import load_incident
from freezeframe.keys import chunk_prefix, chunk_status_key, dissect_plan_key, dissect_status_key, table_part_key
from freezeframe.manifest import entries_of
from freezeframe.models import ManifestEntry
from freezeframe.pcapio import MAX_TS_NS
from freezeframe.schemas import TABLES
from freezeframe.unverified import unverified_of

logger = logging.getLogger(__name__)
CHUNK_SCHEMA = "freezeframe.dissect-chunk/v1"
PLAN_SCHEMA = "freezeframe.dissect-plan/v1"
ENGINE_TABLES = ("connections", "dns", "http", "tls")
EXTRAS = pa.schema([("conn_id", pa.string()), ("payload_segments", pa.int64()), ("rtt_samples", pa.int64()),
                    ("rtt_sum_ns", pa.int64()), ("rtt_jitter_sum_ns", pa.int64())])


@dataclass(frozen=True, slots=True)
class NodeInputs:
    """What a node's pass reads: its segments (manifest and parts), the unverified ones, and their digest."""

    node: str
    raw_bucket: str
    window: tuple[int, int]
    entries: list[ManifestEntry]
    unverified: list[Any]
    digest: str


def node_inputs(settings: Settings, s3: Any, incident_id: str, nodes: Sequence[str] | None = None,
                chunk_s: int | None = None) -> dict[str, NodeInputs]:
    incident = load_incident(settings, s3, incident_id, record=False, statuses=False, summary=False)
    manifest, parts = incident.manifest_document, incident.part_documents
    window = (_ns(manifest["request"]["window_start"]), _ns(manifest["request"]["window_end"]))
    all_entries = [*entries_of(manifest), *(e for part in parts for e in entries_of(part))]
    unverified_all = [u for document in [manifest, *parts] for u in unverified_of(document)]
    wanted = sorted({e.node for e in all_entries} | {u.node for u in unverified_all}) if nodes is None else nodes
    how = f"fanout chunk_s={chunk_s or settings.dissect_chunk_s} warmup_s={settings.dissect_warmup_s}"
    out = {}
    for node in wanted:
        unique = {(e.key, e.version_id): e for e in all_entries if e.node == node}
        entries = sorted(unique.values(), key=lambda e: (e.start_ns, e.key))
        unverified = sorted({(u.key, u.version_id): u for u in unverified_all if u.node == node}.values(),
                            key=lambda u: (u.start_ns, u.key))
        out[node] = NodeInputs(node, manifest.get("raw_bucket", settings.raw_bucket), window, entries, unverified,
                               inputs_digest(entries, [u.to_dict() for u in unverified], how))
    return out


def _plan(settings: Settings, inputs: NodeInputs) -> list[PlannedChunk]:
    chunk_ns = settings.dissect_chunk_s * 1_000_000_000 if settings.dissect_chunk_s else None
    return plan_node(inputs.node, [SegmentSpan.from_entry(e) for e in inputs.entries], window=inputs.window,
                     chunk_ns=chunk_ns, warmup_ns=settings.dissect_warmup_s * 1_000_000_000)


def _status(settings: Settings, s3: Any, key: str) -> dict[str, Any] | None:
    try:
        return s3io.get_json(s3, settings.evidence_bucket, key)
    except NotFoundError:
        return None


def plan_dissection(settings: Settings, s3: Any, incident_id: str,
                    nodes: Sequence[str] | None = None) -> dict[str, Any]:
    """Step 1: the chunk items of every node that changed, written for the Distributed Map; see the module doc."""
    inputs = node_inputs(settings, s3, incident_id, nodes)
    items: list[dict[str, Any]] = []
    chunks: dict[str, list[dict[str, Any]]] = {}
    unchanged = []
    for node, node_input in inputs.items():
        previous = _status(settings, s3, dissect_status_key(incident_id, node))
        if previous is not None and previous.get("inputs_digest") == node_input.digest and \
                previous.get("state") == "done":
            unchanged.append(node)
            continue
        planned = _plan(settings, node_input)
        chunks[node] = [c.to_dict() for c in planned]
        items += [{**c.to_item(incident_id), "inputs_digest": node_input.digest} for c in planned]
    key = dissect_plan_key(incident_id)
    s3io.put_bytes(s3, settings.evidence_bucket, key, json.dumps(items).encode(), content_type="application/json")
    s3io.put_json(s3, settings.evidence_bucket, key.replace("items.json", "nodes.json"),
                  {"schema": PLAN_SCHEMA, "incident_id": incident_id, "chunks": chunks, "unchanged": unchanged})
    logger.info("dissection planned", extra={"incident_id": incident_id, "chunks": len(items),
                                             "nodes": len(inputs), "unchanged": len(unchanged)})
    # Small enough for the state (256 KB): node names only; the items stay in S3.
    return {"incident_id": incident_id, "bucket": settings.evidence_bucket, "key": key, "chunks": len(items),
            "nodes": sorted(inputs)}


def dissect_chunk(settings: Settings, s3: Any, item: Mapping[str, Any]) -> dict[str, Any]:
    """Step 2: one (node, chunk) task; writes the chunk's unmerged tables and its status, returns the status."""
    started = time.monotonic()
    incident_id = str(item["incident_id"])
    node, index, start_ns, end_ns, warmup_ns, open_start, open_end = chunk_of_item(item)
    inputs = node_inputs(settings, s3, incident_id, [node])[node]
    low = warmup_ns if not open_start else None
    high = end_ns if not open_end else None
    chunk_entries = [e for e in inputs.entries if (high is None or e.start_ns < high) and (low is None or
                                                                                          e.end_ns >= low)]
    corrupt: list[dict[str, str]] = []

    def fetch(entry: ManifestEntry) -> bytes:
        stored: bytes = s3io.get_bytes(s3, inputs.raw_bucket, entry.key, entry.version_id)
        try:
            verify_segment(stored, entry)
        except SegmentCorruptError as exc:
            # Reported once, by the chunk that owns the segment's start; the others only leave it out.
            if open_start and entry.start_ns < end_ns or start_ns <= entry.start_ns < end_ns or \
                    open_end and entry.start_ns >= start_ns:
                corrupt.append({"key": entry.key, "version_id": entry.version_id, "reason": str(exc)})
            raise
        return stored

    sources = [SegmentSource(SegmentRef(e.key, e.version_id, e.start_ns, e.end_ns),
                             fetch=(lambda entry=e: fetch(entry))) for e in chunk_entries]  # type: ignore[misc]
    chunk = Chunk(index, 0 if open_start else start_ns, MAX_TS_NS + 1 if open_end else end_ns,
                  None if open_start else warmup_ns)
    result = dissect_segments(node, sources, chunk)
    prefix = chunk_prefix(incident_id, node, index)
    parts = {}
    for name in ENGINE_TABLES:
        parts[name] = f"{prefix}{name}.parquet"
        s3io.put_bytes(s3, settings.evidence_bucket, parts[name], parquet_bytes(result.tables[name]),
                       content_type="application/vnd.apache.parquet")
    extras = result.extras
    rows = sorted(extras.items())
    table = pa.Table.from_arrays([pa.array([r[0] for r in rows], pa.string())]
                                 + [pa.array([r[1][i] for r in rows], pa.int64()) for i in range(4)], schema=EXTRAS)
    parts["_extras"] = f"{prefix}_extras.parquet"
    s3io.put_bytes(s3, settings.evidence_bucket, parts["_extras"], parquet_bytes(table),
                   content_type="application/vnd.apache.parquet")
    status = {"schema": CHUNK_SCHEMA, "incident_id": incident_id, "node": node, "chunk": index,
              "start_ns": start_ns, "end_ns": end_ns, "warmup_start_ns": warmup_ns, "open_start": open_start,
              "open_end": open_end, "inputs_digest": str(item.get("inputs_digest", inputs.digest)),
              "state": "failed" if corrupt else "done", "segments": len(chunk_entries), "parts": parts,
              "stats": result.stats, "corrupt_segments": corrupt,
              "problems": [_problem_dict(row) for row in result.problems.rows],
              "seconds": round(time.monotonic() - started, 3),
              "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    s3io.put_json(s3, settings.evidence_bucket, f"{prefix}status.json", status)
    if corrupt:
        raise SegmentCorruptError(f"incident {incident_id} node {node} chunk {index}: {len(corrupt)} segment(s) "
                                  f"failed verification: {', '.join(c['key'] for c in corrupt)}")
    return {"node": node, "chunk": index, "state": "done"}


def _problem_dict(row: ProblemRow) -> dict[str, Any]:
    return {"key": row.segment.key, "version_id": row.segment.version_id, "start_ns": row.segment.start_ns,
            "end_ns": row.segment.end_ns, "stage": row.stage, "kind": row.kind, "count": row.count,
            "first_offset": row.first_offset, "first_packet": row.first_packet, "message": row.message}


def _problem_row(raw: Mapping[str, Any]) -> ProblemRow:
    return ProblemRow(SegmentRef(raw["key"], raw["version_id"], raw["start_ns"], raw["end_ns"]), raw["stage"],
                      raw["kind"], int(raw["count"]), raw["first_offset"], raw["first_packet"], raw["message"])


def _read_table(s3: Any, bucket: str, key: str) -> pa.Table:
    return pq.read_table(io.BytesIO(s3io.get_bytes(s3, bucket, key)))


def merge_node(settings: Settings, s3: Any, incident_id: str, node: str) -> DissectReport:
    """Step 3: a node's chunks merged into its parts (with its cross-layer tables) and status; holes reported."""
    inputs = node_inputs(settings, s3, incident_id, [node])[node]
    previous = _status(settings, s3, dissect_status_key(incident_id, node))
    if previous is not None and previous.get("inputs_digest") == inputs.digest and previous.get("state") == "done":
        return DissectReport.from_status(previous)
    planned = _plan(settings, inputs)
    report = DissectReport(incident_id, node, inputs_digest=inputs.digest,
                           unverified_segments=[{"key": u.key, "version_id": u.version_id, "reason": u.reason}
                                                for u in inputs.unverified])
    chunks: list[Chunk] = []
    results: list[EngineResult] = []
    holes: list[dict[str, Any]] = []
    for planned_chunk in planned:
        status = _status(settings, s3, chunk_status_key(incident_id, node, planned_chunk.index))
        hole = {"chunk": planned_chunk.index, "start_ns": planned_chunk.start_ns, "end_ns": planned_chunk.end_ns}
        if status is None or status.get("inputs_digest") != inputs.digest or \
                (status.get("start_ns"), status.get("end_ns")) != (planned_chunk.start_ns, planned_chunk.end_ns):
            holes.append({**hole, "error": "the chunk task wrote no result for this pass (failed for good: see the "
                                           "dissection dead-letter queue)"})
            continue
        report.corrupt_segments += list(status.get("corrupt_segments", []))
        if status.get("state") != "done":
            holes.append({**hole, "error": f"{len(status.get('corrupt_segments', []))} corrupt segment(s)"})
        tables = {name: _read_table(s3, settings.evidence_bucket, key) for name, key in status["parts"].items()}
        extras_table = tables.pop("_extras")
        extras = {row["conn_id"]: (row["payload_segments"], row["rtt_samples"], row["rtt_sum_ns"],
                                   row["rtt_jitter_sum_ns"]) for row in extras_table.to_pylist()}
        problems = SegmentProblems(node, [_problem_row(raw) for raw in status.get("problems", [])])
        results.append(EngineResult(tables, problems, dict(status.get("stats", {})), [], {}, extras))
        chunks.append(Chunk(planned_chunk.index, planned_chunk.start_ns, planned_chunk.end_ns,
                            None if planned_chunk.open_start else planned_chunk.warmup_start_ns))
    if results:
        merged = merge_chunk_results(node, chunks, results)
        merged.stats["chunks"] = len(results)
    else:
        merged = EngineResult({name: TABLES[name].empty_table() for name in ENGINE_TABLES}, SegmentProblems(node),
                              {"chunks": 0})
    report.segments = len(inputs.entries) - len(report.corrupt_segments)
    manifest = load_incident(settings, s3, incident_id, record=False, statuses=False, summary=False).manifest_document
    records = context_records(s3, manifest)
    timeline = IpTimeline.from_records(records)
    tables = {name: enrich(table, timeline) for name, table in merged.tables.items()}
    # Cross-layer evidence, as in a one-pass dissection (dissect.job.dissect_node): the node's state, Service flows.
    documents, state_corrupt, state_malformed = frozen_documents(
        s3, manifest, node, manifest.get("raw_bucket", settings.raw_bucket))
    report.corrupt_segments += state_corrupt
    tables.update(node_tables(tables["connections"], records, documents, timeline))
    for item in inputs.unverified:
        merged.problems.add_unverified(SegmentRef(item.key, item.version_id, item.start_ns, item.end_ns), item.reason)
    tables["dissect_errors"] = merged.problems.table()
    report.stats.update(merged.stats)
    report.stats.update(merged.problems.totals())
    report.stats["node_state_documents"] = len(documents)
    report.stats["node_state_malformed"] = state_malformed
    report.stats["chunks_planned"] = len(planned)
    report.stats["chunks_failed"] = len(holes)
    # The node's parts, where a one-pass dissection writes them: finalize builds the incident's views from them.
    cluster = cluster_tables(records)
    for name, table in [*tables.items(), *cluster.items()]:
        key = table_part_key(name, inputs.window[0], incident_id, CLUSTER_PART if name in cluster else node)
        s3io.put_bytes(s3, settings.evidence_bucket, key, parquet_bytes(table),
                       content_type="application/vnd.apache.parquet")
        report.tables[name] = table.num_rows
        report.parts[name] = key
    status_document = report.to_dict()
    status_document["holes"] = holes
    status_document["window_start_ns"] = inputs.window[0]
    if holes and status_document["state"] == "done":
        status_document["state"] = "partial"
    s3io.put_json(s3, settings.evidence_bucket, dissect_status_key(incident_id, node), status_document)
    report.stats["holes"] = len(holes)
    return report


# -- the state machine's steps in one process (local stack, tests)
CHUNK_ATTEMPTS = 3  # the Map's States.ALL retry: MaxAttempts 2, three tries in all


def _with_retries(step: Callable[[], Any], attempts: int = CHUNK_ATTEMPTS) -> tuple[Any, str | None]:
    for attempt in range(1, attempts + 1):
        try:
            return step(), None
        except SegmentCorruptError as exc:
            return None, type(exc).__name__
        except Exception as exc:  # noqa: BLE001 - the Map's catch: this task fails, the others go on
            logger.warning("step attempt failed", extra={"attempt": attempt, "error": type(exc).__name__})
            if attempt == attempts:
                return None, type(exc).__name__
    raise AssertionError("unreachable")  # pragma: no cover


def run_locally(settings: Settings, s3: Any, invoke: Callable[[dict[str, Any]], Mapping[str, Any]],
                incident_id: str, nodes: Sequence[str]) -> list[dict[str, Any]]:
    """Plan, every chunk, every node's merge, through ``invoke`` (the dissect handler); returns node outcomes."""
    plan = invoke({"action": "plan", "incident_id": incident_id, "nodes": list(nodes)})
    for item in plan_items(settings, s3, plan):
        _with_retries(lambda item=item: invoke({"action": "chunk", "item": item}))  # type: ignore[misc]
    outcomes = []
    for node in plan["nodes"]:
        result, error = _with_retries(lambda node=node: invoke({"action": "merge", "incident_id": incident_id,
                                                                "node": node}))  # type: ignore[misc]
        if error is not None:
            outcomes.append({"node": node, "state": "failed", "error": error})
        else:
            outcomes.append({"node": node, "state": "done" if result.get("state") == "done" else "failed",
                             "error": None})
    return outcomes


def plan_items(settings: Settings, s3: Any, plan: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The items the Distributed Map's ItemReader reads (the local stand-in reads them the same way)."""
    items: list[dict[str, Any]] = json.loads(s3io.get_bytes(s3, str(plan["bucket"]), str(plan["key"])))
    return items
