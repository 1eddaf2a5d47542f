"""Writing an incident's views: its per-node Parquet parts read, folded by `observers.combine`, written once per table.

The per-node parts stay where the dissection wrote them (`tables/<table>/dt=<day>/incident_id=<id>/<node>.parquet`,
each node's evidence); the views go to `views/<table>/dt=<day>/incident_id=<id>/incident.parquet` (`keys.view_key`),
which DuckDB, Trino and the Glue tables (so Athena) read. They are rewritten from all parts at every finalize pass
and after every local `freezeframe dissect --out DIR`, so a view always reflects every node dissected so far and a
re-run overwrites it instead of adding rows.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from freezeframe.adapters import s3 as s3io
from freezeframe.errors import NotFoundError
from freezeframe.keys import TABLES_ROOT, VIEW_FILE, VIEWS_ROOT, parse_table_part_key, view_key
from freezeframe.observers import combine
from freezeframe.schemas import TABLES

logger = logging.getLogger(__name__)


def _parquet(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def build_views(incident_id: str, part_keys: Iterable[str],
                read: Callable[[str], pa.Table | None]) -> dict[str, tuple[str, pa.Table]]:
    """table -> (view key, view) from the incident's part keys (`read` gives None for a missing part); empty when it
    has no parts."""
    per_node: dict[str, dict[str, pa.Table]] = {}
    days = []
    for key in sorted(set(part_keys)):
        parsed = parse_table_part_key(key)
        if parsed is None or parsed[2] != incident_id or parsed[0] not in TABLES:
            continue
        table, day, _incident, node = parsed
        part = read(key)
        if part is not None:
            per_node.setdefault(node, {})[table] = part
            days.append(day)
    if not per_node:
        return {}
    day = min(days)  # one day per incident in the stack (its window start); locally the earliest node's
    views = combine(per_node).tables
    return {name: (view_key(name, day, incident_id), table) for name, table in views.items()}


def write_incident_views(bucket: str, s3: Any, incident_id: str, part_keys: Iterable[str]) -> dict[str, int]:
    """The incident's views written to the evidence bucket; rows per view."""

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
    for name, (key, table) in build_views(incident_id, part_keys, read).items():
        s3io.put_bytes(s3, bucket, key, _parquet(table), content_type="application/vnd.apache.parquet")
        rows[name] = table.num_rows
    return rows


def write_local_views(root: Path, incident_id: str) -> dict[str, Path]:
    """The incident's views under a local directory laid out like the bucket, from every node's parts there."""
    keys = [path.relative_to(root).as_posix() for path in (root / TABLES_ROOT).glob(
        f"*/dt=*/incident_id={incident_id}/*.parquet")]
    written = {}
    staged = []
    for name, (key, table) in build_views(incident_id, keys, lambda key: pq.read_table(root / key)).items():
        target = root / key
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.partial-{os.getpid()}")
        temporary.write_bytes(_parquet(table))
        staged.append((temporary, target))
        written[name] = target
    for temporary, target in staged:
        os.replace(temporary, target)
    # A view of this incident under another day (an earlier run's first packet was later) would double its rows.
    for stale in (root / VIEWS_ROOT).glob(f"*/dt=*/incident_id={incident_id}/{VIEW_FILE}"):
        if stale not in written.values():
            stale.unlink()
    return written
