"""The Kubernetes watcher publishing to the real Kafka broker of the local stack, fed by the fake API server that
replays recorded list/watch replies. The records are consumed back from `freezeframe.k8s` and compared with the
recorded objects."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest
from kubernetes.client import Configuration

from freezeframe.adapters.bus import KafkaBus
from freezeframe.contracts.config import K8S_TOPIC
from freezeframe_agent.k8s import EVENT_SCHEMA, POD_SCHEMA, K8sWatcher
from tests.fixtures.k8s_api import FakeKubeApi, Reply, load, load_events

pytestmark = pytest.mark.integration

NODE = "ip-10-0-1-23.eu-west-1.compute.internal"
TIMEOUT_S = 60.0


def _ips(pod: dict[str, Any]) -> list[str]:
    return [entry["ip"] for entry in pod["status"].get("podIPs", [])]


def test_pod_and_event_records_reach_kafka(stack: Any) -> None:
    cluster = f"it-{uuid.uuid4().hex[:10]}"
    key = f"{cluster}/{NODE}"
    pods_listed = load("pods-list.json")
    pods_watched = load_events("pods-watch-1.jsonl")
    events_listed = load("events-list.json")
    events_watched = load_events("events-watch-1.jsonl")
    # What must arrive, from the recordings: the snapshot, then each change that alters what an IP resolves to
    # (cart-redis-0's MODIFIED only touches condition timestamps; a bookmark is no change).
    changes = [event["object"] for event in pods_watched
               if event["type"] != "BOOKMARK" and event["object"]["metadata"]["name"] != "cart-redis-0"]
    change_types = [event["type"] for event in pods_watched
                    if event["type"] != "BOOKMARK" and event["object"]["metadata"]["name"] != "cart-redis-0"]
    expected_pods = [("SYNC", pod["metadata"]["name"], _ips(pod), pod["metadata"]["resourceVersion"])
                     for pod in pods_listed["items"]] + [
        (change, pod["metadata"]["name"], _ips(pod), pod["metadata"]["resourceVersion"])
        for change, pod in zip(change_types, changes, strict=True)]
    expected_events = [("SYNC", event["metadata"]["uid"], event["reason"], event["metadata"]["resourceVersion"])
                       for event in events_listed["items"]] + [
        (event["type"], event["object"]["metadata"]["uid"], event["object"]["reason"],
         event["object"]["metadata"]["resourceVersion"]) for event in events_watched if event["type"] != "DELETED"]

    bus = KafkaBus(stack.kafka_bootstrap)
    try:
        with FakeKubeApi(NODE, hold_s=TIMEOUT_S) as api:
            api.script("pods", lists=[Reply.list("pods-list.json")], watches=[Reply.stream("pods-watch-1.jsonl")])
            api.script("events", lists=[Reply.list("events-list.json")],
                       watches=[Reply.stream("events-watch-1.jsonl")])
            watcher = K8sWatcher(bus, cluster=cluster, node=NODE, configuration=Configuration(host=api.url))
            stop = threading.Event()
            thread = threading.Thread(target=watcher.run, args=(stop,), daemon=True)
            thread.start()
            try:
                # A second watch per feed means its recorded stream was processed, and each publish waited for
                # the broker's ack.
                api.wait_for(lambda requests: all(sum(r.watch for r in requests if r.resource == resource) >= 2
                                                  for resource in ("pods", "events")), timeout_s=TIMEOUT_S)
            finally:
                stop.set()
                thread.join(timeout=30)
                watcher.close()
            assert not thread.is_alive()
            assert watcher.flush(timeout_s=5)
        deadline = time.monotonic() + TIMEOUT_S
        mine: list[Any] = []
        while time.monotonic() < deadline:
            mine = [record for record in bus.read(K8S_TOPIC, timeout_s=3) if record.key == key]
            if len(mine) >= len(expected_pods) + len(expected_events):
                break
    finally:
        bus.close()

    pods = [record.value for record in mine if record.value["schema"] == POD_SCHEMA]
    events = [record.value for record in mine if record.value["schema"] == EVENT_SCHEMA]
    assert [(v["change"], v["pod"], v["pod_ips"], v["resource_version"]) for v in pods] == expected_pods
    assert [(v["change"], v["uid"], v["reason"], v["resource_version"]) for v in events] == expected_events
    assert {(v["cluster"], v["node"]) for v in pods + events} == {(cluster, NODE)}
    deployment = next(v for v in pods if v["pod"] == "checkout-6d9f7c8b5-x2k4p")
    assert (deployment["workload_kind"], deployment["workload_name"]) == ("Deployment", "checkout")
    assert len({record.partition for record in mine}) == 1  # one key, one partition: the order holds
