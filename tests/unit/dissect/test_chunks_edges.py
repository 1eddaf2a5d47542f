"""The edge-only merge (dissect.chunks.split_chunk, pull_pairs, merge_tables): the same tables as the full merge of
every chunk row, and so as one sequential pass, while rows on no chunk edge never reach the merge.

The reference is the full merge, the merge the fan-out used before: every chunk's rows through ``merge_connections``
with the application rows re-pointed and completed from the warm-up (``merge_tables`` given whole tables), which
test_chunks.py and test_chunk_warmup.py check against a sequential pass (itself checked against tshark). The captures
are the edge cases built in test_chunks.py (silent for whole chunks, orientation flip, split handshake, port reuse,
UDP across edges and split by the idle timeout), the lossy TCP captures, and the bundled sample of real traffic.
The kernel capture of the scale bench is compared in tests/bench/test_chunk_edges_kernel.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from freezeframe.capture.pcapio import MAX_TS_NS
from freezeframe.contracts.schemas import TABLES
from freezeframe.dissect import job
from freezeframe.dissect.chunks import (
    CHUNK_TABLES,
    Chunk,
    edge_mask,
    merge_tables,
    pair_keys,
    plan_chunks,
    shared_udp_pairs,
    sort_rows,
    split_chunk,
    udp_pairs,
)
from freezeframe.dissect.job import EngineResult, SegmentSource, dissect_segments, merge_chunk_results
from freezeframe.dissect.problems import SegmentRef
from tests.fixtures.tcp_captures import lossy_capture
from tests.unit.dissect.test_chunk_warmup import span
from tests.unit.dissect.test_chunks import SECOND, build_capture

SAMPLE = Path(__file__).resolve().parents[2] / "fixtures" / "sample.pcap"
MS = 1_000_000


def chunk_results(path: Path, chunk_ns: int, warmup_ns: int | None) -> tuple[list[Chunk], list[EngineResult]]:
    """Each chunk dissected on its own, as dissect_chunked runs them (first and last chunks open-ended)."""
    low, high = span(path)
    chunks = plan_chunks(low, high, chunk_ns, warmup_ns)
    chunks[0] = Chunk(0, 0, chunks[0].end_ns, None)
    last = chunks[-1]
    chunks[-1] = Chunk(last.index, last.start_ns, MAX_TS_NS + 1, last.warmup_start_ns)
    source = SegmentSource(SegmentRef(str(path), None, low, high), path=path)
    return chunks, [dissect_segments("node-a", [source], chunk) for chunk in chunks]


def full_merge(chunks: Sequence[Chunk], results: Sequence[EngineResult]) -> dict[str, pa.Table]:
    """The reference: every row of every chunk through the merge."""
    merged = merge_tables("node-a", chunks, [r.tables for r in results], [r.payload_segments for r in results],
                          [r.extras for r in results])
    return {name: sort_rows(name, merged.tables[name].cast(TABLES[name])) for name in CHUNK_TABLES}


def captures(tmp_path: Path) -> list[tuple[str, Path, int, int | None]]:
    edges = tmp_path / "edges.pcap"
    edges.write_bytes(build_capture())
    lossy = lossy_capture(2).write(tmp_path / "lossy.pcap")
    return [("edges, 10 s chunks, no warm-up", edges, 10 * SECOND, None),
            ("edges, 10 s chunks, 5 s warm-up", edges, 10 * SECOND, 5 * SECOND),
            ("edges, 3 s chunks, 1 s warm-up", edges, 3 * SECOND, 1 * SECOND),
            ("lossy, 250 ms chunks, 30 s warm-up", lossy, 250 * MS, 30 * SECOND),
            ("lossy, 400 ms chunks, no warm-up", lossy, 400 * MS, None),
            ("sample, 7 s chunks, 5 s warm-up", SAMPLE, 7 * SECOND, 5 * SECOND),
            ("sample, 2 s chunks, no warm-up", SAMPLE, 2 * SECOND, None)]


def test_the_edge_only_merge_equals_the_full_merge_and_a_sequential_pass(tmp_path: Path) -> None:
    for label, path, chunk_ns, warmup_ns in captures(tmp_path):
        chunks, results = chunk_results(path, chunk_ns, warmup_ns)
        assert len(chunks) >= 4, label
        expected = full_merge(chunks, results)
        actual = merge_chunk_results("node-a", chunks, results)
        for name in CHUNK_TABLES:
            assert actual.tables[name].to_pylist() == expected[name].to_pylist(), (label, name)
        assert actual.stats["chunk_rows_merged"] > 0, label  # connections did cross edges
        # Rows never merged are the bulk: only the edge rows (and rows sharing their endpoint pair) were merged.
        rows = sum(r.tables["connections"].num_rows for r in results)
        assert actual.stats["chunk_edge_rows"] + actual.stats["chunk_rows_pulled"] <= rows, label
        if warmup_ns is not None and warmup_ns >= 5 * SECOND:
            # With a warm-up over the edge's state the chunked rows equal one pass in every column (test_chunk_warmup).
            low, high = span(path)
            whole = dissect_segments("node-a", [SegmentSource(SegmentRef(str(path), None, low, high), path=path)])
            assert {r["conn_id"]: r for r in actual.tables["connections"].to_pylist()} == \
                {r["conn_id"]: r for r in whole.tables["connections"].to_pylist()}, label


def test_rows_on_no_edge_never_reach_the_merge(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[set[str]] = []

    def spy(node: str, chunks: Sequence[Chunk], tables: Sequence[Any], *args: Any) -> Any:
        seen.append({conn_id for t in tables for conn_id in t["connections"].column("conn_id").to_pylist()})
        return merge_tables(node, chunks, tables, *args)

    monkeypatch.setattr(job, "merge_tables", spy)
    checked: dict[str, int] = {}
    for label, path, chunk_ns, warmup_ns in captures(tmp_path):
        chunks, results = chunk_results(path, chunk_ns, warmup_ns)
        seen.clear()
        merge_chunk_results("node-a", chunks, results)
        (reached,) = seen
        # Independently of the split: a TCP connection whose SYN, every packet and whole life are inside one chunk,
        # that got past its SYN and whose endpoint pair no other chunk has, cannot meet another chunk's row.
        pairs_per_chunk = [pair_keys(r.tables["connections"]).to_pylist() if r.tables["connections"].num_rows
                           else [] for r in results]
        inside = []
        for number, (chunk, result) in enumerate(zip(chunks, results, strict=True)):
            for row, pair in zip(result.tables["connections"].to_pylist(), pairs_per_chunk[number], strict=True):
                elsewhere = any(pair in other for k, other in enumerate(pairs_per_chunk) if k != number)
                completeness = row["completeness"] or 0
                if row["proto"] == "tcp" and completeness & 1 and completeness != 1 and \
                        row["first_ts_ns"] >= chunk.start_ns and pairs_per_chunk[number].count(pair) == 1 and \
                        not elsewhere:
                    inside.append(row["conn_id"])
        assert not reached & set(inside), label
        checked[label] = len(inside)
    assert checked["sample, 7 s chunks, 5 s warm-up"] > 10 and checked["edges, 10 s chunks, 5 s warm-up"] > 0, checked


def test_edge_rows_follow_the_merges_continuation_rule() -> None:
    schema = TABLES["connections"]

    def row(proto: str, completeness: int | None, first_ts_ns: int, port: int) -> dict[str, Any]:
        return {name: None for name in schema.names} | {
            "proto": proto, "completeness": completeness, "first_ts_ns": first_ts_ns, "conn_id": f"c{port}",
            "src_ip": "10.0.0.1", "src_port": port, "dst_ip": "10.0.0.2", "dst_port": 80}

    start = 1_000 * SECOND
    chunk = Chunk(3, start, start + 20 * SECOND, start - 5 * SECOND)
    table = pa.Table.from_pylist([
        row("tcp", 1 | 2 | 4 | 8 | 16, start + SECOND, 1),  # whole life inside: body
        row("tcp", 4 | 8, start + 15 * SECOND, 2),  # no SYN: continues an earlier row, however long ago (left)
        row("tcp", 1, start + 2 * SECOND, 3),  # SYN alone: a later chunk may retransmit it (right)
        row("udp", None, start + 100 * SECOND, 4),  # UDP: never an edge row itself, only its endpoint pair
        row("udp", None, start + 121 * SECOND, 5),
        row("tcp", None, start + SECOND, 6),  # unknown completeness: no SYN known (left)
        row("icmp", None, start + SECOND, 7),  # neither TCP nor UDP: the merge continues it always (left)
    ], schema=schema)
    table = table.set_column(table.schema.get_field_index("last_ts_ns"), "last_ts_ns",
                             pa.array([start + 19 * SECOND] * 3 + [start + 101 * SECOND, start + 125 * SECOND]
                                      + [start + 2 * SECOND] * 2, pa.int64()))
    assert edge_mask(table, chunk, first=False, last=False).to_pylist() == \
        [False, True, True, False, False, True, True]
    # The node's first chunk has no left edge, its last no right edge.
    assert edge_mask(table, chunk, first=True, last=False).to_pylist() == \
        [False, False, True, False, False, False, False]
    assert edge_mask(table, chunk, first=False, last=True).to_pylist() == \
        [False, True, False, False, False, True, True]
    empty = {name: TABLES[name].empty_table() for name in CHUNK_TABLES if name != "connections"}
    body, edge, _warm = split_chunk({"connections": table, **empty}, chunk, first=False, last=False)
    assert body["connections"].column("conn_id").to_pylist() == ["c1", "c4", "c5"]
    assert edge["connections"].column("conn_id").to_pylist() == ["c2", "c3", "c6", "c7"]
    # UDP pairs: starting within the idle timeout (120 s) of the chunk's start (left), ending within it and the
    # warm-up (5 s) of the chunk's end (right: the chunk ends at start + 20 s, so all of them here).
    left, right = udp_pairs(table, chunk, first=False, last=False, warmup_ns=5 * SECOND)
    c4, c5 = "udp#10.0.0.1|4#10.0.0.2|80", "udp#10.0.0.1|5#10.0.0.2|80"
    assert left.to_pylist() == [c4]
    assert sorted(right.to_pylist()) == [c4, c5]
    # Shared: a later chunk's left pair that an earlier chunk, ending within reach, has on its right.
    later = Chunk(4, chunk.end_ns, chunk.end_ns + 20 * SECOND, chunk.end_ns - 5 * SECOND)
    far = Chunk(9, chunk.end_ns + 200 * SECOND, chunk.end_ns + 220 * SECOND, chunk.end_ns + 195 * SECOND)
    pair = left.to_pylist()[0]
    shared = shared_udp_pairs([chunk, later, far], [(left, right), (pa.array([pair]), pa.array([], pa.string())),
                                                   (pa.array([pair]), pa.array([], pa.string()))], 5 * SECOND)
    assert shared.to_pylist() == [pair]  # the far chunk is past the idle timeout: it adds nothing
    assert not len(shared_udp_pairs([chunk, far], [(left, right), (pa.array([pair]), pa.array([], pa.string()))],
                                     5 * SECOND))
