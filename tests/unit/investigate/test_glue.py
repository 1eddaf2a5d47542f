"""freezeframe.investigate.glue: the Glue columns and the Athena DDL are the pyarrow schemas, whatever `schemas.VIEWS`
holds."""

from __future__ import annotations

import posixpath
from typing import Any

import pyarrow as pa
import pytest
import yaml

from freezeframe.contracts import keys
from freezeframe.contracts.schemas import PARTITION_KEYS, field_doc
from freezeframe.contracts.schemas import VIEWS as TABLES
from freezeframe.investigate import glue

sqlglot = pytest.importorskip("sqlglot")
exp = sqlglot.exp

TABLE_NAMES = sorted(TABLES)

# An independent statement of the mapping, so a change in glue_type shows up here.
EXPECTED_TYPES: list[tuple[pa.DataType, str]] = [
    (pa.string(), "string"),
    (pa.large_string(), "string"),
    (pa.bool_(), "boolean"),
    (pa.int8(), "tinyint"),
    (pa.int16(), "smallint"),
    (pa.int32(), "int"),
    (pa.int64(), "bigint"),
    (pa.uint8(), "smallint"),
    (pa.uint16(), "int"),
    (pa.uint32(), "bigint"),
    (pa.float32(), "float"),
    (pa.float64(), "double"),
    (pa.binary(), "binary"),
    (pa.timestamp("ms", tz="UTC"), "timestamp"),
    (pa.timestamp("ns"), "timestamp"),
    (pa.date32(), "date"),
    (pa.decimal128(12, 3), "decimal(12,3)"),
    (pa.list_(pa.string()), "array<string>"),
    (pa.list_(pa.int64()), "array<bigint>"),
    (pa.large_list(pa.int32()), "array<int>"),
    (pa.map_(pa.string(), pa.int64()), "map<string,bigint>"),
    (pa.struct([("a", pa.int32()), ("b", pa.list_(pa.string()))]), "struct<a:int,b:array<string>>"),
    (pa.dictionary(pa.int32(), pa.string()), "string"),
]


@pytest.mark.parametrize(("type_", "expected"), EXPECTED_TYPES, ids=[str(t) for t, _ in EXPECTED_TYPES])
def test_glue_type_maps_pyarrow_types(type_: pa.DataType, expected: str) -> None:
    assert glue.glue_type(type_) == expected


@pytest.mark.parametrize("type_", [pa.uint64(), pa.time64("us"), pa.duration("ns")], ids=str)
def test_types_without_an_athena_equivalent_are_refused(type_: pa.DataType) -> None:
    with pytest.raises(glue.GlueTypeError):
        glue.glue_type(type_)


def test_there_are_tables() -> None:
    assert TABLES, "schemas.TABLES is empty: nothing to generate"


@pytest.mark.parametrize("table", TABLE_NAMES)
def test_glue_columns_are_the_schema(table: str) -> None:
    schema = TABLES[table]
    props = glue.table_properties(table, schema)
    columns = props["TableInput"]["StorageDescriptor"]["Columns"]
    assert [c["Name"] for c in columns] == schema.names
    assert [c["Type"] for c in columns] == [glue.glue_type(f.type) for f in schema]
    for column, field in zip(columns, schema, strict=True):
        doc = field_doc(field)
        assert doc, f"{table}.{field.name} has no doc"
        assert column["Comment"] == glue.glue_comment(doc)
        assert len(column["Comment"]) <= glue.GLUE_COMMENT_MAX
        assert doc.startswith(column["Comment"].removesuffix("..."))
    assert not set(schema.names) & set(PARTITION_KEYS), "partition columns live in the path, never in the files"


@pytest.mark.parametrize("table", TABLE_NAMES)
def test_glue_table_is_parquet_partitioned_by_dt_and_incident_under_the_key_layout(table: str) -> None:
    table_input = glue.table_properties(table, TABLES[table])["TableInput"]
    assert table_input["Name"] == table
    assert table_input["TableType"] == "EXTERNAL_TABLE"
    assert [(p["Name"], p["Type"]) for p in table_input["PartitionKeys"]] == [(k, "string") for k in PARTITION_KEYS]
    assert all(p["Comment"] for p in table_input["PartitionKeys"])
    sd = table_input["StorageDescriptor"]
    assert sd["Location"] == {"Fn::Sub": f"s3://${{EvidenceBucket}}/{keys.view_prefix(table)}"}
    assert sd["Location"]["Fn::Sub"].endswith(f"/views/{table}/")
    assert sd["SerdeInfo"]["SerializationLibrary"] == "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
    assert sd["InputFormat"].endswith("MapredParquetInputFormat")
    assert sd["OutputFormat"].endswith("MapredParquetOutputFormat")
    # No projection: partitions are registered (see the module docstring).
    assert not any(k.startswith("projection.") for k in table_input["Parameters"])


def test_long_docs_are_cut_to_glues_limit() -> None:
    comment = glue.glue_comment("x" * 400)
    assert len(comment) == glue.GLUE_COMMENT_MAX and comment.endswith("...")
    assert glue.glue_comment("short") == "short"


def test_template_resources_are_the_database_and_one_table_per_schema() -> None:
    resources = glue.template_resources()
    assert resources.pop(glue.DATABASE_LOGICAL_ID)["Type"] == "AWS::Glue::Database"
    assert {r["Properties"]["TableInput"]["Name"] for r in resources.values()} == set(TABLES)
    assert all(r["Type"] == "AWS::Glue::Table" for r in resources.values())
    assert glue.logical_id("dns_queries") == "GlueDnsQueriesTable"


def test_yaml_entry_point_prints_the_resources(capsys: pytest.CaptureFixture[str]) -> None:
    assert glue.main(["--yaml"]) == 0
    out = capsys.readouterr().out
    assert all(line.startswith("  ") for line in out.splitlines() if line.strip()), "indent for Resources:"
    assert yaml.safe_load(out) == glue.template_resources()


# ---------------------------------------------------------------- Athena DDL


def _comment(node: exp.Expression) -> str | None:
    constraint = node.find(exp.CommentColumnConstraint)
    return constraint.this.this if constraint else None


def _parse(ddl: str) -> exp.Create:
    tree = sqlglot.parse_one(ddl, read="athena")
    assert isinstance(tree, exp.Create)
    return tree


@pytest.mark.parametrize("table", TABLE_NAMES)
def test_ddl_parses_as_athena_with_the_schemas_columns_and_partitions(table: str) -> None:
    schema = TABLES[table]
    tree = _parse(glue.create_table_ddl(table, schema, bucket="evidence-bkt", database="ffdb"))
    assert tree.find(exp.ExternalProperty) is not None
    assert tree.this.this.name == table and tree.this.this.db == "ffdb"
    column_defs = tree.this.expressions
    assert [c.name for c in column_defs] == schema.names
    for column, field in zip(column_defs, schema, strict=True):
        # The parsed type, written back in Hive (Athena DDL) syntax, is the Glue type (sqlglot writes upper case).
        assert column.args["kind"].sql("hive").lower().replace(" ", "") == glue.glue_type(field.type)
        assert _comment(column) == glue.glue_comment(field_doc(field))
    partitioned = tree.find(exp.PartitionedByProperty)
    assert partitioned is not None
    assert [c.name for c in partitioned.this.expressions] == list(PARTITION_KEYS)
    assert tree.find(exp.FileFormatProperty).this.name.upper() == "PARQUET"
    assert tree.find(exp.LocationProperty).this.this == f"s3://evidence-bkt/{keys.view_prefix(table)}"


def test_ddl_escapes_quotes_and_backslashes_and_covers_nested_types() -> None:
    schema = pa.schema([
        pa.field("names", pa.list_(pa.string()), metadata={"doc": "It's a list of 'names' with a \\ in it."}),
        pa.field("ids", pa.list_(pa.int64()), metadata={"doc": "ids"}),
        pa.field("ok", pa.bool_(), metadata={"doc": "ok"}),
        pa.field("rtt", pa.float64()),
    ])
    tree = _parse(glue.create_table_ddl("synthetic", schema, bucket="b"))
    names, ids, ok, rtt = tree.this.expressions
    assert _comment(names) == "It's a list of 'names' with a \\ in it."
    assert names.args["kind"].sql("hive") == "ARRAY<STRING>"
    assert ids.args["kind"].sql("hive") == "ARRAY<BIGINT>"
    assert _comment(rtt) is None


def test_generation_works_for_any_tables_mapping() -> None:
    extra = {"dns": pa.schema([pa.field("qname", pa.string(), metadata={"doc": "Query name."}),
                               pa.field("answers", pa.list_(pa.string()), metadata={"doc": "Answers."})])}
    resources = glue.template_resources(extra)
    assert set(resources) == {glue.DATABASE_LOGICAL_ID, "GlueDnsTable"}
    assert len(glue.ddl("b", tables=extra)) == 1


# ---------------------------------------------------------------- registered partitions


class FakeGlue:
    def __init__(self, errors: dict[str, list[dict[str, Any]]] | None = None) -> None:
        self.calls: list[dict[str, Any]] = []
        self.errors = errors or {}

    def batch_create_partition(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(kwargs)
        return {"Errors": self.errors.get(kwargs["TableName"], [])}


def _error(code: str) -> dict[str, Any]:
    return {"PartitionValues": ["2026-11-21", "inc-1"], "ErrorDetail": {"ErrorCode": code, "ErrorMessage": code}}


def test_partition_location_is_the_folder_the_incident_view_is_written_to() -> None:
    window_start_ns = 1_763_700_000_000_000_000  # 2025-11-21 UTC
    for table in TABLES:
        part_key = keys.table_part_key(table, window_start_ns, "inc-1", "node-a")
        day = part_key.split("dt=")[1].split("/")[0]
        view = keys.view_key(table, day, "inc-1")
        assert glue.partition_location("bkt", table, day, "inc-1") == f"s3://bkt/{posixpath.dirname(view)}/"


def test_register_partitions_adds_one_partition_per_table() -> None:
    client = FakeGlue()
    registered = glue.register_partitions(client, "ffdb", "bkt", "2026-11-21", "inc-1")
    assert registered == list(TABLES)
    assert [c["TableName"] for c in client.calls] == list(TABLES)
    for call in client.calls:
        assert call["DatabaseName"] == "ffdb"
        (entry,) = call["PartitionInputList"]
        assert entry["Values"] == ["2026-11-21", "inc-1"]
        sd = entry["StorageDescriptor"]
        assert sd["Location"] == f"s3://bkt/views/{call['TableName']}/dt=2026-11-21/incident_id=inc-1/"
        assert sd["Columns"] == glue.columns(TABLES[call["TableName"]])


def test_register_partitions_tolerates_existing_and_raises_on_other_errors() -> None:
    table = TABLE_NAMES[0]
    assert glue.register_partitions(FakeGlue({table: [_error("AlreadyExistsException")]}), "d", "b", "x", "i") == [
        t for t in TABLES if t != table
    ]
    with pytest.raises(RuntimeError, match="AccessDenied"):
        glue.register_partitions(FakeGlue({table: [_error("AccessDeniedException")]}), "d", "b", "x", "i")
