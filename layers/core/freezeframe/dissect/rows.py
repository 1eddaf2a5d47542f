"""What the application-layer trackers share: their problem counters and the traffic-table row builder."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
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


def traffic_table(schema: pa.Schema, node: str, identify: Callable[[Any], FlowIdentity],
                  rows: list[tuple[int, Any, bool, dict[str, Any]]]) -> pa.Table:
    """Rows of (ts_ns, flow, client_outbound, protocol columns) as a table, sorted by ts_ns then conn_id."""
    resolved = []
    for ts_ns, flow, client_outbound, values in rows:
        conn_id, initiator, initiator_port, responder, responder_port = identify(flow)
        if client_outbound:
            ends = (initiator, initiator_port, responder, responder_port)
        else:
            ends = (responder, responder_port, initiator, initiator_port)
        resolved.append((ts_ns, conn_id, ends, values))
    resolved.sort(key=lambda row: (row[0], row[1]))
    columns: dict[str, list[Any]] = {name: [] for name in schema.names}
    for ts_ns, conn_id, (src_ip, src_port, dst_ip, dst_port), values in resolved:
        columns["node"].append(node)
        columns["conn_id"].append(conn_id)
        columns["ts"].append(ts_ns // 1_000_000)
        columns["ts_ns"].append(ts_ns)
        columns["src_ip"].append(src_ip)
        columns["src_port"].append(src_port)
        columns["dst_ip"].append(dst_ip)
        columns["dst_port"].append(dst_port)
        for name, value in values.items():
            columns[name].append(value)
    for name in ("src_namespace", "src_pod", "src_workload", "dst_namespace", "dst_pod", "dst_workload"):
        columns[name] = [None] * len(resolved)  # Kubernetes enrichment joins these in a later stage
    arrays = [pa.array(columns[field.name], type=field.type) for field in schema]
    return pa.Table.from_arrays(arrays, schema=schema)
