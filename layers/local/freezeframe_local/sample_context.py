"""The bundled sample's cross-layer context: the Kubernetes objects and the node's own state behind the sample
capture (freezeframe_local.samples), as the agent would have recorded them, so the demo's evidence names workloads and
Services and shows one node's trouble.

The story (seconds after the capture's first instant, as in freezeframe_local.samples):

- Pods of shop (frontend, checkout, postgres-0, payments, two backend replicas) and kube-system (coredns), Services
  kube-dns (10.96.0.10), backend (10.96.12.34:80 -> 8080), kubernetes (10.96.0.1) and payments (10.96.77.7), and
  their EndpointSlices. payments has no ready endpoint all along (its pod fails its readiness probe).
- A rolling update of backend: replica backend-7c9d6b5f4-a1b2c starts terminating at 28 s (ready false, still
  serving) and leaves the slice at 33 s. The capture's 503 from the backend Service at 30 s falls inside.
- node-a's listen queue overflows: TcpExt.ListenOverflows and ListenDrops grow by 37 in the period ending at 30 s and
  by 112 in the one ending at 40 s; kube-proxy rewrites the ruleset when the terminating replica leaves (a new
  digest in the period ending at 40 s).

Everything is a function of `offset_ns` (what the replay adds to the capture's timestamps), so the context lines up
with a retimed replay.
"""

from __future__ import annotations

import hashlib
from typing import Any

from freezeframe.freeze.k8s_context import ENDPOINTSLICE_SCHEMA, NODE_SCHEMA, POD_SCHEMA, SERVICE_SCHEMA
from freezeframe.freeze.node_state import ConfigState, NodeStateDocument

SAMPLE_START_NS = 1_767_225_600 * 1_000_000_000  # 2026-01-01T00:00:00Z, the sample capture's epoch
NODE = "node-a"
NODE_IP = "10.0.1.23"
PERIOD_S = 10
SNAPSHOT_AT_S = -300.0  # the watcher's list, five minutes before the capture
TERMINATING_AT_S = 28.0
REMOVED_AT_S = 33.0
# ListenOverflows (and ListenDrops) at the end of each period: +37 by 30 s, +112 more by 40 s.
LISTEN_OVERFLOWS = {0: 120, 10: 120, 20: 120, 30: 157, 40: 269, 50: 269, 60: 269}

# (namespace, pod, ip, workload kind, workload name)
PODS = (
    ("shop", "frontend-6f7d8c9b4-k2x9p", "10.244.1.10", "Deployment", "frontend"),
    ("shop", "checkout-5d8f9c7b6-m4n2q", "10.244.1.11", "Deployment", "checkout"),
    ("shop", "postgres-0", "10.244.2.20", "StatefulSet", "postgres"),
    ("shop", "backend-7c9d6b5f4-a1b2c", "10.244.2.21", "Deployment", "backend"),
    ("shop", "backend-7c9d6b5f4-d3e4f", "10.244.2.22", "Deployment", "backend"),
    ("shop", "payments-7b9c5d4f8-q8w3e", "10.244.3.30", "Deployment", "payments"),
    ("kube-system", "coredns-5d78c9869d-h7j8k", "10.244.0.5", "Deployment", "coredns"),
)
# (namespace, service, cluster ip, [(port name, port, protocol, target port)])
SERVICES = (
    ("kube-system", "kube-dns", "10.96.0.10", [("dns", 53, "UDP", 53), ("dns-tcp", 53, "TCP", 53)]),
    ("shop", "backend", "10.96.12.34", [("http", 80, "TCP", 8080)]),
    ("default", "kubernetes", "10.96.0.1", [("https", 443, "TCP", 6443)]),
    ("shop", "payments", "10.96.77.7", [("https", 8443, "TCP", 8443)]),
)


def _uid(name: str) -> str:
    digest = hashlib.sha256(name.encode()).hexdigest()
    return f"{digest[:8]}-{digest[8:12]}-4{digest[13:16]}-8{digest[17:20]}-{digest[20:32]}"


def _at(offset_ns: int, seconds: float) -> int:
    return SAMPLE_START_NS + offset_ns + int(seconds * 1e9)


def _endpoint(ip: str, pod: str | None, ready: bool, terminating: bool = False) -> dict[str, Any]:
    return {"addresses": [ip], "ready": ready, "serving": ready or terminating, "terminating": terminating,
            "node_name": NODE, "target_kind": "Pod" if pod else None, "target_namespace": "shop" if pod else None,
            "target_name": pod}


def _slice(cluster: str, offset_ns: int, seconds: float, change: str, namespace: str, service: str, rv: int,
           endpoints: list[dict[str, Any]], ports: list[tuple[str, int, str]]) -> dict[str, Any]:
    name = f"{service}-{_uid(service)[:5]}"
    return {"schema": ENDPOINTSLICE_SCHEMA, "cluster": cluster, "node": NODE, "observed_ns": _at(offset_ns, seconds),
            "change": change, "namespace": namespace, "name": name, "uid": _uid(name), "resource_version": str(rv),
            "service": service, "address_type": "IPv4",
            "ports": [{"name": n, "port": p, "protocol": proto} for n, p, proto in ports], "endpoints": endpoints}


def k8s_records(cluster: str, offset_ns: int = 0) -> list[dict[str, Any]]:
    """The watcher's records of the sample (freezeframe.k8s-* schemas), in observation order."""
    at = _at(offset_ns, SNAPSHOT_AT_S)
    records: list[dict[str, Any]] = []
    for rv, (namespace, pod, ip, kind, workload) in enumerate(PODS, start=4100):
        records.append({"schema": POD_SCHEMA, "cluster": cluster, "node": NODE, "observed_ns": at, "change": "SYNC",
                        "namespace": namespace, "pod": pod, "uid": _uid(pod), "pod_ips": [ip], "host_ip": NODE_IP,
                        "host_network": False, "workload_kind": kind, "workload_name": workload,
                        "labels": {"app.kubernetes.io/name": workload}, "phase": "Running",
                        "resource_version": str(rv), "snapshot_rv": "5000", "snapshot_size": len(PODS)})
    for rv, (namespace, service, ip, ports) in enumerate(SERVICES, start=3100):
        records.append({"schema": SERVICE_SCHEMA, "cluster": cluster, "node": NODE, "observed_ns": at,
                        "change": "SYNC", "namespace": namespace, "name": service, "uid": _uid(service),
                        "resource_version": str(rv), "service_type": "ClusterIP", "cluster_ips": [ip],
                        "ports": [{"name": n, "port": p, "protocol": proto, "target_port": target, "node_port": None}
                                  for n, p, proto, target in ports],
                        "selector": {"app.kubernetes.io/name": service}})
    backend_ports = [("http", 8080, "TCP")]
    a, b = "backend-7c9d6b5f4-a1b2c", "backend-7c9d6b5f4-d3e4f"
    records += [
        _slice(cluster, offset_ns, SNAPSHOT_AT_S, "SYNC", "kube-system", "kube-dns", 4801,
               [_endpoint("10.244.0.5", None, True)], [("dns", 53, "UDP"), ("dns-tcp", 53, "TCP")]),
        _slice(cluster, offset_ns, SNAPSHOT_AT_S, "SYNC", "default", "kubernetes", 4802,
               [_endpoint(NODE_IP, None, True)], [("https", 6443, "TCP")]),
        _slice(cluster, offset_ns, SNAPSHOT_AT_S, "SYNC", "shop", "payments", 4803,
               [_endpoint("10.244.3.30", "payments-7b9c5d4f8-q8w3e", False)], [("https", 8443, "TCP")]),
        _slice(cluster, offset_ns, SNAPSHOT_AT_S, "SYNC", "shop", "backend", 4804,
               [_endpoint("10.244.2.21", a, True), _endpoint("10.244.2.22", b, True)], backend_ports),
        _slice(cluster, offset_ns, TERMINATING_AT_S, "MODIFIED", "shop", "backend", 5210,
               [_endpoint("10.244.2.21", a, False, terminating=True), _endpoint("10.244.2.22", b, True)],
               backend_ports),
        _slice(cluster, offset_ns, REMOVED_AT_S, "MODIFIED", "shop", "backend", 5236,
               [_endpoint("10.244.2.22", b, True)], backend_ports),
    ]
    records.append({"schema": NODE_SCHEMA, "cluster": cluster, "node": NODE, "observed_ns": at, "change": "SYNC",
                    "namespace": "", "name": NODE, "uid": _uid(NODE), "resource_version": "4999",
                    "internal_ips": [NODE_IP], "ready": True,
                    "conditions": {"MemoryPressure": "False", "DiskPressure": "False", "PIDPressure": "False",
                                   "Ready": "True"}, "unschedulable": False, "pod_cidrs": ["10.244.0.0/16"]})
    return sorted(records, key=lambda r: int(r["observed_ns"]))


ROUTES = ("default via 10.0.1.1 dev eth0 proto dhcp src 10.0.1.23 metric 100\n"
          "10.0.1.0/24 dev eth0 proto kernel scope link src 10.0.1.23\n"
          "10.244.1.0/24 dev cni0 proto kernel scope link src 10.244.1.1\n")
MTUS = "cni0 8951\neth0 9001\nlo 65536\n"


def _ruleset(backends: tuple[str, ...]) -> str:
    """An iptables-save excerpt of kube-proxy's rules for the backend Service with these endpoints."""
    lines = ["*nat", ":KUBE-SERVICES - [0:0]", ":KUBE-SVC-BACKEND - [0:0]",
             "-A KUBE-SERVICES -d 10.96.12.34/32 -p tcp -m comment --comment \"shop/backend:http cluster IP\" "
             "-m tcp --dport 80 -j KUBE-SVC-BACKEND"]
    for index, ip in enumerate(backends):
        chain = f"KUBE-SEP-{hashlib.sha256(ip.encode()).hexdigest()[:12].upper()}"
        rest = len(backends) - index
        probability = "" if rest == 1 else f"-m statistic --mode random --probability {1 / rest:.11f} "
        lines += [f":{chain} - [0:0]", f"-A KUBE-SVC-BACKEND -m comment --comment \"shop/backend:http\" {probability}"
                  f"-j {chain}", f"-A {chain} -p tcp -m tcp -j DNAT --to-destination {ip}:8080"]
    return "\n".join([*lines, "COMMIT", ""])


def node_state_documents(cluster: str, offset_ns: int = 0) -> list[NodeStateDocument]:
    """node-a's documents, one per 10 s period from -10 s to 60 s (the first is the baseline)."""
    documents, previous = [], None
    configs = {"routes": ROUTES, "mtus": MTUS}
    for seq, end_s in enumerate(range(0, 61, PERIOD_S)):
        backends = ("10.244.2.21", "10.244.2.22") if end_s < 40 else ("10.244.2.22",)
        texts = {**configs, "ruleset": _ruleset(backends)}
        config = {kind: ConfigState(hashlib.sha256(text.encode()).hexdigest(),
                                    text if previous is None or previous.get(kind) != text else None)
                  for kind, text in texts.items()}
        previous = texts
        step = seq + 1
        overflows = LISTEN_OVERFLOWS[end_s]
        counters = {"Tcp.ActiveOpens": 51200 + 31 * step, "Tcp.PassiveOpens": 48100 + 27 * step,
                    "Tcp.AttemptFails": 310 + (3 if end_s >= 10 else 0) + (1 if end_s >= 20 else 0),
                    "Tcp.EstabResets": 88 + (1 if end_s >= 40 else 0), "Tcp.CurrEstab": 41 + seq % 3,
                    "Tcp.InSegs": 9_100_000 + 2300 * step, "Tcp.OutSegs": 9_050_000 + 2250 * step,
                    "Tcp.RetransSegs": 1540 + 2 * step + (3 if end_s >= 20 else 0), "Tcp.InErrs": 0,
                    "Tcp.OutRsts": 402 + 2 * step, "TcpExt.ListenOverflows": overflows,
                    "TcpExt.ListenDrops": overflows, "TcpExt.SyncookiesSent": 0, "TcpExt.TCPTimeouts": 77 + step}
        documents.append(NodeStateDocument(
            cluster=cluster, node=NODE, seq=seq, start_ns=_at(offset_ns, end_s - PERIOD_S),
            end_ns=_at(offset_ns, end_s), observed_ns=_at(offset_ns, end_s), counters=counters,
            conntrack={"count": 1800 + 40 * seq, "max": 131072, "drop": 0, "early_drop": 0, "insert_failed": 0,
                       "invalid": 12},
            interfaces={"eth0": {"rx_bytes": 8_000_000_000 + 1_300_000 * step, "rx_packets": 9_000_000 + 2100 * step,
                                 "rx_errors": 0, "rx_dropped": 0, "tx_bytes": 7_000_000_000 + 1_200_000 * step,
                                 "tx_packets": 8_800_000 + 2000 * step, "tx_errors": 0, "tx_dropped": 0,
                                 "mtu": 9001}},
            sockets={"sockets.used": 310, "TCP.inuse": 44, "TCP.orphan": 0, "TCP.tw": 120 + seq, "TCP.alloc": 60},
            config=config))
    return documents
