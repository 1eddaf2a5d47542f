"""Compaction (freezeframe.compact): staged node tables into few, Athena-sized, deterministic files, re-runnable.

The store is the in-memory S3 of the webhook fuzz tests (versions, listings); the real-stack run is
tests/integration/test_dissect_fanout.py.
"""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq

from freezeframe.adapters import s3 as s3io
from freezeframe.compact import compact_incident, compact_table
from freezeframe.config import Settings
from freezeframe.keys import staged_table_key
from freezeframe.schemas import TABLES
from tests.fixtures.webhook_fuzz import MemoryS3

T0 = 1_767_225_600 * 1_000_000_000
SETTINGS = Settings(evidence_bucket="evidence")


def errors_table(node: str, rows: int) -> pa.Table:
    schema = TABLES["dissect_errors"]
    data = {"node": [node] * rows, "segment": [f"seg-{i:06d}-{'x' * 40}" for i in range(rows)],
            "segment_version": [str(i) for i in range(rows)], "segment_start_ns": [T0 + i for i in range(rows)],
            "stage": ["read"] * rows, "kind": ["truncated"] * rows, "count": list(range(rows)),
            "first_offset": [None] * rows, "first_packet": [None] * rows, "message": [f"m{i}" for i in range(rows)]}
    return pa.Table.from_pydict({f.name: data[f.name] for f in schema}, schema=schema)


def stage(s3: MemoryS3, node: str, rows: int) -> str:
    key = staged_table_key("inc-1", "dissect_errors", node)
    sink = io.BytesIO()
    pq.write_table(errors_table(node, rows), sink)
    s3io.put_bytes(s3, "evidence", key, sink.getvalue(), content_type="application/vnd.apache.parquet")
    return key


def rows_of(s3: MemoryS3, keys: list[str]) -> list[dict[str, object]]:
    return [row for key in keys for row in pq.read_table(io.BytesIO(s3io.get_bytes(s3, "evidence", key))).to_pylist()]


def test_small_tables_become_one_file_per_table_with_every_row_in_node_order() -> None:
    s3 = MemoryS3()
    statuses = {node: {"staged": {"dissect_errors": stage(s3, node, 50)}, "window_start_ns": T0}
                for node in ("node-b", "node-a")}
    keys = compact_incident(SETTINGS, s3, "inc-1", statuses)
    assert keys == ["tables/dissect_errors/dt=2026-01-01/incident_id=inc-1/part-00000.parquet"]
    rows = rows_of(s3, keys)
    assert [row["node"] for row in rows] == ["node-a"] * 50 + ["node-b"] * 50
    assert rows == errors_table("node-a", 50).to_pylist() + errors_table("node-b", 50).to_pylist()


def test_large_tables_are_split_by_size_and_a_smaller_rerun_empties_the_stale_files() -> None:
    s3 = MemoryS3()
    staged = [stage(s3, node, 20_000) for node in ("node-a", "node-b", "node-c")]
    first = compact_table(SETTINGS, s3, "dissect_errors", T0, "inc-1", staged, target_bytes=200_000)
    assert len(first) >= 3 and first[0].endswith("part-00000.parquet")
    assert len(rows_of(s3, first)) == 60_000
    again = compact_table(SETTINGS, s3, "dissect_errors", T0, "inc-1", staged, target_bytes=200_000)
    assert again == first
    assert rows_of(s3, again) == rows_of(s3, first)  # deterministic: the same names and rows
    smaller = compact_table(SETTINGS, s3, "dissect_errors", T0, "inc-1", staged[:1], target_bytes=200_000)
    assert len(smaller) < len(first)
    every_file = sorted(s3io.list_keys(s3, "evidence", "tables/dissect_errors/"))
    assert every_file == sorted(first)  # nothing deleted (WORM), the stale numbers are still there ...
    assert len(rows_of(s3, every_file)) == 20_000  # ... but hold no rows: Athena reads each row once


def test_an_incident_without_staged_tables_is_left_alone() -> None:
    assert compact_incident(SETTINGS, MemoryS3(), "inc-1", {"node-a": {"parts": {}}, "node-b": None}) == []
