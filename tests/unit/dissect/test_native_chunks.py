"""Time chunks with a warm-up in the compiled core (warmup.rs) against the Python reference (dissect.warmup).

For every chunk of a plan, ``dissect_segments(..., chunk, engine=...)`` must give the same tables (connections after
the warm-up's fix, dns, http, tls), dissect_errors rows, counters, payload segments and RTT sums (``extras``) with
both engines; and the merged result of ``dissect_chunked`` must be equal too. Inputs: lossy TCP captures (every
Wireshark analysis case near some edge, IPv4 and IPv6), the edge capture of test_chunks (HTTP, DNS and a handshake
cut by edges), the fixture capture, and several segments per node with a damaged one. The expected values are the
reference engine's; the reference's chunked output is itself checked against a sequential pass (test_chunk_warmup).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from freezeframe.capture.pcapio import PcapReader
from freezeframe.dissect import native
from freezeframe.dissect.chunks import plan_chunks
from freezeframe.dissect.job import EngineResult, SegmentSource, dissect_chunked, dissect_segments
from freezeframe.dissect.problems import SegmentRef
from tests.fixtures.native_compare import _problems, _table_differences
from tests.fixtures.tcp_captures import lossy_capture
from tests.unit.dissect.test_chunks import BASE_NS as EDGE_BASE_NS
from tests.unit.dissect.test_chunks import SECOND, build_capture
from tests.unit.dissect.test_native_engine import _pcap

pytestmark = pytest.mark.skipif(native.extension() is None, reason="the freezeframe_native extension is not built")

MS = 1_000_000
SAMPLE = Path(__file__).resolve().parents[2] / "fixtures" / "sample.pcap"


def _span(data: bytes, path: Path) -> tuple[int, int]:
    path.write_bytes(data)
    with path.open("rb") as stream:
        times = [packet.ts_ns for packet in PcapReader(stream)]
    return min(times), max(times) + 1


def _sources(segments: Sequence[tuple[bytes, int, int]]) -> list[SegmentSource]:
    return [SegmentSource(SegmentRef(f"segment-{i:03d}", None, low, high), fetch=lambda data=data: data)
            for i, (data, low, high) in enumerate(segments)]


def _result_differences(reference: EngineResult, compiled: EngineResult) -> list[str]:
    out = []
    for name, table in reference.tables.items():
        out += _table_differences(name, table, compiled.tables[name])
    if _problems(reference) != _problems(compiled):
        out.append("dissect_errors differ")
    if reference.stats != compiled.stats:
        out.append(f"counters: {reference.stats} != {compiled.stats}")
    if reference.payload_segments != compiled.payload_segments:
        out.append("payload segments differ")
    rows = set(reference.tables["connections"].column("conn_id").to_pylist())
    # extras of flows without a row (live but silent in the chunk) are never read by the merge
    want = {k: v for k, v in reference.extras.items() if k in rows}
    got = {k: v for k, v in compiled.extras.items() if k in rows}
    if want != got:
        out.append(f"extras differ: {sorted(set(want.items()) ^ set(got.items()))[:4]}")
    return out


def assert_chunks_equal(node: str, segments: list[SegmentSource], low: int, high: int, chunk_ns: int,
                        warmup_ns: int, monkeypatch: pytest.MonkeyPatch) -> Any:
    chunks = plan_chunks(low, high, chunk_ns, warmup_ns)
    warmed = 0
    for chunk in chunks:
        start = chunk.start_ns if chunk.warmup_start_ns is None else chunk.warmup_start_ns
        overlapping = [s for s in segments if s.ref.start_ns < chunk.end_ns and s.ref.end_ns >= start]
        reference = dissect_segments(node, overlapping, chunk, engine="python")
        compiled = dissect_segments(node, overlapping, chunk, engine="native")
        assert _result_differences(reference, compiled) == [], f"chunk {chunk.index}"
        warmed += chunk.warmup_start_ns is not None and chunk.warmup_start_ns < chunk.start_ns
    assert warmed >= len(chunks) - 1
    merged = {}
    for engine in ("python", "native"):
        monkeypatch.setenv("FREEZEFRAME_DISSECT_ENGINE", engine)
        merged[engine] = dissect_chunked(node, segments, chunks, workers=1)
    for name, table in merged["python"].tables.items():
        assert _table_differences(name, table, merged["native"].tables[name]) == [], name
    assert merged["python"].stats == merged["native"].stats
    return merged["native"]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_lossy_tcp_chunks(tmp_path: Path, seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    data = lossy_capture(seed, conversations=4, steps=100, ipv6=seed == 3).write(tmp_path / "l.pcap").read_bytes()
    low, high = _span(data, tmp_path / "l.pcap")
    result = assert_chunks_equal("node-a", _sources([(data, low, high)]), low, high, 250 * MS, 30 * SECOND,
                                 monkeypatch)
    assert result.tables["connections"].num_rows and result.stats["chunks"] > 10


@pytest.mark.parametrize("warmup_s", [5, 1])
def test_edge_capture_application_rows(tmp_path: Path, warmup_s: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """An HTTP exchange and a handshake split by edges; a 1 s warm-up leaves state older than it (the stated bound)."""
    data = build_capture()
    high = EDGE_BASE_NS + 140 * SECOND
    result = assert_chunks_equal("node-a", _sources([(data, EDGE_BASE_NS, high)]), EDGE_BASE_NS, high, 10 * SECOND,
                                 warmup_s * SECOND, monkeypatch)
    assert result.tables["http"].num_rows and result.tables["connections"].num_rows


def test_fixture_over_segments_with_damage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fixture cut into four segments (one truncated), chunked finely: app rows and TCP state cross both
    segment and chunk edges."""
    with SAMPLE.open("rb") as stream:
        packets = [(p.ts_ns, p.orig_len, p.data) for p in PcapReader(stream)]
    quarter = len(packets) // 4
    parts = [packets[i * quarter:(i + 1) * quarter] for i in range(3)] + [packets[3 * quarter:]]
    segments = []
    for index, part in enumerate(parts):
        data = _pcap(part, "<" if index % 2 else ">", nanosecond=index != 2)
        if index == 1:
            data = data[:-40]
        segments.append((data, part[0][0], part[-1][0]))
    low, high = packets[0][0], max(t for t, _, _ in packets) + 1
    chunk_ns = max((high - low) // 12, 1)
    assert_chunks_equal("node-a", _sources(segments), low, high, chunk_ns, 3 * chunk_ns, monkeypatch)
