"""The dns table against tshark on the bundled sample, and malformed DNS that is counted, never raised.

Expected values come from tshark run here or from the sample's construction (samples.py), never from the table.
"""

from __future__ import annotations

import struct
from decimal import Decimal

import pyarrow as pa
from scapy.layers.dns import DNS, DNSQR
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

from freezeframe.capture.pcapio import LINKTYPE_ETHERNET, Packet
from freezeframe.contracts.schemas import DNS as DNS_SCHEMA
from freezeframe.dissect import AppTracker, ConnectionTracker
from freezeframe.dissect.dns import parse

from .conftest import TsharkFields, dissect

# RFC 1035 4.1.1 and RFC 2136: the codes the sample is built to contain, by name.
RFC_RCODES = {0: "NOERROR", 2: "SERVFAIL", 3: "NXDOMAIN", 5: "REFUSED"}
RFC_TYPES = {1: "A", 28: "AAAA"}
ENDPOINTS = ["ip.src", "udp.srcport", "tcp.srcport", "ip.dst", "udp.dstport", "tcp.dstport"]
T0 = 1_767_225_600 * 1_000_000_000


def endpoints(row: list[str]) -> tuple[str, int, str, int]:
    src, usport, tsport, dst, udport, tdport = row[:6]
    return src, int(usport or tsport), dst, int(udport or tdport)


def test_queries_match_tshark(sample_tables: dict[str, pa.Table], tshark_fields: TsharkFields) -> None:
    frames = tshark_fields("dns.flags.response == 0", [*ENDPOINTS, "dns.id", "dns.qry.name", "dns.qry.type"])
    expected = sorted((*endpoints(f), int(f[6], 0), f[7], RFC_TYPES[int(f[8])]) for f in frames)
    assert len(expected) >= 8

    rows = sample_tables["dns"].to_pylist()
    actual = sorted((r["src_ip"], r["src_port"], r["dst_ip"], r["dst_port"], r["transaction_id"], r["qname"],
                     r["qtype"]) for r in rows)
    assert actual == expected


def test_responses_rcodes_answers_and_latency_match_tshark(sample_tables: dict[str, pa.Table],
                                                           tshark_fields: TsharkFields) -> None:
    frames = tshark_fields("dns.flags.response == 1",
                           [*ENDPOINTS, "dns.id", "dns.qry.name", "dns.flags.rcode", "dns.a", "dns.aaaa", "dns.time"])
    expected = sorted(
        (dst, dport, src, sport, int(f[6], 0), f[7], int(f[8]), RFC_RCODES[int(f[8])],
         [a for a in (f[9].split(",") + f[10].split(",")) if a], int(Decimal(f[11]) * 1_000_000))
        for f in frames for src, sport, dst, dport in [endpoints(f)])
    # The sample is built to hold these outcomes (checked on tshark's side, so a fixture change cannot drop one).
    assert {e[6] for e in expected} == set(RFC_RCODES)

    rows = [r for r in sample_tables["dns"].to_pylist() if r["rcode"] is not None]
    actual = sorted((r["src_ip"], r["src_port"], r["dst_ip"], r["dst_port"], r["transaction_id"], r["qname"],
                     r["rcode"], r["rcode_name"], r["answers"], r["latency_us"]) for r in rows)
    assert actual == expected


def test_unanswered_queries_are_kept_with_a_null_rcode(sample_tables: dict[str, pa.Table],
                                                       tshark_fields: TsharkFields) -> None:
    # Two passes: a query learns about its response (dns.response_in) only on the second.
    frames = tshark_fields("dns.flags.response == 0 && !dns.response_in", ["dns.qry.name"], "-2")
    assert frames, "the sample must hold an unanswered query"

    rows = [r for r in sample_tables["dns"].to_pylist() if r["rcode"] is None]
    assert sorted(r["qname"] for r in rows) == sorted(f[0] for f in frames)
    assert all(r["latency_us"] is None and r["answers"] is None and r["rcode_name"] is None for r in rows)


def test_dns_over_tcp_is_split_by_its_length_prefix(sample_tables: dict[str, pa.Table],
                                                    tshark_fields: TsharkFields) -> None:
    frames = tshark_fields("tcp && dns.flags.response == 0", ["dns.qry.name", "dns.id"])
    assert frames, "the sample must hold DNS over TCP"

    rows = [r for r in sample_tables["dns"].to_pylist() if r["transport"] == "tcp"]
    assert sorted((r["qname"], r["transaction_id"]) for r in rows) == sorted((f[0], int(f[1], 0)) for f in frames)
    assert all(r["rcode"] is not None for r in rows)


def test_rows_conform_to_the_schema_and_join_their_connection(sample_tables: dict[str, pa.Table]) -> None:
    table = sample_tables["dns"]
    assert table.schema.equals(DNS_SCHEMA, check_metadata=True)
    connections = {r["conn_id"]: r for r in sample_tables["connections"].to_pylist()}
    for row in table.to_pylist():
        conn = connections[row["conn_id"]]
        assert {(row["src_ip"], row["src_port"]), (row["dst_ip"], row["dst_port"])} == {
            (conn["src_ip"], conn["src_port"]), (conn["dst_ip"], conn["dst_port"])}
        assert conn["proto"] == row["transport"]


def test_segments_split_anywhere_give_the_same_table(sample_packets: tuple[int, list[Packet]],
                                                     sample_tables: dict[str, pa.Table]) -> None:
    link_type, packets = sample_packets
    chunks = [packets[i:i + 7] for i in range(0, len(packets), 7)]
    assert dissect(link_type, chunks)["dns"].equals(sample_tables["dns"], check_metadata=True)


# --- malformed input: counted, never raised -------------------------------------------------------------------


def test_parse_refuses_malformed_messages() -> None:
    good = bytes(DNS(id=7, rd=1, qd=DNSQR(qname="a.example.", qtype="A")))
    assert parse(good) is not None
    loop = struct.pack("!HHHHHH", 1, 0, 1, 0, 0, 0) + b"\xc0\x0c" + b"\x00\x01\x00\x01"  # a pointer to itself
    assert parse(loop) is None
    assert parse(b"") is None
    assert parse(good[:11]) is None
    assert parse(good[:-3]) is None  # question cut
    answer_claimed = bytearray(good)
    answer_claimed[7] = 1  # ANCOUNT 1, but no answer follows
    assert parse(bytes(answer_claimed)) is None


def test_garbage_on_port_53_is_counted_not_raised() -> None:
    frames = []
    for i, payload in enumerate([b"", b"\x00", b"\xff" * 40, bytes(range(256)), b"\x00\x01\x00\x00\x00\x01" * 3]):
        frame = bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=5000 + i, dport=53) / payload)
        frames.append(Packet(T0 + i, len(frame), frame))
    # DNS over TCP with a length prefix that promises more than ever arrives, then a garbage message.
    stream = b"\x00\x05abc" + b"\x00\x03xyz"
    tcp = bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=6000, dport=53, flags="PA", seq=1) / stream)
    frames.append(Packet(T0 + 10, len(tcp), tcp))
    app = AppTracker("n")
    tracker = ConnectionTracker("n", app)
    tracker.feed(LINKTYPE_ETHERNET, frames)

    assert tracker.app_tables()["dns"].num_rows == 0
    assert app.stats.dns_malformed == 5  # the empty datagram carries no message; four garbage ones, one from TCP


def test_the_application_tracker_leaves_the_connections_table_unchanged(
        sample_packets: tuple[int, list[Packet]], sample_tables: dict[str, pa.Table]) -> None:
    link_type, packets = sample_packets
    alone = ConnectionTracker("node-a")
    alone.feed(link_type, packets)
    assert alone.finish().equals(sample_tables["connections"], check_metadata=True)
    assert alone.app_tables() == {}
