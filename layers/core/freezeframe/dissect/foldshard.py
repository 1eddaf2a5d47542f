"""The views' fold sharded over hash buckets of endpoint pairs: plan-fold, route and fold steps (issue 17).

`observers.combine` folds the sightings of one conversation from several nodes; finalize ran it over every row of the
incident in one function, which cannot hold a large incident (about 3.5 KB and 39 us per row). Every identity the
fold uses keeps the unordered endpoint pair: connections group by (proto, pair), dns by (pair, transport, id, qname,
qtype), http and tls by their (re-pointed) connection, which has the pair of the row's own endpoint columns. So every
row is routed to bucket ``crc32(pair) mod B`` and each bucket is folded alone; the buckets' views together are
exactly ``combine`` of everything (tests/unit/dissect/test_foldshard.py). The pair alone is hashed, not the protocol:
the application rows carry no ``proto``, and a coarser key keeps every group whole.

Steps (the dissect function's actions, after the node merges; finalize then reads the results):

1. ``plan_fold`` (``plan-fold``): B from the nodes' statuses (rows of the routed tables over ``FOLD_ROWS`` a task), the
   sources of rows, written with the day and a run id as the fold plan (``keys.fold_plan_key``), the route items and
   the fold items for Distributed Maps. B == 1: nothing is routed; finalize folds in-process as before.
2. ``route_step`` (``route``), one task per source (a node's part; for a node fanned out in time chunks one source
   per merge group: the group's chunk parts less the node's moved rows plus the group's merged application rows):
   writes ONE object with its rows sorted by bucket (``encode_routed``), keyed by B and the node's status, so a
   re-run reuses it.
3. ``fold_step`` (``fold``), one task per bucket. Phase 1 reads bucket b of every source (two ranged GETs each),
   folds connections, dns, http and tls with ``combine`` (``fold_bucket``: in pieces of about ``FOLD_PIECE_ROWS``
   input rows, a finer hash of the same pair, so a task holds one piece's Python rows at a time), writes their view
   files ``bucket-<b>.parquet`` and re-points the bucket's service_flows ``conn_id``. A flow's ``backend_conn_id``
   names a connection usually in another bucket, so phase 1 routes its flows to the flow task of the backend's bucket
   (bucket mod T, T = the service_flows rows over ``FOLD_ROWS``), with the map of its own re-pointed conn_ids to its
   own task; phase 2 (only when the incident has service_flows rows), one task per flow task, re-points them and
   writes their views ``bucket-<t>.parquet``: B x T GETs in all, not B x B.
4. ``plan_compact`` (``plan-compact``) and ``compact_step`` (``compact``), one task per run of consecutive buckets
   whose files add up to about 128 MB: the run's files joined into ``part-<g>.parquet``; finalize empties the bucket
   files of every compacted run (``compacted``) and keeps those of a run that failed.

The routed format: a header (magic, B), B + 1 little-endian int64 offsets (bucket b is bytes [off[b], off[b+1])),
then per bucket a directory (count, then per non-empty table its code, stored and message lengths) and each table's
rows as one Arrow IPC record batch message compressed with zstd, the schema known from ``FORMAT_TABLES`` (never
repeated per bucket).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import struct
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from freezeframe.adapters import s3 as s3io
from freezeframe.adapters.s3 import ObjectStore
from freezeframe.contracts.config import Settings
from freezeframe.contracts.documents import FoldPlan
from freezeframe.contracts.errors import FreezeframeError, NotFoundError, PayloadError
from freezeframe.contracts.keys import (
    fold_compact_items_key,
    fold_compact_result_key,
    fold_flow_items_key,
    fold_flows_key,
    fold_items_key,
    fold_plan_key,
    fold_result_key,
    fold_route_items_key,
    fold_route_key,
    merge_prefix,
    parse_table_part_key,
    view_bucket_key,
    view_compact_key,
)
from freezeframe.contracts.schemas import TABLES, VIEWS
from freezeframe.custody.incident import load_incident
from freezeframe.custody.incident import read_statuses as read_typed_statuses
from freezeframe.dissect.chunks import sort_rows
from freezeframe.dissect.compact import TARGET_BYTES, split_parquet, stream_parquet
from freezeframe.dissect.observers import Combined, combine
from freezeframe.dissect.views import PARQUET, without_moved
from freezeframe.freeze.follow import incident_nodes

logger = logging.getLogger(__name__)

# Input rows per fold task (FREEZEFRAME_FOLD_ROWS overrides it). A task holds its bucket's rows in Arrow and folds
# them FOLD_PIECE_ROWS at a time: `combine` turns the rows it folds into Python rows (about 4 KB each,
# tests/bench/bench_scale.py), which a whole bucket of 400 k rows would take to 1.9 GB, over half of a 3008 MB
# function; a piece of 100 k stays near 0.4 GB.
FOLD_ROWS = 400_000
FOLD_PIECE_ROWS = 100_000
# Finalize folds a one-bucket incident in-process and in one piece, beside the report (a 2048 MB function): more rows
# than this are folded by the steps, in at least two buckets.
FINALIZE_FOLD_ROWS = FOLD_PIECE_ROWS
FOLDED = ("connections", "dns", "http", "tls")
ROUTED = (*FOLDED, "service_flows")  # the other tables are small and never folded across nodes: finalize writes them
RESULT_SCHEMA = "freezeframe.dissect-fold-result/v1"  # a fold task's result (rows and files of its bucket)
COMPACT_SCHEMA = "freezeframe.dissect-compact-result/v1"  # a compaction task's result (files written and joined)
READERS = 16  # concurrent ranged GETs of a fold task
ENDPOINTS = ("src_ip", "src_port", "dst_ip", "dst_port")
FLOW_ENDPOINTS = ("src_ip", "src_port", "cluster_ip", "port")
BACKEND_BUCKET = "_backend_bucket"
REPOINT = "_repoint"
FORMAT_TABLES: dict[str, pa.Schema] = {
    **{name: TABLES[name] for name in FOLDED},
    "service_flows": TABLES["service_flows"].append(pa.field(BACKEND_BUCKET, pa.int32())),
    REPOINT: pa.schema([("node", pa.string()), ("conn_id", pa.string()), ("view_conn_id", pa.string())]),
}
_CODES = tuple(FORMAT_TABLES)
MAGIC = b"FFROUTE1"
_HEADER = struct.Struct("<8sII")  # magic, buckets, reserved
_COUNT = struct.Struct("<I")
_ENTRY = struct.Struct("<IQQ")  # table code, stored (zstd) bytes, message bytes
CODEC = "zstd"
_OFFSETS = struct.Struct("<qq")


class FoldError(FreezeframeError):
    """A fold step cannot do its work as planned (its plan is missing, or its rows are not what the plan said)."""


def fold_buckets(rows: int, rows_per_task: int = FOLD_ROWS) -> int:
    """How many buckets (fold tasks) for ``rows`` input rows: at least one, each about ``rows_per_task``."""
    return max(1, math.ceil(rows / max(1, rows_per_task)))


def plan_buckets(rows: int, rows_per_task: int = FOLD_ROWS) -> int:
    """The fold plan's B: ``fold_buckets``, but at least two when there are more than ``FINALIZE_FOLD_ROWS`` rows,
    so finalize never holds more than that many Python rows."""
    buckets = fold_buckets(rows, rows_per_task)
    return 2 if buckets == 1 and rows > FINALIZE_FOLD_ROWS else buckets


# -- the bucket of a row
def _endpoint(ip: pa.ChunkedArray | pa.Array, port: pa.ChunkedArray | pa.Array) -> pa.Array:
    return pc.binary_join_element_wise(pc.fill_null(ip.cast(pa.string()), ""),
                                       pc.fill_null(port.cast(pa.string()), ""), ",")


def pair_keys(table: pa.Table, columns: Sequence[str] = ENDPOINTS) -> pa.Array:
    """Each row's unordered endpoint pair as text: ``<ip>,<port>|<ip>,<port>``, the lesser endpoint first (an empty
    port for protocols without one)."""
    a = _endpoint(table.column(columns[0]), table.column(columns[1]))
    b = _endpoint(table.column(columns[2]), table.column(columns[3]))
    first = pc.less_equal(a, b)
    return pc.binary_join_element_wise(pc.if_else(first, a, b), pc.if_else(first, b, a), "|")


def key_bucket(key: str, buckets: int) -> int:
    """The bucket of one pair key: CRC-32 (zlib) of its UTF-8 bytes modulo the bucket count, stable everywhere."""
    return zlib.crc32(key.encode()) % buckets


def _by_pair(table: pa.Table, of_hash: Callable[[int], int], columns: Sequence[str] = ENDPOINTS) -> pa.Array:
    """``of_hash(crc32 of the row's pair key)`` for each row (int32), hashing each distinct pair once."""
    encoded = pc.dictionary_encode(pa.chunked_array(pair_keys(table, columns)).combine_chunks())
    values = pa.array([of_hash(zlib.crc32(key.encode())) for key in encoded.dictionary.to_pylist()], pa.int32())
    return pc.take(values, encoded.indices)


def buckets_of(table: pa.Table, buckets: int, columns: Sequence[str] = ENDPOINTS) -> pa.Array:
    """Each row's bucket (int32): ``key_bucket`` of its pair."""
    if buckets == 1 or not table.num_rows:
        return pa.array([0] * table.num_rows, pa.int32())
    return _by_pair(table, lambda crc: crc % buckets, columns)


def pieces_of(table: pa.Table, buckets: int, pieces: int) -> pa.Array:
    """Each row's piece inside its bucket (int32): ``crc32(pair) // B mod pieces``, a function of the pair again."""
    if pieces == 1 or not table.num_rows:
        return pa.array([0] * table.num_rows, pa.int32())
    return _by_pair(table, lambda crc: crc // buckets % pieces)


def _view_order(name: str, table: pa.Table) -> pa.Table:
    """A view in combine's order (time, then conn_id, then node), for the pieces' views put together."""
    time_column = "first_ts_ns" if name == "connections" else "ts_ns" if "ts_ns" in table.schema.names else None
    keys = [(column, "ascending") for column in (time_column, "conn_id", "node") if column in table.schema.names]
    return table.take(pc.sort_indices(table, sort_keys=keys)) if keys else table


def fold_bucket(per_node: Mapping[str, Mapping[str, pa.Table]], buckets: int,
                piece_rows: int = FOLD_PIECE_ROWS) -> Combined:
    """``combine`` of one bucket's rows (``per_node[node][table]``, each node's rows in ``sort_rows`` order), folded
    in pieces of about ``piece_rows`` input rows. A piece is a finer hash of the same endpoint pair, so every
    conversation's sightings are in one piece and the pieces' views together are ``combine`` of the bucket (tested),
    while only one piece's rows are Python rows at a time."""
    rows = sum(table.num_rows for tables in per_node.values() for table in tables.values())
    pieces = max(1, math.ceil(rows / max(1, piece_rows)))
    if pieces == 1:
        return combine(per_node)
    index = {node: {name: pieces_of(table, buckets, pieces) for name, table in tables.items()}
             for node, tables in per_node.items()}
    views: dict[str, list[pa.Table]] = {}
    conn_ids: dict[tuple[str, str], str] = {}
    for piece in range(pieces):
        combined = combine({node: {name: table.filter(pc.equal(index[node][name], piece))
                                   for name, table in tables.items()} for node, tables in per_node.items()})
        for name, view in combined.tables.items():
            views.setdefault(name, []).append(view)
        conn_ids.update(combined.conn_ids)
    return Combined({name: _view_order(name, pa.concat_tables(tables)) for name, tables in views.items()}, conn_ids)


def _lookup(ids: pa.Array, known_ids: pa.Array, known_buckets: pa.Array) -> pa.Array:
    """The bucket of each id among ``known_ids`` (null when unknown)."""
    return pc.take(known_buckets, pc.index_in(ids, value_set=known_ids))


def flow_buckets(flows: pa.Table, connections: pa.Table, buckets: int) -> tuple[pa.Array, pa.Array]:
    """A service_flows table's bucket (its connection's, else its own endpoints') and its backend connection's
    bucket (else its own). ``connections``: the node's connections the flows can name (conn_id and endpoints)."""
    ids = connections.column("conn_id").combine_chunks() if connections.num_rows else pa.array([], pa.string())
    known = buckets_of(connections, buckets)
    own = pc.coalesce(_lookup(flows.column("conn_id").combine_chunks(), ids, known),
                      buckets_of(flows, buckets, FLOW_ENDPOINTS))
    backend = pc.coalesce(_lookup(flows.column("backend_conn_id").combine_chunks(), ids, known), own)
    return own.cast(pa.int32()), backend.cast(pa.int32())


# -- the routed format
def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with exactly ``schema``'s columns (missing ones null), cast to it."""
    columns = [table.column(field.name).cast(field.type) if field.name in table.column_names
               else pa.nulls(table.num_rows, field.type) for field in schema]
    return pa.Table.from_arrays(columns, schema=schema)


def encode_routed(tables: Mapping[str, pa.Table], bucket_of: Mapping[str, pa.Array], buckets: int) -> bytes:
    """The tables' rows grouped by bucket in the routed format (see the module doc); ``bucket_of[name]``: each row's
    bucket, in [0, buckets)."""
    batches: dict[str, pa.RecordBatch] = {}
    starts: dict[str, list[int]] = {}
    for name in _CODES:
        table = tables.get(name)
        if table is None or not table.num_rows:
            continue
        order = pc.sort_indices(bucket_of[name])
        ordered = conform(table, FORMAT_TABLES[name]).take(order).combine_chunks()
        counts = [0] * buckets
        for item in pc.value_counts(bucket_of[name]).to_pylist():
            counts[item["values"]] = item["counts"]
        starts[name] = [0]
        for count in counts:
            starts[name].append(starts[name][-1] + count)
        (batches[name],) = ordered.to_batches()
    pieces: list[bytes] = []
    offsets = [_HEADER.size + 8 * (buckets + 1)]
    for bucket in range(buckets):
        entries, blobs = [], []
        for name in batches:
            start, stop = starts[name][bucket], starts[name][bucket + 1]
            if stop > start:
                message = batches[name].slice(start, stop - start).serialize()
                blob = pa.compress(message, codec=CODEC, asbytes=True)
                entries.append(_ENTRY.pack(_CODES.index(name), len(blob), message.size))
                blobs.append(blob)
        piece = _COUNT.pack(len(entries)) + b"".join(entries) + b"".join(blobs) if entries else b""
        pieces.append(piece)
        offsets.append(offsets[-1] + len(piece))
    return _HEADER.pack(MAGIC, buckets, 0) + struct.pack(f"<{buckets + 1}q", *offsets) + b"".join(pieces)


def decode_bucket(data: bytes) -> dict[str, pa.Table]:
    """One bucket's bytes of a routed object: table -> its rows (only the tables with rows in the bucket)."""
    if not data:
        return {}
    (count,) = _COUNT.unpack_from(data, 0)
    position = _COUNT.size + count * _ENTRY.size
    buffer = pa.py_buffer(data)
    out = {}
    for number in range(count):
        code, length, size = _ENTRY.unpack_from(data, _COUNT.size + number * _ENTRY.size)
        name = _CODES[code]
        message = pa.decompress(buffer.slice(position, length), decompressed_size=size, codec=CODEC)
        batch = pa.ipc.read_record_batch(message, FORMAT_TABLES[name])
        out[name] = pa.Table.from_batches([batch])
        position += length
    return out


def read_routed(body: bytes, bucket: int) -> dict[str, pa.Table]:
    """Bucket ``bucket`` of a whole routed object (tests, local reads)."""
    magic, _buckets, _reserved = _HEADER.unpack_from(body, 0)
    if magic != MAGIC:
        raise FoldError("not a routed object")
    start, end = _OFFSETS.unpack_from(body, _HEADER.size + 8 * bucket)
    return decode_bucket(body[start:end])


def read_routed_bucket(s3: ObjectStore, bucket_name: str, key: str, bucket: int) -> dict[str, pa.Table]:
    """Bucket ``bucket`` of a routed object in S3: its two offsets, then its bytes (none when it is empty)."""
    start, end = _OFFSETS.unpack(s3io.get_range(s3, bucket_name, key, _HEADER.size + 8 * bucket,
                                                _HEADER.size + 8 * (bucket + 2)))
    return decode_bucket(s3io.get_range(s3, bucket_name, key, start, end))


# -- plan-fold
def status_digest(status: Mapping[str, Any]) -> str:
    """A node's status as finalize will read it, fingerprinted: any new pass or merge of the node changes it."""
    return hashlib.blake2b(json.dumps(status, sort_keys=True, default=str).encode(), digest_size=16).hexdigest()


def _routed_rows(statuses: Mapping[str, Mapping[str, Any] | None]) -> dict[str, int]:
    return {name: sum(int((status.get("tables") or {}).get(name, 0)) for status in statuses.values() if status)
            for name in ROUTED}


def _day(statuses: Mapping[str, Mapping[str, Any] | None]) -> str | None:
    days = [parsed[1] for status in statuses.values() if status
            for key in [*(status.get("parts") or {}).values(), *(status.get("chunk_parts") or [])]
            if (parsed := parse_table_part_key(key))]
    return min(days) if days else None


Source = tuple[str, dict[str, list[str]], dict[str, list[str]]]  # name, parts read whole, chunk parts less moved


def _group_sources(settings: Settings, s3: ObjectStore, incident_id: str, node: str,
                   status: Mapping[str, Any]) -> list[Source] | None:
    """A fanned-out node's merge groups as sources: each group's chunk parts and its merged application rows (the
    files the node's part concatenates); None when the merge's work of this status is gone."""
    prefix = merge_prefix(incident_id, node, str(status.get("inputs_digest") or ""))
    chunk_parts = set(status.get("chunk_parts") or [])
    try:
        state = s3io.get_json(s3, settings.evidence_bucket, f"{prefix}state.json")
        results = [s3io.get_json(s3, settings.evidence_bucket, f"{prefix}apps-{group:05d}.json")
                   for group in range(len(state["groups"]))]
    except NotFoundError:
        return None
    listed = {entry["chunk_parts"].get(name) for entry in state["chunks"] for name in ROUTED}
    if any(result.get("run") != state.get("run") for result in results) or not chunk_parts <= listed:
        return None  # a later merge-connections run: these are not the files the node's part was made of
    sources: list[Source] = []
    for group, (members, result) in enumerate(zip(state["groups"], results, strict=True)):
        chunks = {name: [entry["chunk_parts"][name] for entry in state["chunks"] if entry["index"] in set(members)
                         and entry["chunk_parts"].get(name) in chunk_parts] for name in ROUTED}
        sources.append((f"group-{group:05d}", {name: [result["parts"][name]] for name in FOLDED[1:]
                                                if name in result["parts"]}, chunks))
    return sources


def _chunk_sources(status: Mapping[str, Any]) -> list[Source]:
    """A fanned-out node's chunk parts, one source per chunk (when its merge groups cannot be read)."""
    per_chunk: dict[str, dict[str, list[str]]] = {}
    for key in status.get("chunk_parts") or []:
        parsed = parse_table_part_key(key)
        if parsed is not None and parsed[0] in ROUTED:
            chunk = key.rsplit("~", 1)[1].removesuffix(".parquet")
            per_chunk.setdefault(f"chunk-{chunk}", {}).setdefault(parsed[0], []).append(key)
    return [(name, {}, chunks) for name, chunks in sorted(per_chunk.items())]


def _route_items(settings: Settings, s3: ObjectStore, incident_id: str, node: str, status: Mapping[str, Any],
                 buckets: int, digest: str) -> list[dict[str, Any]]:
    """The route items of one node: its part, and for a node fanned out in chunks one item per merge group (the
    node's part then gives only its connections and service_flows: its dns/http/tls are the groups' files). Without
    the merge groups, one item per chunk, and the node's part whole."""
    parts = {name: key for name, key in (status.get("parts") or {}).items() if name in ROUTED}
    groups = _group_sources(settings, s3, incident_id, node, status) if status.get("chunk_parts") else None
    if groups is None and status.get("chunk_parts"):
        logger.warning("merge groups unreadable; routing the node's chunks one by one",
                       extra={"incident_id": incident_id, "node": node})
    node_part = {name: [key] for name, key in parts.items() if groups is None or name not in FOLDED[1:]}
    groups = groups if groups is not None else _chunk_sources(status)
    common = {"incident_id": incident_id, "node": node, "buckets": buckets,
              "moved": status.get("moved_rows") or None, "lookup": parts.get("connections")}
    items = [{**common, "source": "node", "parts": node_part, "chunk_parts": {}}]
    items += [{**common, "source": name, "parts": whole, "chunk_parts": chunks} for name, whole, chunks in groups]
    return [{**item, "key": fold_route_key(incident_id, buckets, node, digest, str(item["source"]))} for item in items]


def plan_fold(settings: Settings, s3: ObjectStore, incident_id: str, nodes: Iterable[str] = ()) -> dict[str, Any]:
    """The fold plan of this pass, from every node's status (finalize's nodes: the incident's and ``nodes``)."""
    incident = load_incident(settings, s3, incident_id, record=False, statuses=False, summary=False)
    wanted = set(incident_nodes(incident.manifest_document, incident.part_documents)) | set(nodes)
    statuses = {node: status.to_dict() if status is not None else None
                for node, status in read_typed_statuses(settings, s3, incident_id, wanted).items()}
    rows = _routed_rows(statuses)
    per_task = settings.fold_rows or FOLD_ROWS
    buckets = plan_buckets(sum(rows.values()), per_task)
    # Phase 2 re-points the service_flows, FOLD_ROWS a task: T tasks, each reading its part of the B phase-1 objects
    # (B x T GETs in all, not B x B).
    flow_tasks = min(buckets, fold_buckets(rows["service_flows"], per_task))
    digests = {node: status_digest(status) for node, status in statuses.items() if status}
    items: list[dict[str, Any]] = []
    if buckets > 1:
        for node, status in sorted(statuses.items()):
            if status:
                items += _route_items(settings, s3, incident_id, node, status, buckets, digests[node])
    plan = FoldPlan(incident_id, uuid.uuid4().hex, buckets, _day(statuses), rows["service_flows"] > 0, digests,
                    tuple({"node": item["node"], "source": item["source"], "key": item["key"]} for item in items),
                    rows, flow_tasks)
    bucket = settings.evidence_bucket
    s3io.put_json(s3, bucket, fold_plan_key(incident_id), plan.to_dict())
    fold_items = [{"bucket": number} for number in range(buckets)] if buckets > 1 else []
    flow_items = [{"bucket": number} for number in range(flow_tasks)] if buckets > 1 and plan.flows else []
    for key, listed in ((fold_route_items_key(incident_id), items), (fold_items_key(incident_id), fold_items),
                        (fold_flow_items_key(incident_id), flow_items)):
        s3io.put_bytes(s3, bucket, key, json.dumps(listed).encode(), content_type="application/json")
    logger.info("fold planned", extra={"incident_id": incident_id, "buckets": buckets, "sources": len(items),
                                       "rows": sum(rows.values()), "flow_tasks": len(flow_items)})
    return {"incident_id": incident_id, "buckets": buckets, "bucket": bucket,
            "route_key": fold_route_items_key(incident_id), "fold_key": fold_items_key(incident_id),
            "flows_key": fold_flow_items_key(incident_id), "flows": plan.flows}


def read_plan(settings: Settings, s3: ObjectStore, incident_id: str) -> FoldPlan | None:
    """The incident's latest fold plan; None when there is none or it does not parse (then nothing is folded in
    buckets: finalize folds in-process)."""
    try:
        return FoldPlan.from_dict(s3io.get_json(s3, settings.evidence_bucket, fold_plan_key(incident_id)))
    except NotFoundError:
        return None
    except PayloadError as exc:
        logger.warning("fold plan unreadable", extra={"incident_id": incident_id, "error": str(exc)})
        return None


def current_plan(settings: Settings, s3: ObjectStore, incident_id: str,
                 statuses: Mapping[str, Mapping[str, Any] | None]) -> FoldPlan | None:
    """The fold plan when it was made from exactly these statuses (this pass's), else None (no plan-fold ran since
    the nodes' last pass: finalize folds in-process)."""
    plan = read_plan(settings, s3, incident_id)
    digests = {node: status_digest(status) for node, status in statuses.items() if status}
    return plan if plan is not None and dict(plan.statuses) == digests else None


# -- route
def _read(s3: ObjectStore, bucket: str, key: str, columns: Sequence[str] | None = None) -> pa.Table | None:
    try:
        return pq.read_table(io.BytesIO(s3io.get_bytes(s3, bucket, key)), columns=columns)
    except NotFoundError:
        # As the in-process views: a part a status names but that is missing leaves its rows out (the node's state
        # in the summary already says its pass failed).
        logger.warning("part named by a dissect status is missing", extra={"key": key})
        return None


def route_step(settings: Settings, s3: ObjectStore, incident_id: str, item: Mapping[str, Any]) -> dict[str, Any]:
    """One source's rows, routed by bucket into one object (``item["key"]``); an existing object is kept."""
    bucket, key, buckets = settings.evidence_bucket, str(item["key"]), int(item["buckets"])
    if s3io.exists(s3, bucket, key):
        return {"key": key, "skipped": True}
    moved_table = _read(s3, bucket, item["moved"], ["conn_id"]) if item.get("moved") else None
    moved = moved_table.column("conn_id").combine_chunks() if moved_table is not None else None
    tables: dict[str, pa.Table] = {}
    for name in ROUTED:
        pieces = [t for k in item["parts"].get(name, []) if (t := _read(s3, bucket, k)) is not None]
        pieces += [without_moved(t, moved) for k in item["chunk_parts"].get(name, []) if (t := _read(s3, bucket, k))
                   is not None]
        schema = FORMAT_TABLES[name].remove(FORMAT_TABLES[name].get_field_index(BACKEND_BUCKET)) \
            if name == "service_flows" else FORMAT_TABLES[name]
        tables[name] = pa.concat_tables([conform(p, schema) for p in pieces]) if pieces else schema.empty_table()
    bucket_of = {name: buckets_of(tables[name], buckets) for name in FOLDED}
    flows = tables["service_flows"]
    if flows.num_rows:
        known = [tables["connections"].select(["conn_id", *ENDPOINTS])]
        lookup = _read(s3, bucket, item["lookup"], ["conn_id", *ENDPOINTS]) if item.get("lookup") and \
            item["source"] != "node" else None
        if lookup is not None:
            known.append(conform(lookup, known[0].schema))
        own, backend = flow_buckets(flows, pa.concat_tables(known), buckets)
        tables["service_flows"] = flows.append_column(BACKEND_BUCKET, backend)
        bucket_of["service_flows"] = own
    body = encode_routed(tables, bucket_of, buckets)
    s3io.put_bytes(s3, bucket, key, body, content_type="application/octet-stream")
    return {"key": key, "rows": {name: table.num_rows for name, table in tables.items()}, "bytes": len(body)}


# -- fold
def _read_sources(s3: ObjectStore, bucket_name: str, sources: Sequence[tuple[str, str]], bucket: int,
                  optional: Iterable[str] = ()) -> list[tuple[str, dict[str, pa.Table]]]:
    """(node, bucket ``bucket`` of each routed object) for (node, key) sources, read concurrently; a missing
    ``optional`` key reads as no rows."""
    absent_ok = set(optional)

    def one(source: tuple[str, str]) -> tuple[str, dict[str, pa.Table]]:
        try:
            return source[0], read_routed_bucket(s3, bucket_name, source[1], bucket)
        except NotFoundError:
            if source[1] not in absent_ok:
                raise
            return source[0], {}

    with ThreadPoolExecutor(max_workers=READERS) as pool:
        return list(pool.map(one, sources))


def _concat(pieces: Sequence[pa.Table], schema: pa.Schema) -> pa.Table:
    return pa.concat_tables(pieces) if pieces else schema.empty_table()


def _repoint(table: pa.Table, column: str, repoint: pa.Table) -> pa.Table:
    """``table`` with ``column`` (a conn_id of the row's node) replaced by its view conn_id where ``repoint`` has it."""
    if not table.num_rows or not repoint.num_rows:
        return table
    known = pc.binary_join_element_wise(repoint.column("node"), repoint.column("conn_id"), "\x1f")
    ids = pc.binary_join_element_wise(table.column("node"), table.column(column), "\x1f")
    found = pc.index_in(ids, value_set=pa.chunked_array(known).combine_chunks())
    values = pc.if_else(pc.is_null(found), table.column(column),
                        pc.take(repoint.column("view_conn_id").combine_chunks(), found))
    return table.set_column(table.schema.get_field_index(column), column, values)


def _write_view(settings: Settings, s3: ObjectStore, incident_id: str, day: str, name: str, bucket: int,
                view: pa.Table) -> dict[str, int]:
    """The bucket's view files of ``name`` written: key -> bytes."""
    files = split_parquet(view, TARGET_BYTES)
    keys = [view_bucket_key(name, day, incident_id, bucket, number) for number in range(len(files))]
    for key, body in zip(keys, files, strict=True):
        s3io.put_bytes(s3, settings.evidence_bucket, key, body, content_type=PARQUET)
    return {key: len(body) for key, body in zip(keys, files, strict=True)}


def fold_step(settings: Settings, s3: ObjectStore, incident_id: str, bucket: int, phase: int = 1) -> dict[str, Any]:
    """One bucket's fold (phase 1) or one flow task's service_flows (phase 2, ``bucket`` is the task); writes its view
    files and its result."""
    plan = read_plan(settings, s3, incident_id)
    if plan is None or (plan.flow_tasks if phase == 2 else plan.buckets) <= bucket:
        raise FoldError(f"incident {incident_id}: no fold plan with {'flow task' if phase == 2 else 'bucket'} "
                        f"{bucket}")
    run, buckets, day, tasks = plan.run, plan.buckets, str(plan.day), plan.flow_tasks
    flows_schema = FORMAT_TABLES["service_flows"]
    files: dict[str, int] = {}
    rows: dict[str, int] = {}
    if phase == 1:
        per_node: dict[str, dict[str, list[pa.Table]]] = {}
        flows: list[pa.Table] = []
        sources = [(source["node"], source["key"]) for source in plan.sources]
        for node, tables in _read_sources(s3, settings.evidence_bucket, sources, bucket):
            for name, table in tables.items():
                if name == "service_flows":
                    flows.append(table)
                else:
                    per_node.setdefault(node, {}).setdefault(name, []).append(table)
        combined = fold_bucket({node: {name: sort_rows(name, pa.concat_tables(pieces))
                                       for name, pieces in tables.items()} for node, tables in per_node.items()},
                               buckets)
        for name in FOLDED:
            files |= _write_view(settings, s3, incident_id, day, name, bucket, combined.tables[name])
            rows[name] = combined.tables[name].num_rows
        changed = [(node, conn_id, view) for (node, conn_id), view in combined.conn_ids.items() if conn_id != view]
        repoint = pa.table([pa.array([c[i] for c in changed], pa.string()) for i in range(3)],
                           schema=FORMAT_TABLES[REPOINT])
        flow_rows = _repoint(_concat(flows, flows_schema), "conn_id", repoint)
        if plan.flows:
            # To the flow task of the backend connection's bucket (bucket mod T), with this bucket's map for the
            # flows whose backend is here, which go to this bucket's task (phase 2).
            backend = flow_rows.column(BACKEND_BUCKET)
            body = encode_routed({"service_flows": flow_rows, REPOINT: repoint},
                                 {"service_flows": pc.subtract(backend, pc.multiply(pc.divide(backend, tasks), tasks))
                                  .cast(pa.int32()),
                                  REPOINT: pa.array([bucket % tasks] * repoint.num_rows, pa.int32())}, tasks)
            s3io.put_bytes(s3, settings.evidence_bucket, fold_flows_key(incident_id, run, bucket), body,
                           content_type="application/octet-stream")
        elif flow_rows.num_rows:
            raise FoldError(f"incident {incident_id} bucket {bucket}: service_flows rows the fold plan did not count")
        else:
            files |= _write_view(settings, s3, incident_id, day, "service_flows", bucket,
                                 VIEWS["service_flows"].empty_table())
            rows["service_flows"] = 0
    else:
        if not plan.flows:
            raise FoldError(f"incident {incident_id}: the fold plan has no service_flows phase")
        sources = [("", fold_flows_key(incident_id, run, number)) for number in range(buckets)]
        # A bucket whose phase 1 failed sent nothing: its rows are reported missing (its result is absent), and the
        # flows whose backend connection was in it keep that node's conn_id.
        pieces = [tables for _node, tables in _read_sources(s3, settings.evidence_bucket, sources, bucket,
                                                            [key for _node, key in sources])]
        repoint = _concat([t[REPOINT] for t in pieces if REPOINT in t], FORMAT_TABLES[REPOINT])
        flow_rows = _repoint(_concat([t["service_flows"] for t in pieces if "service_flows" in t], flows_schema),
                             "backend_conn_id", repoint).drop_columns([BACKEND_BUCKET])
        # One view row per flow (combine's rule for cross-layer tables), in combine's order.
        view = combine({"flows": {"service_flows": flow_rows}}).tables["service_flows"]
        files |= _write_view(settings, s3, incident_id, day, "service_flows", bucket, view)
        rows["service_flows"] = view.num_rows
    result = {"schema": RESULT_SCHEMA, "run": run, "bucket": bucket, "phase": phase, "rows": rows,
              "files": list(files), "bytes": files}
    s3io.put_json(s3, settings.evidence_bucket, fold_result_key(incident_id, run, bucket, phase), result)
    return {"bucket": bucket, "phase": phase, "rows": rows}


def _read_results(settings: Settings, s3: ObjectStore, keys: Sequence[str], schema: str,
                  run: str) -> list[dict[str, Any] | None]:
    """The result documents at ``keys`` of schema ``schema`` and fold run ``run``, read concurrently; None where
    there is none (or one of another schema or run)."""
    def one(key: str) -> dict[str, Any] | None:
        try:
            result = s3io.get_json(s3, settings.evidence_bucket, key)
        except NotFoundError:
            return None
        return result if result.get("schema") == schema and result.get("run") == run else None

    with ThreadPoolExecutor(max_workers=READERS) as pool:
        return list(pool.map(one, keys))


def _results(settings: Settings, s3: ObjectStore, incident_id: str, plan: FoldPlan,
             wanted: Sequence[tuple[int, int]]) -> list[dict[str, Any] | None]:
    """The fold results of (bucket or flow task, phase) of this run; None where there is none."""
    return _read_results(settings, s3, [fold_result_key(incident_id, plan.run, *job) for job in wanted],
                         RESULT_SCHEMA, plan.run)


def _units(plan: FoldPlan, name: str) -> tuple[int, int]:
    """(phase, count) of the tasks that write view ``name``: the flow tasks' for service_flows when it has rows."""
    return (2, plan.flow_tasks) if name == "service_flows" and plan.flows else (1, plan.buckets)


def plan_compact(settings: Settings, s3: ObjectStore, incident_id: str) -> dict[str, Any]:
    """The compaction of this fold's view files: per routed view, runs of consecutive buckets (or flow tasks) whose
    files add up to about ``TARGET_BYTES`` (128 MB), one item each, from the fold results' sizes; a run whose bucket
    has no result ends there (the failed bucket is reported by finalize, its neighbours stay as they are)."""
    plan = read_plan(settings, s3, incident_id)
    if plan is None or plan.buckets <= 1:
        raise FoldError(f"incident {incident_id}: no fold plan in buckets to compact")
    items: list[dict[str, Any]] = []
    by_phase: dict[int, list[dict[str, Any] | None]] = {}  # each result read once, whatever the tables
    for name in ROUTED:
        phase, count = _units(plan, name)
        groups = 0
        if phase not in by_phase:
            by_phase[phase] = _results(settings, s3, incident_id, plan, [(unit, phase) for unit in range(count)])
        results = by_phase[phase]
        first, size = None, 0
        for unit, result in enumerate([*results, None]):
            sizes = {key: int(value) for key, value in (result or {}).get("bytes", {}).items()
                     if f"/{name}/" in key} if result is not None else None
            if first is not None and (sizes is None or size + sum(sizes.values()) > TARGET_BYTES):
                items.append({"run": plan.run, "table": name, "group": groups, "phase": phase, "first": first,
                              "last": unit - 1})
                first, size, groups = None, 0, groups + 1
            if sizes is not None:
                first = unit if first is None else first
                size += sum(sizes.values())
    s3io.put_bytes(s3, settings.evidence_bucket, fold_compact_items_key(incident_id), json.dumps(items).encode(),
                   content_type="application/json")
    logger.info("compaction planned", extra={"incident_id": incident_id, "groups": len(items)})
    return {"incident_id": incident_id, "groups": len(items), "bucket": settings.evidence_bucket,
            "compact_key": fold_compact_items_key(incident_id)}


def compact_step(settings: Settings, s3: ObjectStore, incident_id: str, item: Mapping[str, Any]) -> dict[str, Any]:
    """One run of a view's bucket files joined into files of about 128 MB (``part-<g>.parquet``, ...); the bucket
    files stay as they are until finalize empties those of every compacted run, so a failed task loses nothing."""
    plan = read_plan(settings, s3, incident_id)
    name, group, phase = str(item["table"]), int(item["group"]), int(item["phase"])
    if plan is None or plan.run != item.get("run") or name not in ROUTED:
        raise FoldError(f"incident {incident_id}: compaction item {group} of {name!r} is not of the current fold")
    units = range(int(item["first"]), int(item["last"]) + 1)
    results = _results(settings, s3, incident_id, plan, [(unit, phase) for unit in units])
    if any(result is None for result in results):
        raise FoldError(f"incident {incident_id}: compaction group {group} of {name}: a bucket has no fold result")
    keys = [key for result in results for key in (result or {})["files"] if f"/{name}/" in key]
    rows = 0

    def tables() -> Iterator[pa.Table]:
        # READERS files fetched at a time, read one by one: the task holds one table, a row group and one file.
        nonlocal rows
        with ThreadPoolExecutor(max_workers=READERS) as pool:
            for start in range(0, len(keys), READERS):
                for body in pool.map(lambda key: s3io.get_bytes(s3, settings.evidence_bucket, key),
                                     keys[start:start + READERS]):
                    table = pq.read_table(io.BytesIO(body))
                    rows += table.num_rows
                    yield table

    written: list[str] = []

    def put(number: int, body: bytes) -> None:
        written.append(view_compact_key(name, str(plan.day), incident_id, group, number))
        s3io.put_bytes(s3, settings.evidence_bucket, written[-1], body, content_type=PARQUET)

    stream_parquet(tables(), VIEWS[name], put, TARGET_BYTES)
    result = {"schema": COMPACT_SCHEMA, "run": plan.run, "table": name, "group": group, "rows": rows,
              "files": written, "joined": keys}
    s3io.put_json(s3, settings.evidence_bucket, fold_compact_result_key(incident_id, plan.run, name, group), result)
    return {"table": name, "group": group, "rows": rows, "files": len(written)}


def compacted(settings: Settings, s3: ObjectStore, incident_id: str,
              plan: FoldPlan) -> tuple[set[str], set[str], list[str]]:
    """The compaction of this fold run: the files it wrote, the bucket files they replace, and an error per item
    with no result (its bucket files stay the view's)."""
    try:
        items = json.loads(s3io.get_bytes(s3, settings.evidence_bucket, fold_compact_items_key(incident_id)))
    except NotFoundError:
        return set(), set(), []
    items = [item for item in items if item.get("run") == plan.run]
    results = _read_results(settings, s3, [fold_compact_result_key(incident_id, plan.run, str(item["table"]),
                                                                   int(item["group"])) for item in items],
                            COMPACT_SCHEMA, plan.run)
    written, joined, errors = set(), set(), []
    for item, result in zip(items, results, strict=True):
        if result is None:
            errors.append(f"compaction group {item['group']} of {item['table']}: no result (its bucket files stay)")
            continue
        written.update(result["files"])
        joined.update(result["joined"])
    return written, joined, errors


# -- finalize's side
def fold_results(settings: Settings, s3: ObjectStore, incident_id: str,
                 plan: FoldPlan) -> tuple[dict[str, int], set[str], list[str]]:
    """The fold's view rows per routed table, the view files it wrote, and an error per bucket and phase with no
    result of this run (a failed fold task: its rows are missing, and the summary says so)."""
    wanted = [(bucket, 1) for bucket in range(plan.buckets)]
    wanted += [(task, 2) for task in range(plan.flow_tasks)] if plan.flows else []
    results = _results(settings, s3, incident_id, plan, wanted)
    rows = dict.fromkeys(ROUTED, 0)
    files: set[str] = set()
    errors = []
    for (bucket, phase), result in zip(wanted, results, strict=True):
        if result is None:
            what = f"fold bucket {bucket} phase 1" if phase == 1 else f"fold flow task {bucket} (phase 2)"
            errors.append(f"{what}: no result of this fold run (the task failed)")
            continue
        for name, count in result["rows"].items():
            rows[name] += int(count)
        files.update(result["files"])
    return rows, files, errors


def fold_locally(settings: Settings, s3: ObjectStore, incident_id: str, nodes: Sequence[str],
                 invoke: Callable[[dict[str, Any]], Mapping[str, Any]],
                 with_retries: Callable[[Callable[[], Any]], tuple[Any, str | None]]) -> dict[str, Any]:
    """plan-fold, every route item, fold phase 1 (and 2) of every bucket, plan-compact and every compaction item,
    through ``invoke`` (the dissect handler) and the Maps' retries, as the state machine runs them; a failed task is
    left for finalize to report."""
    plan, error = with_retries(lambda: invoke({"action": "plan-fold", "incident_id": incident_id,
                                               "nodes": list(nodes)}))
    if error is not None or int(plan["buckets"]) <= 1:  # no plan of this pass: finalize folds in-process
        return dict(plan or {})
    items = json.loads(s3io.get_bytes(s3, str(plan["bucket"]), str(plan["route_key"])))
    for item in items:
        with_retries(lambda item=item: invoke({"action": "route", "item": item}))  # type: ignore[misc]
    for phase, key in ((1, "fold_key"), (2, "flows_key")) if plan["flows"] else ((1, "fold_key"),):
        for fold_item in json.loads(s3io.get_bytes(s3, str(plan["bucket"]), str(plan[key]))):
            with_retries(lambda b=fold_item["bucket"], p=phase: invoke(  # type: ignore[misc]
                {"action": "fold", "incident_id": incident_id, "bucket": b, "phase": p}))
    compaction, error = with_retries(lambda: invoke({"action": "plan-compact", "incident_id": incident_id}))
    if error is None:
        for item in json.loads(s3io.get_bytes(s3, str(compaction["bucket"]), str(compaction["compact_key"]))):
            with_retries(lambda item=item: invoke(  # type: ignore[misc]
                {"action": "compact", "incident_id": incident_id, "item": item}))
    return dict(plan)
