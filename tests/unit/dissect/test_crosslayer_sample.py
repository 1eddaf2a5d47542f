"""The bundled sample with its Kubernetes and node context (freezeframe_local.sample_context), dissected through the
CLI:
ClusterIP connections resolve to their Service, node_stats carry the node's counters, node_config its history, and
the cross-layer scenarios find the sample's story. Expected values are the sample's documented story (the
connections to 10.96.12.34:80 in freezeframe_local.samples' table, the overflows and endpoint changes in
sample_context's docstring), not the dissector's output."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
from freezeframe_local import sample_context
from freezeframe_local.cli import main

from freezeframe.investigate import scenarios
from freezeframe.investigate.query import connect_local, run

ROOT = Path(__file__).resolve().parents[3]
SAMPLE = ROOT / "tests" / "fixtures" / "sample.pcap"


def write_context(directory: Path, cluster: str = "demo") -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    k8s, state = directory / "k8s.jsonl", directory / "node-state.jsonl"
    k8s.write_text("".join(json.dumps(r) + "\n" for r in sample_context.k8s_records(cluster)), encoding="utf-8")
    state.write_text("".join(d.encode().decode() + "\n" for d in sample_context.node_state_documents(cluster)),
                     encoding="utf-8")
    return k8s, state


def _table(out: Path, name: str) -> list[dict[str, object]]:
    return [row for part in sorted(out.glob(f"tables/{name}/dt=*/incident_id=*/*.parquet"))
            for row in pq.read_table(part).to_pylist()]


def test_the_sample_with_its_context(tmp_path: Path) -> None:
    k8s, state = write_context(tmp_path)
    out = tmp_path / "out"
    assert main(["dissect", str(SAMPLE), "--out", str(out), "--node", "node-a", "--incident", "inc-s",
                 "--k8s", str(k8s), "--node-state", str(state)]) == 0
    # The sample's connections to the backend ClusterIP: 1.0, 3.0, 30.0, 45.0, 53.0 and 56.0 s.
    flows = _table(out, "service_flows")
    backend = sorted(round((int(f["ts_ns"]) - sample_context.SAMPLE_START_NS) / 1e9) for f in flows
                     if (f["namespace"], f["service"]) == ("shop", "backend"))
    assert backend == [1, 3, 30, 45, 53, 56]
    assert {(f["namespace"], f["service"]) for f in flows} >= {("shop", "backend"), ("default", "kubernetes"),
                                                              ("kube-system", "kube-dns")}
    # node_stats: one value per counter and document; deltas of the overflows are 0, 0, 0, 37, 112, 0, 0 after the
    # baseline.
    overflows = sorted((int(r["ts_ns"]), r["delta"]) for r in _table(out, "node_stats")
                       if r["metric"] == "TcpExt.ListenOverflows")
    assert [delta for _, delta in overflows] == [None, 0, 0, 37, 112, 0, 0]
    # node_config: the first document's three configurations, then the ruleset once more (the replica left).
    config = sorted((int(r["ts_ns"]), r["kind"]) for r in _table(out, "node_config"))
    start = sample_context.SAMPLE_START_NS
    assert config == [(start, "mtus"), (start, "routes"), (start, "ruleset"), (start + 40 * 10**9, "ruleset")]
    endpoints = _table(out, "endpoints")
    assert {(r["service"], r["address"], r["terminating"]) for r in endpoints if r["terminating"]} == {
        ("backend", "10.244.2.21", True)}
    con = connect_local(out)
    listen = run(None, scenarios.get("listen-queue-overflow").sql("inc-s"), con).records()
    assert [(r["node"], r["listen_overflows"], r["listen_drops"]) for r in listen] == [("node-a", 149, 149)]
    terminating = run(None, scenarios.get("errors-while-endpoints-terminating").sql("inc-s"), con).records()
    # The 503 at 30 s went through the backend ClusterIP while backend-7c9d6b5f4-a1b2c was terminating.
    assert [(r["status"], r["service"], r["terminating_pod"]) for r in terminating] == [
        (503, "backend", "backend-7c9d6b5f4-a1b2c")]
