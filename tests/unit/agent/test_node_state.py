"""The node-state recorder's collector on recorded /proc files (tests/fixtures/proc/, taken from a host with the
counters the tests read set to known values), the document's round trip, its key, the freeze's selection and the
node_stats / node_config tables. Expected values are the fixture files' numbers, read by hand."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from freezeframe.adapters.s3 import ObjectVersion
from freezeframe.contracts.errors import PayloadError
from freezeframe.contracts.keys import node_state_key, parse_node_state_key
from freezeframe.contracts.models import FreezeRequest, LockSpec, Scope
from freezeframe.dissect.node_state import node_config, node_stats
from freezeframe.freeze.node_state import ConfigState, NodeStateDocument, select
from freezeframe_agent.node_state import Collector

PROC = Path(__file__).resolve().parents[2] / "fixtures" / "proc"


def collector(ruleset: str | None = "table ip filter {\n}\n") -> Collector:
    def run(argv: list[str]) -> str:
        if argv[0] == "ip":
            return "default via 192.0.2.1 dev eth0\n" if "-6" not in argv else ""
        if argv[0] == "nft" and ruleset is not None:
            return ruleset
        raise FileNotFoundError(f"{argv[0]} not found")

    return Collector(net_dir=PROC / "net", netfilter_dir=PROC / "netfilter", run=run,
                     mtu_of=lambda name: {"lo": 65536, "eth0": 9001}.get(name))


def test_the_collector_reads_the_recorded_proc_files() -> None:
    snapshot = collector().snapshot()
    assert snapshot.errors == ()
    assert (snapshot.counters["TcpExt.ListenOverflows"], snapshot.counters["TcpExt.ListenDrops"],
            snapshot.counters["TcpExt.SyncookiesSent"], snapshot.counters["Tcp.RetransSegs"],
            snapshot.counters["Tcp.OutRsts"]) == (4711, 4712, 17, 90210, 333)
    # nf_conntrack_count/max, and the per-CPU hex columns summed (drop 0x10 + 0x20, insert_failed 1 + 3).
    assert {k: snapshot.conntrack[k] for k in ("count", "max", "drop", "insert_failed", "early_drop", "invalid")} == {
        "count": 61440, "max": 65536, "drop": 48, "insert_failed": 4, "early_drop": 2, "invalid": 8}
    eth0 = snapshot.interfaces["eth0"]
    assert {k: eth0[k] for k in ("rx_bytes", "rx_errors", "rx_dropped", "rx_multicast", "tx_dropped", "mtu")} == {
        "rx_bytes": 987654321, "rx_errors": 3, "rx_dropped": 41, "rx_multicast": 12, "tx_dropped": 7, "mtu": 9001}
    assert (snapshot.sockets["TCP.inuse"], snapshot.sockets["TCP.orphan"], snapshot.sockets["TCP.tw"],
            snapshot.sockets["TCP6.inuse"], snapshot.sockets["sockets.used"]) == (27, 2, 73, 23, 66)
    assert snapshot.config["mtus"] == ("eth0 9001\nlo 65536\n", None)
    assert snapshot.config["ruleset"] == ("table ip filter {\n}\n", None)


def test_a_missing_ruleset_tool_is_recorded_not_fatal() -> None:
    text, error = collector(ruleset=None).snapshot().config["ruleset"]
    assert text == "" and error is not None and "nft" in error and "iptables-save" in error


def test_without_conntrack_the_table_is_empty(tmp_path: Path) -> None:
    plain = Collector(net_dir=PROC / "net", netfilter_dir=tmp_path, run=lambda argv: "", mtu_of=lambda name: None)
    assert plain.snapshot().conntrack == {}


def _doc(seq: int, end_s: int, overflows: int, ruleset: str) -> NodeStateDocument:
    base = 1_767_225_600 * 10**9
    digest = hashlib.sha256(ruleset.encode()).hexdigest()
    return NodeStateDocument(cluster="c1", node="node-a", seq=seq, start_ns=base + (end_s - 10) * 10**9,
                             end_ns=base + end_s * 10**9, observed_ns=base + end_s * 10**9,
                             counters={"TcpExt.ListenOverflows": overflows}, conntrack={"count": 7, "max": 9},
                             config={"ruleset": ConfigState(digest, ruleset)})


def test_the_document_round_trips_and_refuses_garbage() -> None:
    document = _doc(0, 10, 5, "a")
    assert NodeStateDocument.decode(document.encode()) == document
    with pytest.raises(PayloadError):
        NodeStateDocument.decode(b'{"schema": "freezeframe.node-state/v1", "node": "x"}')
    with pytest.raises(PayloadError):
        NodeStateDocument.decode(b"[1, 2]")


def test_node_stats_deltas_and_a_counter_reset() -> None:
    # 5 -> 9 -> 2 (the agent or the node restarted: no negative delta) -> 6.
    docs = [_doc(0, 10, 5, "a"), _doc(1, 20, 9, "a"), _doc(0, 30, 2, "b"), _doc(1, 40, 6, "b")]
    rows = [r for r in node_stats(docs).to_pylist() if r["metric"] == "TcpExt.ListenOverflows"]
    assert [(r["value"], r["delta"], r["kind"]) for r in rows] == [
        (5, None, "counter"), (9, 4, "counter"), (2, None, "counter"), (6, 4, "counter")]
    gauges = [r for r in node_stats(docs).to_pylist() if r["source"] == "conntrack"]
    assert {(r["metric"], r["kind"], r["delta"]) for r in gauges} == {("count", "gauge", None), ("max", "gauge", None)}
    history = node_config(docs).to_pylist()
    assert [(r["ts_ns"] - docs[0].end_ns, r["content"], r["previous_digest"] is None) for r in history] == [
        (0, "a", True), (20 * 10**9, "b", False)]


def test_keys_and_the_freeze_selection() -> None:
    key = node_state_key("c1", "node-a", 1_767_225_605 * 10**9, 1_767_225_615 * 10**9)
    assert key == "nodestate/c1/2026/01/01/00/node-a/1767225605000000000-1767225615000000000.json"
    parsed = parse_node_state_key(key)
    assert parsed is not None and (parsed.cluster, parsed.node) == ("c1", "node-a")
    assert parse_node_state_key(key.replace("/00/", "/01/")) is None  # the hour folder must be the start's
    start = datetime(2026, 1, 1, 0, 1, tzinfo=UTC)
    request = FreezeRequest(incident_id="i1", source="api", title="t", severity="high", window_start=start,
                            window_end=datetime(2026, 1, 1, 0, 2, tzinfo=UTC), scope=Scope("c1"),
                            lock=LockSpec("GOVERNANCE", datetime(2026, 1, 2, tzinfo=UTC)))
    base = request.window_start_ns

    def version(node: str, start_s: int, cluster: str = "c1") -> ObjectVersion:
        k = node_state_key(cluster, node, base + start_s * 10**9, base + (start_s + 10) * 10**9)
        return ObjectVersion(k, "v", 10, start)

    versions = [version("node-a", -30), version("node-a", -20), version("node-a", -10), version("node-a", 30),
                version("node-b", 55), version("node-a", 61), version("node-a", 0, cluster="c2")]
    chosen = select(request, versions, (), 10 * 10**9)
    # -20..-10 ends exactly one period before the window (the baseline); -30..-20 is older; 61 s is after the end.
    assert [parse_node_state_key(v.key).start_ns - base for v in chosen] == [  # type: ignore[union-attr]
        -20 * 10**9, -10 * 10**9, 30 * 10**9, 55 * 10**9]
    assert [v.key.split("/")[6] for v in select(request, versions, ("node-b",), 10 * 10**9)] == ["node-b"]
