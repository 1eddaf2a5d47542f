"""Kubernetes objects over time beside the traffic: the `services` and `endpoints` tables from the watcher's Service
and EndpointSlice records, and `service_flows`, which resolves connections to a ClusterIP to their Service and,
where the capture shows kube-proxy's translation, to the backend pod.

Every agent watches the cluster's Services and EndpointSlices, so the same object state arrives from several nodes:
records are deduplicated on (schema, uid, resourceVersion, deleted). A Service holds a ClusterIP from the record that
shows it (from the beginning of the timeline when first seen in a SYNC snapshot or as MODIFIED, as pods do in
freezeframe.dissect.enrich) to the record that shows it gone.

The translation: a pod's connection to ClusterIP:port leaves the pod with that destination and, after kube-proxy's
DNAT, goes on with a backend's address; a capture on the node sees both legs with the same client address and port,
the same protocol and (nearly) the same start. `service_flows` pairs them when the second leg's destination is an
address of one of the Service's EndpointSlices (any state) or, without slices, any other destination.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from freezeframe.contracts.models import K8S_ENDPOINTSLICE_SCHEMA as ENDPOINTSLICE_SCHEMA
from freezeframe.contracts.models import K8S_SERVICE_SCHEMA as SERVICE_SCHEMA
from freezeframe.contracts.schemas import ENDPOINTS, SERVICE_FLOWS, SERVICES
from freezeframe.dissect.enrich import IpTimeline
from freezeframe.dissect.node_state import node_config, node_stats

if TYPE_CHECKING:
    from freezeframe.freeze.node_state import NodeStateDocument

CLUSTER_PART = "cluster"  # the part name of the cluster-wide tables (services, endpoints)
TRANSLATION_WINDOW_NS = 1_000_000_000  # the two legs of one connection start within this of each other
_BEGINNING = -(2**63)


def unique(records: Iterable[Mapping[str, Any]], schema: str) -> list[Mapping[str, Any]]:
    """Pure: the records of one schema, one per observed object state, in observation order."""
    seen: set[tuple[Any, ...]] = set()
    out = []
    for record in sorted((r for r in records if r.get("schema") == schema), key=lambda r: int(r["observed_ns"])):
        key = (record.get("uid"), record.get("resource_version"), record.get("change") == "DELETED")
        if record.get("resource_version") is not None and key in seen:
            continue
        seen.add(key)
        out.append(record)
    return out


def _ts(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, UTC)


def services_table(records: Iterable[Mapping[str, Any]]) -> pa.Table:
    rows: dict[str, list[object]] = {name: [] for name in SERVICES.names}
    for record in unique(records, SERVICE_SCHEMA):
        ips = list(record.get("cluster_ips") or []) or [None]
        ports = list(record.get("ports") or []) or [{}]
        for ip in ips:
            for port in ports:
                values = {"ts": _ts(int(record["observed_ns"])), "ts_ns": int(record["observed_ns"]),
                          "change": record["change"], "namespace": record["namespace"], "service": record["name"],
                          "service_type": record.get("service_type"), "cluster_ip": ip, "port": port.get("port"),
                          "protocol": port.get("protocol"),
                          "target_port": None if port.get("target_port") is None else str(port["target_port"]),
                          "port_name": port.get("name")}
                for name in SERVICES.names:
                    rows[name].append(values[name])
    return pa.table(rows, schema=SERVICES)


def _ports_text(ports: Iterable[Mapping[str, Any]]) -> str:
    return ",".join(f"{p.get('name') or ''}:{p.get('port')}/{p.get('protocol') or 'TCP'}" for p in ports)


def endpoints_table(records: Iterable[Mapping[str, Any]]) -> pa.Table:
    rows: dict[str, list[object]] = {name: [] for name in ENDPOINTS.names}

    def add(record: Mapping[str, Any], endpoint: Mapping[str, Any], address: str | None, deleted: bool) -> None:
        values = {"ts": _ts(int(record["observed_ns"])), "ts_ns": int(record["observed_ns"]),
                  "change": record["change"], "namespace": record["namespace"], "service": record.get("service"),
                  "slice": record["name"], "address": address, "ports": _ports_text(record.get("ports") or []),
                  "pod_namespace": endpoint.get("target_namespace") if endpoint.get("target_kind") == "Pod" else None,
                  "pod": endpoint.get("target_name") if endpoint.get("target_kind") == "Pod" else None,
                  "node_name": endpoint.get("node_name"),
                  "ready": False if deleted or address is None else endpoint.get("ready"),
                  "serving": False if deleted or address is None else endpoint.get("serving"),
                  "terminating": endpoint.get("terminating") if address is not None and not deleted else None}
        for name in ENDPOINTS.names:
            rows[name].append(values[name])

    for record in unique(records, ENDPOINTSLICE_SCHEMA):
        deleted = record.get("change") == "DELETED"
        endpoints = list(record.get("endpoints") or [])
        addresses = [(e, a) for e in endpoints for a in e.get("addresses") or []]
        if not addresses:
            add(record, {}, None, deleted)  # a slice with nothing in it: the Service has no endpoints here
        for endpoint, address in addresses:
            add(record, endpoint, address, deleted)
    return pa.table(rows, schema=ENDPOINTS)


@dataclass(frozen=True, slots=True)
class ServiceHold:
    start_ns: int
    end_ns: int | None
    namespace: str
    service: str


@dataclass(slots=True)
class ServiceTimeline:
    """Which Service held a ClusterIP (and port) when; and the states of its endpoints over time."""

    _by_address: dict[tuple[str, int | None], list[ServiceHold]] = field(default_factory=dict)
    # (namespace, service, address) -> [(observed_ns, ready, terminating)], in time order
    _endpoint_states: dict[tuple[str, str, str], list[tuple[int, bool | None, bool | None]]] = field(
        default_factory=dict)
    _addresses: dict[tuple[str, str], set[str]] = field(default_factory=dict)

    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, Any]]) -> ServiceTimeline:
        records = list(records)
        timeline = cls()
        open_: dict[tuple[str, int | None], tuple[int, str, str, str]] = {}  # address -> (start, ns, svc, uid)
        seen: set[tuple[str, int | None]] = set()
        for record in unique(records, SERVICE_SCHEMA):
            at = int(record["observed_ns"])
            addresses = set() if record.get("change") == "DELETED" else {
                (str(ip), port.get("port")) for ip in record.get("cluster_ips") or []
                for port in record.get("ports") or [{}]}
            for address, (start, namespace, service, uid) in list(open_.items()):
                if uid == record.get("uid") and address not in addresses:
                    timeline._close(address, start, at, namespace, service)
                    del open_[address]
            for address in addresses:
                held = open_.get(address)
                if held is not None and held[3] == record.get("uid"):
                    continue
                if held is not None:
                    timeline._close(address, held[0], at, held[1], held[2])
                first = address not in seen and record.get("change") in ("SYNC", "MODIFIED")
                open_[address] = (_BEGINNING if first else at, str(record["namespace"]), str(record["name"]),
                                  str(record.get("uid")))
                seen.add(address)
        for address, (start, namespace, service, _uid) in open_.items():
            timeline._close(address, start, None, namespace, service)
        for record in unique(records, ENDPOINTSLICE_SCHEMA):
            if not record.get("service"):
                continue
            owner = (str(record["namespace"]), str(record["service"]))
            deleted = record.get("change") == "DELETED"
            for endpoint in record.get("endpoints") or []:
                for address in endpoint.get("addresses") or []:
                    timeline._addresses.setdefault(owner, set()).add(str(address))
                    timeline._endpoint_states.setdefault((*owner, str(address)), []).append(
                        (int(record["observed_ns"]), False if deleted else endpoint.get("ready"),
                         None if deleted else endpoint.get("terminating")))
        return timeline

    def _close(self, address: tuple[str, int | None], start: int, end: int | None, namespace: str,
               service: str) -> None:
        items = self._by_address.setdefault(address, [])
        items.append(ServiceHold(start, end, namespace, service))
        items.sort(key=lambda h: h.start_ns)

    def service_at(self, ip: str | None, port: int | None, ts_ns: int) -> ServiceHold | None:
        for key in ((ip or "", port), (ip or "", None)):
            items = self._by_address.get(key)
            if not items:
                continue
            index = bisect.bisect_right([h.start_ns for h in items], ts_ns) - 1
            found = items[index] if index >= 0 else None
            if found is not None and (found.end_ns is None or ts_ns < found.end_ns):
                return found
        return None

    def backends(self, namespace: str, service: str) -> set[str]:
        return self._addresses.get((namespace, service), set())

    def endpoint_state(self, namespace: str, service: str, address: str, ts_ns: int
                       ) -> tuple[bool | None, bool | None]:
        """(ready, terminating) of the address in the Service's slices at ts (the latest record at or before)."""
        states = self._endpoint_states.get((namespace, service, address), [])
        index = bisect.bisect_right([s[0] for s in states], ts_ns) - 1
        if index < 0:
            return None, None
        return states[index][1], states[index][2]

    @property
    def empty(self) -> bool:
        return not self._by_address


def service_flows(connections: pa.Table, services: ServiceTimeline, pods: IpTimeline) -> pa.Table:
    """Connections to a ClusterIP with their Service and, where the capture shows the translated leg, the backend."""
    rows: dict[str, list[object]] = {name: [] for name in SERVICE_FLOWS.names}
    if connections.num_rows == 0 or services.empty:
        return pa.table(rows, schema=SERVICE_FLOWS)
    conns = connections.select(["node", "conn_id", "proto", "ts_ns", "src_ip", "src_port", "dst_ip",
                                "dst_port"]).to_pylist()
    by_client: dict[tuple[Any, Any, Any], list[dict[str, Any]]] = {}
    for conn in conns:
        by_client.setdefault((conn["proto"], conn["src_ip"], conn["src_port"]), []).append(conn)
    for conn in conns:
        hold = services.service_at(conn["dst_ip"], conn["dst_port"], conn["ts_ns"])
        if hold is None:
            continue
        candidates = services.backends(hold.namespace, hold.service)
        backend = next((other for other in by_client[(conn["proto"], conn["src_ip"], conn["src_port"])]
                        if other is not conn and other["dst_ip"] != conn["dst_ip"]
                        and abs(other["ts_ns"] - conn["ts_ns"]) <= TRANSLATION_WINDOW_NS
                        and (not candidates or other["dst_ip"] in candidates)), None)
        backend_ip = backend["dst_ip"] if backend else None
        pod = pods.lookup(backend_ip, conn["ts_ns"]) if backend_ip else None
        ready, terminating = (services.endpoint_state(hold.namespace, hold.service, backend_ip, conn["ts_ns"])
                              if backend_ip else (None, None))
        values = {"node": conn["node"], "conn_id": conn["conn_id"], "ts": _ts(conn["ts_ns"]), "ts_ns": conn["ts_ns"],
                  "src_ip": conn["src_ip"], "src_port": conn["src_port"], "cluster_ip": conn["dst_ip"],
                  "port": conn["dst_port"], "namespace": hold.namespace, "service": hold.service,
                  "backend_conn_id": backend["conn_id"] if backend else None, "backend_ip": backend_ip,
                  "backend_port": backend["dst_port"] if backend else None,
                  "backend_namespace": pod.namespace if pod else None, "backend_pod": pod.pod if pod else None,
                  "backend_workload": pod.workload if pod else None, "backend_ready": ready,
                  "backend_terminating": terminating}
        for name in SERVICE_FLOWS.names:
            rows[name].append(values[name])
    return pa.table(rows, schema=SERVICE_FLOWS)


def node_tables(connections: pa.Table, records: Iterable[Mapping[str, Any]], documents: Iterable[NodeStateDocument],
                pods: IpTimeline) -> dict[str, pa.Table]:
    """The cross-layer tables of one node's pass: node_stats, node_config and service_flows."""
    documents = list(documents)
    return {"node_stats": node_stats(documents), "node_config": node_config(documents),
            "service_flows": service_flows(connections, ServiceTimeline.from_records(records), pods)}


def cluster_tables(records: Iterable[Mapping[str, Any]]) -> dict[str, pa.Table]:
    """The cluster-wide tables (one part named CLUSTER_PART, the same whichever node's pass writes it)."""
    records = list(records)
    return {"services": services_table(records), "endpoints": endpoints_table(records)}
