"""TCP stream reassembly for the application tables (apps.TcpDirection): early segments wait for the hole before
them, retransmitted bytes are delivered once, and a hole that stays open ends the direction and is counted.

Expected bytes and times come from how each test builds its segments.
"""

from __future__ import annotations

from pathlib import Path

from freezeframe.dissect import AppTracker, ConnectionTracker
from freezeframe.dissect.apps import TcpDirection
from freezeframe.dissect.rows import AppStats
from tests.fixtures.tcp_captures import Capture, Conversation, read_packets

ISN = 0xFFFF_FF00  # close to the wrap, so sequence arithmetic has to be modulo 2**32


def deliver(direction: TcpDirection, stats: AppStats,
            segments: list[tuple[int, bytes, int]]) -> list[tuple[int, bytes]]:
    """Feeds (offset from ISN, bytes, ts) segments; returns every delivered (ts, bytes) piece in order."""
    pieces = []
    for offset, data, ts_ns in segments:
        pieces += direction.accept((ISN + offset) & 0xFFFFFFFF, data, len(data), ts_ns, stats)
    return pieces


def test_in_order_segments_pass_through() -> None:
    stats = AppStats()
    pieces = deliver(TcpDirection(), stats, [(0, b"abc", 1), (3, b"def", 2)])
    assert pieces == [(1, b"abc"), (2, b"def")] and stats.tcp_stream_gaps == 0


def test_an_early_segment_waits_for_the_hole_and_keeps_its_own_time() -> None:
    stats = AppStats()
    direction = TcpDirection()
    pieces = deliver(direction, stats, [(0, b"abc", 1), (6, b"ghi", 2), (9, b"jkl", 3), (3, b"def", 4)])
    assert pieces == [(1, b"abc"), (4, b"def"), (2, b"ghi"), (3, b"jkl")]
    assert stats.tcp_stream_gaps == 0 and not direction.pending and direction.pending_bytes == 0


def test_retransmitted_and_overlapping_bytes_are_delivered_once() -> None:
    stats = AppStats()
    pieces = deliver(TcpDirection(), stats, [(0, b"abcd", 1), (0, b"abcd", 2), (2, b"cdef", 3), (8, b"ij", 4),
                                              (8, b"ij", 5), (4, b"efgh", 6)])
    assert b"".join(piece for _ts, piece in pieces) == b"abcdefghij"
    assert pieces == [(1, b"abcd"), (3, b"ef"), (6, b"gh"), (4, b"ij")]


def test_a_hole_that_stays_open_ends_the_direction_and_is_counted() -> None:
    stats = AppStats()
    direction = TcpDirection()
    segments = [(0, b"x", 1)] + [(2 + index, b"y", 2 + index) for index in range(TcpDirection.MAX_PENDING_SEGMENTS + 1)]
    assert deliver(direction, stats, segments) == [(1, b"x")]
    assert direction.broken and stats.tcp_stream_gaps == 1 and not direction.pending
    assert deliver(direction, stats, [(1, b"z", 9)]) == []  # too late: the direction is no longer parsed


def test_a_snaplen_cut_segment_ends_the_direction() -> None:
    stats = AppStats()
    direction = TcpDirection()
    assert direction.accept(ISN, b"ab", 4, 1, stats) == [(1, b"ab")]
    assert direction.broken and stats.tcp_stream_gaps == 1


def test_http_responses_after_a_reordered_response_are_all_paired(tmp_path: Path) -> None:
    capture = Capture()
    http = Conversation(capture, 43_000, 80)
    http.handshake()
    bodies = [b"A" * 1200, b"B" * 10]
    for index, (status, body) in enumerate(zip((200, 404), bodies, strict=True)):
        capture.tick(1000)
        http.data(True, payload=f"GET /item/{index} HTTP/1.1\r\nHost: svc\r\n\r\n".encode())
        response = f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
        capture.tick(500)
        if index == 0:  # the response's second half overtakes its first half
            start = http.server.next_seq
            http.data(False, payload=response[:600], emit=False)
            http.data(False, payload=response[600:])
            capture.tick(100)
            http.data(False, payload=response[:600], rel_seq=start)
        else:
            http.data(False, payload=response)
        http.ack(True)
    link_type, packets = read_packets(capture.write(tmp_path / "reordered-http.pcap"))
    tracker = ConnectionTracker("node-a", AppTracker("node-a"))
    tracker.feed(link_type, packets)
    rows = tracker.app_tables()["http"].to_pylist()
    assert [(row["path"], row["status"], row["response_bytes"]) for row in rows] == [
        ("/item/0", 200, 1200), ("/item/1", 404, 10)]
    assert tracker.app is not None and tracker.app.stats.tcp_stream_gaps == 0
