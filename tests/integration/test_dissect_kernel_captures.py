"""The dissection engine against tshark 4.0 on captures of real kernel traffic (tests/fixtures/netns_traffic.py).

The captures are built once per module: namespaces, a userspace bridge that delays, drops and reorders frames,
real servers and clients, tcpdump on both outer veth ends. Each is dissected the way a job does it (one
ConnectionTracker feeding an AppTracker) and compared with tshark run here on the same file. Nothing expected is
copied from the engine's output: the reference is tshark, or what the fixture's client observed.

Tolerances are the issue's: packet, DNS, HTTP and TLS counts and completeness exact (or within 1%); the TCP
analysis counts within 3% per connection; handshake_us within 1 us of tcp.analysis.initial_rtt.

Where tshark 4.0 itself is wrong (it pairs every response to a frame of pipelined requests with the last of them),
only the counts are compared with tshark and the pairing with what the client read.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from freezeframe.capture.pcapio import PcapReader, encode_global_header, encode_record, open_capture
from freezeframe.dissect import AppTracker, ConnectionTracker, native
from freezeframe.dissect.tcp.batch import feed_batches
from tests.fixtures import netns_traffic as traffic
from tests.fixtures.native_compare import differences

pytestmark = [pytest.mark.capture]
TSHARK = shutil.which("tshark")
CAPTURES = ("server_side", "client_side")
# tshark guesses protocols from ports; the TLS 1.3-only server listens on a port it does not know.
DECODE_AS = ("-d", f"tcp.port=={traffic.TLS13_ONLY_PORT},tls")
StreamKey = tuple[str, str, int, str, int, int]  # proto, first frame's src, sport, dst, dport, ns

# tshark expert flag -> connections column (DESIGN "TCP insights": Wireshark's definitions).
TCP_FLAGS = {
    "tcp.analysis.retransmission": "retransmissions",
    "tcp.analysis.fast_retransmission": "fast_retransmissions",
    "tcp.analysis.out_of_order": "out_of_order",
    "tcp.analysis.duplicate_ack": "dup_acks",
    "tcp.analysis.zero_window": "zero_window_events",
    "tcp.analysis.window_full": "window_full_events",
}
RCODES = {0: "NOERROR", 2: "SERVFAIL", 3: "NXDOMAIN", 5: "REFUSED"}
SMALL_SEGMENT_PACKETS = 3


@dataclass(frozen=True)
class Dissected:
    name: str
    path: Path
    tables: dict[str, pa.Table]
    stats: dict[str, int]


@pytest.fixture(scope="module")
def captures(tmp_path_factory: pytest.TempPathFactory) -> Iterator[traffic.KernelCaptures]:
    if TSHARK is None:
        pytest.skip("tshark is not installed (apt-get install tshark); it is the reference these tests compare against")
    yield from traffic.kernel_captures(tmp_path_factory.mktemp("kernel"))


@pytest.fixture(scope="module")
def dissected(captures: traffic.KernelCaptures) -> dict[str, Dissected]:
    """Both captures through the engine as a dissection job runs it: one decode pass for every table, batched."""
    results = {}
    for name in CAPTURES:
        path = getattr(captures, name)
        tracker = ConnectionTracker("node-a", AppTracker("node-a"))
        with path.open("rb") as stream:
            feed_batches(tracker, open_capture(stream).record_batches())
        assert tracker.app is not None
        tables = {"connections": tracker.finish(), **tracker.app_tables()}
        results[name] = Dissected(name, path, tables, {**tracker.stats.as_dict(), **tracker.app.stats.as_dict()})
    return results


@pytest.fixture(params=CAPTURES)
def capture(request: pytest.FixtureRequest, dissected: dict[str, Dissected]) -> Dissected:
    return dissected[request.param]


# --- tshark, the reference ---------------------------------------------------------------------------------------


def tshark(path: Path, *args: str) -> str:
    assert TSHARK is not None
    return subprocess.run([TSHARK, "-n", "-r", str(path), *DECODE_AS, *args], check=True, capture_output=True,
                          text=True, timeout=120).stdout


def tshark_fields(path: Path, fields: list[str], *args: str) -> list[list[str]]:
    columns = [arg for name in fields for arg in ("-e", name)]
    out = tshark(path, *args, "-T", "fields", "-E", "separator=/t", "-E", "occurrence=a", "-E", "aggregator=,",
                 *columns)
    return [line.split("\t") for line in out.splitlines() if line]


def tshark_layers(path: Path, display_filter: str, protocols: str, *args: str) -> list[dict[str, Any]]:
    """The decoded layers of each displayed frame; a protocol seen twice in one frame becomes a list."""
    out = tshark(path, *args, "-Y", display_filter, "-T", "json", "--no-duplicate-keys", "-J", protocols)
    return [frame["_source"]["layers"] for frame in json.loads(out or "[]")]


def every(tree: Any, key: str) -> list[Any]:
    """Every value of ``key`` anywhere in a tshark JSON tree, in document order."""
    found = []
    if isinstance(tree, dict):
        for name, value in tree.items():
            if name == key:
                found += value if isinstance(value, list) else [value]
            else:
                found += every(value, key)
    elif isinstance(tree, list):
        for item in tree:
            found += every(item, key)
    return found


def pdus(layers: dict[str, Any], protocol: str) -> list[dict[str, Any]]:
    value = layers.get(protocol)
    return [] if value is None else value if isinstance(value, list) else [value]


def one(tree: Any, key: str) -> str:
    values = every(tree, key)
    assert len(values) == 1, f"{key}: expected one value, tshark gave {values}"
    return str(values[0])


def endpoints(layers: dict[str, Any]) -> tuple[str, int, str, int]:
    transport = layers.get("tcp") or layers["udp"]
    proto = "tcp" if "tcp" in layers else "udp"
    return (one(layers["ip"], "ip.src"), int(one(transport, f"{proto}.srcport")), one(layers["ip"], "ip.dst"),
            int(one(transport, f"{proto}.dstport")))


def nanoseconds(seconds: str) -> int:
    return int(Decimal(seconds) * 1_000_000_000)


@dataclass
class Stream:
    key: StreamKey
    packets_out: int = 0  # sent by the first frame's sender
    packets_in: int = 0
    bytes_out: int = 0
    bytes_in: int = 0
    completeness: int | None = None
    initial_rtt_ns: int | None = None


@functools.cache
def tshark_streams(path: Path) -> dict[tuple[str, str], Stream]:
    """tshark's TCP and UDP conversations, keyed by (proto, tcp.stream or udp.stream)."""
    # Two passes: the second shows every frame the stream's final completeness.
    rows = tshark_fields(path, ["tcp.stream", "udp.stream", "ip.src", "ip.dst", "tcp.srcport", "tcp.dstport",
                                "udp.srcport", "udp.dstport", "frame.time_epoch", "frame.len", "tcp.completeness",
                                "tcp.analysis.initial_rtt"], "-2", "-Y", "tcp || udp")
    streams: dict[tuple[str, str], Stream] = {}
    for tcp_stream, udp_stream, src, dst, tsport, tdport, usport, udport, epoch, length, completeness, rtt in rows:
        if "," in src:
            continue  # ICMP errors quote the offending datagram: not a frame of that conversation
        proto = "tcp" if tcp_stream else "udp"
        sport, dport = int(tsport or usport), int(tdport or udport)
        stream = streams.get((proto, tcp_stream or udp_stream))
        if stream is None:
            stream = streams[(proto, tcp_stream or udp_stream)] = Stream((proto, src, sport, dst, dport,
                                                                          nanoseconds(epoch)))
        if (src, sport) == stream.key[1:3]:
            stream.packets_out += 1
            stream.bytes_out += int(length)
        else:
            stream.packets_in += 1
            stream.bytes_in += int(length)
        if completeness:
            stream.completeness = int(completeness, 0)
        if rtt and stream.initial_rtt_ns is None:
            stream.initial_rtt_ns = nanoseconds(rtt)
    return streams


def connection_rows(capture: Dissected) -> dict[StreamKey, dict[str, Any]]:
    return {(row["proto"], row["src_ip"], row["src_port"], row["dst_ip"], row["dst_port"], row["first_ts_ns"]): row
            for row in capture.tables["connections"].to_pylist()}


# --- the fixture holds what it promises ---------------------------------------------------------------------------


def test_the_fixture_ran_every_scenario(captures: traffic.KernelCaptures) -> None:
    client, bridge = captures.client, captures.bridge
    assert client["refused_connects"] == len(traffic.CLOSED_PORTS)
    assert bridge["dropped"] > 0 and bridge["reordered"] > 0 and bridge["send_errors"] == 0
    assert client["uploaded"].count(traffic.BULK_BYTES) == traffic.BULK_FLOWS
    assert client["downloaded"] == [traffic.BULK_BYTES] * traffic.BULK_FLOWS, "the transfers survived the loss"
    assert {400 <= s < 500 for s in client["http_statuses"]} == {True, False}
    assert any(s >= 500 for s in client["http_statuses"])
    assert client["tls"][traffic.TLS_REJECTED_NAME].startswith("failed")
    assert client["tls"][traffic.TLS_OLD_NAME].startswith("failed")
    for report in captures.tcpdump.values():
        assert re.search(r"^0 packets dropped by kernel$", report, re.MULTILINE), report


# --- connections ----------------------------------------------------------------------------------------------------


def test_packet_count_matches_tshark(capture: Dissected) -> None:
    frames = tshark_fields(capture.path, ["frame.number"])
    assert len(frames) > 1000
    assert capture.stats["packets"] == len(frames)


def test_packets_and_bytes_per_conversation_match_tshark(capture: Dissected) -> None:
    streams = tshark_streams(capture.path)
    expected = {s.key: (s.packets_out, s.bytes_out, s.packets_in, s.bytes_in) for s in streams.values()}
    rows = connection_rows(capture)
    actual = {key: (r["packets_out"], r["bytes_out"], r["packets_in"], r["bytes_in"]) for key, r in rows.items()}
    # Every connection the fixture's client opens (the UDP queries share one socket), as tshark sees them.
    assert len(expected) == (len(traffic.CLOSED_PORTS) + 2 + 3 + len(traffic.TLS_CASES)
                             + 2 * traffic.BULK_FLOWS + 1)
    assert actual == expected


def test_completeness_per_stream_matches_tshark(capture: Dissected) -> None:
    expected = {s.key: s.completeness for s in tshark_streams(capture.path).values() if s.key[0] == "tcp"}
    # Full lives (31) and refused connects (SYN, RST-ACK: 37), checked on tshark's side.
    assert {31, 37} <= set(expected.values())
    actual = {key: row["completeness"] for key, row in connection_rows(capture).items() if key[0] == "tcp"}
    assert actual == expected


# --- TCP insights ---------------------------------------------------------------------------------------------------


@functools.cache
def tshark_flag_counts(path: Path) -> dict[tuple[str, str], Counter[str]]:
    """Per tcp.stream, how many frames tshark flags with each analysis flag (one pass, as Wireshark shows them)."""
    # -T json with -e lists a flag (a field without a value) when the frame has it; -T fields would print nothing.
    columns = [arg for name in ("tcp.stream", *TCP_FLAGS) for arg in ("-e", name)]
    frames = json.loads(tshark(path, "-Y", "tcp.analysis.flags", "-T", "json", *columns) or "[]")
    counts: dict[tuple[str, str], Counter[str]] = {}
    for frame in frames:
        fields = frame["_source"]["layers"]
        counts.setdefault(("tcp", fields["tcp.stream"][0]), Counter()).update(flag for flag in TCP_FLAGS
                                                                                 if flag in fields)
    return counts


def test_tcp_analysis_counts_match_tshark_within_3_percent(capture: Dissected) -> None:
    streams = tshark_streams(capture.path)
    flags = tshark_flag_counts(capture.path)
    totals = Counter[str]()
    for counter in flags.values():
        totals.update(counter)
    # The bridge's loss and reordering and the slow reader make every one of them (tshark's view).
    assert all(totals[flag] for flag in TCP_FLAGS), totals

    rows = connection_rows(capture)
    mismatches = []
    for stream_id, stream in streams.items():
        if stream.key[0] != "tcp":
            continue
        row = rows[stream.key]
        for flag, column in TCP_FLAGS.items():
            expected, actual = flags.get(stream_id, Counter())[flag], row[column]
            if actual is None or abs(actual - expected) > 0.03 * expected:
                mismatches.append((stream.key[2:5], column, expected, actual))
    assert not mismatches


def test_handshake_us_matches_tshark_initial_rtt_within_1_us(capture: Dissected) -> None:
    streams = [s for s in tshark_streams(capture.path).values() if s.initial_rtt_ns is not None]
    assert len(streams) >= 10
    rows = connection_rows(capture)
    mismatches = []
    for stream in streams:
        assert stream.initial_rtt_ns is not None
        expected_us, actual_us = stream.initial_rtt_ns / 1000, rows[stream.key]["handshake_us"]
        if actual_us is None or abs(actual_us - expected_us) > 1:
            mismatches.append((stream.key[2:5], expected_us, actual_us))
    assert not mismatches


# --- DNS ------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class DnsMessage:
    transport: str
    client: tuple[str, int]
    server: tuple[str, int]
    id: int
    qname: str
    qtype: int
    response: bool
    rcode: int | None
    answered: bool  # for a query: tshark found its response (dns.response_in)
    answers: tuple[str, ...]  # A and AAAA addresses of a response
    latency_us: int | None  # of a response: dns.time


@functools.cache
def tshark_dns(path: Path) -> list[DnsMessage]:
    messages = []
    for layers in tshark_layers(path, "dns", "ip tcp udp dns", "-2"):
        src, sport, dst, dport = endpoints(layers)
        transport = "tcp" if "tcp" in layers else "udp"
        for pdu in pdus(layers, "dns"):
            response = one(pdu, "dns.flags.response") == "1"
            client, server = ((dst, dport), (src, sport)) if response else ((src, sport), (dst, dport))
            messages.append(DnsMessage(transport, client, server, int(one(pdu, "dns.id"), 16),
                                       one(pdu, "dns.qry.name"), int(one(pdu, "dns.qry.type")), response,
                                       int(one(pdu, "dns.flags.rcode")) if response else None,
                                       bool(every(pdu, "dns.response_in")),
                                       tuple(every(pdu, "dns.a") + every(pdu, "dns.aaaa")),
                                       int(Decimal(one(pdu, "dns.time")) * 1_000_000) if response else None))
    return messages


def dns_rows(capture: Dissected) -> list[dict[str, Any]]:
    return capture.tables["dns"].to_pylist()


def test_dns_queries_match_tshark(capture: Dissected) -> None:
    expected = sorted((m.transport, m.client, m.server, m.id, m.qname, m.qtype) for m in tshark_dns(capture.path)
                      if not m.response)
    assert {m[0] for m in expected} == {"udp", "tcp"}
    actual = sorted((r["transport"], (r["src_ip"], r["src_port"]), (r["dst_ip"], r["dst_port"]), r["transaction_id"],
                     r["qname"], {"A": 1, "AAAA": 28}[r["qtype"]]) for r in dns_rows(capture))
    assert actual == expected


def test_dns_responses_rcodes_answers_and_latency_match_tshark_on_both_transports(capture: Dissected) -> None:
    expected = sorted((m.transport, m.client, m.id, m.qname, m.rcode, RCODES[m.rcode], list(m.answers), m.latency_us)
                      for m in tshark_dns(capture.path) if m.response and m.rcode is not None)
    for transport in ("udp", "tcp"):  # the fixture's four outcomes, on each transport, as tshark sees them
        assert {e[4] for e in expected if e[0] == transport} == set(RCODES)
    assert any(e[6] for e in expected)
    actual = sorted((r["transport"], (r["src_ip"], r["src_port"]), r["transaction_id"], r["qname"], r["rcode"],
                     r["rcode_name"], r["answers"], r["latency_us"])
                    for r in dns_rows(capture) if r["rcode"] is not None)
    assert actual == expected


def test_unanswered_dns_queries_have_a_null_rcode_on_both_transports(capture: Dissected) -> None:
    expected = sorted((m.transport, m.qname, m.id) for m in tshark_dns(capture.path)
                      if not m.response and not m.answered)
    silent = [name for name, rcode in traffic.DNS_ANSWERS.items() if rcode is None]
    assert sorted((t, q) for t, q, _ in expected) == sorted((t, q) for t in ("tcp", "udp") for q in silent)
    rows = [r for r in dns_rows(capture) if r["rcode"] is None]
    assert sorted((r["transport"], r["qname"], r["transaction_id"]) for r in rows) == expected
    assert all(r["latency_us"] is None and r["rcode_name"] is None for r in rows)


def test_dns_over_tcp_pairs_pipelined_queries_with_their_responses(capture: Dissected) -> None:
    """Several queries on one TCP connection, sent before any response: each row carries its own response."""
    messages = tshark_dns(capture.path)
    responses = {(m.client, m.id): m for m in messages if m.response and m.transport == "tcp"}
    rows = [r for r in dns_rows(capture) if r["transport"] == "tcp"]
    assert len({r["conn_id"] for r in rows}) == 1 and len(rows) == len(traffic.DNS_ANSWERS)
    for row in rows:
        response = responses.get(((row["src_ip"], row["src_port"]), row["transaction_id"]))
        assert (row["rcode"], row["qname"]) == ((response.rcode, response.qname) if response else (None, row["qname"]))


# --- HTTP -----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TsharkHttp:
    requests: list[tuple[str, str, bool]]  # (method, full URI, pipelined: in one frame with other requests)
    responses: list[tuple[str, int, bool]]  # (full URI of the request tshark pairs it with, status, pipelined)


@functools.cache
def tshark_http(path: Path, port: int = traffic.HTTP_PORT, *options: str) -> TsharkHttp:
    """tshark 4.0 pairs responses with requests per frame: when one frame carries several pipelined requests,
    every response names the last of them (and has no http.request_in). Responses to such frames are marked
    ``pipelined``: only their statuses are compared, their pairing is checked against what the client read."""
    requested: list[tuple[str, str, str]] = []
    requests_per_frame: Counter[str] = Counter()
    answered: list[tuple[str, int, str | None]] = []
    for layers in tshark_layers(path, f"http && tcp.port == {port}", "frame http", "-2", *options):
        frame = one(layers["frame"], "frame.number")
        for pdu in pdus(layers, "http"):
            if every(pdu, "http.request.method"):
                requested.append((one(pdu, "http.request.method"), one(pdu, "http.request.full_uri"), frame))
                requests_per_frame[frame] += 1
            if every(pdu, "http.response.code"):
                request_frame = every(pdu, "http.request_in")
                answered.append((one(pdu, "http.response_for.uri"), int(one(pdu, "http.response.code")),
                                 str(request_frame[0]) if request_frame else None))
    requests = [(method, uri, requests_per_frame[frame] > 1) for method, uri, frame in requested]
    responses = [(uri, status, request_frame is None or requests_per_frame[request_frame] > 1)
                 for uri, status, request_frame in answered]
    return TsharkHttp(requests, responses)


def http_rows(capture: Dissected, port: int = traffic.HTTP_PORT) -> list[dict[str, Any]]:
    return [row for row in capture.tables["http"].to_pylist() if row["dst_port"] == port]


def full_uri(row: dict[str, Any]) -> str:
    return f"http://{row['host']}{row['path']}"


def test_http_requests_match_tshark(capture: Dissected) -> None:
    requests = tshark_http(capture.path).requests
    assert len(requests) == len(traffic.HTTP_KEEPALIVE) + len(traffic.HTTP_PIPELINED)
    assert sum(pipelined for _, _, pipelined in requests) == len(traffic.HTTP_PIPELINED)
    assert sorted((r["method"], full_uri(r)) for r in http_rows(capture)) == \
        sorted((method, uri) for method, uri, _ in requests)


def test_http_statuses_and_pairing_match_tshark_including_pipelining(captures: traffic.KernelCaptures,
                                                                     capture: Dissected) -> None:
    responses = tshark_http(capture.path).responses
    assert {status // 100 for _, status, _ in responses} == {2, 4, 5}
    assert sum(pipelined for _, _, pipelined in responses) == len(traffic.HTTP_PIPELINED)
    rows = [r for r in http_rows(capture) if r["status"] is not None]
    pipelined_uris = {uri for _, uri, pipelined in tshark_http(capture.path).requests if pipelined}
    assert sorted((full_uri(r), r["status"]) for r in rows if full_uri(r) not in pipelined_uris) == \
        sorted((uri, status) for uri, status, pipelined in responses if not pipelined)
    assert sorted(r["status"] for r in rows if full_uri(r) in pipelined_uris) == \
        sorted(status for _, status, pipelined in responses if pipelined)
    # Every request of the fixture was answered, with the statuses its client read.
    assert sorted(r["status"] for r in http_rows(capture)) == sorted(captures.client["http_statuses"])


def test_pipelined_requests_share_one_connection_in_order(capture: Dissected) -> None:
    rows = [r for r in http_rows(capture) if r["host"] == traffic.HTTP_PIPELINED_HOST]
    assert len({r["conn_id"] for r in rows}) == 1
    rows.sort(key=lambda r: r["ts_ns"])
    assert [r["path"] for r in rows] == [path for _, path in traffic.HTTP_PIPELINED]
    assert [r["status"] for r in rows] == [traffic.HTTP_STATUS.get(path, 404) for _, path in traffic.HTTP_PIPELINED]
    assert all(r["response_complete"] for r in rows)


# Seen by the receiver (client side), a reordered or lost response segment leaves a hole until the retransmission
# or the late segment fills it: apps.TcpDirection holds the segments after the hole until it fills.
@pytest.mark.parametrize("name", ["server_side", "client_side"])
def test_http_through_loss_and_reordering_keeps_every_exchange(name: str, captures: traffic.KernelCaptures,
                                                               dissected: dict[str, Dissected]) -> None:
    capture = dissected[name]
    lossy = [(stream_id, s) for stream_id, s in tshark_streams(capture.path).items()
             if s.key[0] == "tcp" and s.key[4] == traffic.LOSSY_HTTP_PORT]
    assert len(lossy) == 1
    impairments = tshark_flag_counts(capture.path).get(lossy[0][0], Counter())
    assert impairments["tcp.analysis.retransmission"] + impairments["tcp.analysis.out_of_order"] > 0, \
        "the bridge impaired the connection (tshark's view)"

    rows = sorted(http_rows(capture, traffic.LOSSY_HTTP_PORT), key=lambda r: r["ts_ns"])
    expected = [(path, status) for (_, path), status in zip(traffic.LOSSY_HTTP_REQUESTS,
                                                             captures.client["lossy_http_statuses"], strict=True)]
    assert [(r["path"], r["status"]) for r in rows] == expected
    assert all(r["response_complete"] for r in rows)
    assert [r["response_bytes"] for r in rows if r["path"].startswith("/big/")] == \
        [traffic.LOSSY_BODY_BYTES] * (len(expected) - 1)
    # tshark agrees once it, too, reassembles out-of-order segments.
    reference = tshark_http(capture.path, traffic.LOSSY_HTTP_PORT, "-o", "tcp.reassemble_out_of_order:TRUE")
    assert sorted((full_uri(r), r["status"]) for r in rows) == sorted((u, s) for u, s, _ in reference.responses)


# --- TLS ------------------------------------------------------------------------------------------------------------


@dataclass
class TlsHandshake:
    sni: str | None = None
    alpn: list[str] | None = None
    server_hello: bool = False
    version: str | None = None
    alerts: list[tuple[int, int]] | None = None


@functools.cache
def tshark_tls(path: Path) -> dict[str, TlsHandshake]:
    """Per tcp.stream: what tshark read of the handshake in the clear."""
    handshakes: dict[str, TlsHandshake] = {}
    for layers in tshark_layers(path, "tls.handshake.type == 1 || tls.handshake.type == 2 || tls.alert_message",
                                "tcp tls"):
        handshake = handshakes.setdefault(one(layers["tcp"], "tcp.stream"), TlsHandshake())
        tls = layers["tls"]
        types = every(tls, "tls.handshake.type")
        if "1" in types:
            handshake.sni = one(tls, "tls.handshake.extensions_server_name")
            handshake.alpn = every(tls, "tls.handshake.extensions_alpn_str")
        if "2" in types:
            handshake.server_hello = True
            selected = every(tls, "tls.handshake.extensions.supported_version")
            handshake.version = str(selected[0] if selected else every(tls, "tls.handshake.version")[0])
        levels, descriptions = every(tls, "tls.alert_message.level"), every(tls, "tls.alert_message.desc")
        if descriptions:
            alerts = [(int(level), int(description)) for level, description in zip(levels, descriptions, strict=True)]
            handshake.alerts = (handshake.alerts or []) + alerts
    return handshakes


def tls_rows(capture: Dissected) -> dict[str, dict[str, Any]]:
    rows = capture.tables["tls"].to_pylist()
    assert len({r["sni"] for r in rows}) == len(rows)
    return {r["sni"]: r for r in rows}


def test_tls_client_hellos_sni_and_alpn_match_tshark(capture: Dissected) -> None:
    expected = {h.sni: h.alpn for h in tshark_tls(capture.path).values() if h.sni is not None}
    assert sorted(expected) == sorted(case[0] for case in traffic.TLS_CASES)
    assert {sni: row["alpn"] for sni, row in tls_rows(capture).items()} == expected


def test_tls_server_hellos_versions_and_alerts_match_tshark(capture: Dissected) -> None:
    names = {0x0303: "TLS 1.2", 0x0304: "TLS 1.3"}
    handshakes = {str(h.sni): h for h in tshark_tls(capture.path).values()}
    rows = tls_rows(capture)
    assert sorted(handshakes) == sorted(rows)
    assert sum(h.server_hello for h in handshakes.values()) == sum(r["cipher"] is not None for r in rows.values())
    for sni, handshake in handshakes.items():
        row = rows[sni]
        if handshake.server_hello:
            assert row["version"] == names[int(str(handshake.version), 16)], sni
        alerts = handshake.alerts or []
        assert (row["alert"] is not None) == bool(alerts), sni
        if alerts:
            level, description = alerts[0]
            assert row["alert"] == f"{'fatal' if level == 2 else 'warning'}:{traffic_alert_name(description)}", sni
    # tshark reads both plaintext alerts the failures send: unknown_ca (48) and protocol_version (70).
    assert sorted(a[1] for h in handshakes.values() for a in h.alerts or []) == [48, 70]


def traffic_alert_name(description: int) -> str:
    # RFC 8446 6.2 names of the two alerts the fixture provokes; anything else shows up as a mismatch.
    return {48: "unknown_ca", 70: "protocol_version"}.get(description, str(description))


def test_tls_established_and_failed_match_what_the_client_saw(captures: traffic.KernelCaptures,
                                                              capture: Dissected) -> None:
    rows = tls_rows(capture)
    assert {sni: row["established"] for sni, row in rows.items()} == \
        {sni: outcome == "established" for sni, outcome in captures.client["tls"].items()}


def test_the_batched_path_equals_the_per_packet_reference(capture: Dissected) -> None:
    """dissect.tcp.batch folds clean segments in bulk; on real kernel traffic it must give what the reference gives."""
    tracker = ConnectionTracker("node-a", AppTracker("node-a"))
    with capture.path.open("rb") as stream:
        tracker.feed_runs(open_capture(stream).runs())
    assert tracker.app is not None
    assert {**tracker.stats.as_dict(), **tracker.app.stats.as_dict()} == capture.stats
    for name, table in {"connections": tracker.finish(), **tracker.app_tables()}.items():
        assert table.equals(capture.tables[name]), name


@pytest.mark.skipif(native.extension() is None, reason="the freezeframe_native extension is not built")
def test_the_compiled_core_equals_the_reference(capture: Dissected) -> None:
    """The compiled core (dissect.native) gives the reference's tables, problems and counters, on the whole capture
    and on the capture cut into small segments (TCP and application state across every cut)."""
    body = capture.path.read_bytes()
    assert differences([body]) == []
    with capture.path.open("rb") as stream:
        reader = PcapReader(stream)
        link_type, packets = reader.link_type, list(reader)
    step = max(len(packets) // 40, 1)
    segments = [encode_global_header(link_type, 262_144) + b"".join(encode_record(p.ts_ns, p.data, p.orig_len)
                                                                    for p in packets[start:start + step])
                for start in range(0, len(packets), step)]
    assert differences(segments) == []


def test_every_app_row_joins_a_connection(capture: Dissected) -> None:
    conn_ids = set(capture.tables["connections"]["conn_id"].to_pylist())
    for table in ("dns", "http", "tls"):
        assert set(capture.tables[table]["conn_id"].to_pylist()) <= conn_ids, table


def test_app_tables_do_not_depend_on_segment_boundaries(capture: Dissected) -> None:
    """The same capture fed as many small segments (every connection crosses boundaries) gives the same rows."""
    with capture.path.open("rb") as stream:
        reader = PcapReader(stream)
        link_type, packets = reader.link_type, list(reader)
    tracker = ConnectionTracker("node-a", AppTracker("node-a"))
    for start in range(0, len(packets), SMALL_SEGMENT_PACKETS):
        tracker.feed(link_type, packets[start:start + SMALL_SEGMENT_PACKETS])
    for name, table in tracker.app_tables().items():
        assert table.equals(capture.tables[name]), name
