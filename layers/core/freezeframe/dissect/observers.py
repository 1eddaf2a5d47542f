"""One row per conversation across nodes: an incident's views, derived from its per-node tables (issue 13 item 5).

Traffic between pods on two nodes is captured by both nodes' agents. Each node's dissection keeps its own rows
(its evidence, `keys.table_part_key`); `combine` folds the sightings of one conversation into one row, which the
query engines read (`keys.view_key`, schemas `VIEWS`). Identity never rests on the nodes' clocks where the protocol
offers better:

- TCP: the same unordered pair of endpoints and the initial sequence numbers (`isn_out`, `isn_in`: the raw sequence
  numbers of the SYN and SYN-ACK, 32 random bits each, RFC 9293 3.4.1). Two sightings that both know the ISN of an
  endpoint are the same connection exactly when every ISN both know agrees, whatever their times say. A sighting
  that missed the handshake (its capture started mid-connection) falls back to the endpoints and overlapping
  first/last times within `TOLERANCE_NS`.
- UDP (and any other protocol): the endpoints and overlapping times within `TOLERANCE_NS`.
- dns: the endpoints, transport, the DNS transaction id (RFC 1035 4.1.1), qname and qtype, query times within
  `TOLERANCE_NS`.
- http: the conversation (after its sightings are folded), method, host and path, request times within
  `TOLERANCE_NS`, matched in order (so repeated requests on one keep-alive connection pair up one by one).
- tls: the conversation and the SNI, ClientHello times within `TOLERANCE_NS`.
- dissect_errors describe one node's segments and are never folded.

A row folds at most one sighting per node (one node never sees a conversation twice). The row reports one node's
view (`observer`, also `node`): the most complete one (most handshake and close flags seen, then most packets, then
the first node by name, so the choice is deterministic). `observers` lists every node that saw it; `conn_id` is the
observer's and every table's rows of the other sightings are re-pointed to it. Views that differ in a compared field
(one side lost packets before the other captured them) say so in `views_disagree` and `disagreeing`; nothing is
averaged or summed across nodes.

Pure Python over pyarrow tables: finalize's Lambda layers ship pyarrow but no numpy, and this module needs none.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from freezeframe.contracts.schemas import TABLES, VIEWS
from freezeframe.dissect.compact import leads
from freezeframe.dissect.kernels import CumulativeOptions, SortOptions, call, cast

TOLERANCE_NS = 5 * 1_000_000_000  # clock skew plus capture delay plus retransmission timeouts between two vantages

Row = dict[str, Any]

# Compared fields per table; connections' per-direction pairs are compared after orienting both sightings alike.
_DIRECTION_PAIRS = (("packets_out", "packets_in"), ("bytes_out", "bytes_in"),
                    ("payload_bytes_out", "payload_bytes_in"), ("retransmissions_out", "retransmissions_in"))
COMPARED: dict[str, tuple[str, ...]] = {
    "connections": ("packets_out", "packets_in", "bytes_out", "bytes_in", "payload_bytes_out", "payload_bytes_in",
                    "retransmissions_out", "retransmissions_in", "lost_segments"),
    "dns": ("rcode", "answers", "truncated"),
    "http": ("status", "request_bytes", "response_bytes", "response_complete"),
    "tls": ("version", "cipher", "established", "alert"),
}
APP_TABLES = ("dns", "http", "tls")


@dataclass(slots=True)
class _Cluster:
    """The sightings of one conversation (or exchange) so far."""

    rows: list[Row]
    nodes: set[str]
    start: int
    end: int
    isns: dict[tuple[str, int | None], int] = field(default_factory=dict)


def _endpoints(row: Row) -> tuple[tuple[str, int | None], tuple[str, int | None]]:
    return (row["src_ip"], row["src_port"]), (row["dst_ip"], row["dst_port"])


def _unordered(row: Row) -> tuple[Any, ...]:
    a, b = _endpoints(row)
    return tuple(sorted((a, b), key=repr))


def _isns(row: Row) -> dict[tuple[str, int | None], int]:
    """Endpoint -> its initial sequence number, for the ISNs this sighting saw."""
    src, dst = _endpoints(row)
    known = {}
    if row.get("isn_out") is not None:
        known[src] = int(row["isn_out"])
    if row.get("isn_in") is not None:
        known[dst] = int(row["isn_in"])
    return known


def _fits(cluster: _Cluster, row: Row, start: int, end: int, isns: Mapping[tuple[str, int | None], int],
          tolerance_ns: int) -> bool:
    if row["node"] in cluster.nodes:
        return False
    common = cluster.isns.keys() & isns.keys()
    if common:
        return all(cluster.isns[endpoint] == isns[endpoint] for endpoint in common)
    return start <= cluster.end + tolerance_ns and cluster.start <= end + tolerance_ns


def _clusters(rows: Iterable[Row], key: Callable[[Row], Any], interval: Callable[[Row], tuple[int, int]],
              tolerance_ns: int, with_isns: bool = False) -> list[_Cluster]:
    """Sightings grouped by `key`, then folded greedily in time order, at most one per node per cluster."""
    groups: dict[Any, list[Row]] = {}
    for row in rows:
        groups.setdefault(key(row), []).append(row)
    found: list[_Cluster] = []
    for members in groups.values():
        # Sightings with a handshake first (their identity is exact), then by time and node for determinism.
        members.sort(key=lambda r: (not (with_isns and _isns(r)), interval(r)[0], r["node"]))
        clusters: list[_Cluster] = []
        for row in members:
            start, end = interval(row)
            isns = _isns(row) if with_isns else {}
            target = next((c for c in clusters if _fits(c, row, start, end, isns, tolerance_ns)), None)
            if target is None:
                clusters.append(_Cluster([row], {row["node"]}, start, end, dict(isns)))
                continue
            target.rows.append(row)
            target.nodes.add(row["node"])
            target.start, target.end = min(target.start, start), max(target.end, end)
            for endpoint, isn in isns.items():
                target.isns.setdefault(endpoint, isn)
        found += clusters
    return found


def _popcount(value: int | None) -> int:
    return bin(value or 0).count("1")


def _connection_rank(row: Row) -> tuple[Any, ...]:
    return (-_popcount(row.get("completeness")), -(row["packets_out"] + row["packets_in"]), row["node"])


def _app_rank(row: Row) -> tuple[Any, ...]:
    return (-sum(value is not None for value in row.values()), row["node"])


def _oriented(row: Row, like: Row) -> Row:
    """`row` seen from `like`'s initiator (a node that missed the SYN may have taken the responder for it)."""
    if (row["src_ip"], row["src_port"]) == (like["src_ip"], like["src_port"]):
        return row
    flipped = dict(row)
    for out, in_ in _DIRECTION_PAIRS:
        flipped[out], flipped[in_] = row.get(in_), row.get(out)
    return flipped


def _disagreeing(table: str, reported: Row, others: list[Row]) -> list[str]:
    fields = COMPARED.get(table, ())
    differ = []
    for name in fields:
        for other in others:
            seen = _oriented(other, reported) if table == "connections" else other
            if seen.get(name) != reported.get(name):
                differ.append(name)
                break
    return differ


def _fold(table: str, cluster: _Cluster, rank: Callable[[Row], tuple[Any, ...]]) -> Row:
    ordered = sorted(cluster.rows, key=rank)
    reported, others = ordered[0], ordered[1:]
    differ = _disagreeing(table, reported, others)
    return {**reported, "observers": sorted(cluster.nodes), "observer": reported["node"],
            "views_disagree": bool(differ), "disagreeing": differ}


def _single(row: Row) -> Row:
    return {**row, "observers": [row["node"]], "observer": row["node"], "views_disagree": False, "disagreeing": []}


def _connection_interval(row: Row) -> tuple[int, int]:
    return int(row["first_ts_ns"]), int(row["last_ts_ns"])


def _point(row: Row) -> tuple[int, int]:
    return int(row["ts_ns"]), int(row["ts_ns"])


@dataclass(frozen=True, slots=True)
class Combined:
    """An incident's views, and for each node's conn_id the conn_id of the row that reports its conversation.

    `mapped` None: each connection row is its own conversation (one observer), so every conn_id maps to itself;
    `conn_ids` builds that identity map only when asked (a local `dissect --out` never asks: 50 ms of 60 k rows).
    `unchanged`: the views that are one table's rows as they came, in its order, with the observation columns after
    them (one observer, one part, neither sorted nor folded), so a writer may copy that part's encoded columns
    (`views.write_local_views`)."""

    tables: dict[str, pa.Table]
    mapped: dict[tuple[str, str], str] | None
    unchanged: frozenset[str] = frozenset()

    @property
    def conn_ids(self) -> dict[tuple[str, str], str]:
        if self.mapped is not None:
            return self.mapped
        connections = self.tables["connections"]
        return {(node, conn_id): conn_id for node, conn_id in zip(connections.column("node").to_pylist(),
                                                                  connections.column("conn_id").to_pylist(),
                                                                  strict=True)}


def combine(per_node: Mapping[str, Mapping[str, pa.Table]], tolerance_ns: int = TOLERANCE_NS) -> Combined:
    """The views of an incident from its nodes' tables (`per_node[node][table]`, schemas `TABLES`).

    Every table of `VIEWS` is in the result (empty when no node has it); rows sorted by time, then conn_id."""
    alone = _one_observer(per_node, tolerance_ns)
    return alone if alone is not None else fold_rows(per_node, tolerance_ns)


def fold_rows(per_node: Mapping[str, Mapping[str, pa.Table]], tolerance_ns: int = TOLERANCE_NS) -> Combined:
    """`combine` row by row in Python, whatever the number of observers (the reference its one-observer path in
    Arrow is tested against)."""
    # Cluster-wide parts (services, endpoints) have no node column: their part's name stands for it.
    rows = {name: [{"node": node, **row} for node in sorted(per_node) if name in per_node[node]
                   for row in per_node[node][name].to_pylist()] for name in TABLES}
    connections = _clusters(rows["connections"], _connection_key, _connection_interval, tolerance_ns, with_isns=True)
    folded = {"connections": [_fold("connections", c, _connection_rank) for c in connections]}
    conn_ids: dict[tuple[str, str], str] = {}
    for cluster, row in zip(connections, folded["connections"], strict=True):
        for sighting in cluster.rows:
            conn_ids[(sighting["node"], sighting["conn_id"])] = row["conn_id"]
    app_rows = {name: [{**r, "conn_id": conn_ids.get((r["node"], r["conn_id"]), r["conn_id"])} for r in rows[name]]
                for name in APP_TABLES}
    for name in APP_TABLES:
        folded[name] = [_fold(name, c, _app_rank)
                        for c in _clusters(app_rows[name], _APP_KEYS[name], _point, tolerance_ns)]
    folded["dissect_errors"] = [_single(row) for row in rows["dissect_errors"]]
    # Cross-layer tables are each node's own state (or the cluster's objects): one row per sighting, with the
    # connections they name re-pointed to the row that reports the conversation.
    for name in TABLES:
        if name not in folded and name not in APP_TABLES:
            folded[name] = [_single({**row, **{column: conn_ids.get((row["node"], row[column]), row[column])
                                               for column in ("conn_id", "backend_conn_id") if row.get(column)}})
                            for row in rows[name]]
    return Combined({name: _view_table(name, folded.get(name, [])) for name in VIEWS}, conn_ids)


def _time_column(name: str) -> str | None:
    return "first_ts_ns" if name == "connections" else "ts_ns" if "ts_ns" in VIEWS[name].names else None


def _view_table(name: str, folded: list[Row]) -> pa.Table:
    """The view `name` from its folded rows: sorted by time, then conn_id (or segment), then node."""
    schema, time_column = VIEWS[name], _time_column(name)
    ordered = sorted(folded, key=lambda r: (
        r.get(time_column) or 0 if time_column else 0, r.get("conn_id") or r.get("segment") or "", r["node"]))
    return pa.Table.from_pylist(ordered, schema=schema) if ordered else schema.empty_table()


def _connection_key(row: Row) -> tuple[Any, ...]:
    return row["proto"], _unordered(row)


_APP_KEYS: dict[str, Callable[[Row], Any]] = {
    "dns": lambda r: (_unordered(r), r["transport"], r["transaction_id"], r["qname"], r["qtype"]),
    "http": lambda r: (r["conn_id"], r["method"], r["host"], r["path"]),
    "tls": lambda r: (r["conn_id"], r["sni"]),
}


# One observer: the fold in Arrow. When every sighting of a table comes from one node, `_fits` never joins two, so
# every row is its own cluster: its view is the row with observers=[node], observer=node, no disagreement, and
# conn_ids map to themselves. `combine` on one node (every local `freezeframe dissect --out`, every single-node
# incident) then costs a pass over neighbouring rows (and a sort when they are out of order) instead of a Python pass
# over every row. Rows equal in the final sort key (time, conn_id or segment, node) keep the order the fold's
# clustering gives them, which is not the parts' order: a table that has any such tie is folded row by row as in the
# general case (tests/unit/dissect/test_observers.py compares both paths).
def _one_observer(per_node: Mapping[str, Mapping[str, pa.Table]], tolerance_ns: int) -> Combined | None:
    """`combine`'s result when each folded table (connections, dns, http, tls) holds one node's rows; else None."""
    parts: dict[str, list[tuple[pa.Table, pa.Array]]] = {}
    for name in VIEWS:
        for part_name in sorted(per_node):
            table = per_node[part_name].get(name)
            if table is None:
                continue
            if "node" in table.column_names:
                node = table.column("node").combine_chunks()
                if node.null_count:  # the general fold sees None as a node of its own; keep to it
                    return None
            else:  # cluster-wide parts have no node column: their part's name stands for it
                node = pa.repeat(pa.scalar(part_name, pa.string()), table.num_rows)
            parts.setdefault(name, []).append((table, node))
    for name in ("connections", *APP_TABLES):
        seen = {value for _table, node in parts.get(name, []) for value in call("unique", node).to_pylist()}
        if len(seen) > 1:
            return None
    tables = {}
    unchanged = set()
    for name, schema in VIEWS.items():
        found = parts.get(name, [])
        rows = sum(table.num_rows for table, _node in found)
        if not rows:
            tables[name] = schema.empty_table()
            continue
        node = pa.concat_arrays([n for _table, n in found]) if found else pa.array([], pa.string())
        columns = []
        for wanted in schema:
            if wanted.name == "node":
                columns.append(node)
            elif wanted.name == "observers":
                columns.append(pa.ListArray.from_arrays(_counting(rows + 1, pa.int32()), node))
            elif wanted.name == "observer":
                columns.append(node)
            elif wanted.name == "views_disagree":
                columns.append(pa.repeat(pa.scalar(False, pa.bool_()), rows))
            elif wanted.name == "disagreeing":
                columns.append(pa.ListArray.from_arrays(pa.repeat(pa.scalar(0, pa.int32()), rows + 1),
                                                        pa.array([], pa.string())))
            else:
                pieces = [cast(table.column(wanted.name), wanted.type) if wanted.name in table.column_names
                          else pa.chunked_array([pa.nulls(table.num_rows, wanted.type)]) for table, _node in found]
                columns.append(pa.chunked_array([c for piece in pieces for c in piece.chunks], wanted.type))
        view = pa.Table.from_arrays(columns, schema=schema)
        time_column = _time_column(name)
        if time_column:
            time = call("coalesce", view.column(time_column), pa.scalar(0, view.schema.field(time_column).type))
        else:
            time = pa.chunked_array([pa.repeat(pa.scalar(0, pa.int64()), rows)])
        key = pa.chunked_array([pa.repeat(pa.scalar("", pa.string()), rows)])
        for column in ("segment", "conn_id"):  # r.get("conn_id") or r.get("segment") or ""
            if column in view.column_names:
                values = view.column(column)
                present = call("coalesce", call("not_equal", values, pa.scalar("", values.type)), pa.scalar(False))
                key = call("if_else", present, values, key)
        order = pa.table({"t": time, "k": key, "n": node})
        in_order, ties = _neighbours(order)
        if not in_order:  # (the engines emit rows in time order, so a sort is rarely needed)
            position = _counting(rows, pa.int64())
            order = order.append_column("i", position)
            indices = call("sort_indices", order, options=SortOptions([("t", "ascending"), ("k", "ascending"),
                                                                       ("n", "ascending"), ("i", "ascending")]))
            _sorted, ties = _neighbours(call("take", order, indices))
        if name in COMPARED and rows > 1 and ties:
            tables[name] = _fold_one_node(name, view, tolerance_ns)
        elif in_order:
            tables[name] = view
            if len(found) == 1 and leads(found[0][0].schema, schema):
                unchanged.add(name)
        else:
            tables[name] = call("take", view, indices)
    return Combined(tables, None, frozenset(unchanged))


def _counting(count: int, type_: pa.DataType) -> pa.Array:
    """0, 1, ..., count - 1 (Arrow builds it: a Python range of a whole table's rows cost more than the sort)."""
    return call("cumulative_sum", pa.repeat(pa.scalar(1, type_), count),
                options=CumulativeOptions(start=pa.scalar(-1, type_)))


def _neighbours(order: pa.Table) -> tuple[bool, bool]:
    """Of a key table (columns t, k, n, without nulls; rows that tie in all three keep their order): whether its rows
    are already in ascending order of (t, k, n), and whether two neighbours are equal in all three."""
    if order.num_rows < 2:
        return True, False
    ascending = None  # each row against the next, the last key first: (t, k, n) <= (t', k', n')
    same = None
    for column in ("n", "k", "t"):
        values = order.column(column).combine_chunks()
        here, after = values.slice(0, len(values) - 1), values.slice(1)
        equal = call("equal", here, after)
        less = call("less", here, after)
        ascending = call("or", less, call("and", equal, ascending)) if ascending is not None else call(
            "less_equal", here, after)
        same = equal if same is None else call("and", same, equal)
    return bool(call("all", ascending).as_py()), bool(call("any", same).as_py())


def _fold_one_node(name: str, view: pa.Table, tolerance_ns: int) -> pa.Table:
    """One node's table folded row by row as `combine` does (every cluster holds one row; the order is the fold's)."""
    rows = view.drop_columns(["observers", "observer", "views_disagree", "disagreeing"]).to_pylist()
    if name == "connections":
        clusters = _clusters(rows, _connection_key, _connection_interval, tolerance_ns, with_isns=True)
        return _view_table(name, [_fold(name, c, _connection_rank) for c in clusters])
    clusters = _clusters(rows, _APP_KEYS[name], _point, tolerance_ns)
    return _view_table(name, [_fold(name, c, _app_rank) for c in clusters])
