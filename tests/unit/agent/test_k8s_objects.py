"""The watcher's Services, EndpointSlices and Node records, against the recorded-response API server. Expected values
are read from the recorded objects in tests/fixtures/k8s/, never from the watcher's output."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from freezeframe.adapters.bus import FileBus
from freezeframe_agent.k8s_objects import ENDPOINTSLICE_SCHEMA, NODE_SCHEMA, SERVICE_SCHEMA
from tests.fixtures.k8s_api import FakeKubeApi, Reply, load, load_events
from tests.unit.agent.test_k8s_watch import CLUSTER, NODE, running, wait_records, watcher_for


@pytest.fixture
def api() -> Any:
    with FakeKubeApi(NODE, hold_s=30.0) as server:
        yield server


def of(records: list[dict[str, Any]], schema: str) -> list[dict[str, Any]]:
    return [r for r in records if r["schema"] == schema]


def test_services_endpointslices_and_the_node_are_recorded_over_time(api: FakeKubeApi, tmp_path: Path) -> None:
    bus = FileBus(tmp_path / "bus")
    api.script("pods", lists=[Reply.list("pods-list.json")])
    api.script("services", lists=[Reply.list("services-list.json")])
    api.script("endpointslices", lists=[Reply.list("endpointslices-list.json")],
               watches=[Reply.stream("endpointslices-watch-1.jsonl")])
    api.script("nodes", lists=[Reply.list("nodes-list.json")])
    services, slices = load("services-list.json")["items"], load("endpointslices-list.json")["items"]
    watched = [event["object"] for event in load_events("endpointslices-watch-1.jsonl")]
    with running(watcher_for(api, bus, watch_objects=True)):
        records = wait_records(bus, lambda values: len(of(values, SERVICE_SCHEMA)) == len(services)
                               and len(of(values, ENDPOINTSLICE_SCHEMA)) == len(slices) + len(watched)
                               and len(of(values, NODE_SCHEMA)) == 1)
    # Services: every ClusterIP and port as the API server sent them; a headless Service has no ClusterIP.
    by_name = {r["name"]: r for r in of(records, SERVICE_SCHEMA)}
    for service in services:
        record = by_name[service["metadata"]["name"]]
        assert (record["cluster"], record["node"], record["change"]) == (CLUSTER, NODE, "SYNC")
        assert record["cluster_ips"] == [ip for ip in service["spec"]["clusterIPs"] if ip != "None"]
        assert [(p["port"], p["target_port"]) for p in record["ports"]] == [
            (p["port"], p["targetPort"]) for p in service["spec"]["ports"]]
    # EndpointSlices: the list, then each watched change, with each endpoint's conditions.
    slice_records = of(records, ENDPOINTSLICE_SCHEMA)
    assert [(r["change"], r["resource_version"]) for r in slice_records] == [
        *(("SYNC", s["metadata"]["resourceVersion"]) for s in slices),
        *(("MODIFIED", s["metadata"]["resourceVersion"]) for s in watched)]
    for record, raw in zip(slice_records, [*slices, *watched], strict=True):
        assert record["service"] == raw["metadata"]["labels"]["kubernetes.io/service-name"]
        assert [(e["addresses"], e["ready"], e["serving"], e["terminating"], e["target_name"])
                for e in record["endpoints"]] == [
            (e["addresses"], e["conditions"]["ready"], e["conditions"]["serving"], e["conditions"]["terminating"],
             e["targetRef"]["name"]) for e in raw["endpoints"]]
    node = load("nodes-list.json")["items"][0]
    (node_record,) = of(records, NODE_SCHEMA)
    assert node_record["name"] == node["metadata"]["name"]
    assert node_record["ready"] is True
    assert node_record["internal_ips"] == [a["address"] for a in node["status"]["addresses"]
                                           if a["type"] == "InternalIP"]
    # The Node is watched with a field selector on this agent's own node (the fake refuses anything else).
    assert all(r.status == 200 for r in api.requests if r.resource == "nodes")


def test_a_heartbeat_that_changes_nothing_read_is_not_republished() -> None:
    from freezeframe_agent.k8s_objects import object_record

    node = load("nodes-list.json")["items"][0]
    first = object_record(NODE_SCHEMA, node, cluster=CLUSTER, node=NODE, change="SYNC", observed_ns=1)
    bumped = {**node, "metadata": {**node["metadata"], "resourceVersion": "99999"}}
    second = object_record(NODE_SCHEMA, bumped, cluster=CLUSTER, node=NODE, change="MODIFIED", observed_ns=2)
    assert first.same_state(second)
    flipped = {**node, "status": {**node["status"], "conditions": [
        {**c, "status": "False"} if c["type"] == "Ready" else c for c in node["status"]["conditions"]]}}
    third = object_record(NODE_SCHEMA, flipped, cluster=CLUSTER, node=NODE, change="MODIFIED", observed_ns=3)
    assert not first.same_state(third)
    assert third.to_dict()["ready"] is False
