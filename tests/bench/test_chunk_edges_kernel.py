"""The edge-only merge on the scale bench's kernel capture (1 M packets of real kernel traffic, about 89 k
connections): equal to the full merge of every chunk row in every table, and to one sequential pass in every
connections column, with only a small share of the rows reaching the merge.

The capture is cached by the dissection bench (``~/.cache/freezeframe/bench/dissect-kernel-v*.pcap``); without it
the test is skipped. Run by ``make bench-scale-test`` (a few minutes on two cores; too heavy for the unit tier, which
runs the same checks on the fixtures in tests/unit/dissect/test_chunks_edges.py).
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from freezeframe.capture.pcapio import MAX_TS_NS
from freezeframe.contracts.config import cache_dir
from freezeframe.dissect.chunks import CHUNK_TABLES, plan_chunks
from freezeframe.dissect.files import time_span
from freezeframe.dissect.job import SegmentSource, _dissect_chunk, dissect_segments, merge_chunk_results
from freezeframe.dissect.problems import SegmentRef
from tests.unit.dissect.test_chunks_edges import full_merge

CHUNKS = 4
WARMUP_NS = 10 * 1_000_000_000


def _capture() -> Path:
    found = sorted((cache_dir() / "bench").glob("dissect-kernel-v*.pcap"))
    if not found:
        pytest.skip("no cached kernel capture (run the dissection bench first)")
    return found[-1]


def test_the_edge_only_merge_equals_the_full_merge_and_a_sequential_pass_on_kernel_traffic() -> None:
    path = _capture()
    span = time_span(path)
    assert span is not None
    low, high = span[0], span[1] + 1
    chunks = plan_chunks(low, high, -(-(high - low) // CHUNKS), WARMUP_NS)
    chunks[0] = chunks[0].__class__(0, 0, chunks[0].end_ns, None)
    chunks[-1] = chunks[-1].__class__(chunks[-1].index, chunks[-1].start_ns, MAX_TS_NS + 1,
                                      chunks[-1].warmup_start_ns)
    source = SegmentSource(SegmentRef(str(path), None, low, high), path=path)
    with ProcessPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(_dissect_chunk, [("node-a", [source], chunk) for chunk in chunks]))
    expected = full_merge(chunks, results)
    actual = merge_chunk_results("node-a", chunks, results)
    for name in CHUNK_TABLES:
        assert actual.tables[name].to_pylist() == expected[name].to_pylist(), name
    rows = sum(r.tables["connections"].num_rows for r in results)
    reached = actual.stats["chunk_edge_rows"] + actual.stats["chunk_rows_pulled"]
    assert actual.stats["chunk_rows_merged"] > 0
    assert reached < rows // 5, (reached, rows)  # most rows never reach the merge
    whole = dissect_segments("node-a", [source])
    assert {r["conn_id"]: r for r in actual.tables["connections"].to_pylist()} == \
        {r["conn_id"]: r for r in whole.tables["connections"].to_pylist()}
