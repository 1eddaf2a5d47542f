"""Parquet table schemas: the single source of truth for the writer, the Glue/Athena DDL and the docs.

Every table is stored as hive-partitioned Parquet under
``tables/<table>/dt=YYYY-MM-DD/incident_id=<id>/<node>.parquet``. The partition columns
(``PARTITION_KEYS``) live in the path only, never inside the files, so Athena and DuckDB add them back
from the path and a file can be re-homed without rewriting it.

Timestamps are stored twice, as DESIGN asks: a millisecond ``timestamp`` for SQL convenience and a
``*_ns`` BIGINT that keeps the capture's full precision. Each field carries ``metadata={"doc": ...}``,
from which the Glue column comments and the docs are generated.
"""

from __future__ import annotations

import pyarrow as pa

PARTITION_KEYS: tuple[str, ...] = ("dt", "incident_id")

TIMESTAMP_MS = pa.timestamp("ms", tz="UTC")


def _field(name: str, type_: pa.DataType, doc: str, nullable: bool = True) -> pa.Field:
    return pa.field(name, type_, nullable=nullable, metadata={"doc": doc})


def field_doc(field: pa.Field) -> str:
    """The human description of a column (empty when a field has none)."""
    metadata: dict[bytes, bytes] = field.metadata or {}
    return metadata.get(b"doc", b"").decode()


CONNECTIONS: pa.Schema = pa.schema(
    [
        _field("node", pa.string(), "Kubernetes node whose agent captured the traffic.", nullable=False),
        _field("conn_id", pa.string(),
               "Deterministic connection id: hex hash of node, proto, initiator 5-tuple and first_ts_ns; "
               "the same id in every table for one connection.", nullable=False),
        _field("proto", pa.string(), "Transport protocol: 'tcp', 'udp', 'icmp', ...", nullable=False),
        _field("src_ip", pa.string(),
               "Initiator address: sender of the first SYN without ACK (TCP), else of the first packet seen.",
               nullable=False),
        _field("src_port", pa.int32(), "Initiator port; null for protocols without ports."),
        _field("dst_ip", pa.string(), "Responder address.", nullable=False),
        _field("dst_port", pa.int32(), "Responder port; null for protocols without ports."),
        _field("ts", TIMESTAMP_MS, "Event time of the row, equal to first_ts (ms, UTC).", nullable=False),
        _field("ts_ns", pa.int64(), "Event time of the row in ns since the Unix epoch.", nullable=False),
        _field("first_ts", TIMESTAMP_MS, "First packet of the connection seen (ms, UTC).", nullable=False),
        _field("first_ts_ns", pa.int64(), "First packet of the connection seen, ns since the Unix epoch.",
               nullable=False),
        _field("last_ts", TIMESTAMP_MS, "Last packet of the connection seen (ms, UTC).", nullable=False),
        _field("last_ts_ns", pa.int64(), "Last packet of the connection seen, ns since the Unix epoch.",
               nullable=False),
        _field("duration_us", pa.int64(), "last_ts_ns - first_ts_ns in microseconds.", nullable=False),
        _field("packets_out", pa.int64(), "Packets sent by the initiator (src).", nullable=False),
        _field("packets_in", pa.int64(), "Packets sent by the responder (dst).", nullable=False),
        _field("bytes_out", pa.int64(),
               "Frame bytes (original wire length) sent by the initiator; compares with tshark -z conv.",
               nullable=False),
        _field("bytes_in", pa.int64(), "Frame bytes (original wire length) sent by the responder.", nullable=False),
        _field("payload_bytes_out", pa.int64(),
               "Transport payload bytes sent by the initiator (from the IP length, so snaplen does not cut it).",
               nullable=False),
        _field("payload_bytes_in", pa.int64(), "Transport payload bytes sent by the responder.", nullable=False),
        _field("completeness", pa.int32(),
               "Wireshark tcp.completeness bitmask: 1 SYN, 2 SYN-ACK, 4 ACK, 8 DATA, 16 FIN, 32 RST; "
               "null for non-TCP."),
        _field("src_namespace", pa.string(), "Kubernetes namespace of src_ip at first_ts."),
        _field("src_pod", pa.string(), "Kubernetes pod of src_ip at first_ts."),
        _field("src_workload", pa.string(), "Owning workload (Deployment, StatefulSet, ...) of src_pod."),
        _field("dst_namespace", pa.string(), "Kubernetes namespace of dst_ip at first_ts."),
        _field("dst_pod", pa.string(), "Kubernetes pod of dst_ip at first_ts."),
        _field("dst_workload", pa.string(), "Owning workload (Deployment, StatefulSet, ...) of dst_pod."),
    ],
    metadata={"table": "connections", "schema_version": "1"},
)

TABLES: dict[str, pa.Schema] = {"connections": CONNECTIONS}
