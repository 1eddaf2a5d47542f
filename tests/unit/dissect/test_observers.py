"""freezeframe.dissect.observers: one row per conversation across nodes. Rows are written by hand (tests/fixtures/
evidence_tables), so every expected fold follows from the rows' construction, not from the code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from freezeframe_local.cli import main

from freezeframe.dissect.observers import TOLERANCE_NS, combine, fold_rows
from freezeframe.investigate.query import connect_local, run
from tests.fixtures.evidence_tables import at, table_of

ROOT = Path(__file__).resolve().parents[3]
SAMPLE = ROOT / "tests" / "fixtures" / "sample.pcap"
S = 1_000_000_000


def _tcp(node: str, conn_id: str, **row: Any) -> dict[str, Any]:
    base = {"node": node, "conn_id": conn_id, "proto": "tcp", "src_ip": "10.0.0.1", "src_port": 40000,
            "dst_ip": "10.0.0.2", "dst_port": 80, "first_ts_ns": at(1), "last_ts_ns": at(2), "ts_ns": at(1),
            "packets_out": 6, "packets_in": 5, "bytes_out": 600, "bytes_in": 900, "completeness": 31,
            "isn_out": 1000, "isn_in": 2000, "retransmissions_out": 0, "retransmissions_in": 0}
    return {**base, **row}


def _fold(per_node: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, list[dict[str, Any]]]:
    tables = {node: {name: table_of(name, rows) for name, rows in tables.items()} for node, tables in per_node.items()}
    return {name: table.to_pylist() for name, table in combine(tables).tables.items()}


def test_one_connection_seen_by_two_nodes_is_one_row_whatever_their_clocks_say() -> None:
    # The server's clock runs 30 s late: the ISNs still say it is the same connection.
    late = 30 * S
    folded = _fold({
        "a": {"connections": [_tcp("a", "ca")], "http": [
            {"node": "a", "conn_id": "ca", "ts_ns": at(1.1), "method": "GET", "path": "/x", "status": 200}]},
        "b": {"connections": [_tcp("b", "cb", first_ts_ns=at(1) + late, last_ts_ns=at(2) + late, ts_ns=at(1) + late)],
              "http": [{"node": "b", "conn_id": "cb", "ts_ns": at(1.1), "method": "GET", "path": "/x",
                        "status": 200}]},
    })
    (row,) = folded["connections"]
    assert row["observers"] == ["a", "b"] and row["observer"] == row["node"] == "a"
    assert row["views_disagree"] is False and row["disagreeing"] == []
    (http,) = folded["http"]
    assert http["conn_id"] == row["conn_id"] == "ca" and http["observers"] == ["a", "b"]


def test_port_reuse_with_other_isns_stays_two_connections_and_one_node_is_never_folded_with_itself() -> None:
    folded = _fold({
        "a": {"connections": [_tcp("a", "c1"), _tcp("a", "c2", isn_out=5000, isn_in=6000)]},
        "b": {"connections": [_tcp("b", "c3", isn_out=5000, isn_in=6000)]},
    })
    rows = sorted(folded["connections"], key=lambda r: r["conn_id"])
    assert [(r["conn_id"], r["observers"]) for r in rows] == [("c1", ["a"]), ("c2", ["a", "b"])]


def test_a_lossy_view_is_flagged_and_the_fuller_view_is_reported_oriented_alike() -> None:
    # b missed the SYN (no isn_out) and took the server for the initiator: its directions are swapped.
    swapped = _tcp("b", "cb", src_ip="10.0.0.2", src_port=80, dst_ip="10.0.0.1", dst_port=40000, isn_out=2000,
                   isn_in=None, packets_out=4, packets_in=6, bytes_out=700, bytes_in=600, completeness=12)
    folded = _fold({"a": {"connections": [_tcp("a", "ca")]}, "b": {"connections": [swapped]}})
    (row,) = folded["connections"]
    assert row["observer"] == "a" and row["observers"] == ["a", "b"]
    # Oriented like a's row: b saw 6 packets out (equal), 4 in (a saw 5), 700 bytes in (a saw 900).
    assert row["views_disagree"] is True and row["disagreeing"] == ["packets_in", "bytes_in"]


def test_without_a_handshake_the_five_tuple_and_overlapping_times_decide() -> None:
    no_isn = {"isn_out": None, "isn_in": None, "completeness": 12}
    folded = _fold({
        "a": {"connections": [_tcp("a", "ca", **no_isn)]},
        "b": {"connections": [_tcp("b", "cb", **no_isn, first_ts_ns=at(2) + TOLERANCE_NS - 1,
                                   last_ts_ns=at(3) + TOLERANCE_NS),
                              _tcp("b", "cc", **no_isn, first_ts_ns=at(3) + 2 * TOLERANCE_NS,
                                   last_ts_ns=at(4) + 2 * TOLERANCE_NS)]},
    })
    assert sorted(r["observers"] for r in folded["connections"]) == [["a", "b"], ["b"]]


def test_dns_folds_by_transaction_id_and_flags_a_lost_answer() -> None:
    def query(node: str, txid: int, ts: float, rcode: int | None) -> dict[str, Any]:
        return {"node": node, "conn_id": f"u{node}{txid}", "ts_ns": at(ts), "transaction_id": txid, "qname": "a.b",
                "qtype": "A", "rcode": rcode, "src_ip": "10.0.0.1", "src_port": 5353, "dst_ip": "10.0.0.53",
                "dst_port": 53}

    folded = _fold({"a": {"dns": [query("a", 1, 1.0, None), query("a", 2, 1.5, 0)]},
                    "b": {"dns": [query("b", 1, 1.01, 0), query("b", 2, 1.51, 0)]}})
    rows = {r["transaction_id"]: r for r in folded["dns"]}
    assert len(folded["dns"]) == 2
    assert rows[1]["observer"] == "b" and rows[1]["disagreeing"] == ["rcode"]  # b saw the answer a never got
    assert rows[2]["views_disagree"] is False


def test_repeated_requests_on_one_keep_alive_connection_pair_up_in_order() -> None:
    def request(node: str, ts: float) -> dict[str, Any]:
        return {"node": node, "conn_id": f"c{node}", "ts_ns": at(ts), "method": "GET", "path": "/", "status": 200}

    folded = _fold({"a": {"connections": [_tcp("a", "ca")], "http": [request("a", 1.0), request("a", 1.1)]},
                    "b": {"connections": [_tcp("b", "cb")], "http": [request("b", 1.001), request("b", 1.101)]}})
    assert [r["observers"] for r in folded["http"]] == [["a", "b"], ["a", "b"]]
    assert [r["ts_ns"] for r in folded["http"]] == [at(1.0), at(1.1)]


def test_observers_runs_without_numpy() -> None:
    """finalize's Lambda layers ship pyarrow but no numpy; folding must not need it."""
    probe = ("import sys; sys.modules['numpy'] = None\n"
             "from freezeframe.dissect.observers import combine\n"
             "from freezeframe.dissect import views, finalize\n"
             "from freezeframe.contracts.schemas import TABLES\n"
             "import pyarrow as pa\n"
             "row = {n: None for n in TABLES['connections'].names}\n"
             "row.update(node='a', conn_id='c', proto='udp', src_ip='1.1.1.1', dst_ip='2.2.2.2', ts=0, ts_ns=0,\n"
             "           first_ts=0, first_ts_ns=0, last_ts=0, last_ts_ns=0, duration_us=0, packets_out=1,\n"
             "           packets_in=0, bytes_out=1, bytes_in=0, payload_bytes_out=0, payload_bytes_in=0)\n"
             "t = pa.Table.from_pylist([row], schema=TABLES['connections'])\n"
             "print(combine({'a': {'connections': t}, 'b': {'connections': t.set_column(0, 'node', "
             "pa.array(['b']))}}).tables['connections'].num_rows)\n"
             "print(combine({'a': {'connections': t}}).tables['connections'].column('observers').to_pylist())\n")
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True).stdout
    assert out.split() == ["1", "[['a']]"]  # two nodes fold row by row, one node in Arrow: neither needs numpy


def test_dissect_two_nodes_into_one_directory_folds_them_and_query_counts_conversations(tmp_path: Path) -> None:
    out = tmp_path / "out"
    for node in ("node-a", "node-b"):
        assert main(["dissect", str(SAMPLE), "--out", str(out), "--node", node]) == 0
    per_node = {name: pq.read_table(next(out.glob(f"tables/{name}/dt=*/incident_id=local/node-a.parquet"))).num_rows
                for name in ("connections", "dns", "http", "tls")}
    con = connect_local(out)
    for name, rows in per_node.items():
        counted = run(None, f"SELECT count(*), min(cardinality(observers)) FROM {name}", con).rows[0]  # noqa: S608
        assert counted == (rows, 2), name


def _parts(out: Path) -> dict[str, dict[str, pa.Table]]:
    """Every node's parts dissected into `out`, as `views.build_views` reads them."""
    per_node: dict[str, dict[str, pa.Table]] = {}
    for path in out.glob("tables/*/dt=*/incident_id=local/*.parquet"):
        per_node.setdefault(path.stem, {})[path.parts[-4]] = pq.read_table(path)
    return per_node


def _same(per_node: dict[str, dict[str, pa.Table]]) -> dict[str, pa.Table]:
    fast, general = combine(per_node), fold_rows(per_node)
    assert fast.conn_ids == general.conn_ids
    for name, table in general.tables.items():
        assert fast.tables[name].schema == table.schema, name  # types, nullability, descriptions, metadata
        assert fast.tables[name].to_pylist() == table.to_pylist(), name  # same rows in the same order
    return general.tables


def test_one_observer_in_arrow_equals_the_row_by_row_fold_on_a_dissected_capture(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["dissect", str(SAMPLE), "--out", str(out), "--node", "node-a"]) == 0
    per_node = _parts(out)
    assert set(per_node) == {"node-a", "cluster"}  # services and endpoints: the cluster-wide part
    views = _same(per_node)
    assert views["connections"].num_rows == per_node["node-a"]["connections"].num_rows > 0
    assert {row["observers"][0] for row in views["http"].to_pylist()} == {"node-a"}
    # Two nodes fold row by row (the one-observer path steps aside): still one result, and it is the general one.
    assert main(["dissect", str(SAMPLE), "--out", str(out), "--node", "node-b"]) == 0
    folded = combine(_parts(out)).tables["connections"]
    assert folded.to_pylist() == fold_rows(_parts(out)).tables["connections"].to_pylist()
    assert min(len(row["observers"]) for row in folded.to_pylist()) == 2


def test_one_observer_keeps_the_folds_order_for_rows_tied_in_time_and_connection() -> None:
    # Two requests in one packet (same ts_ns and conn_id): the fold groups them by method, host and path, and the
    # group seen first comes first, so the order is the table's only by construction. Here /b's group was seen
    # first (an earlier /b request), so the tied /a request follows the tied /b one.
    def request(seconds: float, path: str) -> dict[str, Any]:
        return {"node": "a", "conn_id": "c1", "ts_ns": at(seconds), "method": "GET", "path": path, "status": 200}

    tables = {"a": {"connections": table_of("connections", [_tcp("a", "c1")]),
                    "http": table_of("http", [request(1.0, "/b"), request(1.5, "/a"), request(1.5, "/b")])}}
    views = _same(tables)
    assert [row["path"] for row in views["http"].to_pylist()] == ["/b", "/b", "/a"]


def test_one_observer_sorts_a_table_that_is_not_in_time_order(tmp_path: Path) -> None:
    # The engines emit rows in time order, so the Arrow path usually finds them in order and skips its sort; parts
    # in reverse order (and with the rows of one instant in reverse conn_id order) must come out as the fold's.
    out = tmp_path / "out"
    assert main(["dissect", str(SAMPLE), "--out", str(out), "--node", "node-a"]) == 0
    per_node = _parts(out)
    reversed_parts = {node: {name: table.take(pa.array(range(table.num_rows - 1, -1, -1), pa.int64()))
                             for name, table in tables.items()} for node, tables in per_node.items()}
    assert reversed_parts["node-a"]["connections"].to_pylist() != per_node["node-a"]["connections"].to_pylist()
    views = _same(reversed_parts)
    times = [row["first_ts_ns"] for row in views["connections"].to_pylist()]
    assert times == sorted(times) and len(times) > 1
    assert views["connections"].to_pylist() == _same(per_node)["connections"].to_pylist()
