"""The records that cross process boundaries: segment records, freeze requests, manifest entries, and the schema
strings of the Kubernetes records the agent writes (read by the dissection's enrichment without loading every
document class of freezeframe.contracts.documents, which re-exports them).

Each has `to_dict` (JSON-ready) and `from_dict` (validating, raising PayloadError with the field named).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from freezeframe.contracts.errors import PayloadError
from freezeframe.contracts.keys import check_name

SEGMENT_SCHEMA = "freezeframe.segment/v1"
FREEZE_SCHEMA = "freezeframe.freeze-request/v1"
SOURCES = ("pagerduty", "alertmanager", "api")
GAP_SCHEMA = "freezeframe.gap/v1"
K8S_POD_SCHEMA = "freezeframe.k8s-pod/v1"
K8S_EVENT_SCHEMA = "freezeframe.k8s-event/v1"
K8S_SERVICE_SCHEMA = "freezeframe.k8s-service/v1"
K8S_ENDPOINTSLICE_SCHEMA = "freezeframe.k8s-endpointslice/v1"
K8S_NODE_SCHEMA = "freezeframe.k8s-node/v1"


@dataclass(frozen=True, slots=True)
class SegmentRecord:
    """One uploaded capture segment, as published on `freezeframe.segments` and stored as object metadata."""

    cluster: str
    node: str
    bucket: str
    key: str
    version_id: str
    start_ns: int
    end_ns: int
    first_packet_ns: int | None
    last_packet_ns: int | None
    packets: int
    bytes: int
    stored_bytes: int
    sha256: str
    compression: str
    format: str
    link_type: int
    snaplen: int
    kernel_drops: int
    agent_drops: int
    seq: int
    capture_filter: str
    agent_version: str
    schema: str = SEGMENT_SCHEMA

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> SegmentRecord:
        if raw.get("schema") != SEGMENT_SCHEMA:
            raise PayloadError(f"segment record schema must be {SEGMENT_SCHEMA!r}, got {raw.get('schema')!r}")
        ints = ("start_ns", "end_ns", "packets", "bytes", "stored_bytes", "link_type", "snaplen", "kernel_drops",
                "agent_drops", "seq")
        strs = ("cluster", "node", "bucket", "key", "version_id", "sha256", "compression", "format",
                "capture_filter", "agent_version")
        values: dict[str, Any] = {"schema": SEGMENT_SCHEMA}
        for name in ints:
            values[name] = _require(raw, name, int)
        for name in strs:
            values[name] = _require(raw, name, str)
        for name in ("first_packet_ns", "last_packet_ns"):
            value = raw.get(name)
            if value is not None and not isinstance(value, int):
                raise PayloadError(f"segment record field {name!r} must be an integer or null")
            values[name] = value
        return cls(**values)


@dataclass(frozen=True, slots=True)
class Scope:
    cluster: str
    nodes: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()
    pods: tuple[str, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"cluster": self.cluster, "nodes": list(self.nodes), "namespaces": list(self.namespaces),
                "pods": list(self.pods), "labels": dict(self.labels)}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Scope:
        labels = raw.get("labels") or {}
        if not isinstance(labels, Mapping):
            raise PayloadError("scope.labels must be an object")
        for node in _str_tuple(raw, "nodes"):
            check_name("node", node)
        return cls(cluster=_require(raw, "cluster", str), nodes=_str_tuple(raw, "nodes"),
                   namespaces=_str_tuple(raw, "namespaces"), pods=_str_tuple(raw, "pods"),
                   labels=tuple(sorted((str(k), str(v)) for k, v in labels.items())))

    def matches_node(self, node: str) -> bool:
        return not self.nodes or node in self.nodes


@dataclass(frozen=True, slots=True)
class LockSpec:
    mode: str
    retain_until: datetime
    legal_hold: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "retain_until": iso(self.retain_until), "legal_hold": self.legal_hold}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> LockSpec:
        mode = _require(raw, "mode", str)
        if mode not in ("COMPLIANCE", "GOVERNANCE"):
            raise PayloadError(f"lock.mode must be COMPLIANCE or GOVERNANCE, got {mode!r}")
        return cls(mode=mode, retain_until=parse_iso(_require(raw, "retain_until", str), "lock.retain_until"),
                   legal_hold=bool(raw.get("legal_hold", False)))


@dataclass(frozen=True, slots=True)
class FreezeRequest:
    incident_id: str
    source: str
    title: str
    severity: str
    window_start: datetime
    window_end: datetime
    scope: Scope
    lock: LockSpec
    labels: tuple[tuple[str, str], ...] = ()
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    schema: str = FREEZE_SCHEMA
    # When the alert fired (Alertmanager startsAt, PagerDuty occurred_at); None for a manual freeze. Left out of
    # the document when None, so requests written before it read and hash the same.
    alert_at: datetime | None = None

    @property
    def window_start_ns(self) -> int:
        return to_ns(self.window_start)

    @property
    def window_end_ns(self) -> int:
        return to_ns(self.window_end)

    def to_dict(self) -> dict[str, Any]:
        return {"schema": self.schema, "incident_id": self.incident_id, "source": self.source, "title": self.title,
                "severity": self.severity, "window_start": iso(self.window_start),
                "window_end": iso(self.window_end), "scope": self.scope.to_dict(), "lock": self.lock.to_dict(),
                "labels": dict(self.labels), "received_at": iso(self.received_at),
                **({"alert_at": iso(self.alert_at)} if self.alert_at is not None else {})}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> FreezeRequest:
        if raw.get("schema") != FREEZE_SCHEMA:
            raise PayloadError(f"freeze request schema must be {FREEZE_SCHEMA!r}, got {raw.get('schema')!r}")
        source = _require(raw, "source", str)
        if source not in SOURCES:
            raise PayloadError(f"source must be one of {SOURCES}, got {source!r}")
        scope = raw.get("scope")
        lock = raw.get("lock")
        if not isinstance(scope, Mapping) or not isinstance(lock, Mapping):
            raise PayloadError("freeze request needs 'scope' and 'lock' objects")
        labels = raw.get("labels") or {}
        return cls(
            incident_id=_require(raw, "incident_id", str), source=source, title=_require(raw, "title", str),
            severity=_require(raw, "severity", str),
            window_start=parse_iso(_require(raw, "window_start", str), "window_start"),
            window_end=parse_iso(_require(raw, "window_end", str), "window_end"),
            scope=Scope.from_dict(scope), lock=LockSpec.from_dict(lock),
            labels=tuple(sorted((str(k), str(v)) for k, v in labels.items())),
            received_at=parse_iso(_require(raw, "received_at", str), "received_at"),
            alert_at=parse_iso(str(raw["alert_at"]), "alert_at") if raw.get("alert_at") else None,
        )


@dataclass(frozen=True, slots=True)
class ManifestEntry:
    """One frozen segment version in a manifest."""

    key: str
    version_id: str
    sha256: str
    size: int
    node: str
    start_ns: int
    end_ns: int
    seq: int | None
    packets: int | None
    lock_mode: str
    retain_until: str
    legal_hold: bool
    kernel_drops: int | None = None
    agent_drops: int | None = None
    # How the lock came to be (adapters.s3.LockState.outcome: applied | kept | kept_stronger); left out of the
    # document when unknown, so entries written before it keep their root hash.
    lock_outcome: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if out["lock_outcome"] is None:
            del out["lock_outcome"]
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ManifestEntry:
        return cls(key=_require(raw, "key", str), version_id=_require(raw, "version_id", str),
                   sha256=_require(raw, "sha256", str), size=_require(raw, "size", int),
                   node=_require(raw, "node", str), start_ns=_require(raw, "start_ns", int),
                   end_ns=_require(raw, "end_ns", int), seq=raw.get("seq"), packets=raw.get("packets"),
                   lock_mode=_require(raw, "lock_mode", str), retain_until=_require(raw, "retain_until", str),
                   legal_hold=bool(raw.get("legal_hold", False)), kernel_drops=raw.get("kernel_drops"),
                   agent_drops=raw.get("agent_drops"), lock_outcome=raw.get("lock_outcome"))


def iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(value: str, name: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise PayloadError(f"{name} is not an ISO 8601 timestamp: {value[:64]!r}") from exc
    if parsed.tzinfo is None:
        raise PayloadError(f"{name} must carry a time zone: {value[:64]!r}")
    try:
        return parsed.astimezone(UTC)
    except OverflowError as exc:  # 0001-01-01T00:00+01:00 or 9999-12-31T23:59-01:00 is outside datetime in UTC
        raise PayloadError(f"{name} is outside the years 1 to 9999 in UTC: {value[:64]!r}") from exc


def to_ns(value: datetime) -> int:
    delta = value.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def from_ns(value: int) -> datetime:
    return datetime.fromtimestamp(value // 1_000_000_000, tz=UTC).replace(microsecond=(value // 1000) % 1_000_000)


def _require(raw: Mapping[str, Any], name: str, kind: type) -> Any:
    if name not in raw or raw[name] is None:
        raise PayloadError(f"missing field {name!r}")
    value = raw[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise PayloadError(f"field {name!r} must be {kind.__name__}, got {type(value).__name__}")
    return value


def _str_tuple(raw: Mapping[str, Any], name: str) -> tuple[str, ...]:
    value = raw.get(name) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PayloadError(f"scope.{name} must be a list of strings")
    return tuple(value)
