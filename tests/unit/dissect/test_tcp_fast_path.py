"""TcpAnalysis.segment's fast path (in-order ACK/data segments) must give exactly what its general path gives.

The general path is the line-by-line port of Wireshark's tcp_analyze_sequence_number that the tshark comparisons
check; here every segment of lossy, reordered, zero-window and keep-alive captures (plus random mutations of their
sequence, ACK and window fields) goes through both, and the per-segment flags and the final columns must agree.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from freezeframe.capture.pcapio import LINKTYPE_ETHERNET, Packet
from freezeframe.dissect.connections import ConnectionTracker
from freezeframe.dissect.decode import decode
from freezeframe.dissect.tcp import analysis as tcp
from tests.fixtures.tcp_captures import lossy_capture

Segment = tuple[bool, int, int, int, int, int, int, int | None]


def segments_of(frames: list[tuple[int, bytes]]) -> list[Segment]:
    """(outbound, ts, seq, ack, length, flags, window, window scale) of every TCP frame, one conversation each way."""
    first: dict[tuple[Any, ...], bool] = {}
    out: list[Segment] = []
    for ts_ns, data in frames:
        result = decode(LINKTYPE_ETHERNET, data)
        assert isinstance(result, tuple)
        proto, src, dst, sport, dport, flags, seq, ack, window, length, payload_offset, header_offset = result
        key = (src, sport, dst, dport)
        outbound = first.setdefault(key, (dst, dport, src, sport) not in first)
        scale = tcp.window_scale_option(data, header_offset + 20, payload_offset) if flags & tcp.TH_SYN else None
        out.append((outbound, ts_ns, seq, ack, length, flags, window, scale))
    return out


def analyse(segments: list[Segment]) -> tuple[list[int], dict[str, Any]]:
    analysis = tcp.TcpAnalysis()
    flags = [analysis.segment(*segment) for segment in segments]
    return flags, analysis.columns()


def mutated(segments: list[Segment], rng: random.Random) -> list[Segment]:
    """Segments with some sequence, ACK, window and length fields nudged, and some segments repeated or swapped."""
    result = list(segments)
    for index in range(len(result)):
        outbound, ts, seq, ack, length, flags, window, scale = result[index]
        roll = rng.random()
        if roll < 0.05:
            seq = (seq + rng.choice((-1, 1, length, -length))) & 0xFFFFFFFF
        elif roll < 0.10:
            ack = (ack + rng.choice((-1, 1, 1448))) & 0xFFFFFFFF
        elif roll < 0.13:
            window = rng.choice((0, window, window + 1))
        elif roll < 0.15:
            length = rng.choice((0, 1, length))
        result[index] = (outbound, ts, seq, ack, length, flags, window, scale)
    for _ in range(len(result) // 20):
        index = rng.randrange(len(result) - 1)
        if rng.random() < 0.5:
            result.insert(index, result[index])
        else:
            result[index], result[index + 1] = result[index + 1], result[index]
    return result


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_fast_path_matches_the_general_path(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    frames = lossy_capture(seed, conversations=1, steps=150).frames
    base = segments_of(frames)
    rng = random.Random(seed)
    for segments in (base, mutated(base, rng), mutated(base, rng)):
        fast = analyse(segments)
        with monkeypatch.context() as patch:
            patch.setattr(tcp, "_SFRA", 0)  # no flags value matches: every segment takes the general path
            general = analyse(segments)
        assert fast == general
        assert any(fast[0])  # the capture does exercise the analysis flags


def test_fast_path_is_taken_and_the_connections_table_is_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    frames = lossy_capture(7, conversations=4, steps=150).frames
    packets = [Packet(ts_ns, len(data), data) for ts_ns, data in frames]
    fast_tracker = ConnectionTracker("node")
    fast_tracker.feed(LINKTYPE_ETHERNET, packets)
    with monkeypatch.context() as patch:
        patch.setattr(tcp, "_SFRA", 0)
        general_tracker = ConnectionTracker("node")
        general_tracker.feed(LINKTYPE_ETHERNET, packets)
    assert fast_tracker.finish().equals(general_tracker.finish())
