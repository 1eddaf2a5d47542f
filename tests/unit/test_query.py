import pytest

from freezeframe.query import QueryError, QueryResult, format_table, transpile


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
