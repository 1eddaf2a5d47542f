"""Each saved scenario over hand-written fixture tables: the rows that must match, decoys that must not, and the values
computed by hand from the fixture (never from the code under test). The local engine (DuckDB via sqlglot) runs the
same Athena SQL that template.yaml stores as named queries."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from freezeframe.investigate import scenarios
from freezeframe.investigate.query import QueryResult, connect_local, run
from tests.fixtures.evidence_tables import at, write_tables


def _run(root: Path, name: str, incident: str | None = None) -> QueryResult:
    return run(None, scenarios.get(name).sql(incident), connect_local(root))


def _pick(result: QueryResult, *columns: str) -> list[tuple[Any, ...]]:
    index = [result.columns.index(c) for c in columns]
    return [tuple(row[i] for i in index) for row in result.rows]


def test_every_scenario_has_a_test_and_a_unique_name() -> None:
    names = [s.name for s in scenarios.SCENARIOS]
    assert len(names) == len(set(names)) >= 10
    tested = {name.removeprefix("test_").replace("_", "-") for name in globals() if name.startswith("test_")}
    assert set(names) <= tested, f"scenarios without a test: {set(names) - tested}"


def test_first_failing_service(tmp_path: Path) -> None:
    http = [
        # payments fails first (t=10), checkout later (t=20) because it calls payments.
        {"ts_ns": at(10), "dst_namespace": "prod", "dst_workload": "payments", "status": 503},
        {"ts_ns": at(12), "dst_namespace": "prod", "dst_workload": "payments", "status": 500},
        {"ts_ns": at(5), "dst_namespace": "prod", "dst_workload": "payments", "status": 200},
        {"ts_ns": at(20), "dst_namespace": "prod", "dst_workload": "checkout", "status": 502},
        {"ts_ns": at(1), "dst_namespace": "prod", "dst_workload": "checkout", "status": 200},
        {"ts_ns": at(2), "dst_namespace": "prod", "dst_workload": "checkout", "status": 201},
        {"ts_ns": at(3), "dst_namespace": "prod", "dst_workload": "checkout", "status": 204},
        # decoys: 4xx and unanswered requests are not 5xx
        {"ts_ns": at(0), "dst_namespace": "prod", "dst_workload": "search", "status": 404},
        {"ts_ns": at(0), "dst_namespace": "prod", "dst_workload": "search", "status": None},
    ]
    result = _run(write_tables(tmp_path, {"http": http}), "first-failing-service")
    assert _pick(result, "workload", "errors_5xx", "requests", "error_rate") == [
        ("payments", 2, 3, round(2 / 3, 4)),
        ("checkout", 1, 4, 0.25),
    ]
    assert [r["first_5xx"] for r in result.records()] == ["2025-11-21T04:40:10+00:00", "2025-11-21T04:40:20+00:00"]


def test_gateway_timeouts(tmp_path: Path) -> None:
    gw, api, other = "10.1.0.1", "10.1.0.2", "10.1.0.9"
    http = [
        # the client waited 30 s for the gateway, which got no answer from orders upstream
        {"ts_ns": at(0), "src_workload": "web", "dst_ip": gw, "dst_workload": "gateway", "path": "/buy",
         "status": 504, "latency_us": 30_000_000, "response_ts_ns": at(30)},
        {"ts_ns": at(0.001), "src_ip": gw, "src_workload": "gateway", "dst_ip": api, "dst_workload": "orders",
         "path": "/orders", "status": None, "latency_us": None},
        # decoys: an upstream call outside the client's span, one from another source, a 200 through the gateway
        {"ts_ns": at(31), "src_ip": gw, "dst_ip": api, "dst_workload": "orders", "status": 200, "latency_us": 1000},
        {"ts_ns": at(1), "src_ip": other, "dst_ip": api, "dst_workload": "orders", "status": 200, "latency_us": 900},
        {"ts_ns": at(40), "dst_ip": gw, "dst_workload": "gateway", "status": 200, "latency_us": 2000,
         "response_ts_ns": at(40.002)},
    ]
    result = _run(write_tables(tmp_path, {"http": http}), "gateway-timeouts")
    assert _pick(result, "client", "gateway", "path", "gateway_latency_ms", "upstream", "upstream_path",
                 "upstream_status", "upstream_latency_ms") == [
        ("web", "gateway", "/buy", 30_000.0, "orders", "/orders", None, None),
    ]


def test_connection_refused(tmp_path: Path) -> None:
    connections = [
        {"conn_state": "REJ", "completeness": 33, "src_ip": "10.0.0.1", "dst_ip": "10.0.9.9", "dst_port": 8080,
         "dst_namespace": "prod", "dst_workload": "cart", "ts_ns": at(1)},
        {"conn_state": "REJ", "completeness": 33, "src_ip": "10.0.0.3", "dst_ip": "10.0.9.9", "dst_port": 8080,
         "dst_namespace": "prod", "dst_workload": "cart", "ts_ns": at(2)},
        {"conn_state": "REJ", "src_ip": "10.0.0.1", "dst_ip": "10.0.9.8", "dst_port": 5432, "dst_workload": "db",
         "ts_ns": at(3)},
        # decoys: no answer at all (S0), reset after data (RSTR, completeness 47), a normal close, UDP
        {"conn_state": "S0", "completeness": 1, "dst_ip": "10.0.9.9", "dst_port": 8080, "dst_workload": "cart"},
        {"conn_state": "RSTR", "completeness": 47, "dst_ip": "10.0.9.9", "dst_port": 8080, "dst_workload": "cart"},
        {"conn_state": "SF", "completeness": 31, "dst_ip": "10.0.9.9", "dst_port": 8080, "dst_workload": "cart"},
        {"proto": "udp", "conn_state": "REJ", "dst_ip": "10.0.9.7", "dst_port": 53},
    ]
    result = _run(write_tables(tmp_path, {"connections": connections}), "connection-refused")
    assert _pick(result, "workload", "dst_ip", "dst_port", "refused", "clients") == [
        ("cart", "10.0.9.9", 8080, 2, 2),
        ("db", "10.0.9.8", 5432, 1, 1),
    ]


def test_resets(tmp_path: Path) -> None:
    common = {"src_workload": "web", "dst_workload": "api", "dst_port": 80}
    connections = [
        {**common, "conn_state": "RSTR", "bytes_total": 500, "duration_us": 2000, "ts_ns": at(1)},
        {**common, "conn_state": "RSTR", "bytes_total": 900, "duration_us": 4000, "ts_ns": at(2)},
        {**common, "conn_state": "RSTO", "bytes_total": 0, "duration_us": 1000, "ts_ns": at(3)},
        {**common, "conn_state": "REJ", "duration_us": 100, "ts_ns": at(4)},
        # decoys: normal closes, an unanswered SYN, UDP
        {**common, "conn_state": "SF", "bytes_total": 100, "rst_count": 0},
        {**common, "conn_state": "S0"},
        {**common, "proto": "udp", "conn_state": "RSTO"},
    ]
    result = _run(write_tables(tmp_path, {"connections": connections}), "resets")
    assert sorted(_pick(result, "reset_by", "phase", "resets", "avg_lifetime_ms", "max_lifetime_ms")) == [
        ("client", "before data", 1, 1.0, 1.0),
        ("server", "after data", 2, 3.0, 4.0),
        ("server", "handshake", 1, 0.1, 0.1),
    ]


def test_tls_handshake_failures(tmp_path: Path) -> None:
    tls = [
        {"sni": "api.example.com", "established": False, "alert": "fatal:handshake_failure", "alert_from": "server",
         "src_ip": "10.0.0.1", "ts_ns": at(1)},
        {"sni": "api.example.com", "established": False, "alert": "fatal:handshake_failure", "alert_from": "server",
         "src_ip": "10.0.0.2", "ts_ns": at(2)},
        {"sni": None, "established": False, "alert": "fatal:unknown_ca", "alert_from": "client", "ts_ns": at(3)},
        # decoys: established handshakes, with and without an alert afterwards
        {"sni": "api.example.com", "established": True},
        {"sni": "ok.example.com", "established": True, "alert": "warning:close_notify", "alert_from": "client"},
    ]
    result = _run(write_tables(tmp_path, {"tls": tls}), "tls-handshake-failures")
    assert _pick(result, "sni", "alert", "alert_from", "failures", "clients") == [
        ("api.example.com", "fatal:handshake_failure", "server", 2, 2),
        ("(no SNI)", "fatal:unknown_ca", "client", 1, 1),
    ]


def test_dns_failures(tmp_path: Path) -> None:
    dns = [
        {"src_namespace": "prod", "src_workload": "web", "qname": "pyments.prod.svc.cluster.local",
         "rcode": 3, "rcode_name": "NXDOMAIN", "ts_ns": at(1)},
        {"src_namespace": "prod", "src_workload": "web", "qname": "pyments.prod.svc.cluster.local",
         "rcode": 3, "rcode_name": "NXDOMAIN", "ts_ns": at(2)},
        {"src_namespace": "jobs", "src_pod": "cron-1", "qname": "api.example.com", "rcode": 2,
         "rcode_name": "SERVFAIL", "ts_ns": at(3)},
        # decoys: a good answer, REFUSED, an unanswered query
        {"src_workload": "web", "qname": "payments.prod.svc.cluster.local", "rcode": 0, "rcode_name": "NOERROR"},
        {"src_workload": "web", "qname": "x.example.com", "rcode": 5, "rcode_name": "REFUSED"},
        {"src_workload": "web", "qname": "y.example.com"},
    ]
    result = _run(write_tables(tmp_path, {"dns": dns}), "dns-failures")
    assert _pick(result, "src_namespace", "client", "qname", "rcode_name", "answers") == [
        ("prod", "web", "pyments.prod.svc.cluster.local", "NXDOMAIN", 2),
        ("jobs", "cron-1", "api.example.com", "SERVFAIL", 1),
    ]


def test_retransmission_hot_spots(tmp_path: Path) -> None:
    pair = {"src_namespace": "prod", "src_pod": "web-1", "dst_namespace": "prod", "dst_pod": "db-0"}
    connections = [
        {**pair, "retransmissions": 5, "retransmissions_out": 4, "retransmissions_in": 1,
         "retransmission_rate": 0.05, "bytes_total": 10_000, "goodput_bytes": 9_000},
        {**pair, "retransmissions": 3, "retransmissions_out": 3, "retransmissions_in": 0,
         "retransmission_rate": 0.1, "bytes_total": 10_000, "goodput_bytes": 8_000},
        {"src_pod": "web-2", "dst_pod": "cache-0", "retransmissions": 1, "retransmissions_out": 0,
         "retransmissions_in": 1, "retransmission_rate": 0.01, "bytes_total": 1000, "goodput_bytes": 900},
        # decoys: a clean connection of the hot pair, UDP (null insights)
        {**pair, "retransmissions": 0, "retransmissions_out": 0, "retransmissions_in": 0, "bytes_total": 5000,
         "goodput_bytes": 5000},
        {**pair, "proto": "udp"},
    ]
    result = _run(write_tables(tmp_path, {"connections": connections}), "retransmission-hot-spots")
    assert _pick(result, "src", "dst", "connections", "retransmissions", "retransmissions_out", "retransmissions_in",
                 "max_retransmission_rate", "retransmitted_byte_share") == [
        ("web-1", "db-0", 2, 8, 7, 1, 0.1, 0.15),
        ("web-2", "cache-0", 1, 1, 0, 1, 0.01, 0.1),
    ]


def test_zero_window_receivers(tmp_path: Path) -> None:
    connections = [
        # the consumer pod (dst) stops reading: it sends the zero windows (_in = sent by the responder)
        {"src_pod": "producer-1", "dst_pod": "consumer-0", "dst_namespace": "kafka", "zero_window_events": 4,
         "zero_window_events_out": 0, "zero_window_events_in": 4, "ts_ns": at(1)},
        {"src_pod": "producer-2", "dst_pod": "consumer-0", "dst_namespace": "kafka", "zero_window_events": 2,
         "zero_window_events_out": 0, "zero_window_events_in": 2, "ts_ns": at(2)},
        # a client that cannot keep up with a download (src sends the zero windows)
        {"src_pod": "backup-0", "src_namespace": "ops", "dst_pod": "s3-proxy", "zero_window_events": 1,
         "zero_window_events_out": 1, "zero_window_events_in": 0, "ts_ns": at(3)},
        # decoys: no zero windows, UDP
        {"src_pod": "a", "dst_pod": "b", "zero_window_events": 0, "zero_window_events_out": 0,
         "zero_window_events_in": 0},
        {"proto": "udp", "src_pod": "a", "dst_pod": "b"},
    ]
    result = _run(write_tables(tmp_path, {"connections": connections}), "zero-window-receivers")
    assert _pick(result, "namespace", "receiver", "connections", "zero_window_events", "peers") == [
        ("kafka", "consumer-0", 2, 6, 2),
        ("ops", "backup-0", 1, 1, 1),
    ]


def test_network_vs_application_latency(tmp_path: Path) -> None:
    connections = [
        {"conn_id": "slow-app-1", "handshake_us": 1_000},
        {"conn_id": "slow-app-2", "handshake_us": 3_000},
        {"conn_id": "slow-net", "handshake_us": 80_000},
        # decoy: a connection without HTTP on it
        {"conn_id": "no-http", "handshake_us": 500_000},
    ]
    http = [
        {"conn_id": "slow-app-1", "dst_workload": "reports", "latency_us": 401_000},
        {"conn_id": "slow-app-2", "dst_workload": "reports", "latency_us": 203_000},
        {"conn_id": "slow-net", "dst_workload": "edge", "latency_us": 100_000},
        # decoys: an unanswered request, a request whose connection's handshake was not seen
        {"conn_id": "slow-net", "dst_workload": "edge", "latency_us": None},
        {"conn_id": "unknown", "dst_workload": "edge", "latency_us": 9_000_000},
    ]
    result = _run(write_tables(tmp_path, {"connections": connections, "http": http}),
                  "network-vs-application-latency")
    assert _pick(result, "server", "requests", "avg_handshake_ms", "avg_http_latency_ms", "avg_application_ms",
                 "slow_side") == [
        ("reports", 2, 2.0, 302.0, 300.0, "application"),
        ("edge", 1, 80.0, 100.0, 20.0, "network"),
    ]


def test_large_request_stalls(tmp_path: Path) -> None:
    connections = [
        # three full-size (1448-byte) segments retransmitted over and over: a path MTU black hole
        {"src_workload": "uploader", "dst_workload": "storage", "retransmissions": 6, "retransmissions_out": 6,
         "retransmissions_in": 0, "bytes_total": 4344 + 6 * 1448, "goodput_bytes": 4344,
         "payload_bytes_out": 4344 + 6 * 1448,
         "duration_us": 12_000_000, "close": "rst", "ts_ns": at(1)},
        # decoys: many small retransmissions (a lossy link, not MTU), one retransmission, no retransmission
        {"src_workload": "chatty", "retransmissions": 20, "retransmissions_out": 20, "bytes_total": 2000 + 20 * 100,
         "goodput_bytes": 2000},
        {"src_workload": "once", "retransmissions": 1, "retransmissions_out": 1, "bytes_total": 2896,
         "goodput_bytes": 1448},
        {"src_workload": "clean", "retransmissions": 0, "bytes_total": 100_000, "goodput_bytes": 100_000},
    ]
    result = _run(write_tables(tmp_path, {"connections": connections}), "large-request-stalls")
    assert _pick(result, "client", "server", "retransmissions_out", "avg_retransmitted_segment_bytes", "duration_ms",
                 "close") == [("uploader", "storage", 6, 1448.0, 12_000.0, "rst")]


def test_large_request_stalls_ignore_ordinary_loss_on_large_responses(tmp_path: Path) -> None:
    connections = [
        # a 300-byte request answered by 40 full-size segments, 4 of them lost once and retransmitted by the server
        {"src_workload": "browser", "dst_workload": "cdn", "retransmissions": 4, "retransmissions_out": 0,
         "retransmissions_in": 4, "bytes_total": 300 + 44 * 1448, "goodput_bytes": 300 + 40 * 1448,
         "payload_bytes_out": 300, "payload_bytes_in": 44 * 1448, "ts_ns": at(1)},
        # the same small request retransmitted twice (full-size server retransmissions dominate the mean)
        {"src_workload": "retrier", "dst_workload": "cdn", "retransmissions": 6, "retransmissions_out": 2,
         "retransmissions_in": 4, "bytes_total": 3 * 300 + 44 * 1448, "goodput_bytes": 300 + 40 * 1448,
         "payload_bytes_out": 900, "payload_bytes_in": 44 * 1448, "ts_ns": at(2)},
        # a real stall: the client's full-size request segments retransmitted
        {"src_workload": "uploader", "dst_workload": "storage", "retransmissions": 3, "retransmissions_out": 3,
         "retransmissions_in": 0, "bytes_total": 2 * 1448 + 3 * 1448, "goodput_bytes": 2 * 1448,
         "payload_bytes_out": 5 * 1448, "payload_bytes_in": 0, "ts_ns": at(3)},
    ]
    result = _run(write_tables(tmp_path, {"connections": connections}), "large-request-stalls")
    assert _pick(result, "client", "server", "retransmissions_out") == [("uploader", "storage", 3)]


def test_incident_filter_keeps_only_that_incidents_rows(tmp_path: Path) -> None:
    dns = [
        {"qname": "a.example", "rcode_name": "NXDOMAIN", "incident_id": "inc-1"},
        {"qname": "b.example", "rcode_name": "NXDOMAIN", "incident_id": "inc-2", "dt": "2025-11-22"},
    ]
    root = write_tables(tmp_path, {"dns": dns})
    assert sorted(_pick(_run(root, "dns-failures"), "qname")) == [("a.example",), ("b.example",)]
    assert _pick(_run(root, "dns-failures", "inc-2"), "incident_id", "qname") == [("inc-2", "b.example")]
    # a hostile id is a literal, not SQL: it matches nothing instead of everything
    assert _run(root, "dns-failures", "x' OR '1'='1").rows == ()


def test_incident_filter_applies_to_both_sides_of_a_join(tmp_path: Path) -> None:
    connections = [{"conn_id": "c1", "handshake_us": 1000, "incident_id": "inc-1"},
                   {"conn_id": "c1", "handshake_us": 9000, "incident_id": "inc-2"}]
    http = [{"conn_id": "c1", "dst_workload": "api", "latency_us": 5000, "incident_id": "inc-1"}]
    root = write_tables(tmp_path, {"connections": connections, "http": http})
    result = _run(root, "network-vs-application-latency", "inc-1")
    assert _pick(result, "server", "avg_handshake_ms") == [("api", 1.0)]


def test_unknown_scenario_names_the_known_ones() -> None:
    with pytest.raises(scenarios.UnknownScenarioError, match="dns-failures"):
        scenarios.get("nope")


def test_named_queries_carry_workgroup_database_and_the_scenario_sql() -> None:
    resources = scenarios.template_resources()
    assert len(resources) == len(scenarios.SCENARIOS)
    for scenario in scenarios.SCENARIOS:
        props = resources[scenarios.logical_id(scenario.name)]["Properties"]
        assert props["WorkGroup"] == {"Ref": "AthenaWorkGroup"} and props["Database"] == {"Ref": "GlueDatabase"}
        assert props["QueryString"].endswith(scenario.query)


# ---------------------------------------------------------------- cross-layer scenarios (fixtures/crosslayer_tables.py)


def _crosslayer(tmp_path: Path) -> Path:
    from tests.fixtures import crosslayer_tables

    return write_tables(tmp_path, crosslayer_tables.tables(), incident_id="inc-x")


def test_conntrack_table_full(tmp_path: Path) -> None:
    result = _run(_crosslayer(tmp_path), "conntrack-table-full", "inc-x")
    # node-b only (node-c holds 100 of 262144 entries and dropped nothing).
    assert _pick(result, "node", "peak_entries", "table_limit", "dropped", "insert_failed") == [
        ("node-b", 262144, 262144, 137, 12)]
    assert _pick(result, "first_drop")[0][0].timestamp() == pytest.approx(at(20.5) / 1e9)


def test_listen_queue_overflow(tmp_path: Path) -> None:
    result = _run(_crosslayer(tmp_path), "listen-queue-overflow", "inc-x")
    assert _pick(result, "node", "listen_overflows", "listen_drops", "syncookies_sent", "periods") == [
        ("node-a", 40, 40, 0, 2)]
    first, last = _pick(result, "first_period_end", "last_period_end")[0]
    assert (first.timestamp(), last.timestamp()) == pytest.approx(
        (at(10.25) / 1e9, at(20.5) / 1e9))


def test_service_without_ready_endpoints(tmp_path: Path) -> None:
    result = _run(_crosslayer(tmp_path), "service-without-ready-endpoints", "inc-x")
    assert _pick(result, "namespace", "service", "listed_endpoints", "failed_connections", "http_5xx",
                 "first_failure_ns", "last_failure_ns") == [("production", "payments", 1, 1, 0, at(5.5), at(5.5))]
    assert _pick(result, "no_ready_endpoints_since")[0][0].timestamp() == pytest.approx(at(-30) / 1e9)


def test_errors_while_endpoints_terminating(tmp_path: Path) -> None:
    result = _run(_crosslayer(tmp_path), "errors-while-endpoints-terminating", "inc-x")
    assert _pick(result, "status", "path", "service", "terminating_pod", "sent_to_the_terminating_pod") == [
        (504, "/cart/terminating", "checkout", "checkout-a", True),
        (503, "/cart/via-service", "checkout", "checkout-a", False)]
