"""Athena SQL on a real Trino (the engine under Athena engine v3), over the evidence tables where they are.

The SQL is sent verbatim: Athena's dialect is Trino's, so what runs here runs on Athena (the local DuckDB engine has
to transpile and refuses what it cannot run faithfully; Trino needs neither). What differs from Athena is only the
catalog: instead of Glue, each data location (a local directory laid out like the evidence bucket, or the bucket
itself on an S3 endpoint) gets its own Hive catalog with a file metastore, created on the running server with
``CREATE CATALOG`` (dynamic catalogs). Its schema is ``freezeframe``, like the Glue database, so the product's
qualified names (``freezeframe.connections``) and unqualified ones both resolve.

The tables are declared from the same pyarrow schemas as the Glue tables (`glue.columns`): each Glue type string is
translated to its Trino type (`trino_type`), and the partition columns ``dt`` and ``incident_id`` come last, as the
Hive connector requires. Partitions are registered from the layout (``sync_partition_metadata``), as
``MSCK REPAIR TABLE`` would do on Athena.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from freezeframe.adapters import trino
from freezeframe.contracts.errors import FreezeframeError
from freezeframe.contracts.keys import view_prefix
from freezeframe.contracts.schemas import PARTITION_KEYS, VIEWS
from freezeframe.investigate.glue import DEFAULT_DATABASE, columns
from freezeframe.investigate.query import QueryError, QueryResult, local_base

USER = "freezeframe"
CATALOG_PREFIX = "ff_"
_SIMPLE_TYPES = {
    "string": "varchar", "int": "integer", "tinyint": "tinyint", "smallint": "smallint", "bigint": "bigint",
    "double": "double", "float": "real", "boolean": "boolean", "binary": "varbinary", "date": "date",
    # Athena reads Parquet timestamps at millisecond precision; the Hive connector's default is the same.
    "timestamp": "timestamp(3)",
}


class TrinoError(QueryError):
    """Trino refused or failed a statement."""


class TrinoTypeError(FreezeframeError):
    """A Glue type string with no Trino equivalent (or not a type at all)."""


# ---------------------------------------------------------------- Glue types -> Trino types


def trino_type(glue: str) -> str:
    """The Trino type of a Glue (Hive) type string: ``array<string>`` -> ``array(varchar)``."""
    parsed, rest = _parse_type(glue.replace(" ", ""))
    if rest:
        raise TrinoTypeError(f"unexpected {rest!r} after a type in {glue!r}")
    return parsed


def _parse_type(text: str) -> tuple[str, str]:
    for name, template in (("array<", "array({})"), ("map<", "map({})"), ("struct<", "row({})")):
        if text.startswith(name):
            inner, rest = _parse_members(text[len(name):], struct=name == "struct<")
            return template.format(inner), rest
    if text.startswith("decimal("):
        close = text.index(")")
        return text[: close + 1], text[close + 1:]
    name = ""
    while text[len(name):len(name) + 1].isalnum() or text[len(name):len(name) + 1] == "_":
        name += text[len(name)]
    if name not in _SIMPLE_TYPES:
        raise TrinoTypeError(f"no Trino type for the Glue type {name or text!r}")
    return _SIMPLE_TYPES[name], text[len(name):]


def _parse_members(text: str, struct: bool) -> tuple[str, str]:
    members = []
    while True:
        label = ""
        if struct:
            label, _, text = text.partition(":")
            label = f'"{label}" '
        member, text = _parse_type(text)
        members.append(label + member)
        if text.startswith(","):
            text = text[1:]
            continue
        if not text.startswith(">"):
            raise TrinoTypeError(f"unterminated nested type before {text!r}")
        return ", ".join(members), text[1:]


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def table_columns(schema: pa.Schema) -> list[tuple[str, str]]:
    """(name, Trino type) of every column as Glue declares it, partition columns last."""
    declared = [(c["Name"], trino_type(c["Type"])) for c in columns(schema)]
    return declared + [(key, "varchar") for key in PARTITION_KEYS]


def create_table_sql(catalog: str, name: str, schema: pa.Schema, location: str,
                     database: str = DEFAULT_DATABASE) -> str:
    """Trino ``CREATE TABLE`` of one evidence table over ``location``, generated from its pyarrow schema through the
    Glue column types (so Trino reads the files with exactly the types Athena is told)."""
    docs = {c["Name"]: c.get("Comment", "") for c in columns(schema)}
    body = ",\n".join(f"  {_quote(col)} {type_}" + (f" COMMENT {_string(docs[col])}" if docs.get(col) else "")
                      for col, type_ in table_columns(schema))
    partitions = ", ".join(_string(key) for key in PARTITION_KEYS)
    return (f"CREATE TABLE {_quote(catalog)}.{_quote(database)}.{_quote(name)} (\n{body}\n)\n"
            f"WITH (format = 'PARQUET', external_location = {_string(location)}, "
            f"partitioned_by = ARRAY[{partitions}])")


# ---------------------------------------------------------------- data locations


@dataclass(frozen=True, slots=True)
class DataLocation:
    """Where the evidence tables are: a local directory (``root/tables/<table>/dt=.../incident_id=...``) or a bucket
    on an S3 endpoint (``s3://bucket/tables/...``)."""

    root: str  # the absolute directory holding the table folders, or a bucket name
    s3_endpoint: str | None = None
    region: str = "us-east-1"
    credentials: tuple[str, str, str | None] | None = None
    is_s3: bool = False

    @classmethod
    def directory(cls, path: Path) -> DataLocation:
        """A local copy of the bucket (``DIR/tables/<table>/...``) or of its ``tables/`` folder (``DIR/<table>/...``),
        as `query.connect_local` reads it."""
        path = path.resolve()
        if not path.is_dir():
            raise QueryError(f"{path} is not a directory")
        return cls(str(local_base(path)))

    @classmethod
    def bucket(cls, bucket: str, endpoint: str | None, region: str,
               credentials: tuple[str, str, str | None] | None) -> DataLocation:
        return cls(bucket, endpoint, region, credentials, is_s3=True)

    def table_location(self, table: str) -> str:
        return f"s3://{self.root}/{view_prefix(table).rstrip('/')}" if self.is_s3 else f"local://{self.root}/{table}"

    def catalog(self) -> str:
        """A catalog name stable for this location (so a second query reuses the catalog)."""
        identity = f"{self.is_s3}|{self.root}|{self.s3_endpoint or ''}|{self.region}"
        return CATALOG_PREFIX + hashlib.sha256(identity.encode()).hexdigest()[:12]

    def catalog_properties(self, metastore_dir: Path) -> dict[str, str]:
        properties = {
            "hive.metastore": "file",
            # The metastore is local even for a bucket: nothing of Trino's is ever written into the evidence bucket.
            "hive.metastore.catalog.dir": f"local://{metastore_dir.resolve()}",
            "fs.native-local.enabled": "true",
            "local.location": "/",
            "hive.non-managed-table-writes-enabled": "false",
        }
        if self.is_s3:
            properties.update({"fs.native-s3.enabled": "true", "s3.region": self.region})
            if self.s3_endpoint:
                properties.update({"s3.endpoint": self.s3_endpoint, "s3.path-style-access": "true"})
            if self.credentials is not None:
                properties.update({"s3.aws-access-key": self.credentials[0], "s3.aws-secret-key": self.credentials[1]})
        return properties


# ---------------------------------------------------------------- the engine


@dataclass(frozen=True, slots=True)
class TrinoEngine:
    """A running Trino (``http://127.0.0.1:PORT``) and the folder where its catalogs keep their file metastores."""

    url: str
    metastore_root: Path

    def execute(self, sql: str, catalog: str | None = None) -> tuple[tuple[str, ...], tuple[tuple[Any, ...], ...]]:
        """Run one statement; its column names and rows."""
        try:
            return trino.execute(self.url, sql, USER, catalog, DEFAULT_DATABASE if catalog else None)
        except trino.TrinoStatementError as exc:
            raise TrinoError(f"Trino: {exc.error_name}: {exc.message}") from exc
        except trino.TrinoUnavailableError as exc:
            raise TrinoError(f"Trino at {self.url} failed: {exc}") from exc

    def attach(self, location: DataLocation, tables: Mapping[str, pa.Schema] = VIEWS) -> str:
        """The catalog over ``location``, created on first use, with every table declared from its schema (declared
        again when the schema changed) and its partitions synced with the files; returns the catalog name."""
        catalog = location.catalog()
        _, existing = self.execute("SHOW CATALOGS")
        if (catalog,) not in existing:
            metastore = self.metastore_root / catalog
            metastore.mkdir(parents=True, exist_ok=True)
            properties = ", ".join(f"{_quote(k)} = {_string(v)}"
                                   for k, v in location.catalog_properties(metastore).items())
            self.execute(f"CREATE CATALOG {_quote(catalog)} USING hive WITH ({properties})")
        self.execute(f"CREATE SCHEMA IF NOT EXISTS {_quote(catalog)}.{_quote(DEFAULT_DATABASE)}")
        declared = self._declared(catalog)
        for name, schema in tables.items():
            location_url = location.table_location(name)
            if not location.is_s3 and not Path(location_url.removeprefix("local://")).is_dir():
                # No folder for this table yet: Trino wants an existing directory, so the table reads an empty one
                # (as the local engine shows an empty view), without writing into the user's data directory.
                empty = self.metastore_root / catalog / "empty" / name
                empty.mkdir(parents=True, exist_ok=True)
                location_url = f"local://{empty.resolve()}"
            if declared.get(name) != table_columns(schema) or location_url not in self._definition(catalog, name):
                if name in declared:
                    # External table: dropping it forgets the declaration, never the files.
                    self.execute(f"DROP TABLE {_quote(catalog)}.{_quote(DEFAULT_DATABASE)}.{_quote(name)}")
                self.execute(create_table_sql(catalog, name, schema, location_url))
            self.execute(f"CALL {_quote(catalog)}.system.sync_partition_metadata("
                         f"{_string(DEFAULT_DATABASE)}, {_string(name)}, 'FULL')")
        return catalog

    def _definition(self, catalog: str, table: str) -> str:
        try:
            _, rows = self.execute(f"SHOW CREATE TABLE {_quote(catalog)}.{_quote(DEFAULT_DATABASE)}.{_quote(table)}")
        except TrinoError:
            return ""
        return str(rows[0][0]) if rows else ""

    def _declared(self, catalog: str) -> dict[str, list[tuple[str, str]]]:
        # A quoted catalog name and constants only.
        sql = (f"SELECT table_name, column_name, data_type FROM {_quote(catalog)}.information_schema.columns "  # noqa: S608
               f"WHERE table_schema = {_string(DEFAULT_DATABASE)} ORDER BY table_name, ordinal_position")
        _, rows = self.execute(sql)
        declared: dict[str, list[tuple[str, str]]] = {}
        for table, column, type_ in rows:
            declared.setdefault(str(table), []).append((str(column), str(type_)))
        return declared

    def run(self, sql: str, catalog: str) -> QueryResult:
        """Athena SQL, verbatim, with ``catalog``.freezeframe as the session's schema."""
        names, rows = self.execute(sql, catalog)
        return QueryResult(sql, "", names, rows, engine="trino")
