"""A one-node view written by copying its part's encoded columns (`compact.with_columns`, the compiled core's
`splice_parquet`) instead of encoding them a second time.

The reference is the view encoded the usual way (`split_parquet`, which `write_local_views` falls back to): both are
read with pyarrow (rows, schema and its metadata) and with DuckDB, and their per-column statistics, which the engines
prune row groups with, are compared. That the copy really happened is read from the files: each column chunk of the
part is in the view byte for byte.
"""

from __future__ import annotations

import io
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from freezeframe.contracts.keys import view_file_number
from freezeframe.contracts.schemas import TABLES, VIEWS
from freezeframe.dissect import compact, views
from freezeframe.dissect.files import dissect_files
from freezeframe.dissect.observers import combine

native = pytest.importorskip("freezeframe_native", reason="the compiled core is not installed")

SAMPLE = Path(__file__).resolve().parents[2] / "fixtures" / "sample.pcap"


def _dissect(out: Path, monkeypatch: pytest.MonkeyPatch, copy: bool) -> set[str]:
    """Dissects the sample into ``out``; the views written by copying the part's columns."""
    copied = set()

    def spy(part: bytes, part_schema: pa.Schema, view: pa.Table) -> bytes | None:
        whole = compact.with_columns(part, part_schema, view) if copy else None
        if whole is not None:
            copied.add(view.schema.metadata[b"table"].decode())
        return whole

    with monkeypatch.context() as patch:
        patch.setattr(views, "with_columns", spy)
        dissect_files([SAMPLE], out, node="node-a", incident_id="inc-1", progress=False)
    return copied


def _only(out: Path, root: str, table: str) -> Path:
    (found,) = out.glob(f"{root}/{table}/dt=*/incident_id=inc-1/*.parquet")
    return found


def _chunks(path: Path) -> dict[tuple[int, str], bytes]:
    """(row group, column) -> the bytes of that column chunk (its pages) in the file."""
    body = path.read_bytes()
    meta = pq.read_metadata(path)
    found = {}
    for group in range(meta.num_row_groups):
        for index in range(meta.num_columns):
            column = meta.row_group(group).column(index)
            start = column.dictionary_page_offset if column.has_dictionary_page else column.data_page_offset
            found[group, column.path_in_schema] = body[start:start + column.total_compressed_size]
    return found


def _statistics(path: Path) -> list[tuple[str, object]]:
    meta = pq.read_metadata(path)
    return [(meta.schema.column(i).path, meta.row_group(g).column(i).statistics)
            for g in range(meta.num_row_groups) for i in range(meta.num_columns)]


@pytest.mark.parametrize("row_group_rows", [7, compact.ROW_GROUP_ROWS], ids=["many-row-groups", "one-row-group"])
def test_a_copied_view_reads_as_the_encoded_view_and_holds_the_parts_pages(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, row_group_rows: int) -> None:
    monkeypatch.setattr(compact, "ROW_GROUP_ROWS", row_group_rows)
    copied_tables = _dissect(tmp_path / "copied", monkeypatch, copy=True)
    assert not _dissect(tmp_path / "encoded", monkeypatch, copy=False)
    parts = {table: pq.read_table(_only(tmp_path / "copied", "tables", table)) for table in TABLES}
    # every view the fold leaves as its part was copied: in the sample, the connections, dns and tls views (http has
    # two requests on one connection at the same instant, a tie the fold orders its own way; empty views are encoded)
    assert copied_tables == combine({"node-a": parts}).unchanged
    assert {"connections", "dns", "tls"} <= copied_tables
    for table in TABLES:
        copied, encoded = _only(tmp_path / "copied", "views", table), _only(tmp_path / "encoded", "views", table)
        expected = pq.read_table(encoded)
        assert pq.read_table(copied).equals(expected, check_metadata=True), table
        assert pq.read_table(copied).schema.equals(VIEWS[table], check_metadata=False), table
        assert _statistics(copied) == _statistics(encoded), table
        query = "SELECT * FROM read_parquet(?) ORDER BY ALL"
        assert (duckdb.execute(query, [str(copied)]).fetchall()
                == duckdb.execute(query, [str(encoded)]).fetchall()), table
    for table in copied_tables:
        part = _chunks(_only(tmp_path / "copied", "tables", table))
        view = _chunks(_only(tmp_path / "copied", "views", table))
        assert {key: view[key] for key in part} == part, table  # the part's pages, in the view as they are
        rows = parts[table].num_rows
        assert pq.read_metadata(_only(tmp_path / "copied", "views", table)).num_row_groups == max(
            1, -(-rows // row_group_rows)), table


def _tables(out: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, pa.Table]:
    _dissect(out, monkeypatch, copy=False)
    return {table: pq.read_table(_only(out, "tables", table)) for table in TABLES}


def test_only_a_part_kept_whole_and_in_order_is_marked_for_copying(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    parts = _tables(tmp_path, monkeypatch)
    assert {"connections", "dns", "tls"} <= combine({"node-a": parts}).unchanged
    reversed_connections = parts["connections"].take(pa.array(range(parts["connections"].num_rows - 1, -1, -1)))
    assert "connections" not in combine({"node-a": {**parts, "connections": reversed_connections}}).unchanged
    two_nodes = combine({"node-a": parts, "node-b": {"connections": parts["connections"].set_column(
        parts["connections"].schema.get_field_index("node"), "node", pa.array(
            ["node-b"] * parts["connections"].num_rows))}})
    assert "connections" not in two_nodes.unchanged


def test_with_columns_declines_what_it_cannot_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parts = _tables(tmp_path, monkeypatch)
    part = parts["dns"]
    view = combine({"node-a": parts}).tables["dns"]
    encoded = compact.parquet_bytes(part)
    assert compact.with_columns(encoded, part.schema, view) is not None
    other_groups = io.BytesIO()
    pq.write_table(part, other_groups, row_group_size=3)  # another writer's row groups: no common boundaries
    assert compact.with_columns(other_groups.getvalue(), part.schema, view) is None
    assert compact.with_columns(encoded, parts["http"].schema, view) is None  # not this view's leading columns
    monkeypatch.setattr("freezeframe.dissect.choice.extension", lambda: None)
    assert compact.with_columns(encoded, part.schema, view) is None  # no compiled core: the view is encoded


def test_a_panic_in_the_core_while_copying_is_a_warning_and_the_view_is_encoded(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    parts = _tables(tmp_path, monkeypatch)
    view = combine({"node-a": parts}).tables["dns"]

    class Panicking:
        @staticmethod
        def splice_parquet(*_args: object) -> bytes:
            raise RuntimeError("freezeframe_native: splice_parquet panicked")  # what guarded() raises on a panic

    monkeypatch.setattr("freezeframe.dissect.choice.extension", lambda: Panicking)
    with caplog.at_level("WARNING", logger="freezeframe.dissect.compact"):
        assert compact.with_columns(compact.parquet_bytes(parts["dns"]), parts["dns"].schema, view) is None
    assert [record.reason for record in caplog.records] == ["freezeframe_native: splice_parquet panicked"]


@pytest.mark.parametrize("left, message", [(b"", "not a Parquet file"), (b"PAR1 junk", "not a Parquet file"),
                                           ("truncated", "not a Parquet file"), ("same", "in both files")])
def test_splice_refuses_files_that_do_not_line_up(left: bytes | str, message: str) -> None:
    table = pa.table({"a": [1, 2, 3]})
    sink = io.BytesIO()
    pq.write_table(table, sink)
    good = sink.getvalue()
    other = io.BytesIO()
    pq.write_table(pa.table({"b": ["x", "y", "z"]}), other)
    body = {"truncated": good[:-9], "same": good}.get(left, left) if isinstance(left, str) else left
    with pytest.raises(ValueError, match=message):
        native.splice_parquet(body, good if left == "same" else other.getvalue(), [])


def test_a_view_past_the_target_size_is_split_as_before_not_copied(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compact, "ROW_GROUP_ROWS", 3)  # so the sample's 21 connections can make several files
    out = tmp_path / "out"
    _dissect(out, monkeypatch, copy=True)
    whole = pq.read_table(_only(out, "views", "connections"))
    keys = [path.relative_to(out).as_posix() for path in out.glob("tables/*/dt=*/incident_id=inc-1/*.parquet")]
    fresh = {key: pq.read_table(out / key) for key in keys}
    encoded = {key: (out / key).read_bytes() for key in keys}  # the parts as dissect_files wrote them
    part_bytes = len(encoded[next(key for key in keys if key.startswith("tables/connections/"))])
    views.write_local_views(out, "inc-1", target_bytes=part_bytes // 3, fresh=fresh, encoded=encoded)
    files = sorted(out.glob("views/connections/dt=*/incident_id=inc-1/*.parquet"),
                   key=lambda path: view_file_number(path.name) or 0)
    assert len(files) > 1
    assert pa.concat_tables([pq.read_table(path) for path in files]).equals(whole)


def test_a_part_whose_moved_rows_are_left_out_is_never_marked_for_copying(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from freezeframe.contracts.keys import table_chunk_part_key

    dns = _tables(tmp_path, monkeypatch)["dns"]
    key = table_chunk_part_key("dns", 1_767_225_600 * 10**9, "inc-1", "node-a", 0)

    def copied_with(moved: dict[str, pa.Array] | None) -> dict[str, str]:
        copied: dict[str, str] = {}
        views.build_views("inc-1", [key], lambda _key: dns, moved=moved, tables=["dns"], copied=copied)
        return copied

    assert copied_with(None) == {"dns": key}
    assert copied_with({"node-a": dns.column("conn_id").combine_chunks().slice(0, 1)}) == {}
