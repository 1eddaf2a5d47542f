"""Compaction: an incident's staged per-node tables rewritten as a few Athena-sized files per table.

The fan-out's merge step (``dissect.fanout.merge_node``) stages each node's tables under
``keys.staged_table_key``, outside the table locations Athena reads. Finalize then writes, per table, the rows of
every node (nodes in name order, each node's rows in its own time order) into
``tables/<table>/dt=<day>/incident_id=<id>/part-00000.parquet``, ``part-00001.parquet``, ..., starting a new file once
one reaches ``TARGET_BYTES`` (about 128 MB: Athena's sweet spot between split overhead and parallelism); a table
smaller than that is one file. Names and contents depend only on the staged inputs, so a re-run writes the same
files again. The evidence bucket keeps every version (Object Lock) and refuses deletes: a file number that a
previous run wrote and this run does not need is overwritten with an empty file, so Athena never reads a stale row.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from freezeframe.adapters import s3 as s3io
from freezeframe.config import Settings
from freezeframe.errors import NotFoundError
from freezeframe.keys import compacted_part_key, parse_table_part_key
from freezeframe.schemas import TABLES

logger = logging.getLogger(__name__)
TARGET_BYTES = 128 * 2**20
ROW_GROUP_ROWS = 128 * 1024
PARQUET = "application/vnd.apache.parquet"


def staged_inputs(statuses: Mapping[str, Mapping[str, Any] | None]) -> dict[str, list[str]]:
    """Per table, the staged keys of the nodes whose status names some (nodes in name order)."""
    out: dict[str, list[str]] = {}
    for node in sorted(statuses):
        status = statuses[node]
        for table, key in sorted(((status or {}).get("staged") or {}).items()):
            out.setdefault(table, []).append(key)
    return out


def _upload(settings: Settings, s3: Any, key: str, sink: io.BytesIO) -> None:
    s3io.put_bytes(s3, settings.evidence_bucket, key, sink.getvalue(), content_type=PARQUET)


def compact_table(settings: Settings, s3: Any, table: str, window_start_ns: int, incident_id: str,
                  staged: Iterable[str], target_bytes: int = TARGET_BYTES) -> list[str]:
    """Writes the table's compacted files; returns their keys (empty files for stale numbers are not listed)."""
    schema = TABLES[table]
    written: list[str] = []
    sink = io.BytesIO()
    writer: pq.ParquetWriter | None = None

    def close() -> None:
        nonlocal writer, sink
        if writer is None:
            return
        writer.close()
        key = compacted_part_key(table, window_start_ns, incident_id, len(written))
        _upload(settings, s3, key, sink)
        written.append(key)
        writer, sink = None, io.BytesIO()

    for key in staged:
        body = s3io.get_bytes(s3, settings.evidence_bucket, key)
        source = pq.ParquetFile(io.BytesIO(body))
        for batch in source.iter_batches(batch_size=ROW_GROUP_ROWS):
            if writer is None:
                writer = pq.ParquetWriter(sink, schema, compression="zstd")
            writer.write_table(pa.Table.from_batches([batch]).cast(schema), row_group_size=ROW_GROUP_ROWS)
            if sink.tell() >= target_bytes:
                close()
    close()
    if not written:  # an empty table is still one (empty) file, so the partition exists and reads as empty
        with pq.ParquetWriter(sink, schema, compression="zstd") as empty:
            empty.write_table(schema.empty_table())
        key = compacted_part_key(table, window_start_ns, incident_id, 0)
        _upload(settings, s3, key, sink)
        written.append(key)
    _empty_stale(settings, s3, table, window_start_ns, incident_id, len(written))
    return written


def _empty_stale(settings: Settings, s3: Any, table: str, window_start_ns: int, incident_id: str, used: int) -> None:
    """A higher file number left by an earlier, larger run is overwritten with no rows (deletes are refused)."""
    prefix = compacted_part_key(table, window_start_ns, incident_id, 0).rsplit("/", 1)[0] + "/"
    for key in s3io.list_keys(s3, settings.evidence_bucket, prefix):
        parsed = parse_table_part_key(key)
        if parsed is None or not parsed[3].startswith("part-"):
            continue
        try:
            number = int(parsed[3][5:])
        except ValueError:
            continue
        if number >= used:
            sink = io.BytesIO()
            pq.write_table(TABLES[table].empty_table(), sink, compression="zstd")
            _upload(settings, s3, key, sink)


def compact_incident(settings: Settings, s3: Any, incident_id: str,
                     statuses: Mapping[str, Mapping[str, Any] | None]) -> list[str]:
    """Every staged table of the incident compacted; the keys of the files with rows (for partitions, summary)."""
    inputs = staged_inputs(statuses)
    if not inputs:
        return []
    window_start_ns = next(int(s["window_start_ns"]) for s in statuses.values() if s and "window_start_ns" in s)
    keys = []
    for table, staged in sorted(inputs.items()):
        try:
            keys += compact_table(settings, s3, table, window_start_ns, incident_id, staged)
        except NotFoundError:
            logger.error("a staged table is missing", extra={"incident_id": incident_id, "table": table})
            raise
    logger.info("incident compacted", extra={"incident_id": incident_id, "files": len(keys)})
    return keys
