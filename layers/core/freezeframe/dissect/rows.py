"""What the application-layer trackers share: their problem counters and the traffic-table row builder."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from operator import itemgetter
from typing import Any

import pyarrow as pa

FlowIdentity = tuple[str, str, int, str, int]
"""conn_id, initiator address, initiator port, responder address, responder port (text, as in connections)."""


@dataclass(slots=True)
class AppStats:
    """Application-layer problems, counted and never raised."""

    dns_messages: int = 0
    dns_malformed: int = 0
    dns_unmatched_responses: int = 0
    http_requests: int = 0
    http_malformed: int = 0
    http_unmatched_responses: int = 0
    tls_records: int = 0
    tls_malformed: int = 0
    tcp_stream_gaps: int = 0  # holes in a reassembled direction; that direction is no longer parsed

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


_by_time_then_connection = itemgetter(0, 1)
_ENRICHED = ("src_namespace", "src_pod", "src_workload", "dst_namespace", "dst_pod", "dst_workload")


def traffic_table(schema: pa.Schema, node: str, identify: Callable[[Any], FlowIdentity], names: Sequence[str],
                  rows: list[tuple[int, Any, bool, tuple[Any, ...]]]) -> pa.Table:
    """Rows of (ts_ns, flow, client_outbound, values of the protocol columns ``names``) as a table, sorted by ts_ns
    then conn_id.

    The values come as tuples in the order of ``names`` and the columns from one transposition, which costs much
    less than a dict per row and an append per cell.
    """
    resolved: list[tuple[int, str, str, int, str, int, tuple[Any, ...]]] = []
    append = resolved.append
    for ts_ns, flow, client_outbound, values in rows:
        conn_id, initiator, initiator_port, responder, responder_port = identify(flow)
        if client_outbound:
            append((ts_ns, conn_id, initiator, initiator_port, responder, responder_port, values))
        else:
            append((ts_ns, conn_id, responder, responder_port, initiator, initiator_port, values))
    resolved.sort(key=_by_time_then_connection)
    count = len(resolved)
    columns: dict[str, Sequence[Any]]
    if count:
        ts_ns_column, conn_ids, src_ips, src_ports, dst_ips, dst_ports, values_column = zip(*resolved, strict=True)
        columns = dict(zip(names, zip(*values_column, strict=True), strict=True))
    else:
        ts_ns_column = conn_ids = src_ips = src_ports = dst_ips = dst_ports = ()
        columns = {name: () for name in names}
    columns.update(node=[node] * count, conn_id=conn_ids, ts=[ts_ns // 1_000_000 for ts_ns in ts_ns_column],
                   ts_ns=ts_ns_column, src_ip=src_ips, src_port=src_ports, dst_ip=dst_ips, dst_port=dst_ports)
    for name in _ENRICHED:
        columns[name] = [None] * count  # Kubernetes enrichment joins these in a later stage
    arrays = [pa.array(columns[field.name], type=field.type) for field in schema]
    return pa.Table.from_arrays(arrays, schema=schema)
