"""Compaction of an incident's views: a view larger than about 128 MB written as several numbered files.

The query engines (DuckDB, Trino, the Glue tables so Athena) read the views (``freezeframe.dissect.views``), one folder
per
table and incident: ``views/<table>/dt=<day>/incident_id=<id>/``. Most views are small and are one file,
``incident.parquet``. A view whose Parquet reaches ``TARGET_BYTES`` (about 128 MB: Athena's sweet spot between split
overhead and parallelism) is cut, in its row order, into ``incident.parquet``, ``incident-00001.parquet``, ... each
about that size (``keys.view_key``). The per-node parts under ``tables/`` are each node's evidence and are never
rewritten.

Names and contents depend only on the view, so a re-run writes the same files again. The evidence bucket keeps every
version (Object Lock) and refuses deletes: a file number that an earlier, larger pass wrote and this pass does not
need is overwritten with an empty file, so no engine reads a stale row.
"""

from __future__ import annotations

import functools
import io
import logging
from collections.abc import Callable, Iterable
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

logger = logging.getLogger(__name__)

TARGET_BYTES = 128 * 2**20
ROW_GROUP_ROWS = 128 * 1024


@functools.cache
def write_options(schema: pa.Schema) -> dict[str, Any]:
    """How every table and view is written (the `pq.ParquetWriter` options for `schema`). Trino (the engine under
    Athena) and DuckDB read all of it: tests/integration/test_engines_agree.py reads the views through both.

    - zstd pages. No dictionary pages: most columns (times, ids, addresses, counters) have too many distinct values for
      a dictionary to pay, and the writer spent a third of its time building dictionaries it then abandoned; without
      them the files come out smaller (7.1 MB instead of 9.4 MB for the kernel-traffic bench's tables) and faster.
    - Integer and timestamp columns in DELTA_BINARY_PACKED, the rest PLAIN: times in row order, ports and counters
      shrink to a few bits a value before zstd sees them, so compression has a fraction of the bytes to do.
    - Min/max statistics on the columns a query ranges over (times, numbers, flags), which let the engines skip row
      groups and files. Not on strings and lists: ids, addresses and names are spread over the whole range in every
      row group, so their min/max prunes nothing, and computing them was a fifth of the writer's time.

    Together: the kernel-traffic bench's four tables write in 0.14 CPU s instead of 0.23, and take 7.3 MB instead of
    7.2.
    """
    ranged = [field.name for field in schema if _ranged(field.type)]
    delta = {field.name: "DELTA_BINARY_PACKED" for field in schema
             if pa.types.is_integer(field.type) or pa.types.is_timestamp(field.type)}
    return {"compression": "zstd", "use_dictionary": False, "write_statistics": ranged or False,
            "column_encoding": delta or None}


def _ranged(type_: pa.DataType) -> bool:
    return (pa.types.is_integer(type_) or pa.types.is_floating(type_) or pa.types.is_temporal(type_)
            or pa.types.is_boolean(type_) or pa.types.is_decimal(type_))


def parquet_bytes(table: pa.Table) -> bytes:
    """The table as one Parquet file (`write_options`), in row groups of ``ROW_GROUP_ROWS`` rows."""
    sink = io.BytesIO()
    pq.write_table(table, sink, row_group_size=ROW_GROUP_ROWS, **write_options(table.schema))
    return sink.getvalue()


def with_columns(part: bytes, part_schema: pa.Schema, view: pa.Table) -> bytes | None:
    """The view as one Parquet file made of the encoded ``part`` (``parquet_bytes`` of a table of ``part_schema``
    whose rows are the view's, in its order) and the view's further columns: the part's column chunks are copied
    as they are, only the further columns are encoded (the compiled core's ``splice_parquet``). The same rows, types,
    statistics and metadata as ``parquet_bytes(view)``; None without the compiled core, or when the view's first
    columns are not the part's."""
    from freezeframe.dissect.choice import extension  # noqa: PLC0415 - the Lambda that writes views ships no core

    native = extension()
    if native is None or len(view.schema) == len(part_schema) or not leads(part_schema, view.schema):
        return None
    further = pa.schema(list(view.schema)[len(part_schema):])
    extra = pa.Table.from_arrays([view.column(field.name) for field in further], schema=further)
    try:
        spliced: bytes = native.splice_parquet(part, parquet_bytes(extra), _key_value(view.schema))
    except ValueError:  # not parquet_bytes' row groups (another writer's part): encode the view instead
        return None
    except RuntimeError as exc:  # a panic in the core, turned into an exception: the view is still written, encoded
        logger.warning("the compiled core could not copy a part's columns; the view is encoded instead",
                       extra={"table": (view.schema.metadata or {}).get(b"table", b"").decode(), "reason": str(exc)})
        return None
    return spliced


def leads(part: pa.Schema, view: pa.Schema) -> bool:
    """Whether the view's first columns are the part's columns: their names and types, in their order."""
    return len(part) <= len(view) and all(p.name == v.name and p.type == v.type
                                          for p, v in zip(part, view, strict=False))


@functools.cache
def _key_value(schema: pa.Schema) -> list[tuple[str, str]]:
    """The key-value metadata pyarrow writes for ``schema`` (the Arrow schema, which readers restore types from)."""
    found = pq.read_metadata(io.BytesIO(empty_parquet(schema))).metadata or {}
    return [(key.decode(), value.decode()) for key, value in found.items()]


def split_parquet(table: pa.Table, target_bytes: int = TARGET_BYTES, row_group_rows: int | None = None) -> list[bytes]:
    """The table as one or more zstd Parquet files, in row order, a new file begun once one reaches
    ``target_bytes``; an empty table is one empty file (the partition exists and reads as empty)."""
    row_group_rows = row_group_rows or ROW_GROUP_ROWS
    files: list[bytes] = []
    sink = io.BytesIO()
    writer: pq.ParquetWriter | None = None
    for batch in table.to_batches(max_chunksize=row_group_rows):
        if writer is None:
            writer = pq.ParquetWriter(sink, table.schema, **write_options(table.schema))
        writer.write_table(pa.Table.from_batches([batch], schema=table.schema), row_group_size=row_group_rows)
        if sink.tell() >= target_bytes:
            writer.close()
            files.append(sink.getvalue())
            writer, sink = None, io.BytesIO()
    if writer is not None:
        writer.close()
        files.append(sink.getvalue())
    if not files:
        pq.write_table(table.schema.empty_table(), sink, **write_options(table.schema))
        files.append(sink.getvalue())
    return files


def stream_parquet(tables: Iterable[pa.Table], schema: pa.Schema, on_file: Callable[[int, bytes], None],
                   target_bytes: int = TARGET_BYTES, row_group_rows: int | None = None) -> int:
    """``split_parquet`` of the tables one after another, without holding them: rows are written in row groups of
    ``row_group_rows`` as they come, and each file is handed to ``on_file(number, bytes)`` once it reaches
    ``target_bytes`` (then dropped). Memory: one table, one row group and one file. Returns the number of files (an
    empty input is one empty file)."""
    row_group_rows = row_group_rows or ROW_GROUP_ROWS
    files = 0
    sink = io.BytesIO()
    writer: pq.ParquetWriter | None = None
    pending: list[pa.RecordBatch] = []
    held = 0

    def flush() -> None:
        nonlocal writer, sink, files, pending, held
        if writer is None:
            writer = pq.ParquetWriter(sink, schema, **write_options(schema))
        writer.write_table(pa.Table.from_batches(pending, schema=schema), row_group_size=row_group_rows)
        pending, held = [], 0
        if sink.tell() >= target_bytes:
            writer.close()
            on_file(files, sink.getvalue())
            files, writer, sink = files + 1, None, io.BytesIO()

    for table in tables:
        for batch in table.cast(schema).to_batches(max_chunksize=row_group_rows):
            while batch.num_rows:
                take = min(batch.num_rows, row_group_rows - held)
                pending.append(batch.slice(0, take))
                held += take
                batch = batch.slice(take)
                if held == row_group_rows:
                    flush()
    if pending:
        flush()
    if writer is not None:
        writer.close()
        on_file(files, sink.getvalue())
        files += 1
    if not files:
        on_file(0, empty_parquet(schema))
        files = 1
    return files


def empty_parquet(schema: pa.Schema) -> bytes:
    """A file with the schema and no rows: what a stale file number is overwritten with."""
    sink = io.BytesIO()
    pq.write_table(schema.empty_table(), sink, **write_options(schema))
    return sink.getvalue()
