"""The Trino tooling without a server: choosing a JDK >= 24, the Glue -> Trino type mapping, the generated DDL and the
catalog of a data location. (The server itself runs in tests/integration/test_engines_agree.py.)"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from freezeframe_local.trino import MIN_JAVA, find_java, java_feature_version

from freezeframe.contracts.errors import StackError
from freezeframe.contracts.schemas import PARTITION_KEYS, TABLES
from freezeframe.investigate.trino_sql import (
    DataLocation,
    TrinoTypeError,
    create_table_sql,
    table_columns,
    trino_type,
)


def _jdk(root: Path, name: str, version: str) -> Path:
    home = root / name
    (home / "bin").mkdir(parents=True)
    (home / "bin" / "java").write_text("#!/bin/sh\n")
    (home / "release").write_text(f'IMPLEMENTOR="Test"\nJAVA_VERSION="{version}"\n')
    return home


def test_the_newest_jdk_of_at_least_24_is_chosen(tmp_path: Path) -> None:
    _jdk(tmp_path, "java-17", "17.0.12")
    _jdk(tmp_path, "jdk-24", "24.0.1")
    newest = _jdk(tmp_path, "temurin-25", "25.0.3")
    assert java_feature_version(newest) == 25
    assert find_java(None, None, search=(tmp_path,)) == newest / "bin" / "java"


def test_no_jdk_new_enough_is_a_clear_error_naming_what_was_found(tmp_path: Path) -> None:
    _jdk(tmp_path, "java-17", "17.0.12")
    _jdk(tmp_path, "java-21", "21.0.5")
    with pytest.raises(StackError, match=f"needs Java {MIN_JAVA} or newer and none was found") as caught:
        find_java(None, None, search=(tmp_path,))
    assert "Java 17" in str(caught.value) and "Java 21" in str(caught.value)
    assert "FREEZEFRAME_TRINO_JAVA_HOME" in str(caught.value)


def test_a_configured_java_home_must_be_new_enough(tmp_path: Path) -> None:
    old = _jdk(tmp_path, "java-21", "21.0.5")
    good = _jdk(tmp_path, "jdk-24", "24")
    assert find_java(good, None, search=()) == good / "bin" / "java"
    with pytest.raises(StackError, match="is not a Java 24\\+ JDK"):
        find_java(old, None, search=())


@pytest.mark.parametrize(("glue", "trino"), [
    ("string", "varchar"), ("int", "integer"), ("bigint", "bigint"), ("double", "double"), ("float", "real"),
    ("boolean", "boolean"), ("timestamp", "timestamp(3)"), ("smallint", "smallint"), ("binary", "varbinary"),
    ("decimal(10,2)", "decimal(10,2)"), ("array<string>", "array(varchar)"), ("array<bigint>", "array(bigint)"),
    ("map<string,array<int>>", "map(varchar, array(integer))"),
    ("struct<a:int,b:array<string>>", 'row("a" integer, "b" array(varchar))'),
])
def test_glue_types_become_trino_types(glue: str, trino: str) -> None:
    assert trino_type(glue) == trino


@pytest.mark.parametrize("glue", ["uniontype<int>", "array<string", "string>"])
def test_a_glue_type_with_no_trino_equivalent_is_refused(glue: str) -> None:
    with pytest.raises(TrinoTypeError):
        trino_type(glue)


def test_ddl_declares_every_schema_column_then_the_partitions(tmp_path: Path) -> None:
    for name, schema in TABLES.items():
        columns = table_columns(schema)
        assert [c for c, _ in columns] == [*schema.names, *PARTITION_KEYS]
        ddl = create_table_sql("ff_x", name, schema, f"local://{tmp_path}/{name}")
        assert ddl.startswith(f'CREATE TABLE "ff_x"."freezeframe"."{name}" (')
        assert f"external_location = 'local://{tmp_path}/{name}'" in ddl
        assert "partitioned_by = ARRAY['dt', 'incident_id']" in ddl
    connections = dict(table_columns(TABLES["connections"]))
    assert (connections["ts"], connections["src_port"], connections["retransmission_rate"]) == (
        "timestamp(3)", "integer", "double")
    assert dict(table_columns(TABLES["dns"]))["answers"] == "array(varchar)"


def test_ddl_escapes_comments(tmp_path: Path) -> None:
    schema = pa.schema([pa.field("note", pa.string(), metadata={"doc": "it's \"quoted\""})])
    assert "COMMENT 'it''s \"quoted\"'" in create_table_sql("ff_x", "t", schema, "local:///x")


def test_locations_get_their_own_stable_catalog_and_metastore_outside_the_data(tmp_path: Path) -> None:
    (tmp_path / "a" / "tables").mkdir(parents=True)
    (tmp_path / "a" / "views").mkdir(parents=True)
    (tmp_path / "b").mkdir()
    (tmp_path / "c" / "tables").mkdir(parents=True)
    copy_of_bucket, copy_of_tables = DataLocation.directory(tmp_path / "a"), DataLocation.directory(tmp_path / "b")
    # The views (one row per conversation across nodes) when there are any; per-node parts only from older output.
    assert copy_of_bucket.table_location("dns") == f"local://{tmp_path}/a/views/dns"
    assert DataLocation.directory(tmp_path / "c").table_location("dns") == f"local://{tmp_path}/c/tables/dns"
    assert copy_of_tables.table_location("dns") == f"local://{tmp_path}/b/dns"
    assert copy_of_bucket.catalog() == DataLocation.directory(tmp_path / "a").catalog() != copy_of_tables.catalog()
    bucket = DataLocation.bucket("evidence", "http://127.0.0.1:4566", "us-east-1", ("test", "test", None))
    assert bucket.table_location("http") == "s3://evidence/views/http"
    properties = bucket.catalog_properties(tmp_path / "meta")
    assert properties["hive.metastore.catalog.dir"] == f"local://{tmp_path}/meta"
    assert properties["s3.endpoint"] == "http://127.0.0.1:4566" and properties["s3.path-style-access"] == "true"
    assert "s3.aws-access-key" not in DataLocation.bucket("evidence", None, "eu-west-1", None).catalog_properties(
        tmp_path)
