"""Records of the Kubernetes objects that explain traffic to a Service: Services (ClusterIPs and ports),
EndpointSlices (which backends were ready, serving or terminating, over time) and Nodes. The watcher
(freezeframe_agent.k8s) lists and watches them like pods and publishes these records on the same topic; dissection
reads them back in freezeframe.dissect.crosslayer.

Pure: raw JSON in, record out. A change that keeps everything a consumer reads (a resourceVersion bump from a
status heartbeat) is skipped by `same_state`, so a Node's lease renewals do not flood the topic.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from freezeframe.contracts.documents import ObjectRecord
from freezeframe.freeze.k8s_context import ENDPOINTSLICE_SCHEMA, NODE_SCHEMA, SERVICE_SCHEMA

SERVICE_NAME_LABEL = "kubernetes.io/service-name"

RawObject = Mapping[str, Any]


def _meta(raw: RawObject) -> Mapping[str, Any]:
    return raw.get("metadata") or {}


def service_state(raw: RawObject) -> dict[str, Any]:
    spec = raw.get("spec") or {}
    ips = [ip for ip in spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
           if ip and ip != "None"]
    ports = [{"name": p.get("name"), "port": p.get("port"), "protocol": p.get("protocol") or "TCP",
              "target_port": p.get("targetPort", p.get("port")), "node_port": p.get("nodePort")}
             for p in spec.get("ports") or []]
    return {"service_type": spec.get("type") or "ClusterIP", "cluster_ips": ips, "ports": ports,
            "selector": dict(spec.get("selector") or {})}


def endpointslice_state(raw: RawObject) -> dict[str, Any]:
    endpoints = []
    for endpoint in raw.get("endpoints") or []:
        conditions = endpoint.get("conditions") or {}
        target = endpoint.get("targetRef") or {}
        endpoints.append({"addresses": list(endpoint.get("addresses") or []),
                          "ready": conditions.get("ready"), "serving": conditions.get("serving"),
                          "terminating": conditions.get("terminating"), "node_name": endpoint.get("nodeName"),
                          "target_kind": target.get("kind"), "target_namespace": target.get("namespace"),
                          "target_name": target.get("name")})
    ports = [{"name": p.get("name"), "port": p.get("port"), "protocol": p.get("protocol") or "TCP"}
             for p in raw.get("ports") or []]
    return {"service": (_meta(raw).get("labels") or {}).get(SERVICE_NAME_LABEL),
            "address_type": raw.get("addressType"), "ports": ports, "endpoints": endpoints}


def node_state(raw: RawObject) -> dict[str, Any]:
    status = raw.get("status") or {}
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or [] if c.get("type")}
    return {"internal_ips": [a.get("address") for a in status.get("addresses") or []
                             if a.get("type") == "InternalIP"],
            "ready": {"True": True, "False": False}.get(conditions.get("Ready") or ""),
            "conditions": conditions, "unschedulable": bool((raw.get("spec") or {}).get("unschedulable")),
            "pod_cidrs": list((raw.get("spec") or {}).get("podCIDRs") or [])}


__all__ = ["ENDPOINTSLICE_SCHEMA", "NODE_SCHEMA", "SERVICE_SCHEMA", "ObjectRecord", "object_record"]
BUILDERS = {SERVICE_SCHEMA: service_state, ENDPOINTSLICE_SCHEMA: endpointslice_state, NODE_SCHEMA: node_state}


def object_record(schema: str, raw: RawObject, *, cluster: str, node: str, change: str,
                  observed_ns: int) -> ObjectRecord:
    meta = _meta(raw)
    return ObjectRecord(schema=schema, cluster=cluster, node=node, observed_ns=observed_ns, change=change,
                        namespace=meta.get("namespace") or "", name=meta.get("name") or "",
                        uid=meta.get("uid") or "", resource_version=meta.get("resourceVersion"),
                        state=BUILDERS[schema](raw))
