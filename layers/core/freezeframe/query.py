"""Local SQL: Athena-dialect queries transpiled by sqlglot and run by DuckDB over the evidence bucket's tables.

Each table of `schemas.TABLES` becomes a view over a hive-partitioned pyarrow dataset read straight from S3, so the
SQL sees the same columns as Athena, partition columns included. Names may be qualified with the Glue database
(`freezeframe.connections`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import sqlglot
from pyarrow import fs as pafs

from freezeframe.adapters import s3 as s3io
from freezeframe.config import Settings
from freezeframe.errors import FreezeframeError
from freezeframe.keys import table_prefix
from freezeframe.schemas import PARTITION_KEYS, TABLES

DATABASE = "freezeframe"


class QueryError(FreezeframeError):
    """The SQL could not be transpiled or executed."""


@dataclass(frozen=True, slots=True)
class QueryResult:
    sql: str
    duckdb_sql: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]

    def records(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, (_jsonable(v) for v in row), strict=True)) for row in self.rows]


def transpile(sql: str) -> str:
    try:
        statements = sqlglot.transpile(sql, read="athena", write="duckdb")
    except sqlglot.errors.ParseError as exc:
        raise QueryError(f"not valid Athena SQL: {exc}") from exc
    if len(statements) != 1:
        raise QueryError(f"expected one SQL statement, got {len(statements)}")
    return statements[0]


def partitioning() -> ds.Partitioning:
    return ds.partitioning(pa.schema([(key, pa.string()) for key in PARTITION_KEYS]), flavor="hive")


def _filesystem(settings: Settings) -> pafs.S3FileSystem:
    kwargs: dict[str, Any] = {"region": settings.region}
    resolved = s3io.credentials(settings)
    if resolved is not None:
        kwargs.update(access_key=resolved[0], secret_key=resolved[1], session_token=resolved[2])
    if settings.s3_endpoint:
        scheme, _, host = settings.s3_endpoint.partition("://")
        kwargs.update(endpoint_override=host, scheme=scheme)
    return pafs.S3FileSystem(**kwargs)


def connect(settings: Settings) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with one view per table (schema `freezeframe` and unqualified)."""
    s3 = s3io.client(settings)
    filesystem = _filesystem(settings)
    con = duckdb.connect()
    con.execute("SET TimeZone='UTC'")
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {DATABASE}")
    for name, schema in TABLES.items():
        keys = [k for k in s3io.list_keys(s3, settings.evidence_bucket, table_prefix(name)) if k.endswith(".parquet")]
        full_schema = schema
        for key in PARTITION_KEYS:
            full_schema = full_schema.append(pa.field(key, pa.string()))
        if keys:
            dataset = ds.dataset([f"{settings.evidence_bucket}/{k}" for k in keys], schema=full_schema,
                                 format="parquet", filesystem=filesystem, partitioning=partitioning(),
                                 partition_base_dir=f"{settings.evidence_bucket}/{table_prefix(name).rstrip('/')}")
            source: Any = dataset
        else:
            source = full_schema.empty_table()
        con.register(f"_ff_{name}", source)
        # Table names come from schemas.TABLES, never from user input.
        con.execute(f'CREATE VIEW {DATABASE}."{name}" AS SELECT * FROM "_ff_{name}"')  # noqa: S608
        con.execute(f'CREATE VIEW "{name}" AS SELECT * FROM "_ff_{name}"')  # noqa: S608
    return con


def run(settings: Settings, sql: str, con: duckdb.DuckDBPyConnection | None = None) -> QueryResult:
    translated = transpile(sql)
    connection = con or connect(settings)
    try:
        cursor = connection.execute(translated)
        columns = tuple(d[0] for d in cursor.description or ())
        rows = tuple(tuple(r) for r in cursor.fetchall())
    except duckdb.Error as exc:
        raise QueryError(f"query failed: {exc}") from exc
    return QueryResult(sql, translated, columns, rows)


def format_table(result: QueryResult, max_width: int = 48) -> str:
    cells = [[_cell(v, max_width) for v in row] for row in result.rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(result.columns)]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    out = [line, "| " + " | ".join(c.ljust(w) for c, w in zip(result.columns, widths, strict=True)) + " |", line]
    out += ["| " + " | ".join(v.rjust(w) if _numeric(v) else v.ljust(w) for v, w in zip(row, widths, strict=True))
            + " |" for row in cells]
    out += [line, f"({len(cells)} row{'s' if len(cells) != 1 else ''})"]
    return "\n".join(out)


def to_json(result: QueryResult) -> str:
    return json.dumps({"sql": result.sql, "columns": list(result.columns), "rows": result.records()})


def _cell(value: Any, max_width: int) -> str:
    text = "NULL" if value is None else str(_jsonable(value))
    return text if len(text) <= max_width else text[: max_width - 1] + "…"


def _numeric(text: str) -> bool:
    return text.replace(".", "", 1).lstrip("-").isdigit()


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [_jsonable(v) for v in value]
    return value
