"""Every Parquet column's physical and logical type against the Glue type its table declares (glue.py).

Trino reads some mismatches that Athena rejects (an INT32 declared string, a timestamp declared bigint), so a file
that reads is no proof; the files are compared with the declaration itself. The reference for what is right is the
Parquet format's own types (BYTE_ARRAY + String for string, INT64 + Timestamp(ms) for timestamp, ...), written out
here, not derived from the code under test.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from freezeframe.contracts.schemas import DNS, TABLES
from freezeframe.dissect.files import dissect_files
from freezeframe.investigate.glue import ParquetTypeError, check_parquet_types, parquet_type_problems
from tests.fixtures.engine_tables import write_engine_tables

SAMPLE = Path(__file__).resolve().parents[2] / "fixtures" / "sample.pcap"


def _parts(root: Path) -> dict[str, list[Path]]:
    return {name: sorted(root.glob(f"tables/{name}/dt=*/incident_id=*/*.parquet")) for name in TABLES}


def test_the_dissectors_files_match_the_glue_types_for_every_table(tmp_path: Path) -> None:
    dissect_files([SAMPLE], tmp_path, node="node-a", incident_id="inc-1", progress=False)
    parts = _parts(tmp_path)
    assert all(len(found) == 1 for found in parts.values()), parts  # every table of schemas.TABLES was written
    for table, found in parts.items():
        check_parquet_types(found[0], table)


def test_the_query_fixtures_match_the_glue_types(tmp_path: Path) -> None:
    checked = 0
    for table, found in _parts(write_engine_tables(tmp_path)).items():
        for path in found:
            check_parquet_types(path, table)
            checked += 1
    assert checked >= 4


def _problems(tmp_path: Path, table: str, data: pa.Table) -> list[str]:
    path = tmp_path / "part.parquet"
    pq.write_table(data, path)
    return parquet_type_problems(pq.ParquetFile(path).schema, table)


def _dns_with(name: str, field: pa.Field, values: list[object]) -> pa.Table:
    """A one-row dns table with every column as declared except `name`."""
    schema = DNS.set(DNS.get_field_index(name), field) if name in DNS.names else DNS.append(field)
    row = {f.name: None for f in schema}
    row[field.name] = values[0]
    return pa.Table.from_pylist([row], schema=pa.schema([f.with_nullable(True) for f in schema]))


@pytest.mark.parametrize(("name", "field", "value", "expected"), [
    ("qname", pa.field("qname", pa.int32()), 7, "qname: declared string, but the file stores INT32"),
    ("ts_ns", pa.field("ts_ns", pa.int32()), 7, "ts_ns: declared bigint, but the file stores INT32"),
    ("ts", pa.field("ts", pa.int64()), 7, "ts: declared timestamp, but the file stores INT64;"),
    ("ts", pa.field("ts", pa.timestamp("ns", tz="UTC")), 7, "Timestamp(nanoseconds)"),
    ("transaction_id", pa.field("transaction_id", pa.int64()), 7, "transaction_id: declared int, but the file"),
    ("rcode", pa.field("rcode", pa.int16()), 3, "INT32 (Int(16,signed))"),
    ("truncated", pa.field("truncated", pa.string()), "yes", "truncated: declared boolean"),
    ("answers", pa.field("answers", pa.string()), "1.2.3.4", "answers: declared array<string>, but the file has no "
                                                            "three-level list"),
    ("ttls", pa.field("ttls", pa.list_(pa.int32())), [60], "ttls.list.element: declared bigint, but the file stores "
                                                           "INT32"),
    ("qname", pa.field("qname", pa.list_(pa.string())), ["x"], "qname: declared string, but the file has a nested"),
    ("latency_us", pa.field("latency_us", pa.float64()), 1.5, "latency_us: declared bigint, but the file stores "
                                                              "DOUBLE"),
    ("extra", pa.field("extra", pa.string()), "x", "extra: stored in the file but not declared"),
    ("dt", pa.field("dt", pa.string()), "2025-11-21", "dt: a partition column is stored in the file"),
])
def test_a_column_stored_with_another_type_is_named(tmp_path: Path, name: str, field: pa.Field, value: object,
                                                    expected: str) -> None:
    problems = _problems(tmp_path, "dns", _dns_with(name, field, [value]))
    assert len(problems) == 1 and expected in problems[0], problems


def test_a_missing_column_is_named_and_the_check_raises(tmp_path: Path) -> None:
    path = tmp_path / "part.parquet"
    pq.write_table(DNS.remove(DNS.get_field_index("qtype")).empty_table(), path)
    with pytest.raises(ParquetTypeError, match="qtype: declared string, but the file has no such column"):
        check_parquet_types(path, "dns")


def test_the_check_follows_any_schema_including_new_columns(tmp_path: Path) -> None:
    # Columns added to a schema later (e.g. the observers of a deduplicated connection) are checked like the rest.
    widened = DNS.append(pa.field("observers", pa.list_(pa.string()))).append(pa.field("observer", pa.string()))
    tables = {"dns": widened}
    good = tmp_path / "good.parquet"
    pq.write_table(widened.empty_table(), good)
    check_parquet_types(good, "dns", tables)
    bad = tmp_path / "bad.parquet"
    pq.write_table(widened.set(widened.get_field_index("observer"), pa.field("observer", pa.int64())).empty_table(),
                   bad)
    with pytest.raises(ParquetTypeError, match="observer: declared string, but the file stores INT64"):
        check_parquet_types(bad, "dns", tables)


def test_the_check_command_reports_each_part(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from freezeframe.investigate.glue import main

    root = write_engine_tables(tmp_path / "good")
    assert main(["--check", str(root)]) == 0
    # Two incidents of http and connections (6 parts) plus node_stats, endpoints and service_flows (3), and each
    # incident's ten views.
    assert "29 of 29 Parquet part(s) match" in capsys.readouterr().out
    bad = tmp_path / "bad" / "tables" / "dns" / "dt=2025-11-21" / "incident_id=x"
    bad.mkdir(parents=True)
    pq.write_table(_dns_with("qname", pa.field("qname", pa.int32()), [7]), bad / "n.parquet")
    assert main(["--check", str(tmp_path / "bad")]) == 1
    assert "FAIL" in capsys.readouterr().out
