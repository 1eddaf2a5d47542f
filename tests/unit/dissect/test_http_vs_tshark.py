"""The http table against tshark on the bundled sample, and malformed HTTP that is counted, never raised.

tshark runs with ``http.desegment_body:FALSE`` so that a response whose body never completes (the sample's reset
stream) is still shown with its status line, as the table keeps it. Expected values come from tshark or from the
sample's construction, never from the table.
"""

from __future__ import annotations

import pyarrow as pa
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from freezeframe.capture.pcapio import LINKTYPE_ETHERNET, Packet
from freezeframe.contracts.schemas import HTTP
from freezeframe.dissect import AppTracker, ConnectionTracker
from freezeframe.dissect.http import Request, Response, parse

from .conftest import TsharkFields

NO_BODY_REASSEMBLY = ("-o", "http.desegment_body:FALSE")
T0 = 1_767_225_600 * 1_000_000_000


def aggregated(value: str) -> list[str]:
    return value.split(",") if value else []


def tshark_exchanges(tshark_fields: TsharkFields) -> list[tuple[str, str, str, int, str, int | None]]:
    """(method, uri, host, client port, user agent, status) per request; pipelined responses pair in order."""
    requests = {f[0]: f for f in tshark_fields("http.request", ["frame.number", "http.request.method",
                                                                 "http.request.uri", "http.host", "tcp.srcport",
                                                                 "http.user_agent"], *NO_BODY_REASSEMBLY)}
    statuses: dict[str, list[int]] = {}
    for request_in, codes in tshark_fields("http.response", ["http.request_in", "http.response.code"],
                                           *NO_BODY_REASSEMBLY):
        statuses.setdefault(request_in, []).extend(int(code) for code in aggregated(codes))
    exchanges = []
    for number, (_, methods, uris, hosts, port, agents) in requests.items():
        codes = statuses.get(number, [])
        for i, method in enumerate(aggregated(methods)):
            status = codes[i] if i < len(codes) else None
            exchanges.append((method, aggregated(uris)[i], aggregated(hosts)[i], int(port), aggregated(agents)[i],
                              status))
    return sorted(exchanges, key=str)


def test_requests_and_their_statuses_match_tshark(sample_tables: dict[str, pa.Table],
                                                  tshark_fields: TsharkFields) -> None:
    expected = tshark_exchanges(tshark_fields)
    # The sample is built with 2xx, 4xx and 5xx, a POST and pipelined requests.
    assert {200, 404, 503} <= {e[5] for e in expected}
    assert {"GET", "POST"} == {e[0] for e in expected}

    rows = sample_tables["http"].to_pylist()
    actual = sorted(((r["method"], r["path"], r["host"], r["src_port"], r["user_agent"], r["status"]) for r in rows),
                    key=str)
    assert actual == expected


def test_pipelined_requests_in_one_segment_pair_in_order(sample_tables: dict[str, pa.Table],
                                                         tshark_fields: TsharkFields) -> None:
    pipelined = [f for f in tshark_fields("http.request", ["tcp.srcport", "http.request.uri"]) if "," in f[1]]
    assert pipelined, "the sample must hold pipelined requests"
    port, uris = int(pipelined[0][0]), pipelined[0][1].split(",")

    rows = sorted((r for r in sample_tables["http"].to_pylist() if r["src_port"] == port), key=lambda r: r["ts_ns"])
    # Built in samples.py: a chunked 200 carrying {"cart":18} and then a 404, in one segment.
    assert [(r["path"], r["status"]) for r in rows] == [(uris[0], 200), (uris[1], 404)]
    assert [r["response_bytes"] for r in rows] == [len(b'{"cart":18}'), len(b'{"error":"no cart"}')]
    assert len({r["conn_id"] for r in rows}) == 1


def test_response_sizes_follow_content_length(sample_tables: dict[str, pa.Table],
                                              tshark_fields: TsharkFields) -> None:
    expected = sorted((int(f[0]), int(f[1])) for f in tshark_fields(
        "http.response && http.content_length_header", ["tcp.dstport", "http.content_length_header"],
        *NO_BODY_REASSEMBLY))
    ports = {port for port, _ in expected}

    rows = [r for r in sample_tables["http"].to_pylist() if r["src_port"] in ports and r["status"] is not None]
    # The pipelined connection also carries a chunked response, which has no Content-Length.
    actual = sorted((r["src_port"], r["response_bytes"]) for r in rows if r["path"] != "/api/cart/18")
    assert actual == expected
    # The reset stream (samples.py): 400 bytes promised, 200 sent, then RST.
    (reset,) = [r for r in rows if r["path"] == "/api/stream"]
    assert (reset["response_bytes"], reset["response_complete"]) == (400, False)


def test_rows_conform_to_the_schema_and_join_their_connection(sample_tables: dict[str, pa.Table]) -> None:
    table = sample_tables["http"]
    assert table.schema.equals(HTTP, check_metadata=True)
    connections = {r["conn_id"]: r for r in sample_tables["connections"].to_pylist()}
    for row in table.to_pylist():
        conn = connections[row["conn_id"]]
        assert (row["src_ip"], row["src_port"], row["dst_ip"], row["dst_port"]) == (
            conn["src_ip"], conn["src_port"], conn["dst_ip"], conn["dst_port"])
        assert row["latency_us"] is None or row["latency_us"] > 0


# --- parsing and malformed input ----------------------------------------------------------------------------


def test_parse_reads_start_lines_and_fields() -> None:
    request = parse(b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\nX-Multi: 1\r\nx-multi: 2")
    assert request == Request("GET", "/a?b=1", "HTTP/1.1", {"host": "x", "x-multi": "1, 2"})
    response = parse(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0")
    assert response == Response("HTTP/1.1", 503, "Service Unavailable", {"content-length": "0"})
    for bad in (b"", b"GET /\r\n", b"HTTP/1.1 20x OK", b"GET / HTTP/1.1\r\nno colon here", b"\xff\xfe / HTTP/1.1",
                b"GET / HTTP/1.1\r\nHost : x"):
        assert parse(bad) is None


def connection_frames(client_payloads: list[bytes], server_payloads: list[bytes]) -> list[Packet]:
    """Client segments first, then server segments, each in sequence order, 1 ms apart."""
    frames = []
    seq = {True: 1000, False: 5000}
    for i, (from_client, payload) in enumerate([(True, p) for p in client_payloads]
                                               + [(False, p) for p in server_payloads]):
        src, dst, sport, dport = ("10.0.0.1", "10.0.0.2", 40000, 80) if from_client else \
            ("10.0.0.2", "10.0.0.1", 80, 40000)
        tcp = TCP(sport=sport, dport=dport, flags="PA", seq=seq[from_client], ack=seq[not from_client])
        frame = bytes(Ether() / IP(src=src, dst=dst) / tcp / payload)
        frames.append(Packet(T0 + i * 1_000_000, len(frame), frame))
        seq[from_client] += len(payload)
    return frames


def run(frames: list[Packet]) -> tuple[list[dict[str, object]], AppTracker]:
    app = AppTracker("n")
    tracker = ConnectionTracker("n", app)
    tracker.feed(LINKTYPE_ETHERNET, frames)
    return tracker.app_tables()["http"].to_pylist(), app


def test_retransmitted_and_split_segments_are_reassembled_once() -> None:
    request = b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n"
    response = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbody"
    frames = connection_frames([request[:10], request[10:]], [response[:20], response[20:]])
    frames.insert(2, frames[1])  # the second client segment again: a retransmission

    rows, app = run(frames)

    assert [(r["method"], r["path"], r["status"], r["response_bytes"], r["response_complete"]) for r in rows] == [
        ("GET", "/x", 200, 4, True)]
    assert app.stats.http_malformed == 0


def test_garbage_after_a_valid_request_is_counted_not_raised() -> None:
    request = b"POST /x HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"
    frames = connection_frames([request + b"GET / HTTP/1.1\r\nBad Header\r\n\r\n"],
                               [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", b"\xff" * 100])

    rows, app = run(frames)

    assert [(r["method"], r["request_bytes"], r["status"]) for r in rows] == [("POST", 3, 200)]
    assert app.stats.http_malformed == 2  # the bad field line, the bad chunk size


def test_a_response_without_request_and_an_oversized_head_are_counted() -> None:
    head = b"GET / HTTP/1.1\r\nX: " + b"a" * 70_000  # never ends: more than MAX_HEADER_BYTES
    frames = connection_frames([head[i:i + 30_000] for i in range(0, len(head), 30_000)],
                               [b"HTTP/1.1 200 OK\r\n\r\n"])

    rows, app = run(frames)

    assert rows == []
    assert app.stats.http_malformed == 1
    assert app.stats.http_unmatched_responses == 1
