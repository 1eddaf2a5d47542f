"""Every SQL text the product ships runs on real Trino (the engine under Athena v3) and on the local engine (DuckDB
after sqlglot), over the same Parquet files with non-round values, and both answer the same.

Shipped SQL: the saved scenarios (and the named queries template.yaml deploys, read back from the template), every
report section, the demo's queries, and the filter examples compiled by `kfl`. Trino runs the text verbatim, as
Athena would; its tables are declared from the Glue column types (`trino_sql.create_table_sql`).

How results are compared: cell by cell after normalising timestamps to naive UTC (Trino returns `timestamp(3)`
naive, DuckDB a UTC-aware value of the same instant). Floats must agree to 12 significant digits (sums and averages
may add in another order); every other value exactly, and both engines must return the same Python type per cell (a
DECIMAL where the other engine returns a DOUBLE is a difference). Rows are compared in order as far as the ORDER BY
names output columns; rows whose sort keys tie (or a query without ORDER BY) are compared without order.
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest
import sqlglot
from sqlglot import exp

from freezeframe import demo, kfl, report, scenarios
from freezeframe.query import QueryResult, UnsupportedSqlError, connect_local, run, transpile
from freezeframe.trino_sql import DataLocation, TrinoEngine, TrinoError
from tests.fixtures.engine_tables import INCIDENT, WINDOW, write_engine_tables

ROOT = Path(__file__).resolve().parents[2]
SIGNIFICANT_DIGITS = 12


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_engine_tables(tmp_path_factory.mktemp("engines"))


@pytest.fixture(scope="module")
def catalog(trino: TrinoEngine, data: Path) -> str:
    return trino.attach(DataLocation.directory(data))


@pytest.fixture(scope="module")
def local(data: Path) -> duckdb.DuckDBPyConnection:
    return connect_local(data)


# ---------------------------------------------------------------- comparison


def _cell(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value
    if isinstance(value, float):
        return float(f"{value:.{SIGNIFICANT_DIGITS}g}")
    if isinstance(value, list | tuple):
        return tuple(_cell(v) for v in value)
    return value


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, list | tuple):
        return "list"
    return type(value).__name__


def _sort_key_columns(sql: str, columns: tuple[str, ...]) -> list[int]:
    """The output columns the outermost ORDER BY sorts on, up to the first sort key that is not an output column."""
    tree = sqlglot.parse_one(sql, read="athena")
    order = tree.args.get("order")
    if order is None:
        return []
    names = [c.lower() for c in columns]
    select_sql = [e.this.sql() if isinstance(e, exp.Alias) else e.sql() for e in tree.expressions] \
        if isinstance(tree, exp.Select) else []
    keys = []
    for ordered in order.expressions:
        key = ordered.this
        if isinstance(key, exp.Literal) and key.is_int:
            keys.append(int(key.this) - 1)
        elif isinstance(key, exp.Column) and key.name.lower() in names:
            keys.append(names.index(key.name.lower()))
        elif key.sql() in select_sql:
            keys.append(select_sql.index(key.sql()))
        else:
            break
    return keys


def _runs(rows: list[tuple[Any, ...]], keys: list[int]) -> list[Counter[tuple[Any, ...]]]:
    """Consecutive rows grouped by their sort-key values; each group as a multiset."""
    groups: list[tuple[tuple[Any, ...], Counter[tuple[Any, ...]]]] = []
    for row in rows:
        key = tuple(row[i] for i in keys)
        if not groups or groups[-1][0] != key:
            groups.append((key, Counter()))
        groups[-1][1][row] += 1
    return [group for _, group in groups]


def assert_same_answer(sql: str, trino_result: QueryResult, duck_result: QueryResult) -> None:
    assert trino_result.columns == duck_result.columns, sql
    for t_row, d_row in zip(trino_result.rows, duck_result.rows, strict=False):
        for name, t_value, d_value in zip(trino_result.columns, t_row, d_row, strict=True):
            if t_value is not None and d_value is not None:
                assert _kind(t_value) == _kind(d_value), (f"{name}: Trino returns {t_value!r}, DuckDB {d_value!r}\n"
                                                          f"{sql}")
    trino_rows = [tuple(_cell(v) for v in row) for row in trino_result.rows]
    duck_rows = [tuple(_cell(v) for v in row) for row in duck_result.rows]
    keys = _sort_key_columns(sql, trino_result.columns)
    assert _runs(trino_rows, keys) == _runs(duck_rows, keys), f"\n{sql}\nTrino:  {trino_rows}\nDuckDB: {duck_rows}"


def both(trino: TrinoEngine, catalog: str, local: duckdb.DuckDBPyConnection, sql: str) -> QueryResult:
    trino_result = trino.run(sql, catalog)
    duck_result = run(None, sql, local)
    assert_same_answer(sql, trino_result, duck_result)
    assert trino_result.rows, f"the fixture gives this query no rows, so the comparison would prove nothing:\n{sql}"
    return trino_result


# ---------------------------------------------------------------- the shipped SQL


@pytest.mark.parametrize("scenario", scenarios.SCENARIOS, ids=lambda s: s.name)
def test_every_scenario(trino: TrinoEngine, catalog: str, local: duckdb.DuckDBPyConnection,
                        scenario: scenarios.Scenario) -> None:
    both(trino, catalog, local, scenario.query)
    both(trino, catalog, local, scenario.sql(INCIDENT))


def test_the_named_queries_template_yaml_deploys(trino: TrinoEngine, catalog: str,
                                                 local: duckdb.DuckDBPyConnection) -> None:
    from cfnlint import decode

    template, problems = decode.decode(str(ROOT / "template.yaml"))
    assert not problems and template is not None
    named = [r["Properties"]["QueryString"] for r in template["Resources"].values()
             if r["Type"] == "AWS::Athena::NamedQuery"]
    assert len(named) == len(scenarios.SCENARIOS)
    for sql in named:
        both(trino, catalog, local, sql)


def test_every_report_section(trino: TrinoEngine, catalog: str, local: duckdb.DuckDBPyConnection) -> None:
    where = report.incident_filter(INCIDENT, *WINDOW)
    coverage = both(trino, catalog, local, report.coverage_query(where).sql)
    span = max(r[6] for r in coverage.rows) - min(r[5] for r in coverage.rows)
    sections = report.section_queries(where, report.bucket_width_ns(span))
    assert {q.name for q in sections} == {"timeline", "service_map", "tcp_health", "tcp_hotspots", "dns_failures",
                                          "tls_failures", "slowest_endpoints"}
    for query in sections:
        both(trino, catalog, local, query.sql)


def test_report_percentiles_are_exact_values_of_the_data(trino: TrinoEngine, catalog: str) -> None:
    # Nearest rank, by hand from the fixture: TCP handshakes of inc-7 sorted are 987, 1111, 1234, 2345, 3456, 4567,
    # 12345 (7 values): p50 is the 4th (ceil(3.5)), p95 the 7th.
    where = report.incident_filter(INCIDENT, *WINDOW)
    health = trino.run(report.tcp_health_query(where).sql, catalog).records()[0]
    assert (health["handshake_p50_us"], health["handshake_p95_us"]) == (2345, 12345)


def test_demo_queries(trino: TrinoEngine, catalog: str, local: duckdb.DuckDBPyConnection) -> None:
    for query in demo.demo_queries(INCIDENT):
        both(trino, catalog, local, query.sql)


@pytest.mark.parametrize("text", kfl.EXAMPLES)
def test_compiled_filter_examples(trino: TrinoEngine, catalog: str, local: duckdb.DuckDBPyConnection,
                                  text: str) -> None:
    both(trino, catalog, local, kfl.compile_filter(text).select(incident_id=INCIDENT))


def test_readme_filter_examples_are_among_the_tested_ones() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    shown = re.findall(r"^freezeframe query --filter '([^']+)'", readme, flags=re.MULTILINE)
    assert shown and set(shown) <= set(kfl.EXAMPLES)


# ---------------------------------------------------------------- what the local engine refuses, on both engines


def _duckdb_anyway(local: duckdb.DuckDBPyConnection, sql: str) -> list[tuple[Any, ...]]:
    """What DuckDB would answer had the local engine not refused (plain sqlglot transpilation)."""
    return local.execute(sqlglot.transpile(sql, read="athena", write="duckdb")[0]).fetchall()


def test_decimal_division_differs_and_is_refused(trino: TrinoEngine, catalog: str,
                                                 local: duckdb.DuckDBPyConnection) -> None:
    sql = "SELECT latency_us / 1000.0 AS ms FROM http WHERE latency_us = 1234567"
    assert trino.run(sql, catalog).rows == ((Decimal("1234.6"),),)  # Athena rounds to the literal's scale
    assert _duckdb_anyway(local, sql) == [(1234.567,)]
    with pytest.raises(UnsupportedSqlError, match="exact decimal"):
        transpile(sql)
    # The suggested form means the same on both.
    both(trino, catalog, local, "SELECT latency_us / 1e3 AS ms FROM http WHERE latency_us = 1234567")


def test_order_by_aggregate_of_an_output_name_fails_on_trino_and_is_refused(
        trino: TrinoEngine, catalog: str, local: duckdb.DuckDBPyConnection) -> None:
    sql = ("SELECT dst_workload, sum(latency_us) AS latency_us FROM http WHERE status IS NOT NULL "
           "GROUP BY dst_workload ORDER BY sum(latency_us) DESC")
    with pytest.raises(TrinoError, match="Invalid reference to output projection attribute from ORDER BY"):
        trino.run(sql, catalog)
    assert _duckdb_anyway(local, sql)  # DuckDB answers, which is the danger
    with pytest.raises(UnsupportedSqlError, match="also an output column"):
        transpile(sql)
    both(trino, catalog, local, sql.replace("FROM http", "FROM http AS h").replace("sum(latency_us) DESC",
                                                                                   "sum(h.latency_us) DESC"))


def test_order_by_expression_over_a_shadowing_alias_differs_and_is_refused(
        trino: TrinoEngine, catalog: str, local: duckdb.DuckDBPyConnection) -> None:
    # `latency_us` in ORDER BY is the output column (request_bytes) on Trino, the source column on DuckDB.
    sql = ("SELECT path, request_bytes AS latency_us FROM http WHERE latency_us IS NOT NULL AND incident_id = 'inc-7' "
           "ORDER BY -latency_us, path")
    trino_paths = [r[0] for r in trino.run(sql, catalog).rows]
    duck_paths = [r[0] for r in _duckdb_anyway(local, sql)]
    assert trino_paths == sorted(trino_paths)  # every request_bytes is 0: Trino orders by path alone
    assert duck_paths != trino_paths
    with pytest.raises(UnsupportedSqlError, match="output alias"):
        transpile(sql)


def test_approx_percentile_differs_and_is_refused(trino: TrinoEngine, catalog: str,
                                                  local: duckdb.DuckDBPyConnection) -> None:
    sql = "SELECT approx_percentile(latency_us, 0.5) AS p50 FROM http WHERE incident_id = 'inc-7'"
    latencies = {r[0] for r in local.execute("SELECT latency_us FROM http").fetchall()}
    (trino_p50,), = trino.run(sql, catalog).rows
    (duck_p50,), = _duckdb_anyway(local, sql)
    assert trino_p50 in latencies and duck_p50 not in latencies
    with pytest.raises(UnsupportedSqlError, match="approx_percentile"):
        transpile(sql)
    exact = both(trino, catalog, local, "SELECT " + report.percentile("latency_us", "0.5") + " AS p50 FROM http "
                 "WHERE incident_id = 'inc-7'")
    # 10 latencies of inc-7 (12345 ... 30123457); nearest rank ceil(0.5 * 10) = 5 of the sorted values: 98765.
    assert exact.rows == ((98765,),)


# ---------------------------------------------------------------- the dissector's own files


def test_trino_reads_every_table_the_dissector_writes_as_the_local_engine_does(
        trino: TrinoEngine, tmp_path: Path) -> None:
    from freezeframe.dissect.files import dissect_files
    from freezeframe.glue import check_parquet_types
    from freezeframe.schemas import TABLES

    sample = ROOT / "tests" / "fixtures" / "sample.pcap"
    dissect_files([sample], tmp_path, node="node-a", incident_id="inc-3", progress=False)
    catalog = trino.attach(DataLocation.directory(tmp_path))
    local = connect_local(tmp_path)
    for table in TABLES:
        (part,) = tmp_path.glob(f"tables/{table}/dt=*/incident_id=inc-3/node-a.parquet")
        check_parquet_types(part, table)  # what Athena needs; Trino alone would also read some mismatches
        sql = f"SELECT * FROM freezeframe.{table}"  # every column, lists and timestamps included
        trino_result = trino.run(sql, catalog)
        assert_same_answer(sql, trino_result, run(None, sql, local))
        assert trino_result.rows or table == "dissect_errors", table
