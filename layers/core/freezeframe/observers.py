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

from freezeframe.schemas import TABLES, VIEWS

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
    """An incident's views, and for each node's conn_id the conn_id of the row that reports its conversation."""

    tables: dict[str, pa.Table]
    conn_ids: dict[tuple[str, str], str]


def combine(per_node: Mapping[str, Mapping[str, pa.Table]], tolerance_ns: int = TOLERANCE_NS) -> Combined:
    """The views of an incident from its nodes' tables (`per_node[node][table]`, schemas `TABLES`).

    Every table of `VIEWS` is in the result (empty when no node has it); rows sorted by time, then conn_id."""
    # Cluster-wide parts (services, endpoints) have no node column: their part's name stands for it.
    rows = {name: [{"node": node, **row} for node in sorted(per_node) if name in per_node[node]
                   for row in per_node[node][name].to_pylist()] for name in TABLES}
    connections = _clusters(rows["connections"], lambda r: (r["proto"], _unordered(r)), _connection_interval,
                            tolerance_ns, with_isns=True)
    folded = {"connections": [_fold("connections", c, _connection_rank) for c in connections]}
    conn_ids: dict[tuple[str, str], str] = {}
    for cluster, row in zip(connections, folded["connections"], strict=True):
        for sighting in cluster.rows:
            conn_ids[(sighting["node"], sighting["conn_id"])] = row["conn_id"]
    app_rows = {name: [{**r, "conn_id": conn_ids.get((r["node"], r["conn_id"]), r["conn_id"])} for r in rows[name]]
                for name in APP_TABLES}
    keys: dict[str, Callable[[Row], Any]] = {
        "dns": lambda r: (_unordered(r), r["transport"], r["transaction_id"], r["qname"], r["qtype"]),
        "http": lambda r: (r["conn_id"], r["method"], r["host"], r["path"]),
        "tls": lambda r: (r["conn_id"], r["sni"]),
    }
    for name in APP_TABLES:
        folded[name] = [_fold(name, c, _app_rank) for c in _clusters(app_rows[name], keys[name], _point, tolerance_ns)]
    folded["dissect_errors"] = [_single(row) for row in rows["dissect_errors"]]
    # Cross-layer tables are each node's own state (or the cluster's objects): one row per sighting, with the
    # connections they name re-pointed to the row that reports the conversation.
    for name in TABLES:
        if name not in folded and name not in APP_TABLES:
            folded[name] = [_single({**row, **{column: conn_ids.get((row["node"], row[column]), row[column])
                                               for column in ("conn_id", "backend_conn_id") if row.get(column)}})
                            for row in rows[name]]
    tables = {}
    for name, schema in VIEWS.items():
        time_column = "first_ts_ns" if name == "connections" else "ts_ns" if "ts_ns" in schema.names else None
        ordered = sorted(folded.get(name, []), key=lambda r: (
            r.get(time_column) or 0 if time_column else 0, r.get("conn_id") or r.get("segment") or "", r["node"]))
        tables[name] = pa.Table.from_pylist(ordered, schema=schema) if ordered else schema.empty_table()
    return Combined(tables, conn_ids)
