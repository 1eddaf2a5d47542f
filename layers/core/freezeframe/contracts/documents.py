"""The evidence documents: one frozen dataclass per document kind, its schema string (defined here and nowhere
else) and `to_dict` / `from_dict`. Pure: no I/O (freezeframe.custody.incident reads them from the store).

`from_dict` validates and raises PayloadError naming the document and the field; `to_dict` gives back exactly the
document the writers store (put_json sorts keys, so the stored bytes round-trip). Fields a kind has gained over time,
or that only some writers add, are kept in `extra` and written back unchanged, so a document written by any version
reads and re-encodes to its own bytes.

The records that cross process boundaries before an incident exists (segment records, freeze requests, manifest
entries) are in freezeframe.contracts.models; they are re-exported here so this module is the catalogue of every kind.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from typing import Any, ClassVar

from freezeframe.contracts.errors import PayloadError
from freezeframe.contracts.models import (
    FREEZE_SCHEMA,
    GAP_SCHEMA,
    K8S_ENDPOINTSLICE_SCHEMA,
    K8S_EVENT_SCHEMA,
    K8S_NODE_SCHEMA,
    K8S_POD_SCHEMA,
    K8S_SERVICE_SCHEMA,
    SEGMENT_SCHEMA,
    FreezeRequest,
    LockSpec,
    ManifestEntry,
    SegmentRecord,
    iso,
    parse_iso,
)

__all__ = [
    "DISSECT_CHUNK_SCHEMA", "DISSECT_PLAN_SCHEMA", "FREEZE_ATTEMPT_SCHEMA", "FREEZE_FAILED_SCHEMA",
    "LEGAL_HOLD_REFERENCE_SCHEMA", "LEGAL_HOLD_RELEASE_SCHEMA", "RESOLVED_SCHEMA", "SEGMENT_INDEX_SCHEMA",
    "FREEZE_STARTED_SCHEMA", "WEBHOOK_DELIVERY_SCHEMA", "ChunkItem", "ChunkStatus", "DissectPlan", "FreezeAttempt",
    "FreezeFailed", "FreezeStarted", "LegalHoldReference", "LegalHoldRelease", "Resolved", "SegmentIndexBatch",
    "WebhookDelivery",
    "DISSECT_STATUS_SCHEMA", "FREEZE_SCHEMA", "GAP_SCHEMA", "HOLD_SCHEMA", "INCIDENT_SCHEMA",
    "K8S_ENDPOINTSLICE_SCHEMA", "K8S_EVENT_SCHEMA", "K8S_NODE_SCHEMA", "K8S_POD_SCHEMA", "K8S_SERVICE_SCHEMA",
    "MANIFEST_SCHEMA", "NODE_STATE_SCHEMA", "SEGMENT_SCHEMA", "SUMMARY_SCHEMA", "DissectStatus", "FreezeRequest",
    "EventRecord", "GapRecord", "Hold", "IncidentRecord", "K8S_OBJECT_SCHEMAS", "Manifest", "ManifestEntry",
    "ManifestPart", "NodeStateEntry", "ObjectRecord", "PodRecord", "SegmentRecord", "Summary",
]

MANIFEST_SCHEMA = "freezeframe.manifest/v1"  # the manifest and each manifest part
INCIDENT_SCHEMA = "freezeframe.incident/v1"
HOLD_SCHEMA = "freezeframe.hold/v1"
DISSECT_STATUS_SCHEMA = "freezeframe.dissect-status/v1"
SUMMARY_SCHEMA = "freezeframe.incident-summary/v1"
NODE_STATE_SCHEMA = "freezeframe.node-state/v1"
# The Kubernetes context records (the agent's watch stream and the freeze's snapshots).
# The small records around an incident: a failing freeze, the close signal, legal-hold references, the segment
# index, the fanned-out dissection's plan and chunk statuses. Documents written before a kind had its schema string
# (resolved, legal-hold references) read without one.
FREEZE_ATTEMPT_SCHEMA = "freezeframe.freeze-attempt/v1"
FREEZE_FAILED_SCHEMA = "freezeframe.freeze-failed/v1"
RESOLVED_SCHEMA = "freezeframe.resolved/v1"
FREEZE_STARTED_SCHEMA = "freezeframe.freeze-started/v1"
WEBHOOK_DELIVERY_SCHEMA = "freezeframe.webhook-delivery/v1"
LEGAL_HOLD_REFERENCE_SCHEMA = "freezeframe.legal-hold-reference/v1"
LEGAL_HOLD_RELEASE_SCHEMA = "freezeframe.legal-hold-release/v1"
SEGMENT_INDEX_SCHEMA = "freezeframe.segment-index/v1"
DISSECT_PLAN_SCHEMA = "freezeframe.dissect-plan/v1"
FOLD_PLAN_SCHEMA = "freezeframe.dissect-fold/v1"  # the views' fold in hash buckets (freezeframe.dissect.foldshard)
DISSECT_CHUNK_SCHEMA = "freezeframe.dissect-chunk/v2"  # v2: body rows in chunk parts, edge rows, UDP pairs, warm-up


def _field(kind: str, raw: Mapping[str, Any], name: str, expected: type | tuple[type, ...]) -> Any:
    if name not in raw or raw[name] is None:
        raise PayloadError(f"{kind}: missing field {name!r}")
    value = raw[name]
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        names = expected.__name__ if isinstance(expected, type) else " or ".join(t.__name__ for t in expected)
        raise PayloadError(f"{kind}: field {name!r} must be {names}, got {type(value).__name__}")
    return value


def _schema(kind: str, raw: Mapping[str, Any], schema: str) -> None:
    if not isinstance(raw, Mapping):
        raise PayloadError(f"{kind}: not a JSON object")
    if raw.get("schema") != schema:
        raise PayloadError(f"{kind}: schema must be {schema!r}, got {raw.get('schema')!r}")


def _optional(kind: str, raw: Mapping[str, Any], defaults: Mapping[str, tuple[type, Any]]
              ) -> tuple[dict[str, Any], frozenset[str]]:
    """The optional fields of a kind older or hand-written documents leave out: each present one type-checked, each
    absent one its default, and the set of absent names (left out again by to_dict, so the bytes round-trip)."""
    values, absent = {}, set()
    for name, (expected, default) in defaults.items():
        if name in raw:
            values[name] = _field(kind, raw, name, expected)
        else:
            values[name] = default() if callable(default) else default
            absent.add(name)
    return values, frozenset(absent)


def _drop(document: dict[str, Any], absent: frozenset[str]) -> dict[str, Any]:
    for name in absent:
        document.pop(name, None)
    return document


def _extra(raw: Mapping[str, Any], known: tuple[str, ...]) -> dict[str, Any]:
    return {name: value for name, value in raw.items() if name not in known}


def _entries(kind: str, raw: Mapping[str, Any]) -> tuple[ManifestEntry, ...]:
    segments = _field(kind, raw, "segments", list)
    out = []
    for index, item in enumerate(segments):
        if not isinstance(item, Mapping):
            raise PayloadError(f"{kind}: segments[{index}] is not an object")
        try:
            out.append(ManifestEntry.from_dict(item))
        except PayloadError as exc:
            raise PayloadError(f"{kind}: segments[{index}]: {exc}") from exc
    return tuple(out)


def _entry_dicts(entries: tuple[ManifestEntry, ...], raw_segments: tuple[Mapping[str, Any], ...]) -> list[Any]:
    """Each entry as the writer stored it: the optional counters an older writer left out stay left out."""
    out = []
    for entry, raw in zip(entries, raw_segments, strict=True):
        item = entry.to_dict()
        for name in ("kernel_drops", "agent_drops"):
            if item[name] is None and name not in raw:
                del item[name]
        out.append(item)
    return out


def _request(kind: str, raw: Mapping[str, Any]) -> FreezeRequest:
    request = _field(kind, raw, "request", Mapping)
    try:
        return FreezeRequest.from_dict(request)
    except PayloadError as exc:
        raise PayloadError(f"{kind}: request: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Manifest:
    """incidents/<id>/manifest.json: what the freeze locked (segments, node state, Kubernetes context) and how much
    of the window it covers. `extra` carries the optional sections (k8s_context, node_state, unverified, ...)."""

    incident_id: str
    request: FreezeRequest
    raw_bucket: str
    segments: tuple[ManifestEntry, ...]
    coverage: Mapping[str, Any]
    root_hash: str
    tool_versions: Mapping[str, Any]
    created_at: str
    extra: Mapping[str, Any] = field(default_factory=dict)
    raw_segments: tuple[Mapping[str, Any], ...] = field(default=(), repr=False, compare=False)
    SCHEMA = MANIFEST_SCHEMA
    _KNOWN = ("schema", "incident_id", "request", "raw_bucket", "segments", "coverage", "root_hash", "tool_versions",
              "created_at")

    @property
    def hold(self) -> Hold | None:
        """The hold the freeze opened (None: the window was over, or a manifest from before holds)."""
        raw = self.extra.get("hold")
        return Hold.from_dict(raw) if raw else None

    @property
    def node_state(self) -> tuple[NodeStateEntry, ...]:
        """The frozen node-state documents (freezeframe.freeze.node_state), none in a manifest from before them."""
        return tuple(NodeStateEntry.from_dict(raw) for raw in self.extra.get("node_state") or ())

    def to_dict(self) -> dict[str, Any]:
        return {"schema": self.SCHEMA, "incident_id": self.incident_id, "request": self.request.to_dict(),
                "raw_bucket": self.raw_bucket,
                "segments": _entry_dicts(self.segments, self.raw_segments or tuple(e.to_dict() for e in self.segments)),
                "coverage": dict(self.coverage), "root_hash": self.root_hash,
                "tool_versions": dict(self.tool_versions), "created_at": self.created_at, **self.extra}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Manifest:
        kind = "manifest"
        _schema(kind, raw, cls.SCHEMA)
        if "part_of" in raw:
            raise PayloadError(f"{kind}: this is a manifest part (part_of {raw['part_of']!r}), not the manifest")
        return cls(incident_id=_field(kind, raw, "incident_id", str), request=_request(kind, raw),
                   raw_bucket=_field(kind, raw, "raw_bucket", str), segments=_entries(kind, raw),
                   coverage=_field(kind, raw, "coverage", Mapping), root_hash=_field(kind, raw, "root_hash", str),
                   tool_versions=_field(kind, raw, "tool_versions", Mapping),
                   created_at=_field(kind, raw, "created_at", str), extra=_extra(raw, cls._KNOWN),
                   raw_segments=tuple(raw["segments"]))


@dataclass(frozen=True, slots=True)
class ManifestPart:
    """incidents/<id>/manifest-parts/<node>-<seq>.json: one late segment a hold locked after the manifest (none,
    with the segment under `unverified` in `extra`, when it failed its checks)."""

    incident_id: str
    part_of: str
    raw_bucket: str
    segments: tuple[ManifestEntry, ...]
    root_hash: str
    created_at: str
    extra: Mapping[str, Any] = field(default_factory=dict)
    raw_segments: tuple[Mapping[str, Any], ...] = field(default=(), repr=False, compare=False)
    SCHEMA = MANIFEST_SCHEMA
    _KNOWN = ("schema", "incident_id", "part_of", "raw_bucket", "segments", "root_hash", "created_at")

    def to_dict(self) -> dict[str, Any]:
        return {"schema": self.SCHEMA, "incident_id": self.incident_id, "part_of": self.part_of,
                "raw_bucket": self.raw_bucket,
                "segments": _entry_dicts(self.segments, self.raw_segments or tuple(e.to_dict() for e in self.segments)),
                "root_hash": self.root_hash, "created_at": self.created_at, **self.extra}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ManifestPart:
        kind = "manifest part"
        _schema(kind, raw, cls.SCHEMA)
        return cls(incident_id=_field(kind, raw, "incident_id", str), part_of=_field(kind, raw, "part_of", str),
                   raw_bucket=_field(kind, raw, "raw_bucket", str), segments=_entries(kind, raw),
                   root_hash=_field(kind, raw, "root_hash", str), created_at=_field(kind, raw, "created_at", str),
                   extra=_extra(raw, cls._KNOWN), raw_segments=tuple(raw["segments"]))


@dataclass(frozen=True, slots=True)
class IncidentRecord:
    """incidents/<id>/incident.json: written create-only by intake (the idempotency record). `extra` carries what
    the intake path added (who requested a manual freeze). Only the request is required: a record written by hand
    (a test, an operator re-creating one) may leave out the rest."""

    request: FreezeRequest
    incident_id: str
    state: str = "accepted"
    created_at: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    absent: frozenset[str] = field(default=frozenset(), repr=False, compare=False)
    SCHEMA = INCIDENT_SCHEMA
    _KNOWN = ("schema", "incident_id", "state", "request", "created_at")
    _OPTIONAL: ClassVar[Mapping[str, tuple[type, Any]]] = {
        "schema": (str, INCIDENT_SCHEMA), "incident_id": (str, ""), "state": (str, "accepted"),
        "created_at": (str, None)}

    def to_dict(self) -> dict[str, Any]:
        return _drop({"schema": self.SCHEMA, "incident_id": self.incident_id, "state": self.state,
                      "request": self.request.to_dict(), "created_at": self.created_at, **self.extra}, self.absent)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> IncidentRecord:
        kind = "incident record"
        if not isinstance(raw, Mapping):
            raise PayloadError(f"{kind}: not a JSON object")
        values, absent = _optional(kind, raw, cls._OPTIONAL)
        if values.pop("schema") != cls.SCHEMA:
            raise PayloadError(f"{kind}: schema must be {cls.SCHEMA!r}, got {raw.get('schema')!r}")
        request = _request(kind, raw)
        return cls(request=request, incident_id=values.pop("incident_id") or request.incident_id, **values,
                   extra=_extra(raw, cls._KNOWN), absent=absent)


@dataclass(frozen=True, slots=True)
class Hold:
    """holds/<closing day>/<id>.json: an incident still taking late segments until `closes_at`."""

    incident_id: str
    cluster: str
    nodes: tuple[str, ...]
    window_start_ns: int
    window_end_ns: int
    closes_at: datetime
    lock: LockSpec
    SCHEMA = HOLD_SCHEMA

    def to_dict(self) -> dict[str, Any]:
        return {"schema": HOLD_SCHEMA, "incident_id": self.incident_id, "cluster": self.cluster,
                "nodes": list(self.nodes), "window_start_ns": self.window_start_ns,
                "window_end_ns": self.window_end_ns, "closes_at": iso(self.closes_at), "lock": self.lock.to_dict()}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Hold:
        kind = "hold"
        if not isinstance(raw, Mapping):
            raise PayloadError(f"{kind}: not a JSON object")
        if raw.get("schema", HOLD_SCHEMA) != HOLD_SCHEMA:
            raise PayloadError(f"{kind}: schema must be {HOLD_SCHEMA!r}, got {raw.get('schema')!r}")
        nodes = raw.get("nodes") or []
        if not isinstance(nodes, list) or not all(isinstance(n, str) for n in nodes):
            raise PayloadError(f"{kind}: field 'nodes' must be a list of strings")
        lock_raw = _field(kind, raw, "lock", Mapping)
        try:
            lock = LockSpec.from_dict(lock_raw)
        except PayloadError as exc:
            raise PayloadError(f"{kind}: lock: {exc}") from exc
        return cls(incident_id=_field(kind, raw, "incident_id", str), cluster=_field(kind, raw, "cluster", str),
                   nodes=tuple(nodes), window_start_ns=int(_field(kind, raw, "window_start_ns", (int, str))),
                   window_end_ns=int(_field(kind, raw, "window_end_ns", (int, str))),
                   closes_at=parse_iso(_field(kind, raw, "closes_at", str), "closes_at"), lock=lock)

    def covers(self, record: SegmentRecord) -> bool:
        """Pure: the segment belongs to this hold's cluster and nodes and overlaps its window."""
        return (record.cluster == self.cluster and (not self.nodes or record.node in self.nodes)
                and record.start_ns <= self.window_end_ns and record.end_ns >= self.window_start_ns)


@dataclass(frozen=True, slots=True)
class DissectStatus:
    """incidents/<id>/dissect/<node>.json: what one node's dissection read and wrote. `extra` carries what later
    writers add (inputs_digest, unverified_segments; the chunked path's holes and window_start_ns). Required: the
    incident, the node and the state; the counters default to empty in a status written by hand."""

    incident_id: str
    node: str
    state: str
    segments: int = 0
    tables: Mapping[str, int] = field(default_factory=dict)
    parts: Mapping[str, str] = field(default_factory=dict)
    corrupt_segments: tuple[Mapping[str, Any], ...] = ()
    stats: Mapping[str, Any] = field(default_factory=dict)
    finished_at: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)
    absent: frozenset[str] = field(default=frozenset(), repr=False, compare=False)
    SCHEMA = DISSECT_STATUS_SCHEMA
    _KNOWN = ("schema", "incident_id", "node", "state", "segments", "tables", "parts", "corrupt_segments", "stats",
              "finished_at")
    _OPTIONAL: ClassVar[Mapping[str, tuple[type, Any]]] = {
        "schema": (str, DISSECT_STATUS_SCHEMA), "segments": (int, 0), "tables": (Mapping, dict),
        "parts": (Mapping, dict), "corrupt_segments": (list, list), "stats": (Mapping, dict), "finished_at": (str, "")}

    @property
    def inputs_digest(self) -> str:
        """What the pass read (freezeframe.freeze.follow.inputs_digest); "" in a status written before it existed."""
        return str(self.extra.get("inputs_digest") or "")

    @property
    def unverified_segments(self) -> list[Mapping[str, Any]]:
        return list(self.extra.get("unverified_segments") or [])

    @property
    def engine(self) -> str:
        """Which engine made the tables: "native" (the compiled core), "python" (the reference engine), "mixed" (time
        chunks on both); "" in a status written before it was recorded."""
        return str(self.extra.get("engine") or "")

    def to_dict(self) -> dict[str, Any]:
        return _drop({"schema": self.SCHEMA, "incident_id": self.incident_id, "node": self.node, "state": self.state,
                      "segments": self.segments, "tables": dict(self.tables), "parts": dict(self.parts),
                      "corrupt_segments": [dict(c) for c in self.corrupt_segments], "stats": dict(self.stats),
                      "finished_at": self.finished_at, **self.extra}, self.absent)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> DissectStatus:
        kind = "dissect status"
        if not isinstance(raw, Mapping):
            raise PayloadError(f"{kind}: not a JSON object")
        values, absent = _optional(kind, raw, cls._OPTIONAL)
        if values.pop("schema") != cls.SCHEMA:
            raise PayloadError(f"{kind}: schema must be {cls.SCHEMA!r}, got {raw.get('schema')!r}")
        values["corrupt_segments"] = tuple(values["corrupt_segments"])
        return cls(incident_id=_field(kind, raw, "incident_id", str), node=_field(kind, raw, "node", str),
                   state=_field(kind, raw, "state", str), **values, extra=_extra(raw, cls._KNOWN), absent=absent)


@dataclass(frozen=True, slots=True)
class Summary:
    """incidents/<id>/summary.json: what finalize found per node, the rows per table, the report. `extra` carries
    view_rows, partial_until, follow and unverified."""

    incident_id: str
    state: str
    nodes: tuple[Mapping[str, Any], ...]
    rows: Mapping[str, int]
    parts: tuple[str, ...]
    partitions: tuple[Mapping[str, Any], ...]
    partitions_registered: tuple[Any, ...]
    report: Mapping[str, Any]
    finished_at: str
    extra: Mapping[str, Any] = field(default_factory=dict)
    SCHEMA = SUMMARY_SCHEMA
    _KNOWN = ("schema", "incident_id", "state", "nodes", "rows", "parts", "partitions", "partitions_registered",
              "report", "finished_at")

    def to_dict(self) -> dict[str, Any]:
        return {"schema": self.SCHEMA, "incident_id": self.incident_id, "state": self.state,
                "nodes": [dict(n) for n in self.nodes], "rows": dict(self.rows), "parts": list(self.parts),
                "partitions": [dict(p) for p in self.partitions],
                "partitions_registered": list(self.partitions_registered), "report": dict(self.report),
                "finished_at": self.finished_at, **self.extra}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Summary:
        kind = "incident summary"
        _schema(kind, raw, cls.SCHEMA)
        return cls(incident_id=_field(kind, raw, "incident_id", str), state=_field(kind, raw, "state", str),
                   nodes=tuple(_field(kind, raw, "nodes", list)), rows=_field(kind, raw, "rows", Mapping),
                   parts=tuple(_field(kind, raw, "parts", list)),
                   partitions=tuple(_field(kind, raw, "partitions", list)),
                   partitions_registered=tuple(_field(kind, raw, "partitions_registered", list)),
                   report=_field(kind, raw, "report", Mapping), finished_at=_field(kind, raw, "finished_at", str),
                   extra=_extra(raw, cls._KNOWN))


# A node-state document is locked and verified like a segment, so its manifest entry is a ManifestEntry without
# the fields only a capture segment has.
SEGMENT_ONLY_FIELDS = ("seq", "packets", "legal_hold", "kernel_drops", "agent_drops", "lock_outcome")
NODE_STATE_ENTRY_FIELDS = tuple(f.name for f in fields(ManifestEntry) if f.name not in SEGMENT_ONLY_FIELDS)


@dataclass(frozen=True, slots=True)
class NodeStateEntry(ManifestEntry):
    """A frozen node-state document as the manifest lists it (under `node_state`): ManifestEntry's fields, of which
    the document carries NODE_STATE_ENTRY_FIELDS (key, version_id, sha256, size, node, start_ns, end_ns, lock_mode,
    retain_until); the segment-only ones are None (False for legal_hold) and never written."""

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in NODE_STATE_ENTRY_FIELDS}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> NodeStateEntry:
        if not isinstance(raw, Mapping):
            raise PayloadError("malformed node_state entry: not a JSON object")
        try:
            entry = ManifestEntry.from_dict({name: raw.get(name) for name in NODE_STATE_ENTRY_FIELDS})
        except PayloadError as exc:
            raise PayloadError(f"malformed node_state entry: {exc}") from exc
        return cls.of(entry)

    @classmethod
    def of(cls, entry: ManifestEntry) -> NodeStateEntry:
        """The node-state entry of a locked version (its segment-only fields dropped)."""
        return cls(**{name: getattr(entry, name) for name in NODE_STATE_ENTRY_FIELDS}, seq=None, packets=None,
                   legal_hold=False)

    def as_manifest_entry(self) -> ManifestEntry:
        """The segment-shaped entry verify checks (present, sha256, lock, latest)."""
        return ManifestEntry(**{f.name: getattr(self, f.name) for f in fields(ManifestEntry)})


@dataclass(frozen=True, slots=True)
class GapRecord:
    """Segments that were spooled (so they hold seqs) but will never be uploaded, published on the segments topic
    beside the segment records so consumers can tell a reported loss from a silent one."""

    cluster: str
    node: str
    first_seq: int
    last_seq: int
    start_ns: int
    end_ns: int
    segments: int
    packets: int
    bytes: int
    stored_bytes: int
    kernel_drops: int
    agent_drops: int
    reason: str  # spool_full | spool_corrupt | key_conflict
    observed_ns: int
    schema: str = GAP_SCHEMA

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> GapRecord:
        if raw.get("schema") != GAP_SCHEMA:
            raise PayloadError(f"gap record schema must be {GAP_SCHEMA!r}, got {raw.get('schema')!r}")
        values: dict[str, Any] = {}
        for name in ("cluster", "node", "reason"):
            if not isinstance(raw.get(name), str):
                raise PayloadError(f"gap record field {name!r} must be a string")
            values[name] = raw[name]
        for name in ("first_seq", "last_seq", "start_ns", "end_ns", "segments", "packets", "bytes", "stored_bytes",
                     "kernel_drops", "agent_drops", "observed_ns"):
            if not isinstance(raw.get(name), int):
                raise PayloadError(f"gap record field {name!r} must be an integer")
            values[name] = raw[name]
        return cls(**values)

    @classmethod
    def covering(cls, metas: list[Mapping[str, Any]], reason: str, observed_ns: int) -> GapRecord:
        """The gap record of consecutive segments, from their sidecars."""
        return cls(cluster=metas[0]["cluster"], node=metas[0]["node"], first_seq=metas[0]["seq"],
                   last_seq=metas[-1]["seq"], start_ns=min(m["start_ns"] for m in metas),
                   end_ns=max(m["end_ns"] for m in metas), segments=len(metas),
                   packets=sum(m["packets"] for m in metas), bytes=sum(m["bytes"] for m in metas),
                   stored_bytes=sum(m["stored_bytes"] for m in metas),
                   kernel_drops=sum(m["kernel_drops"] for m in metas),
                   agent_drops=sum(m["agent_drops"] for m in metas), reason=reason, observed_ns=observed_ns)


# -- the Kubernetes context records (the agent's watch stream; the freeze snapshots them under the incident) -------

K8S_OBJECT_SCHEMAS = (K8S_SERVICE_SCHEMA, K8S_ENDPOINTSLICE_SCHEMA, K8S_NODE_SCHEMA)


def _strs(kind: str, raw: Mapping[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    return {name: _field(kind, raw, name, str) for name in names}


def _maybe(kind: str, raw: Mapping[str, Any], names: Mapping[str, type]) -> dict[str, Any]:
    """Nullable fields: present and null, or of their type; a missing one is an error like any other."""
    if missing := [name for name in names if name not in raw]:
        raise PayloadError(f"{kind}: missing field {missing[0]!r}")
    return {name: None if raw[name] is None else _field(kind, raw, name, expected)
            for name, expected in names.items()}


@dataclass(frozen=True, slots=True)
class PodRecord:
    """One observation of a pod of this node: its IPs and workload from `observed_ns` on, until a later record."""

    cluster: str
    node: str
    observed_ns: int
    change: str  # ADDED | MODIFIED | DELETED | SYNC
    namespace: str
    pod: str
    uid: str
    pod_ips: tuple[str, ...]  # every status.podIPs entry (IPv4 and IPv6); the node's IPs when host_network
    host_ip: str | None
    host_network: bool
    workload_kind: str  # Deployment | StatefulSet | DaemonSet | CronJob | Job | ReplicaSet | StaticPod | Pod | ...
    workload_name: str
    labels: dict[str, str]
    phase: str | None
    resource_version: str | None
    # Set on SYNC records and on the DELETED records a re-list infers: the list's resourceVersion and item count,
    # so a consumer knows when it has seen the whole snapshot.
    snapshot_rv: str | None = None
    snapshot_size: int | None = None
    schema: str = K8S_POD_SCHEMA

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["pod_ips"] = list(self.pod_ips)
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> PodRecord:
        kind = "pod record"
        _schema(kind, raw, K8S_POD_SCHEMA)
        ips = _field(kind, raw, "pod_ips", list)
        labels = _field(kind, raw, "labels", Mapping)
        if not all(isinstance(ip, str) for ip in ips):
            raise PayloadError(f"{kind}: field 'pod_ips' must be a list of strings")
        return cls(**_strs(kind, raw, ("cluster", "node", "change", "namespace", "pod", "uid", "workload_kind",
                                       "workload_name")),
                   **_maybe(kind, raw, {"host_ip": str, "phase": str, "resource_version": str, "snapshot_rv": str,
                                        "snapshot_size": int}),
                   observed_ns=_field(kind, raw, "observed_ns", int), pod_ips=tuple(ips),
                   host_network=_field(kind, raw, "host_network", bool), labels=dict(labels))

    def same_state(self, other: PodRecord) -> bool:
        """Whether nothing an IP -> pod resolution uses changed (a probe's condition flip, say)."""
        return (self.pod_ips, self.host_ip, self.host_network, self.workload_kind, self.workload_name, self.labels,
                self.phase) == (other.pod_ips, other.host_ip, other.host_network, other.workload_kind,
                                other.workload_name, other.labels, other.phase)


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One Kubernetes event (core/v1 view, which also holds the events written through events.k8s.io/v1)."""

    cluster: str
    node: str  # the agent that observed it
    observed_ns: int
    change: str  # ADDED | MODIFIED | SYNC
    namespace: str
    name: str
    uid: str
    involved_kind: str | None
    involved_namespace: str | None
    involved_name: str | None
    involved_uid: str | None
    reason: str | None
    type: str | None  # Normal | Warning
    message: str | None
    count: int
    first_ns: int | None
    last_ns: int | None
    reporting_component: str | None
    reporting_instance: str | None
    resource_version: str | None
    schema: str = K8S_EVENT_SCHEMA

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> EventRecord:
        kind = "event record"
        _schema(kind, raw, K8S_EVENT_SCHEMA)
        return cls(**_strs(kind, raw, ("cluster", "node", "change", "namespace", "name", "uid")),
                   **_maybe(kind, raw, {"involved_kind": str, "involved_namespace": str, "involved_name": str,
                                        "involved_uid": str, "reason": str, "type": str, "message": str,
                                        "first_ns": int, "last_ns": int, "reporting_component": str,
                                        "reporting_instance": str, "resource_version": str}),
                   observed_ns=_field(kind, raw, "observed_ns", int), count=_field(kind, raw, "count", int))


@dataclass(frozen=True, slots=True)
class ObjectRecord:
    """One observation of a Service, EndpointSlice or Node. `state` holds the fields of its kind (see the
    builders below); consumers deduplicate on (schema, uid, resource_version, change)."""

    schema: str
    cluster: str
    node: str  # the agent that observed it
    observed_ns: int
    change: str  # ADDED | MODIFIED | DELETED | SYNC
    namespace: str  # "" for Nodes
    name: str
    uid: str
    resource_version: str | None
    state: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        state = out.pop("state")
        return {**state, **out}

    def same_state(self, other: ObjectRecord) -> bool:
        return self.schema == other.schema and dict(self.state) == dict(other.state)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ObjectRecord:
        kind = "object record"
        if not isinstance(raw, Mapping):
            raise PayloadError(f"{kind}: not a JSON object")
        if raw.get("schema") not in K8S_OBJECT_SCHEMAS:
            raise PayloadError(f"{kind}: schema must be one of {K8S_OBJECT_SCHEMAS}, got {raw.get('schema')!r}")
        base = ("schema", "cluster", "node", "change", "namespace", "name", "uid")
        return cls(**_strs(kind, raw, base), **_maybe(kind, raw, {"resource_version": str}),
                   observed_ns=_field(kind, raw, "observed_ns", int),
                   state={name: value for name, value in raw.items()
                          if name not in (*base, "resource_version", "observed_ns")})


# -- the small records around an incident ---------------------------------------------------------------------------


def _iso_field(kind: str, raw: Mapping[str, Any], name: str) -> str:
    """A required ISO 8601 timestamp, kept as written (so the bytes round-trip) once it parses."""
    value: str = _field(kind, raw, name, str)
    try:
        parse_iso(value, name)
    except PayloadError as exc:
        raise PayloadError(f"{kind}: {exc}") from exc
    return value


def _unschemed(kind: str, raw: Mapping[str, Any], schema: str) -> frozenset[str]:
    """A kind whose older documents carry no schema string: one present must be the kind's. Returns {'schema'} when
    it is absent (to_dict leaves it out again)."""
    if not isinstance(raw, Mapping):
        raise PayloadError(f"{kind}: not a JSON object")
    values, absent = _optional(kind, raw, {"schema": (str, schema)})
    if values["schema"] != schema:
        raise PayloadError(f"{kind}: schema must be {schema!r}, got {raw.get('schema')!r}")
    return absent


@dataclass(frozen=True, slots=True)
class FreezeAttempt:
    """incidents/<id>/freeze-attempts/<n>.json: one failed freeze attempt (freezeframe.freeze.lifecycle), written
    create-only; the attempts counted so far decide when the freeze has failed for good."""

    incident_id: str
    attempt: int  # 1 for the first failed attempt; also the key's number
    error: str  # "<exception class>: <message>", cut to freezeframe.freeze.lifecycle.MAX_ERROR_CHARS
    at: str  # when the attempt failed (ISO 8601, UTC)
    extra: Mapping[str, Any] = field(default_factory=dict)
    SCHEMA = FREEZE_ATTEMPT_SCHEMA
    _KNOWN = ("schema", "incident_id", "attempt", "error", "at")

    def to_dict(self) -> dict[str, Any]:
        return {"schema": self.SCHEMA, "incident_id": self.incident_id, "attempt": self.attempt, "error": self.error,
                "at": self.at, **self.extra}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> FreezeAttempt:
        kind = "freeze attempt"
        _schema(kind, raw, cls.SCHEMA)
        return cls(incident_id=_field(kind, raw, "incident_id", str), attempt=_field(kind, raw, "attempt", int),
                   error=_field(kind, raw, "error", str), at=_iso_field(kind, raw, "at"), extra=_extra(raw, cls._KNOWN))


@dataclass(frozen=True, slots=True)
class FreezeFailed:
    """incidents/<id>/freeze-failed.json: the freeze failed for good (its last allowed attempt failed); the incident
    API shows state "failed" with this error until a later freeze writes the manifest."""

    incident_id: str
    error: str  # the last attempt's error, as in FreezeAttempt
    attempts: int  # how many attempts failed
    failed_at: str  # ISO 8601, UTC
    state: str = "failed"
    extra: Mapping[str, Any] = field(default_factory=dict)
    SCHEMA = FREEZE_FAILED_SCHEMA
    _KNOWN = ("schema", "incident_id", "state", "error", "attempts", "failed_at")

    def to_dict(self) -> dict[str, Any]:
        return {"schema": self.SCHEMA, "incident_id": self.incident_id, "state": self.state, "error": self.error,
                "attempts": self.attempts, "failed_at": self.failed_at, **self.extra}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> FreezeFailed:
        kind = "freeze failure"
        _schema(kind, raw, cls.SCHEMA)
        return cls(incident_id=_field(kind, raw, "incident_id", str), error=_field(kind, raw, "error", str),
                   attempts=_field(kind, raw, "attempts", int), failed_at=_iso_field(kind, raw, "failed_at"),
                   state=_field(kind, raw, "state", str), extra=_extra(raw, cls._KNOWN))


@dataclass(frozen=True, slots=True)
class Resolved:
    """incidents/<id>/resolved.json: the alert was resolved (PagerDuty's incident.resolved); closes the incident's
    open hold at `resolved_at` if that is before the hold's own close time (freezeframe.freeze.follow)."""

    incident_id: str
    resolved_at: str  # ISO 8601, UTC
    extra: Mapping[str, Any] = field(default_factory=dict)
    absent: frozenset[str] = field(default=frozenset(), repr=False, compare=False)
    SCHEMA = RESOLVED_SCHEMA
    _KNOWN = ("schema", "incident_id", "resolved_at")

    @property
    def at(self) -> datetime:
        return parse_iso(self.resolved_at, "resolved_at")

    def to_dict(self) -> dict[str, Any]:
        return _drop({"schema": self.SCHEMA, "incident_id": self.incident_id, "resolved_at": self.resolved_at,
                      **self.extra}, self.absent)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Resolved:
        kind = "resolved record"
        absent = _unschemed(kind, raw, cls.SCHEMA)
        return cls(incident_id=_field(kind, raw, "incident_id", str),
                   resolved_at=_iso_field(kind, raw, "resolved_at"), extra=_extra(raw, cls._KNOWN), absent=absent)


@dataclass(frozen=True, slots=True)
class FreezeStarted:
    """incidents/<id>/freeze-started.json: intake handed the incident's freeze off (create-only, after the hand-off);
    a duplicate alert finding the incident record without it, after a grace period, hands it off again."""

    incident_id: str
    at: str  # ISO 8601, UTC
    extra: Mapping[str, Any] = field(default_factory=dict)
    absent: frozenset[str] = field(default=frozenset(), repr=False, compare=False)
    SCHEMA = FREEZE_STARTED_SCHEMA
    _KNOWN = ("schema", "incident_id", "at")

    def to_dict(self) -> dict[str, Any]:
        return _drop({"schema": self.SCHEMA, "incident_id": self.incident_id, "at": self.at, **self.extra},
                     self.absent)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> FreezeStarted:
        kind = "freeze-started record"
        absent = _unschemed(kind, raw, cls.SCHEMA)
        return cls(incident_id=_field(kind, raw, "incident_id", str), at=_iso_field(kind, raw, "at"),
                   extra=_extra(raw, cls._KNOWN), absent=absent)


@dataclass(frozen=True, slots=True)
class WebhookDelivery:
    """incidents/_deliveries/<source>/<digest>.json: a webhook delivery seen (keys.webhook_delivery_key), and what
    intake did with it; a redelivery with the same id finds it and acts no more."""

    event_id: str
    delivery: str  # the sender's delivery id (PagerDuty's X-Webhook-Id), "" when it sent none
    event_type: str
    at: str  # ISO 8601, UTC
    accepted: tuple[str, ...] = ()  # incidents the delivery created
    duplicates: tuple[str, ...] = ()
    resolved: tuple[str, ...] = ()
    truncated_alerts: int = 0
    ignored: tuple[str, ...] = ()  # event types intake does not act on
    extra: Mapping[str, Any] = field(default_factory=dict)
    absent: frozenset[str] = field(default=frozenset(), repr=False, compare=False)
    SCHEMA = WEBHOOK_DELIVERY_SCHEMA
    _KNOWN = ("schema", "event_id", "delivery", "event_type", "at", "accepted", "duplicates", "resolved",
              "truncated_alerts", "ignored")

    def to_dict(self) -> dict[str, Any]:
        return _drop({"schema": self.SCHEMA, "event_id": self.event_id, "delivery": self.delivery,
                      "event_type": self.event_type, "at": self.at, "accepted": list(self.accepted),
                      "duplicates": list(self.duplicates), "resolved": list(self.resolved),
                      "truncated_alerts": self.truncated_alerts, "ignored": list(self.ignored), **self.extra},
                     self.absent)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> WebhookDelivery:
        kind = "webhook delivery"
        absent = _unschemed(kind, raw, cls.SCHEMA)
        lists: dict[str, Any] = {}
        for name in ("accepted", "duplicates", "resolved", "ignored"):
            items = _field(kind, raw, name, list)
            if not all(isinstance(item, str) for item in items):
                raise PayloadError(f"{kind}: field {name!r} must be a list of strings")
            lists[name] = tuple(items)
        return cls(**_strs(kind, raw, ("event_id", "delivery", "event_type")), at=_iso_field(kind, raw, "at"),
                   **lists, truncated_alerts=_field(kind, raw, "truncated_alerts", int),
                   extra=_extra(raw, cls._KNOWN), absent=absent)


@dataclass(frozen=True, slots=True)
class LegalHoldReference:
    """legal-holds/<version digest>/<incident>.json: an incident holds this segment version under legal hold
    (freezeframe.freeze.legal_hold); written create-only before the flag is turned on."""

    incident_id: str
    bucket: str
    key: str
    version_id: str
    placed_at: str  # ISO 8601, UTC
    extra: Mapping[str, Any] = field(default_factory=dict)
    absent: frozenset[str] = field(default=frozenset(), repr=False, compare=False)
    SCHEMA = LEGAL_HOLD_REFERENCE_SCHEMA
    _KNOWN = ("schema", "incident_id", "bucket", "key", "version_id", "placed_at")

    def to_dict(self) -> dict[str, Any]:
        return _drop({"schema": self.SCHEMA, "incident_id": self.incident_id, "bucket": self.bucket, "key": self.key,
                      "version_id": self.version_id, "placed_at": self.placed_at, **self.extra}, self.absent)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> LegalHoldReference:
        kind = "legal-hold reference"
        absent = _unschemed(kind, raw, cls.SCHEMA)
        return cls(**_strs(kind, raw, ("incident_id", "bucket", "key", "version_id")),
                   placed_at=_iso_field(kind, raw, "placed_at"), extra=_extra(raw, cls._KNOWN), absent=absent)


@dataclass(frozen=True, slots=True)
class LegalHoldRelease:
    """legal-holds/<version digest>/<incident>.released.json: the incident released its reference (create-only beside
    it; the reference stays). The flag goes off when no reference is left unreleased."""

    incident_id: str
    released_at: str  # ISO 8601, UTC
    extra: Mapping[str, Any] = field(default_factory=dict)
    absent: frozenset[str] = field(default=frozenset(), repr=False, compare=False)
    SCHEMA = LEGAL_HOLD_RELEASE_SCHEMA
    _KNOWN = ("schema", "incident_id", "released_at")

    def to_dict(self) -> dict[str, Any]:
        return _drop({"schema": self.SCHEMA, "incident_id": self.incident_id, "released_at": self.released_at,
                      **self.extra}, self.absent)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> LegalHoldRelease:
        kind = "legal-hold release"
        absent = _unschemed(kind, raw, cls.SCHEMA)
        return cls(incident_id=_field(kind, raw, "incident_id", str),
                   released_at=_iso_field(kind, raw, "released_at"), extra=_extra(raw, cls._KNOWN), absent=absent)


@dataclass(frozen=True, slots=True)
class SegmentIndexBatch:
    """index/<cluster>/<hour>/<node>/...json: segment records the indexer saw on Kafka (freezeframe.freeze.
    segment_index), or one agent gap record (then `records` is empty). The gap records are kept as the agent sent
    them (the freeze's coverage reads them; a malformed one must not hide the others), and `gaps` is left out of
    the document when there are none, as the indexer writes record batches."""

    records: tuple[SegmentRecord, ...]
    gaps: tuple[Mapping[str, Any], ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)
    SCHEMA = SEGMENT_INDEX_SCHEMA
    _KNOWN = ("schema", "records", "gaps")

    def to_dict(self) -> dict[str, Any]:
        return {"schema": self.SCHEMA, "records": [r.to_dict() for r in self.records],
                **({"gaps": [dict(g) for g in self.gaps]} if self.gaps else {}), **self.extra}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> SegmentIndexBatch:
        kind = "segment index batch"
        _schema(kind, raw, cls.SCHEMA)
        records = []
        for index, item in enumerate(_field(kind, raw, "records", list)):
            if not isinstance(item, Mapping):
                raise PayloadError(f"{kind}: records[{index}] is not an object")
            try:
                records.append(SegmentRecord.from_dict(item))
            except PayloadError as exc:
                raise PayloadError(f"{kind}: records[{index}]: {exc}") from exc
        gaps = _field(kind, raw, "gaps", list) if "gaps" in raw else []
        if not all(isinstance(gap, Mapping) for gap in gaps):
            raise PayloadError(f"{kind}: field 'gaps' must be a list of objects")
        return cls(records=tuple(records), gaps=tuple(gaps), extra=_extra(raw, cls._KNOWN))


# -- the fanned-out dissection (freezeframe.dissect.fanout) -----------------------------------------------------------


def _bool(kind: str, raw: Mapping[str, Any], name: str) -> bool:
    value: bool = _field(kind, raw, name, bool)
    return value


@dataclass(frozen=True, slots=True)
class ChunkItem:
    """One (node, time chunk) task, an item of incidents/<id>/dissect/_plan/items.json: the Distributed Map reads the
    list and hands each item to the chunk task as its event, so an item carries no schema string (the state
    machine's ItemReader fixes the list's shape). Packets with start_ns <= ts < end_ns, TCP state from
    warmup_start_ns; the node's first chunk is open at its start, its last at its end."""

    incident_id: str
    node: str
    chunk: int  # the chunk's index among the node's chunks
    start_ns: int
    end_ns: int
    warmup_start_ns: int
    open_start: bool
    open_end: bool
    inputs_digest: str | None = None  # what the plan read (freezeframe.freeze.follow.inputs_digest)
    extra: Mapping[str, Any] = field(default_factory=dict)
    _KNOWN = ("incident_id", "node", "chunk", "start_ns", "end_ns", "warmup_start_ns", "open_start", "open_end",
              "inputs_digest")

    def to_dict(self) -> dict[str, Any]:
        return {"incident_id": self.incident_id, "node": self.node, "chunk": self.chunk, "start_ns": self.start_ns,
                "end_ns": self.end_ns, "warmup_start_ns": self.warmup_start_ns, "open_start": self.open_start,
                "open_end": self.open_end,
                **({"inputs_digest": self.inputs_digest} if self.inputs_digest is not None else {}), **self.extra}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ChunkItem:
        kind = "chunk item"
        if not isinstance(raw, Mapping):
            raise PayloadError(f"{kind}: not a JSON object")
        item = cls(incident_id=_field(kind, raw, "incident_id", str), node=_field(kind, raw, "node", str),
                   chunk=_field(kind, raw, "chunk", int), start_ns=_field(kind, raw, "start_ns", int),
                   end_ns=_field(kind, raw, "end_ns", int), warmup_start_ns=_field(kind, raw, "warmup_start_ns", int),
                   open_start=_bool(kind, raw, "open_start"), open_end=_bool(kind, raw, "open_end"),
                   inputs_digest=_field(kind, raw, "inputs_digest", str) if "inputs_digest" in raw else None,
                   extra=_extra(raw, cls._KNOWN))
        if not item.warmup_start_ns <= item.start_ns < item.end_ns or item.chunk < 0:
            raise PayloadError(f"{kind}: chunk {item.chunk} of {item.node}: needs a chunk index >= 0 and "
                               f"warmup_start_ns <= start_ns < end_ns")
        return item


@dataclass(frozen=True, slots=True)
class DissectPlan:
    """incidents/<id>/dissect/_plan/nodes.json: what a pass planned, per node (each chunk's estimate, see
    freezeframe.dissect.plan.PlannedChunk.to_dict), and the nodes left alone because their inputs did not change."""

    incident_id: str
    chunks: Mapping[str, Sequence[Mapping[str, Any]]]  # node -> its planned chunks
    unchanged: tuple[str, ...]
    extra: Mapping[str, Any] = field(default_factory=dict)
    SCHEMA = DISSECT_PLAN_SCHEMA
    _KNOWN = ("schema", "incident_id", "chunks", "unchanged")

    def to_dict(self) -> dict[str, Any]:
        return {"schema": self.SCHEMA, "incident_id": self.incident_id,
                "chunks": {node: [dict(c) for c in chunks] for node, chunks in self.chunks.items()},
                "unchanged": list(self.unchanged), **self.extra}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> DissectPlan:
        kind = "dissect plan"
        _schema(kind, raw, cls.SCHEMA)
        chunks = _field(kind, raw, "chunks", Mapping)
        for node, planned in chunks.items():
            if not isinstance(planned, list) or not all(isinstance(c, Mapping) for c in planned):
                raise PayloadError(f"{kind}: chunks[{node!r}] must be a list of objects")
        unchanged = _field(kind, raw, "unchanged", list)
        if not all(isinstance(node, str) for node in unchanged):
            raise PayloadError(f"{kind}: field 'unchanged' must be a list of strings")
        return cls(incident_id=_field(kind, raw, "incident_id", str), chunks=dict(chunks), unchanged=tuple(unchanged),
                   extra=_extra(raw, cls._KNOWN))


@dataclass(frozen=True, slots=True)
class FoldPlan:
    """incidents/<id>/dissect/_plan/fold.json: one pass's fold of the views in hash buckets of endpoint pairs
    (freezeframe.dissect.foldshard), written by plan-fold, read by the fold tasks and finalize."""

    incident_id: str
    run: str  # this fold's id: its results and phase-1 objects are named by it (keys.fold_run_prefix)
    buckets: int  # B, the fold tasks; 1: nothing routed, finalize folds in-process
    day: str | None  # the views' dt: the earliest of the parts' (None without parts)
    flows: bool  # the incident has service_flows rows: phase 2 runs
    statuses: Mapping[str, str]  # node -> digest of the dissect status the plan was made from (foldshard.status_digest)
    sources: tuple[Mapping[str, str], ...]  # the routed objects: {"node", "source", "key"}
    rows: Mapping[str, int] = field(default_factory=dict)  # input rows per routed table, over every node
    # T, phase 2's tasks: task t re-points the flows whose backend connection is in a bucket b with b mod T == t
    # (absent in a plan written before: one per bucket)
    flow_tasks: int = 1
    extra: Mapping[str, Any] = field(default_factory=dict)
    SCHEMA = FOLD_PLAN_SCHEMA
    _KNOWN = ("schema", "incident_id", "run", "buckets", "day", "flows", "statuses", "sources", "rows", "flow_tasks")

    def to_dict(self) -> dict[str, Any]:
        return {"schema": self.SCHEMA, "incident_id": self.incident_id, "run": self.run, "buckets": self.buckets,
                "day": self.day, "flows": self.flows, "statuses": dict(self.statuses),
                "sources": [dict(source) for source in self.sources], "rows": dict(self.rows),
                "flow_tasks": self.flow_tasks, **self.extra}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> FoldPlan:
        kind = "fold plan"
        _schema(kind, raw, cls.SCHEMA)
        buckets = _field(kind, raw, "buckets", int)
        if buckets < 1:
            raise PayloadError(f"{kind}: buckets must be at least 1, got {buckets}")
        day = raw.get("day")
        if day is not None and not isinstance(day, str):
            raise PayloadError(f"{kind}: field 'day' must be str or null")
        sources = _field(kind, raw, "sources", list)
        if not all(isinstance(s, Mapping) and all(isinstance(s.get(k), str) for k in ("node", "source", "key"))
                   for s in sources):
            raise PayloadError(f"{kind}: every source needs string 'node', 'source' and 'key'")
        flow_tasks = _field(kind, raw, "flow_tasks", int) if "flow_tasks" in raw else buckets
        if not 1 <= flow_tasks <= buckets:
            raise PayloadError(f"{kind}: flow_tasks must be from 1 to buckets ({buckets}), got {flow_tasks}")
        return cls(incident_id=_field(kind, raw, "incident_id", str), run=_field(kind, raw, "run", str),
                   buckets=buckets, day=day, flows=_field(kind, raw, "flows", bool),
                   statuses=dict(_field(kind, raw, "statuses", Mapping)), sources=tuple(sources),
                   rows=dict(raw.get("rows") or {}), flow_tasks=flow_tasks, extra=_extra(raw, cls._KNOWN))


@dataclass(frozen=True, slots=True)
class ChunkStatus:
    """incidents/<id>/dissect/_chunks/<node>/<index>/status.json: what one chunk task read and wrote, for the node's
    merge step. `parts` names the edge rows, warm-up rows, UDP pairs and extras (keys.chunk_prefix), `chunk_parts`
    the chunk's final rows per table (keys.table_chunk_part_key)."""

    incident_id: str
    node: str
    chunk: int
    start_ns: int
    end_ns: int
    warmup_start_ns: int
    open_start: bool
    open_end: bool
    inputs_digest: str  # the pass's inputs (a status of another pass is not this pass's result)
    state: str  # done | failed (a corrupt segment)
    segments: int
    parts: Mapping[str, str]
    chunk_parts: Mapping[str, str]
    body_rows: Mapping[str, int]  # rows per table in chunk_parts
    edge_rows: int
    stats: Mapping[str, Any]
    corrupt_segments: tuple[Mapping[str, Any], ...]
    problems: tuple[Mapping[str, Any], ...]  # freezeframe.dissect.problems rows, one per (segment, stage, kind)
    seconds: float  # the task's wall time
    peak_rss_mb: float
    extra: Mapping[str, Any] = field(default_factory=dict)
    SCHEMA = DISSECT_CHUNK_SCHEMA
    _KNOWN = ("schema", "incident_id", "node", "chunk", "start_ns", "end_ns", "warmup_start_ns", "open_start",
              "open_end", "inputs_digest", "state", "segments", "parts", "chunk_parts", "body_rows", "edge_rows",
              "stats", "corrupt_segments", "problems", "seconds", "peak_rss_mb")

    def to_dict(self) -> dict[str, Any]:
        return {"schema": self.SCHEMA, "incident_id": self.incident_id, "node": self.node, "chunk": self.chunk,
                "start_ns": self.start_ns, "end_ns": self.end_ns, "warmup_start_ns": self.warmup_start_ns,
                "open_start": self.open_start, "open_end": self.open_end, "inputs_digest": self.inputs_digest,
                "state": self.state, "segments": self.segments, "parts": dict(self.parts),
                "chunk_parts": dict(self.chunk_parts), "body_rows": dict(self.body_rows), "edge_rows": self.edge_rows,
                "stats": dict(self.stats), "corrupt_segments": [dict(c) for c in self.corrupt_segments],
                "problems": [dict(p) for p in self.problems], "seconds": self.seconds,
                "peak_rss_mb": self.peak_rss_mb, **self.extra}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ChunkStatus:
        kind = "chunk status"
        _schema(kind, raw, cls.SCHEMA)
        values: dict[str, Any] = _strs(kind, raw, ("incident_id", "node", "inputs_digest", "state"))
        values.update({name: _field(kind, raw, name, int)
                       for name in ("chunk", "start_ns", "end_ns", "warmup_start_ns", "segments", "edge_rows")})
        values.update({name: _bool(kind, raw, name) for name in ("open_start", "open_end")})
        values.update({name: _field(kind, raw, name, Mapping)
                       for name in ("parts", "chunk_parts", "body_rows", "stats")})
        for name in ("corrupt_segments", "problems"):
            items = _field(kind, raw, name, list)
            if not all(isinstance(item, Mapping) for item in items):
                raise PayloadError(f"{kind}: field {name!r} must be a list of objects")
            values[name] = tuple(items)
        values.update({name: _field(kind, raw, name, (int, float)) for name in ("seconds", "peak_rss_mb")})
        return cls(**values, extra=_extra(raw, cls._KNOWN))
