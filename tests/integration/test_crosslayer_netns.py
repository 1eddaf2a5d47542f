"""Cross-layer evidence on the real stack (LocalStack S3 with Object Lock and KMS, the gateway's freeze, dissect and
finalize functions), with the agent capturing in a network namespace this test creates:

- a listener with a backlog of 1 that never accepts is flooded with connects from another namespace (bounded: 30
  connects, their SYN retransmissions for 3 s); the kernel counts the dropped SYNs in that namespace's
  TcpExt.ListenOverflows. The agent's node-state recorder, running in the capture namespace, records them every
  segment period; the freeze locks the documents, verify checks them, node_stats holds them and the
  listen-queue-overflow scenario finds them. The expected count is the namespace's own /proc/net/netstat read
  before and after by `ip netns exec ... cat` (an independent reader).
- a Service whose only endpoint is not ready (recorded API responses, listed by the agent's watcher, through Kafka
  and the k8s indexer function into the evidence bucket), with its ClusterIP in the namespace where nothing listens
  on its port (kube-proxy's REJECT for a Service without endpoints answers the same way), gets refused
  connections; the service-without-ready-endpoints scenario finds it with the number of connects the test made.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from freezeframe_local.functions import load_handler
from freezeframe_local.kafka import create_topics
from freezeframe_local.kafka_source import KafkaEventSource
from kubernetes.client import Configuration

from freezeframe.adapters import s3 as s3io
from freezeframe.adapters.bus import KafkaBus
from freezeframe.contracts.keys import incident_key
from freezeframe.contracts.models import FreezeRequest, LockSpec, Scope
from freezeframe.custody.verify import verify_incident
from freezeframe.dissect.finalize import summary_key
from freezeframe.freeze.k8s_context import ENDPOINTSLICE_SCHEMA, SERVICE_SCHEMA
from freezeframe.investigate import scenarios
from freezeframe.investigate.query import run
from freezeframe_agent.k8s import K8sWatcher
from freezeframe_agent.main import run_capture
from tests.fixtures.buses import MemoryBus
from tests.fixtures.k8s_api import FakeKubeApi, Reply
from tests.fixtures.waiting import until

pytestmark = [pytest.mark.integration, pytest.mark.capture]
LISTEN_PORT, SERVICE_PORT = 8080, 9090
FLOOD_CONNECTS, REFUSED_CONNECTS = 30, 5


def listen_overflows(namespace: str) -> int:
    """TcpExt.ListenOverflows of a namespace, read by `cat` inside it."""
    text = subprocess.run(["ip", "netns", "exec", namespace, "cat", "/proc/net/netstat"], check=True,
                          capture_output=True, text=True).stdout
    lines = [line.split() for line in text.splitlines() if line.startswith("TcpExt:")]
    header, values = lines[0], lines[1]
    return int(values[header.index("ListenOverflows")])


def record_context(config: Any) -> int:
    """The agent's watcher lists the recorded Service and EndpointSlice of `ledger` (ClusterIP 192.0.2.1:9090, its
    only endpoint not ready) from the recorded-response API server, publishes them to a Kafka topic of this test, and
    the k8s indexer function writes them to the evidence bucket, as in a cluster. Returns the records stored."""
    topic = f"ff-k8s-{uuid.uuid4().hex[:8]}"
    create_topics(config.kafka_bootstrap, [topic])
    bus = KafkaBus(config.kafka_bootstrap)
    s3 = s3io.client(config)
    try:
        with FakeKubeApi(config.node_name, hold_s=30.0) as api:
            api.script("pods", lists=[Reply.list("pods-list.json")])
            api.script("services", lists=[Reply.list("services-list-ledger.json")])
            api.script("endpointslices", lists=[Reply.list("endpointslices-list-ledger.json")])
            watcher = K8sWatcher(bus, cluster=config.cluster, node=config.node_name, topic=topic,
                                 watch_events=False, configuration=Configuration(host=api.url))
            stop = threading.Event()
            thread = threading.Thread(target=watcher.run, args=(stop,), daemon=True)
            thread.start()
            try:
                api.wait_for(lambda requests: all(any(r.watch for r in requests if r.resource == resource)
                                                  for resource in ("services", "endpointslices")), timeout_s=20)
                assert watcher.flush(timeout_s=10)
            finally:
                stop.set()
                thread.join(timeout=30)
                watcher.close()
    finally:
        bus.close()
    source = KafkaEventSource(config.kafka_bootstrap, topic, f"k8s-{uuid.uuid4().hex[:6]}",
                              load_handler(config, "k8s_indexer"), "freezeframe-k8s-indexer").start()
    try:
        stored: list[dict[str, Any]] = []
        wanted = {SERVICE_SCHEMA, ENDPOINTSLICE_SCHEMA}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not wanted <= {r["schema"] for r in stored}:
            stored = [json.loads(line) for key in s3io.list_keys(s3, config.evidence_bucket, "k8s/")
                      for line in s3io.get_bytes(s3, config.evidence_bucket, key).decode().splitlines()]
            time.sleep(0.3)
    finally:
        source.stop()
    assert wanted <= {r["schema"] for r in stored}
    return len(stored)


def test_listen_overflow_and_a_service_without_endpoints_on_the_real_stack(local: Any, veth_pair: Any) -> None:
    config, s3, gateway = local
    config = config.with_(segment_seconds=1.0)
    ns, peer, server_ip = veth_pair.cap_ns, veth_pair.peer_ns, veth_pair.cap_ip
    started = datetime.now(UTC)
    assert record_context(config) > 0
    # A listener that never accepts, with a backlog of 1: its accept queue is full after two connections.
    listener = subprocess.Popen(["ip", "netns", "exec", ns, "python3", "-c",
                                 "import socket, time\ns = socket.socket()\n"
                                 f"s.bind(('{server_ip}', {LISTEN_PORT}))\ns.listen(1)\ntime.sleep(15)\n"])
    flood = ("import socket, time\nsocks = []\n"
             f"for i in range({FLOOD_CONNECTS}):\n"
             "    s = socket.socket(); s.setblocking(False)\n"
             f"    s.connect_ex(('{server_ip}', {LISTEN_PORT})); socks.append(s)\n"
             "time.sleep(3)\n"
             f"for i in range({REFUSED_CONNECTS}):\n"
             "    s = socket.socket(); s.settimeout(2)\n"
             f"    assert s.connect_ex(('{server_ip}', {SERVICE_PORT})) != 0\n"
             "    s.close(); time.sleep(0.05)\n")
    before = listen_overflows(ns)

    def traffic() -> None:
        time.sleep(2.0)  # the recorder's baseline and tcpdump are up by then
        subprocess.run(["ip", "netns", "exec", peer, "python3", "-c", flood], check=True, timeout=30)

    thread = threading.Thread(target=traffic)
    thread.start()
    try:
        records = run_capture(config, veth_pair.cap_dev, duration_s=8.0, bpf="tcp",
                              command_prefix=("ip", "netns", "exec", ns), s3=s3, bus=MemoryBus())
    finally:
        thread.join()
        listener.kill()
        listener.wait(timeout=10)
    overflowed = listen_overflows(ns) - before
    assert records and overflowed > 0, "the flood must overflow the listen queue"

    incident = f"it-cross-{uuid.uuid4().hex[:6]}"
    request = FreezeRequest(incident_id=incident, source="api", title="cross-layer", severity="high",
                            window_start=started - timedelta(seconds=2),
                            window_end=datetime.now(UTC) + timedelta(seconds=1), scope=Scope(config.cluster),
                            lock=LockSpec("COMPLIANCE", datetime.now(UTC) + timedelta(days=1)))
    s3io.put_json(s3, config.evidence_bucket, incident_key(incident),
                  {"incident_id": incident, "state": "accepted", "request": request.to_dict()})
    gateway.invoke_async("freeze", {"request": request.to_dict()})
    until(lambda: s3io.exists(s3, config.evidence_bucket, summary_key(incident)), 90, "freeze, dissect, finalize")

    manifest = s3io.get_json(s3, config.evidence_bucket, f"incidents/{incident}/manifest.json")
    frozen = manifest["node_state"]
    assert len(frozen) >= 5 and {e["node"] for e in frozen} == {config.node_name}
    assert all(e["lock_mode"] == "COMPLIANCE" for e in frozen)
    # Locked in place: deleting a frozen node-state version is refused by the Object Lock endpoint.
    with pytest.raises(Exception, match="AccessDenied|locked|Forbidden|403"):
        s3.delete_object(Bucket=config.raw_bucket, Key=frozen[0]["key"], VersionId=frozen[0]["version_id"])
    # Finalize writes the summary and then seals it into the custody chain, and a later hold pass writes and seals
    # another version: verify is read-only, so it is polled (bounded) until the last written summary is sealed.
    until(lambda: verify_incident(config, s3, incident).ok, 60, "the summary sealed into the custody chain",
          poll_s=0.5)
    report = verify_incident(config, s3, incident)
    assert report.ok, [f"{c.subject}: {c.name}: {c.detail}" for c in report.failures]
    assert {e["key"] for e in frozen} <= {c.subject.split("@")[0] for c in report.checks if c.name == "sha256"}

    where = f"incident_id = '{incident}'"
    stats = run(config, "SELECT sum(delta) AS overflows FROM node_stats WHERE "  # noqa: S608 - a test literal
                f"{where} AND metric = 'TcpExt.ListenOverflows'").records()
    assert stats == [{"overflows": overflowed}]
    found = run(config, scenarios.get("listen-queue-overflow").sql(incident)).records()
    assert [(r["node"], r["listen_overflows"]) for r in found] == [(config.node_name, overflowed)]
    services = run(config, scenarios.get("service-without-ready-endpoints").sql(incident)).records()
    assert [(r["namespace"], r["service"], r["listed_endpoints"], r["failed_connections"]) for r in services] == [
        ("shop", "ledger", 1, REFUSED_CONNECTS)]
