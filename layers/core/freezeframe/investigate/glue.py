"""Glue catalog and Athena DDL generated from `schemas.VIEWS` (the per-node `schemas.TABLES` plus the observation
columns), so the Parquet writer, the Glue tables in
template.yaml and the Athena DDL cannot drift apart (tests/unit/deploy/test_template.py re-generates the template's Glue
resources and compares them).

Partitioning: **registered partitions**, not partition projection.

Every table lives under ``tables/<table>/dt=YYYY-MM-DD/incident_id=<id>/<node>.parquet`` (`freezeframe.contracts.keys`),
one
part per node; the Glue tables read the incident's views, ``views/<table>/dt=YYYY-MM-DD/incident_id=<id>/
incident.parquet`` (one row per conversation across nodes, `freezeframe.dissect.observers`), partitioned alike. The
queries we must serve are both "everything about incident X" and "every incident between two dates".

* Projecting both keys does not work: ``incident_id`` is free text, so its only projection type is ``injected``, and
  Athena refuses any query on an injected-projected table that does not name the incident with an equality. A
  cross-incident date-range query ("all 5xx last week") is then impossible.
* Projecting ``dt`` (``date`` type) alone does not help: with projection enabled Athena ignores the catalog's
  partitions entirely, so ``incident_id`` still needs a projection type, which can only be ``injected`` again.
  Dropping ``incident_id`` from the partition keys (a ``storage.location.template`` of ``dt`` only) would make a
  per-incident query scan every incident of that day, and the layout nests incident_id under dt.
* Registered partitions serve both: a partition is added in the Glue catalog when its data is written (one
  ``BatchCreatePartition`` per table after a node is dissected; re-adding an existing partition is a no-op here),
  and Athena prunes on ``dt`` ranges and on ``incident_id`` equality alike, with no mandatory predicate.
  The cost is a few Glue calls per dissected node and a catalog that grows by one partition per table and
  incident-day, which is small (incidents are rare events, not a stream). ``MSCK REPAIR TABLE`` rebuilds the
  catalog from the bucket if it is ever lost, because the layout is hive-style.

`partition_input` builds the entries and `register_partitions` sends them; the function that writes the tables
(dissect) calls it, and only that function's role has ``glue:BatchCreatePartition`` (scoped to this database).

``python -m freezeframe.investigate.glue --yaml`` prints the template.yaml fragment (database and tables); ``--ddl``
prints the
Athena ``CREATE EXTERNAL TABLE`` statements.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from freezeframe.adapters.catalog import CatalogClient, create_partition
from freezeframe.contracts.errors import FreezeframeError
from freezeframe.contracts.keys import TABLES_ROOT, VIEWS_ROOT, view_prefix
from freezeframe.contracts.schemas import PARTITION_KEYS, TABLES, VIEWS, field_doc

# The default name of the Glue database (the template's GlueDatabaseName parameter and the local engine's schema).
DEFAULT_DATABASE = "freezeframe"
DATABASE_LOGICAL_ID = "GlueDatabase"
DATABASE_NAME_PARAMETER = "GlueDatabaseName"
BUCKET_LOGICAL_ID = "EvidenceBucket"

PARQUET_INPUT_FORMAT = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat"
PARQUET_OUTPUT_FORMAT = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat"
PARQUET_SERDE = "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
# Glue rejects a column comment longer than this.
GLUE_COMMENT_MAX = 255

PARTITION_DOCS: Mapping[str, str] = {
    "dt": "UTC day (YYYY-MM-DD) of the incident window's start; partition from the S3 path.",
    "incident_id": "Incident the rows were dissected for; partition from the S3 path.",
}


class GlueTypeError(TypeError):
    """A pyarrow type with no Glue/Athena equivalent."""


def glue_type(type_: pa.DataType) -> str:
    """The Glue (Hive) type name Athena reads a pyarrow column of this type as."""
    simple: list[tuple[Any, str]] = [
        (pa.types.is_boolean, "boolean"),
        (pa.types.is_int8, "tinyint"),
        (pa.types.is_int16, "smallint"),
        (pa.types.is_int32, "int"),
        (pa.types.is_int64, "bigint"),
        (pa.types.is_uint8, "smallint"),
        (pa.types.is_uint16, "int"),
        (pa.types.is_uint32, "bigint"),
        (pa.types.is_float16, "float"),
        (pa.types.is_float32, "float"),
        (pa.types.is_float64, "double"),
        (pa.types.is_string, "string"),
        (pa.types.is_large_string, "string"),
        (pa.types.is_binary, "binary"),
        (pa.types.is_large_binary, "binary"),
        (pa.types.is_timestamp, "timestamp"),
        (pa.types.is_date, "date"),
    ]
    for predicate, name in simple:
        if predicate(type_):
            return name
    if pa.types.is_decimal(type_):
        return f"decimal({type_.precision},{type_.scale})"
    if pa.types.is_list(type_) or pa.types.is_large_list(type_) or pa.types.is_fixed_size_list(type_):
        return f"array<{glue_type(type_.value_type)}>"
    if pa.types.is_map(type_):
        return f"map<{glue_type(type_.key_type)},{glue_type(type_.item_type)}>"
    if pa.types.is_struct(type_):
        members = ",".join(f"{type_.field(i).name}:{glue_type(type_.field(i).type)}" for i in range(type_.num_fields))
        return f"struct<{members}>"
    if pa.types.is_dictionary(type_):
        return glue_type(type_.value_type)
    # uint64 has no lossless Athena type; time, duration and unions are not in Athena at all.
    raise GlueTypeError(f"no Glue type for pyarrow {type_}")


def glue_comment(doc: str) -> str:
    """A field doc as a Glue column comment (cut to Glue's limit)."""
    return doc if len(doc) <= GLUE_COMMENT_MAX else doc[: GLUE_COMMENT_MAX - 3] + "..."


def columns(schema: pa.Schema) -> list[dict[str, str]]:
    """Glue `Column` entries of a schema, in schema order."""
    out = []
    for field in schema:
        column = {"Name": field.name, "Type": glue_type(field.type)}
        doc = field_doc(field)
        if doc:
            column["Comment"] = glue_comment(doc)
        out.append(column)
    return out


def partition_keys() -> list[dict[str, str]]:
    return [{"Name": key, "Type": "string", "Comment": PARTITION_DOCS[key]} for key in PARTITION_KEYS]


def _storage_descriptor(schema: pa.Schema, location: Any) -> dict[str, Any]:
    return {
        "Columns": columns(schema),
        "Location": location,
        "InputFormat": PARQUET_INPUT_FORMAT,
        "OutputFormat": PARQUET_OUTPUT_FORMAT,
        "SerdeInfo": {"SerializationLibrary": PARQUET_SERDE, "Parameters": {"serialization.format": "1"}},
    }


def _table_description(name: str, schema: pa.Schema) -> str:
    version = (schema.metadata or {}).get(b"schema_version", b"").decode()
    suffix = f", schema version {version}" if version else ""
    return f"freezeframe {name} table (generated from freezeframe.contracts.schemas{suffix})."


def logical_id(table: str) -> str:
    """The template's logical id of a table's Glue resource: connections -> GlueConnectionsTable."""
    return "Glue" + "".join(part[:1].upper() + part[1:] for part in table.split("_")) + "Table"


def table_properties(name: str, schema: pa.Schema) -> dict[str, Any]:
    """The `Properties` of the table's AWS::Glue::Table resource, intrinsics in their long form."""
    return {
        "CatalogId": {"Ref": "AWS::AccountId"},
        "DatabaseName": {"Ref": DATABASE_LOGICAL_ID},
        "TableInput": {
            "Name": name,
            "Description": _table_description(name, schema),
            "TableType": "EXTERNAL_TABLE",
            "Parameters": {"classification": "parquet", "EXTERNAL": "TRUE"},
            "PartitionKeys": partition_keys(),
            "StorageDescriptor": _storage_descriptor(
                schema, {"Fn::Sub": f"s3://${{{BUCKET_LOGICAL_ID}}}/{view_prefix(name)}"}
            ),
        },
    }


def template_resources(tables: Mapping[str, pa.Schema] = VIEWS) -> dict[str, dict[str, Any]]:
    """The Glue database and one table per schema, as template.yaml `Resources` entries."""
    resources: dict[str, dict[str, Any]] = {
        DATABASE_LOGICAL_ID: {
            "Type": "AWS::Glue::Database",
            "Properties": {
                "CatalogId": {"Ref": "AWS::AccountId"},
                "DatabaseInput": {
                    "Name": {"Ref": DATABASE_NAME_PARAMETER},
                    "Description": "freezeframe Parquet tables of dissected incidents "
                                   "(generated by freezeframe.investigate.glue).",
                },
            },
        }
    }
    for name, schema in tables.items():
        resources[logical_id(name)] = {"Type": "AWS::Glue::Table", "Properties": table_properties(name, schema)}
    return resources


def template_yaml(tables: Mapping[str, pa.Schema] = VIEWS) -> str:
    """The fragment to paste under template.yaml's `Resources:` (indented two spaces)."""
    import yaml  # only the generator needs PyYAML; the Lambda layer imports this module for register_partitions

    body = yaml.safe_dump(template_resources(tables), sort_keys=False, width=120, default_flow_style=False)
    return "".join(f"  {line}" if line.strip() else line for line in body.splitlines(keepends=True))


# ---------------------------------------------------------------- Athena DDL


def _sql_string(value: str) -> str:
    # Athena DDL is Hive DDL: string literals escape with a backslash.
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _column_ddl(name: str, type_: str, comment: str) -> str:
    return f"  `{name}` {type_}" + (f" COMMENT {_sql_string(comment)}" if comment else "")


def create_table_ddl(name: str, schema: pa.Schema, bucket: str, database: str = DEFAULT_DATABASE) -> str:
    """Athena `CREATE EXTERNAL TABLE` for one table, with the same columns, types and partitions as the template."""
    cols = ",\n".join(_column_ddl(c["Name"], c["Type"], c.get("Comment", "")) for c in columns(schema))
    parts = ",\n".join(_column_ddl(p["Name"], p["Type"], p["Comment"]) for p in partition_keys())
    return (
        f"CREATE EXTERNAL TABLE IF NOT EXISTS `{database}`.`{name}` (\n{cols}\n)\n"
        f"COMMENT {_sql_string(_table_description(name, schema))}\n"
        f"PARTITIONED BY (\n{parts}\n)\n"
        "STORED AS PARQUET\n"
        f"LOCATION 's3://{bucket}/{view_prefix(name)}'\n"
        "TBLPROPERTIES ('classification'='parquet')"
    )


def ddl(bucket: str, database: str = DEFAULT_DATABASE, tables: Mapping[str, pa.Schema] = VIEWS) -> list[str]:
    return [create_table_ddl(name, schema, bucket, database) for name, schema in tables.items()]


# ---------------------------------------------------------------- Parquet types against the declared Glue types

# The Parquet leaf types Athena reads as each declared Glue primitive type: (physical type, logical type). A logical
# type of None means "no annotation"; Trino reads some other combinations too (an INT32 declared string, a timestamp
# declared bigint), which is why the files are compared with the declaration itself, not with what an engine accepts.
_PARQUET_TYPES: dict[str, set[tuple[str, str | None]]] = {
    "string": {("BYTE_ARRAY", "String")},
    "tinyint": {("INT32", "Int(8,signed)")},
    "smallint": {("INT32", "Int(16,signed)")},
    "int": {("INT32", None), ("INT32", "Int(32,signed)")},
    "bigint": {("INT64", None), ("INT64", "Int(64,signed)")},
    "float": {("FLOAT", None)},
    "double": {("DOUBLE", None)},
    "boolean": {("BOOLEAN", None)},
    "binary": {("BYTE_ARRAY", None)},
    "date": {("INT32", "Date")},
    # Athena reads Parquet timestamps at millisecond precision; nanosecond units and INT96 are not what we write.
    "timestamp": {("INT64", "Timestamp(milliseconds)"), ("INT64", "Timestamp(microseconds)")},
}


class ParquetTypeError(FreezeframeError):
    """A Parquet file whose column types differ from the table's declared Glue types."""


def _logical(column: Any) -> str | None:
    """A leaf's logical type as a short text: String, Int(32,signed), Timestamp(milliseconds), Decimal(10,2)..."""
    info = json.loads(column.logical_type.to_json())
    kind = info.get("Type")
    if kind in (None, "None"):
        return None
    if kind == "Int":
        return f"Int({info['bitWidth']},{'signed' if info['isSigned'] else 'unsigned'})"
    if kind == "Timestamp":
        return f"Timestamp({info['timeUnit']})"
    if kind == "Decimal":
        return f"Decimal({info['precision']},{info['scale']})"
    return str(kind)


def _split_type(glue: str) -> tuple[str, list[tuple[str, str]]]:
    """``array<x>`` -> ("array", [("", x)]); ``struct<a:t,b:u>`` -> ("struct", [("a", t), ("b", u)]);
    a primitive -> (glue, [])."""
    kind, bracket, inner = glue.partition("<")
    if not bracket:
        return glue, []
    members, depth, current = [], 0, ""
    for char in inner[:-1] + ",":
        if char == "," and depth == 0:
            members.append(current)
            current = ""
            continue
        depth += char in "<("
        depth -= char in ">)"
        current += char
    if kind == "struct":
        return kind, [tuple(m.split(":", 1)) for m in members]  # type: ignore[misc]
    return kind, [("", m) for m in members]


def _leaf_problems(glue: str, path: tuple[str, ...], repeated: int, leaves: dict[tuple[str, ...], Any]) -> list[str]:
    name = ".".join(path)
    kind, members = _split_type(glue)
    if kind == "array":
        # The standard three-level LIST: <name> (LIST) / repeated group list / element.
        inner = [p for p in leaves if p[: len(path)] == path]
        middles = {p[len(path)] for p in inner if len(p) > len(path) + 1}
        if len(middles) != 1:
            return [f"{name}: declared {glue}, but the file has no three-level list there"]
        middle = middles.pop()
        elements = {p[len(path) + 1] for p in inner if p[len(path)] == middle}
        if len(elements) != 1:
            return [f"{name}: declared {glue}, but the list has {len(elements)} element fields"]
        return _leaf_problems(members[0][1], (*path, middle, elements.pop()), repeated + 1, leaves)
    if kind == "struct":
        return [problem for member, type_ in members
                for problem in _leaf_problems(type_, (*path, member), repeated, leaves)]
    if kind == "map":
        return [f"{name}: map columns are not checked; declare a list of structs instead"]
    column = leaves.get(path)
    if column is None:
        nested = sorted(".".join(p) for p in leaves if p[: len(path)] == path)
        return [f"{name}: declared {glue}, but the file has " + (f"a nested group ({', '.join(nested)})" if nested
                                                               else "no such column")]
    found = (str(column.physical_type), _logical(column))
    allowed: set[tuple[str, str | None]]
    if kind.startswith("decimal("):
        precision, scale = kind[len("decimal("):-1].split(",")
        allowed = {(physical, f"Decimal({precision},{scale})")
                   for physical in ("INT32", "INT64", "FIXED_LEN_BYTE_ARRAY", "BYTE_ARRAY")}
    else:
        allowed = _PARQUET_TYPES.get(kind, set())
    problems = []
    if found not in allowed:
        shown = found[0] + (f" ({found[1]})" if found[1] else "")
        wanted = " or ".join(sorted(p + (f" ({logical})" if logical else "") for p, logical in allowed)) or "nothing"
        problems.append(f"{name}: declared {glue}, but the file stores {shown}; Athena reads {glue} from {wanted}")
    if column.max_repetition_level != repeated:
        problems.append(f"{name}: declared {glue} at list depth {repeated}, but the file repeats it "
                        f"{column.max_repetition_level} time(s)")
    return problems


def parquet_type_problems(parquet_schema: Any, table: str, tables: Mapping[str, pa.Schema] = TABLES) -> list[str]:
    """Every difference between a Parquet file's schema (`pyarrow.parquet.ParquetSchema`) and the Glue columns
    declared for ``table``: each declared column must be stored with the physical and logical type Athena reads it
    from, nothing undeclared may be stored, and the partition columns must live in the path only."""
    leaves = {tuple(parquet_schema.column(i).path.split(".")): parquet_schema.column(i)
              for i in range(len(parquet_schema))}
    declared = columns(tables[table])
    problems = []
    for column in declared:
        problems += _leaf_problems(column["Type"], (column["Name"],), 0, leaves)
    names = {c["Name"] for c in declared}
    for stored in sorted({path[0] for path in leaves}):
        if stored in PARTITION_KEYS:
            problems.append(f"{stored}: a partition column is stored in the file; it belongs in the path only")
        elif stored not in names:
            problems.append(f"{stored}: stored in the file but not declared in the Glue table {table}")
    return problems


def check_parquet_types(source: Any, table: str, tables: Mapping[str, pa.Schema] = TABLES) -> None:
    """Raise `ParquetTypeError` unless the Parquet file at ``source`` (a path or a file object) stores every column
    with the type the Glue table declares."""
    import pyarrow.parquet as pq

    problems = parquet_type_problems(pq.ParquetFile(source).schema, table, tables)
    if problems:
        raise ParquetTypeError(f"{source}: {len(problems)} column(s) differ from the Glue table {table}: "
                               + "; ".join(problems))


def check_directory(root: Path) -> int:
    """`--check DIR`: every part under ``DIR/tables/<table>/`` and every view under ``DIR/views/<table>/`` (a copy of
    the bucket, or `freezeframe dissect`'s output) against its table's declared types; prints one line per part and
    returns 1 if any differs."""
    failed = checked = 0
    for folder, schemas in ((TABLES_ROOT, TABLES), (VIEWS_ROOT, VIEWS)):
        parts = [(t, p) for t in schemas for p in sorted((root / folder / t).rglob("*.parquet"))]
        for table, path in parts:
            checked += 1
            try:
                check_parquet_types(path, table, schemas)
            except ParquetTypeError as exc:
                failed += 1
                print(f"FAIL {exc}")
            else:
                print(f"ok   {path}")
    print(f"{checked - failed} of {checked} Parquet part(s) match their Glue tables")
    return 1 if failed or not checked else 0


# ---------------------------------------------------------------- registered partitions


def partition_location(bucket: str, table: str, dt: str, incident_id: str) -> str:
    """The S3 folder of one partition: the incident's view (`keys.view_key`), which the Glue tables read."""
    return f"s3://{bucket}/{view_prefix(table)}dt={dt}/incident_id={incident_id}/"


def partition_input(bucket: str, table: str, dt: str, incident_id: str,
                    tables: Mapping[str, pa.Schema] = VIEWS) -> dict[str, Any]:
    """A Glue `PartitionInput` for one table's (dt, incident_id) partition."""
    return {
        "Values": [dt, incident_id],
        "StorageDescriptor": _storage_descriptor(tables[table], partition_location(bucket, table, dt, incident_id)),
    }


def register_partitions(client: CatalogClient, database: str, bucket: str, dt: str, incident_id: str,
                        tables: Iterable[str] | None = None) -> list[str]:
    """Add the (dt, incident_id) partition of each table to the catalog; returns the tables newly registered.

    An existing partition is not an error (a retried dissection registers the same one again); any other
    per-partition error raises, so the caller's retry and dead-letter queue see it.
    """
    registered = []
    for table in tables if tables is not None else VIEWS:
        answered = create_partition(client, database, table, partition_input(bucket, table, dt, incident_id))
        errors = [e for e in answered if e.get("ErrorDetail", {}).get("ErrorCode") != "AlreadyExistsException"]
        if errors:
            raise RuntimeError(f"Glue BatchCreatePartition {database}.{table} dt={dt} incident_id={incident_id}: "
                               f"{errors}")
        if not answered:
            registered.append(table)
    return registered


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m freezeframe.investigate.glue", description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--yaml", action="store_true", help="print the template.yaml Glue resources")
    mode.add_argument("--ddl", action="store_true", help="print Athena CREATE EXTERNAL TABLE statements")
    mode.add_argument("--check", metavar="DIR", type=Path,
                      help="check every Parquet part under DIR/tables/<table>/ against the declared Glue types")
    parser.add_argument("--bucket", default="EVIDENCE-BUCKET", help="evidence bucket name for --ddl")
    parser.add_argument("--database", default=DEFAULT_DATABASE, help="Glue database name for --ddl")
    args = parser.parse_args(argv)
    if args.check is not None:
        return check_directory(args.check)
    if args.yaml:
        sys.stdout.write(template_yaml())
    else:
        sys.stdout.write(";\n\n".join(ddl(args.bucket, args.database)) + ";\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
