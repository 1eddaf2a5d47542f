"""Node state, recorded all the time like the packets: one document per node and segment period with the node's
network counters (TCP, listen queue, SYN cookies, resets, conntrack, interfaces, sockets) and, when they change,
its routes, MTUs and packet-filter ruleset with their digests.

The agent (freezeframe_agent.node_state) writes each document create-only, with an S3-verified SHA-256, to
`nodestate/<cluster>/<YYYY>/<MM>/<DD>/<HH>/<node>/<start_ns>-<end_ns>.json` in the raw bucket (keys.node_state_key).
A freeze locks the documents overlapping its window in place, with the request's retention, exactly like segments,
and lists them in the manifest under `node_state` (key, version, sha256, size) with their own root hash
(`node_state_root_hash`); the custody chain seals that manifest, and `freezeframe verify` checks every listed version
(present, unchanged, locked, not shadowed). Dissection turns them into the `node_stats` and `node_config` tables
(freezeframe.dissect.node_state).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from freezeframe.adapters import s3 as s3io
from freezeframe.adapters.s3 import ObjectStore
from freezeframe.contracts.config import Settings
from freezeframe.contracts.documents import NODE_STATE_SCHEMA, NodeStateEntry
from freezeframe.contracts.errors import PayloadError
from freezeframe.contracts.keys import check_name, node_prefix, node_state_prefixes, parse_node_state_key
from freezeframe.contracts.models import FreezeRequest, iso
from freezeframe.contracts.parallel import LOCK_LIMIT, run_all

logger = logging.getLogger(__name__)

CONFIG_KINDS = ("routes", "mtus", "ruleset")
LOCK_WORKERS = LOCK_LIMIT


@dataclass(frozen=True, slots=True)
class ConfigState:
    """One piece of node configuration at the end of a period."""

    digest: str  # sha256 of `text` (of the empty string when unavailable)
    text: str | None  # the full text when it changed since the agent's previous document (or is its first), else None
    error: str | None = None  # why it could not be read (no nft/iptables-save on the node, say)


@dataclass(frozen=True, slots=True)
class NodeStateDocument:
    """One node's network state over one period (`start_ns` to `end_ns`, the agent's segment period).

    Counters are the kernel's running totals at `observed_ns` (not deltas): dissection subtracts consecutive
    documents, so a lost document widens a delta instead of losing counts."""

    cluster: str
    node: str
    seq: int  # per agent start, increasing; a restart starts again at 0 (counters may then also have reset)
    start_ns: int
    end_ns: int
    observed_ns: int  # when the counters were read
    # /proc/net/snmp and /proc/net/netstat, as "<group>.<name>" (Tcp.RetransSegs, TcpExt.ListenOverflows, ...).
    counters: dict[str, int] = field(default_factory=dict)
    # nf_conntrack_count and _max, and the per-CPU sums of /proc/net/stat/nf_conntrack (drop, insert_failed, ...);
    # empty when the conntrack module is not loaded.
    conntrack: dict[str, int] = field(default_factory=dict)
    # /proc/net/dev per interface (rx_bytes, rx_packets, rx_errors, rx_dropped, tx_..., and mtu).
    interfaces: dict[str, dict[str, int]] = field(default_factory=dict)
    # /proc/net/sockstat and sockstat6 as "<protocol>.<field>" (TCP.inuse, TCP.orphan, TCP.tw, sockets.used, ...).
    sockets: dict[str, int] = field(default_factory=dict)
    config: dict[str, ConfigState] = field(default_factory=dict)  # routes | mtus | ruleset
    errors: tuple[str, ...] = ()  # sources that could not be read, with the reason
    schema: str = NODE_STATE_SCHEMA

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["errors"] = list(self.errors)
        return out

    def encode(self) -> bytes:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> NodeStateDocument:
        if raw.get("schema") != NODE_STATE_SCHEMA:
            raise PayloadError(f"node-state schema must be {NODE_STATE_SCHEMA!r}, got {raw.get('schema')!r}")
        try:
            config = {str(kind): ConfigState(str(value["digest"]), value.get("text"), value.get("error"))
                      for kind, value in dict(raw.get("config") or {}).items()}
            return cls(cluster=str(raw["cluster"]), node=check_name("node", str(raw["node"])), seq=int(raw["seq"]),
                       start_ns=int(raw["start_ns"]), end_ns=int(raw["end_ns"]), observed_ns=int(raw["observed_ns"]),
                       counters=_ints(raw.get("counters")), conntrack=_ints(raw.get("conntrack")),
                       interfaces={str(name): _ints(values) for name, values in
                                   dict(raw.get("interfaces") or {}).items()},
                       sockets=_ints(raw.get("sockets")), config=config,
                       errors=tuple(str(e) for e in raw.get("errors") or ()))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise PayloadError(f"malformed node-state document: {exc}") from exc

    @classmethod
    def decode(cls, body: bytes) -> NodeStateDocument:
        try:
            raw = json.loads(body)
        except ValueError as exc:
            raise PayloadError(f"node-state document is not JSON: {exc}") from exc
        if not isinstance(raw, dict):
            raise PayloadError("node-state document is not a JSON object")
        return cls.from_dict(raw)


def _ints(raw: Any) -> dict[str, int]:
    return {str(name): int(value) for name, value in dict(raw or {}).items()}


def entries_of(manifest: Mapping[str, Any]) -> list[NodeStateEntry]:
    return [NodeStateEntry.from_dict(raw) for raw in manifest.get("node_state") or []]


def root_hash(entries: Iterable[NodeStateEntry]) -> str:
    digest = hashlib.sha256()
    for entry in sorted(entries, key=lambda e: (e.node, e.start_ns, e.key, e.version_id)):
        digest.update(json.dumps(entry.to_dict(), sort_keys=True, separators=(",", ":")).encode() + b"\n")
    return digest.hexdigest()


def select(request: FreezeRequest, versions: Iterable[s3io.ObjectVersion], nodes: Sequence[str],
           period_ns: int) -> list[s3io.ObjectVersion]:
    """Pure: the node-state versions of the scope's cluster (and nodes) whose period overlaps the window, plus the
    one period before it, so the first period of the window has a baseline to subtract."""
    chosen = []
    for version in versions:
        parsed = parse_node_state_key(version.key)
        if parsed is None or parsed.cluster != request.scope.cluster or (nodes and parsed.node not in nodes):
            continue
        if parsed.start_ns <= request.window_end_ns and parsed.end_ns >= request.window_start_ns - period_ns:
            chosen.append(version)
    return sorted(chosen, key=lambda v: v.key)


def freeze_node_state(settings: Settings, s3: ObjectStore, request: FreezeRequest, nodes: Sequence[str]
                      ) -> list[NodeStateEntry]:
    """Locks the window's node-state documents in place with the request's retention and returns their entries.

    Each document is read at its version to take its sha256 (they are a few KiB). A version whose retention the
    endpoint refuses already carries a stronger lock, which stands."""
    period_ns = int(settings.segment_seconds * 1_000_000_000)
    prefixes = node_state_prefixes(request.scope.cluster, request.window_start_ns - period_ns, request.window_end_ns)
    if nodes:
        prefixes = [node_prefix(prefix, node) for prefix in prefixes for node in nodes]
    versions = [v for prefix in prefixes for v in s3io.list_versions(s3, settings.raw_bucket, prefix)]
    chosen = select(request, versions, nodes, period_ns)

    def lock(version: s3io.ObjectVersion) -> NodeStateEntry:
        parsed = parse_node_state_key(version.key)
        assert parsed is not None  # select() kept only node-state keys
        mode, retain_until = request.lock.mode, request.lock.retain_until
        if not s3io.try_put_retention(s3, settings.raw_bucket, version.key, version.version_id, mode, retain_until):
            head = s3io.head_version(s3, settings.raw_bucket, version.key, version.version_id)
            state = s3io.lock_at_least(s3, settings.raw_bucket, version.key, version.version_id, mode, retain_until,
                                       s3io.lock_state(head))
            mode, retain_until = str(state.mode), state.retain_until or retain_until
        body = s3io.get_bytes(s3, settings.raw_bucket, version.key, version.version_id)
        return NodeStateEntry(key=version.key, version_id=version.version_id,
                              sha256=hashlib.sha256(body).hexdigest(), size=len(body), node=parsed.node,
                              start_ns=parsed.start_ns, end_ns=parsed.end_ns, lock_mode=mode,
                              retain_until=iso(retain_until), seq=None, packets=None, legal_hold=False)

    entries = run_all(lock, chosen, LOCK_WORKERS)
    logger.info("node state frozen", extra={"incident_id": request.incident_id, "documents": len(entries)})
    return sorted(entries, key=lambda e: (e.node, e.start_ns, e.key))
