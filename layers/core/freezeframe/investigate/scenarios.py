"""Saved incident scenarios: the questions an on-call engineer asks first, as Athena SQL over the evidence tables.

Each scenario is plain Athena SQL over the unqualified table names (the Athena named query carries the Glue database
and workgroup; the local engine has unqualified views). Run over every incident, or restricted to one with
`sql(incident_id=...)`, which replaces each table by its partition of that incident (`query.restrict_to_incident`).

The same list becomes the `AWS::Athena::NamedQuery` resources of template.yaml (`template_yaml`, printed by
``python -m freezeframe.investigate.scenarios --yaml``; tests/unit/deploy/test_template.py re-generates the block and
compares it), is
listed by `freezeframe scenarios` and run by `freezeframe query --scenario NAME [--incident ID]`.

Definitions lean on the connection insights of `schemas.TCP_INSIGHTS`, which follow Wireshark's TCP analysis and
Zeek's conn_state (REJ: SYN answered by RST; RSTO/RSTOS0: the initiator reset; RSTR/RSTRH: the responder reset).
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from freezeframe.contracts.errors import FreezeframeError

WORKGROUP_LOGICAL_ID = "AthenaWorkGroup"
DATABASE_LOGICAL_ID = "GlueDatabase"


class UnknownScenarioError(FreezeframeError):
    """No scenario has that name."""


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    title: str
    description: str
    query: str

    def sql(self, incident_id: str | None = None) -> str:
        """The scenario's SQL, over all incidents or restricted to one (escaped as a literal, never spliced)."""
        if incident_id is None:
            return self.query
        from freezeframe.investigate.query import (
            restrict_to_incident,  # the query engine is heavy; listing does not need it
        )

        return restrict_to_incident(self.query, incident_id)


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "first-failing-service",
        "First failing service",
        "Workloads that answered HTTP 5xx, ordered by their first 5xx, with the span of their failures, the 5xx "
        "count and the error rate: the service that failed first is usually the cause, later ones its victims.",
        """\
SELECT incident_id,
       dst_namespace,
       coalesce(dst_workload, dst_pod, dst_ip) AS workload,
       min(CASE WHEN status >= 500 THEN ts END) AS first_5xx,
       max(CASE WHEN status >= 500 THEN ts END) AS last_5xx,
       count_if(status >= 500) AS errors_5xx,
       count(*) AS requests,
       round(CAST(count_if(status >= 500) AS DOUBLE) / count(*), 4) AS error_rate
FROM http
GROUP BY incident_id, dst_namespace, coalesce(dst_workload, dst_pod, dst_ip)
HAVING count_if(status >= 500) > 0
ORDER BY first_5xx, errors_5xx DESC
""",
    ),
    Scenario(
        "gateway-timeouts",
        "Gateway timeouts",
        "Every HTTP 504 with the gateway's own latency and the upstream requests the gateway sent while the client "
        "waited (same incident and node, from the gateway's address, inside the client request's time span); an "
        "upstream_status of NULL means the upstream never answered.",
        """\
SELECT g.incident_id,
       g.ts,
       coalesce(g.src_workload, g.src_ip) AS client,
       coalesce(g.dst_workload, g.dst_ip) AS gateway,
       g.method,
       g.path,
       g.latency_us / 1e3 AS gateway_latency_ms,
       coalesce(u.dst_workload, u.dst_ip) AS upstream,
       u.path AS upstream_path,
       u.status AS upstream_status,
       u.latency_us / 1e3 AS upstream_latency_ms
FROM http AS g
LEFT JOIN http AS u
  ON u.incident_id = g.incident_id
 AND u.node = g.node
 AND u.src_ip = g.dst_ip
 AND u.ts_ns >= g.ts_ns
 AND u.ts_ns <= coalesce(g.response_ts_ns, g.ts_ns + g.latency_us * 1000)
WHERE g.status = 504
ORDER BY g.ts, upstream
""",
    ),
    Scenario(
        "connection-refused",
        "Connection refused",
        "TCP connection attempts answered by RST (Zeek conn_state REJ), by destination: a port nobody listens on, "
        "a pod that is not ready, or a policy that rejects.",
        """\
SELECT incident_id,
       dst_namespace,
       coalesce(dst_workload, dst_pod) AS workload,
       dst_ip,
       dst_port,
       count(*) AS refused,
       count(DISTINCT src_ip) AS clients,
       min(ts) AS first_refused,
       max(ts) AS last_refused
FROM connections
WHERE proto = 'tcp' AND conn_state = 'REJ'
GROUP BY incident_id, dst_namespace, coalesce(dst_workload, dst_pod), dst_ip, dst_port
ORDER BY refused DESC, first_refused
""",
    ),
    Scenario(
        "resets",
        "Resets by side and timing",
        "TCP connections ended by RST, by which side sent it (Zeek conn_state) and when: during the handshake, "
        "before any payload, or after data; with how long the connection had lived.",
        """\
SELECT incident_id,
       CASE WHEN conn_state IN ('RSTO', 'RSTOS0') THEN 'client' ELSE 'server' END AS reset_by,
       CASE WHEN conn_state IN ('REJ', 'RSTOS0', 'RSTRH') THEN 'handshake'
            WHEN coalesce(bytes_total, 0) = 0 THEN 'before data'
            ELSE 'after data' END AS phase,
       coalesce(src_workload, src_ip) AS client,
       coalesce(dst_workload, dst_ip) AS server,
       dst_port,
       count(*) AS resets,
       round(avg(duration_us) / 1e3, 3) AS avg_lifetime_ms,
       max(duration_us) / 1e3 AS max_lifetime_ms,
       min(ts) AS first_reset
FROM connections
WHERE proto = 'tcp' AND conn_state IN ('REJ', 'RSTO', 'RSTOS0', 'RSTR', 'RSTRH')
GROUP BY 1, 2, 3, 4, 5, 6
ORDER BY resets DESC, first_reset
""",
    ),
    Scenario(
        "tls-handshake-failures",
        "TLS handshake failures",
        "TLS handshakes that never got established, by SNI, with the first alert and which side sent it.",
        """\
SELECT incident_id,
       coalesce(sni, '(no SNI)') AS sni,
       coalesce(dst_workload, dst_ip) AS server,
       alert,
       alert_from,
       count(*) AS failures,
       count(DISTINCT src_ip) AS clients,
       min(ts) AS first_failure,
       max(ts) AS last_failure
FROM tls
WHERE NOT established
GROUP BY incident_id, coalesce(sni, '(no SNI)'), coalesce(dst_workload, dst_ip), alert, alert_from
ORDER BY failures DESC, first_failure
""",
    ),
    Scenario(
        "dns-failures",
        "DNS NXDOMAIN and SERVFAIL",
        "DNS answers NXDOMAIN (the name does not exist: a typo, a wrong search domain) and SERVFAIL (the resolver "
        "or upstream failed), by client and name.",
        """\
SELECT incident_id,
       src_namespace,
       coalesce(src_workload, src_pod, src_ip) AS client,
       qname,
       qtype,
       rcode_name,
       count(*) AS answers,
       min(ts) AS first_seen,
       max(ts) AS last_seen
FROM dns
WHERE rcode_name IN ('NXDOMAIN', 'SERVFAIL')
GROUP BY incident_id, src_namespace, coalesce(src_workload, src_pod, src_ip), qname, qtype, rcode_name
ORDER BY answers DESC, first_seen
""",
    ),
    Scenario(
        "retransmission-hot-spots",
        "Retransmission hot spots",
        "Pod pairs with TCP retransmissions, most first, per direction (out: sent by the initiator), with the share "
        "of payload bytes that were retransmitted.",
        """\
SELECT incident_id,
       src_namespace,
       coalesce(src_pod, src_ip) AS src,
       dst_namespace,
       coalesce(dst_pod, dst_ip) AS dst,
       count(*) AS connections,
       sum(retransmissions) AS retransmissions,
       sum(retransmissions_out) AS retransmissions_out,
       sum(retransmissions_in) AS retransmissions_in,
       max(retransmission_rate) AS max_retransmission_rate,
       round(CAST(sum(bytes_total - goodput_bytes) AS DOUBLE) / nullif(sum(bytes_total), 0), 4)
           AS retransmitted_byte_share
FROM connections
WHERE proto = 'tcp' AND retransmissions > 0
GROUP BY incident_id, src_namespace, coalesce(src_pod, src_ip), dst_namespace, coalesce(dst_pod, dst_ip)
ORDER BY retransmissions DESC, connections DESC
""",
    ),
    Scenario(
        "zero-window-receivers",
        "Zero-window receivers",
        "Endpoints that advertised a zero TCP receive window (tcp.analysis.zero_window), so their peers had to stop "
        "sending: a slow consumer. The receiver is the side that sent the zero-window segments.",
        """\
SELECT incident_id,
       namespace,
       receiver,
       count(*) AS connections,
       sum(events) AS zero_window_events,
       count(DISTINCT peer) AS peers,
       min(ts) AS first_seen
FROM (
    SELECT incident_id, ts, src_namespace AS namespace, coalesce(src_pod, src_ip) AS receiver,
           coalesce(dst_pod, dst_ip) AS peer, zero_window_events_out AS events
    FROM connections
    WHERE proto = 'tcp' AND zero_window_events_out > 0
    UNION ALL
    SELECT incident_id, ts, dst_namespace AS namespace, coalesce(dst_pod, dst_ip) AS receiver,
           coalesce(src_pod, src_ip) AS peer, zero_window_events_in AS events
    FROM connections
    WHERE proto = 'tcp' AND zero_window_events_in > 0
) AS receivers
GROUP BY incident_id, namespace, receiver
ORDER BY zero_window_events DESC, first_seen
""",
    ),
    Scenario(
        "network-vs-application-latency",
        "Network vs application latency",
        "Per server workload: the TCP handshake time (about one network round trip) against the HTTP latency (request "
        "to first response byte) on the same connections; the difference is time spent in the application. "
        "slow_side says which of the two dominates.",
        """\
SELECT h.incident_id,
       h.dst_namespace,
       coalesce(h.dst_workload, h.dst_ip) AS server,
       count(*) AS requests,
       round(avg(c.handshake_us) / 1e3, 3) AS avg_handshake_ms,
       round(avg(h.latency_us) / 1e3, 3) AS avg_http_latency_ms,
       round(avg(h.latency_us - c.handshake_us) / 1e3, 3) AS avg_application_ms,
       max(h.latency_us) / 1e3 AS max_http_latency_ms,
       CASE WHEN avg(c.handshake_us) >= avg(h.latency_us - c.handshake_us) THEN 'network'
            ELSE 'application' END AS slow_side
FROM http AS h
JOIN connections AS c
  ON c.incident_id = h.incident_id AND c.conn_id = h.conn_id
WHERE h.latency_us IS NOT NULL AND c.handshake_us IS NOT NULL
GROUP BY h.incident_id, h.dst_namespace, coalesce(h.dst_workload, h.dst_ip)
ORDER BY avg_http_latency_ms DESC
""",
    ),
    Scenario(
        "large-request-stalls",
        "Large-request stalls (MTU)",
        "Connections whose retransmitted segments were full-size: (bytes_total - goodput_bytes) / retransmissions, "
        "the mean payload of a retransmitted segment, is at least 1200 bytes. Repeated full-size retransmissions while "
        "small packets get through are the mark of a path MTU black hole (large requests stall, small ones work). "
        "The requester must be the one retransmitting (at least two retransmissions_out) and must have sent large "
        "requests (payload_bytes_out of at least 1200 bytes per retransmission): ordinary loss on a large response "
        "to a small request is not a stalled request.",
        """\
SELECT incident_id,
       ts,
       coalesce(src_workload, src_ip) AS client,
       coalesce(dst_workload, dst_ip) AS server,
       dst_port,
       retransmissions,
       retransmissions_out,
       retransmissions_in,
       round(CAST(bytes_total - goodput_bytes AS DOUBLE) / retransmissions, 1) AS avg_retransmitted_segment_bytes,
       payload_bytes_out,
       duration_us / 1e3 AS duration_ms,
       "close"
FROM connections
WHERE proto = 'tcp'
  AND retransmissions_out >= 2
  AND payload_bytes_out >= 1200 * retransmissions_out
  AND bytes_total - goodput_bytes >= 1200 * retransmissions
ORDER BY ts
""",
    ),
    Scenario(
        "conntrack-table-full",
        "Conntrack table full",
        "Nodes whose connection-tracking table dropped or failed to insert entries (conntrack drop, early_drop, "
        "insert_failed grew during a period), or ran at 90 % or more of nf_conntrack_max: new connections through "
        "such a node are dropped before any pod sees them, so clients time out with nothing in the server's logs. "
        "From the node's own counters (node_stats), recorded every segment period.",
        """\
SELECT incident_id,
       node,
       max(CASE WHEN metric = 'count' THEN value END) AS peak_entries,
       max(CASE WHEN metric = 'max' THEN value END) AS table_limit,
       sum(CASE WHEN metric IN ('drop', 'early_drop') THEN delta END) AS dropped,
       sum(CASE WHEN metric = 'insert_failed' THEN delta END) AS insert_failed,
       min(CASE WHEN metric IN ('drop', 'early_drop', 'insert_failed') AND delta > 0 THEN ts END) AS first_drop
FROM node_stats
WHERE source = 'conntrack'
GROUP BY incident_id, node
HAVING sum(CASE WHEN metric IN ('drop', 'early_drop', 'insert_failed') THEN delta END) > 0
    OR 10 * max(CASE WHEN metric = 'count' THEN value END) >= 9 * max(CASE WHEN metric = 'max' THEN value END)
ORDER BY incident_id, node
""",
    ),
    Scenario(
        "listen-queue-overflow",
        "Listen-queue overflow",
        "Nodes where the kernel dropped connection attempts because a listener's accept queue was full "
        "(TcpExt.ListenOverflows, ListenDrops) or answered with SYN cookies (SyncookiesSent): the server accepts "
        "too slowly, so clients see SYN retransmissions, slow connects or timeouts. Each period of the node's "
        "counters (node_stats) that grew, with the first and last such period.",
        """\
SELECT incident_id,
       node,
       sum(CASE WHEN metric = 'TcpExt.ListenOverflows' THEN delta END) AS listen_overflows,
       sum(CASE WHEN metric = 'TcpExt.ListenDrops' THEN delta END) AS listen_drops,
       sum(CASE WHEN metric = 'TcpExt.SyncookiesSent' THEN delta END) AS syncookies_sent,
       count(DISTINCT CASE WHEN delta > 0 THEN ts_ns END) AS periods,
       min(CASE WHEN delta > 0 THEN ts END) AS first_period_end,
       max(CASE WHEN delta > 0 THEN ts END) AS last_period_end
FROM node_stats
WHERE source = 'snmp'
  AND metric IN ('TcpExt.ListenOverflows', 'TcpExt.ListenDrops', 'TcpExt.SyncookiesSent')
GROUP BY incident_id, node
HAVING sum(CASE WHEN metric IN ('TcpExt.ListenOverflows', 'TcpExt.ListenDrops') THEN delta END) > 0
ORDER BY incident_id, node
""",
    ),
    Scenario(
        "service-without-ready-endpoints",
        "Service with no ready endpoints",
        "Services whose EndpointSlices listed no ready endpoint while connections to the Service's ClusterIP failed "
        "(refused, unanswered or reset: conn_state REJ, S0, RSTR, RSTOS0, RSTRH, SH) or were answered with HTTP 5xx. "
        "Each observation of a slice holds until the slice's next observation; a Service whose endpoints are spread "
        "over several slices is judged slice by slice.",
        """\
WITH observations AS (
    SELECT incident_id, namespace, service, slice, ts_ns,
           min(ts) AS ts,
           count(address) AS endpoints,
           count(CASE WHEN ready THEN 1 END) AS ready_endpoints
    FROM endpoints
    WHERE service IS NOT NULL
    GROUP BY incident_id, namespace, service, slice, ts_ns
),
spans AS (
    SELECT incident_id, namespace, service, slice, ts_ns, ts, endpoints, ready_endpoints,
           lead(ts_ns) OVER (PARTITION BY incident_id, namespace, slice ORDER BY ts_ns) AS next_ns
    FROM observations
),
failures AS (
    SELECT f.incident_id, f.namespace, f.service, f.ts_ns, f.conn_id, c.conn_state, h.status
    FROM service_flows AS f
    JOIN connections AS c
      ON c.incident_id = f.incident_id AND c.node = f.node AND c.conn_id = f.conn_id
    LEFT JOIN http AS h
      ON h.incident_id = f.incident_id AND h.node = f.node AND h.conn_id = f.conn_id
    WHERE c.conn_state IN ('REJ', 'S0', 'RSTR', 'RSTOS0', 'RSTRH', 'SH') OR h.status >= 500
)
SELECT s.incident_id,
       s.namespace,
       s.service,
       s.ts AS no_ready_endpoints_since,
       s.endpoints AS listed_endpoints,
       count(DISTINCT x.conn_id) AS failed_connections,
       count(CASE WHEN x.status >= 500 THEN 1 END) AS http_5xx,
       min(x.ts_ns) AS first_failure_ns,
       max(x.ts_ns) AS last_failure_ns
FROM spans AS s
JOIN failures AS x
  ON x.incident_id = s.incident_id AND x.namespace = s.namespace AND x.service = s.service
 AND x.ts_ns >= s.ts_ns AND (s.next_ns IS NULL OR x.ts_ns < s.next_ns)
WHERE s.ready_endpoints = 0
GROUP BY s.incident_id, s.namespace, s.service, s.ts, s.endpoints
ORDER BY no_ready_endpoints_since
""",
    ),
    Scenario(
        "errors-while-endpoints-terminating",
        "5xx or 504 while endpoints were terminating",
        "HTTP 5xx answers (504s included) sent while an endpoint of the Service was terminating: to the "
        "terminating pod itself, or through the Service's ClusterIP while one of its endpoints was terminating. "
        "The classic rolling-update outage: a pod is still in the load balancer's rotation, or still finishing "
        "requests, after it began shutting down. An endpoint's state holds until its slice's next observation.",
        """\
WITH observations AS (
    SELECT DISTINCT incident_id, namespace, slice, ts_ns
    FROM endpoints
),
next_observation AS (
    SELECT incident_id, namespace, slice, ts_ns,
           lead(ts_ns) OVER (PARTITION BY incident_id, namespace, slice ORDER BY ts_ns) AS next_ns
    FROM observations
),
terminating AS (
    SELECT e.incident_id, e.namespace, e.service, e.address, e.pod, e.ts_ns, o.next_ns
    FROM endpoints AS e
    JOIN next_observation AS o
      ON o.incident_id = e.incident_id AND o.namespace = e.namespace AND o.slice = e.slice AND o.ts_ns = e.ts_ns
    WHERE e.terminating
),
errors AS (
    SELECT h.incident_id, h.ts, h.ts_ns, h.status, h.method, h.path, h.dst_ip,
           coalesce(h.src_workload, h.src_ip) AS client,
           f.namespace AS service_namespace, f.service
    FROM http AS h
    LEFT JOIN service_flows AS f
      ON f.incident_id = h.incident_id AND f.node = h.node AND f.conn_id = h.conn_id
    WHERE h.status >= 500
)
SELECT r.incident_id,
       r.ts,
       r.status,
       r.client,
       r.method,
       r.path,
       t.namespace,
       t.service,
       t.pod AS terminating_pod,
       t.address AS terminating_address,
       r.dst_ip = t.address AS sent_to_the_terminating_pod
FROM errors AS r
JOIN terminating AS t
  ON t.incident_id = r.incident_id
 AND r.ts_ns >= t.ts_ns AND (t.next_ns IS NULL OR r.ts_ns < t.next_ns)
 AND (r.dst_ip = t.address OR (r.service_namespace = t.namespace AND r.service = t.service))
ORDER BY r.ts, terminating_address
""",
    ),
)

BY_NAME: dict[str, Scenario] = {scenario.name: scenario for scenario in SCENARIOS}


def get(name: str) -> Scenario:
    try:
        return BY_NAME[name]
    except KeyError:
        raise UnknownScenarioError(f"no scenario {name!r}; `freezeframe scenarios` lists them: "
                                   f"{', '.join(BY_NAME)}") from None


def listing(verbose: bool = False) -> str:
    """One line per scenario (name and title); `verbose` adds the description and the SQL."""
    if verbose:
        return "\n".join(f"{s.name}: {s.title}\n{textwrap.indent(textwrap.fill(s.description, 100), '  ')}\n\n"
                         f"{textwrap.indent(s.query, '    ')}" for s in SCENARIOS)
    width = max(len(name) for name in BY_NAME)
    return "\n".join(f"{s.name.ljust(width)}  {s.title}" for s in SCENARIOS)


# ---------------------------------------------------------------- template.yaml


def logical_id(name: str) -> str:
    """first-failing-service -> ScenarioFirstFailingServiceQuery."""
    return "Scenario" + "".join(part[:1].upper() + part[1:] for part in name.split("-")) + "Query"


def _comment(text: str) -> str:
    return "".join(f"-- {line}\n" for line in textwrap.wrap(text, 100))


def template_resources(scenarios: Sequence[Scenario] = SCENARIOS) -> dict[str, dict[str, Any]]:
    """One `AWS::Athena::NamedQuery` per scenario, in the stack's workgroup and Glue database."""
    return {
        logical_id(s.name): {
            "Type": "AWS::Athena::NamedQuery",
            "Properties": {
                "Name": {"Fn::Sub": f"${{AWS::StackName}}-{s.name}"},
                "Description": f"{s.title} (freezeframe.investigate.scenarios); "
                               "filter on the incident_id partition to read one "
                               "incident.",
                "Database": {"Ref": DATABASE_LOGICAL_ID},
                "WorkGroup": {"Ref": WORKGROUP_LOGICAL_ID},
                "QueryString": _comment(f"{s.title}: {s.description}") + s.query,
            },
        }
        for s in scenarios
    }


def template_yaml(scenarios: Sequence[Scenario] = SCENARIOS) -> str:
    """The fragment between template.yaml's `# BEGIN freezeframe.investigate.scenarios` and `# END` markers."""
    import yaml  # only the generator needs PyYAML

    class _Dumper(yaml.SafeDumper):
        pass

    def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
        # SQL reads best as a literal block; a string with trailing spaces cannot be one, so it stays quoted.
        style = "|" if "\n" in value and not any(line.endswith(" ") for line in value.splitlines()) else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    _Dumper.add_representer(str, _str)
    body = yaml.dump(template_resources(scenarios), Dumper=_Dumper, sort_keys=False, width=120,
                     default_flow_style=False)
    return "".join(f"  {line}" if line.strip() else line for line in body.splitlines(keepends=True))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m freezeframe.investigate.scenarios",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--yaml", action="store_true", help="print the template.yaml named-query resources")
    args = parser.parse_args(argv)
    sys.stdout.write(template_yaml() if args.yaml else listing() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
