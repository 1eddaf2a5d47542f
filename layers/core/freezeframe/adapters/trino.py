"""Trino: the typed interface of the one call the Trino engine makes (freezeframe.investigate.trino_sql): run a
statement on a server at ``http(s)://host:port`` and read its columns and rows, through the trino client's DB-API
(HTTP). The client library's errors become `TrinoStatementError` (Trino refused the statement) or
`TrinoUnavailableError` (the server failed or could not be reached)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, cast

from freezeframe.contracts.errors import FreezeframeError

REQUEST_TIMEOUT_S = 300


class TrinoStatementError(FreezeframeError):
    """Trino refused a statement: `error_name` (e.g. TABLE_NOT_FOUND) and Trino's own message."""

    def __init__(self, error_name: str, message: str) -> None:
        super().__init__(f"{error_name}: {message}")
        self.error_name = error_name
        self.message = message


class TrinoUnavailableError(FreezeframeError):
    """The server failed a statement or could not be reached (the client's own message)."""


class TrinoCursor(Protocol):
    """The DB-API cursor operations freezeframe uses."""

    description: Sequence[Sequence[Any]] | None

    def execute(self, operation: str) -> Any: ...
    def fetchall(self) -> list[Sequence[Any]]: ...


class TrinoConnection(Protocol):
    def cursor(self) -> TrinoCursor: ...
    def close(self) -> None: ...


def connect(url: str, user: str, catalog: str | None = None, schema: str | None = None) -> TrinoConnection:
    """A DB-API connection to the server at `url` (``http://127.0.0.1:PORT``), as `user`, in `catalog`.`schema`."""
    import trino  # noqa: PLC0415 - only the Trino engine needs the client

    scheme, _, hostport = url.partition("://")
    host, _, port = hostport.rstrip("/").partition(":")
    return cast(TrinoConnection, trino.dbapi.connect(host=host, port=int(port or 8080), http_scheme=scheme, user=user,
                                                     catalog=catalog, schema=schema,
                                                     request_timeout=REQUEST_TIMEOUT_S))


def execute(url: str, sql: str, user: str, catalog: str | None = None, schema: str | None = None
            ) -> tuple[tuple[str, ...], tuple[tuple[Any, ...], ...]]:
    """Runs one statement on its own connection; its column names and rows."""
    import trino  # noqa: PLC0415

    connection = connect(url, user, catalog, schema)
    try:
        cursor = connection.cursor()
        cursor.execute(sql)
        rows = tuple(tuple(row) for row in cursor.fetchall())
        names = tuple(d[0] for d in cursor.description or ())
    except trino.exceptions.TrinoUserError as exc:
        raise TrinoStatementError(str(exc.error_name), str(exc.message)) from exc
    except (trino.exceptions.Error, OSError) as exc:
        raise TrinoUnavailableError(str(exc)) from exc
    finally:
        connection.close()
    return names, rows
