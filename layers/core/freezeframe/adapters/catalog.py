"""The Glue catalog: registering the partitions a dissection wrote, so Athena finds them at once."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol, cast

from freezeframe.contracts.config import Settings
from freezeframe.contracts.keys import parse_table_part_key


class CatalogClient(Protocol):
    """The Glue operation freezeframe uses (keyword-only, as boto3 takes it)."""

    def batch_create_partition(self, *, DatabaseName: str, TableName: str,
                               PartitionInputList: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]: ...


def glue_client(settings: Settings) -> CatalogClient:
    import boto3  # imported here: only the functions that register partitions need it

    return cast(CatalogClient, boto3.client("glue", region_name=settings.region))


def create_partition(client: CatalogClient, database: str, table: str,
                     partition_input: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """BatchCreatePartition of one partition; returns the per-partition errors the catalog answered (an existing
    partition answers AlreadyExistsException)."""
    response = client.batch_create_partition(DatabaseName=database, TableName=table,
                                             PartitionInputList=[partition_input])
    return list(response.get("Errors", []))


def register_parts(settings: Settings, part_keys: Iterable[str]) -> list[str]:
    """Registers the (dt, incident_id) partition of every written part; a no-op without a Glue database (local
    mode, where DuckDB reads the hive layout directly)."""
    from freezeframe.investigate.glue import register_partitions  # glue imports this module for create_partition

    if not settings.glue_database:
        return []
    client = glue_client(settings)
    registered = []
    for table, dt, incident_id in sorted({p[:3] for k in part_keys if (p := parse_table_part_key(k))}):
        registered += register_partitions(client, settings.glue_database, settings.evidence_bucket, dt, incident_id,
                                          tables=[table])
    return registered
