"""ClusterIP -> Service -> backend pod resolution and the endpoints table, on hand-written records and connections.
Expected values are the records' own fields (which Service held the address when, which backend a translated leg
reached), worked out by hand."""

from __future__ import annotations

from typing import Any

from freezeframe.dissect.crosslayer import ServiceTimeline, endpoints_table, service_flows
from freezeframe.dissect.enrich import IpTimeline
from freezeframe.freeze.k8s_context import ENDPOINTSLICE_SCHEMA, POD_SCHEMA, SERVICE_SCHEMA
from tests.fixtures.evidence_tables import at, table_of

VIP, BACKEND = "10.96.5.5", "10.244.1.7"


def records() -> list[dict[str, Any]]:
    def service(seconds: float, change: str, rv: str, node: str = "node-a") -> dict[str, Any]:
        return {"schema": SERVICE_SCHEMA, "cluster": "c", "node": node, "observed_ns": at(seconds), "change": change,
                "namespace": "shop", "name": "cart", "uid": "u-cart", "resource_version": rv,
                "cluster_ips": [VIP], "ports": [{"name": "http", "port": 80, "protocol": "TCP", "target_port": 8080}]}

    def eps(seconds: float, rv: str, ready: bool, terminating: bool, node: str = "node-a") -> dict[str, Any]:
        return {"schema": ENDPOINTSLICE_SCHEMA, "cluster": "c", "node": node, "observed_ns": at(seconds),
                "change": "MODIFIED", "namespace": "shop", "name": "cart-x1", "uid": "u-eps", "resource_version": rv,
                "service": "cart", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                "endpoints": [{"addresses": [BACKEND], "ready": ready, "serving": True, "terminating": terminating,
                               "node_name": "node-a", "target_kind": "Pod", "target_namespace": "shop",
                               "target_name": "cart-0"}]}

    pod = {"schema": POD_SCHEMA, "cluster": "c", "node": "node-a", "observed_ns": at(-100), "change": "SYNC",
           "namespace": "shop", "pod": "cart-0", "uid": "u-pod", "pod_ips": [BACKEND], "workload_name": "cart"}
    # The same Service and slice states seen by two agents (node-a and node-b) must count once; the Service is
    # deleted at 50 s, so its ClusterIP means nothing after.
    return [pod, service(-100, "SYNC", "1"), service(-99, "SYNC", "1", "node-b"), eps(-100, "2", True, False),
            eps(-99, "2", True, False, "node-b"), eps(20, "3", False, True), service(50, "DELETED", "4")]


def test_endpoints_are_deduplicated_across_agents() -> None:
    rows = endpoints_table(records()).to_pylist()
    assert [(r["ts_ns"], r["address"], r["ready"], r["terminating"], r["pod"]) for r in rows] == [
        (at(-100), BACKEND, True, False, "cart-0"), (at(20), BACKEND, False, True, "cart-0")]


def test_a_clusterip_connection_resolves_to_its_service_and_translated_backend() -> None:
    conns = table_of("connections", [
        {"conn_id": "leg-1", "ts_ns": at(10), "src_ip": "10.244.2.2", "src_port": 50000, "dst_ip": VIP,
         "dst_port": 80},
        {"conn_id": "leg-2", "ts_ns": at(10.0004), "src_ip": "10.244.2.2", "src_port": 50000, "dst_ip": BACKEND,
         "dst_port": 8080},
        {"conn_id": "late", "ts_ns": at(30), "src_ip": "10.244.2.2", "src_port": 50002, "dst_ip": VIP,
         "dst_port": 80},
        {"conn_id": "after-delete", "ts_ns": at(60), "src_ip": "10.244.2.2", "src_port": 50004, "dst_ip": VIP,
         "dst_port": 80},
        {"conn_id": "other-port", "ts_ns": at(10), "src_ip": "10.244.2.2", "src_port": 50006, "dst_ip": VIP,
         "dst_port": 443},
    ])
    timeline = ServiceTimeline.from_records(records())
    flows = service_flows(conns, timeline, IpTimeline.from_records(records())).to_pylist()
    assert [(f["conn_id"], f["service"], f["backend_conn_id"], f["backend_pod"], f["backend_workload"],
             f["backend_ready"], f["backend_terminating"]) for f in flows] == [
        ("leg-1", "cart", "leg-2", "cart-0", "cart", True, False),
        ("late", "cart", None, None, None, None, None)]
