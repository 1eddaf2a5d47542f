"""Chunks with a warm-up (dissect.warmup) equal one sequential pass in every connections column.

The lossy captures (tests/fixtures/tcp_captures.py) hold every Wireshark analysis case: retransmissions (fast,
timeout, spurious), out-of-order, lost segments, dup ACKs, zero windows, window full, keepalives, RTT samples, on
interleaved conversations. Cut into many short chunks, every conversation crosses many edges, and every analysis
case lands next to some edge. The expected tables are the sequential dissection of the same file (itself checked
against tshark in test_tcp_analysis_vs_tshark.py); a few totals are compared with tshark directly here too.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from freezeframe.capture.pcapio import PcapReader
from freezeframe.contracts.schemas import CONNECTIONS
from freezeframe.dissect.chunks import EXACT_COLUMNS, plan_chunks
from freezeframe.dissect.job import SegmentSource, dissect_chunked, dissect_segments
from freezeframe.dissect.problems import SegmentRef
from tests.fixtures.tcp_captures import TSHARK, lossy_capture
from tests.unit.dissect.test_chunks import BASE_NS as EDGE_BASE_NS
from tests.unit.dissect.test_chunks import SECOND, build_capture

MS = 1_000_000


def span(path: Path) -> tuple[int, int]:
    with path.open("rb") as stream:
        times = [packet.ts_ns for packet in PcapReader(stream)]
    return min(times), max(times) + 1


def rows(table: Any) -> dict[str, dict[str, Any]]:
    return {row["conn_id"]: row for row in table.to_pylist()}


def chunked(path: Path, chunk_ns: int, warmup_ns: int | None, workers: int = 1) -> Any:
    low, high = span(path)
    source = SegmentSource(SegmentRef(str(path), None, low, high), path=path)
    return dissect_chunked("node-a", [source], plan_chunks(low, high, chunk_ns, warmup_ns), workers=workers)


def sequential(path: Path) -> Any:
    low, high = span(path)
    return dissect_segments("node-a", [SegmentSource(SegmentRef(str(path), None, low, high), path=path)])


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_warm_chunks_equal_sequential_in_every_column(tmp_path: Path, seed: int) -> None:
    path = lossy_capture(seed).write(tmp_path / f"lossy-{seed}.pcap")
    whole = sequential(path)
    # 250 ms chunks over a capture of about 9 s: dozens of edges inside every conversation. The warm-up reaches
    # back to the handshakes (window scale), so no state an edge needs is older than it: every column is exact.
    result = chunked(path, 250 * MS, warmup_ns=30 * SECOND, workers=2)
    assert result.stats["chunks"] >= 10
    assert result.stats["chunk_rows_merged"] >= 6 * (result.stats["chunks"] // 2)
    expected, actual = rows(whole.tables["connections"]), rows(result.tables["connections"])
    assert set(actual) == set(expected)
    for conn_id, row in expected.items():
        for column in CONNECTIONS.names:
            assert actual[conn_id][column] == row[column], (seed, conn_id, column)
    assert result.stats["packets"] == whole.stats["packets"]


EDGE_COUNTERS = ("retransmissions", "retransmissions_out", "retransmissions_in", "fast_retransmissions",
                 "spurious_retransmissions", "out_of_order", "dup_acks", "dup_acks_out", "dup_acks_in",
                 "lost_segments", "zero_window_events", "zero_window_events_out", "zero_window_events_in",
                 "window_full_events", "keepalives")


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_short_warm_up_stays_within_the_stated_bound(tmp_path: Path, seed: int) -> None:
    """README "Chunked dissection", bounds: with state older than the warm-up, counts stay exact, and each analysis
    counter of a connection is off by at most one per chunk edge inside the connection's life."""
    path = lossy_capture(seed).write(tmp_path / "lossy.pcap")
    expected = rows(sequential(path).tables["connections"])
    low, _high = span(path)
    actual = rows(chunked(path, 250 * MS, warmup_ns=2 * SECOND).tables["connections"])
    assert set(actual) == set(expected)
    for conn_id, row in expected.items():
        edges = (row["last_ts_ns"] - low) // (250 * MS) - (row["first_ts_ns"] - low) // (250 * MS)
        for column in EXACT_COLUMNS:
            assert actual[conn_id][column] == row[column], (conn_id, column)
        for column in EDGE_COUNTERS:
            assert abs(actual[conn_id][column] - row[column]) <= edges, (conn_id, column)
        assert actual[conn_id]["rtt_samples"] == row["rtt_samples"]


def test_without_warm_up_the_edge_sensitive_columns_differ(tmp_path: Path) -> None:
    """The warm-up is what makes them equal: the same chunks without it get TCP analysis wrong at the edges."""
    path = lossy_capture(1).write(tmp_path / "lossy.pcap")
    expected = rows(sequential(path).tables["connections"])
    actual = rows(chunked(path, 250 * MS, warmup_ns=None).tables["connections"])
    assert set(actual) == set(expected)
    differing = {column for conn_id, row in expected.items() for column in CONNECTIONS.names
                 if actual[conn_id][column] != row[column]}
    assert differing, "the capture has no analysis case at an edge: this test proves nothing"
    assert not differing & EXACT_COLUMNS  # counts are exact even without the warm-up


def test_warm_chunks_agree_with_tshark_totals(tmp_path: Path) -> None:
    if TSHARK is None:
        pytest.skip("tshark is not installed")
    path = lossy_capture(2).write(tmp_path / "lossy.pcap")
    table = chunked(path, 250 * MS, warmup_ns=30 * SECOND).tables["connections"]
    fields = {"retransmissions": "tcp.analysis.retransmission", "dup_acks": "tcp.analysis.duplicate_ack",
              "out_of_order": "tcp.analysis.out_of_order"}
    for column, flag in fields.items():
        out = subprocess.run([TSHARK, "-n", "-r", str(path), "-Y", flag, "-T", "fields", "-e", "frame.number"],
                             check=True, capture_output=True, text=True).stdout
        assert sum(table.column(column).to_pylist()) == len(out.split()), column
    frames = subprocess.run([TSHARK, "-n", "-r", str(path), "-T", "fields", "-e", "frame.number"], check=True,
                            capture_output=True, text=True).stdout
    assert sum(table.column("packets_out").to_pylist()) + sum(table.column("packets_in").to_pylist()) == \
        len(frames.split())


def test_warm_chunks_complete_the_application_rows_cut_by_an_edge(tmp_path: Path) -> None:
    """The edge capture of test_chunks: an HTTP exchange, DNS answers and a handshake split by chunk edges."""
    path = tmp_path / "edges.pcap"
    path.write_bytes(build_capture())
    source = SegmentSource(SegmentRef(str(path), None, EDGE_BASE_NS, EDGE_BASE_NS + 140 * SECOND), path=path)
    whole = dissect_segments("node-a", [source])
    result = dissect_chunked("node-a", [source], plan_chunks(EDGE_BASE_NS, EDGE_BASE_NS + 140 * SECOND,
                                                             10 * SECOND, 5 * SECOND), workers=1)
    for name, table in whole.tables.items():
        expected = sorted(table.to_pylist(), key=lambda r: (r["ts_ns"], r["conn_id"]))
        actual = sorted(result.tables[name].to_pylist(), key=lambda r: (r["ts_ns"], r["conn_id"]))
        assert actual == expected, name


def test_freezeframe_dissect_chunk_seconds_equals_one_pass(tmp_path: Path) -> None:
    """`freezeframe dissect --chunk-seconds`: the same planner, warm-up and merge, in a process pool, over files."""
    import pyarrow.parquet as pq
    from freezeframe_local.cli import main

    first = lossy_capture(4, conversations=3, steps=120).write(tmp_path / "a.pcap")
    second = tmp_path / "b.pcap"
    second.write_bytes(build_capture())  # another time range: the files are one node's consecutive segments
    one, many = tmp_path / "one", tmp_path / "many"
    assert main(["dissect", str(first), str(second), "--out", str(one), "--no-progress"]) == 0
    assert main(["dissect", str(first), str(second), "--out", str(many), "--chunk-seconds", "0.5",
                 "--workers", "2", "--no-progress"]) == 0
    for name in ("connections", "dns", "http", "tls", "dissect_errors"):
        expected = [pq.read_table(p) for p in sorted(one.glob(f"tables/{name}/*/*/*.parquet"))]
        actual = [pq.read_table(p) for p in sorted(many.glob(f"tables/{name}/*/*/*.parquet"))]
        assert [t.to_pylist() for t in actual] == [t.to_pylist() for t in expected], name
    summary = json.loads(next(many.glob("incidents/*/dissect/*.json")).read_text())
    assert summary["stats"]["chunks"] > 10
