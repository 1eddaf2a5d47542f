"""Kubernetes enrichment: every traffic row's src/dst namespace, pod and workload, resolved by IP *at the row's time*.

Pod IPs are reused, so the lookup is a timeline per IP built from the incident's preserved context records
(`freezeframe.k8s-pod/v1`): an assignment starts at the record that shows the IP on a pod and ends at the record that
shows the pod deleted (or its IP gone) or the IP on another pod. A pod first seen in a re-list snapshot (SYNC) or as
MODIFIED was already running before the record, so its assignment reaches back to the start of the timeline;
an ADDED one starts at its record. A row whose IP is not known at its time stays null: a wrong pod is worse than none.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from freezeframe.contracts.models import K8S_POD_SCHEMA as POD_SCHEMA

ENRICHED = ("namespace", "pod", "workload")
_BEGINNING = -(2**63)


@dataclass(frozen=True, slots=True)
class Assignment:
    start_ns: int
    end_ns: int | None
    namespace: str
    pod: str
    workload: str | None


@dataclass(slots=True)
class IpTimeline:
    _by_ip: dict[str, list[Assignment]] = field(default_factory=dict)

    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, Any]]) -> IpTimeline:
        pods = sorted((r for r in records if r.get("schema") == POD_SCHEMA), key=lambda r: int(r["observed_ns"]))
        open_: dict[str, tuple[int, Mapping[str, Any]]] = {}  # ip -> (start, record)
        closed: dict[str, list[Assignment]] = {}

        def close(ip: str, at: int) -> None:
            start, record = open_.pop(ip)
            closed.setdefault(ip, []).append(_assignment(start, at, record))

        for record in pods:
            at = int(record["observed_ns"])
            ips = [] if record.get("change") == "DELETED" or record.get("host_network") else list(
                record.get("pod_ips") or [])
            for ip, (_, holder) in list(open_.items()):
                if holder.get("uid") == record.get("uid") and ip not in ips:
                    close(ip, at)  # this pod let the IP go
            for ip in ips:
                if ip in open_ and open_[ip][1].get("uid") == record.get("uid"):
                    open_[ip] = (open_[ip][0], record)  # same pod, fresher labels/workload
                    continue
                if ip in open_:
                    close(ip, at)  # reused by another pod
                first_sight = ip not in closed and record.get("change") in ("SYNC", "MODIFIED")
                open_[ip] = (_BEGINNING if first_sight else at, record)
        for ip, (start, record) in open_.items():
            closed.setdefault(ip, []).append(_assignment(start, None, record))
        return cls({ip: sorted(items, key=lambda a: a.start_ns) for ip, items in closed.items()})

    def lookup(self, ip: str | None, ts_ns: int) -> Assignment | None:
        items = self._by_ip.get(ip or "")
        if not items:
            return None
        index = bisect.bisect_right([a.start_ns for a in items], ts_ns) - 1
        if index < 0:
            return None
        found = items[index]
        return found if found.end_ns is None or ts_ns < found.end_ns else None


def enrich(table: pa.Table, timeline: IpTimeline) -> pa.Table:
    """The table with its src_/dst_ namespace, pod and workload columns filled where the IP is known."""
    if table.num_rows == 0 or not timeline._by_ip:
        return table
    ts = table.column("ts_ns").to_pylist()
    for side in ("src", "dst"):
        ips = table.column(f"{side}_ip").to_pylist()
        found = [timeline.lookup(ip, t) for ip, t in zip(ips, ts, strict=True)]
        for name in ENRICHED:
            column = f"{side}_{name}"
            if column not in table.column_names:
                continue
            values = [getattr(a, name) if a else None for a in found]
            position = table.column_names.index(column)
            table = table.set_column(position, table.schema.field(position), pa.array(values, pa.string()))
    return table


def _assignment(start: int, end: int | None, record: Mapping[str, Any]) -> Assignment:
    workload = record.get("workload_name")
    return Assignment(start, end, str(record.get("namespace")), str(record.get("pod")),
                      str(workload) if workload else None)
