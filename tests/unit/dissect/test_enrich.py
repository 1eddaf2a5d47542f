"""IP -> pod resolution at a row's time, with IP reuse, from context records built here."""

import pyarrow as pa

from freezeframe.dissect.enrich import IpTimeline, enrich


def pod(at: int, name: str, ip: str, change: str, uid: str | None = None, ns: str = "shop") -> dict[str, object]:
    return {"schema": "freezeframe.k8s-pod/v1", "observed_ns": at, "change": change, "namespace": ns, "pod": name,
            "uid": uid or f"uid-{name}", "pod_ips": [ip], "host_network": False,
            "workload_name": name.rsplit("-", 1)[0]}


RECORDS = [
    pod(100, "checkout-a", "10.0.0.5", "ADDED"),
    pod(200, "checkout-a", "10.0.0.5", "DELETED"),
    pod(300, "payments-b", "10.0.0.5", "ADDED", ns="pay"),   # the same IP, reused by another pod
    pod(50, "db-0", "10.0.0.9", "SYNC", ns="data"),           # first seen in a re-list: it was already running
    {"schema": "freezeframe.k8s-event/v1", "observed_ns": 10, "reason": "Killing"},
]


def test_an_ip_resolves_to_the_pod_that_held_it_at_that_time() -> None:
    timeline = IpTimeline.from_records(RECORDS)
    assert timeline.lookup("10.0.0.5", 99) is None
    assert timeline.lookup("10.0.0.5", 150).pod == "checkout-a"
    assert timeline.lookup("10.0.0.5", 250) is None          # between delete and reuse
    held = timeline.lookup("10.0.0.5", 301)
    assert (held.namespace, held.pod, held.workload) == ("pay", "payments-b", "payments")
    assert timeline.lookup("10.0.0.9", 1).pod == "db-0"       # SYNC reaches back
    assert timeline.lookup("10.9.9.9", 150) is None


def test_enrich_fills_both_sides_and_leaves_unknown_ips_null() -> None:
    table = pa.table({"ts_ns": [150, 350], "src_ip": ["10.0.0.5", "10.0.0.5"], "dst_ip": ["10.0.0.9", "1.1.1.1"],
                      "src_namespace": pa.array([None, None], pa.string()),
                      "src_pod": pa.array([None, None], pa.string()),
                      "dst_pod": pa.array([None, None], pa.string())})
    out = enrich(table, IpTimeline.from_records(RECORDS)).to_pydict()
    assert out["src_pod"] == ["checkout-a", "payments-b"]
    assert out["src_namespace"] == ["shop", "pay"]
    assert out["dst_pod"] == ["db-0", None]
