"""Kubernetes context of an incident: the freezeframe.k8s records (pod IP <-> pod/workload changes, events) kept
beside the evidence and frozen with it.

The k8s indexer writes each Kafka batch as JSON lines, one object per (cluster, node, hour), to
`k8s/<cluster>/<YYYY>/<MM>/<DD>/<HH>/<node>/<partition>-<first offset>-<last offset>.jsonl` in the evidence bucket.
A freeze takes every such object from `lookback` before the window to its end, snapshots it under the incident
with the incident's lock, and lists it in the manifest under `k8s_context` with its sha256, with a root hash of its
own (`k8s_root_hash`).
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from freezeframe.adapters import s3 as s3io
from freezeframe.adapters.s3 import ObjectStore
from freezeframe.contracts.config import Settings
from freezeframe.contracts.documents import K8S_ENDPOINTSLICE_SCHEMA as ENDPOINTSLICE_SCHEMA
from freezeframe.contracts.documents import K8S_EVENT_SCHEMA as EVENT_SCHEMA
from freezeframe.contracts.documents import K8S_NODE_SCHEMA as NODE_SCHEMA
from freezeframe.contracts.documents import K8S_POD_SCHEMA as POD_SCHEMA
from freezeframe.contracts.documents import K8S_SERVICE_SCHEMA as SERVICE_SCHEMA
from freezeframe.contracts.keys import HOUR_NS, context_snapshot_key, k8s_batch_key, k8s_prefixes
from freezeframe.contracts.models import iso
from freezeframe.contracts.parallel import run_all

# The objects behind a ClusterIP (freezeframe.dissect.crosslayer): Services, EndpointSlices, and each agent's Node.
SCHEMAS = (POD_SCHEMA, EVENT_SCHEMA, SERVICE_SCHEMA, ENDPOINTSLICE_SCHEMA, NODE_SCHEMA)
DEFAULT_LOOKBACK_S = 3600
READ_WORKERS = 8  # context reads and snapshots in flight


@dataclass(frozen=True, slots=True)
class K8sRecord:
    """One freezeframe.k8s record with where it came from on Kafka."""

    partition: int
    offset: int
    value: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ContextEntry:
    bucket: str
    key: str
    version_id: str
    sha256: str
    size: int
    node: str
    lock_mode: str
    retain_until: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def group(records: Iterable[K8sRecord]) -> dict[tuple[str, str, int, int], list[K8sRecord]]:
    """Pure: by cluster, node, Kafka partition and hour of observation, each group in offset order."""
    groups: dict[tuple[str, str, int, int], list[K8sRecord]] = defaultdict(list)
    for record in records:
        value = record.value
        groups[(str(value["cluster"]), str(value["node"]), record.partition,
                int(value["observed_ns"]) // HOUR_NS)].append(record)
    return {k: sorted(v, key=lambda r: r.offset) for k, v in groups.items()}


def write_batch(settings: Settings, s3: ObjectStore, records: Iterable[K8sRecord]) -> list[str]:
    keys = []
    for (cluster, node, partition, _hour), items in group(records).items():
        key = k8s_batch_key(cluster, node, int(items[0].value["observed_ns"]), partition, items[0].offset,
                            items[-1].offset)
        body = "".join(json.dumps(dict(r.value), sort_keys=True) + "\n" for r in items).encode()
        s3io.put_bytes(s3, settings.evidence_bucket, key, body, content_type="application/x-ndjson")
        keys.append(key)
    return keys


def context_root_hash(entries: Iterable[ContextEntry]) -> str:
    digest = hashlib.sha256()
    for entry in sorted(entries, key=lambda e: (e.node, e.key, e.version_id)):
        digest.update(json.dumps(entry.to_dict(), sort_keys=True, separators=(",", ":")).encode() + b"\n")
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class ContextObject:
    """One stored batch of context records, read at a fixed version."""

    key: str
    version_id: str
    body: bytes

    @property
    def node(self) -> str:
        return self.key.split("/")[-2]


def read_window(settings: Settings, s3: ObjectStore, cluster: str, start_ns: int, end_ns: int,
                lookback_s: int = DEFAULT_LOOKBACK_S) -> list[ContextObject]:
    """Every node's context objects from `lookback_s` before the window to its end, each read once."""
    versions = [v for prefix in k8s_prefixes(cluster, start_ns - lookback_s * 1_000_000_000, end_ns)
                for v in s3io.list_versions(s3, settings.evidence_bucket, prefix)]
    return run_all(lambda v: ContextObject(
        v.key, v.version_id, s3io.get_bytes(s3, settings.evidence_bucket, v.key, v.version_id)), versions, READ_WORKERS)


def records_of(objects: Iterable[ContextObject]) -> list[dict[str, Any]]:
    return [json.loads(line) for obj in objects for line in obj.body.decode().splitlines() if line.strip()]


def preserve(settings: Settings, s3: ObjectStore, incident_id: str, objects: Iterable[ContextObject], mode: str,
             retain_until: datetime) -> list[ContextEntry]:
    """Snapshots the window's context objects into `incidents/<id>/k8s/`, written create-only with the incident's
    own lock, and returns their manifest entries.

    A copy, not an in-place lock: the originals carry the evidence bucket's default retention, and raising a
    GOVERNANCE default to COMPLIANCE would need governance bypass, which no function has.
    """

    def snapshot(obj: ContextObject) -> ContextEntry:
        key, body = context_snapshot_key(incident_id, obj.key), obj.body
        written = s3io.put_bytes(s3, settings.evidence_bucket, key, body, content_type="application/x-ndjson",
                                 create_only=True, lock=(mode, retain_until))
        if written is None:  # a retried freeze: the snapshot exists, and it is what the entry must describe
            head = s3io.head_latest(s3, settings.evidence_bucket, key)
            written, body = str(head["VersionId"]), s3io.get_bytes(s3, settings.evidence_bucket, key)
        return ContextEntry(settings.evidence_bucket, key, written, hashlib.sha256(body).hexdigest(), len(body),
                            obj.node, mode, iso(retain_until))

    return sorted(run_all(snapshot, objects, READ_WORKERS), key=lambda e: (e.node, e.key))


def nodes_in(records: Iterable[Mapping[str, Any]], namespaces: Iterable[str], pods: Iterable[str]) -> set[str]:
    """Pure: the nodes whose agents saw a pod of these namespaces (or these pods, by name)."""
    wanted_namespaces, wanted_pods = set(namespaces), set(pods)
    return {str(r["node"]) for r in records
            if r.get("schema") == POD_SCHEMA
            and (r.get("namespace") in wanted_namespaces or r.get("pod") in wanted_pods)}
