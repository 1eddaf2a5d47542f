"""The application rows merged a group of consecutive chunks at a time (dissect.chunks.merge_tables_grouped, the
fan-out's merge-apps tasks): the same tables as merging them all at once (``merge_tables``), on the edge-case,
lossy and sample captures of test_chunks_edges.py cut with and without warm-ups, every chunk its own group and
groups of two and three chunks."""

from __future__ import annotations

from pathlib import Path

from freezeframe.contracts.schemas import TABLES
from freezeframe.dissect.chunks import APP_TABLES, CHUNK_TABLES, merge_tables_grouped, sort_rows
from tests.unit.dissect.test_chunks_edges import captures, chunk_results, full_merge


def test_grouped_application_rows_equal_the_merge_of_every_chunk_at_once(tmp_path: Path) -> None:
    warm_rows_replaced = 0
    for label, path, chunk_ns, warmup_ns in captures(tmp_path):
        chunks, results = chunk_results(path, chunk_ns, warmup_ns)
        expected = full_merge(chunks, results)
        for size in (1, 2, 3):
            groups = [list(range(start, min(start + size, len(chunks)))) for start in range(0, len(chunks), size)]
            merged = merge_tables_grouped("node-a", chunks, [r.tables for r in results], groups,
                                          [r.payload_segments for r in results], [r.extras for r in results])
            for name in CHUNK_TABLES:
                actual = sort_rows(name, merged.tables[name].cast(TABLES[name]))
                assert actual.to_pylist() == expected[name].to_pylist(), (label, size, name)
        if warmup_ns is not None:
            # Rows stamped in a warm-up that the merge kept: the case the groups' spans decide.
            warm_rows_replaced += sum(
                1 for name in APP_TABLES for result, chunk in zip(results, chunks, strict=True)
                if chunk.warmup_start_ns is not None
                for ts in result.tables[name].column("ts_ns").to_pylist() if ts < chunk.start_ns)
    assert warm_rows_replaced > 0
