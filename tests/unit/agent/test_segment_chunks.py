"""The chunk path (raw pcap records as tcpdump's pipe delivers them, cut anywhere) must give the very segments the
per-packet path gives, and every packet must land, in order and byte for byte, in a segment whose interval holds it.
The packets come from a seeded generator with the awkward cases in it: out-of-order and equal timestamps, idle
periods, bursts over the size limit, and chunk boundaries inside record headers and payloads."""

from __future__ import annotations

import io
import random
import struct
from pathlib import Path
from typing import Any

import pytest
import zstandard

from freezeframe.capture.pcapio import PcapReader
from freezeframe.contracts.errors import CaptureFormatError
from freezeframe_agent.segmenter import Segmenter

S = 1_000_000_000


def packets(seed: int, count: int = 2000) -> list[tuple[int, bytes]]:
    rng = random.Random(seed)
    ts, out = 100 * S, []
    for _ in range(count):
        roll = rng.random()
        if roll < 0.02:
            ts += rng.randrange(3 * S, 25 * S)  # idle stretch over one or more periods
        elif roll < 0.05:
            ts -= rng.randrange(1, 200_000_000)  # out of order (merged interfaces, late block)
        elif roll > 0.9:
            pass  # equal timestamp
        else:
            ts += rng.randrange(1, 20_000_000)
        out.append((ts, rng.randbytes(rng.randrange(0, 300))))
    return out


def record(ts: int, data: bytes) -> bytes:
    return struct.pack("<IIII", ts // S, ts % S, len(data), len(data) + 7) + data


def segmenter(path: Path) -> Segmenter:
    return Segmenter(cluster="c", node="n", spool_dir=path, link_type=1, snaplen=65535, period_s=10.0,
                     capture_filter="", agent_version="t", max_bytes=20_000)


def contents(seg: Segmenter) -> list[tuple[dict[str, Any], list[tuple[int, bytes]]]]:
    out = []
    for entry in seg.spool.entries():
        meta = {k: v for k, v in entry.meta.items() if k != "spooled_ns"}
        plain = zstandard.ZstdDecompressor().decompress(entry.body_path.read_bytes())
        out.append((meta, [(p.ts_ns, p.data) for p in PcapReader(io.BytesIO(plain))]))
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_chunks_cut_anywhere_give_the_segments_of_the_per_packet_path(tmp_path: Path, seed: int) -> None:
    sent = packets(seed)
    one_by_one = segmenter(tmp_path / "packets")
    for ts, data in sent:
        one_by_one.add(ts, data, len(data) + 7)
    one_by_one.flush()

    stream = b"".join(record(ts, data) for ts, data in sent)
    chunked = segmenter(tmp_path / "chunks")
    rng, offset = random.Random(seed), 0
    while offset < len(stream):
        size = rng.choice([1, 5, 16, 17, 100, 4096, 65536])
        chunked.add_records(stream[offset:offset + size])
        offset += size
    chunked.flush()

    expected, got = contents(one_by_one), contents(chunked)
    assert got == expected
    assert one_by_one.size_cuts > 0 and len(got) > 10, "the case covers size cuts and time cuts"
    assert [p for _, ps in got for p in ps] == sent  # every packet once, in arrival order, byte for byte
    for meta, ps in got:
        assert all(meta["start_ns"] <= ts < meta["end_ns"] for ts, _ in ps)
        assert meta["packets"] == len(ps) and meta["bytes"] == sum(len(d) + 7 for _, d in ps)
        if ps:
            assert (meta["first_packet_ns"], meta["last_packet_ns"]) == (ps[0][0], ps[-1][0])
    assert [meta["seq"] for meta, _ in got] == list(range(len(got)))


def test_streams_keep_their_own_partial_records(tmp_path: Path) -> None:
    seg = segmenter(tmp_path)
    a, b = record(1 * S, b"from-a"), record(2 * S, b"from-b")
    seg.add_records(a[:9], stream=1)
    seg.add_records(b[:20], stream=2)
    seg.add_records(a[9:], stream=1)
    seg.add_records(b[20:], stream=2)
    seg.flush()
    [(meta, ps)] = contents(seg)
    assert ps == [(1 * S, b"from-a"), (2 * S, b"from-b")] and meta["agent_drops"] == 0


def test_a_record_cut_off_at_the_end_is_an_agent_drop(tmp_path: Path) -> None:
    seg = segmenter(tmp_path)
    seg.add_records(record(1 * S, b"whole") + record(2 * S, b"cut off")[:19])
    seg.flush()
    [(meta, ps)] = contents(seg)
    assert ps == [(1 * S, b"whole")] and meta["agent_drops"] == 1


def test_an_impossible_record_length_is_an_error_not_a_guess(tmp_path: Path) -> None:
    with pytest.raises(CaptureFormatError, match="out of frame"):
        segmenter(tmp_path).add_records(struct.pack("<IIII", 1, 0, 10_000_000, 10) + bytes(100))
