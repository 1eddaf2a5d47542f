"""The KFL-style filter language: every filter is compiled and run by the local engine over fixture tables whose rows
are labelled, so each test checks exactly which rows match (decoys included); parse errors give their position."""

from __future__ import annotations

import duckdb
import pytest

from freezeframe.investigate.kfl import KflError, compile_filter, parse, tokenize
from freezeframe.investigate.query import connect_local, run
from tests.fixtures.evidence_tables import at, write_tables


@pytest.fixture(scope="module")
def con(tmp_path_factory: pytest.TempPathFactory) -> duckdb.DuckDBPyConnection:
    root = tmp_path_factory.mktemp("kfl")
    write_tables(root, {
        "http": [
            {"conn_id": "h-prod-503", "status": 503, "dst_namespace": "production", "method": "GET", "path": "/api/pay",
             "latency_us": 2000, "ts_ns": at(1)},
            {"conn_id": "h-prod-500", "status": 500, "dst_namespace": "production", "method": "POST",
             "path": "/api/cart", "latency_us": 9000, "ts_ns": at(2)},
            {"conn_id": "h-prod-200", "status": 200, "dst_namespace": "production", "method": "PUT", "path": "/a_b%c",
             "latency_us": 100, "ts_ns": at(3)},
            {"conn_id": "h-stage-502", "status": 502, "dst_namespace": "staging", "method": "GET", "path": "/axbyc",
             "ts_ns": at(4)},
            {"conn_id": "h-none", "status": None, "dst_namespace": "production", "method": "GET", "path": "/x",
             "ts_ns": at(5)},
        ],
        "dns": [
            {"conn_id": "d-nx", "qname": "pyments.svc", "rcode": 3, "rcode_name": "NXDOMAIN", "ts_ns": at(1)},
            {"conn_id": "d-servfail", "qname": "api.example.com", "rcode": 2, "rcode_name": "SERVFAIL", "ts_ns": at(2)},
            {"conn_id": "d-ok", "qname": "payments.svc", "rcode": 0, "rcode_name": "NOERROR",
             "answers": ["10.0.0.7", "10.0.0.8"], "ts_ns": at(3)},
            {"conn_id": "d-quote", "qname": "it's.example", "rcode": 0, "rcode_name": "NOERROR", "ts_ns": at(4)},
        ],
        "connections": [
            {"conn_id": "c-lossy", "proto": "tcp", "retransmission_rate": 0.05, "src_pod": "web-1", "ts_ns": at(1)},
            {"conn_id": "c-edge", "proto": "tcp", "retransmission_rate": 0.01, "src_pod": "web-2", "ts_ns": at(2)},
            {"conn_id": "c-clean", "proto": "tcp", "retransmission_rate": 0.0, "src_pod": "web-3", "ts_ns": at(3)},
            {"conn_id": "c-udp", "proto": "udp", "dst_port": 53, "src_pod": "web-1", "ts_ns": at(4)},
        ],
        "tls": [
            {"conn_id": "t-fail", "sni": "api.example.com", "established": False, "ts_ns": at(1)},
            {"conn_id": "t-ok", "sni": "api.example.com", "established": True, "alpn": ["h2", "http/1.1"],
             "ts_ns": at(2)},
        ],
    })
    return connect_local(root)


def _ids(con: duckdb.DuckDBPyConnection, expression: str, incident: str | None = None) -> list[str]:
    sql = compile_filter(expression).select(incident_id=incident, columns=("conn_id",))
    return [row[0] for row in run(None, sql, con).rows]


@pytest.mark.parametrize(("expression", "table", "expected"), [
    # the three examples of the brief
    ('http and status >= 500 and dst.namespace == "production"', "http", ["h-prod-503", "h-prod-500"]),
    ('dns and rcode == "NXDOMAIN"', "dns", ["d-nx"]),
    ("tcp and retransmission_rate > 0.01", "connections", ["c-lossy"]),
    # comparisons and literals
    ("tcp and retransmission_rate >= 0.01", "connections", ["c-lossy", "c-edge"]),
    ("dns and rcode == 3", "dns", ["d-nx"]),
    ("dns and rcode != 0", "dns", ["d-nx", "d-servfail"]),
    ("http and status < 500", "http", ["h-prod-200"]),
    ("http and status <= 500", "http", ["h-prod-500", "h-prod-200"]),
    ("http and status == null", "http", ["h-none"]),
    ('http and status != null and dst.namespace != "production"', "http", ["h-stage-502"]),
    ('dns and qname == "it\'s.example"', "dns", ["d-quote"]),
    ("tls and not established", "tls", ["t-fail"]),
    ("tls and established == false", "tls", ["t-fail"]),
    ("udp", "connections", ["c-udp"]),
    ("tcp or udp", "connections", ["c-lossy", "c-edge", "c-clean", "c-udp"]),
    ("http and ts >= \"2025-11-21T04:40:04Z\"", "http", ["h-stage-502", "h-none"]),
    # precedence: and binds tighter than or, not tighter than and; parentheses override
    ("http and status == 502 or status == 503 and dst.namespace == \"production\"", "http",
     ["h-prod-503", "h-stage-502"]),
    ('http and (status == 502 or status == 503) and dst.namespace == "production"', "http", ["h-prod-503"]),
    ("http and not status == 503 and status >= 500", "http", ["h-prod-500", "h-stage-502"]),
    ("http and not (status == 503 or status == 500) && status >= 500", "http", ["h-stage-502"]),
    ("http && !(status < 500) || status == 200", "http", ["h-prod-503", "h-prod-500", "h-prod-200", "h-stage-502"]),
    # lists
    ('http and request.method in ["POST", "PUT"]', "http", ["h-prod-500", "h-prod-200"]),
    ("http and status not in [500, 503] and status != null", "http", ["h-prod-200", "h-stage-502"]),
    # text operators; % and _ in a needle are literal characters, not LIKE wildcards
    ('http and path startswith "/api/"', "http", ["h-prod-503", "h-prod-500"]),
    ('http and path contains "_b%"', "http", ["h-prod-200"]),
    ('http and path endswith "b%c"', "http", ["h-prod-200"]),
    ('http and path endswith "_c"', "http", []),
    ('http and path matches "^/a.b"', "http", ["h-prod-200", "h-stage-502"]),
    ('dns and answers contains "10.0.0.8"', "dns", ["d-ok"]),
    ('tls and alpn contains "h2"', "tls", ["t-ok"]),
    # dotted fields and the table chosen without a protocol
    ('src.pod == "web-1"', "connections", ["c-lossy", "c-udp"]),
    ('rcode_name == "SERVFAIL"', "dns", ["d-servfail"]),
])
def test_filter_selects_exactly_the_expected_rows(con: duckdb.DuckDBPyConnection, expression: str, table: str,
                                                  expected: list[str]) -> None:
    assert compile_filter(expression).table == table
    assert _ids(con, expression) == expected


def test_literals_cannot_inject_sql(con: duckdb.DuckDBPyConnection) -> None:
    assert _ids(con, "dns and qname == \"x' OR '1'='1\"") == []
    assert _ids(con, 'dns and qname == "x\\" OR 1=1 --"') == []
    assert _ids(con, 'http and status >= 500', incident="inc-1' OR '1'='1") == []
    assert _ids(con, 'http and status == 503', incident="inc-1") == ["h-prod-503"]
    with pytest.raises(KflError, match="unexpected character ';'"):
        compile_filter("http and status == 1; DROP TABLE http")


@pytest.mark.parametrize(("expression", "message", "column"), [
    ("http and status >= and x", "expected a value", 20),
    ("http and stauts == 5", "did you mean 'status'", 10),
    ('http and status = 5', "compare with '=='", 17),
    ('dns and qname == "abc', "unterminated string", 18),
    ("http and (status == 5", "expected ')' to close the '(' at column 10", 22),
    ("dns and qname == 5", "needs a \"string\"", 18),
    ("http and status in [1, \"a\"]", "needs a number", 24),
    ("http or dns", "different tables", 9),
    ("http and", "expected a protocol", 9),
    ("http and status", "not a boolean field", 10),
    ("", "empty filter", 1),
    ("http status == 1", "expected 'and', 'or'", 6),
    ("http and status in [1, 2", "expected ',' or ']'", 25),
    ("http and path startswith 5", "takes a string", 26),
    ("http and status > null", "never true", 17),
    ('http and ts > "yesterday"', "not an ISO 8601 time", 15),
    ("dns and answers == \"x\"", "is a list", 17),
    ("nosuchfield == 1", "no table has a field", 1),
    ("rcode == 1 and status == 500", "no one table", 16),
    ("http & status == 1", "use '&&'", 6),
    ('dns and qname == "\\q"', "unknown escape", 19),
])
def test_errors_give_the_position(expression: str, message: str, column: int) -> None:
    with pytest.raises(KflError) as caught:
        compile_filter(expression)
    error = caught.value
    assert message in str(error)
    assert error.position + 1 == column
    lines = str(error).splitlines()
    assert lines[-2] == f"  {expression}" and lines[-1] == "  " + " " * (column - 1) + "^"


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    with pytest.raises(KflError, match="nested"):
        compile_filter("(" * 5000 + "udp" + ")" * 5000)
    with pytest.raises(KflError, match="nested"):
        compile_filter("not " * 5000 + "udp")
    assert compile_filter("(" * 10 + "not udp" + ")" * 10).where == "NOT (proto = 'udp')"


def test_tokens_carry_positions_and_strings_are_unescaped() -> None:
    tokens = tokenize('dst.pod == "a\\"b" && x')
    assert [(t.kind, t.value, t.position) for t in tokens] == [
        ("ident", "dst.pod", 0), ("op", "==", 8), ("string", 'a"b', 11), ("op", "&&", 18), ("ident", "x", 21),
        ("end", None, 22)]


def test_keywords_are_case_insensitive() -> None:
    assert compile_filter('HTTP AND status >= 500 OR NOT status == 1').where == compile_filter(
        'http and status >= 500 or not status == 1').where
    assert parse("http") == parse("HTTP")
