"""The engine comparison used by the Trino tier fails on the differences it exists to find."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from freezeframe.investigate.query import QueryResult
from tests.fixtures.engine_compare import assert_same_answer

SQL = "SELECT name, n FROM t ORDER BY n DESC"


def _result(*rows: tuple[object, ...]) -> QueryResult:
    return QueryResult(SQL, "", ("name", "n"), rows)


def test_same_rows_and_ties_in_any_order_agree() -> None:
    assert_same_answer(SQL, _result(("a", 2), ("b", 1), ("c", 1)), _result(("a", 2), ("c", 1), ("b", 1)))
    moment = datetime(2025, 11, 21, 4, 40, 1, 123000)
    assert_same_answer(SQL, _result(("a", moment)), _result(("a", moment.replace(tzinfo=UTC))))
    assert_same_answer(SQL, _result(("a", 0.1 + 0.2)), _result(("a", 0.3)))


@pytest.mark.parametrize(("trino", "duck"), [
    ((("a", 2), ("b", 1)), (("b", 1), ("a", 2))),  # distinct sort keys out of order
    ((("a", Decimal("1234.6")),), (("a", 1234.567),)),  # a DECIMAL against a DOUBLE
    ((("a", 1234.567),), (("a", 1234.5671),)),  # beyond the float tolerance
    ((("a", 1),), (("a", 1), ("a", 1))),  # a row more
])
def test_differences_fail(trino: tuple[tuple[object, ...], ...], duck: tuple[tuple[object, ...], ...]) -> None:
    with pytest.raises(AssertionError):
        assert_same_answer(SQL, _result(*trino), _result(*duck))
