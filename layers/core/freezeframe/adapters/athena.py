"""Athena: the typed interface of the four calls a query makes (start, poll, page through results, stop)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, cast

from freezeframe.contracts.config import Settings


class AthenaClient(Protocol):
    """The Athena operations freezeframe uses (keyword-only, as boto3 takes them)."""

    def start_query_execution(self, *, QueryString: str, WorkGroup: str,
                              QueryExecutionContext: Mapping[str, str]) -> Mapping[str, Any]: ...
    def get_query_execution(self, *, QueryExecutionId: str) -> Mapping[str, Any]: ...
    def get_query_results(self, *, QueryExecutionId: str, MaxResults: int, **kwargs: Any) -> Mapping[str, Any]: ...
    def stop_query_execution(self, *, QueryExecutionId: str) -> Mapping[str, Any]: ...


def athena_client(settings: Settings) -> AthenaClient:
    """The boto3 Athena client (credentials from the usual AWS chain)."""
    import boto3  # imported here: only the CLI's Athena engine needs it

    return cast(AthenaClient, boto3.client("athena", region_name=settings.region))


def start_query(client: AthenaClient, sql: str, workgroup: str, database: str) -> str:
    """Starts `sql` in the workgroup with `database` as the default; returns the execution id."""
    started = client.start_query_execution(QueryString=sql, WorkGroup=workgroup,
                                           QueryExecutionContext={"Database": database})
    return str(started["QueryExecutionId"])


def query_execution(client: AthenaClient, execution_id: str) -> dict[str, Any]:
    """The execution's `QueryExecution` (its Status, Statistics)."""
    return dict(client.get_query_execution(QueryExecutionId=execution_id)["QueryExecution"])


def results_page(client: AthenaClient, execution_id: str, page_size: int, token: str | None) -> Mapping[str, Any]:
    """One page of results (ResultSet and NextToken); `token` None for the first."""
    if token:
        return client.get_query_results(QueryExecutionId=execution_id, MaxResults=page_size, NextToken=token)
    return client.get_query_results(QueryExecutionId=execution_id, MaxResults=page_size)


def stop_query(client: AthenaClient, execution_id: str) -> None:
    client.stop_query_execution(QueryExecutionId=execution_id)
