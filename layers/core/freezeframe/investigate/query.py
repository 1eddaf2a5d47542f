"""Incident SQL: Athena-dialect queries run locally (sqlglot transpiles them, DuckDB runs them) or on Athena itself.

Locally, each table of `schemas.TABLES` becomes a view over a hive-partitioned pyarrow dataset, read straight from
the evidence bucket (S3) or from a local directory laid out like it, so the SQL sees the same columns as Athena,
partition columns included. Names may be qualified with the Glue database (`freezeframe.connections`).

SQL that DuckDB cannot run faithfully (Athena's `"$path"`, IPADDRESS/CIDR types, Java-pattern date functions,
zipped UNNEST, weighted or unweighted approx_percentile, division by an exact decimal, ORDER BY names that Trino
resolves to output columns) is refused with an `UnsupportedSqlError` naming the construct, instead of failing
obscurely or, worse, silently returning different numbers. Each of these was found by running the product's SQL on
Trino (tests/integration/test_engines_agree.py).

On Athena (`run_athena`), the query is started in a workgroup and database, polled with exponential backoff,
its results are paginated and typed from the result metadata, the bytes scanned are reported, and a
KeyboardInterrupt (Ctrl-C) stops the query execution and becomes a `QueryCancelledError`.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import sqlglot
from pyarrow import fs as pafs
from sqlglot import exp
from sqlglot.optimizer.annotate_types import annotate_types
from sqlglot.optimizer.qualify import qualify

from freezeframe.adapters import athena
from freezeframe.adapters import s3 as s3io
from freezeframe.adapters.arrow_fs import arrow_filesystem
from freezeframe.adapters.athena import AthenaClient
from freezeframe.contracts.config import Settings
from freezeframe.contracts.errors import FreezeframeError
from freezeframe.contracts.keys import TABLES_ROOT, VIEWS_ROOT, view_prefix
from freezeframe.contracts.schemas import PARTITION_KEYS, TABLES, VIEWS

DATABASE = "freezeframe"
FORMATS = ("table", "csv", "json")


class QueryError(FreezeframeError):
    """The SQL could not be transpiled or executed."""


class UnsupportedSqlError(QueryError):
    """Valid Athena SQL that the local engine cannot run faithfully (run it with --athena)."""


class QueryCancelledError(QueryError):
    """The Athena query was cancelled (by Ctrl-C, by someone else, or by the workgroup's scan cutoff)."""


@dataclass(frozen=True, slots=True)
class QueryResult:
    sql: str
    duckdb_sql: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]
    engine: str = "duckdb"
    bytes_scanned: int | None = None
    query_execution_id: str | None = None

    def records(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, (_jsonable(v) for v in row), strict=True)) for row in self.rows]


# ---------------------------------------------------------------- what the local engine refuses

# Athena types with no DuckDB equivalent.
_UNSUPPORTED_TYPES = {"IPADDRESS", "IPPREFIX", "HYPERLOGLOG", "P4HYPERLOGLOG", "QDIGEST", "TDIGEST", "SETDIGEST"}
# Athena functions DuckDB either lacks or runs with other semantics (Java date patterns vs strftime).
_UNSUPPORTED_FUNCTIONS = {
    "FORMAT_DATETIME": "it takes a Java date pattern; use date_format(ts, '%Y-%m-%d %H:%i') or date_trunc",
    "PARSE_DATETIME": "it takes a Java date pattern; use date_parse with a MySQL-style pattern",
    "CONTAINS": "it tests CIDR membership on Athena; use a string prefix or compare octets",
}


# What to write instead of approx_percentile: an exact nearest-rank percentile both engines compute alike.
EXACT_PERCENTILE_HINT = ("element_at(array_sort(array_agg(x) FILTER (WHERE x IS NOT NULL)), "
                         "greatest(1, CAST(ceil(p * count(x)) AS integer)))")


def unsupported_constructs(sql: str) -> list[str]:
    """Descriptions of the constructs in `sql` that the local engine cannot run (empty when it can run all)."""
    try:
        tree = sqlglot.parse_one(sql, read="athena")
    except sqlglot.errors.ParseError as exc:
        raise QueryError(f"not valid Athena SQL: {exc}") from exc
    found: list[str] = []
    for node in tree.walk():
        if isinstance(node, exp.Column) and node.name.startswith("$"):
            found.append(f'the hidden column "{node.name}" exists only on Athena')
        elif isinstance(node, exp.DataType) and getattr(node.this, "name", "") in _UNSUPPORTED_TYPES:
            found.append(f"the type {node.this.name} exists only on Athena")
        elif isinstance(node, exp.Anonymous) and str(node.this).upper() in _UNSUPPORTED_FUNCTIONS:
            name = str(node.this).upper()
            found.append(f"{name}(): {_UNSUPPORTED_FUNCTIONS[name]}")
        elif isinstance(node, exp.ArrayContains) and isinstance(node.this, exp.Literal):
            found.append(f"CONTAINS(): {_UNSUPPORTED_FUNCTIONS['CONTAINS']}")
        elif isinstance(node, exp.Unnest) and len(node.expressions) > 1:
            found.append("UNNEST of several arrays at once (zipped UNNEST); unnest one array, or zip() them first")
        elif isinstance(node, exp.ApproxQuantile) and node.args.get("weight") is not None:
            found.append("approx_percentile with a weight: the local engine would silently drop the weight")
        elif isinstance(node, exp.ApproxQuantile):
            found.append("approx_percentile(): Athena's answer is approximate and differs from DuckDB's (which "
                         "interpolates values that are not in the data); for an exact percentile that every engine "
                         f"computes alike, write {EXACT_PERCENTILE_HINT}")
        elif isinstance(node, exp.Select) and node.args.get("order") is not None:
            found += _order_by_output_references(node)
    found += _decimal_divisions(tree)
    return list(dict.fromkeys(found))


def _order_by_output_references(select: exp.Select) -> list[str]:
    """ORDER BY names that Athena (Trino) and DuckDB resolve differently.

    Trino resolves a name in ORDER BY to an output column first and rejects an ORDER BY aggregate over one ("Invalid
    reference to output projection attribute from ORDER BY aggregation"); DuckDB reads the source column in both
    places, so an expression over an output alias that shadows a source column sorts differently (or fails)."""
    aliases = {e.alias.lower(): e.this for e in select.expressions if isinstance(e, exp.Alias)}
    # Names a source may have: the evidence tables' columns and the aliases of inner queries (CTEs, subqueries).
    own = {id(e) for e in select.expressions}
    source_names = _TABLE_COLUMNS | {a.alias.lower() for a in select.find_all(exp.Alias) if id(a) not in own}
    outputs = {e.alias_or_name.lower() for e in select.expressions if e.alias_or_name and not isinstance(e, exp.Star)}
    found = []
    for ordered in select.args["order"].expressions:
        for aggregate in ordered.find_all(exp.AggFunc):
            for column in aggregate.find_all(exp.Column):
                if not column.table and column.name.lower() in outputs:
                    found.append(f"ORDER BY {aggregate.sql(dialect='athena')}: Athena rejects an aggregate over "
                                 f"{column.name!r}, which is also an output column; qualify the source column with "
                                 "its table (sum(t.x)) or order by the output column")
        if isinstance(ordered.this, exp.Column):
            continue  # a bare name: the output column on both engines
        for column in ordered.find_all(exp.Column):
            name = column.name.lower()
            shadowed = aliases.get(name)
            same_column = isinstance(shadowed, exp.Column) and shadowed.name.lower() == name
            if (not column.table and column.find_ancestor(exp.AggFunc) is None and shadowed is not None
                    and name in source_names and not same_column):
                found.append(f"ORDER BY {ordered.this.sql(dialect='athena')}: {column.name!r} is an output alias; "
                             "Athena sorts by the output column, DuckDB by a source column of that name; repeat the "
                             "expression with qualified source columns, or order by the bare output name")
    return found


_TABLE_COLUMNS = {name.lower() for schema in VIEWS.values() for name in schema.names} | set(PARTITION_KEYS)
_EXACT_INTEGER = {exp.DataType.Type.TINYINT, exp.DataType.Type.SMALLINT, exp.DataType.Type.INT,
                  exp.DataType.Type.BIGINT}
_APPROXIMATE = {exp.DataType.Type.DOUBLE, exp.DataType.Type.FLOAT}


def _numeric_kind(node: exp.Expr) -> str:
    """How Athena (Trino) types a numeric expression: 'int', 'decimal' (exact), 'approx' (double/real) or 'unknown'.

    A number literal with a decimal point and no exponent is an exact DECIMAL on Athena (sqlglot calls it DOUBLE)."""
    if isinstance(node, exp.Paren | exp.Neg):
        return _numeric_kind(node.this)
    if isinstance(node, exp.Literal) and not node.is_string:
        text = str(node.this).lower()
        return "approx" if "e" in text else "decimal" if "." in text else "int"
    if isinstance(node, exp.Cast):
        target = node.to.this
        return ("decimal" if target == exp.DataType.Type.DECIMAL else "int" if target in _EXACT_INTEGER
                else "approx" if target in _APPROXIMATE else "unknown")
    if isinstance(node, exp.Add | exp.Sub | exp.Mul | exp.Div | exp.Mod):
        kinds = {_numeric_kind(node.this), _numeric_kind(node.expression)}
        return ("approx" if "approx" in kinds else "unknown" if "unknown" in kinds else
                "decimal" if "decimal" in kinds else "int")
    typed = node.type.this if node.type is not None else None
    return ("int" if typed in _EXACT_INTEGER else "approx" if typed in _APPROXIMATE
            else "decimal" if typed == exp.DataType.Type.DECIMAL else "unknown")


def _decimal_divisions(tree: exp.Expr) -> list[str]:
    """Divisions by (or of) an exact decimal whose other side is not a double: Athena divides exactly and rounds the
    quotient to the decimal's scale (1234567 / 1000.0 is 1234.6), DuckDB returns the full fraction."""
    divisions = list(tree.find_all(exp.Div))
    if not divisions:
        return []
    typed = _typed_copies(tree, divisions)
    found = []
    for original, annotated in zip(divisions, typed, strict=True):
        kinds = (_numeric_kind(annotated.this), _numeric_kind(annotated.expression))
        if "decimal" in kinds and "approx" not in kinds:
            found.append(f"{original.sql(dialect='athena')}: Athena divides by an exact decimal and rounds the "
                         "quotient to the decimal's scale (1234567 / 1000.0 is 1234.6), DuckDB would not; for the "
                         "fraction divide by a double (x / 1e3, or CAST(x AS DOUBLE) / 1000), or round() it yourself")
    return found


def _typed_copies(tree: exp.Expr, divisions: list[exp.Div]) -> list[exp.Div]:
    """The divisions of a qualified, type-annotated copy of `tree`, matched to `divisions` through a mark each
    carries into the copy (qualification rewrites names and may duplicate expressions, e.g. for GROUP BY 2); the
    originals, untyped, when the optimizer cannot qualify the SQL."""
    for index, division in enumerate(divisions):
        division.meta["ff_division"] = index
    try:
        copy = qualify(tree.copy(), schema=_catalog(), db=DATABASE, dialect="athena", expand_alias_refs=False,
                       validate_qualify_columns=False, quote_identifiers=False, identify=False)
        annotated = annotate_types(copy, schema=_catalog(), dialect="athena")
    except sqlglot.errors.SqlglotError:
        return divisions
    finally:
        for division in divisions:
            division.meta.pop("ff_division", None)
    typed: dict[int, exp.Div] = {}
    for division in annotated.find_all(exp.Div):
        typed.setdefault(division.meta.get("ff_division", -1), division)
    return [typed.get(index, original) for index, original in enumerate(divisions)]


def transpile(sql: str) -> str:
    """The DuckDB text of one Athena statement; refuses what DuckDB cannot run faithfully."""
    try:
        statements = [s for s in sqlglot.parse(sql, read="athena") if s is not None]
    except sqlglot.errors.ParseError as exc:
        raise QueryError(f"not valid Athena SQL: {exc}") from exc
    if len(statements) != 1:
        raise QueryError(f"expected one SQL statement, got {len(statements)}")
    problems = unsupported_constructs(sql)
    if problems:
        raise UnsupportedSqlError("the local engine cannot run this query (run it on Athena with --athena): "
                                  + "; ".join(problems))
    tree = statements[0]
    _type_divisions(tree)
    return tree.sql(dialect="duckdb")


@cache
def _catalog() -> dict[str, object]:
    from freezeframe.investigate.glue import glue_type

    return {DATABASE: {name: {**{f.name: glue_type(f.type) for f in schema}, **{k: "string" for k in PARTITION_KEYS}}
                       for name, schema in VIEWS.items()}}


def _type_divisions(tree: exp.Expr) -> None:
    """Give the operands of every `/` their types from the schemas, so that sqlglot writes Athena's integer division
    (7 / 2 = 3) as such for DuckDB, whose `/` would return 3.5.

    The types are inferred on a qualified copy (qualification rewrites the tree, names included) and copied back onto
    the original's divisions, which both trees hold in the same order. SQL the optimizer cannot qualify keeps its
    divisions untyped; DuckDB then reports the real error (an unknown column, say).
    """
    divisions = list(tree.find_all(exp.Div))
    if not divisions:
        return
    for original, annotated in zip(divisions, _typed_copies(tree, divisions), strict=True):
        if annotated is original:
            continue
        original.this.type = annotated.this.type
        original.expression.type = annotated.expression.type


def restrict_to_incident(sql: str, incident_id: str) -> str:
    """`sql` with every evidence table replaced by its rows of one incident (a partition-pruned subquery).

    The incident id goes into the tree as a string literal, which sqlglot quotes and escapes, so it cannot change
    the query's structure.
    """
    try:
        tree = sqlglot.parse_one(sql, read="athena")
    except sqlglot.errors.ParseError as exc:
        raise QueryError(f"not valid Athena SQL: {exc}") from exc
    ctes = {cte.alias_or_name for cte in tree.find_all(exp.CTE)}
    replaced = 0
    for table in list(tree.find_all(exp.Table)):
        if table.name not in TABLES or table.name in ctes and not table.db:
            continue
        alias = table.alias or table.name
        bare = exp.Table(this=exp.to_identifier(table.name), db=table.args.get("db"))
        subquery = (exp.select("*").from_(bare)
                    .where(exp.EQ(this=exp.column("incident_id"), expression=exp.Literal.string(incident_id)))
                    .subquery(alias))
        table.replace(subquery)
        replaced += 1
    if not replaced:
        raise QueryError(f"the query reads none of the tables {sorted(TABLES)}; --incident has nothing to filter")
    return tree.sql(dialect="athena")


# ---------------------------------------------------------------- local engine


def partitioning() -> ds.Partitioning:
    return ds.partitioning(pa.schema([(key, pa.string()) for key in PARTITION_KEYS]), flavor="hive")


def _full_schema(schema: pa.Schema) -> pa.Schema:
    for key in PARTITION_KEYS:
        schema = schema.append(pa.field(key, pa.string()))
    return schema


def _new_connection() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET TimeZone='UTC'")
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {DATABASE}")
    return con


def _register(con: duckdb.DuckDBPyConnection, name: str, files: list[str], base_dir: str,
              filesystem: pafs.FileSystem | None) -> None:
    full_schema = _full_schema(VIEWS[name])
    source: Any = full_schema.empty_table()
    if files:
        source = ds.dataset(files, schema=full_schema, format="parquet", filesystem=filesystem,
                            partitioning=partitioning(), partition_base_dir=base_dir)
    con.register(f"_ff_{name}", source)
    # Table names come from schemas.TABLES, never from user input.
    con.execute(f'CREATE VIEW {DATABASE}."{name}" AS SELECT * FROM "_ff_{name}"')  # noqa: S608
    con.execute(f'CREATE VIEW "{name}" AS SELECT * FROM "_ff_{name}"')  # noqa: S608


def connect(settings: Settings) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with one view per table (schema `freezeframe` and unqualified) over the evidence bucket's
    incident views (`views/<table>/...`: one row per conversation across nodes, freezeframe.dissect.observers)."""
    s3 = s3io.client(settings)
    filesystem = arrow_filesystem(settings)
    con = _new_connection()
    for name in TABLES:
        keys = [k for k in s3io.list_keys(s3, settings.evidence_bucket, view_prefix(name)) if k.endswith(".parquet")]
        _register(con, name, [f"{settings.evidence_bucket}/{k}" for k in keys],
                  f"{settings.evidence_bucket}/{view_prefix(name).rstrip('/')}", filesystem)
    return con


def local_base(root: Path) -> Path:
    """The folder holding the table folders under a local directory: `root/views` (a copy of the bucket, or
    `freezeframe dissect`'s output), else `root/tables` (per-node parts only, from before views existed: their rows
    are not folded across nodes and the observation columns read as NULL), else `root` itself (a copy of one of
    those folders)."""
    for folder in (VIEWS_ROOT, TABLES_ROOT):
        if (root / folder).is_dir():
            return root / folder
    return root


def connect_local(root: Path) -> duckdb.DuckDBPyConnection:
    """The same views over a local directory (see `local_base`)."""
    if not root.is_dir():
        raise QueryError(f"{root} is not a directory")
    base = local_base(root)
    con = _new_connection()
    for name in TABLES:
        table_dir = base / name
        files = sorted(str(p) for p in table_dir.rglob("*.parquet")) if table_dir.is_dir() else []
        _register(con, name, files, str(table_dir), None)
    return con


def run(settings: Settings | None, sql: str, con: duckdb.DuckDBPyConnection | None = None) -> QueryResult:
    """Run Athena SQL locally, on `con` or on a new connection to the settings' evidence bucket."""
    translated = transpile(sql)
    if con is None:
        if settings is None:
            raise QueryError("run() needs settings or a connection")
        con = connect(settings)
    try:
        cursor = con.execute(translated)
        columns = tuple(d[0] for d in cursor.description or ())
        rows = tuple(tuple(r) for r in cursor.fetchall())
    except duckdb.Error as exc:
        raise QueryError(f"query failed: {exc}") from exc
    return QueryResult(sql, translated, columns, rows)


# ---------------------------------------------------------------- Athena


@dataclass(frozen=True, slots=True)
class Backoff:
    """Poll delays: `first` seconds, multiplied by `factor` after each poll, never above `cap`."""

    first: float = 0.25
    factor: float = 2.0
    cap: float = 5.0

    def delays(self) -> Iterator[float]:
        delay = self.first
        while True:
            yield delay
            delay = min(delay * self.factor, self.cap)


_RUNNING_STATES = ("QUEUED", "RUNNING")
_INTEGER_TYPES = ("tinyint", "smallint", "integer", "int", "bigint")
_FLOAT_TYPES = ("double", "float", "real")


def _athena_value(text: str | None, type_: str) -> Any:
    if text is None:
        return None
    kind = type_.lower()
    if kind in _INTEGER_TYPES:
        return int(text)
    if kind in _FLOAT_TYPES:
        return float(text)
    if kind == "boolean":
        return text.lower() == "true"
    if kind.startswith("decimal"):
        return Decimal(text)
    return text


def run_athena(client: AthenaClient, sql: str, workgroup: str, database: str, *, backoff: Backoff | None = None,
               sleep: Callable[[float], None] = time.sleep, page_size: int = 1000) -> QueryResult:
    """Run `sql` on Athena: start, poll with backoff, page through the results; Ctrl-C stops the execution."""
    execution_id = athena.start_query(client, sql, workgroup, database)
    try:
        execution = _wait(client, execution_id, backoff or Backoff(), sleep)
        columns, rows = _fetch(client, execution_id, page_size)
    except KeyboardInterrupt as interrupt:
        # Ctrl-C: a query left running keeps scanning (and billing) until it finishes, so stop it first.
        athena.stop_query(client, execution_id)
        raise QueryCancelledError(f"cancelled Athena query {execution_id} (StopQueryExecution sent)") from interrupt
    scanned = execution.get("Statistics", {}).get("DataScannedInBytes")
    return QueryResult(sql, "", columns, rows, engine="athena",
                       bytes_scanned=int(scanned) if scanned is not None else None, query_execution_id=execution_id)


def _wait(client: AthenaClient, execution_id: str, backoff: Backoff, sleep: Callable[[float], None]) -> dict[str, Any]:
    for delay in backoff.delays():
        execution = athena.query_execution(client, execution_id)
        status = execution["Status"]
        state = status["State"]
        if state == "SUCCEEDED":
            return execution
        if state == "FAILED":
            raise QueryError(f"Athena query {execution_id} failed: {status.get('StateChangeReason', 'no reason')}")
        if state == "CANCELLED":
            raise QueryCancelledError(f"Athena query {execution_id} was cancelled: "
                                      f"{status.get('StateChangeReason', 'no reason given')}")
        if state not in _RUNNING_STATES:
            raise QueryError(f"Athena query {execution_id} is in an unknown state {state!r}")
        sleep(delay)
    raise AssertionError("unreachable: Backoff.delays() is endless")


def _fetch(client: AthenaClient, execution_id: str, page_size: int
           ) -> tuple[tuple[str, ...], tuple[tuple[Any, ...], ...]]:
    columns: tuple[str, ...] = ()
    types: list[str] = []
    rows: list[tuple[Any, ...]] = []
    token: str | None = None
    first = True
    while True:
        page = athena.results_page(client, execution_id, page_size, token)
        result_set = page["ResultSet"]
        if first:
            info = result_set.get("ResultSetMetadata", {}).get("ColumnInfo", [])
            columns = tuple(c["Name"] for c in info)
            types = [c.get("Type", "varchar") for c in info]
        data = [[cell.get("VarCharValue") for cell in row.get("Data", [])] for row in result_set.get("Rows", [])]
        # The first row of a SELECT's first page repeats the column names.
        if first and data and tuple(data[0]) == columns:
            data = data[1:]
        rows += [tuple(_athena_value(v, t) for v, t in zip(cells, types, strict=True)) for cells in data]
        first = False
        token = page.get("NextToken")
        if not token:
            return columns, tuple(rows)


# ---------------------------------------------------------------- output


def render(result: QueryResult, output: str) -> str:
    if output == "table":
        return format_table(result)
    if output == "csv":
        return to_csv(result)
    if output == "json":
        return to_json(result)
    raise QueryError(f"unknown output format {output!r}; use one of {FORMATS}")


def format_table(result: QueryResult, max_width: int = 48) -> str:
    cells = [[_cell(v, max_width) for v in row] for row in result.rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(result.columns)]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    out = [line, "| " + " | ".join(c.ljust(w) for c, w in zip(result.columns, widths, strict=True)) + " |", line]
    out += ["| " + " | ".join(v.rjust(w) if _numeric(v) else v.ljust(w) for v, w in zip(row, widths, strict=True))
            + " |" for row in cells]
    footer = f"({len(cells)} row{'s' if len(cells) != 1 else ''}"
    if result.bytes_scanned is not None:
        footer += f", {format_bytes(result.bytes_scanned)} scanned"
    out += [line, footer + ")"]
    return "\n".join(out)


def to_csv(result: QueryResult) -> str:
    """RFC 4180 CSV with a header row; NULL is an empty field, lists are JSON."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(result.columns)
    for row in result.rows:
        writer.writerow(["" if v is None else _csv_cell(v) for v in row])
    return buffer.getvalue()


def to_json(result: QueryResult) -> str:
    document: dict[str, Any] = {"sql": result.sql, "engine": result.engine, "columns": list(result.columns),
                                "rows": result.records()}
    if result.bytes_scanned is not None:
        document["bytes_scanned"] = result.bytes_scanned
    if result.query_execution_id is not None:
        document["query_execution_id"] = result.query_execution_id
    return json.dumps(document)


def format_bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _csv_cell(value: Any) -> str:
    converted = _jsonable(value)
    return json.dumps(converted) if isinstance(converted, list | dict) else str(converted)


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
