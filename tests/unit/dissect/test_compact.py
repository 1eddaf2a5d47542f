"""Compaction of the views (freezeframe.dissect.compact via freezeframe.dissect.views): a small view is one file, a
large one is split
by size into deterministic names in the view's folder, and a smaller re-run empties the stale numbers (no deletes).

The store is the in-memory S3 of the webhook fuzz tests (versions, listings); the real-stack run is
tests/integration/test_dissect_fanout.py and tests/integration/test_finalize.py.
"""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from freezeframe.adapters import s3 as s3io
from freezeframe.contracts.keys import table_part_key, view_file_number
from freezeframe.contracts.schemas import TABLES
from freezeframe.dissect import compact
from freezeframe.dissect.compact import split_parquet, stream_parquet
from freezeframe.dissect.views import write_incident_views, write_local_views
from tests.fixtures.webhook_fuzz import MemoryS3

T0 = 1_767_225_600 * 1_000_000_000  # 2026-01-01
FOLDER = "views/dissect_errors/dt=2026-01-01/incident_id=inc-1/"


@pytest.fixture(autouse=True)
def small_row_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    """Row groups of 2,000 rows, so views of tens of thousands of rows split at a target of 200 kB."""
    monkeypatch.setattr(compact, "ROW_GROUP_ROWS", 2_000)


def errors_table(node: str, rows: int) -> pa.Table:
    schema = TABLES["dissect_errors"]
    data = {"node": [node] * rows, "segment": [f"seg-{i:06d}-{'x' * 40}" for i in range(rows)],
            "segment_version": [str(i) for i in range(rows)], "segment_start_ns": [T0 + i for i in range(rows)],
            "stage": ["read"] * rows, "kind": ["truncated"] * rows, "count": list(range(rows)),
            "first_offset": [None] * rows, "first_packet": [None] * rows, "message": [f"m{i}" for i in range(rows)]}
    return pa.Table.from_pydict({f.name: data[f.name] for f in schema}, schema=schema)


def put_part(s3: MemoryS3, node: str, rows: int) -> str:
    key = table_part_key("dissect_errors", T0, "inc-1", node)
    sink = io.BytesIO()
    pq.write_table(errors_table(node, rows), sink)
    s3io.put_bytes(s3, "evidence", key, sink.getvalue(), content_type="application/vnd.apache.parquet")
    return key


def view_rows(s3: MemoryS3) -> list[dict[str, object]]:
    keys = sorted(s3io.list_keys(s3, "evidence", FOLDER), key=lambda k: view_file_number(k.rsplit("/", 1)[1]) or 0)
    return [row for key in keys for row in pq.read_table(io.BytesIO(s3io.get_bytes(s3, "evidence", key))).to_pylist()]


def test_split_keeps_every_row_in_order_and_cuts_by_size() -> None:
    table = errors_table("node-a", 30_000)
    files = split_parquet(table, target_bytes=25_000, row_group_rows=2_000)
    assert len(files) >= 3
    assert all(len(body) < 25_000 + 60_000 for body in files)  # cut at the first row group past the target
    rows = [row for body in files for row in pq.read_table(io.BytesIO(body)).to_pylist()]
    assert rows == table.to_pylist()
    assert split_parquet(table, target_bytes=25_000, row_group_rows=2_000) == files  # deterministic bytes
    (whole,) = split_parquet(table)
    assert pq.read_table(io.BytesIO(whole)).num_rows == 30_000
    (empty,) = split_parquet(table.schema.empty_table())
    assert pq.read_table(io.BytesIO(empty)).schema == table.schema


def test_streamed_tables_come_out_as_split_parquet_of_them_joined_file_for_file() -> None:
    # The compaction of a sharded fold's views (foldshard.compact_step) streams bucket files of uneven sizes: the
    # files equal split_parquet of the tables joined (same rows, same cuts at row groups of 2,000 rows).
    table = errors_table("node-a", 30_000)
    pieces = [table.slice(start, length) for start, length in ((0, 1), (1, 4_999), (5_000, 0), (5_000, 13_001),
                                                                (18_001, 11_999))]
    streamed: list[tuple[int, bytes]] = []
    count = stream_parquet(iter(pieces), table.schema, lambda number, body: streamed.append((number, body)),
                           target_bytes=25_000, row_group_rows=2_000)
    files = split_parquet(table, target_bytes=25_000, row_group_rows=2_000)
    assert count == len(files) >= 3 and [number for number, _ in streamed] == list(range(count))
    assert [pq.read_table(io.BytesIO(body)).to_pylist() for _, body in streamed] == \
        [pq.read_table(io.BytesIO(body)).to_pylist() for body in files]
    assert [pq.ParquetFile(io.BytesIO(body)).metadata.num_row_groups for _, body in streamed] == \
        [pq.ParquetFile(io.BytesIO(body)).metadata.num_row_groups for body in files]
    empty: list[tuple[int, bytes]] = []
    assert stream_parquet(iter([table.slice(0, 0)]), table.schema, lambda n, b: empty.append((n, b))) == 1
    assert pq.read_table(io.BytesIO(empty[0][1])).num_rows == 0 and empty[0][0] == 0


def test_a_small_view_is_one_file_named_incident_parquet() -> None:
    s3 = MemoryS3()
    parts = [put_part(s3, node, 50) for node in ("node-b", "node-a")]
    rows = write_incident_views("evidence", s3, "inc-1", parts)
    assert rows["dissect_errors"] == 100
    assert list(s3io.list_keys(s3, "evidence", FOLDER)) == [f"{FOLDER}incident.parquet"]
    expected = errors_table("node-a", 50).to_pylist() + errors_table("node-b", 50).to_pylist()
    names = TABLES["dissect_errors"].names
    assert sorted(repr({k: row[k] for k in names}) for row in view_rows(s3)) == sorted(map(repr, expected))


def test_a_large_view_is_split_and_a_smaller_rerun_empties_the_stale_files() -> None:
    s3 = MemoryS3()
    parts = [put_part(s3, node, 20_000) for node in ("node-a", "node-b", "node-c")]
    write_incident_views("evidence", s3, "inc-1", parts, target_bytes=60_000)
    first = sorted(s3io.list_keys(s3, "evidence", FOLDER))
    assert len(first) >= 3 and f"{FOLDER}incident.parquet" in first and f"{FOLDER}incident-00001.parquet" in first
    assert len(view_rows(s3)) == 60_000
    before = view_rows(s3)
    write_incident_views("evidence", s3, "inc-1", parts, target_bytes=60_000)
    assert sorted(s3io.list_keys(s3, "evidence", FOLDER)) == first
    assert view_rows(s3) == before  # deterministic: the same names and rows
    write_incident_views("evidence", s3, "inc-1", parts[:1], target_bytes=60_000)
    assert sorted(s3io.list_keys(s3, "evidence", FOLDER)) == first  # nothing deleted (WORM) ...
    assert len(view_rows(s3)) == 20_000  # ... but the stale numbers hold no rows: each row is read once


def test_local_views_split_and_a_smaller_rerun_removes_the_stale_files(tmp_path) -> None:  # type: ignore[no-untyped-def]
    def put_local(node: str, rows: int) -> None:
        target = tmp_path / table_part_key("dissect_errors", T0, "inc-1", node)
        target.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(errors_table(node, rows), target)

    for node in ("node-a", "node-b"):
        put_local(node, 20_000)
    write_local_views(tmp_path, "inc-1", target_bytes=50_000)
    folder = tmp_path / FOLDER
    assert len(list(folder.glob("incident*.parquet"))) >= 2
    assert sum(pq.read_table(p).num_rows for p in folder.glob("incident*.parquet")) == 40_000
    put_local("node-b", 10)
    write_local_views(tmp_path, "inc-1")  # the default target: one file again, the numbered ones removed
    assert [p.name for p in folder.glob("incident*.parquet")] == ["incident.parquet"]
    assert pq.read_table(folder / "incident.parquet").num_rows == 20_010


def test_a_fanned_out_nodes_part_and_chunk_parts_make_the_same_view_as_one_part() -> None:
    from pathlib import Path

    from freezeframe.contracts.keys import parse_table_part_key, table_chunk_part_key
    from freezeframe.dissect.job import SegmentSource, dissect_segments
    from freezeframe.dissect.problems import SegmentRef

    sample = Path(__file__).resolve().parents[2] / "fixtures" / "sample.pcap"
    table = dissect_segments("node-a", [SegmentSource(SegmentRef(str(sample), None, None, None),
                                                      path=sample)]).tables["connections"]
    assert table.num_rows > 20

    def put(s3: MemoryS3, key: str, part: pa.Table) -> str:
        sink = io.BytesIO()
        pq.write_table(part, sink)
        s3io.put_bytes(s3, "evidence", key, sink.getvalue(), content_type="application/vnd.apache.parquet")
        return key

    def view(s3: MemoryS3) -> list[dict[str, object]]:
        key = "views/connections/dt=2026-01-01/incident_id=inc-1/incident.parquet"
        return pq.read_table(io.BytesIO(s3io.get_bytes(s3, "evidence", key))).to_pylist()

    whole = MemoryS3()
    write_incident_views("evidence", whole, "inc-1", [put(whole, table_part_key("connections", T0, "inc-1", "node-a"),
                                                          table)])
    split = MemoryS3()
    # Every third row in the node's part (the merged edge rows), the rest in two chunk parts, out of order.
    shuffled = table.take(list(range(table.num_rows))[::-1])
    pieces = [shuffled.take(list(range(start, table.num_rows, 3))) for start in range(3)]
    keys = [put(split, table_part_key("connections", T0, "inc-1", "node-a"), pieces[0]),
            put(split, table_chunk_part_key("connections", T0, "inc-1", "node-a", 0), pieces[1]),
            put(split, table_chunk_part_key("connections", T0, "inc-1", "node-a", 1), pieces[2])]
    assert keys[1].endswith("/node-a~000000.parquet")
    assert {parse_table_part_key(key) for key in keys} == {("connections", "2026-01-01", "inc-1", "node-a")}
    assert write_incident_views("evidence", split, "inc-1", keys)["connections"] == table.num_rows
    assert view(split) == view(whole)


def test_tables_are_written_delta_packed_with_statistics_where_a_query_ranges(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Read back through the file's own metadata and through DuckDB, not through compact.
    import duckdb

    table = errors_table("node-a", 5_000)
    path = tmp_path / "errors.parquet"
    path.write_bytes(compact.parquet_bytes(table))
    meta = pq.ParquetFile(path).metadata
    assert meta.num_row_groups == 3  # 5,000 rows in row groups of ROW_GROUP_ROWS (2,000 here)
    for group in range(meta.num_row_groups):
        row_group = meta.row_group(group)
        columns = {row_group.column(i).path_in_schema: row_group.column(i) for i in range(row_group.num_columns)}
        first = group * 2_000
        last = min(first + 2_000, 5_000) - 1
        for name in ("segment_start_ns", "count"):  # int64 columns: delta-packed, with min/max
            assert "DELTA_BINARY_PACKED" in columns[name].encodings and "PLAIN" not in columns[name].encodings
        statistics = columns["segment_start_ns"].statistics
        assert (statistics.min, statistics.max) == (T0 + first, T0 + last)
        assert (columns["count"].statistics.min, columns["count"].statistics.max) == (first, last)
        for name in ("segment", "message"):  # strings: plain, no min/max
            assert "PLAIN" in columns[name].encodings
            assert columns[name].statistics is None or not columns[name].statistics.has_min_max
        assert {column.compression for column in columns.values()} == {"ZSTD"}
    assert pq.read_table(path).equals(table)
    found = duckdb.sql(f"SELECT count(*), min(count), max(segment) FROM read_parquet('{path}') "
                       f"WHERE segment_start_ns >= {T0 + 4_000}").fetchall()
    assert found == [(1_000, 4_000, f"seg-004999-{'x' * 40}")]
