"""The incident report: one self-contained HTML page (inline CSS and inline SVG, no scripts, no external assets).

Sections: coverage per node, a timeline of errors, a service map, TCP health, DNS failures, TLS handshake failures,
the slowest endpoints, and the SQL behind all of them. Every table and figure except the manifest's coverage comes
from Athena SQL run through `query.run` (DuckDB locally), and the page shows exactly that SQL, so a reader can rerun
it in Athena or with `freezeframe query`. Coverage comes from the locked manifest and its late parts.

Every value on the page went through `html.escape`: addresses, names, SNIs, paths and hosts come from captured
traffic and are attacker-controlled. Columns that the dissection has not filled yet (null) show as "n/a".
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import freezeframe
from freezeframe.adapters import s3 as s3io
from freezeframe.adapters.s3 import ObjectStore
from freezeframe.contracts.config import Settings
from freezeframe.contracts.errors import NotFoundError
from freezeframe.contracts.keys import check_name, follow_key, report_key
from freezeframe.contracts.models import from_ns, parse_iso, to_ns
from freezeframe.custody.chain import seal_written
from freezeframe.custody.incident import load_incident
from freezeframe.custody.manifest import entries_of, node_coverage
from freezeframe.freeze.unverified import unverified_of
from freezeframe.investigate.query import QueryResult, connect, run

TIMELINE_MAX_BUCKETS = 60
# Bucket widths the timeline may use, in seconds: the first that keeps the data under TIMELINE_MAX_BUCKETS wins.
BUCKET_STEPS_S = (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 86400)
SERVICE_MAP_EDGES = 40
TABLE_ROWS = 25
CELL_CHARS = 96

# Connection outcomes, as SQL over the connections table. A SYN answered by a bare RST is completeness 33, answered
# by RST-ACK (Linux) 37; the Zeek-style conn_state says the same when the TCP insight columns are filled.
RESET_SQL = ("(coalesce(rst_count, 0) > 0 OR bitwise_and(coalesce(completeness, 0), 32) = 32 "
             "OR conn_state IN ('REJ', 'RSTO', 'RSTR', 'RSTOS0', 'RSTRH'))")
REFUSED_SQL = "(completeness IN (33, 37) OR conn_state = 'REJ')"
UNANSWERED_SQL = "(completeness = 1 OR conn_state = 'S0')"
FAILED_CONN_SQL = f"(proto = 'tcp' AND ({RESET_SQL} OR {UNANSWERED_SQL} OR close = 'handshake_failed'))"
DNS_FAILURE_SQL = "(rcode IS NULL OR rcode <> 0)"
TLS_FAILURE_SQL = "(NOT established OR alert LIKE 'fatal:%')"


def _peer(side: str) -> str:
    """A service-map name: namespace/workload (or pod) when the address was enriched, else the bare IP."""
    return f"coalesce({side}_namespace || '/' || coalesce({side}_workload, {side}_pod), {side}_ip)"


# The Service a connection went to, where it was addressed to a ClusterIP (freezeframe.dissect.crosslayer,
# service_flows).
_SERVICE_OF_CONN = ("SELECT node AS sf_node, conn_id AS sf_conn_id, namespace AS sf_namespace, service AS sf_service "
                    "FROM freezeframe.service_flows WHERE {where}")


def _service_or_peer() -> str:
    """The service-map name of a destination: 'namespace/service (Service)' for a ClusterIP, else _peer('dst')."""
    return f"coalesce(s.sf_namespace || '/' || s.sf_service || ' (Service)', {_peer('dst')})"


def percentile(column: str, fraction: str) -> str:
    """The exact nearest-rank percentile of a column (the smallest value with at least `fraction` of the values at or
    below it; always a value of the data). approx_percentile is not used: Athena's and DuckDB's approximations differ,
    and the local engine refuses it."""
    return (f"element_at(array_sort(array_agg({column}) FILTER (WHERE {column} IS NOT NULL)), "
            f"greatest(1, CAST(ceil({fraction} * count({column})) AS integer)))")


@dataclass(frozen=True, slots=True)
class ReportQuery:
    name: str
    title: str
    sql: str


# The SQL below is built from constants and `incident_filter`, whose only input is a checked incident id and two
# dates; nothing from captured traffic reaches it (hence the S608 waivers).
def incident_filter(incident_id: str, window_start_ns: int, window_end_ns: int) -> str:
    """The WHERE clause every query shares: the incident partition plus the dt range (Athena prunes on both)."""
    # check_name admits only [A-Za-z0-9._:-], so the id cannot break out of the quoted literal.
    first, last = (f"{from_ns(ns):%Y-%m-%d}" for ns in (window_start_ns, window_end_ns))
    return f"incident_id = '{check_name('incident_id', incident_id)}' AND dt BETWEEN '{first}' AND '{last}'"


def coverage_query(where: str) -> ReportQuery:
    return ReportQuery("coverage", "Dissected rows per node", f"""\
SELECT node, sum(conns) AS connections, sum(http) AS http, sum(dns) AS dns, sum(tls) AS tls,
       min(first_ns) AS first_ns, max(last_ns) AS last_ns
FROM (
  SELECT node, 1 AS conns, 0 AS http, 0 AS dns, 0 AS tls, first_ts_ns AS first_ns, last_ts_ns AS last_ns
  FROM freezeframe.connections WHERE {where}
  UNION ALL
  SELECT node, 0, 1, 0, 0, ts_ns, ts_ns FROM freezeframe.http WHERE {where}
  UNION ALL
  SELECT node, 0, 0, 1, 0, ts_ns, ts_ns FROM freezeframe.dns WHERE {where}
  UNION ALL
  SELECT node, 0, 0, 0, 1, ts_ns, ts_ns FROM freezeframe.tls WHERE {where}
) rows_by_node
GROUP BY node
ORDER BY node""")  # noqa: S608


def timeline_query(where: str, bucket_ns: int) -> ReportQuery:
    bucket = f"{{ts}} - {{ts}} % {bucket_ns}"
    ts, last = bucket.format(ts="ts_ns"), bucket.format(ts="last_ts_ns")
    return ReportQuery("timeline", "Errors per time bucket", f"""\
SELECT bucket_ns, sum(http_5xx) AS http_5xx, sum(tcp_resets) AS tcp_resets,
       sum(dns_failures) AS dns_failures, sum(tls_failures) AS tls_failures
FROM (
  SELECT {ts} AS bucket_ns, 1 AS http_5xx, 0 AS tcp_resets, 0 AS dns_failures, 0 AS tls_failures
  FROM freezeframe.http WHERE {where} AND status >= 500
  UNION ALL
  SELECT {last}, 0, 1, 0, 0
  FROM freezeframe.connections WHERE {where} AND proto = 'tcp' AND {RESET_SQL}
  UNION ALL
  SELECT {ts}, 0, 0, 1, 0 FROM freezeframe.dns WHERE {where} AND {DNS_FAILURE_SQL}
  UNION ALL
  SELECT {ts}, 0, 0, 0, 1 FROM freezeframe.tls WHERE {where} AND {TLS_FAILURE_SQL}
) errors
GROUP BY bucket_ns
ORDER BY bucket_ns""")  # noqa: S608


def service_map_query(where: str) -> ReportQuery:
    return ReportQuery("service_map", "Who talked to whom", f"""\
SELECT src, dst, sum(conns) AS connections, sum(failed) AS failed_connections,
       sum(requests) AS requests, sum(errors) AS http_5xx
FROM (
  SELECT {_peer('src')} AS src, {_service_or_peer()} AS dst, 1 AS conns,
         CASE WHEN {FAILED_CONN_SQL} THEN 1 ELSE 0 END AS failed, 0 AS requests, 0 AS errors
  FROM (SELECT * FROM freezeframe.connections WHERE {where}) AS c
  LEFT JOIN ({_SERVICE_OF_CONN.format(where=where)}) AS s ON s.sf_node = c.node AND s.sf_conn_id = c.conn_id
  UNION ALL
  SELECT {_peer('src')}, {_service_or_peer()}, 0, 0, 1, CASE WHEN status >= 500 THEN 1 ELSE 0 END
  FROM (SELECT * FROM freezeframe.http WHERE {where}) AS h
  LEFT JOIN ({_SERVICE_OF_CONN.format(where=where)}) AS s ON s.sf_node = h.node AND s.sf_conn_id = h.conn_id
) edges
GROUP BY src, dst
ORDER BY sum(edges.conns) + sum(edges.requests) DESC, src, dst
LIMIT {SERVICE_MAP_EDGES}""")  # noqa: S608


def tcp_health_query(where: str) -> ReportQuery:
    return ReportQuery("tcp_health", "TCP health", f"""\
SELECT count(*) AS tcp_connections,
       sum(CASE WHEN {REFUSED_SQL} THEN 1 ELSE 0 END) AS refused,
       sum(CASE WHEN {RESET_SQL} THEN 1 ELSE 0 END) AS reset,
       sum(CASE WHEN {UNANSWERED_SQL} THEN 1 ELSE 0 END) AS unanswered,
       sum(retransmissions) AS retransmissions,
       max(retransmission_rate) AS max_retransmission_rate,
       sum(dup_acks) AS dup_acks,
       sum(lost_segments) AS lost_segments,
       sum(zero_window_events) AS zero_window_events,
       {percentile('handshake_us', '0.5')} AS handshake_p50_us,
       {percentile('handshake_us', '0.95')} AS handshake_p95_us,
       max(rtt_max_us) AS rtt_max_us
FROM freezeframe.connections
WHERE {where} AND proto = 'tcp'""")  # noqa: S608


def tcp_hotspots_query(where: str) -> ReportQuery:
    return ReportQuery("tcp_hotspots", "TCP trouble by pair", f"""\
SELECT {_peer('src')} AS src, {_peer('dst')} AS dst, dst_port, count(*) AS connections,
       sum(CASE WHEN {RESET_SQL} THEN 1 ELSE 0 END) AS resets,
       sum(retransmissions) AS retransmissions, max(retransmission_rate) AS max_retransmission_rate,
       sum(zero_window_events) AS zero_window_events, max(rtt_max_us) AS rtt_max_us
FROM freezeframe.connections AS c
WHERE {where} AND proto = 'tcp'
GROUP BY 1, 2, 3
HAVING sum(CASE WHEN {RESET_SQL} THEN 1 ELSE 0 END) > 0 OR coalesce(sum(retransmissions), 0) > 0
    OR coalesce(sum(zero_window_events), 0) > 0
ORDER BY coalesce(sum(c.retransmissions), 0) + coalesce(sum(c.zero_window_events), 0)
         + sum(CASE WHEN {RESET_SQL} THEN 1 ELSE 0 END) DESC, 1, 2, 3
LIMIT {TABLE_ROWS}""")  # noqa: S608


def dns_failures_query(where: str) -> ReportQuery:
    return ReportQuery("dns_failures", "DNS failures", f"""\
SELECT {_peer('src')} AS client, qname, qtype, coalesce(rcode_name, 'no response') AS rcode,
       count(*) AS queries, min(ts) AS first_seen, max(ts) AS last_seen
FROM freezeframe.dns
WHERE {where} AND {DNS_FAILURE_SQL}
GROUP BY 1, 2, 3, 4
ORDER BY count(*) DESC, min(ts), 1, 2
LIMIT {TABLE_ROWS}""")  # noqa: S608


def tls_failures_query(where: str) -> ReportQuery:
    return ReportQuery("tls_failures", "TLS handshake failures", f"""\
SELECT sni, coalesce(alert, 'no ServerHello') AS alert, alert_from, {_peer('src')} AS client,
       {_peer('dst')} AS server, count(*) AS handshakes, min(ts) AS first_seen
FROM freezeframe.tls
WHERE {where} AND {TLS_FAILURE_SQL}
GROUP BY 1, 2, 3, 4, 5
ORDER BY count(*) DESC, min(ts), 1
LIMIT {TABLE_ROWS}""")  # noqa: S608


def slowest_endpoints_query(where: str) -> ReportQuery:
    return ReportQuery("slowest_endpoints", "Slowest endpoints", f"""\
SELECT {_peer('dst')} AS service, host, method, split_part(path, '?', 1) AS path, count(*) AS requests,
       sum(CASE WHEN status >= 500 THEN 1 ELSE 0 END) AS http_5xx,
       sum(CASE WHEN status IS NULL THEN 1 ELSE 0 END) AS no_response,
       {percentile('latency_us', '0.5')} AS p50_us, {percentile('latency_us', '0.95')} AS p95_us,
       max(latency_us) AS max_us
FROM freezeframe.http
WHERE {where}
GROUP BY 1, 2, 3, 4
ORDER BY max(latency_us) DESC, 1, 2, 3, 4
LIMIT {TABLE_ROWS}""")  # noqa: S608


# Cross-layer evidence beside the errors: the nodes' own counters and the Services' endpoint readiness.
NODE_PROBLEM_COLUMNS = ("listen_drops", "syn_cookies", "conntrack_drops", "interface_drops_errors")
SERVICE_FAILED_STATES = "('REJ', 'S0', 'RSTR', 'RSTOS0', 'RSTRH', 'SH')"


def node_health_query(where: str, bucket_ns: int) -> ReportQuery:
    return ReportQuery("node_health", "Node health per time bucket", f"""\
SELECT node,
       ts_ns - ts_ns % {bucket_ns} AS bucket_ns,
       sum(CASE WHEN metric = 'TcpExt.ListenDrops' THEN delta END) AS listen_drops,
       sum(CASE WHEN metric = 'TcpExt.SyncookiesSent' THEN delta END) AS syn_cookies,
       sum(CASE WHEN metric = 'Tcp.RetransSegs' THEN delta END) AS retransmitted_segments,
       sum(CASE WHEN metric = 'Tcp.OutRsts' THEN delta END) AS resets_sent,
       sum(CASE WHEN source = 'conntrack' AND metric IN ('drop', 'early_drop', 'insert_failed') THEN delta END)
         AS conntrack_drops,
       max(CASE WHEN source = 'conntrack' AND metric = 'count' THEN value END) AS conntrack_entries,
       max(CASE WHEN source = 'conntrack' AND metric = 'max' THEN value END) AS conntrack_limit,
       sum(CASE WHEN source = 'interface' AND metric IN ('rx_dropped', 'tx_dropped', 'rx_errors', 'tx_errors')
                THEN delta END) AS interface_drops_errors
FROM freezeframe.node_stats
WHERE {where}
GROUP BY node, ts_ns - ts_ns % {bucket_ns}
ORDER BY node, bucket_ns""")  # noqa: S608


def endpoint_readiness_query(where: str) -> ReportQuery:
    return ReportQuery("endpoint_readiness", "Endpoint readiness per Service over time", f"""\
SELECT namespace, service, ts_ns, min(ts) AS ts,
       count(address) AS endpoints,
       count(CASE WHEN ready THEN 1 END) AS ready,
       count(CASE WHEN terminating THEN 1 END) AS terminating
FROM freezeframe.endpoints
WHERE {where} AND service IS NOT NULL
GROUP BY namespace, service, ts_ns
ORDER BY ts_ns, namespace, service""")  # noqa: S608


def service_traffic_query(where: str) -> ReportQuery:
    return ReportQuery("service_traffic", "Connections to Services (ClusterIP)", f"""\
SELECT f.namespace, f.service, f.cluster_ip, f.port,
       count(*) AS connections,
       count(CASE WHEN c.conn_state IN {SERVICE_FAILED_STATES} THEN 1 END) AS failed_connections,
       count(DISTINCT f.backend_pod) AS backend_pods,
       min(f.ts) AS first_seen
FROM (SELECT * FROM freezeframe.service_flows WHERE {where}) AS f
LEFT JOIN (SELECT * FROM freezeframe.connections WHERE {where}) AS c
  ON c.node = f.node AND c.conn_id = f.conn_id
GROUP BY f.namespace, f.service, f.cluster_ip, f.port
ORDER BY count(*) DESC, f.namespace, f.service, f.cluster_ip, f.port
LIMIT {TABLE_ROWS}""")  # noqa: S608


def section_queries(where: str, bucket_ns: int) -> tuple[ReportQuery, ...]:
    """The SQL of every section after the coverage, in page order."""
    return (timeline_query(where, bucket_ns), node_health_query(where, bucket_ns), endpoint_readiness_query(where),
            service_map_query(where), service_traffic_query(where), tcp_health_query(where),
            tcp_hotspots_query(where), dns_failures_query(where), tls_failures_query(where),
            slowest_endpoints_query(where))


def bucket_width_ns(span_ns: int) -> int:
    """The timeline's bucket: the smallest step that keeps the span under TIMELINE_MAX_BUCKETS buckets."""
    for step in BUCKET_STEPS_S:
        width = int(step * 1_000_000_000)
        if span_ns // width < TIMELINE_MAX_BUCKETS:
            return width
    return int(BUCKET_STEPS_S[-1] * 1_000_000_000)


# ---------------------------------------------------------------------------------------------------- data

@dataclass(frozen=True, slots=True)
class ReportData:
    """Everything the page shows: the manifest (and late parts) plus each query with its result."""

    manifest: dict[str, Any]
    parts: tuple[dict[str, Any], ...]
    queries: tuple[tuple[ReportQuery, QueryResult], ...]
    bucket_ns: int
    # The dissection's follow-up (freezeframe.freeze.follow.FollowUp.to_dict()) when finalize wrote one: while it has a
    # `partial_until`, the hold is open and the tables are partial until then.
    follow: dict[str, Any] | None = None

    def result(self, name: str) -> tuple[ReportQuery, QueryResult]:
        for query, result in self.queries:
            if query.name == name:
                return query, result
        raise KeyError(name)


def window_ns(manifest: Mapping[str, Any]) -> tuple[int, int]:
    request = manifest.get("request") or {}
    return (to_ns(parse_iso(str(request.get("window_start")), "window_start")),
            to_ns(parse_iso(str(request.get("window_end")), "window_end")))


def run_queries(con: Any, incident_id: str, window_start_ns: int, window_end_ns: int
                ) -> tuple[tuple[tuple[ReportQuery, QueryResult], ...], int]:
    """Every section's SQL through query.run on `con`, and the timeline's bucket width (from the data's extent)."""
    where = incident_filter(incident_id, window_start_ns, window_end_ns)
    coverage = run(None, coverage_query(where).sql, con)
    executed = [(coverage_query(where), coverage)]
    firsts = [r[5] for r in coverage.rows if r[5] is not None]
    lasts = [r[6] for r in coverage.rows if r[6] is not None]
    first, last = (min(firsts), max(lasts)) if firsts and lasts else (window_start_ns, window_end_ns)
    bucket_ns = bucket_width_ns(max(0, int(last) - int(first)))
    for query in section_queries(where, bucket_ns):
        executed.append((query, run(None, query.sql, con)))
    return tuple(executed), bucket_ns


def collect(settings: Settings, s3: ObjectStore, incident_id: str, con: Any = None) -> ReportData:
    """Read the manifest and its late parts from the evidence bucket, then run the SQL (on the bucket's tables
    unless `con` is given)."""
    incident = load_incident(settings, s3, incident_id, record=False, statuses=False, summary=False)
    manifest, parts = incident.manifest_document, tuple(incident.part_documents)
    queries, bucket_ns = run_queries(con if con is not None else connect(settings), incident_id,
                                     *window_ns(manifest))
    try:
        follow: dict[str, Any] | None = s3io.get_json(s3, settings.evidence_bucket, follow_key(incident_id))
    except NotFoundError:
        follow = None
    return ReportData(manifest, parts, queries, bucket_ns, follow)


def render_incident_report(settings: Settings, s3: ObjectStore, incident_id: str, con: Any = None,
                           now: datetime | None = None) -> str:
    return render(collect(settings, s3, incident_id, con), now or datetime.now(UTC))


def write_incident_report(settings: Settings, s3: ObjectStore, incident_id: str) -> str:
    """Render the report and store it in the evidence bucket (incidents/<id>/report.html); returns the key.

    Overwrites create a new version (the evidence bucket is versioned), so a report rendered again after late
    segments were dissected supersedes the first one without deleting it."""
    return store_report(settings, s3, incident_id, render_incident_report(settings, s3, incident_id))


def store_report(settings: Settings, s3: ObjectStore, incident_id: str, page: str) -> str:
    """Stores the page as a new version of the report, signed into the incident's chain. It is locked by the
    evidence bucket's default retention: only the freeze and the segment indexer may set a lock of their own."""
    key, body = report_key(incident_id), page.encode()
    version_id = s3io.put_bytes(s3, settings.evidence_bucket, key, body, content_type="text/html; charset=utf-8")
    seal_written(settings, s3, incident_id, "report", key, version_id, body, None)
    return key


# ---------------------------------------------------------------------------------------------------- rendering

def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _clip(text: str, limit: int = CELL_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _ns_clock(ns: int) -> str:
    return f"{from_ns(int(ns)):%H:%M:%S.%f}"[:-3]


def _ns_iso(ns: int) -> str:
    return f"{from_ns(int(ns)):%Y-%m-%d %H:%M:%S.%f}"[:-3] + " UTC"


def _duration(ns: float) -> str:
    seconds = ns / 1e9
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min"


def fmt_int(value: Any) -> str:
    return "n/a" if value is None else f"{int(value):,}"


def fmt_port(value: Any) -> str:
    return "n/a" if value is None else str(int(value))


def fmt_us(value: Any) -> str:
    return "n/a" if value is None else f"{float(value) / 1000:,.1f} ms"


def fmt_rate(value: Any) -> str:
    return "n/a" if value is None else f"{float(value) * 100:.2f} %"


def fmt_text(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, datetime):
        return f"{value.astimezone(UTC):%Y-%m-%d %H:%M:%S.%f}"[:-3]
    return str(value)


Column = tuple[str, str, Callable[[Any], str]]  # (result column, header, formatter)


def html_table(result: QueryResult, columns: Sequence[Column], empty: str) -> str:
    if not result.rows:
        return f'<p class="empty">{_e(empty)}</p>'
    index = {name: i for i, name in enumerate(result.columns)}
    head = "".join(f"<th>{_e(header)}</th>" for _, header, _ in columns)
    body = []
    for row in result.rows:
        cells = []
        for name, _, fmt in columns:
            text = fmt(row[index[name]])
            numeric = fmt is not fmt_text
            title = f' title="{_e(text)}"' if len(text) > CELL_CHARS else ""
            cells.append(f'<td class="{"num" if numeric else "txt"}"{title}>{_e(_clip(text))}</td>')
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def sql_block(query: ReportQuery, result: QueryResult) -> str:
    rows = len(result.rows)
    return (f'<details class="sql"><summary>SQL: {_e(query.title)} ({rows} row{"s" if rows != 1 else ""})'
            f"</summary><pre><code>{_e(query.sql)}</code></pre></details>")


def _records(result: QueryResult) -> list[dict[str, Any]]:
    return [dict(zip(result.columns, row, strict=True)) for row in result.rows]


# ------------------------------------------------------------------ coverage

def merged_coverage(manifest: Mapping[str, Any], parts: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Per-node coverage over the manifest's segments plus the late parts' (the manifest alone predates them)."""
    start, end = window_ns(manifest)
    entries = entries_of(dict(manifest)) + [e for part in parts for e in entries_of(dict(part))]
    gap_records = [g for node in (manifest.get("coverage") or {}).values() for g in node.get("gap_records", [])]
    return node_coverage(entries, start, end, gap_records)


def partial_until_ns(data: ReportData) -> int | None:
    """The hold's close time while the tables are partial (the hold is open), else None."""
    until = (data.follow or {}).get("partial_until")
    return to_ns(parse_iso(str(until), "partial_until")) if until else None


def alert_ns(manifest: Mapping[str, Any]) -> tuple[int, str] | None:
    """When the alert fired (or, for a manual freeze, when the freeze was requested), and what to call it."""
    request = manifest.get("request") or {}
    if request.get("alert_at"):
        return to_ns(parse_iso(str(request["alert_at"]), "alert_at")), "alert fired"
    if request.get("received_at"):
        return to_ns(parse_iso(str(request["received_at"]), "received_at")), "freeze requested"
    return None


def unverified_by_node(data: ReportData) -> dict[str, list[Any]]:
    found: dict[tuple[str, str], Any] = {}
    for document in [data.manifest, *data.parts]:
        for item in unverified_of(document):
            found[(item.key, item.version_id)] = item
    by_node: dict[str, list[Any]] = {}
    for item in sorted(found.values(), key=lambda u: (u.node, u.start_ns)):
        by_node.setdefault(item.node, []).append(item)
    return by_node


def gap_reason(gap: Sequence[int], info: Mapping[str, Any], unverified: Sequence[Any], end_ns: int,
               pending_until: int | None) -> tuple[str, str]:
    """Pure: why a coverage gap exists, as (css class, reason). The trailing part of the window while the hold is
    open is not a gap but evidence still to come ("pending")."""
    a, b = int(gap[0]), int(gap[1])
    for item in unverified:
        if item.start_ns < b and item.end_ns > a:
            return "gap", f"unverified segment: {item.reason}"
    if pending_until is not None and b >= end_ns:
        return "pending", "hold open (still being locked)"
    for record in info.get("gap_records", []):
        if int(record.get("start_ns", 0)) < b and int(record.get("end_ns", 0)) > a:
            return "gap", f"evicted by the agent ({record.get('reason') or 'spool full'})"
    # Missing sequence numbers lie between two segments that arrived: they explain a gap with coverage on both
    # sides, never the window's head or tail (nothing tells what came before the first segment or after the last).
    covered = info.get("covered_ns", [])
    interior = any(int(c[1]) <= a for c in covered) and any(int(c[0]) >= b for c in covered)
    if info.get("seq_gaps") and interior:
        seqs = ", ".join(f"{x}" if x == y else f"{x}–{y}" for x, y in info["seq_gaps"])
        return "gap", f"segments {seqs} missing (lost before upload)"
    return "gap", "no segment uploaded"


def coverage_svg(coverage: Mapping[str, Any], start_ns: int, end_ns: int, reasons: Mapping[str, Any] | None = None,
                 alert: tuple[int, str] | None = None) -> str:
    width, label_w, row_h = 900, 170, 26
    plot_w = width - label_w - 20
    span = max(1, end_ns - start_ns)
    height = 30 + row_h * max(1, len(coverage))

    def x(ns: int) -> float:
        return label_w + plot_w * (min(max(ns, start_ns), end_ns) - start_ns) / span

    out = [f'<svg class="chart" role="img" aria-label="coverage per node" xmlns="http://www.w3.org/2000/svg" '
           f'width="{width}" height="{height}" viewBox="0 0 {width} {height}">',
           f'<text x="{label_w}" y="14" class="axis">{_e(_ns_iso(start_ns))}</text>',
           f'<text x="{width - 20}" y="14" class="axis" text-anchor="end">{_e(_ns_iso(end_ns))}</text>']
    for i, (node, info) in enumerate(sorted(coverage.items())):
        y = 22 + i * row_h
        out.append(f'<text x="{label_w - 8}" y="{y + 14}" text-anchor="end" class="label">{_e(_clip(node, 24))}'
                   f"<title>{_e(node)}</title></text>")
        node_reasons = (reasons or {}).get(node)
        if node_reasons is None:
            out.append(f'<rect x="{label_w}" y="{y + 2}" width="{plot_w}" height="16" class="gap"/>')
        for (a, b), (kind, why) in zip(info.get("gaps_ns", []), node_reasons or [], strict=False):
            out.append(f'<rect x="{x(a):.1f}" y="{y + 2}" width="{max(1.0, x(b) - x(a)):.1f}" height="16" '
                       f'class="{kind}"><title>{_e(f"{_ns_clock(a)} to {_ns_clock(b)}: {why}")}</title></rect>')
        for a, b in info.get("covered_ns", []):
            out.append(f'<rect x="{x(a):.1f}" y="{y + 2}" width="{max(1.0, x(b) - x(a)):.1f}" height="16" '
                       f'class="covered"><title>{_e(f"covered {_ns_clock(a)} to {_ns_clock(b)}")}</title></rect>')
    if alert is not None and start_ns <= alert[0] <= end_ns:
        out.append(f'<line x1="{x(alert[0]):.1f}" x2="{x(alert[0]):.1f}" y1="18" y2="{height}" class="alert"/>'
                   f'<text x="{x(alert[0]) + 3:.1f}" y="{height - 2}" class="alertlabel">{_e(alert[1])} '
                   f"{_e(_ns_clock(alert[0]))}</text>")
    out.append("</svg>")
    return "".join(out)


def _evicted_segments(gap_record: Mapping[str, Any]) -> int:
    """Segments an agent's gap record says it evicted (its count, else its seq range)."""
    if gap_record.get("segments") is not None:
        return int(gap_record["segments"])
    if gap_record.get("first_seq") is not None and gap_record.get("last_seq") is not None:
        return 1 + int(gap_record["last_seq"]) - int(gap_record["first_seq"])
    return 1


def coverage_section(data: ReportData) -> str:
    start, end = window_ns(data.manifest)
    coverage = merged_coverage(data.manifest, data.parts)
    query, result = data.result("coverage")
    dissected = {row["node"]: row for row in _records(result)}
    span = max(1, end - start)
    pending = partial_until_ns(data)
    unverified = unverified_by_node(data)
    for node in unverified:
        # A node whose only segments are unverified still has a row: all of its window is a gap with a reason.
        coverage.setdefault(node, node_coverage([], start, end).get(node) or {
            "segments": 0, "covered_ns": [], "gaps_ns": [[start, end]], "seq_gaps": [], "packets": 0,
            "kernel_drops": 0, "agent_drops": 0, "gap_records": []})
    reasons = {node: [gap_reason(g, info, unverified.get(node, []), end, pending) for g in info["gaps_ns"]]
               for node, info in coverage.items()}
    rows = []
    for node, info in sorted(coverage.items()):
        covered = sum(b - a for a, b in info["covered_ns"])
        intervals = ", ".join(f"{_ns_clock(a)}–{_ns_clock(b)}" for a, b in info["covered_ns"]) or "none"
        gaps = "; ".join(f"{_ns_clock(a)}–{_ns_clock(b)} ({_duration(b - a)}): {why}"
                         for (a, b), (_, why) in zip(info["gaps_ns"], reasons[node], strict=True)) or "none"
        seq_gaps = ", ".join(f"{a}" if a == b else f"{a}–{b}" for a, b in info["seq_gaps"]) or "none"
        evicted = sum(_evicted_segments(g) for g in info["gap_records"])
        counts = dissected.get(node, {})
        cells = [node, fmt_int(info["segments"]), f"{covered * 100 / span:.1f} %", intervals, gaps, seq_gaps,
                 fmt_int(info["kernel_drops"]), fmt_int(info["agent_drops"]), fmt_int(evicted),
                 fmt_int(len(unverified.get(node, []))),
                 fmt_int(info["packets"]), fmt_int(counts.get("connections", 0)), fmt_int(counts.get("http", 0)),
                 fmt_int(counts.get("dns", 0)), fmt_int(counts.get("tls", 0))]
        rows.append("<tr>" + "".join(f'<td class="{"txt" if i in (0, 3, 4, 5) else "num"}">{_e(c)}</td>'
                                     for i, c in enumerate(cells)) + "</tr>")
    heads = ["node", "segments", "window covered", "covered intervals", "gaps", "seq gaps", "kernel drops",
             "agent drops", "evicted segments", "unverified segments", "packets", "connections", "http", "dns",
             "tls"]
    table = ("<table><thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in heads) + "</tr></thead><tbody>"
             + "".join(rows) + "</tbody></table>") if rows else '<p class="empty">The manifest lists no segments.</p>'
    unknown = sorted(set(dissected) - set(coverage))
    note = (f'<p class="warn">Rows from nodes the manifest does not list: {_e(", ".join(unknown))}</p>'
            if unknown else "")
    listed = [item for items in unverified.values() for item in items]
    if listed:
        note += ('<p class="warn">Locked but unverified, so left out of the tables (each has a dissect_errors '
                 "row):</p><ul>" + "".join(f"<li>{_e(i.node)}: {_e(i.key)} ({_e(i.version_id)}): {_e(i.reason)}</li>"
                                           for i in listed) + "</ul>")
    if pending is not None:
        note = (f'<p class="warn">Partial: the hold is open until {_e(_ns_iso(pending))}; segments uploaded until '
                f"then are still being locked and dissected (grey).</p>") + note
    return (f'<p>Window {_e(_ns_iso(start))} to {_e(_ns_iso(end))} ({_e(_duration(end - start))}). '
            f"Green: covered by frozen segments; red: gaps (hover for the reason); grey: the hold's still-open part."
            f" From the locked manifest"
            f"{_e(f' and {len(data.parts)} late part(s)') if data.parts else ''}; the row counts from SQL.</p>"
            f"{coverage_svg(coverage, start, end, reasons, alert_ns(data.manifest))}{table}{note}"
            f"{sql_block(query, result)}")


# ------------------------------------------------------------------ timeline

SERIES = (("http_5xx", "HTTP 5xx", "#d62728"), ("tcp_resets", "TCP resets", "#ff7f0e"),
          ("dns_failures", "DNS failures", "#9467bd"), ("tls_failures", "TLS failures", "#8c564b"))


def _nice_ceiling(value: int) -> int:
    if value <= 5:
        return max(1, value)
    magnitude = 10 ** int(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * magnitude:
            return int(step * magnitude)
    return value


def count_ticks(top: int, most: int = 4) -> list[int]:
    """Pure: integer axis ticks from 0 to at least `top` (counts have no fractions), at most `most` steps."""
    step = max(1, math.ceil(max(1, top) / most))
    return list(range(0, step * math.ceil(max(1, top) / step) + 1, step))


def timeline_svg(rows: Sequence[Mapping[str, Any]], bucket_ns: int, first_ns: int, last_ns: int,
                 alert: tuple[int, str] | None = None) -> str:
    width, height, left, right, top, bottom = 900, 280, 50, 50, 30, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    first = first_ns - first_ns % bucket_ns
    count = max(1, (last_ns - first) // bucket_ns + 1)
    bar_w = plot_w / count
    totals = [sum(int(r[name] or 0) for name, _, _ in SERIES) for r in rows]
    ticks_at = count_ticks(_nice_ceiling(max(totals, default=0)))
    top_value = ticks_at[-1]
    out = [f'<svg class="chart" role="img" aria-label="timeline of errors" xmlns="http://www.w3.org/2000/svg" '
           f'width="{width}" height="{height}" viewBox="0 0 {width} {height}">']
    for i, (_, label, color) in enumerate(SERIES):
        out.append(f'<rect x="{left + i * 150}" y="6" width="12" height="12" fill="{color}"/>'
                   f'<text x="{left + i * 150 + 16}" y="16" class="label">{_e(label)}</text>')
    for value in ticks_at:
        y = top + plot_h - plot_h * value / top_value
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
                   f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" class="axis">{value:d}</text>')
    for row in rows:
        index = (int(row["bucket_ns"]) - first) // bucket_ns
        x = left + index * bar_w
        y = float(top + plot_h)
        for name, label, color in SERIES:
            value = int(row[name] or 0)
            if not value:
                continue
            h = plot_h * value / top_value
            y -= h
            tip = f"{_ns_clock(int(row['bucket_ns']))}: {value} {label}"
            out.append(f'<rect x="{x + bar_w * 0.1:.1f}" y="{y:.1f}" width="{max(1.0, bar_w * 0.8):.1f}" '
                       f'height="{h:.1f}" fill="{color}" class="bar"><title>{_e(tip)}</title></rect>')
    ticks = min(count, 8)
    for t in range(ticks + 1):
        index = round(t * count / ticks)
        x = left + index * bar_w
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top + plot_h}" y2="{top + plot_h + 4}" class="grid"/>'
                   f'<text x="{x:.1f}" y="{top + plot_h + 18}" text-anchor="middle" class="axis">'
                   f"{_e(_ns_clock(first + index * bucket_ns))}</text>")
    out.append(f'<line x1="{left}" x2="{width - right}" y1="{top + plot_h}" y2="{top + plot_h}" class="axisline"/>')
    if alert is not None and first <= alert[0] <= first + count * bucket_ns:
        ax = left + (alert[0] - first) / bucket_ns * bar_w
        out.append(f'<line x1="{ax:.1f}" x2="{ax:.1f}" y1="{top - 6}" y2="{top + plot_h}" class="alert"/>'
                   f'<text x="{ax + 3:.1f}" y="{top + 4}" class="alertlabel">{_e(alert[1])} '
                   f"{_e(_ns_clock(alert[0]))}</text>")
    out.append("</svg>")
    return "".join(out)


def timeline_section(data: ReportData) -> str:
    query, result = data.result("timeline")
    _, coverage = data.result("coverage")
    rows = _records(result)
    firsts = [r[5] for r in coverage.rows if r[5] is not None]
    lasts = [r[6] for r in coverage.rows if r[6] is not None]
    if rows:
        first = min([*firsts, *(int(r["bucket_ns"]) for r in rows)])
        last = max([*lasts, *(int(r["bucket_ns"]) for r in rows)])
    else:
        first, last = (min(firsts), max(lasts)) if firsts else (0, 0)
    totals = {label: sum(int(r[name] or 0) for r in rows) for name, label, _ in SERIES}
    summary = ", ".join(f"{fmt_int(v)} {label}" for label, v in totals.items())
    figure = (timeline_svg(rows, data.bucket_ns, int(first), int(last), alert_ns(data.manifest))
              if firsts or rows else "")
    first_error = (f" First error bucket: {_e(_ns_iso(int(rows[0]['bucket_ns'])))}." if rows else "")
    return (f"<p>Buckets of {_e(_duration(data.bucket_ns))}: {_e(summary)}.{first_error}</p>{figure}"
            f"{sql_block(query, result)}")


# ------------------------------------------------------------------ node health and endpoint readiness

def _bucket_time(value: Any) -> str:
    return "" if value is None else _ns_iso(int(value))


def node_health_section(data: ReportData) -> str:
    query, result = data.result("node_health")
    rows = _records(result)
    nodes = sorted({str(r["node"]) for r in rows})
    troubled = [r for r in rows if any(int(r[c] or 0) > 0 for c in NODE_PROBLEM_COLUMNS)
                or (r["conntrack_limit"] and 10 * int(r["conntrack_entries"] or 0) >= 9 * int(r["conntrack_limit"]))]
    totals = {c: sum(int(r[c] or 0) for r in rows) for c in (*NODE_PROBLEM_COLUMNS, "retransmitted_segments")}
    summary = (f"{len(nodes)} node(s) recorded their network counters every segment period: "
               f"{fmt_int(totals['listen_drops'])} listen-queue drops, {fmt_int(totals['syn_cookies'])} SYN cookies, "
               f"{fmt_int(totals['conntrack_drops'])} conntrack drops or failed inserts, "
               f"{fmt_int(totals['interface_drops_errors'])} interface drops or errors, "
               f"{fmt_int(totals['retransmitted_segments'])} retransmitted TCP segments.") if nodes else (
        "No node state was recorded for this window (agents older than node-state recording, or "
        "FREEZEFRAME_NODE_STATE off).")
    columns: list[Column] = [("node", "node", fmt_text), ("bucket_ns", "bucket", _bucket_time),
                             ("listen_drops", "listen-queue drops", fmt_int), ("syn_cookies", "SYN cookies", fmt_int),
                             ("conntrack_drops", "conntrack drops", fmt_int),
                             ("conntrack_entries", "conntrack entries", fmt_int),
                             ("conntrack_limit", "conntrack max", fmt_int),
                             ("interface_drops_errors", "interface drops/errors", fmt_int),
                             ("retransmitted_segments", "TCP retransmissions", fmt_int),
                             ("resets_sent", "RSTs sent", fmt_int)]
    shown = QueryResult(result.sql, result.duckdb_sql, result.columns,
                        tuple(tuple(r[c] for c in result.columns) for r in troubled[:TABLE_ROWS]))
    return (f"<p>{_e(summary)} Buckets of {_e(_duration(data.bucket_ns))}, as in the error timeline; the buckets "
            f"where a node dropped or refused something are listed.</p>"
            f"{html_table(shown, columns, 'No node reported drops, overflows or a nearly full conntrack table.')}"
            f"{sql_block(query, result)}")


def endpoint_readiness_section(data: ReportData) -> str:
    query, result = data.result("endpoint_readiness")
    rows = _records(result)
    empty = sorted({f"{r['namespace']}/{r['service']}" for r in rows if int(r["ready"] or 0) == 0})
    terminating = sorted({f"{r['namespace']}/{r['service']}" for r in rows if int(r["terminating"] or 0) > 0})
    notes = []
    if empty:
        notes.append(f"with no ready endpoint at some point: {', '.join(empty)}")
    if terminating:
        notes.append(f"with terminating endpoints: {', '.join(terminating)}")
    lead = (f"Services {'; '.join(notes)}." if notes else "Every Service kept a ready endpoint.") if rows else ""
    columns: list[Column] = [("namespace", "namespace", fmt_text), ("service", "Service", fmt_text),
                             ("ts_ns", "observed", _bucket_time), ("endpoints", "endpoints", fmt_int),
                             ("ready", "ready", fmt_int), ("terminating", "terminating", fmt_int)]
    shown = QueryResult(result.sql, result.duckdb_sql, result.columns, result.rows[:TABLE_ROWS * 2])
    return (f"<p>Each observation of a Service's EndpointSlices (the watcher's records, frozen with the incident), "
            f"beside the error timeline. {_e(lead)}</p>"
            f"{html_table(shown, columns, 'No EndpointSlices were recorded for this window.')}"
            f"{sql_block(query, result)}")


def service_traffic_section(data: ReportData) -> str:
    query, result = data.result("service_traffic")
    columns: list[Column] = [("namespace", "namespace", fmt_text), ("service", "Service", fmt_text),
                             ("cluster_ip", "ClusterIP", fmt_text), ("port", "port", fmt_port),
                             ("connections", "connections", fmt_int),
                             ("failed_connections", "failed", fmt_int), ("backend_pods", "backend pods seen", fmt_int)]
    return ("<p>Connections to a ClusterIP, resolved to the Service that held the address at the time (and to the "
            "backend pod where the capture shows kube-proxy's translation; table service_flows).</p>"
            f"{html_table(result, columns, 'No connection went to a known ClusterIP.')}{sql_block(query, result)}")


# ------------------------------------------------------------------ service map

def _edge_color(rate: float) -> str:
    return "#2ca02c" if rate == 0 else "#ff7f0e" if rate < 0.1 else "#d62728"


Point = tuple[float, float]


def _bezier_point(curve: tuple[Point, Point, Point, Point], t: float) -> Point:
    (x0, y0), (x1, y1), (x2, y2), (x3, y3) = curve
    a, b, c, d = (1 - t) ** 3, 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t ** 2, t ** 3
    return a * x0 + b * x1 + c * x2 + d * x3, a * y0 + b * y1 + c * y2 + d * y3


def service_map_svg(edges: Sequence[Mapping[str, Any]]) -> str:
    """Clients on the left, services that also call others in the middle, pure servers on the right."""
    sources = {str(e["src"]) for e in edges}
    targets = {str(e["dst"]) for e in edges}
    volume: dict[str, int] = {}
    for e in edges:
        for name in (str(e["src"]), str(e["dst"])):
            volume[name] = volume.get(name, 0) + int(e["connections"] or 0) + int(e["requests"] or 0)
    columns: list[list[str]] = [sorted(sources - targets), sorted(sources & targets), sorted(targets - sources)]
    columns = [sorted(c, key=lambda n: (-volume[n], n)) for c in columns if c]
    box_w, box_h, gap_y, col_gap, pad = 230, 26, 14, 170, 20
    width = pad * 2 + len(columns) * box_w + (len(columns) - 1) * col_gap
    height = pad * 2 + max(len(c) for c in columns) * (box_h + gap_y)
    where: dict[str, tuple[float, float, int]] = {}
    for ci, column in enumerate(columns):
        x = pad + ci * (box_w + col_gap)
        for ri, name in enumerate(column):
            where[name] = (x, pad + ri * (box_h + gap_y), ci)
    out = [f'<svg class="chart" role="img" aria-label="service map" xmlns="http://www.w3.org/2000/svg" '
           f'width="{width}" height="{height}" viewBox="0 0 {width} {height}"><defs>']
    for name, color in (("ok", "#2ca02c"), ("warn", "#ff7f0e"), ("bad", "#d62728")):
        out.append(f'<marker id="ff-arrow-{name}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
                   f'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="{color}"/>'
                   f"</marker>")
    out.append("</defs>")
    labels = []  # drawn after the boxes, so an edge passing behind a box keeps its label visible
    for e in edges:
        (sx, sy, sc), (dx, dy, dc) = where[str(e["src"])], where[str(e["dst"])]
        total = int(e["connections"] or 0) + int(e["requests"] or 0)
        bad = int(e["failed_connections"] or 0) + int(e["http_5xx"] or 0)
        rate = bad / total if total else 0.0
        color = _edge_color(rate)
        marker = "ok" if rate == 0 else "warn" if rate < 0.1 else "bad"
        x1, y1 = sx + box_w, sy + box_h / 2
        if dc > sc:
            x2, y2 = dx, dy + box_h / 2
            bend = (x2 - x1) / 2
            curve = ((x1, y1), (x1 + bend, y1), (x2 - bend, y2), (x2, y2))
        else:  # same column or backwards: loop out to the right and come back into the target's right side
            x2, y2 = dx + box_w, dy + box_h / 2
            curve = ((x1, y1), (x1 + 80, y1), (x2 + 80, y2), (x2, y2))
        (ax, ay), (bx, by), (cx, cy), (ex, ey) = curve
        path = f"M{ax:.1f},{ay:.1f} C{bx:.1f},{by:.1f} {cx:.1f},{cy:.1f} {ex:.1f},{ey:.1f}"
        stroke = 1.2 + min(4.0, math.log10(1 + total))
        tip = (f"{e['src']} → {e['dst']}: {fmt_int(e['connections'])} connections "
               f"({fmt_int(e['failed_connections'])} failed), {fmt_int(e['requests'])} HTTP requests "
               f"({fmt_int(e['http_5xx'])} 5xx), error rate {rate * 100:.1f} %")
        out.append(f'<path d="{path}" fill="none" stroke="{color}" stroke-width="{stroke:.1f}" stroke-opacity="0.8" '
                   f'marker-end="url(#ff-arrow-{marker})" class="edge"><title>{_e(tip)}</title></path>')
        if bad:  # label at t = 0.75 along the curve, near the target, where the edges of one source part
            mx, my = _bezier_point(curve, 0.75)
            my -= 4
            labels.append(f'<text x="{mx:.1f}" y="{my:.1f}" text-anchor="middle" class="rate" fill="{color}">'
                          f"{rate * 100:.0f} %</text>")
    for name, (bx, by, _) in where.items():
        out.append(f'<g class="node"><rect x="{bx:.1f}" y="{by:.1f}" width="{box_w}" height="{box_h}" rx="5"/>'
                   f'<text x="{bx + 8:.1f}" y="{by + 17:.1f}" class="label">{_e(_clip(name, 32))}</text>'
                   f"<title>{_e(name)}</title></g>")
    out.extend(labels)
    out.append("</svg>")
    return "".join(out)


def service_map_section(data: ReportData) -> str:
    query, result = data.result("service_map")
    edges = _records(result)
    figure = service_map_svg(edges) if edges else ""
    columns: list[Column] = [("src", "from", fmt_text), ("dst", "to", fmt_text),
                             ("connections", "connections", fmt_int),
                             ("failed_connections", "failed (reset, refused, unanswered)", fmt_int),
                             ("requests", "HTTP requests", fmt_int), ("http_5xx", "HTTP 5xx", fmt_int)]
    limited = (f" The {SERVICE_MAP_EDGES} busiest pairs are shown." if len(edges) >= SERVICE_MAP_EDGES else "")
    return (f"<p>Names are namespace/workload where the address was resolved to a pod, else the IP. "
            f"Edge colour: green no errors, orange under 10 %, red 10 % or more of connections failed or requests "
            f"answered 5xx.{_e(limited)}</p>{figure}"
            f"{html_table(result, columns, 'No traffic was dissected for this incident.')}{sql_block(query, result)}")


# ------------------------------------------------------------------ TCP, DNS, TLS, HTTP

def tcp_section(data: ReportData) -> str:
    query, result = data.result("tcp_health")
    row = _records(result)[0] if result.rows else {}
    tiles = [("TCP connections", fmt_int(row.get("tcp_connections"))), ("refused", fmt_int(row.get("refused"))),
             ("reset (RST seen)", fmt_int(row.get("reset"))), ("unanswered SYN", fmt_int(row.get("unanswered"))),
             ("retransmissions", fmt_int(row.get("retransmissions"))),
             ("max retransmission rate", fmt_rate(row.get("max_retransmission_rate"))),
             ("duplicate ACKs", fmt_int(row.get("dup_acks"))), ("lost segments", fmt_int(row.get("lost_segments"))),
             ("zero-window events", fmt_int(row.get("zero_window_events"))),
             ("handshake p50", fmt_us(row.get("handshake_p50_us"))),
             ("handshake p95", fmt_us(row.get("handshake_p95_us"))), ("max RTT", fmt_us(row.get("rtt_max_us")))]
    grid = "".join(f'<div class="tile"><div class="value">{_e(v)}</div><div class="name">{_e(k)}</div></div>'
                   for k, v in tiles)
    note = ('<p class="note">n/a: the TCP analysis columns are empty for this incident.</p>'
            if row.get("tcp_connections") and row.get("retransmissions") is None else "")
    hot_query, hot = data.result("tcp_hotspots")
    columns: list[Column] = [("src", "from", fmt_text), ("dst", "to", fmt_text), ("dst_port", "port", fmt_port),
                             ("connections", "connections", fmt_int), ("resets", "resets", fmt_int),
                             ("retransmissions", "retransmissions", fmt_int),
                             ("max_retransmission_rate", "max retr. rate", fmt_rate),
                             ("zero_window_events", "zero windows", fmt_int), ("rtt_max_us", "max RTT", fmt_us)]
    return (f'<div class="tiles">{grid}</div>{note}{sql_block(query, result)}<h3>Pairs with resets, '
            f"retransmissions or zero windows</h3>{html_table(hot, columns, 'No TCP trouble found.')}"
            f"{sql_block(hot_query, hot)}")


def dns_section(data: ReportData) -> str:
    query, result = data.result("dns_failures")
    columns: list[Column] = [("client", "client", fmt_text), ("qname", "name", fmt_text), ("qtype", "type", fmt_text),
                             ("rcode", "rcode", fmt_text), ("queries", "queries", fmt_int),
                             ("first_seen", "first seen", fmt_text), ("last_seen", "last seen", fmt_text)]
    return (f"<p>Queries answered with a non-zero RCODE, or not answered at all.</p>"
            f"{html_table(result, columns, 'No DNS failures.')}{sql_block(query, result)}")


def tls_section(data: ReportData) -> str:
    query, result = data.result("tls_failures")
    columns: list[Column] = [("sni", "SNI", fmt_text), ("alert", "alert", fmt_text),
                             ("alert_from", "alert from", fmt_text), ("client", "client", fmt_text),
                             ("server", "server", fmt_text), ("handshakes", "handshakes", fmt_int),
                             ("first_seen", "first seen", fmt_text)]
    return (f"<p>Handshakes without a ServerHello or ended by a fatal alert.</p>"
            f"{html_table(result, columns, 'No TLS handshake failures.')}{sql_block(query, result)}")


def slowest_section(data: ReportData) -> str:
    query, result = data.result("slowest_endpoints")
    columns: list[Column] = [("service", "service", fmt_text), ("host", "host", fmt_text),
                             ("method", "method", fmt_text), ("path", "path", fmt_text),
                             ("requests", "requests", fmt_int), ("http_5xx", "5xx", fmt_int),
                             ("no_response", "no response", fmt_int), ("p50_us", "p50", fmt_us),
                             ("p95_us", "p95", fmt_us), ("max_us", "max", fmt_us)]
    return (f"<p>HTTP endpoints by their slowest response (latency: first request byte to first response byte; "
            f"percentiles are exact, nearest rank).</p>{html_table(result, columns, 'No HTTP requests.')}"
            f"{sql_block(query, result)}")


def sql_section(data: ReportData) -> str:
    blocks = "".join(f"<h3>{_e(q.title)} <small>({len(r.rows)} row{'s' if len(r.rows) != 1 else ''})</small></h3>"
                     f"<pre><code>{_e(q.sql)}</code></pre>" for q, r in data.queries)
    return ("<p>Athena SQL (database <code>freezeframe</code>); this report ran it locally through DuckDB. Rerun any "
            "of it in Athena or with <code>freezeframe query</code>.</p>" + blocks)


# ------------------------------------------------------------------ page

SECTIONS: tuple[tuple[str, str, Callable[[ReportData], str]], ...] = (
    ("coverage", "Coverage per node", coverage_section),
    ("timeline", "Timeline of errors", timeline_section),
    ("node-health", "Node health", node_health_section),
    ("endpoints", "Endpoint readiness", endpoint_readiness_section),
    ("service-map", "Service map", service_map_section),
    ("services", "Services", service_traffic_section),
    ("tcp", "TCP health", tcp_section),
    ("dns", "DNS failures", dns_section),
    ("tls", "TLS handshake failures", tls_section),
    ("slowest", "Slowest endpoints", slowest_section),
    ("sql", "SQL behind each section", sql_section),
)

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2330;margin:0;background:#f5f6f8}
header{background:#1d2330;color:#fff;padding:18px 28px}header h1{margin:0 0 6px;font-size:22px}
header dl{display:grid;grid-template-columns:max-content 1fr max-content 1fr;gap:2px 14px;margin:0;font-size:13px}
header dt{color:#9aa4b8}header dd{margin:0;overflow-wrap:anywhere}
nav{padding:8px 28px;background:#e8ebf0;font-size:13px}nav a{margin-right:14px;color:#24508f}
main{padding:8px 28px 40px}section{background:#fff;border:1px solid #dde1e8;border-radius:6px;margin:16px 0;
padding:6px 18px 14px}h2{font-size:18px;margin:10px 0}h3{font-size:15px;margin:14px 0 6px}
table{border-collapse:collapse;margin:8px 0;font-size:13px;max-width:100%}
th,td{border-bottom:1px solid #e4e7ec;padding:3px 10px;text-align:left;vertical-align:top}
th{background:#f0f2f5;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.txt{overflow-wrap:anywhere}
pre{background:#f6f8fa;border:1px solid #e4e7ec;padding:8px;overflow-x:auto;font-size:12px}
details.sql summary{cursor:pointer;color:#24508f;font-size:13px;margin-top:6px}
.tiles{display:flex;flex-wrap:wrap;gap:10px;margin:8px 0}.tile{border:1px solid #dde1e8;border-radius:6px;
padding:8px 12px;min-width:120px}.tile .value{font-size:20px;font-weight:600}.tile .name{color:#5a6478;font-size:12px}
.empty{color:#5a6478;font-style:italic}.warn{color:#b35c00}.note{color:#5a6478;font-size:12px}
svg.chart{display:block;max-width:100%;height:auto;margin:8px 0}svg .axis{font-size:11px;fill:#5a6478}
svg .label{font-size:12px;fill:#1d2330}svg .grid{stroke:#e4e7ec}svg .axisline{stroke:#8a93a6}
svg .covered{fill:#2ca02c}svg .gap{fill:#d62728;fill-opacity:.75}svg .pending{fill:#9e9e9e;fill-opacity:.5}
svg .alert{stroke:#000;stroke-width:2;stroke-dasharray:4 3}svg .alertlabel{font-size:11px;fill:#000}
svg .rate{font-size:11px;font-weight:600;paint-order:stroke;stroke:#fff;stroke-width:3px}
svg .node rect{fill:#eef3fb;stroke:#6b86b3}footer{color:#5a6478;font-size:12px;padding:0 28px 20px}
"""


def render(data: ReportData, generated_at: datetime) -> str:
    manifest = data.manifest
    request = manifest.get("request", {})
    incident_id = str(manifest.get("incident_id", request.get("incident_id", "")))
    lock = request.get("lock") or {}
    scope = request.get("scope") or {}
    segments = len(manifest.get("segments", [])) + sum(len(p.get("segments", [])) for p in data.parts)
    facts = [("incident", incident_id), ("source", request.get("source", "")),
             ("severity", request.get("severity", "")), ("cluster", scope.get("cluster", "")),
             ("window start", request.get("window_start", "")), ("window end", request.get("window_end", "")),
             ("lock", f"{lock.get('mode', '')} until {lock.get('retain_until', '')}"
                      f"{', legal hold' if lock.get('legal_hold') else ''}"),
             ("segments", f"{segments} ({len(data.parts)} late)"),
             ("tables", f"partial until {_ns_iso(p)} (the hold is open)" if (p := partial_until_ns(data)) is not None
              else "complete"),
             ("root hash", manifest.get("root_hash", "")),
             ("generated", f"{generated_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC")]
    header = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in facts)
    nav = "".join(f'<a href="#{anchor}">{_e(title)}</a>' for anchor, title, _ in SECTIONS)
    sections = "".join(f'<section id="{anchor}"><h2>{_e(title)}</h2>{build(data)}</section>'
                       for anchor, title, build in SECTIONS)
    title = f"freezeframe incident {incident_id}: {request.get('title', '')}"
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
            f"img-src data:\"><title>{_e(title)}</title><style>{CSS}</style></head><body>"
            f"<header><h1>{_e(title)}</h1><dl>{header}</dl></header><nav>{nav}</nav><main>{sections}</main>"
            f"<footer>freezeframe {_e(freezeframe.__version__)}. Values come from captured traffic and are shown "
            f"escaped.</footer></body></html>\n")

