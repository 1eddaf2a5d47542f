"""Time chunks: a window dissected as parallel chunks and merged at the edges equals the window dissected at once.

The capture is built here so that connections cross chunk edges in every way the merge must handle: long-lived
TCP with data across several edges, a connection silent for a whole chunk, a continuation first seen from the
responder (orientation flip), a handshake split by an edge, port reuse after a close, a UDP flow across edges, a
UDP flow split by the idle timeout, and packets stamped outside the planned window. tshark on the same file
confirms the conversation count.
"""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import pyarrow as pa
import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

from freezeframe.capture.pcapio import LINKTYPE_ETHERNET, PcapWriter
from freezeframe.contracts.schemas import CONNECTIONS
from freezeframe.dissect.chunks import EXACT_COLUMNS, MERGE_RULES, merge_connections, plan_chunks
from freezeframe.dissect.job import SegmentSource, dissect_chunked, dissect_segments
from freezeframe.dissect.problems import SegmentRef

BASE_NS = 1_767_225_600 * 1_000_000_000
SECOND = 1_000_000_000
CHUNK_NS = 10 * SECOND
TSHARK = shutil.which("tshark")


class TcpPeer:
    """Sequence numbers of one TCP connection, so the built segments are consistent."""

    def __init__(self, client: tuple[str, int], server: tuple[str, int], isn: int = 1000) -> None:
        self.client, self.server = client, server
        self.seq = {"c": isn, "s": 50_000}

    def frame(self, side: str, flags: str, payload: bytes = b"") -> bytes:
        (src, sport), (dst, dport) = (self.client, self.server) if side == "c" else (self.server, self.client)
        other = "s" if side == "c" else "c"
        ack = self.seq[other] if "A" in flags else 0
        packet = Ether() / IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags=flags, seq=self.seq[side],
                                                      ack=ack, window=65535) / payload
        self.seq[side] += len(payload) + (1 if "S" in flags or "F" in flags else 0)
        return bytes(packet)


def udp(src: tuple[str, int], dst: tuple[str, int], payload: bytes) -> bytes:
    return bytes(Ether() / IP(src=src[0], dst=dst[0]) / UDP(sport=src[1], dport=dst[1]) / payload)


def build_capture() -> bytes:
    frames: list[tuple[float, bytes]] = []

    def at(t: float, frame: bytes) -> None:
        frames.append((t, frame))

    def handshake(peer: TcpPeer, t: float) -> None:
        at(t, peer.frame("c", "S"))
        at(t + 0.001, peer.frame("s", "SA"))
        at(t + 0.002, peer.frame("c", "A"))

    def close(peer: TcpPeer, t: float) -> None:
        at(t, peer.frame("c", "FA"))
        at(t + 0.001, peer.frame("s", "FA"))
        at(t + 0.002, peer.frame("c", "A"))

    long_lived = TcpPeer(("10.0.0.1", 40000), ("10.0.0.2", 80))
    handshake(long_lived, 0.5)
    for second in range(1, 25):
        at(second + 0.1, long_lived.frame("c", "PA", b"ping %d" % second))
        at(second + 0.2, long_lived.frame("s", "PA", b"pong %d" % second))
    close(long_lived, 25.5)

    silent = TcpPeer(("10.0.0.1", 40010), ("10.0.0.2", 8080))
    handshake(silent, 1.0)
    at(2.0, silent.frame("c", "PA", b"hello"))
    at(2.1, silent.frame("s", "A"))
    at(35.0, silent.frame("c", "PA", b"still there?"))  # nothing in [10, 30): two whole chunks of silence
    at(35.1, silent.frame("s", "PA", b"yes"))
    close(silent, 36.0)

    flipped = TcpPeer(("10.0.0.1", 40020), ("10.0.0.4", 443))
    handshake(flipped, 8.0)
    at(12.0, flipped.frame("s", "PA", b"server speaks first after the edge"))
    at(12.1, flipped.frame("c", "A"))
    at(13.0, flipped.frame("c", "RA"))

    split_handshake = TcpPeer(("10.0.0.5", 40030), ("10.0.0.2", 80))
    at(19.9995, split_handshake.frame("c", "S"))
    at(20.0005, split_handshake.frame("s", "SA"))
    at(20.001, split_handshake.frame("c", "A"))
    at(20.5, split_handshake.frame("c", "PA", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
    at(20.6, split_handshake.frame("s", "PA", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))

    reused = TcpPeer(("10.0.0.1", 40001), ("10.0.0.2", 80), isn=7000)
    handshake(reused, 3.0)
    close(reused, 4.0)
    again = TcpPeer(("10.0.0.1", 40001), ("10.0.0.2", 80), isn=900_000)  # new ISN: a new conversation
    handshake(again, 15.0)
    at(16.0, again.frame("c", "PA", b"second life"))
    close(again, 17.0)

    for t in (2.0, 12.0, 22.0, 42.0):  # one UDP conversation across four chunks
        at(t, udp(("10.0.0.1", 5353), ("10.0.0.3", 53), b"q%.0f" % t))
        at(t + 0.01, udp(("10.0.0.3", 53), ("10.0.0.1", 5353), b"a%.0f" % t))
    at(5.0, udp(("10.0.0.6", 7000), ("10.0.0.7", 7001), b"first"))
    at(5.0 + 130, udp(("10.0.0.6", 7000), ("10.0.0.7", 7001), b"after the idle timeout"))
    # Stamped outside the planned window (clock skew): the open-ended first and last chunks still count them.
    at(-1.0, udp(("10.0.0.8", 1000), ("10.0.0.9", 2000), b"early"))
    at(150.0, udp(("10.0.0.8", 1001), ("10.0.0.9", 2000), b"late"))

    buffer = io.BytesIO()
    writer = PcapWriter(buffer, LINKTYPE_ETHERNET)
    for t, frame in sorted(frames, key=lambda item: item[0]):
        writer.write(BASE_NS + round(t * SECOND), frame)
    return buffer.getvalue()


def source(data: bytes) -> SegmentSource:
    return SegmentSource(SegmentRef("capture.pcap", None, BASE_NS, BASE_NS + 140 * SECOND), fetch=lambda: data)


def by_conn_id(table: pa.Table) -> dict[str, dict[str, object]]:
    return {row["conn_id"]: row for row in table.to_pylist()}


def test_every_connections_column_has_a_merge_rule() -> None:
    assert set(MERGE_RULES) == set(CONNECTIONS.names)
    assert EXACT_COLUMNS <= set(CONNECTIONS.names)


def test_chunks_cover_the_window_without_overlap() -> None:
    chunks = plan_chunks(100, 1_000, 300)
    assert [(c.start_ns, c.end_ns) for c in chunks] == [(100, 400), (400, 700), (700, 1_000)]


def test_chunked_equals_unchunked_on_connections_crossing_chunk_edges(tmp_path: Path) -> None:
    data = build_capture()
    path = tmp_path / "chunks.pcap"
    path.write_bytes(data)
    on_disk = SegmentSource(SegmentRef(str(path), None, BASE_NS, BASE_NS + 140 * SECOND), path=path)
    whole = dissect_segments("node-a", [on_disk])
    # Worker processes read the segment from disk; a pool of two proves the chunks are independent.
    chunked = dissect_chunked("node-a", [on_disk], plan_chunks(BASE_NS, BASE_NS + 140 * SECOND, CHUNK_NS),
                              workers=2)
    expected, merged = by_conn_id(whole.tables["connections"]), by_conn_id(chunked.tables["connections"])
    assert chunked.stats["chunks"] == 14
    assert chunked.stats["chunk_rows_merged"] >= 8  # rows that crossed an edge really were merged
    assert set(merged) == set(expected)  # the same conn_id either way
    for conn_id, row in expected.items():
        for column in EXACT_COLUMNS:
            assert merged[conn_id][column] == row[column], (conn_id, column, row["src_port"])
    # Independent reference: tshark's conversations of the same file.
    if TSHARK is not None:
        out = subprocess.run([TSHARK, "-n", "-r", str(path), "-q", "-z", "conv,tcp", "-z", "conv,udp"], check=True,
                             capture_output=True, text=True).stdout
        conversations = sum(1 for line in out.splitlines() if "<->" in line)
        # tshark never splits UDP by idle time; the tracker does (one extra row for the 130 s gap).
        assert len(merged) == conversations + 1
    # Every packet was counted exactly once.
    assert chunked.stats["packets"] == whole.stats["packets"]
    # Application rows point at merged connections.
    for name, table in chunked.tables.items():
        if name != "connections" and table.num_rows:
            assert set(table.column("conn_id").to_pylist()) <= set(merged), name


def test_merge_of_a_row_split_in_two_sums_and_reorients() -> None:
    data = build_capture()
    chunks = plan_chunks(BASE_NS, BASE_NS + 140 * SECOND, 10 * SECOND)
    parts = [dissect_segments("node-a", [source(data)], chunk).tables["connections"] for chunk in chunks[:2]]
    flipped_late = [r for r in parts[1].to_pylist() if r["src_port"] == 443]
    assert flipped_late, "the continuation of the flipped connection is seen from the server in chunk 2"
    result = merge_connections("node-a", parts)
    row = next(r for r in result.table.to_pylist() if r["dst_port"] == 443)
    assert (row["src_ip"], row["src_port"]) == ("10.0.0.1", 40020)
    # client: SYN, ACK (chunk 1), ACK, RST (chunk 2); server: SYN-ACK (chunk 1), data (chunk 2)
    assert row["packets_out"] == 2 + 2 and row["packets_in"] == 1 + 1
    assert row["completeness"] == 1 | 2 | 4 | 8 | 32
    assert result.conn_ids[flipped_late[0]["conn_id"]] == row["conn_id"]


@pytest.mark.parametrize("chunk_s", [7, 23])
def test_other_chunk_lengths_agree_too(chunk_s: int) -> None:
    data = build_capture()
    whole = by_conn_id(dissect_segments("node-a", [source(data)]).tables["connections"])
    chunked = dissect_chunked("node-a", [source(data)],
                              plan_chunks(BASE_NS, BASE_NS + 140 * SECOND, chunk_s * SECOND), workers=1)
    merged = by_conn_id(chunked.tables["connections"])
    assert set(merged) == set(whole)
    for conn_id, row in whole.items():
        assert {c: merged[conn_id][c] for c in EXACT_COLUMNS} == {c: row[c] for c in EXACT_COLUMNS}


def test_retransmission_rate_counts_the_segments_of_a_part_without_retransmissions() -> None:
    """Three segments before the edge, two and a late retransmission after it: 1 retransmission in 6 segments.

    A part without retransmissions has a rate of 0, which hides how many segments it carried; the merge takes the
    per-part segment counts from the trackers instead.
    """
    peer = TcpPeer(("10.0.0.1", 40100), ("10.0.0.2", 80))
    frames = [(0.5, peer.frame("c", "S")), (0.501, peer.frame("s", "SA")), (0.502, peer.frame("c", "A"))]
    for t in (1.0, 2.0, 3.0, 11.0, 12.0):
        frames.append((t, peer.frame("c", "PA", b"x" * 100)))
    peer.seq["c"] -= 100
    frames.append((14.0, peer.frame("c", "PA", b"x" * 100)))  # the 12.0 segment again, 2 s later
    buffer = io.BytesIO()
    writer = PcapWriter(buffer, LINKTYPE_ETHERNET)
    for t, frame in frames:
        writer.write(BASE_NS + round(t * SECOND), frame)
    data = buffer.getvalue()
    whole = dissect_segments("node-a", [source(data)]).tables["connections"].to_pylist()
    chunked = dissect_chunked("node-a", [source(data)], plan_chunks(BASE_NS, BASE_NS + 20 * SECOND, 10 * SECOND),
                              workers=1).tables["connections"].to_pylist()
    assert len(whole) == len(chunked) == 1
    assert whole[0]["retransmissions"] == chunked[0]["retransmissions"] == 1
    assert whole[0]["retransmission_rate"] == chunked[0]["retransmission_rate"] == 1 / 6
