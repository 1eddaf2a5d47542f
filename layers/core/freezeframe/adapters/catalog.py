"""The Glue catalog: registering the partitions a dissection wrote, so Athena finds them at once."""

from __future__ import annotations

from collections.abc import Iterable

from freezeframe.config import Settings
from freezeframe.glue import register_partitions
from freezeframe.keys import parse_table_part_key


def register_parts(settings: Settings, part_keys: Iterable[str]) -> list[str]:
    """Registers the (dt, incident_id) partition of every written part; a no-op without a Glue database (local
    mode, where DuckDB reads the hive layout directly)."""
    if not settings.glue_database:
        return []
    import boto3  # noqa: PLC0415 - lazy: boto3 takes 0.5 s to import

    client = boto3.client("glue", region_name=settings.region)
    registered = []
    for table, dt, incident_id in sorted({p[:3] for k in part_keys if (p := parse_table_part_key(k))}):
        registered += register_partitions(client, settings.glue_database, settings.evidence_bucket, dt, incident_id,
                                          tables=[table])
    return registered
