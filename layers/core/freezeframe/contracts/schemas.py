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


def _per_direction(name: str, type_: pa.DataType, doc: str) -> list[pa.Field]:
    """A connection total plus its `_out` (sent by src) and `_in` (sent by dst) parts."""
    return [
        _field(name, type_, f"{doc} Both directions; null for non-TCP."),
        _field(f"{name}_out", type_, f"{doc} Sent by the initiator (src)."),
        _field(f"{name}_in", type_, f"{doc} Sent by the responder (dst)."),
    ]


# DESIGN's TCP insights, defined as Wireshark's TCP analysis (epan/dissectors/packet-tcp.c) defines them, so that
# tshark on the same capture is the reference. All are null for non-TCP rows.
TCP_INSIGHTS: list[pa.Field] = [
    _field("conn_state", pa.string(),
           "Zeek-style connection state: S0, S1, SF, REJ, S2, S3, RSTO, RSTR, RSTOS0, RSTRH, SH, SHR, OTH."),
    _field("history", pa.string(),
           "Zeek-style history: S h a d f r (upper case from the initiator, lower case from the responder), "
           "t/T retransmission, w/W zero window, each letter once."),
    _field("syn_to_synack_us", pa.int64(), "First SYN to the first SYN-ACK in microseconds (Kubeshark's initial RTT)."),
    _field("handshake_us", pa.int64(),
           "Wireshark tcp.analysis.initial_rtt in microseconds: the most recent SYN to the first segment with ACK "
           "and without SYN (normally the ACK of the SYN-ACK; the RST-ACK of a refused connect)."),
    _field("time_to_first_data_us", pa.int64(), "First SYN to the first segment carrying payload, microseconds."),
    *_per_direction("retransmissions", pa.int64(),
                    "Segments Wireshark flags tcp.analysis.retransmission (fast and spurious included)."),
    _field("fast_retransmissions", pa.int64(), "Segments flagged tcp.analysis.fast_retransmission."),
    _field("spurious_retransmissions", pa.int64(), "Segments flagged tcp.analysis.spurious_retransmission."),
    _field("out_of_order", pa.int64(), "Segments flagged tcp.analysis.out_of_order."),
    *_per_direction("dup_acks", pa.int64(), "Segments flagged tcp.analysis.duplicate_ack."),
    _field("lost_segments", pa.int64(), "Segments flagged tcp.analysis.lost_segment (previous segment not captured)."),
    _field("retransmission_rate", pa.float64(), "retransmissions / TCP segments carrying payload (NULL when none)."),
    *_per_direction("zero_window_events", pa.int64(), "Segments flagged tcp.analysis.zero_window."),
    _field("window_full_events", pa.int64(), "Segments flagged tcp.analysis.window_full."),
    _field("window_scale", pa.int32(), "Window scale shift the initiator announced in its SYN; null if none seen."),
    _field("window_scale_in", pa.int32(), "Window scale shift the responder announced in its SYN-ACK."),
    _field("keepalives", pa.int64(), "Segments flagged tcp.analysis.keep_alive."),
    _field("rtt_min_us", pa.int64(), "Smallest data-to-ACK time (tcp.analysis.ack_rtt) in microseconds."),
    _field("rtt_avg_us", pa.int64(), "Mean data-to-ACK time in microseconds."),
    _field("rtt_max_us", pa.int64(), "Largest data-to-ACK time in microseconds."),
    _field("rtt_samples", pa.int64(), "Number of data-to-ACK samples (frames carrying tcp.analysis.ack_rtt)."),
    _field("rtt_jitter_us", pa.int64(), "Mean absolute difference of consecutive RTT samples, microseconds."),
    _field("bytes_total", pa.int64(), "TCP payload bytes in both directions, retransmitted bytes included."),
    _field("goodput_bytes", pa.int64(), "TCP payload bytes in both directions, not counting retransmitted bytes."),
    _field("rst_count", pa.int64(), "Segments with RST set."),
    _field("fin_count", pa.int64(), "Segments with FIN set."),
    _field("close", pa.string(),
           "How the connection ended: 'handshake_failed' (a SYN never answered by a SYN-ACK), else 'rst' (any RST), "
           "'fin' (any FIN) or 'open'."),
]


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
        _field("isn_out", pa.int64(),
               "Initial sequence number of the initiator: the raw sequence number of its SYN (RFC 9293 3.4.1); null "
               "when no SYN from it was seen, and for non-TCP. With isn_in and the 5-tuple it identifies the "
               "connection across nodes without relying on their clocks."),
        _field("isn_in", pa.int64(),
               "Initial sequence number of the responder: the raw sequence number of its SYN-ACK; null when none "
               "was seen, and for non-TCP."),
        *TCP_INSIGHTS,
        _field("src_namespace", pa.string(), "Kubernetes namespace of src_ip at first_ts."),
        _field("src_pod", pa.string(), "Kubernetes pod of src_ip at first_ts."),
        _field("src_workload", pa.string(), "Owning workload (Deployment, StatefulSet, ...) of src_pod."),
        _field("dst_namespace", pa.string(), "Kubernetes namespace of dst_ip at first_ts."),
        _field("dst_pod", pa.string(), "Kubernetes pod of dst_ip at first_ts."),
        _field("dst_workload", pa.string(), "Owning workload (Deployment, StatefulSet, ...) of dst_pod."),
    ],
    metadata={"table": "connections", "schema_version": "1"},
)


def _traffic(table: str, columns: list[pa.Field], row: str) -> pa.Schema:
    """A traffic table: the columns DESIGN fixes for every traffic table around the protocol's own columns."""
    head = [
        _field("node", pa.string(), "Kubernetes node whose agent captured the traffic.", nullable=False),
        _field("conn_id", pa.string(), "Id of the connection carrying this row; joins connections.conn_id.",
               nullable=False),
        _field("ts", TIMESTAMP_MS, f"Time of the {row} (ms, UTC).", nullable=False),
        _field("ts_ns", pa.int64(), f"Time of the {row} in ns since the Unix epoch.", nullable=False),
        _field("src_ip", pa.string(), "Client address (sender of the request).", nullable=False),
        _field("src_port", pa.int32(), "Client port."),
        _field("dst_ip", pa.string(), "Server address.", nullable=False),
        _field("dst_port", pa.int32(), "Server port."),
    ]
    k8s = [
        _field("src_namespace", pa.string(), "Kubernetes namespace of src_ip at ts."),
        _field("src_pod", pa.string(), "Kubernetes pod of src_ip at ts."),
        _field("src_workload", pa.string(), "Owning workload (Deployment, StatefulSet, ...) of src_pod."),
        _field("dst_namespace", pa.string(), "Kubernetes namespace of dst_ip at ts."),
        _field("dst_pod", pa.string(), "Kubernetes pod of dst_ip at ts."),
        _field("dst_workload", pa.string(), "Owning workload (Deployment, StatefulSet, ...) of dst_pod."),
    ]
    return pa.schema(head + columns + k8s, metadata={"table": table, "schema_version": "1"})


DNS: pa.Schema = _traffic("dns", [
    _field("transaction_id", pa.int32(), "DNS header ID (RFC 1035 4.1.1) that pairs a query with its response.",
           nullable=False),
    _field("qname", pa.string(), "QNAME of the first question, dotted, without the trailing dot.", nullable=False),
    _field("qtype", pa.string(), "QTYPE mnemonic ('A', 'AAAA', 'CNAME', ...; 'TYPE<n>' when unknown).",
           nullable=False),
    _field("rcode", pa.int32(), "RCODE of the response (RFC 1035 4.1.1); null when no response was seen."),
    _field("rcode_name", pa.string(), "RCODE name: 'NOERROR', 'NXDOMAIN', 'SERVFAIL', 'REFUSED', ..."),
    _field("answers", pa.list_(pa.string()), "RDATA of the answer section as text, in order; null if unanswered."),
    _field("ttls", pa.list_(pa.int64()), "TTL of each answer, aligned with answers."),
    _field("latency_us", pa.int64(), "Response time minus query time in microseconds; null if unanswered."),
    _field("transport", pa.string(), "'udp', or 'tcp' (RFC 1035 4.2.2 length-prefixed messages).", nullable=False),
    _field("truncated", pa.bool_(), "TC bit of the response (or of the query when unanswered)."),
    _field("response_ts_ns", pa.int64(), "Time of the response in ns since the Unix epoch; null if unanswered."),
], "query (or of the response when its query was not captured)")

HTTP: pa.Schema = _traffic("http", [
    _field("method", pa.string(), "Request method (RFC 9110 9).", nullable=False),
    _field("host", pa.string(), "Host header field of the request."),
    _field("path", pa.string(), "request-target of the request line (RFC 9112 3.2).", nullable=False),
    _field("version", pa.string(), "HTTP-version of the request line, e.g. 'HTTP/1.1'."),
    _field("status", pa.int32(), "status-code of the paired response; null when no response was seen."),
    _field("reason", pa.string(), "reason-phrase of the paired response."),
    _field("latency_us", pa.int64(),
           "First byte of the response minus first byte of the request, microseconds; null without response."),
    _field("request_bytes", pa.int64(),
           "Request body length: Content-Length or the decoded chunk sizes, else the body bytes seen.",
           nullable=False),
    _field("response_bytes", pa.int64(),
           "Response body length: Content-Length or the decoded chunk sizes, else the body bytes seen."),
    _field("response_complete", pa.bool_(), "Whether the whole response body was seen; null without response."),
    _field("user_agent", pa.string(), "User-Agent header field of the request."),
    _field("content_type", pa.string(), "Content-Type of the response (of the request when none)."),
    _field("response_ts_ns", pa.int64(), "Time of the first response byte in ns since the Unix epoch."),
], "first request byte")

TLS: pa.Schema = _traffic("tls", [
    _field("sni", pa.string(), "server_name of the ClientHello (RFC 6066 3, host_name)."),
    _field("version", pa.string(),
           "Negotiated version ('TLS 1.3', 'TLS 1.2', ...): the ServerHello's supported_versions, else its "
           "legacy_version; the client's highest offered version when no ServerHello was seen."),
    _field("client_versions", pa.list_(pa.string()),
           "Versions the client offered: supported_versions (RFC 8446 4.2.1), else its legacy_version."),
    _field("alpn", pa.list_(pa.string()), "ALPN protocol names offered by the client (RFC 7301)."),
    _field("alpn_selected", pa.string(), "ALPN protocol selected by the server."),
    _field("cipher", pa.string(), "Cipher suite selected in the ServerHello (IANA name, else hex)."),
    _field("established", pa.bool_(), "A ServerHello was seen and no fatal alert followed.", nullable=False),
    _field("alert", pa.string(),
           "First plaintext alert as 'level:description' (RFC 8446 6), e.g. 'fatal:handshake_failure'."),
    _field("alert_from", pa.string(), "'client' or 'server': the sender of the alert."),
    _field("server_hello_ts_ns", pa.int64(), "Time of the ServerHello in ns since the Unix epoch."),
], "ClientHello (or of the ServerHello when the ClientHello was not captured)")

DISSECT_ERRORS: pa.Schema = pa.schema(
    [
        _field("node", pa.string(), "Kubernetes node whose segment was dissected.", nullable=False),
        _field("segment", pa.string(), "S3 key (or local path) of the segment the problem was found in.",
               nullable=False),
        _field("segment_version", pa.string(), "S3 version id of the segment; null for local files."),
        _field("segment_start_ns", pa.int64(), "Start of the segment in ns since the Unix epoch; null if unknown."),
        _field("stage", pa.string(), "Where it was found: 'read' (capture framing), 'decode' (link/IP/transport "
                                     "headers) or 'app' (DNS, HTTP, TLS parsing).", nullable=False),
        _field("kind", pa.string(),
               "Problem kind, e.g. truncated, bad_record_header, bad_block_length, garbage_skipped, unrecoverable, "
               "zstd_corrupt, not_a_capture, malformed, tls_malformed.", nullable=False),
        _field("count", pa.int64(), "How many times the problem occurred in the segment.", nullable=False),
        _field("first_offset", pa.int64(), "Byte offset in the decompressed capture where it first occurred."),
        _field("first_packet", pa.int64(), "0-based index in the segment of the packet at or after the first "
                                           "occurrence (packets before it were read intact)."),
        _field("message", pa.string(), "Description of the first occurrence."),
    ],
    metadata={"table": "dissect_errors", "schema_version": "1"},
)


# Cross-layer evidence (freezeframe.freeze.node_state, freezeframe.dissect.crosslayer): the node's own network state and
# the
# Kubernetes Services and EndpointSlices over time, beside the traffic.
NODE_STATS: pa.Schema = pa.schema(
    [
        _field("node", pa.string(), "Kubernetes node whose agent read the counters.", nullable=False),
        _field("ts", TIMESTAMP_MS, "End of the period: when the counters were read (ms, UTC).", nullable=False),
        _field("ts_ns", pa.int64(), "End of the period in ns since the Unix epoch.", nullable=False),
        _field("start_ns", pa.int64(), "Start of the period (the agent's previous read) in ns since the Unix epoch.",
               nullable=False),
        _field("source", pa.string(), "Where the number comes from: 'snmp' (/proc/net/snmp and netstat), "
                                      "'conntrack', 'interface' (/proc/net/dev and the MTU) or 'sockets' "
                                      "(/proc/net/sockstat).", nullable=False),
        _field("metric", pa.string(), "Counter name: '<group>.<name>' as the kernel spells it for snmp "
                                      "(TcpExt.ListenOverflows, Tcp.RetransSegs), 'count'/'max'/'drop'/"
                                      "'insert_failed'/... for conntrack, rx_dropped/tx_errors/mtu/... for "
                                      "interfaces, TCP.inuse/TCP.tw/... for sockets.", nullable=False),
        _field("device", pa.string(), "Interface name for source 'interface'; null otherwise."),
        _field("kind", pa.string(), "'counter' (a running total: see delta) or 'gauge' (a level: read value).",
               nullable=False),
        _field("value", pa.int64(), "The kernel's value at ts.", nullable=False),
        _field("delta", pa.int64(), "For counters: value minus the node's previous document's value, i.e. what "
                                    "happened during the period; null for gauges, for the node's first document and "
                                    "when the counter went backwards (agent or node restart)."),
    ],
    metadata={"table": "node_stats", "schema_version": "1"},
)

NODE_CONFIG: pa.Schema = pa.schema(
    [
        _field("node", pa.string(), "Kubernetes node whose agent read the configuration.", nullable=False),
        _field("ts", TIMESTAMP_MS, "When the agent read it (ms, UTC).", nullable=False),
        _field("ts_ns", pa.int64(), "When the agent read it, ns since the Unix epoch.", nullable=False),
        _field("kind", pa.string(), "'routes' (ip route show table all, IPv4 and IPv6), 'mtus' (interface MTUs) or "
                                    "'ruleset' (nft list ruleset, else iptables-save).", nullable=False),
        _field("digest", pa.string(), "sha256 of the configuration text.", nullable=False),
        _field("previous_digest", pa.string(), "sha256 of the node's previous configuration of this kind; null for "
                                               "the first one seen."),
        _field("content", pa.string(), "The configuration text as read (null when the document did not carry it)."),
        _field("error", pa.string(), "Why it could not be read (no nft or iptables-save on the node, say)."),
    ],
    metadata={"table": "node_config", "schema_version": "1"},
)

SERVICES: pa.Schema = pa.schema(
    [
        _field("ts", TIMESTAMP_MS, "When the watcher observed this state of the Service (ms, UTC).", nullable=False),
        _field("ts_ns", pa.int64(), "When it was observed, ns since the Unix epoch.", nullable=False),
        _field("change", pa.string(), "ADDED, MODIFIED, DELETED or SYNC (a re-list snapshot).", nullable=False),
        _field("namespace", pa.string(), "Namespace of the Service.", nullable=False),
        _field("service", pa.string(), "Name of the Service.", nullable=False),
        _field("service_type", pa.string(), "spec.type: ClusterIP, NodePort, LoadBalancer, ExternalName."),
        _field("cluster_ip", pa.string(), "One of spec.clusterIPs (one row per address and port); null for "
                                          "headless Services."),
        _field("port", pa.int32(), "spec.ports[].port: the port clients connect to."),
        _field("protocol", pa.string(), "spec.ports[].protocol (TCP, UDP, SCTP)."),
        _field("target_port", pa.string(), "spec.ports[].targetPort: a number or a named container port."),
        _field("port_name", pa.string(), "spec.ports[].name."),
    ],
    metadata={"table": "services", "schema_version": "1"},
)

ENDPOINTS: pa.Schema = pa.schema(
    [
        _field("ts", TIMESTAMP_MS, "When the watcher observed this state of the EndpointSlice (ms, UTC).",
               nullable=False),
        _field("ts_ns", pa.int64(), "When it was observed, ns since the Unix epoch.", nullable=False),
        _field("change", pa.string(), "ADDED, MODIFIED, DELETED or SYNC.", nullable=False),
        _field("namespace", pa.string(), "Namespace of the Service and its EndpointSlice.", nullable=False),
        _field("service", pa.string(), "The Service (label kubernetes.io/service-name); null when unlabelled."),
        _field("slice", pa.string(), "Name of the EndpointSlice.", nullable=False),
        _field("address", pa.string(), "endpoints[].addresses[] (one row per address); null on a row that records a "
                                       "slice with no endpoints at all."),
        _field("ports", pa.string(), "The slice's ports as 'name:port/protocol', comma-separated."),
        _field("pod_namespace", pa.string(), "targetRef namespace when it is a Pod."),
        _field("pod", pa.string(), "targetRef name when it is a Pod."),
        _field("node_name", pa.string(), "endpoints[].nodeName."),
        _field("ready", pa.bool_(), "conditions.ready (null: unknown, which clients treat as ready); "
                                    "false on a row for an empty slice or a DELETED one."),
        _field("serving", pa.bool_(), "conditions.serving."),
        _field("terminating", pa.bool_(), "conditions.terminating."),
    ],
    metadata={"table": "endpoints", "schema_version": "1"},
)

SERVICE_FLOWS: pa.Schema = pa.schema(
    [
        _field("node", pa.string(), "Kubernetes node whose agent captured the connection.", nullable=False),
        _field("conn_id", pa.string(), "The connection to the ClusterIP; joins connections.conn_id.", nullable=False),
        _field("ts", TIMESTAMP_MS, "Start of the connection (ms, UTC).", nullable=False),
        _field("ts_ns", pa.int64(), "Start of the connection, ns since the Unix epoch.", nullable=False),
        _field("src_ip", pa.string(), "Client address.", nullable=False),
        _field("src_port", pa.int32(), "Client port."),
        _field("cluster_ip", pa.string(), "The Service address the client connected to.", nullable=False),
        _field("port", pa.int32(), "The Service port the client connected to."),
        _field("namespace", pa.string(), "Namespace of the Service.", nullable=False),
        _field("service", pa.string(), "Name of the Service that held cluster_ip at ts.", nullable=False),
        _field("backend_conn_id", pa.string(), "The translated connection (after kube-proxy's DNAT) when the capture "
                                               "shows it: same client address and port, a backend of the Service."),
        _field("backend_ip", pa.string(), "The backend pod address the connection was translated to."),
        _field("backend_port", pa.int32(), "The backend port."),
        _field("backend_namespace", pa.string(), "Namespace of the backend pod."),
        _field("backend_pod", pa.string(), "The backend pod."),
        _field("backend_workload", pa.string(), "Owning workload of the backend pod."),
        _field("backend_ready", pa.bool_(), "Whether the Service's EndpointSlices listed the backend as ready at ts."),
        _field("backend_terminating", pa.bool_(), "Whether they listed it as terminating at ts."),
    ],
    metadata={"table": "service_flows", "schema_version": "1"},
)

TABLES: dict[str, pa.Schema] = {"connections": CONNECTIONS, "dns": DNS, "http": HTTP, "tls": TLS,
                                "dissect_errors": DISSECT_ERRORS, "node_stats": NODE_STATS,
                                "node_config": NODE_CONFIG, "services": SERVICES, "endpoints": ENDPOINTS,
                                "service_flows": SERVICE_FLOWS}

# What an incident's views (freezeframe.dissect.observers) add to every row: which nodes saw it and whose view it
# reports.
OBSERVATION: list[pa.Field] = [
    _field("observers", pa.list_(pa.string()),
           "Nodes whose agents captured this conversation (or exchange), sorted; one entry when one node saw it.",
           nullable=False),
    _field("observer", pa.string(),
           "The node whose view this row reports (equal to node): the most complete view among the observers.",
           nullable=False),
    _field("views_disagree", pa.bool_(),
           "True when the observers' views differ in a compared field (one side lost or missed packets).",
           nullable=False),
    _field("disagreeing", pa.list_(pa.string()),
           "The compared fields in which the observers' views differ (connections: packets, bytes, payload bytes "
           "per direction, retransmissions, lost_segments; dns: rcode, answers, truncated; http: status, sizes, "
           "response_complete; tls: version, cipher, established, alert); empty when they agree.", nullable=False),
]


def _view(schema: pa.Schema) -> pa.Schema:
    return pa.schema(list(schema) + OBSERVATION, metadata={**(schema.metadata or {}), b"view": b"1"})


# The tables the query engines read: one row per conversation across nodes, under keys.view_prefix. The per-node
# parts (TABLES, under keys.table_prefix) stay as each node's evidence; finalize derives the views from them.
VIEWS: dict[str, pa.Schema] = {name: _view(schema) for name, schema in TABLES.items()}
