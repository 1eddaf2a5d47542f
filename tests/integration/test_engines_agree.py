"""Every SQL text the product ships runs on real Trino (the engine under Athena v3) and on the local engine (DuckDB
after sqlglot), over the same Parquet files with non-round values, and both answer the same.

Shipped SQL: the saved scenarios (and the named queries template.yaml deploys, read back from the template), every
report section, the demo's queries, and the filter examples compiled by `kfl`. Trino runs the text verbatim, as
Athena would; its tables are declared from the Glue column types (`trino_sql.create_table_sql`).

How results are compared (tests/fixtures/engine_compare.py): cell by cell, timestamps as the same UTC instant, floats
to 12 significant digits, everything else exactly, with the same Python type per cell (a DECIMAL against a DOUBLE
fails); rows in order as far as the ORDER BY names output columns, rows with tied sort keys without order. Every
query must return rows, or the comparison would prove nothing.
"""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest
import sqlglot
from freezeframe_local import demo

from freezeframe.investigate import kfl, report, scenarios
from freezeframe.investigate.query import QueryResult, UnsupportedSqlError, connect_local, run, transpile
from freezeframe.investigate.trino_sql import DataLocation, TrinoEngine, TrinoError
from tests.fixtures.engine_compare import assert_same_answer
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
def duck(data: Path) -> duckdb.DuckDBPyConnection:
    return connect_local(data)


def both(trino: TrinoEngine, catalog: str, duck: duckdb.DuckDBPyConnection, sql: str) -> QueryResult:
    trino_result = trino.run(sql, catalog)
    duck_result = run(None, sql, duck)
    assert_same_answer(sql, trino_result, duck_result)
    assert trino_result.rows, f"the fixture gives this query no rows, so the comparison would prove nothing:\n{sql}"
    return trino_result


# ---------------------------------------------------------------- the shipped SQL


@pytest.mark.parametrize("scenario", scenarios.SCENARIOS, ids=lambda s: s.name)
def test_every_scenario(trino: TrinoEngine, catalog: str, duck: duckdb.DuckDBPyConnection,
                        scenario: scenarios.Scenario) -> None:
    both(trino, catalog, duck, scenario.query)
    both(trino, catalog, duck, scenario.sql(INCIDENT))


def test_the_observation_columns_of_the_views(trino: TrinoEngine, catalog: str,
                                              duck: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    """The views' list and boolean columns read alike, on the fixture and on two nodes dissected into one folder."""
    both(trino, catalog, duck, "SELECT conn_id, observers, observer, views_disagree, disagreeing, "
                               "cardinality(observers) AS sightings FROM connections ORDER BY conn_id")
    from freezeframe.dissect.files import dissect_files

    sample = ROOT / "tests" / "fixtures" / "sample.pcap"
    for node in ("node-a", "node-b"):
        dissect_files([sample], tmp_path, node=node, incident_id="inc-2n", progress=False)
    two = trino.attach(DataLocation.directory(tmp_path))
    for table in ("connections", "dns", "http", "tls"):
        result = both(trino, two, connect_local(tmp_path), f"SELECT conn_id, observers, observer, views_disagree, "
                                                           f"disagreeing FROM {table} ORDER BY conn_id, ts_ns")
        assert all(row[1] == ["node-a", "node-b"] for row in result.rows), table


def test_the_named_queries_template_yaml_deploys(trino: TrinoEngine, catalog: str,
                                                 duck: duckdb.DuckDBPyConnection) -> None:
    from cfnlint import decode

    template, problems = decode.decode(str(ROOT / "template.yaml"))
    assert not problems and template is not None
    named = [r["Properties"]["QueryString"] for r in template["Resources"].values()
             if r["Type"] == "AWS::Athena::NamedQuery"]
    assert len(named) == len(scenarios.SCENARIOS)
    for sql in named:
        both(trino, catalog, duck, sql)


def test_every_report_section(trino: TrinoEngine, catalog: str, duck: duckdb.DuckDBPyConnection) -> None:
    where = report.incident_filter(INCIDENT, *WINDOW)
    coverage = both(trino, catalog, duck, report.coverage_query(where).sql)
    span = max(r[6] for r in coverage.rows) - min(r[5] for r in coverage.rows)
    sections = report.section_queries(where, report.bucket_width_ns(span))
    assert {q.name for q in sections} == {"timeline", "node_health", "endpoint_readiness", "service_map",
                                          "service_traffic", "tcp_health", "tcp_hotspots", "dns_failures",
                                          "tls_failures", "slowest_endpoints"}
    for query in sections:
        both(trino, catalog, duck, query.sql)


def test_report_percentiles_are_exact_values_of_the_data(trino: TrinoEngine, catalog: str) -> None:
    # Nearest rank, by hand from the fixture: TCP handshakes of inc-7 sorted are 987, 1111, 1234, 2345, 3456, 4567,
    # 12345 (7 values): p50 is the 4th (ceil(3.5)), p95 the 7th.
    where = report.incident_filter(INCIDENT, *WINDOW)
    health = trino.run(report.tcp_health_query(where).sql, catalog).records()[0]
    assert (health["handshake_p50_us"], health["handshake_p95_us"]) == (2345, 12345)


def test_demo_queries(trino: TrinoEngine, catalog: str, duck: duckdb.DuckDBPyConnection) -> None:
    for query in demo.demo_queries(INCIDENT):
        both(trino, catalog, duck, query.sql)


@pytest.mark.parametrize("text", kfl.EXAMPLES)
def test_compiled_filter_examples(trino: TrinoEngine, catalog: str, duck: duckdb.DuckDBPyConnection,
                                  text: str) -> None:
    both(trino, catalog, duck, kfl.compile_filter(text).select(incident_id=INCIDENT))


def test_readme_filter_examples_are_among_the_tested_ones() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    shown = re.findall(r"^freezeframe query --filter '([^']+)'", readme, flags=re.MULTILINE)
    assert shown and set(shown) <= set(kfl.EXAMPLES)


# ---------------------------------------------------------------- what the local engine refuses, on both engines


def _duckdb_anyway(duck: duckdb.DuckDBPyConnection, sql: str) -> list[tuple[Any, ...]]:
    """What DuckDB would answer had the local engine not refused (plain sqlglot transpilation)."""
    return duck.execute(sqlglot.transpile(sql, read="athena", write="duckdb")[0]).fetchall()


def test_decimal_division_differs_and_is_refused(trino: TrinoEngine, catalog: str,
                                                 duck: duckdb.DuckDBPyConnection) -> None:
    sql = "SELECT latency_us / 1000.0 AS ms FROM http WHERE latency_us = 1234567"
    assert trino.run(sql, catalog).rows == ((Decimal("1234.6"),),)  # Athena rounds to the literal's scale
    assert _duckdb_anyway(duck, sql) == [(1234.567,)]
    with pytest.raises(UnsupportedSqlError, match="exact decimal"):
        transpile(sql)
    # The suggested form means the same on both.
    both(trino, catalog, duck, "SELECT latency_us / 1e3 AS ms FROM http WHERE latency_us = 1234567")


def test_order_by_aggregate_of_an_output_name_fails_on_trino_and_is_refused(
        trino: TrinoEngine, catalog: str, duck: duckdb.DuckDBPyConnection) -> None:
    sql = ("SELECT dst_workload, sum(latency_us) AS latency_us FROM http WHERE status IS NOT NULL "
           "GROUP BY dst_workload ORDER BY sum(latency_us) DESC")
    with pytest.raises(TrinoError, match="Invalid reference to output projection attribute from ORDER BY"):
        trino.run(sql, catalog)
    assert _duckdb_anyway(duck, sql)  # DuckDB answers, which is the danger
    with pytest.raises(UnsupportedSqlError, match="also an output column"):
        transpile(sql)
    both(trino, catalog, duck, sql.replace("FROM http", "FROM http AS h").replace("sum(latency_us) DESC",
                                                                                   "sum(h.latency_us) DESC"))


def test_order_by_expression_over_a_shadowing_alias_differs_and_is_refused(
        trino: TrinoEngine, catalog: str, duck: duckdb.DuckDBPyConnection) -> None:
    # `latency_us` in ORDER BY is the output column (request_bytes) on Trino, the source column on DuckDB.
    sql = ("SELECT path, request_bytes AS latency_us FROM http WHERE latency_us IS NOT NULL AND incident_id = 'inc-7' "
           "ORDER BY -latency_us, path")
    trino_paths = [r[0] for r in trino.run(sql, catalog).rows]
    duck_paths = [r[0] for r in _duckdb_anyway(duck, sql)]
    assert trino_paths == sorted(trino_paths)  # every request_bytes is 0: Trino orders by path alone
    assert duck_paths != trino_paths
    with pytest.raises(UnsupportedSqlError, match="output alias"):
        transpile(sql)


def test_approx_percentile_differs_and_is_refused(trino: TrinoEngine, catalog: str,
                                                  duck: duckdb.DuckDBPyConnection) -> None:
    sql = "SELECT approx_percentile(latency_us, 0.5) AS p50 FROM http WHERE incident_id = 'inc-7'"
    latencies = {r[0] for r in duck.execute("SELECT latency_us FROM http").fetchall()}
    (trino_p50,), = trino.run(sql, catalog).rows
    (duck_p50,), = _duckdb_anyway(duck, sql)
    assert trino_p50 in latencies and duck_p50 not in latencies
    with pytest.raises(UnsupportedSqlError, match="approx_percentile"):
        transpile(sql)
    exact = both(trino, catalog, duck, "SELECT " + report.percentile("latency_us", "0.5") + " AS p50 FROM http "
                 "WHERE incident_id = 'inc-7'")
    # 10 latencies of inc-7 (12345 ... 30123457); nearest rank ceil(0.5 * 10) = 5 of the sorted values: 98765.
    assert exact.rows == ((98765,),)


# ---------------------------------------------------------------- the dissector's own files


def test_trino_reads_every_table_the_dissector_writes_as_the_local_engine_does(
        trino: TrinoEngine, tmp_path: Path) -> None:
    from freezeframe.contracts.schemas import TABLES, VIEWS
    from freezeframe.dissect.files import dissect_files
    from freezeframe.investigate.glue import check_parquet_types
    from tests.unit.dissect.test_crosslayer_sample import write_context

    sample = ROOT / "tests" / "fixtures" / "sample.pcap"
    k8s, node_state = write_context(tmp_path / "context")  # so the cross-layer tables have rows too
    out = tmp_path / "out"
    dissect_files([sample], out, node="node-a", incident_id="inc-3", progress=False, k8s=k8s, node_state=node_state)
    catalog = trino.attach(DataLocation.directory(out))
    files = connect_local(out)
    for table in TABLES:
        (part,) = out.glob(f"tables/{table}/dt=*/incident_id=inc-3/*.parquet")
        check_parquet_types(part, table)  # what Athena needs; Trino alone would also read some mismatches
        # The views Trino reads: with the compiled core, a one-node view that keeps its part's rows as they are is
        # that part's column chunks copied, with a footer the core writes (compact.with_columns; test_splice.py).
        (view,) = out.glob(f"views/{table}/dt=*/incident_id=inc-3/*.parquet")
        check_parquet_types(view, table, VIEWS)
        sql = f"SELECT * FROM freezeframe.{table}"  # every column, lists and timestamps included
        trino_result = trino.run(sql, catalog)
        assert_same_answer(sql, trino_result, run(None, sql, files))
        assert trino_result.rows or table == "dissect_errors", table
