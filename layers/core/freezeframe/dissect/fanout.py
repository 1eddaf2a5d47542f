"""Dissection fanned out over (node, time chunk): the plan, chunk and merge steps of the state machine.

template.yaml's DissectionStateMachine runs, per pass:

1. ``plan_dissection`` (the dissect function, ``{"action": "plan"}``): every node's segments of the manifest and its
   parts, cut by ``dissect.plan`` into chunks that fit the function; the items are written to
   ``keys.dissect_plan_key`` for the Distributed Map's ItemReader. Nodes whose inputs did not change since their
   last merged pass get no chunks (``inputs_digest``).
2. ``dissect_chunk`` (``{"action": "chunk", ...item}``), one task per item, in a Distributed Map with retries and a
   catch per chunk: the chunk's segments are fetched and verified, dissected with the chunk's warm-up
   (``dissect.warmup``) and split (``dissect.chunks.split_chunk``). The rows on neither of its edges -- connections
   that cannot meet another chunk's row, and their dns/http/tls rows -- are final: enriched, with their Service
   flows, they are written at once as the node's part of this chunk (``keys.table_chunk_part_key``,
   ``<node>~<chunk>.parquet`` beside ``<node>.parquet``). The edge rows and the status go under ``keys.chunk_prefix``.
3. The merge, per node in a Map, in three steps, so no task holds a node's rows:

   a. ``merge_connections_step`` (``{"action": "merge-connections", "node": ...}``): the chunks' edge connections
      rows merged (``dissect.chunks.merge_connections``); of the chunk parts it reads only the endpoint columns of
      connections, to move the rows that share an endpoint pair with an edge row, or a UDP pair with a neighbour
      chunk (``udp_pairs``), to the merge (``pull_pairs``: a conversation idle across a whole chunk, a stray late
      segment, a UDP exchange across an edge), and lists their conn_ids in the node's moved list
      (``keys.dissect_moved_key``); the parts are never rewritten. It groups the node's chunks for step b and leaves
      its work under ``keys.merge_prefix``.
   b. ``merge_apps_step`` (``{"action": "merge-apps", "node": ..., "group": n}``), a Map over the groups of
      consecutive chunks: the dns/http/tls rows of those connections re-pointed to the merged rows and completed
      from the warm-up, a group's time span at a time (exact: see the function).
   c. ``merge_node`` (``{"action": "merge", "node": ...}``): the merged rows, enriched, with the node's
      cross-layer tables, are the node's part (``keys.table_part_key``); its dissect status names it, the chunk
      parts and every hole: a chunk without a status of this pass (its task failed for good) or with corrupt
      segments. A hole fails only itself: the other chunks' rows are written, and the status (and so the incident
      summary) reports the hole and its time range. Bound: a Service flow whose translated leg is on the other side
      of the body/edge split (one leg's row continues across an edge, the other's does not) has no backend columns.
      Called alone it runs the missing steps a and b first.

4. The views' fold in hash buckets of endpoint pairs (``freezeframe.dissect.foldshard``): ``plan-fold``, a Map of
   ``route`` over the sources of rows, a Map of ``fold`` over the buckets (phase 1, then 2 for service_flows), then
   ``plan-compact`` and a Map of ``compact`` joining the buckets' files to about 128 MB.
5. finalize (``freezeframe.dissect.finalize``) once: builds the incident's views from every node's parts and chunk
parts,
   without the chunk parts' rows in the node's moved list (``freezeframe.dissect.views``), splits a view larger than
   about
   128 MB into numbered files (``freezeframe.dissect.compact``),
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
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from freezeframe.adapters import s3 as s3io
from freezeframe.adapters.s3 import ObjectStore
from freezeframe.capture.pcapio import MAX_TS_NS
from freezeframe.contracts.config import Settings
from freezeframe.contracts.documents import ChunkStatus, DissectPlan
from freezeframe.contracts.errors import NotFoundError, SegmentCorruptError
from freezeframe.contracts.keys import (
    chunk_file_key,
    chunk_status_key,
    dissect_moved_key,
    dissect_plan_key,
    dissect_plan_nodes_key,
    dissect_status_key,
    merge_prefix,
    table_chunk_part_key,
    table_part_key,
)
from freezeframe.contracts.models import ManifestEntry
from freezeframe.contracts.schemas import TABLES
from freezeframe.custody.incident import load_incident, read_planned_digests
from freezeframe.custody.manifest import entries_of
from freezeframe.custody.pinned import pinned_manifest
from freezeframe.dissect.chunks import (
    APP_TABLES,
    Chunk,
    SharedUdpPairs,
    edge_pairs,
    group_context,
    group_span,
    merge_app_rows,
    merge_connections,
    merge_ids,
    pair_keys,
    split_chunk,
    udp_pairs,
    warm_rows_of,
    with_rows,
)
from freezeframe.dissect.compact import write_options
from freezeframe.dissect.crosslayer import CLUSTER_PART, ServiceTimeline, cluster_tables, node_tables, service_flows
from freezeframe.dissect.engine import mixed_engine
from freezeframe.dissect.enrich import IpTimeline, enrich
from freezeframe.dissect.foldshard import fold_locally
from freezeframe.dissect.job import (
    DissectReport,
    SegmentSource,
    _ns,
    context_records,
    dissect_segments,
    parquet_bytes,
    verify_segment,
)
from freezeframe.dissect.node_state import frozen_documents
from freezeframe.dissect.plan import PlannedChunk, SegmentSpan, chunk_of_item, plan_node
from freezeframe.dissect.problems import ProblemRow, SegmentProblems, SegmentRef
from freezeframe.freeze.follow import inputs_digest
from freezeframe.freeze.unverified import unverified_of

logger = logging.getLogger(__name__)
CHUNK_SCHEMA = ChunkStatus.SCHEMA  # defined in freezeframe.contracts.documents
ENGINE_TABLES = ("connections", "dns", "http", "tls")
BODY_TABLES = (*ENGINE_TABLES, "service_flows")  # a chunk's part: its rows on neither edge
PAIR_COLUMNS = ("proto", "src_ip", "src_port", "dst_ip", "dst_port")  # what dissect.chunks.pair_keys reads
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


def node_inputs(settings: Settings, s3: ObjectStore, incident_id: str, nodes: Sequence[str] | None = None,
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


def _status(settings: Settings, s3: ObjectStore, key: str) -> dict[str, Any] | None:
    try:
        return s3io.get_json(s3, settings.evidence_bucket, key)
    except NotFoundError:
        return None


def plan_dissection(settings: Settings, s3: ObjectStore, incident_id: str,
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
    # Each node's inputs as planned: the merge steps of a node whose inputs changed since (a late part locked
    # during the pass) leave its status alone, and finalize sends the incident round again (``superseded``).
    digests = {node: node_input.digest for node, node_input in inputs.items()}
    s3io.put_json(s3, settings.evidence_bucket, dissect_plan_nodes_key(incident_id),
                  DissectPlan(incident_id, chunks, tuple(unchanged), extra={"digests": digests}).to_dict())
    logger.info("dissection planned", extra={"incident_id": incident_id, "chunks": len(items),
                                             "nodes": len(inputs), "unchanged": len(unchanged)})
    # Small enough for the state (256 KB): node names only; the items stay in S3.
    return {"incident_id": incident_id, "bucket": settings.evidence_bucket, "key": key, "chunks": len(items),
            "nodes": sorted(inputs)}


def superseded(settings: Settings, s3: ObjectStore, incident_id: str, inputs: NodeInputs) -> bool:
    """True when the node's inputs changed after the latest plan (a part locked while the pass ran): its chunks were
    dissected for other inputs, so a merge now would write holes under the new digest and the tables would stop
    short. The merge steps then leave the node's status as it is, and finalize sends the incident round again."""
    planned = read_planned_digests(settings, s3, incident_id).get(inputs.node)
    if planned is None or planned == inputs.digest:
        return False
    logger.info("node inputs changed since the plan; the next pass merges them",
                extra={"incident_id": incident_id, "node": inputs.node})
    return True


def dissect_chunk(settings: Settings, s3: ObjectStore, item: Mapping[str, Any]) -> dict[str, Any]:
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
    # Rows on none of the chunk's edges are final: enriched and written as the node's part of this chunk. The edge
    # rows (and the application rows that point at them) go to the merge step (dissect.chunks.split_chunk).
    body, edge, warm = split_chunk(result.tables, chunk, open_start, open_end)
    records = context_records(s3, pinned_manifest(settings, s3, incident_id))
    timeline = IpTimeline.from_records(records)
    body = {name: enrich(table, timeline) for name, table in body.items()}
    body["service_flows"] = service_flows(body["connections"], ServiceTimeline.from_records(records), timeline)
    chunk_parts = {}
    for name, table in body.items():
        chunk_parts[name] = table_chunk_part_key(name, inputs.window[0], incident_id, node, index)
        s3io.put_bytes(s3, settings.evidence_bucket, chunk_parts[name], parquet_bytes(table),
                       content_type="application/vnd.apache.parquet")
    parts = {}
    for name in ENGINE_TABLES:
        parts[name] = chunk_file_key(incident_id, node, index, f"edge-{name}")
        _put_table(settings, s3, parts[name], edge[name])
    for name, table in warm.items():
        parts[f"_warm_{name}"] = chunk_file_key(incident_id, node, index, f"warm-{name}")
        _put_table(settings, s3, parts[f"_warm_{name}"], table)
    left, right = udp_pairs(result.tables["connections"], chunk, open_start, open_end,
                            settings.dissect_warmup_s * 1_000_000_000)
    parts["_udp_pairs"] = chunk_file_key(incident_id, node, index, "udp-pairs")
    _put_table(settings, s3, parts["_udp_pairs"], pa.table({
        "pair": pa.concat_arrays([left, right]),
        "left": pa.array([True] * len(left) + [False] * len(right), pa.bool_())}))
    edge_ids = set(edge["connections"].column("conn_id").to_pylist())
    for name, wanted in (("_extras", True), ("_extras_body", False)):
        rows = sorted(item for item in result.extras.items() if (item[0] in edge_ids) == wanted)
        table = pa.Table.from_arrays([pa.array([r[0] for r in rows], pa.string())]
                                     + [pa.array([r[1][i] for r in rows], pa.int64()) for i in range(4)],
                                     schema=EXTRAS)
        parts[name] = chunk_file_key(incident_id, node, index, name.lstrip("_").replace("_", "-"))
        _put_table(settings, s3, parts[name], table)
    status = {"schema": CHUNK_SCHEMA, "incident_id": incident_id, "node": node, "chunk": index,
              "start_ns": start_ns, "end_ns": end_ns, "warmup_start_ns": warmup_ns, "open_start": open_start,
              "open_end": open_end, "inputs_digest": str(item.get("inputs_digest", inputs.digest)),
              "state": "failed" if corrupt else "done", "segments": len(chunk_entries), "parts": parts,
              "chunk_parts": chunk_parts, "body_rows": {name: table.num_rows for name, table in body.items()},
              "edge_rows": edge["connections"].num_rows,
              "stats": result.stats, "engine": result.engine, "corrupt_segments": corrupt,
              "problems": [_problem_dict(row) for row in result.problems.rows],
              "seconds": round(time.monotonic() - started, 3),
              "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    s3io.put_json(s3, settings.evidence_bucket, chunk_status_key(incident_id, node, index), status)
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


def _read_table(s3: ObjectStore, bucket: str, key: str) -> pa.Table:
    return pq.read_table(io.BytesIO(s3io.get_bytes(s3, bucket, key)))


def _extras_of(table: pa.Table) -> dict[str, tuple[int, int, int, int]]:
    return {row["conn_id"]: (row["payload_segments"], row["rtt_samples"], row["rtt_sum_ns"], row["rtt_jitter_sum_ns"])
            for row in table.to_pylist()}


def _put_table(settings: Settings, s3: ObjectStore, key: str, table: pa.Table) -> None:
    s3io.put_bytes(s3, settings.evidence_bucket, key, parquet_bytes(table),
                   content_type="application/vnd.apache.parquet")


MERGE_SCHEMA = "freezeframe.dissect-merge/v1"
# A merge-apps task takes consecutive chunks until their rows (chunk parts and edges) reach this: it reads those
# chunks' application rows whole, so its time and memory follow it (tests/bench/bench_scale.py models it: at 1 M rows
# a group measured 1.29 to 1.54 GB, on both sides of half a 3008 MB function; 800 k keeps it near 1.2 GB).
GROUP_ROWS = 800_000


def _chunk_entry(planned_chunk: PlannedChunk, status: Mapping[str, Any]) -> dict[str, Any]:
    return {"index": planned_chunk.index, "start_ns": planned_chunk.start_ns, "end_ns": planned_chunk.end_ns,
            "warmup_start_ns": None if planned_chunk.open_start else planned_chunk.warmup_start_ns,
            "open_start": planned_chunk.open_start, "open_end": planned_chunk.open_end,
            "parts": status["parts"], "chunk_parts": status["chunk_parts"],
            "body_rows": status.get("body_rows", {}), "edge_rows": int(status.get("edge_rows", 0))}


def _chunk_of_entry(entry: Mapping[str, Any]) -> Chunk:
    return Chunk(int(entry["index"]), int(entry["start_ns"]), int(entry["end_ns"]), entry["warmup_start_ns"])


def _groups(entries: Sequence[Mapping[str, Any]], limit: int | None = None) -> list[list[int]]:
    """Consecutive chunks, each group's rows (body and edge) up to ``limit`` (``GROUP_ROWS``; at least one chunk a
    group)."""
    limit = GROUP_ROWS if limit is None else limit
    groups: list[list[int]] = []
    rows = 0
    for entry in entries:
        size = sum(int(n) for n in entry["body_rows"].values()) + int(entry["edge_rows"])
        if not groups or rows + size > limit:
            groups.append([])
            rows = 0
        groups[-1].append(int(entry["index"]))
        rows += size
    return groups


def merge_connections_step(settings: Settings, s3: ObjectStore, incident_id: str, node: str) -> dict[str, Any]:
    """Step 3a: a node's connections rows at its chunks' edges merged (``dissect.chunks.merge_connections``) into one
    row per connection; the application rows are left to ``merge_apps_step``, a group of chunks at a time.

    Reads the chunks' edge connections, UDP pairs and extras, and of each chunk part only the endpoint columns of
    connections, reading the connections part whole when it holds a row of an edge's pair (``pull_pairs``). Writes
    under ``keys.merge_prefix``: the merged connections, the map of part conn_ids to merged ones, the conn_ids of the
    merge's rows, the moved rows (per chunk) and ``state.json`` (the chunks, their groups, holes, problems, counts).
    Returns the groups for the state machine's Map (none when the node's status is already done for its inputs)."""
    inputs = node_inputs(settings, s3, incident_id, [node])[node]
    previous = _status(settings, s3, dissect_status_key(incident_id, node))
    if previous is not None and previous.get("inputs_digest") == inputs.digest and previous.get("state") == "done":
        return {"node": node, "groups": []}
    if superseded(settings, s3, incident_id, inputs):
        return {"node": node, "groups": [], "superseded": True}
    planned = _plan(settings, inputs)
    bucket = settings.evidence_bucket
    entries: list[dict[str, Any]] = []
    parts: list[pa.Table] = []
    extras: list[dict[str, tuple[int, int, int, int]]] = []
    udp = SharedUdpPairs(settings.dissect_warmup_s * 1_000_000_000)  # chunks in time order: a window is held
    problems: list[dict[str, Any]] = []
    corrupt: list[dict[str, Any]] = []
    stats: dict[str, int] = {}
    engines: set[str] = set()
    holes: list[dict[str, Any]] = []
    for planned_chunk in planned:
        status = _status(settings, s3, chunk_status_key(incident_id, node, planned_chunk.index))
        hole = {"chunk": planned_chunk.index, "start_ns": planned_chunk.start_ns, "end_ns": planned_chunk.end_ns}
        if status is None or status.get("schema") != CHUNK_SCHEMA or status.get("inputs_digest") != inputs.digest or \
                (status.get("start_ns"), status.get("end_ns")) != (planned_chunk.start_ns, planned_chunk.end_ns):
            holes.append({**hole, "error": "the chunk task wrote no result for this pass (failed for good: see the "
                                           "dissection dead-letter queue)"})
            continue
        corrupt += list(status.get("corrupt_segments", []))
        if status.get("state") != "done":
            holes.append({**hole, "error": f"{len(status.get('corrupt_segments', []))} corrupt segment(s)"})
        parts.append(_read_table(s3, bucket, status["parts"]["connections"]))
        pairs_table = _read_table(s3, bucket, status["parts"]["_udp_pairs"])
        is_left = pairs_table.column("left")
        udp.add(Chunk(planned_chunk.index, planned_chunk.start_ns, planned_chunk.end_ns),
                pairs_table.column("pair").filter(is_left).combine_chunks(),
                pairs_table.column("pair").filter(pc.invert(is_left)).combine_chunks())
        extras.append(_extras_of(_read_table(s3, bucket, status["parts"]["_extras"])))
        problems += list(status.get("problems", []))
        for key, value in status.get("stats", {}).items():
            stats[key] = stats.get(key, 0) + value
        engines.add(str(status.get("engine", "")))
        entries.append(_chunk_entry(planned_chunk, status))
    pairs = edge_pairs([{"connections": part} for part in parts], udp.pairs())
    moved_chunks: list[pa.Array] = []
    moved_ids: list[pa.Array] = []
    moved_flows = 0
    pulled = 0
    for number, entry in enumerate(entries):
        moved = _pull_connections(settings, s3, entry, pairs)
        if moved is None or not moved.num_rows:
            continue
        # Every row of an edge's endpoint pair, wherever it was, so the merge folds exactly what a full merge folds.
        pulled += moved.num_rows
        ids = moved.column("conn_id").combine_chunks()
        if entry["body_rows"].get("service_flows"):
            flows = _read_table(s3, bucket, entry["chunk_parts"]["service_flows"]).column("conn_id")
            moved_flows += pc.sum(pc.is_in(flows, value_set=ids)).as_py() or 0
        body_extras = _read_table(s3, bucket, entry["parts"]["_extras_body"])
        extras[number].update(_extras_of(body_extras.filter(pc.is_in(body_extras.column("conn_id"), value_set=ids))))
        parts[number] = with_rows(parts[number], moved)
        moved_ids.append(ids)
        moved_chunks.append(pa.array([entry["index"]] * len(ids), pa.int64()))
    if parts:
        merged = merge_connections(node, parts, None, extras)
        connections, conn_ids, merged_rows = merged.table, merged.conn_ids, merged.merged_rows
    else:
        connections, conn_ids, merged_rows = TABLES["connections"].empty_table(), {}, 0
    prefix = merge_prefix(incident_id, node, inputs.digest)
    _put_table(settings, s3, f"{prefix}connections.parquet", connections)
    _put_table(settings, s3, f"{prefix}remap.parquet", pa.table({
        "conn_id": pa.array(list(conn_ids), pa.string()), "merged": pa.array(list(conn_ids.values()), pa.string())}))
    _put_table(settings, s3, f"{prefix}ids.parquet", pa.table({"conn_id": merge_ids(
        {"connections": part} for part in parts)}))
    _put_table(settings, s3, f"{prefix}moved.parquet", pa.table({
        "chunk": pa.concat_arrays(moved_chunks) if moved_chunks else pa.array([], pa.int64()),
        "conn_id": pa.concat_arrays(moved_ids) if moved_ids else pa.array([], pa.string())}))
    groups = _groups(entries)
    # A re-run of this step is a new run: the groups' results of an earlier run no longer count (merge_node).
    state = {"schema": MERGE_SCHEMA, "incident_id": incident_id, "node": node, "inputs_digest": inputs.digest,
             "run": uuid.uuid4().hex, "chunks": entries, "groups": groups, "holes": holes,
             "corrupt_segments": corrupt, "problems": problems,
             "stats": stats, "engine": mixed_engine(engines), "planned": len(planned), "merged_rows": merged_rows,
             "pulled": pulled,
             "edge_rows": sum(part.num_rows for part in parts), "moved_service_flows": moved_flows}
    s3io.put_json(s3, bucket, f"{prefix}state.json", state)
    return {"node": node, "groups": list(range(len(groups)))}


def _pull_connections(settings: Settings, s3: ObjectStore, entry: Mapping[str, Any],
                      pairs: pa.Array) -> pa.Table | None:
    """The connections rows of a chunk's part whose endpoint pair is an edge row's or a shared UDP pair
    (``dissect.chunks.pull_pairs``); None when there are none. Reading a part costs only its endpoint columns unless
    it has such rows. The part is left as it is: the node's moved list names them (``keys.dissect_moved_key``), and
    the views read the part without them."""
    if not len(pairs):
        return None
    bucket = settings.evidence_bucket
    stored = s3io.get_bytes(s3, bucket, entry["chunk_parts"]["connections"])
    keys = pq.read_table(io.BytesIO(stored), columns=list(PAIR_COLUMNS))
    if not keys.num_rows:
        return None
    mask = pc.is_in(pair_keys(keys), value_set=pairs)
    if not pc.any(mask).as_py():
        return None
    return pq.read_table(io.BytesIO(stored)).filter(mask)


def _state(settings: Settings, s3: ObjectStore, incident_id: str, node: str, digest: str) -> dict[str, Any] | None:
    state = _status(settings, s3, f"{merge_prefix(incident_id, node, digest)}state.json")
    return state if state is not None and state.get("schema") == MERGE_SCHEMA else None


def merge_apps_step(settings: Settings, s3: ObjectStore, incident_id: str, node: str, group: int) -> dict[str, Any]:
    """Step 3b, one task per group of consecutive chunks (``state.json``'s groups): the dns/http/tls rows of the
    group's chunks that the merge holds -- those at an edge, those of the rows moved from the chunk parts, and the
    warm-up's rows of a merged connection -- re-pointed to the merged connections and completed from the warm-up
    (``dissect.chunks.replace_warm_rows``), enriched, written for the node's part.

    Exact as the node-wide merge: a warm-up row replaces the row with its conn_id and time, which is in the chunk
    that owns that time, so each group takes the warm-up rows stamped in its own time span, from its chunks and from
    the later chunks whose warm-up reaches back into it, in chunk order."""
    inputs = node_inputs(settings, s3, incident_id, [node])[node]
    if superseded(settings, s3, incident_id, inputs):  # a part came after merge-connections: the next pass merges
        return {"node": node, "group": group, "superseded": True}
    state = _state(settings, s3, incident_id, node, inputs.digest)
    if state is None:
        raise NotFoundError(f"incident {incident_id} node {node}: no merge state for this pass (merge-connections "
                            f"runs first)")
    bucket = settings.evidence_bucket
    prefix = merge_prefix(incident_id, node, inputs.digest)
    members = set(state["groups"][group])
    entries = list(state["chunks"])
    chunks = [_chunk_of_entry(entry) for entry in entries]
    positions = [number for number, entry in enumerate(entries) if entry["index"] in members]
    chosen = [*positions, *group_context(chunks, positions)]
    remap_table = _read_table(s3, bucket, f"{prefix}remap.parquet")
    remap = dict(zip(remap_table.column("conn_id").to_pylist(), remap_table.column("merged").to_pylist(),
                     strict=True))
    ids = _read_table(s3, bucket, f"{prefix}ids.parquet").column("conn_id").combine_chunks()
    moved = _read_table(s3, bucket, f"{prefix}moved.parquet")
    records = context_records(s3, pinned_manifest(settings, s3, incident_id))
    timeline = IpTimeline.from_records(records)
    moved_rows = dict.fromkeys(APP_TABLES, 0)
    outputs: dict[str, str] = {}
    per_name: dict[str, list[pa.Table]] = {name: [] for name in APP_TABLES}
    for number in chosen:
        entry = entries[number]
        own = entry["index"] in members
        chunk_moved = moved.filter(pc.equal(moved.column("chunk"), entry["index"])).column("conn_id") if own else \
            pa.array([], pa.string())
        warm = {}
        if len(ids) and entry["warmup_start_ns"] is not None:
            warm = warm_rows_of({name: _read_table(s3, bucket, entry["parts"][f"_warm_{name}"])
                                 for name in APP_TABLES}, ids)
        for name in APP_TABLES:
            # The chunk's rows in the merge, as the node-wide merge takes them: at its edges, of its rows moved from
            # its part, of its warm-up (a merged connection's).
            table = _read_table(s3, bucket, entry["parts"][name])
            if own and len(chunk_moved) and entry["body_rows"].get(name):
                body = _read_table(s3, bucket, entry["chunk_parts"][name])
                taken = body.filter(pc.fill_null(pc.is_in(body.column("conn_id"), value_set=chunk_moved), False))
                moved_rows[name] += taken.num_rows
                table = with_rows(table, taken)
            if name in warm:
                table = with_rows(table, warm[name])
            per_name[name].append(table)
    span = group_span(chunks, positions)
    for name in APP_TABLES:
        table = enrich(merge_app_rows([chunks[n] for n in chosen], per_name[name], span, remap, TABLES[name]),
                       timeline)
        outputs[name] = f"{prefix}apps-{group:05d}-{name}.parquet"
        _put_table(settings, s3, outputs[name], table)
    result = {"schema": MERGE_SCHEMA, "run": state["run"], "group": group, "chunks": sorted(members),
              "moved_rows": moved_rows,
              "parts": outputs}
    s3io.put_json(s3, bucket, f"{prefix}apps-{group:05d}.json", result)
    return {"node": node, "group": group, "state": "done"}


def _concat_parquet(s3: ObjectStore, bucket: str, keys: Sequence[str], schema: pa.Schema) -> tuple[bytes, int]:
    """Several Parquet files of one table as one file's bytes, one file in memory at a time; and its rows."""
    sink = io.BytesIO()
    rows = 0
    with pq.ParquetWriter(sink, schema, **write_options(schema)) as writer:
        for key in keys:
            table = _read_table(s3, bucket, key).cast(schema)
            rows += table.num_rows
            if table.num_rows:
                writer.write_table(table)
    return sink.getvalue(), rows


def merge_node(settings: Settings, s3: ObjectStore, incident_id: str, node: str) -> DissectReport:
    """Step 3c: the node's part from the merge steps' work (run here first when a step's result is missing: the
    handler's ``merge`` alone does the whole merge), with its cross-layer tables; its status names the chunk parts,
    which finalize reads with the node's part, and every hole."""
    inputs = node_inputs(settings, s3, incident_id, [node])[node]
    previous = _status(settings, s3, dissect_status_key(incident_id, node))
    if previous is not None and previous.get("inputs_digest") == inputs.digest and previous.get("state") == "done":
        return DissectReport.from_status(previous)
    if superseded(settings, s3, incident_id, inputs):
        # The last pass's tables stand until the next pass (finalize sees this node's status behind the plan).
        if previous is not None:
            return DissectReport.from_status(previous)
        return DissectReport(incident_id, node, skipped=True)
    bucket = settings.evidence_bucket
    prefix = merge_prefix(incident_id, node, inputs.digest)
    state = _state(settings, s3, incident_id, node, inputs.digest)
    if state is None:
        merge_connections_step(settings, s3, incident_id, node)
        state = _state(settings, s3, incident_id, node, inputs.digest)
        assert state is not None
    groups = []
    for group in range(len(state["groups"])):
        result = _status(settings, s3, f"{prefix}apps-{group:05d}.json")
        if result is None or result.get("run") != state["run"]:
            merge_apps_step(settings, s3, incident_id, node, group)
            result = _status(settings, s3, f"{prefix}apps-{group:05d}.json")
            assert result is not None
        groups.append(result)
    report = DissectReport(incident_id, node, inputs_digest=inputs.digest,
                           unverified_segments=[{"key": u.key, "version_id": u.version_id, "reason": u.reason}
                                                for u in inputs.unverified])
    report.corrupt_segments += list(state["corrupt_segments"])
    report.engine = str(state.get("engine", ""))
    holes = list(state["holes"])
    problems = SegmentProblems(node, [_problem_row(raw) for raw in state["problems"]])
    stats = dict(state["stats"])
    entries = state["chunks"]
    body_rows = {name: sum(int(e["body_rows"].get(name, 0)) for e in entries) for name in BODY_TABLES}
    body_rows["connections"] -= int(state["pulled"])
    body_rows["service_flows"] -= int(state["moved_service_flows"])
    for result in groups:
        for name, count in result["moved_rows"].items():
            body_rows[name] -= int(count)
    stats.update({"chunks": len(entries), "chunk_rows_merged": int(state["merged_rows"]),
                  "chunk_edge_rows": int(state["edge_rows"]), "chunk_rows_pulled": int(state["pulled"]),
                  "merge_groups": len(groups)})
    report.segments = len(inputs.entries) - len(report.corrupt_segments)
    manifest = load_incident(settings, s3, incident_id, record=False, statuses=False, summary=False).manifest_document
    records = context_records(s3, manifest)
    timeline = IpTimeline.from_records(records)
    connections = enrich(_read_table(s3, bucket, f"{prefix}connections.parquet"), timeline)
    # Cross-layer evidence, as in a one-pass dissection (dissect.job.dissect_node): the node's state, Service flows
    # (of the merged rows here; each chunk task wrote those of its own rows).
    documents, state_corrupt, state_malformed = frozen_documents(
        s3, manifest, node, manifest.get("raw_bucket", settings.raw_bucket))
    report.corrupt_segments += state_corrupt
    tables = {"connections": connections, **node_tables(connections, records, documents, timeline)}
    for item in inputs.unverified:
        problems.add_unverified(SegmentRef(item.key, item.version_id, item.start_ns, item.end_ns), item.reason)
    tables["dissect_errors"] = problems.table()
    report.stats.update(stats)
    report.stats.update(problems.totals())
    report.stats["node_state_documents"] = len(documents)
    report.stats["node_state_malformed"] = state_malformed
    report.stats["chunks_planned"] = int(state["planned"])
    report.stats["chunks_failed"] = len(holes)
    # The node's part, where a one-pass dissection writes it, and its chunks' parts: finalize reads them all. The
    # application rows come from the groups' files in time order, one file in memory at a time.
    cluster = cluster_tables(records)
    for name in APP_TABLES:
        key = table_part_key(name, inputs.window[0], incident_id, node)
        body, rows = _concat_parquet(s3, bucket, [result["parts"][name] for result in groups], TABLES[name])
        s3io.put_bytes(s3, bucket, key, body, content_type="application/vnd.apache.parquet")
        report.tables[name] = rows + body_rows.get(name, 0)
        report.parts[name] = key
    for name, table in [*tables.items(), *cluster.items()]:
        key = table_part_key(name, inputs.window[0], incident_id, CLUSTER_PART if name in cluster else node)
        _put_table(settings, s3, key, table)
        report.tables[name] = table.num_rows + body_rows.get(name, 0)
        report.parts[name] = key
    # The rows of the chunk parts folded into the node's part: the views leave them out of the chunk parts.
    moved = _read_table(s3, bucket, f"{prefix}moved.parquet").select(["conn_id"])
    _put_table(settings, s3, dissect_moved_key(incident_id, node), moved)
    status_document = report.to_dict()
    status_document["chunk_parts"] = [key for entry in entries for key in entry["chunk_parts"].values()]
    status_document["moved_rows"] = dissect_moved_key(incident_id, node)
    status_document["holes"] = holes
    status_document["window_start_ns"] = inputs.window[0]
    if holes and status_document["state"] == "done":
        status_document["state"] = "partial"
    s3io.put_json(s3, bucket, dissect_status_key(incident_id, node), status_document)
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


def run_locally(settings: Settings, s3: ObjectStore, invoke: Callable[[dict[str, Any]], Mapping[str, Any]],
                incident_id: str, nodes: Sequence[str]) -> list[dict[str, Any]]:
    """Plan, every chunk, every node's merge steps, then the views' sharded fold, through ``invoke`` (the dissect
    handler); returns node outcomes."""
    plan = invoke({"action": "plan", "incident_id": incident_id, "nodes": list(nodes)})
    for item in plan_items(settings, s3, plan):
        _with_retries(lambda item=item: invoke({"action": "chunk", "item": item}))  # type: ignore[misc]
    outcomes = []
    for node in plan["nodes"]:
        # The node's merge steps as the state machine runs them: its connections, a Map over its groups of chunks
        # for their application rows, then its part and status; a step that fails for good fails the node.
        step = {"incident_id": incident_id, "node": node}
        merged, error = _with_retries(lambda step=step: invoke({"action": "merge-connections", **step}))  # type: ignore[misc]
        for group in (merged or {}).get("groups", []) if error is None else []:
            _done, error = _with_retries(lambda step=step, group=group: invoke(  # type: ignore[misc]
                {"action": "merge-apps", **step, "group": group}))
            if error is not None:
                break
        if error is not None:
            outcomes.append({"node": node, "state": "failed", "error": error})
            continue
        result, error = _with_retries(lambda node=node: invoke({"action": "merge", "incident_id": incident_id,
                                                                "node": node}))  # type: ignore[misc]
        if error is not None:
            outcomes.append({"node": node, "state": "failed", "error": error})
        else:
            outcomes.append({"node": node, "state": "done" if result.get("state") == "done" else "failed",
                             "error": None})
    # The views' fold in hash buckets (dissect.foldshard): plan-fold, route, fold; finalize reads its plan.
    fold_locally(settings, s3, incident_id, plan["nodes"], invoke, _with_retries)
    return outcomes


def plan_items(settings: Settings, s3: ObjectStore, plan: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The items the Distributed Map's ItemReader reads (the local stand-in reads them the same way)."""
    items: list[dict[str, Any]] = json.loads(s3io.get_bytes(s3, str(plan["bucket"]), str(plan["key"])))
    return items
