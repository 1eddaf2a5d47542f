"""`freezeframe query`: the local engine over fixture Parquet, its refusals, output formats, the Athena protocol and
the CLI.

The Athena tests use moto's Athena mock in-process, which does not run SQL (it returns canned result sets), and a
botocore Stubber for what moto lacks (pagination, FAILED): they test only our side of the protocol (start, poll with
backoff, pagination, typing, bytes scanned, StopQueryExecution on Ctrl-C), never Athena's SQL."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from freezeframe_local.cli import main
from moto import mock_aws
from moto.athena.models import QueryResults, athena_backends
from moto.core import DEFAULT_ACCOUNT_ID
from moto.moto_api import state_manager

from freezeframe.investigate.query import (
    Backoff,
    QueryCancelledError,
    QueryError,
    QueryResult,
    UnsupportedSqlError,
    connect_local,
    format_table,
    restrict_to_incident,
    run,
    run_athena,
    to_csv,
    to_json,
    transpile,
)
from tests.fixtures.evidence_tables import at, write_tables

REGION = "us-east-1"


def test_athena_functions_are_transpiled_for_duckdb() -> None:
    sql = transpile("SELECT date_diff('millisecond', first_ts, last_ts) AS ms FROM freezeframe.connections")
    assert "DATE_DIFF" in sql.upper() and "freezeframe.connections" in sql


def test_more_than_one_statement_is_refused() -> None:
    with pytest.raises(QueryError, match="one SQL statement"):
        transpile("SELECT 1; SELECT 2")


def test_table_output_aligns_and_counts_rows() -> None:
    text = format_table(QueryResult("q", "q", ("proto", "n"), (("tcp", 10), ("udp", None))))
    lines = text.splitlines()
    assert lines[1] == "| proto | n    |"
    assert lines[3] == "| tcp   |   10 |" and lines[4] == "| udp   | NULL |"
    assert lines[-1] == "(2 rows)"


@pytest.mark.parametrize(("sql", "named"), [
    ('SELECT "$path" FROM http', '"$path"'),
    ("SELECT * FROM connections WHERE CAST(src_ip AS IPADDRESS) IS NOT NULL", "IPADDRESS"),
    ("SELECT format_datetime(ts, 'yyyy-MM-dd') FROM http", "FORMAT_DATETIME"),
    ("SELECT a, t FROM dns CROSS JOIN UNNEST(answers, ttls) AS u(a, t)", "zipped UNNEST"),
    ("SELECT approx_percentile(latency_us, request_bytes, 0.5) FROM http", "weight"),
    # Found by running the product's SQL on Trino (tests/integration/test_engines_agree.py):
    ("SELECT approx_percentile(latency_us, 0.5) FROM http", "approx_percentile(): Athena's answer is approximate"),
    ("SELECT latency_us / 1000.0 AS ms FROM http", "latency_us / 1000.0: Athena divides by an exact decimal"),
    ("SELECT max(latency_us) / 1000.0 FROM http", "MAX(latency_us) / 1000.0"),
    ("SELECT 1.0 / 3 FROM http", "1.0 / 3"),
    ("SELECT CAST(latency_us AS DECIMAL(10, 2)) / 7 FROM http", "rounds the quotient"),
    ("SELECT src_ip, sum(latency_us) AS latency_us FROM http GROUP BY src_ip ORDER BY sum(latency_us)",
     "Athena rejects an aggregate over 'latency_us'"),
    ("SELECT src_ip, count(*) AS n FROM http GROUP BY src_ip ORDER BY max(src_ip)", "over 'src_ip'"),
    ("SELECT src_ip, sum(request_bytes) AS latency_us FROM http GROUP BY src_ip ORDER BY latency_us + 1",
     "'latency_us' is an output alias"),
])
def test_sql_the_local_engine_cannot_run_is_refused_by_name(sql: str, named: str) -> None:
    with pytest.raises(UnsupportedSqlError, match="--athena") as caught:
        transpile(sql)
    assert named in str(caught.value)


@pytest.fixture
def tables(tmp_path: Path) -> Path:
    return write_tables(tmp_path, {
        "dns": [
            {"qname": "a.example", "answers": ["1.1.1.1", "2.2.2.2"], "ttls": [60, 30], "rcode_name": "NOERROR",
             "ts_ns": at(1)},
            {"qname": "b.example", "rcode_name": "NXDOMAIN", "ts_ns": at(2), "incident_id": "inc-2",
             "dt": "2025-11-22"},
        ],
        "http": [{"path": "/a,\"b\"", "status": 200, "latency_us": 1500, "ts_ns": at(1)}],
    })


def test_local_directory_exposes_partition_columns_and_both_table_names(tables: Path) -> None:
    con = connect_local(tables)
    result = run(None, "SELECT incident_id, dt, qname FROM freezeframe.dns ORDER BY qname", con)
    assert result.rows == (("inc-1", "2025-11-21", "a.example"), ("inc-2", "2025-11-22", "b.example"))
    assert run(None, "SELECT count(*) FROM connections", con).rows == ((0,),)  # a table with no parts is empty


def test_single_unnest_and_unweighted_percentile_run_locally(tables: Path) -> None:
    con = connect_local(tables)
    rows = run(None, "SELECT a FROM dns CROSS JOIN UNNEST(answers) AS u(a) ORDER BY a", con).rows
    assert rows == (("1.1.1.1",), ("2.2.2.2",))


@pytest.mark.parametrize("sql", [
    # A double on either side: Athena's quotient is a double too, the same as DuckDB's.
    "SELECT avg(latency_us) / 1000.0, latency_us / 1e3, CAST(latency_us AS DOUBLE) / 1000.0 FROM http GROUP BY 2, 3",
    # Qualified source columns inside an ORDER BY aggregate, and bare output names, mean the same on both engines.
    "SELECT src_ip, sum(latency_us) AS latency_us FROM http AS h GROUP BY src_ip ORDER BY sum(h.latency_us), src_ip",
    "SELECT src_ip, sum(latency_us) AS total FROM http GROUP BY src_ip ORDER BY total DESC, max(latency_us)",
    # An alias no source column shares means the output column on both engines.
    "SELECT src_ip, count(*) AS n FROM http GROUP BY src_ip ORDER BY n + 1, src_ip",
])
def test_sql_that_means_the_same_on_both_engines_is_not_refused(sql: str, tables: Path) -> None:
    run(None, sql, connect_local(tables))


def test_integer_division_is_athenas_not_duckdbs(tables: Path) -> None:
    # Athena (Trino) divides integers as integers, truncating toward zero; DuckDB's `/` would return a fraction.
    con = connect_local(tables)
    sql = ("SELECT 7 / 2 AS lit, -7 / 2 AS neg, latency_us / 1000 AS ms, "
           "sub.x / 4 AS nested FROM http CROSS JOIN (SELECT status AS x FROM http) AS sub")
    assert run(None, sql, con).rows == ((3, -3, 1, 50),)


def test_restrict_to_incident_escapes_the_id(tables: Path) -> None:
    con = connect_local(tables)
    sql = "SELECT qname FROM dns"
    assert run(None, restrict_to_incident(sql, "inc-2"), con).rows == (("b.example",),)
    assert run(None, restrict_to_incident(sql, "inc-2' OR 'a'='a"), con).rows == ()
    with pytest.raises(QueryError, match="none of the tables"):
        restrict_to_incident("SELECT 1", "inc-1")


def test_csv_and_json_outputs(tables: Path) -> None:
    con = connect_local(tables)
    result = run(None, "SELECT qname, answers, latency_us FROM dns ORDER BY qname", con)
    parsed = list(csv.reader(io.StringIO(to_csv(result))))
    assert parsed == [["qname", "answers", "latency_us"], ["a.example", '["1.1.1.1", "2.2.2.2"]', ""],
                      ["b.example", "", ""]]
    quoted = run(None, "SELECT path FROM http", con)
    assert list(csv.reader(io.StringIO(to_csv(quoted))))[1] == ['/a,"b"']
    document = json.loads(to_json(result))
    assert document["columns"] == ["qname", "answers", "latency_us"]
    assert document["rows"][0] == {"qname": "a.example", "answers": ["1.1.1.1", "2.2.2.2"], "latency_us": None}


# ---------------------------------------------------------------- Athena (moto: protocol only, canned results)


@pytest.fixture
def athena() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("athena", region_name=REGION, aws_access_key_id="test", aws_secret_access_key="test")
        client.create_work_group(Name="ff", Configuration={
            "ResultConfiguration": {"OutputLocation": "s3://results/athena/"}})
        yield client
    state_manager.unset_transition("athena::execution")


def _canned(rows: list[list[str | None]], columns: list[tuple[str, str]]) -> None:
    data = [{"Data": [{"VarCharValue": name} for name, _ in columns]}]
    data += [{"Data": [{} if v is None else {"VarCharValue": v} for v in row]} for row in rows]
    info = [{"Name": name, "Type": type_} for name, type_ in columns]
    athena_backends[DEFAULT_ACCOUNT_ID][REGION].query_results_queue.append(QueryResults(rows=data, column_info=info))


def test_athena_polls_with_backoff_until_done_and_types_the_rows(athena: Any) -> None:
    # Each state lasts two polls: QUEUED, RUNNING, RUNNING, SUCCEEDED -> three sleeps, each twice the last.
    state_manager.set_transition(model_name="athena::execution", transition={"progression": "manual", "times": 2})
    _canned([["api", "503", "0.25", "true"], ["web", None, "1.5", "false"]],
            [("workload", "varchar"), ("status", "integer"), ("rate", "double"), ("ok", "boolean")])
    slept: list[float] = []
    result = run_athena(athena, "SELECT 1", "ff", "freezeframe", backoff=Backoff(first=0.25, factor=2, cap=0.75),
                        sleep=slept.append)
    assert slept == [0.25, 0.5, 0.75]
    assert result.columns == ("workload", "status", "rate", "ok")
    assert result.rows == (("api", 503, 0.25, True), ("web", None, 1.5, False))
    assert result.bytes_scanned == 0 and result.engine == "athena"
    execution = athena.get_query_execution(QueryExecutionId=result.query_execution_id)["QueryExecution"]
    assert execution["QueryExecutionContext"]["Database"] == "freezeframe"


def test_ctrl_c_stops_the_athena_query(athena: Any) -> None:
    state_manager.set_transition(model_name="athena::execution", transition={"progression": "manual", "times": 99})

    def interrupted(_: float) -> None:
        raise KeyboardInterrupt

    with pytest.raises(QueryCancelledError, match="StopQueryExecution") as caught:
        run_athena(athena, "SELECT 1", "ff", "freezeframe", sleep=interrupted)
    (execution_id,) = athena.list_query_executions(WorkGroup="ff")["QueryExecutionIds"]
    assert execution_id in str(caught.value)
    state = athena.get_query_execution(QueryExecutionId=execution_id)["QueryExecution"]["Status"]["State"]
    assert state == "CANCELLED"


def _stubbed(pages: list[dict[str, Any]], state: str = "SUCCEEDED", reason: str = "") -> tuple[Any, Stubber]:
    """A real botocore client whose responses are given (moto has no pagination nor failure states)."""
    client = boto3.client("athena", region_name=REGION, aws_access_key_id="test", aws_secret_access_key="test")
    stub = Stubber(client)
    stub.add_response("start_query_execution", {"QueryExecutionId": "q-1"})
    status: dict[str, Any] = {"State": state, **({"StateChangeReason": reason} if reason else {})}
    stub.add_response("get_query_execution", {"QueryExecution": {
        "QueryExecutionId": "q-1", "Status": status, "Statistics": {"DataScannedInBytes": 5 * 1024 * 1024}}})
    for index, page in enumerate(pages):
        expected = {"QueryExecutionId": "q-1", "MaxResults": 2, **({"NextToken": f"t{index}"} if index else {})}
        stub.add_response("get_query_results", page, expected)
    stub.activate()
    return client, stub


def _page(rows: list[list[str]], token: str | None, header: bool) -> dict[str, Any]:
    data = ([{"Data": [{"VarCharValue": "n"}]}] if header else []) + [
        {"Data": [{"VarCharValue": v} for v in row]} for row in rows]
    page: dict[str, Any] = {"ResultSet": {"Rows": data, "ResultSetMetadata": {"ColumnInfo": [
        {"CatalogName": "hive", "SchemaName": "", "TableName": "", "Name": "n", "Label": "n", "Type": "bigint",
         "Precision": 19, "Scale": 0, "Nullable": "UNKNOWN", "CaseSensitive": False}]}}}
    if token:
        page["NextToken"] = token
    return page


def test_athena_results_are_paginated_and_the_scan_is_reported() -> None:
    client, stub = _stubbed([_page([["1"]], "t1", header=True), _page([["2"], ["3"]], "t2", header=False),
                             _page([["4"]], None, header=False)])
    result = run_athena(client, "SELECT n FROM t", "ff", "freezeframe", page_size=2, sleep=lambda _: None)
    stub.assert_no_pending_responses()
    assert result.rows == ((1,), (2,), (3,), (4,))
    assert result.bytes_scanned == 5 * 1024 * 1024
    assert format_table(result).splitlines()[-1] == "(4 rows, 5.0 MiB scanned)"


def test_a_failed_athena_query_raises_with_athenas_reason() -> None:
    client, _ = _stubbed([], state="FAILED", reason="COLUMN_NOT_FOUND: line 1:8: Column 'x' cannot be resolved")
    with pytest.raises(QueryError, match="COLUMN_NOT_FOUND"):
        run_athena(client, "SELECT x FROM t", "ff", "freezeframe", sleep=lambda _: None)


# ---------------------------------------------------------------- CLI


def test_cli_runs_sql_scenarios_and_filters_over_a_directory(tables: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["query", "--dir", str(tables), "--format", "csv", "SELECT qname FROM dns ORDER BY qname"]) == 0
    assert capsys.readouterr().out.splitlines() == ["qname", "a.example", "b.example"]
    assert main(["query", "--dir", str(tables), "--scenario", "dns-failures", "--incident", "inc-2", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert [(r["qname"], r["rcode_name"]) for r in document["rows"]] == [("b.example", "NXDOMAIN")]
    assert main(["query", "--dir", str(tables), "--filter", 'dns and rcode == "NOERROR"', "--format", "json"]) == 0
    assert [r["qname"] for r in json.loads(capsys.readouterr().out)["rows"]] == ["a.example"]


def test_cli_errors_are_clear(tables: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["query", "--dir", str(tables), 'SELECT "$path" FROM http']) == 2
    assert '"$path"' in capsys.readouterr().err
    assert main(["query", "--dir", str(tables), "--filter", "http and status >= and"]) == 2
    err = capsys.readouterr().err
    assert "expected a value" in err and "^" in err
    assert main(["query", "--dir", str(tables), "SELECT 1", "--scenario", "resets"]) == 2
    assert "exactly one of" in capsys.readouterr().err
    assert main(["query", "--scenario", "no-such-thing", "--dir", str(tables)]) == 2
    assert "dns-failures" in capsys.readouterr().err


def test_cli_runs_on_athena_and_reports_the_scan(athena: Any, capsys: pytest.CaptureFixture[str]) -> None:
    _canned([["dns-failures", "2"]], [("name", "varchar"), ("n", "bigint")])
    assert main(["query", "--athena", "--workgroup", "ff", "--database", "evidence", "--format", "csv",
                 "--scenario", "dns-failures", "--incident", "inc-9"]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines() == ["name,n", "dns-failures,2"] and "bytes scanned: 0 B" in captured.err
    (execution_id,) = athena.list_query_executions(WorkGroup="ff")["QueryExecutionIds"]
    execution = athena.get_query_execution(QueryExecutionId=execution_id)["QueryExecution"]
    assert execution["QueryExecutionContext"]["Database"] == "evidence"
    assert "incident_id = 'inc-9'" in execution["Query"]
    assert main(["query", "--athena", "SELECT 1"]) == 2  # no workgroup configured
    assert "--workgroup" in capsys.readouterr().err


def test_cli_lists_scenarios(capsys: pytest.CaptureFixture[str]) -> None:
    from freezeframe.investigate.scenarios import SCENARIOS

    assert main(["scenarios"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert listed == [s.name for s in SCENARIOS]
