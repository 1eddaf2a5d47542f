"""Time chunks: a long window dissected as independent chunks in parallel, merged into one row per connection.

Each chunk feeds only the packets whose timestamp falls in ``[start_ns, end_ns)`` to its own tracker, so every
packet is counted in exactly one chunk. A connection that crosses a chunk edge then appears as one row per chunk;
``merge_connections`` folds those rows back into one, with the rule of ``MERGE_RULES`` for each column: sums for
counts, min/max for times, OR for the completeness bitmask, recomputed durations, ids and rates.

Which rows are one connection follows the tracker's own identity rules (connections.py): the same protocol and
endpoint pair, where a later chunk's first row for that pair continues the open one unless it starts a new
conversation: for TCP a fresh SYN after the earlier part got past its SYN (port reuse), for UDP a gap longer
than ``UDP_IDLE_TIMEOUT_NS``. A continuation row may be oriented the other way round (its chunk saw the responder
first), so its per-direction columns are swapped and its history letters case-swapped before merging.

``conn_id`` hashes the initiator 5-tuple and ``first_ts_ns``, both taken from the earliest part, so the merged id
is the one an unchunked run gives; ``remap_conn_ids`` rewrites the dns/http/tls rows of later parts to it.

Only edge rows are merged. Whether a row may be folded depends on the two rows alone, so each chunk splits its rows
(``split_chunk``): the edge rows (``edge_mask``: TCP rows without a SYN, lone SYNs) and their application rows go to
the merge, the UDP rows near an edge hand over their endpoint pairs only (``udp_pairs``, ``SharedUdpPairs``), and the
rest is final. The merge moves the rows that share an endpoint pair with an edge row or a shared UDP pair from the
chunks' bodies to their edges (``pull_pairs``), so it holds every row of each pair it folds, and ``merge_tables`` on
those rows equals ``merge_tables`` on every row (tests/unit/dissect/test_chunks_edges.py).

Exactness: columns in ``EXACT_COLUMNS`` equal an unchunked run by construction. The others are state that the
edge cuts: a segment sent before the edge and retransmitted or acknowledged after it is not recognised as such
by the later chunk, so retransmission, dup-ACK and RTT figures near an edge are approximations, and a handshake
split by an edge keeps the earlier part's (possibly null) handshake times.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from freezeframe.contracts.errors import WindowError
from freezeframe.contracts.schemas import CONNECTIONS, TABLES
from freezeframe.dissect.connections import UDP_IDLE_TIMEOUT_NS, connection_id
from freezeframe.dissect.tcp.analysis import conn_state, history_bits

# Merge rules, one per CONNECTIONS column.
FIRST = "first"  # identity: the earliest part's value (identical across parts after orientation)
MIN = "min"
MAX = "max"
SUM = "sum"  # nulls ignored; null only when every part is null
OR = "or"  # bitmask union
FIRST_NON_NULL = "first_non_null"  # a fact seen once, at the start (handshake, announced window scale)
DURATION = "duration"  # (last_ts_ns - first_ts_ns) // 1000
CONN_ID = "conn_id"  # recomputed from the merged identity
RTT_AVG = "rtt_avg"  # mean weighted by rtt_samples
RTT_JITTER = "rtt_jitter"  # mean weighted by the sample pairs of each part (rtt_samples - 1)
RETRANSMISSION_RATE = "retransmission_rate"  # total retransmissions / total payload segments
_SEGMENTS = "_payload_segments"  # carried beside a row while merging: its TCP segments with payload
_RTT = "_rtt_sums"  # carried beside a row while merging: (RTT samples, sum ns, jitter sum ns)
HISTORY = "history"  # each letter once, in order of first occurrence
CONN_STATE = "conn_state"  # Zeek's state from the merged history
CLOSE = "close"  # how the merged connection ended

MERGE_RULES: dict[str, str] = {
    "node": FIRST, "conn_id": CONN_ID, "proto": FIRST,
    "src_ip": FIRST, "src_port": FIRST, "dst_ip": FIRST, "dst_port": FIRST,
    "ts": MIN, "ts_ns": MIN, "first_ts": MIN, "first_ts_ns": MIN, "last_ts": MAX, "last_ts_ns": MAX,
    "duration_us": DURATION,
    "packets_out": SUM, "packets_in": SUM, "bytes_out": SUM, "bytes_in": SUM,
    "payload_bytes_out": SUM, "payload_bytes_in": SUM,
    "completeness": OR,
    "isn_out": FIRST_NON_NULL, "isn_in": FIRST_NON_NULL,  # the SYN and SYN-ACK are seen once, in one chunk
    # TCP insights
    "conn_state": CONN_STATE, "history": HISTORY,
    "syn_to_synack_us": FIRST_NON_NULL, "handshake_us": FIRST_NON_NULL, "time_to_first_data_us": FIRST_NON_NULL,
    "retransmissions": SUM, "retransmissions_out": SUM, "retransmissions_in": SUM,
    "fast_retransmissions": SUM, "spurious_retransmissions": SUM, "out_of_order": SUM,
    "dup_acks": SUM, "dup_acks_out": SUM, "dup_acks_in": SUM, "lost_segments": SUM,
    "retransmission_rate": RETRANSMISSION_RATE,
    "zero_window_events": SUM, "zero_window_events_out": SUM, "zero_window_events_in": SUM,
    "window_full_events": SUM, "window_scale": FIRST_NON_NULL, "window_scale_in": FIRST_NON_NULL,
    "keepalives": SUM, "rtt_min_us": MIN, "rtt_avg_us": RTT_AVG, "rtt_max_us": MAX, "rtt_samples": SUM,
    "rtt_jitter_us": RTT_JITTER, "bytes_total": SUM, "goodput_bytes": SUM, "rst_count": SUM, "fin_count": SUM,
    "close": CLOSE,
    # Kubernetes context is resolved at first_ts, i.e. for the earliest part (enrichment runs after the merge).
    "src_namespace": FIRST, "src_pod": FIRST, "src_workload": FIRST,
    "dst_namespace": FIRST, "dst_pod": FIRST, "dst_workload": FIRST,
}

# Per-direction column pairs: swapped when a later part saw the connection the other way round.
DIRECTION_PAIRS: tuple[tuple[str, str], ...] = (
    ("src_ip", "dst_ip"), ("src_port", "dst_port"),
    ("packets_out", "packets_in"), ("bytes_out", "bytes_in"), ("payload_bytes_out", "payload_bytes_in"),
    ("retransmissions_out", "retransmissions_in"), ("dup_acks_out", "dup_acks_in"),
    ("zero_window_events_out", "zero_window_events_in"), ("window_scale", "window_scale_in"),
    ("isn_out", "isn_in"), ("src_namespace", "dst_namespace"), ("src_pod", "dst_pod"),
    ("src_workload", "dst_workload"),
)

# Columns whose merged value equals an unchunked run's by construction (each packet is counted in one chunk,
# and these depend on single packets only). The rest depend on state across the edge; see the module doc.
EXACT_COLUMNS: frozenset[str] = frozenset((
    "node", "conn_id", "proto", "src_ip", "src_port", "dst_ip", "dst_port", "ts", "ts_ns", "first_ts",
    "first_ts_ns", "last_ts", "last_ts_ns", "duration_us", "packets_out", "packets_in", "bytes_out", "bytes_in",
    "payload_bytes_out", "payload_bytes_in", "completeness", "isn_out", "isn_in", "conn_state", "rst_count",
    "fin_count",
    "bytes_total", "close", "window_scale", "window_scale_in", "src_namespace", "src_pod", "src_workload",
    "dst_namespace", "dst_pod", "dst_workload",
))

_COMPLETENESS_SYN = 0x01

if set(MERGE_RULES) != set(CONNECTIONS.names):  # a new column needs a merge rule before chunks can be merged
    raise RuntimeError(f"chunks.MERGE_RULES and CONNECTIONS differ: "
                       f"{sorted(set(MERGE_RULES) ^ set(CONNECTIONS.names))}")


@dataclass(frozen=True, slots=True)
class Chunk:
    """One time chunk of a window: packets with ``start_ns <= ts_ns < end_ns``."""

    index: int
    start_ns: int
    end_ns: int
    # Packets from here to start_ns rebuild TCP state first and are not counted (dissect.warmup); None: no warm-up.
    warmup_start_ns: int | None = None


def plan_chunks(start_ns: int, end_ns: int, chunk_ns: int, warmup_ns: int | None = None) -> list[Chunk]:
    """Consecutive chunks of ``chunk_ns`` covering ``[start_ns, end_ns)``; the last one may be shorter.

    With ``warmup_ns``, every chunk but the first replays that much before its start (``dissect.warmup``)."""
    if chunk_ns <= 0:
        raise WindowError(f"chunk length must be positive, got {chunk_ns} ns")
    if end_ns <= start_ns:
        raise WindowError(f"empty or inverted window [{start_ns}, {end_ns})")
    edges = list(range(start_ns, end_ns, chunk_ns)) + [end_ns]
    return [Chunk(index, low, high, None if warmup_ns is None or index == 0 else max(low - warmup_ns, start_ns))
            for index, (low, high) in enumerate(zip(edges, edges[1:], strict=False))]


@dataclass(frozen=True, slots=True)
class MergedConnections:
    table: pa.Table
    conn_ids: dict[str, str]  # a part's conn_id -> the merged row's conn_id (only ids that changed)
    merged_rows: int  # part rows folded into an earlier part's row


def merge_connections(node: str, parts: Sequence[pa.Table],
                      payload_segments: Sequence[Mapping[str, int]] | None = None,
                      extras: Sequence[Mapping[str, tuple[int, int, int, int]]] | None = None) -> MergedConnections:
    """The connections of consecutive chunks (in time order) as one table, one row per connection.

    ``payload_segments`` (per part: conn_id -> TCP segments with payload, ``ConnectionTracker.payload_segments``)
    makes the merged ``retransmission_rate`` exact for the merged counts; without it a part that had no
    retransmission cannot tell how many segments it carried. ``extras`` (per part: conn_id -> payload segments, RTT
    samples, RTT sum and jitter sum in ns; ``dissect.warmup.ChunkState.extras``) also makes the RTT mean and jitter
    exact: sums, not rounded means, are added.
    """
    # Only endpoint pairs seen in more than one part can merge: the other rows pass through in Arrow, untouched.
    alone, shared = _split_shared(parts)
    rows: list[dict[str, Any]] = []
    open_rows: dict[tuple[Any, ...], int] = {}  # endpoint-pair key -> index in rows of its latest connection
    conn_ids: dict[str, str] = {}
    merged = 0
    for number, part in enumerate(shared):
        continued: set[tuple[Any, ...]] = set()
        segments = payload_segments[number] if payload_segments is not None else {}
        sums = extras[number] if extras is not None else {}
        for row in sorted(part.to_pylist(), key=lambda r: (r["first_ts_ns"], r["conn_id"])):
            extra = sums.get(row["conn_id"])
            row[_SEGMENTS] = extra[0] if extra is not None else segments.get(row["conn_id"])
            row[_RTT] = extra[1:] if extra is not None else None
            key = _pair_key(row)
            index = open_rows.get(key)
            if index is not None and key not in continued and _continues(rows[index], row):
                combined = _merge(node, rows[index], row)
                conn_ids[row["conn_id"]] = combined["conn_id"]
                rows[index] = combined
                merged += 1
            else:
                index = len(rows)
                rows.append(row)
            open_rows[key] = index
            continued.add(key)
    for row in rows:
        del row[_SEGMENTS]
        del row[_RTT]
    tables = [t.cast(CONNECTIONS) for t in alone if t.num_rows]
    if rows:
        tables.append(pa.Table.from_pylist(rows, schema=CONNECTIONS))
    if not tables:
        return MergedConnections(CONNECTIONS.empty_table(), conn_ids, merged)
    table = pa.concat_tables(tables)
    table = table.take(pc.sort_indices(table, sort_keys=[("first_ts_ns", "ascending"), ("conn_id", "ascending")]))
    return MergedConnections(table, conn_ids, merged)


def pair_keys(part: pa.Table) -> pa.Array:
    """The unordered endpoint pair of each connections row, as text (``_pair_key`` in Arrow)."""
    src = pc.binary_join_element_wise(part.column("src_ip"), pc.cast(part.column("src_port"), pa.string()), "|")
    dst = pc.binary_join_element_wise(part.column("dst_ip"), pc.cast(part.column("dst_port"), pa.string()), "|")
    src, dst = pc.fill_null(src, "|"), pc.fill_null(dst, "|")
    first = pc.less_equal(src, dst)
    return pc.binary_join_element_wise(part.column("proto"), pc.if_else(first, src, dst),
                                       pc.if_else(first, dst, src), "#")


def _split_shared(parts: Sequence[pa.Table]) -> tuple[list[pa.Table], list[pa.Table]]:
    """Per part: (rows whose endpoint pair no other part has, rows whose pair another part has)."""
    keys = [pair_keys(part) if part.num_rows else pa.array([], pa.string()) for part in parts]
    counts = pc.value_counts(pa.concat_arrays([pc.unique(column) for column in keys]))
    many = counts.field("values").filter(pc.greater(counts.field("counts"), 1))
    alone, shared = [], []
    for part, column in zip(parts, keys, strict=True):
        mask = pc.is_in(column, value_set=many) if part.num_rows else pa.array([], pa.bool_())
        shared.append(part.filter(mask))
        alone.append(part.filter(pc.invert(mask)))
    return alone, shared


def remap_conn_ids(table: pa.Table, conn_ids: dict[str, str]) -> pa.Table:
    """A dns/http/tls table whose ``conn_id`` values point at the merged connections rows."""
    if not conn_ids or table.num_rows == 0:
        return table
    column = table.column("conn_id").to_pylist()
    index = table.schema.get_field_index("conn_id")
    remapped = pa.array([conn_ids.get(value, value) for value in column], type=table.schema.field(index).type)
    return table.set_column(index, table.schema.field(index), remapped)


def replace_warm_rows(parts: Sequence[pa.Table], chunks: Sequence[Chunk], merged_ids: set[str],
                      schema: pa.Schema) -> pa.Table:
    """One table of a kind (dns, http, tls) from the chunks' parts, conn_ids already remapped.

    A part's rows stamped before its chunk's start came from the warm-up (``dissect.warmup``): the earlier chunk has
    the same transaction, but cut at the edge. Such a row replaces the earlier row with the same ``conn_id`` and
    ``ts_ns`` (it saw the answer too); a warm row without such a match is dropped, so no transaction counts twice.
    """
    kept: list[pa.Table] = []
    warm: list[dict[str, Any]] = []
    for part, chunk in zip(parts, chunks, strict=True):
        if chunk.warmup_start_ns is None or not part.num_rows:
            kept.append(part)
            continue
        before = pc.less(part.column("ts_ns"), chunk.start_ns)
        warm += [row for row in part.filter(before).to_pylist() if row["conn_id"] in merged_ids]
        kept.append(part.filter(pc.invert(before)))
    table = concat_sorted(kept, schema)
    if not warm or not table.num_rows:
        return table
    index: dict[tuple[Any, Any], list[int]] = {}
    for number, (conn_id, ts_ns) in enumerate(zip(table.column("conn_id").to_pylist(),
                                                  table.column("ts_ns").to_pylist(), strict=True)):
        index.setdefault((conn_id, ts_ns), []).append(number)
    replaced: dict[int, dict[str, Any]] = {}
    for row in warm:
        candidates = [n for n in index.get((row["conn_id"], row["ts_ns"]), []) if n not in replaced]
        if candidates:
            replaced[candidates[0]] = row
    if not replaced:
        return table
    rows = table.to_pylist()
    for number, row in replaced.items():
        rows[number] = row
    return pa.Table.from_pylist(rows, schema=schema)


def concat_sorted(tables: Iterable[pa.Table], schema: pa.Schema) -> pa.Table:
    """The rows of several chunks' tables of one kind, in (ts_ns, conn_id) order as a single run writes them."""
    parts = [table for table in tables if table.num_rows]
    if not parts:
        return schema.empty_table()
    combined = pa.concat_tables(parts)
    order = pc.sort_indices(combined, sort_keys=[("ts_ns", "ascending"), ("conn_id", "ascending")])
    return combined.take(order)


# -- the edge-only merge: rows that cannot meet another chunk's row never reach it
APP_TABLES = ("dns", "http", "tls")  # rows that reference a connection by conn_id
CHUNK_TABLES = ("connections", *APP_TABLES)


def edge_mask(connections: pa.Table, chunk: Chunk, first: bool, last: bool) -> pa.Array:
    """Which of a chunk's connections rows go to the merge as they are (``merge_connections`` may fold them).

    ``merge_connections`` folds a chunk's row into the latest earlier row of the same endpoint pair when
    ``_continues`` says so, and that depends only on the two rows. So a TCP row can meet another chunk's row only if

    - (left edge; not the first chunk) it could continue an earlier row: a TCP row without the SYN bit (its SYN,
      if any, was before the chunk, maybe in the warm-up, maybe long before: TCP has no idle timeout), or a row of
      a protocol other than TCP and UDP; or
    - (right edge; not the last chunk) a later chunk's row that carries a SYN could continue it: a TCP row whose
      completeness is SYN alone (an attempt a later chunk may retransmit). Every other continuation of a row by a
      later one is a left-edge row of the later chunk, found by its endpoint pair (``pull_pairs``).

    UDP rows are not edge rows: a UDP row continues an earlier one only within ``UDP_IDLE_TIMEOUT_NS``, which is
    longer than most chunks, so nearly every UDP row is near an edge while few share their endpoint pair with another
    chunk. Only their endpoint pairs go to the merge (``udp_pairs``, ``shared_udp_pairs``).

    The warm-up does not narrow this: a conversation silent for longer than the warm-up across an edge is still one
    conversation (packets and bytes add up exactly), so the rule is by row, not by warm-up state.
    """
    if not connections.num_rows:
        return pa.array([], pa.bool_())
    proto = connections.column("proto")
    completeness = pc.fill_null(connections.column("completeness"), 0)
    tcp = pc.equal(proto, "tcp")
    falses = pa.array([False] * connections.num_rows, pa.bool_())
    left = falses
    if not first:
        no_syn = pc.equal(pc.bit_wise_and(completeness, _COMPLETENESS_SYN), 0)
        other = pc.invert(pc.or_(tcp, pc.equal(proto, "udp")))
        left = pc.fill_null(pc.or_(pc.and_(tcp, no_syn), other), True)
    right = falses
    if not last:
        right = pc.fill_null(pc.and_(tcp, pc.equal(completeness, _COMPLETENESS_SYN)), False)
    return pc.or_(left, right)


def udp_pairs(connections: pa.Table, chunk: Chunk, first: bool, last: bool,
              warmup_ns: int) -> tuple[pa.Array, pa.Array]:
    """(endpoint pairs of the chunk's UDP rows that might continue an earlier chunk's row: starting within
    ``UDP_IDLE_TIMEOUT_NS`` of its start; pairs of UDP rows a later chunk's row might continue: ending within
    ``UDP_IDLE_TIMEOUT_NS`` plus the warm-up of its end). A warm row starts in the warm-up, so the earlier chunk saw
    its pair within the warm-up of its end."""
    empty = pa.array([], pa.string())
    if not connections.num_rows:
        return empty, empty
    udp = pc.equal(connections.column("proto"), "udp")
    keys = pair_keys(connections)
    left = empty
    if not first:
        soon = pc.less_equal(pc.subtract(connections.column("first_ts_ns"), chunk.start_ns), UDP_IDLE_TIMEOUT_NS)
        left = pc.unique(keys.filter(pc.fill_null(pc.and_(udp, soon), False)))
    right = empty
    if not last:
        late = pc.greater_equal(connections.column("last_ts_ns"), chunk.end_ns - UDP_IDLE_TIMEOUT_NS - warmup_ns)
        right = pc.unique(keys.filter(pc.fill_null(pc.and_(udp, late), False)))
    return left, right


class SharedUdpPairs:
    """The UDP endpoint pairs in some chunk's left pairs and an earlier chunk's right pairs (``udp_pairs``), fed a
    chunk at a time in order; only the right pairs of chunks ending within the idle timeout and the warm-up of the
    current chunk's start are held."""

    def __init__(self, warmup_ns: int) -> None:
        self.warmup_ns = warmup_ns
        self._window: list[tuple[int, pa.Array]] = []
        self._shared: list[pa.Array] = []

    def add(self, chunk: Chunk, left: pa.Array, right: pa.Array) -> None:
        horizon = chunk.start_ns - UDP_IDLE_TIMEOUT_NS - self.warmup_ns
        self._window = [(end, keys) for end, keys in self._window if end > horizon]
        earlier = [keys for _end, keys in self._window if len(keys)]
        if len(left) and earlier:
            self._shared.append(pc.unique(left.filter(pc.is_in(left, value_set=pa.concat_arrays(earlier)))))
        self._window.append((chunk.end_ns, right))

    def pairs(self) -> pa.Array:
        return pc.unique(pa.concat_arrays(self._shared)) if self._shared else pa.array([], pa.string())


def shared_udp_pairs(chunks: Sequence[Chunk], pairs: Sequence[tuple[pa.Array, pa.Array]],
                     warmup_ns: int) -> pa.Array:
    """``SharedUdpPairs`` of chunks (in order) and their ``udp_pairs``."""
    shared = SharedUdpPairs(warmup_ns)
    for chunk, (left, right) in zip(chunks, pairs, strict=True):
        shared.add(chunk, left, right)
    return shared.pairs()


def split_chunk(tables: Mapping[str, pa.Table], chunk: Chunk, first: bool, last: bool
                ) -> tuple[dict[str, pa.Table], dict[str, pa.Table], dict[str, pa.Table]]:
    """(body, edge, warm) of one chunk's tables. The edge holds the connections rows of ``edge_mask`` and the
    dns/http/tls rows that reference them; the body the other rows, final as they are: no other chunk can change
    them. The dns/http/tls rows stamped in the warm-up that reference no edge row are ``warm``: one of them counts
    only if its connection is merged after all (``replace_warm_rows``), which the merge decides (``warm_rows_of``)."""
    connections = tables["connections"]
    mask = edge_mask(connections, chunk, first, last)
    edge = {"connections": connections.filter(mask)}
    body = {"connections": connections.filter(pc.invert(mask))}
    warm = {}
    ids = edge["connections"].column("conn_id")
    for name in APP_TABLES:
        table = tables[name]
        if not table.num_rows:
            edge[name], body[name], warm[name] = table, table, table
            continue
        at_edge = pc.fill_null(pc.is_in(table.column("conn_id"), value_set=ids), False)
        before = pc.less(table.column("ts_ns"), chunk.start_ns) if not first else pa.array(
            [False] * table.num_rows, pa.bool_())
        edge[name] = table.filter(at_edge)
        rest = pc.invert(at_edge)
        body[name] = table.filter(pc.and_(rest, pc.invert(before)))
        warm[name] = table.filter(pc.and_(rest, before))
    return body, edge, warm


def warm_rows_of(warm: Mapping[str, pa.Table], ids: pa.Array) -> dict[str, pa.Table]:
    """The warm-up's dns/http/tls rows of a chunk whose connection the merge holds (``ids``: every conn_id of the
    merge's connections rows); only those can be kept by ``replace_warm_rows``."""
    return {name: table.filter(pc.fill_null(pc.is_in(table.column("conn_id"), value_set=ids), False))
            if table.num_rows else table for name, table in warm.items()}


def merge_ids(edges: Iterable[Mapping[str, pa.Table]]) -> pa.Array:
    """Every conn_id of the merge's connections rows."""
    ids = [edge["connections"].column("conn_id").combine_chunks() for edge in edges if edge["connections"].num_rows]
    return pa.concat_arrays(ids) if ids else pa.array([], pa.string())


def edge_pairs(edges: Iterable[Mapping[str, pa.Table]], more: pa.Array | None = None) -> pa.Array:
    """The endpoint pairs of every chunk's edge connections rows and ``more`` (the shared UDP pairs): the set
    ``pull_pairs`` looks for."""
    keys = [pc.unique(pair_keys(edge["connections"])) for edge in edges if edge["connections"].num_rows]
    if more is not None and len(more):
        keys.append(more)
    return pc.unique(pa.concat_arrays(keys)) if keys else pa.array([], pa.string())


def pull_pairs(body: Mapping[str, pa.Table], pairs: pa.Array) -> tuple[dict[str, pa.Table], dict[str, pa.Table]]:
    """(body left, rows moved to the edge): the body's connections rows whose endpoint pair is in ``pairs``, and
    their dns/http/tls rows. Such a row is on no edge itself, but a row of its pair is (a conversation idle across a
    whole chunk, a late stray segment, a retransmitted SYN), and the merge needs every row of a pair it merges."""
    connections = body["connections"]
    if not connections.num_rows or not len(pairs):
        return dict(body), {name: table.schema.empty_table() for name, table in body.items()}
    mask = pc.is_in(pair_keys(connections), value_set=pairs)
    moved = {"connections": connections.filter(mask)}
    left = {"connections": connections.filter(pc.invert(mask))}
    ids = moved["connections"].column("conn_id")
    for name in APP_TABLES:
        table = body[name]
        hit = pc.fill_null(pc.is_in(table.column("conn_id"), value_set=ids), False) if table.num_rows else \
            pa.array([], pa.bool_())
        moved[name], left[name] = table.filter(hit), table.filter(pc.invert(hit))
    return left, moved


def with_rows(table: pa.Table, more: pa.Table) -> pa.Table:
    """Two tables of one kind as one (``more`` cast to ``table``'s schema)."""
    if not more.num_rows:
        return table
    return pa.concat_tables([table, more.cast(table.schema)]) if table.num_rows else more.cast(table.schema)


@dataclass(frozen=True, slots=True)
class MergedTables:
    tables: dict[str, pa.Table]  # connections and dns/http/tls of the rows merged
    merged_rows: int


def merge_tables(node: str, chunks: Sequence[Chunk], tables: Sequence[Mapping[str, pa.Table]],
                 payload_segments: Sequence[Mapping[str, int]] | None = None,
                 extras: Sequence[Mapping[str, tuple[int, int, int, int]]] | None = None) -> MergedTables:
    """Chunks' tables (in order) merged: connections by ``merge_connections``, dns/http/tls re-pointed to the merged
    rows and completed from the warm-up (``replace_warm_rows``). Given every row of the chunks it is the full merge;
    given the edge rows (``split_chunk`` plus ``pull_pairs``) it gives the same rows for them."""
    merged = merge_connections(node, [t["connections"] for t in tables], payload_segments, extras)
    out = {"connections": merged.table}
    for name in APP_TABLES:
        out[name] = replace_warm_rows([remap_conn_ids(t[name], merged.conn_ids) for t in tables], chunks,
                                      set(merged.conn_ids.values()), TABLES[name])
    return MergedTables(out, merged.merged_rows)


def group_span(chunks: Sequence[Chunk], members: Sequence[int]) -> tuple[int | None, int | None]:
    """The time span ``[low, high)`` a group of consecutive chunks (positions in ``chunks``, the node's chunks in
    order) owns: open at the node's first and last chunks (None)."""
    first, last = min(members), max(members)
    return (None if first == 0 else chunks[first].start_ns, None if last == len(chunks) - 1 else chunks[last].end_ns)


def group_context(chunks: Sequence[Chunk], members: Sequence[int]) -> list[int]:
    """The later chunks (positions) whose warm-up reaches back into a group's span: their warm-up rows stamped in the
    span belong to the group's merge (``merge_app_rows``)."""
    _low, high = group_span(chunks, members)
    if high is None:
        return []
    context = []
    for number in range(max(members) + 1, len(chunks)):
        warm = chunks[number].warmup_start_ns
        if warm is not None and warm < high:
            context.append(number)
    return context


def merge_app_rows(chunks: Sequence[Chunk], tables: Sequence[pa.Table], span: tuple[int | None, int | None],
                   conn_ids: Mapping[str, str], schema: pa.Schema) -> pa.Table:
    """One group's share of an application table's merge (``merge_tables``): ``tables`` are the merge's rows of
    ``chunks`` (the group's and its ``group_context``, in order), ``conn_ids`` the connections merge's map. Rows are
    re-pointed, only those stamped in the group's ``span`` are kept, and the warm-up rows among them complete the
    group's rows (``replace_warm_rows``). A warm-up row replaces the row with its conn_id and time, which is in the
    chunk that owns that time, and a chunk's own rows are stamped in its time: so the groups' results, together,
    are ``merge_tables``'s rows of that table, row for row."""
    low, high = span
    parts = []
    for table in tables:
        table = remap_conn_ids(table, dict(conn_ids))
        if table.num_rows and (low is not None or high is not None):
            times = table.column("ts_ns")
            inside = pa.array([True] * table.num_rows, pa.bool_())
            if low is not None:
                inside = pc.and_(inside, pc.greater_equal(times, low))
            if high is not None:
                inside = pc.and_(inside, pc.less(times, high))
            table = table.filter(pc.fill_null(inside, False))
        parts.append(table)
    return replace_warm_rows(parts, chunks, set(conn_ids.values()), schema)


def merge_tables_grouped(node: str, chunks: Sequence[Chunk], tables: Sequence[Mapping[str, pa.Table]],
                         groups: Sequence[Sequence[int]],
                         payload_segments: Sequence[Mapping[str, int]] | None = None,
                         extras: Sequence[Mapping[str, tuple[int, int, int, int]]] | None = None) -> MergedTables:
    """``merge_tables`` with the application rows merged a group of consecutive chunks at a time, as the fan-out's
    merge-apps tasks do (``dissect.fanout``); the same tables."""
    merged = merge_connections(node, [t["connections"] for t in tables], payload_segments, extras)
    out = {"connections": merged.table}
    for name in APP_TABLES:
        pieces = []
        for members in groups:
            chosen = sorted(members) + group_context(chunks, members)
            pieces.append(merge_app_rows([chunks[n] for n in chosen], [tables[n][name] for n in chosen],
                                         group_span(chunks, members), merged.conn_ids, TABLES[name]))
        out[name] = concat_sorted(pieces, TABLES[name])
    return MergedTables(out, merged.merged_rows)


def sort_rows(name: str, table: pa.Table) -> pa.Table:
    """A node's table in the order one pass writes it: connections by (first_ts_ns, conn_id), the others by
    (ts_ns, conn_id)."""
    first = "first_ts_ns" if name == "connections" else "ts_ns"
    if not table.num_rows or not {first, "conn_id"} <= set(table.column_names):
        return table
    return table.take(pc.sort_indices(table, sort_keys=[(first, "ascending"), ("conn_id", "ascending")]))


def _pair_key(row: dict[str, Any]) -> tuple[Any, ...]:
    a = (row["src_ip"], row["src_port"])
    b = (row["dst_ip"], row["dst_port"])
    return (row["proto"], *min(a, b), *max(a, b))


def _continues(earlier: dict[str, Any], later: dict[str, Any]) -> bool:
    """Whether ``later`` (the first row of its chunk for this endpoint pair) is the same conversation."""
    if later["proto"] == "tcp":
        # A SYN opening the later part starts a new conversation unless the earlier part never got past its own
        # SYN (then it is the same attempt, retransmitted), as the tracker decides for port reuse.
        return not (later["completeness"] or 0) & _COMPLETENESS_SYN or (earlier["completeness"] or 0) == \
            _COMPLETENESS_SYN
    if later["proto"] == "udp":
        return later["first_ts_ns"] - earlier["last_ts_ns"] <= UDP_IDLE_TIMEOUT_NS
    return True


def _oriented(earlier: dict[str, Any], later: dict[str, Any]) -> dict[str, Any]:
    """``later`` seen from the same side as ``earlier``."""
    if (later["src_ip"], later["src_port"]) == (earlier["src_ip"], earlier["src_port"]):
        return later
    flipped = dict(later)
    for out, in_ in DIRECTION_PAIRS:
        flipped[out], flipped[in_] = later[in_], later[out]
    if later.get("history"):
        flipped["history"] = later["history"].swapcase()
    return flipped


def _sum(a: Any, b: Any) -> Any:
    if a is None:
        return b
    return a if b is None else a + b


def _pick(function: Any, a: Any, b: Any) -> Any:
    if a is None:
        return b
    return a if b is None else function(a, b)


def _merge(node: str, a: dict[str, Any], later: dict[str, Any]) -> dict[str, Any]:
    b = _oriented(a, later)
    out: dict[str, Any] = {}
    for name, rule in MERGE_RULES.items():
        if rule == FIRST:
            out[name] = a[name]
        elif rule == SUM:
            out[name] = _sum(a[name], b[name])
        elif rule == MIN:
            out[name] = _pick(min, a[name], b[name])
        elif rule == MAX:
            out[name] = _pick(max, a[name], b[name])
        elif rule == OR:
            out[name] = _pick(lambda x, y: x | y, a[name], b[name])
        elif rule == FIRST_NON_NULL:
            out[name] = a[name] if a[name] is not None else b[name]
    out["duration_us"] = (out["last_ts_ns"] - out["first_ts_ns"]) // 1000
    out["conn_id"] = connection_id(node, out["proto"], out["src_ip"], out["src_port"], out["dst_ip"],
                                   out["dst_port"], out["first_ts_ns"])
    if a[_RTT] is not None and b[_RTT] is not None:
        samples, total, jitter = (x + y for x, y in zip(a[_RTT], b[_RTT], strict=True))
        out[_RTT] = (samples, total, jitter)
        out["rtt_avg_us"] = total // samples // 1000 if samples else None
        out["rtt_jitter_us"] = jitter // (samples - 1) // 1000 if samples > 1 else None
    else:
        out[_RTT] = None
        out["rtt_avg_us"] = _weighted(a["rtt_avg_us"], a["rtt_samples"], b["rtt_avg_us"], b["rtt_samples"], 0)
        out["rtt_jitter_us"] = _weighted(a["rtt_jitter_us"], a["rtt_samples"], b["rtt_jitter_us"], b["rtt_samples"],
                                         1)
    if a[_SEGMENTS] is not None and b[_SEGMENTS] is not None:
        out[_SEGMENTS] = a[_SEGMENTS] + b[_SEGMENTS]
        out["retransmission_rate"] = (out["retransmissions"] or 0) / out[_SEGMENTS] if out[_SEGMENTS] else None
    else:
        out[_SEGMENTS] = None
        out["retransmission_rate"] = _retransmission_rate(a, b, out["retransmissions"])
    history = a["history"]
    if b["history"]:
        history = (history or "") + "".join(dict.fromkeys(c for c in b["history"] if c not in (history or "")))
    out["history"] = history
    out["conn_state"] = conn_state_from_history(history) if history is not None else a["conn_state"]
    out["close"] = _close(out) if out["proto"] == "tcp" and a["close"] is not None else a["close"]
    return out


def _weighted(avg_a: int | None, samples_a: int | None, avg_b: int | None, samples_b: int | None,
              less: int) -> int | None:
    weight_a = (samples_a or 0) - less if avg_a is not None else 0
    weight_b = (samples_b or 0) - less if avg_b is not None else 0
    if weight_a <= 0 and weight_b <= 0:
        return avg_a if avg_a is not None else avg_b
    weight_a, weight_b = max(weight_a, 0), max(weight_b, 0)
    return ((avg_a or 0) * weight_a + (avg_b or 0) * weight_b) // (weight_a + weight_b)


def _retransmission_rate(a: dict[str, Any], b: dict[str, Any], retransmissions: int | None) -> float | None:
    """Total retransmissions over total payload segments; a part's segments are its retransmissions / rate."""
    if a["retransmission_rate"] is None and b["retransmission_rate"] is None:
        return None
    segments = 0.0
    for part in (a, b):
        rate, count = part["retransmission_rate"], part["retransmissions"] or 0
        if rate:
            segments += count / rate
    # A part without retransmissions does not reveal its payload segments; it then only dilutes nothing. With
    # retransmissions but no known payload segment the rate is unknown (NULL), never 0 %.
    if segments:
        return (retransmissions or 0) / segments
    return None if retransmissions else 0.0


def conn_state_from_history(history: str) -> str:
    """Zeek's conn_state (base/protocols/conn/main.zeek) from history letters: upper case initiator, lower responder."""
    return conn_state(*history_bits(history))


def _close(row: dict[str, Any]) -> str:
    """'handshake_failed' when the initiator's SYN was never answered, else 'rst', 'fin' or 'open'."""
    history = row["history"] or ""
    if "S" in history and "h" not in history:
        return "handshake_failed"
    if row["rst_count"]:
        return "rst"
    return "fin" if row["fin_count"] else "open"
