"""freezeframe.dissect.foldshard: the views' fold in hash buckets of endpoint pairs. The expected views are
`observers.combine` over every row at once (the fold's reference, with its own tests in test_observers.py); the
bucket function is checked against CRC-32 written out here.

Inputs: the sample capture dissected as two and three nodes (every conversation seen by each), node-b missing part
of its rows (conversations seen by fewer nodes), and service_flows rows whose backend connection lies in another
bucket than their own connection (phase 2 re-points them)."""

from __future__ import annotations

import io
import zlib
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from freezeframe_local.cli import main

from freezeframe.adapters import s3 as s3io
from freezeframe.contracts.config import Settings
from freezeframe.contracts.documents import FoldPlan
from freezeframe.contracts.keys import fold_plan_key, table_part_key, view_key
from freezeframe.contracts.schemas import TABLES
from freezeframe.dissect import foldshard
from freezeframe.dissect.foldshard import (
    FOLDED,
    FORMAT_TABLES,
    ROUTED,
    buckets_of,
    encode_routed,
    fold_bucket,
    fold_buckets,
    fold_step,
    pieces_of,
    plan_buckets,
    read_routed,
    route_step,
)
from freezeframe.dissect.observers import combine
from tests.functional.memstore import MemoryS3

ROOT = Path(__file__).resolve().parents[3]
SAMPLE = ROOT / "tests" / "fixtures" / "sample.pcap"
INCIDENT = "inc-fold"
BUCKET = "evidence"
T0 = 1_767_225_600 * 1_000_000_000  # 2026-01-01
DAY = "2026-01-01"


def test_the_bucket_of_a_pair_is_crc32_of_its_text_and_the_same_from_either_end() -> None:
    table = pa.table({"src_ip": ["10.0.0.2", "10.0.0.1", "fd00::1"],
                      "src_port": pa.array([51000, 443, None], pa.int32()),
                      "dst_ip": ["10.0.0.1", "10.0.0.2", "fd00::2"],
                      "dst_port": pa.array([443, 51000, None], pa.int32())})
    # Written out: the lesser "<ip>,<port>" first, joined by "|", CRC-32 modulo B (an empty port without one).
    expected = zlib.crc32(b"10.0.0.1,443|10.0.0.2,51000") % 7
    v6 = zlib.crc32(b"fd00::1,|fd00::2,") % 7
    assert buckets_of(table, 7).to_pylist() == [expected, expected, v6]
    assert foldshard.key_bucket("10.0.0.1,443|10.0.0.2,51000", 7) == expected
    assert buckets_of(table, 1).to_pylist() == [0, 0, 0]


def test_fold_buckets_is_rows_over_rows_per_task_rounded_up_and_at_least_one() -> None:
    assert [fold_buckets(n, 10) for n in (0, 1, 10, 11, 95)] == [1, 1, 1, 2, 10]
    assert fold_buckets(1_500_000_000) == 3750  # FOLD_ROWS = 400 k


def test_the_plan_never_leaves_finalize_more_than_a_pieces_rows_in_one_bucket() -> None:
    # One bucket is folded by finalize in one piece: above 100 k rows the steps fold at least two.
    assert [plan_buckets(n) for n in (0, 100_000, 100_001, 400_000, 400_001, 1_500_000_000)] == [1, 1, 2, 2, 2, 3750]
    assert [plan_buckets(n, 10) for n in (10, 11, 95)] == [1, 2, 10]


def _connections(rows: list[tuple[str, int, str, int]]) -> pa.Table:
    table = pa.table({"node": ["a"] * len(rows), "conn_id": [f"c{i}" for i in range(len(rows))],
                      "proto": ["tcp"] * len(rows), "src_ip": [r[0] for r in rows],
                      "src_port": pa.array([r[1] for r in rows], pa.int32()), "dst_ip": [r[2] for r in rows],
                      "dst_port": pa.array([r[3] for r in rows], pa.int32())})
    return foldshard.conform(table, TABLES["connections"])


@pytest.mark.parametrize("buckets", [1, 2, 3, 7])
def test_the_routed_format_gives_back_each_buckets_rows_and_nothing_for_empty_buckets(buckets: int) -> None:
    connections = _connections([("10.0.0.1", 1000 + i, "10.0.0.2", 80) for i in range(20)])
    tables = {"connections": connections, "dns": TABLES["dns"].empty_table()}
    bucket_of = {name: buckets_of(table, buckets) for name, table in tables.items()}
    body = encode_routed(tables, bucket_of, buckets)
    seen = []
    for bucket in range(buckets):
        found = read_routed(body, bucket)
        assert "dns" not in found  # an empty table takes no room in any bucket
        rows = found["connections"].to_pylist() if "connections" in found else []
        assert all(b == bucket for b in buckets_of(pa.Table.from_pylist(rows, TABLES["connections"]), buckets)
                   .to_pylist()) if rows else True
        seen += rows
    assert sorted(r["conn_id"] for r in seen) == sorted(connections.column("conn_id").to_pylist())
    assert found.get("connections", connections).schema == FORMAT_TABLES["connections"]
    empty = encode_routed({}, {}, buckets)
    assert all(read_routed(empty, bucket) == {} for bucket in range(buckets))


# -- the fold of every bucket equals combine of the whole
@pytest.fixture(scope="module")
def dissected(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, pa.Table]]:
    """The sample capture dissected as three nodes (the same traffic seen by each)."""
    out = tmp_path_factory.mktemp("fold") / "out"
    for node in ("node-a", "node-b", "node-c"):
        assert main(["dissect", str(SAMPLE), "--out", str(out), "--node", node]) == 0
    per_node: dict[str, dict[str, pa.Table]] = {}
    for path in out.glob("tables/*/dt=*/incident_id=local/*.parquet"):
        if path.parts[-4] in ROUTED:
            per_node.setdefault(path.stem, {})[path.parts[-4]] = pq.read_table(path)
    return per_node


def _with_flows(node: str, tables: dict[str, pa.Table], buckets: int) -> dict[str, pa.Table]:
    """service_flows rows naming, as backend, a connection of the same node in another bucket when there is one."""
    connections = tables["connections"]
    ids = connections.column("conn_id").to_pylist()
    homes = buckets_of(connections, max(buckets, 2)).to_pylist()
    rows = []
    for number in range(0, min(len(ids), 40), 2):
        backend = next((i for i in range(len(ids)) if homes[i] != homes[number]), (number + 1) % len(ids))
        row = connections.slice(number, 1).to_pylist()[0]
        rows.append({"node": node, "conn_id": ids[number], "ts": row["ts"], "ts_ns": row["ts_ns"],
                     "src_ip": row["src_ip"], "src_port": row["src_port"], "cluster_ip": row["dst_ip"],
                     "port": row["dst_port"],
                     "namespace": "default", "service": "web", "backend_conn_id": ids[backend],
                     "backend_ip": "10.1.0.9", "backend_port": 8080})
    rows.append({**rows[0], "backend_conn_id": "not-a-connection"})  # a backend leg never captured
    return {**tables, "service_flows": foldshard.conform(pa.Table.from_pylist(rows), TABLES["service_flows"])}


def _inputs(dissected: dict[str, dict[str, pa.Table]], nodes: int, buckets: int) -> dict[str, dict[str, pa.Table]]:
    per_node = {}
    for node in sorted(dissected)[:nodes]:
        # Each node's own node name and conn_ids (a<id>, b<id>, ...), so the fold's re-pointing shows.
        tables = {name: t.set_column(t.schema.get_field_index("node"), "node", pa.array([node] * t.num_rows,
                                                                                      pa.string()))
                  for name, t in dissected[node].items() if name in FOLDED}
        tables = {name: t.set_column(t.schema.get_field_index("conn_id"), "conn_id", pc.binary_join_element_wise(
            node[-1], t.column("conn_id"), "")) for name, t in tables.items()}
        if node == "node-b":  # b missed every third conversation and its exchanges: seen by fewer nodes
            kept = tables["connections"].filter(pc.not_equal(pc.bit_wise_and(
                pc.cumulative_sum(pa.array([1] * tables["connections"].num_rows)), 3), 0))
            ids = kept.column("conn_id")
            tables = {name: t.filter(pc.is_in(t.column("conn_id"), value_set=ids)) for name, t in tables.items()}
        per_node[node] = _with_flows(node, tables, buckets)
    return per_node


def _put(s3: MemoryS3, key: str, table: pa.Table) -> None:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    s3io.put_bytes(s3, BUCKET, key, sink.getvalue(), content_type="application/vnd.apache.parquet")


def _sharded(per_node: dict[str, dict[str, pa.Table]], buckets: int,
             flow_tasks: int) -> dict[str, list[dict[str, Any]]]:
    """Every node's tables routed (two sources a node: its connections, its other tables), every bucket folded
    (phase 1), every flow task's service_flows re-pointed (phase 2), the view files read back."""
    s3 = MemoryS3()
    s3.create_bucket(Bucket=BUCKET)
    settings = Settings(evidence_bucket=BUCKET)
    sources = []
    for node, tables in per_node.items():
        parts = {}
        for name, table in tables.items():
            parts[name] = table_part_key(name, T0, INCIDENT, node)
            _put(s3, parts[name], table)
        for source, names in (("node", ("connections", "service_flows")), ("apps", ("dns", "http", "tls"))):
            item = {"incident_id": INCIDENT, "node": node, "buckets": buckets, "source": source,
                    "key": f"routed/{node}/{source}", "parts": {n: [parts[n]] for n in names}, "chunk_parts": {},
                    "moved": None, "lookup": parts["connections"]}
            assert route_step(settings, s3, INCIDENT, item)["key"] == item["key"]
            sources.append({"node": node, "source": source, "key": item["key"]})
    s3io.put_json(s3, BUCKET, fold_plan_key(INCIDENT), FoldPlan(INCIDENT, "r1", buckets, DAY, True, {},
                                                                tuple(sources), flow_tasks=flow_tasks).to_dict())
    for bucket in range(buckets):
        fold_step(settings, s3, INCIDENT, bucket, 1)
    for task in range(flow_tasks):
        fold_step(settings, s3, INCIDENT, task, 2)
    with pytest.raises(foldshard.FoldError, match=f"no fold plan with flow task {flow_tasks}"):
        fold_step(settings, s3, INCIDENT, flow_tasks, 2)
    out: dict[str, list[dict[str, Any]]] = {}
    for name in ROUTED:
        folder = view_key(name, DAY, INCIDENT).rsplit("/", 1)[0] + "/"
        keys = list(s3io.list_keys(s3, BUCKET, folder))
        # one file per bucket and table; service_flows' one per flow task
        assert len(keys) == (flow_tasks if name == "service_flows" else buckets), name
        out[name] = [row for key in keys for row in pq.read_table(io.BytesIO(s3io.get_bytes(s3, BUCKET, key)))
                     .to_pylist()]
    return out


def _rows(rows: list[dict[str, Any]]) -> list[str]:
    return sorted(repr(sorted(row.items())) for row in rows)


@pytest.mark.parametrize("buckets", [1, 3])
def test_a_bucket_folded_in_pieces_equals_combine_of_the_bucket_in_combines_order(
        dissected: dict[str, dict[str, pa.Table]], buckets: int) -> None:
    """The fold task folds its bucket in pieces (a finer hash of the same pair) to bound its Python rows: the
    pieces' views together are combine of the bucket's rows, every conn_id re-pointed as combine re-points it."""
    per_node = {node: {name: t for name, t in tables.items() if name in FOLDED}
                for node, tables in _inputs(dissected, 3, buckets).items()}
    per_node = {node: {name: t.filter(pc.equal(buckets_of(t, buckets), buckets - 1)) for name, t in tables.items()}
                for node, tables in per_node.items()}
    rows = sum(t.num_rows for tables in per_node.values() for t in tables.values())
    whole = combine(per_node)
    in_pieces = fold_bucket(per_node, buckets, piece_rows=rows // 5)
    pieces = -(-rows // (rows // 5))
    used = {p for tables in per_node.values() for t in tables.values()
            for p in pieces_of(t, buckets, pieces).to_pylist()}
    assert len(used) >= 4 and used <= set(range(pieces))  # the rows really were folded in several pieces
    assert in_pieces.conn_ids == whole.conn_ids
    for name in FOLDED:
        assert whole.tables[name].num_rows > 0, name
        assert _rows(in_pieces.tables[name].to_pylist()) == _rows(whole.tables[name].to_pylist()), name
        times = in_pieces.tables[name].column("first_ts_ns" if name == "connections" else "ts_ns").to_pylist()
        assert times == sorted(times), name
    assert fold_bucket(per_node, buckets).tables["connections"].equals(whole.tables["connections"])  # one piece


@pytest.mark.parametrize("nodes", [2, 3])
@pytest.mark.parametrize(("buckets", "flow_tasks"), [(1, 1), (2, 1), (2, 2), (3, 2), (7, 1), (7, 3), (7, 7)])
def test_every_bucket_folded_equals_combine_of_the_whole(dissected: dict[str, dict[str, pa.Table]], nodes: int,
                                                         buckets: int, flow_tasks: int) -> None:
    per_node = _inputs(dissected, nodes, buckets)
    whole = combine(per_node).tables
    sharded = _sharded(per_node, buckets, flow_tasks)
    for name in ROUTED:
        assert whole[name].num_rows > 0, name
        assert _rows(sharded[name]) == _rows(whole[name].to_pylist()), name
    assert min(len(row["observers"]) for row in whole["connections"].to_pylist()) == nodes - 1  # b missed some
    assert max(len(row["observers"]) for row in whole["connections"].to_pylist()) == nodes
    # node-b's and node-c's flows name their own conn_ids; the view names the reported rows' (node-a's where the
    # conversation is a's), across buckets for the backend legs.
    flows = [row for row in whole["service_flows"].to_pylist() if row["node"] != "node-a"]
    assert any(row["backend_conn_id"].startswith("a") for row in flows)
    if buckets > 1:
        homes = dict(zip(whole["connections"].column("conn_id").to_pylist(),
                         buckets_of(whole["connections"], buckets).to_pylist(), strict=True))
        assert any(homes.get(row["conn_id"]) != homes.get(row["backend_conn_id"]) for row in flows
                   if row["backend_conn_id"] in homes)
