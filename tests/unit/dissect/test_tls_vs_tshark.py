"""The tls table against tshark on the bundled sample, and malformed TLS that is counted, never raised.

Expected values come from tshark run here or from the sample's construction, never from the table.
"""

from __future__ import annotations

import pyarrow as pa
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from freezeframe.capture.pcapio import LINKTYPE_ETHERNET, Packet
from freezeframe.contracts.schemas import TLS
from freezeframe.dissect import AppTracker, ConnectionTracker
from freezeframe.dissect.tls import ClientHello, parse, parse_alert, parse_client_hello, parse_server_hello

from .conftest import TsharkFields

# RFC 8446 appendix B.4 and B.3.1 / RFC 5246 A.5: the values the sample uses, by their registered names.
VERSIONS = {0x0303: "TLS 1.2", 0x0304: "TLS 1.3"}
CIPHERS = {0x1301: "TLS_AES_128_GCM_SHA256", 0xC02F: "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"}
ALERTS = {40: "handshake_failure"}
T0 = 1_767_225_600 * 1_000_000_000


def test_client_hellos_match_tshark(sample_tables: dict[str, pa.Table], tshark_fields: TsharkFields) -> None:
    frames = tshark_fields("tls.handshake.type == 1", ["tcp.srcport", "tls.handshake.extensions_server_name",
                                                       "tls.handshake.extensions_alpn_str",
                                                       "tls.handshake.extensions.supported_version",
                                                       "tls.handshake.version"])
    # Offered versions: supported_versions without GREASE (RFC 8701), else the legacy_version.
    expected = sorted((int(port), sni, alpn.split(","),
                       [VERSIONS[int(v, 16)] for v in (versions or legacy).split(",") if int(v, 16) in VERSIONS])
                      for port, sni, alpn, versions, legacy in frames)
    assert len(expected) >= 3

    rows = sample_tables["tls"].to_pylist()
    assert sorted((r["src_port"], r["sni"], r["alpn"], r["client_versions"]) for r in rows) == expected


def test_server_hellos_give_version_and_cipher_like_tshark(sample_tables: dict[str, pa.Table],
                                                           tshark_fields: TsharkFields) -> None:
    frames = tshark_fields("tls.handshake.type == 2", ["tcp.dstport", "tls.handshake.version",
                                                       "tls.handshake.extensions.supported_version",
                                                       "tls.handshake.ciphersuite"])
    expected = sorted((int(port), VERSIONS[int(selected or legacy, 16)], CIPHERS[int(cipher, 16)])
                      for port, legacy, selected, cipher in frames)
    assert {"TLS 1.2", "TLS 1.3"} <= {e[1] for e in expected}

    rows = [r for r in sample_tables["tls"].to_pylist() if r["established"]]
    assert sorted((r["src_port"], r["version"], r["cipher"]) for r in rows) == expected


def test_a_fatal_alert_instead_of_a_server_hello_is_a_failed_handshake(sample_tables: dict[str, pa.Table],
                                                                      tshark_fields: TsharkFields) -> None:
    frames = tshark_fields("tls.alert_message", ["tcp.dstport", "tls.alert_message.level", "tls.alert_message.desc"])
    assert frames, "the sample must hold a TLS alert"
    expected = sorted((int(port), f"{'fatal' if level == '2' else 'warning'}:{ALERTS[int(desc)]}")
                      for port, level, desc in frames)

    rows = [r for r in sample_tables["tls"].to_pylist() if r["alert"] is not None]
    assert sorted((r["src_port"], r["alert"]) for r in rows) == expected
    assert all(not r["established"] and r["alert_from"] == "server" and r["cipher"] is None for r in rows)


def test_rows_conform_to_the_schema_and_join_their_connection(sample_tables: dict[str, pa.Table]) -> None:
    table = sample_tables["tls"]
    assert table.schema.equals(TLS, check_metadata=True)
    connections = {r["conn_id"]: r for r in sample_tables["connections"].to_pylist()}
    for row in table.to_pylist():
        conn = connections[row["conn_id"]]
        assert (row["src_ip"], row["src_port"], row["dst_ip"], row["dst_port"]) == (
            conn["src_ip"], conn["src_port"], conn["dst_ip"], conn["dst_port"])


# --- malformed input: counted, never raised -------------------------------------------------------------------


def test_parsers_refuse_short_and_inconsistent_bodies() -> None:
    assert parse_client_hello(b"") is None
    assert parse_client_hello(b"\x03\x03" + bytes(32) + b"\x20") is None  # session id longer than the body
    assert parse_server_hello(b"\x03\x03" + bytes(32)) is None
    assert parse_alert(b"\x02") is None
    assert parse_alert(bytes(24)) is None  # an encrypted alert is longer than two bytes
    hello = b"\x03\x03" + bytes(32) + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00"
    parsed = parse_client_hello(hello)
    assert parsed is not None and parsed.server_name is None and parsed.alpn == ()
    assert parse_client_hello(hello + b"\x00\x08\x00\x00\x00\x10") is None  # extension block overruns
    assert parse(b"\x01" + len(hello).to_bytes(3, "big") + hello) == ClientHello(0x0303, None, (), ())
    assert parse(b"\x01" + (len(hello) + 1).to_bytes(3, "big") + hello) is None  # length disagrees
    assert parse(b"\x0b\x00\x00\x00") is None  # a Certificate is not described


def test_garbage_after_a_handshake_record_header_is_counted_not_raised() -> None:
    payloads = [
        b"\x16\x03\x01\x00\x08\x01\x00\x00\x04\xff\xff\xff\xff",  # ClientHello far too short
        b"\x16\x03\x01\xff\xff" + bytes(20),  # record longer than TLS allows
        b"\x16\x03\x01\x00\x04\x01\xff\xff\xff",  # handshake length beyond any record
    ]
    frames = []
    for i, payload in enumerate(payloads):
        tcp = TCP(sport=50000 + i, dport=443, flags="PA", seq=1, ack=1)
        frame = bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / tcp / payload)
        frames.append(Packet(T0 + i, len(frame), frame))
    app = AppTracker("n")
    tracker = ConnectionTracker("n", app)
    tracker.feed(LINKTYPE_ETHERNET, frames)

    assert tracker.app_tables()["tls"].num_rows == 0
    assert app.stats.tls_malformed == 3


def test_a_server_hello_seen_first_is_attributed_to_the_server(sample_packets: tuple[int, list[Packet]]) -> None:
    link_type, packets = sample_packets
    # Drop every ClientHello of the sample (handshake type 1 right after a TLS record header).
    # The sample's frames are Ethernet + IPv4 + TCP without options: the payload starts at byte 54.
    kept = [p for p in packets if p.data[54:56] != b"\x16\x03" or p.data[59:60] != b"\x01"]
    assert len(kept) < len(packets)
    app = AppTracker("n")
    tracker = ConnectionTracker("n", app)
    tracker.feed(link_type, kept)

    rows = tracker.app_tables()["tls"].to_pylist()

    # From samples.py: two handshakes get a ServerHello (TLS 1.2 and 1.3), sent by the API service on 443.
    assert sorted((r["dst_port"], r["sni"], r["version"], r["established"]) for r in rows) == [
        (443, None, "TLS 1.2", True), (443, None, "TLS 1.3", True)]
