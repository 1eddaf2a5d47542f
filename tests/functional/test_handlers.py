"""Every Lambda handler under functions/ through at least one real scenario on the in-memory store (the freeze,
webhook and segment-indexer handlers have theirs in test_freeze, test_intake and test_holds): dissect (per node,
and the fan-out's plan, chunk and merge), finalize, and the Kubernetes-context indexer. The dissection's expected
figures come from tshark and capinfos over the same sample capture, not from freezeframe."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from freezeframe.adapters import catalog
from freezeframe.adapters import s3 as s3io
from freezeframe.contracts.keys import dissect_status_key, manifest_key, parse_table_part_key
from freezeframe.contracts.models import to_ns
from freezeframe.dissect import finalize
from freezeframe.freeze.k8s_context import POD_SCHEMA
from tests.functional.conftest import SAMPLE, Harness

INCIDENT = "fn-dissect-1"
K8S_TOPIC = "freezeframe-k8s"
needs_tshark = pytest.mark.skipif(shutil.which("tshark") is None or shutil.which("capinfos") is None,
                                  reason="tshark and capinfos are the reference (installed by .ci/setup test)")


def tshark_conversations() -> int:
    count = 0
    for proto in ("tcp", "udp"):
        out = subprocess.run(["tshark", "-r", str(SAMPLE), "-q", "-z", f"conv,{proto}"], check=True,
                             capture_output=True, text=True).stdout
        count += sum(1 for line in out.splitlines() if "<->" in line)
    return count


def tshark_dns_queries() -> int:
    out = subprocess.run(["tshark", "-r", str(SAMPLE), "-Y", "dns.flags.response == 0", "-T", "fields",
                          "-e", "frame.number"], check=True, capture_output=True, text=True).stdout
    return len(out.split())


def capinfos_packets() -> int:
    out = subprocess.run(["capinfos", "-c", "-M", str(SAMPLE)], check=True, capture_output=True, text=True).stdout
    return int(out.strip().splitlines()[-1].split(":")[-1])


class RecordingGlue:
    def __init__(self) -> None:
        self.partitions: list[tuple[str, str, list[str]]] = []

    def batch_create_partition(self, *, DatabaseName: str, TableName: str,
                               PartitionInputList: list[dict[str, Any]]) -> dict[str, Any]:
        for item in PartitionInputList:
            self.partitions.append((DatabaseName, TableName, list(item["Values"])))
        return {"Errors": []}


@pytest.fixture
def frozen(harness: Harness) -> tuple[Harness, list[Any]]:
    """The sample capture at its own (past) time, frozen: no hold, so the dissection is final."""
    records = harness.replay(retime=False)
    request = harness.request(INCIDENT, records)
    assert harness.call("freeze", {"request": request.to_dict()})["segments"] == len(records)
    ((execution),) = harness.step_functions.executions.values()
    assert execution["input"] == {"incident_id": INCIDENT, "nodes": [harness.settings.node_name]}
    return harness, records


@needs_tshark
def test_the_dissect_handler_writes_the_tables_tshark_agrees_with_and_registers_their_partitions(
        frozen: Any, monkeypatch: pytest.MonkeyPatch, handler_env: Any) -> None:
    harness, records = frozen
    config = harness.settings.with_(glue_database="freezeframe_functional")
    harness.settings = config
    handler_env(config)
    glue = RecordingGlue()
    monkeypatch.setattr(catalog, "glue_client", lambda _config: glue)
    report = harness.call("dissect", {"incident_id": INCIDENT, "node": config.node_name})
    assert report["state"] == "done" and report["segments"] == len(records)
    assert report["stats"]["packets"] == capinfos_packets() == sum(r.packets for r in records)
    assert report["tables"]["connections"] == tshark_conversations()
    assert report["tables"]["dns"] == tshark_dns_queries()
    status = s3io.get_json(harness.store, config.evidence_bucket, dissect_status_key(INCIDENT, config.node_name))
    assert (status["state"], status["tables"]) == ("done", report["tables"])
    for key in report["parts"].values():
        assert s3io.exists(harness.store, config.evidence_bucket, key)
    written = {(parsed[0], (parsed[1], parsed[2])) for key in report["parts"].values()
               if (parsed := parse_table_part_key(key))}
    assert written
    assert {(table, tuple(values)) for database, table, values in glue.partitions
            if database == "freezeframe_functional"} == written


@needs_tshark
def test_the_fan_out_plans_dissects_each_chunk_and_merges_to_the_same_tables(frozen: Any) -> None:
    harness, _ = frozen
    node = harness.settings.node_name
    plan = harness.call("dissect", {"action": "plan", "incident_id": INCIDENT, "nodes": [node]})
    assert plan["nodes"] == [node] and plan["chunks"] >= 1
    items = json.loads(s3io.get_bytes(harness.store, plan["bucket"], plan["key"]))
    items = items["items"] if isinstance(items, dict) else items
    assert len(items) == plan["chunks"]
    for item in items:
        harness.call("dissect", {"action": "chunk", "item": item})
    merged = harness.call("dissect", {"action": "merge", "incident_id": INCIDENT, "node": node})
    assert (merged["node"], merged["state"]) == (node, "done")
    status = s3io.get_json(harness.store, harness.settings.evidence_bucket, dissect_status_key(INCIDENT, node))
    assert status["tables"]["connections"] == tshark_conversations()


def test_an_unknown_dissect_action_is_refused(frozen: Any) -> None:
    harness, _ = frozen
    from freezeframe.contracts.errors import PayloadError

    with pytest.raises(PayloadError):
        harness.call("dissect", {"action": "explode", "incident_id": INCIDENT})


def test_finalize_after_every_node_is_dissected_writes_a_complete_summary(frozen: Any) -> None:
    harness, _ = frozen
    config, node = harness.settings, harness.settings.node_name
    report = harness.call("dissect", {"incident_id": INCIDENT, "node": node})
    reply = harness.call("finalize", {"incident_id": INCIDENT, "nodes": [{"node": node, "state": "done"}]})
    assert (reply["state"], reply["nodes"]) == ("complete", {node: "done"})
    summary = s3io.get_json(harness.store, config.evidence_bucket, finalize.summary_key(INCIDENT))
    assert summary["state"] == "complete"
    assert summary["rows"] == report["tables"]
    assert sorted(summary["parts"]) == sorted(report["parts"].values())
    assert reply["follow"]["again"] is False  # no hold: nothing more will arrive
    assert harness.reports == [INCIDENT] and summary["report"] == {"key": f"incidents/{INCIDENT}/report.html"}


def test_finalize_marks_a_node_whose_dissection_failed_incomplete(frozen: Any) -> None:
    harness, _ = frozen
    node = harness.settings.node_name
    reply = harness.call("finalize", {"incident_id": INCIDENT,
                                      "nodes": [{"node": node, "state": "failed", "error": "out of memory"}]})
    assert (reply["state"], reply["nodes"]) == ("incomplete", {node: "failed"})
    summary = s3io.get_json(harness.store, harness.settings.evidence_bucket, finalize.summary_key(INCIDENT))
    (line,) = summary["nodes"]
    assert (line["state"], line["error"]) == ("failed", "out of memory")


def pod(harness: Harness, observed_ns: int, name: str, ip: str) -> dict[str, Any]:
    return {"schema": POD_SCHEMA, "cluster": harness.settings.cluster, "node": harness.settings.node_name,
            "observed_ns": observed_ns, "change": "ADDED", "namespace": "shop", "pod": name, "uid": f"uid-{name}",
            "pod_ips": [ip], "host_network": False, "workload_kind": "Deployment", "workload_name": "checkout",
            "labels": {"app": "checkout"}, "phase": "Running", "resource_version": "100"}


def test_the_k8s_indexer_stores_context_that_a_freeze_then_snapshots_under_its_lock(harness: Harness) -> None:
    config, store = harness.settings, harness.store
    now = datetime.now(UTC)
    sent = [pod(harness, to_ns(now - timedelta(minutes=2)) + i, f"checkout-{i}", f"10.244.1.{20 + i}")
            for i in range(3)]
    for value in sent:
        harness.bus.publish(K8S_TOPIC, value["pod"], value)
    event = harness.kafka_event(K8S_TOPIC)
    (partition,) = event["records"].values()
    partition.append({**partition[0], "offset": 99, "value": "eyJzY2hlbWEiOiAieCJ9"})  # {"schema": "x"}
    reply = harness.call("k8s_indexer", event)
    assert (reply["records"], reply["malformed"]) == (3, 1)
    stored = [json.loads(line) for key in reply["objects"]
              for line in s3io.get_bytes(store, config.evidence_bucket, key).decode().splitlines()]
    assert sorted(stored, key=lambda v: v["observed_ns"]) == sent

    records = harness.replay()
    request = harness.request("fn-k8s", records, window_start=now - timedelta(minutes=3))
    harness.call("freeze", {"request": request.to_dict()})
    manifest = s3io.get_json(store, config.evidence_bucket, manifest_key("fn-k8s"))
    (entry,) = manifest["k8s_context"]
    (version,) = store.versions_of(config.evidence_bucket, entry["key"])
    assert (version.mode, version.retain_until) == ("COMPLIANCE", request.lock.retain_until)
    assert {json.loads(line)["pod"] for line in (version.body or b"").decode().splitlines()} == {
        v["pod"] for v in sent}
