"""Writing an incident's views: its per-node Parquet parts read, folded by `observers.combine`, written once per table.

The per-node parts stay where the dissection wrote them (`tables/<table>/dt=<day>/incident_id=<id>/<node>.parquet`,
each node's evidence); the views go to `views/<table>/dt=<day>/incident_id=<id>/incident.parquet` (`keys.view_key`),
which DuckDB, Trino and the Glue tables (so Athena) read. They are rewritten from all parts at every finalize pass
and after every local `freezeframe dissect --out DIR`, so a view always reflects every node dissected so far and a
re-run overwrites it instead of adding rows. A view larger than about 128 MB is written as several numbered files
in the same folder (`freezeframe.dissect.compact`); the engines read the folder, so they see one table either way.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from freezeframe.contracts.errors import NotFoundError
from freezeframe.contracts.keys import (
    TABLES_ROOT,
    VIEWS_ROOT,
    is_chunk_part_key,
    parse_table_part_key,
    view_file_number,
    view_key,
)
from freezeframe.contracts.schemas import TABLES
from freezeframe.dissect.compact import TARGET_BYTES, empty_parquet, split_parquet, with_columns
from freezeframe.dissect.observers import combine

if TYPE_CHECKING:
    from freezeframe.adapters.s3 import ObjectStore

logger = logging.getLogger(__name__)


PARQUET = "application/vnd.apache.parquet"


def _numbered(key: str, count: int) -> list[str]:
    """The keys of a view's `count` files: its key (file 0), then incident-00001.parquet, ..."""
    folder = key.rsplit("/", 1)[0]
    return [key] + [f"{folder}/incident-{number:05d}.parquet" for number in range(1, count)]


def without_moved(part: pa.Table, moved: pa.Array | None) -> pa.Table:
    """A chunk part without the rows its node's merge moved into the node's part (conn_ids ``moved``)."""
    if moved is None or not part.num_rows or "conn_id" not in part.column_names:
        return part
    import pyarrow.compute as pc  # noqa: PLC0415 - the fanned-out path's; `dissect --out` does not load it (kernels)

    return part.filter(pc.invert(pc.fill_null(pc.is_in(part.column("conn_id"), value_set=moved), False)))


def build_views(incident_id: str, part_keys: Iterable[str], read: Callable[[str], pa.Table | None],
                moved: Mapping[str, pa.Array] | None = None, tables: Iterable[str] | None = None,
                day: str | None = None, copied: dict[str, str] | None = None) -> dict[str, tuple[str, pa.Table]]:
    """table -> (view key, view) from the incident's part keys (`read` gives None for a missing part); empty when it
    has no parts. `moved`: per node, the conn_ids whose rows in its chunk parts the merge folded into its part
    (dissect.fanout); those rows are left out. `tables`: only these views (their parts alone are read); `day`: the
    views' day (default: the earliest of the parts read). `copied`, when given, is filled with table -> part key for
    each view that is that one part's rows as read, in its order, with the observation columns after them
    (`observers.Combined.unchanged`): a writer may copy the part's encoded columns (`compact.with_columns`)."""
    wanted = set(TABLES if tables is None else tables)
    pieces: dict[str, dict[str, list[pa.Table]]] = {}
    keys: dict[str, list[str]] = {}
    days = []
    for key in sorted(set(part_keys)):
        parsed = parse_table_part_key(key)
        if parsed is None or parsed[2] != incident_id or parsed[0] not in wanted:
            continue
        table, part_day, _incident, node = parsed
        part = read(key)
        if part is not None and moved and node in moved and is_chunk_part_key(key):
            part = without_moved(part, moved[node])
            keys.setdefault(table, []).append("")  # rows left out: no longer the file's rows, never copied
        if part is not None:
            pieces.setdefault(node, {}).setdefault(table, []).append(part)
            keys.setdefault(table, []).append(key)
            days.append(part_day)
    if not pieces:
        return {}
    # A fanned-out node has its part and one part per time chunk (dissect.fanout): one table again, in a pass's order.
    per_node = {node: {table: parts[0] if len(parts) == 1 else _merged(table, parts) for table, parts in tables.items()}
                for node, tables in pieces.items()}
    day = day or min(days)  # one day per incident in the stack (its window start); locally the earliest node's
    combined = combine(per_node)
    if copied is not None:
        copied.update({name: keys[name][0] for name in combined.unchanged if len(keys.get(name, ())) == 1})
    return {name: (view_key(name, day, incident_id), table) for name, table in combined.tables.items()
            if tables is None or name in wanted}


def _merged(table: str, parts: list[pa.Table]) -> pa.Table:
    """A node's parts of `table` (its part and its time chunks' parts) as one table, in a pass's order."""
    from freezeframe.dissect.chunks import sort_rows  # noqa: PLC0415 - the time chunks' merge: not for one part

    return sort_rows(table, pa.concat_tables([p.cast(TABLES[table]) for p in parts]))


def write_incident_views(bucket: str, s3: ObjectStore, incident_id: str, part_keys: Iterable[str],
                         target_bytes: int = TARGET_BYTES, moved_keys: Mapping[str, str] | None = None,
                         tables: Iterable[str] | None = None, day: str | None = None) -> dict[str, int]:
    """The incident's views written to the evidence bucket (each split into files of about ``target_bytes``); rows
    per view. ``moved_keys``: per fanned-out node, its moved list (``keys.dissect_moved_key``). ``tables`` and
    ``day``: as ``build_views`` (finalize writes only the small tables so when the fold ran in buckets,
    ``dissect.foldshard``). Any other view file in a view's folder (a larger pass's number, or a bucket file of a
    sharded fold) is overwritten empty."""
    from freezeframe.adapters import s3 as s3io  # noqa: PLC0415 - local views (write_local_views) need no S3

    moved = {node: pq.read_table(io.BytesIO(s3io.get_bytes(s3, bucket, key))).column("conn_id").combine_chunks()
             for node, key in (moved_keys or {}).items()}

    def read(key: str) -> pa.Table | None:
        try:
            return pq.read_table(io.BytesIO(s3io.get_bytes(s3, bucket, key)))
        except NotFoundError:
            # A status naming a part that is not there (a pass that died between the two writes): that node's
            # rows are missing from the views, and its state in the summary already says it failed.
            logger.warning("part named by a dissect status is missing", extra={"incident_id": incident_id,
                                                                                "key": key})
            return None

    rows = {}
    for name, (key, table) in build_views(incident_id, part_keys, read, moved, tables, day).items():
        files = split_parquet(table, target_bytes)
        keys = _numbered(key, len(files))
        for file_key, body in zip(keys, files, strict=True):
            s3io.put_bytes(s3, bucket, file_key, body, content_type=PARQUET)
        # A higher number left by an earlier, larger pass: overwritten with no rows (the bucket refuses deletes).
        folder = key.rsplit("/", 1)[0] + "/"
        for stale in s3io.list_keys(s3, bucket, folder):
            if stale not in keys and view_file_number(stale.rsplit("/", 1)[1]) is not None:
                s3io.put_bytes(s3, bucket, stale, empty_parquet(table.schema), content_type=PARQUET)
        rows[name] = table.num_rows
    return rows


def write_local_views(root: Path, incident_id: str, target_bytes: int = TARGET_BYTES,
                      fresh: Mapping[str, pa.Table] | None = None,
                      encoded: Mapping[str, bytes] | None = None) -> dict[str, Path]:
    """The incident's views under a local directory laid out like the bucket, from every node's parts there (each
    split into files of about ``target_bytes``); the first file of each view. ``fresh``: part key -> the table just
    written there, used instead of reading the file back; ``encoded``: part key -> those bytes
    (``compact.parquet_bytes``): a view that is one such part with the observation columns is written by copying
    the part's columns rather than encoding them again (``compact.with_columns``: a one-node `dissect --out`)."""
    known = fresh or {}
    copied: dict[str, str] = {}
    keys = [path.relative_to(root).as_posix() for path in (root / TABLES_ROOT).glob(
        f"*/dt=*/incident_id={incident_id}/*.parquet")]
    written = {}
    every: set[Path] = set()
    staged = []

    def read(key: str) -> pa.Table:
        return known[key] if key in known else pq.read_table(root / key)

    for name, (key, table) in build_views(incident_id, keys, read, copied=copied).items():
        source = copied.get(name, "")
        whole = None
        part = (encoded or {}).get(source)
        if part is not None and source in known and len(part) < target_bytes:  # (a larger view is split below)
            whole = with_columns(part, known[source].schema, table)
        files = [whole] if whole is not None and len(whole) < target_bytes else split_parquet(table, target_bytes)
        for file_key, body in zip(_numbered(key, len(files)), files, strict=True):
            target = root / file_key
            target.parent.mkdir(parents=True, exist_ok=True)
            temporary = target.with_name(f".{target.name}.partial-{os.getpid()}")
            temporary.write_bytes(body)
            staged.append((temporary, target))
            every.add(target)
        written[name] = root / key
    for temporary, target in staged:
        os.replace(temporary, target)
    # A view file of this incident under another day (an earlier run's first packet was later) or with a number this
    # run does not need would double rows.
    for stale in (root / VIEWS_ROOT).glob(f"*/dt=*/incident_id={incident_id}/incident*.parquet"):
        if stale not in every and view_file_number(stale.name) is not None:
            stale.unlink()
    return written
