"""Kubernetes context on the real stack: freezeframe.k8s records on Kafka -> k8s indexer (through the local Kafka
event source, in Lambda's Kafka event shape) -> JSON lines in the evidence bucket -> a freeze locks them in place
and lists them with their hashes in the manifest."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError
from freezeframe_local.functions import load_handler
from freezeframe_local.kafka import create_topics
from freezeframe_local.kafka_source import KafkaEventSource
from kafka import KafkaProducer

from freezeframe.adapters import s3 as s3io
from freezeframe.contracts.keys import manifest_key
from freezeframe.contracts.models import FreezeRequest, LockSpec, Scope, to_ns
from freezeframe.custody.verify import format_report, verify_incident
from freezeframe.freeze.freeze import freeze
from freezeframe.freeze.k8s_context import ContextEntry, context_root_hash
from tests.fixtures.buses import MemoryBus

pytestmark = pytest.mark.integration


def pod(config: Any, observed_ns: int, name: str, ip: str, change: str = "ADDED") -> dict[str, Any]:
    return {"schema": "freezeframe.k8s-pod/v1", "cluster": config.cluster, "node": config.node_name,
            "observed_ns": observed_ns, "change": change, "namespace": "shop", "pod": name, "uid": f"uid-{name}",
            "pod_ips": [ip], "host_network": False, "workload_kind": "Deployment", "workload_name": "checkout",
            "labels": {"app": "checkout"}, "phase": "Running", "resource_version": "100"}


def test_context_records_are_indexed_frozen_and_hashed(local: Any, handler_env: Any) -> None:
    config, s3, _ = local
    handler_env(config)
    topic = f"ff-k8s-{uuid.uuid4().hex[:8]}"
    create_topics(config.kafka_bootstrap, [topic])
    now = datetime.now(UTC)
    sent = [pod(config, to_ns(now - timedelta(minutes=10)), "checkout-7d9f-abcde", "10.244.1.10"),
            pod(config, to_ns(now - timedelta(minutes=5)), "checkout-7d9f-fghij", "10.244.1.11"),
            pod(config, to_ns(now - timedelta(minutes=1)), "checkout-7d9f-abcde", "10.244.1.10", "DELETED")]
    producer = KafkaProducer(bootstrap_servers=config.kafka_bootstrap)
    for value in sent:
        producer.send(topic, key=f"{config.cluster}/{config.node_name}".encode(),
                      value=json.dumps(value).encode()).get(timeout=10)
    producer.send(topic, value=b"not json").get(timeout=10)
    producer.close()

    source = KafkaEventSource(config.kafka_bootstrap, topic, f"k8s-{uuid.uuid4().hex[:6]}",
                              load_handler(config, "k8s_indexer"), "freezeframe-k8s-indexer").start()
    try:
        deadline = time.monotonic() + 30
        stored: list[dict[str, Any]] = []
        while time.monotonic() < deadline and len(stored) < len(sent):
            stored = [json.loads(line) for key in s3io.list_keys(s3, config.evidence_bucket, "k8s/")
                      for line in s3io.get_bytes(s3, config.evidence_bucket, key).decode().splitlines()]
            time.sleep(0.3)
    finally:
        source.stop()
    assert sorted(stored, key=lambda v: v["observed_ns"]) == sent
    assert source.dead_letters == []

    request = FreezeRequest(incident_id="it-k8s-1", source="api", title="t", severity="high",
                            window_start=now - timedelta(minutes=3), window_end=now - timedelta(seconds=1),
                            scope=Scope(config.cluster), lock=LockSpec("COMPLIANCE", now + timedelta(days=1)))
    freeze(config, s3, request)
    manifest = s3io.get_json(s3, config.evidence_bucket, manifest_key(request.incident_id))
    entries = [ContextEntry(**raw) for raw in manifest["k8s_context"]]
    assert entries, "the look-back takes the context of the hour before the window too"
    assert manifest["k8s_root_hash"] == context_root_hash(entries)
    lines = []
    for entry in entries:
        body = s3io.get_bytes(s3, entry.bucket, entry.key, entry.version_id)
        assert hashlib.sha256(body).hexdigest() == entry.sha256
        head = s3.head_object(Bucket=entry.bucket, Key=entry.key, VersionId=entry.version_id)
        assert head["ObjectLockMode"] == "COMPLIANCE"
        with pytest.raises(ClientError):
            s3.delete_object(Bucket=entry.bucket, Key=entry.key, VersionId=entry.version_id)
        lines += [json.loads(line) for line in body.decode().splitlines()]
    assert {v["pod"] for v in lines} == {v["pod"] for v in sent}
    report = verify_incident(config, s3, request.incident_id)
    assert report.ok, format_report(report)
    assert {c.subject.split("@")[0] for c in report.checks if c.name == "sha256"} >= {e.key for e in entries}


def test_a_namespace_scope_freezes_the_nodes_its_pods_ran_on(local: Any) -> None:
    from freezeframe.contracts.keys import raw_segment_key
    from freezeframe.freeze.k8s_context import K8sRecord, write_batch

    config, s3, _ = local
    now = datetime.now(UTC)
    other = config.node_name + "-other"
    shop_pod = pod(config, to_ns(now - timedelta(minutes=20)), "checkout-1", "10.244.1.20")
    elsewhere = {**pod(config, to_ns(now - timedelta(minutes=20)), "db-0", "10.244.2.30"), "node": other,
                 "namespace": "data"}
    write_batch(config, s3, [K8sRecord(0, 1, shop_pod), K8sRecord(0, 2, elsewhere)])
    start = to_ns(now - timedelta(minutes=5))
    for node in (config.node_name, other):
        body = b"segment of " + node.encode()
        digest = hashlib.sha256(body).hexdigest()
        key = raw_segment_key(config.cluster, node, start, start + 10 * 10**9, "pcap.zst")
        s3io.put_segment(s3, config.raw_bucket, key, body, digest, {"sha256": digest, "seq": "0"})
    request = FreezeRequest(incident_id="it-k8s-scope", source="api", title="t", severity="high",
                            window_start=now - timedelta(minutes=6), window_end=now - timedelta(minutes=1),
                            scope=Scope(config.cluster, namespaces=("shop",)),
                            lock=LockSpec("COMPLIANCE", now + timedelta(days=1)))
    freeze(config, s3, request)
    manifest = s3io.get_json(s3, config.evidence_bucket, manifest_key(request.incident_id))
    assert manifest["scope_nodes"] == [config.node_name]
    assert {s["node"] for s in manifest["segments"]} == {config.node_name}
    # The context of every node is kept: the frozen traffic's peers run on other nodes.
    assert {e["node"] for e in manifest["k8s_context"]} == {config.node_name, other}


def test_dissected_rows_carry_the_pods_of_their_ips(local: Any) -> None:
    import io
    from pathlib import Path

    import pyarrow.parquet as pq

    from freezeframe.dissect.job import dissect_node
    from freezeframe.freeze.k8s_context import K8sRecord, write_batch
    from freezeframe_agent.main import run_replay

    config, s3, _ = local
    now = datetime.now(UTC)
    # The sample's client and server IPs, as the agents of two nodes saw their pods before the capture started.
    client = {**pod(config, to_ns(now - timedelta(minutes=30)), "frontend-5c8d-x1", "10.244.1.10"),
              "workload_name": "frontend"}
    server = {**pod(config, to_ns(now - timedelta(minutes=30)), "backend-0", "10.244.2.20"), "node": "node-far",
              "namespace": "data", "workload_name": "backend"}
    write_batch(config, s3, [K8sRecord(0, 1, client), K8sRecord(0, 2, server)])

    sample = Path(__file__).resolve().parents[1] / "fixtures" / "sample.pcap"
    records = run_replay(config, sample, speedup=1000.0, s3=s3, bus=MemoryBus())
    request = FreezeRequest(incident_id="it-enrich-1", source="api", title="t", severity="high",
                            window_start=now - timedelta(minutes=1),
                            window_end=datetime.fromtimestamp(records[-1].end_ns / 1e9, UTC) + timedelta(seconds=1),
                            scope=Scope(config.cluster, nodes=(config.node_name,)),
                            lock=LockSpec("COMPLIANCE", now + timedelta(days=1)))
    freeze(config, s3, request)
    report = dissect_node(config, s3, request.incident_id, config.node_name)
    rows = pq.read_table(io.BytesIO(s3io.get_bytes(s3, config.evidence_bucket, report.parts["connections"])))
    by_src = {(r["src_ip"], r["dst_ip"]): r for r in rows.to_pylist()}
    resolved = [r for (src, dst), r in by_src.items() if src == "10.244.1.10" and dst == "10.244.2.20"]
    assert resolved, "the sample has connections from 10.244.1.10 to 10.244.2.20"
    for row in resolved:
        assert (row["src_namespace"], row["src_pod"], row["src_workload"]) == ("shop", "frontend-5c8d-x1", "frontend")
        assert (row["dst_namespace"], row["dst_pod"], row["dst_workload"]) == ("data", "backend-0", "backend")
    unknown = [r for r in rows.to_pylist() if r["src_ip"] not in ("10.244.1.10", "10.244.2.20")]
    assert all(r["src_pod"] is None for r in unknown)
