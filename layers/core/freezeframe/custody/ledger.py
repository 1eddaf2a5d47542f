"""The custody ledger: who accessed an incident's evidence through freezeframe, when, why, and what came out.

Each access (export-pcap, report, a query scoped to the incident, an MCP read, verify, bundle, release-hold)
appends an entry `incidents/<id>/custody/<UTC time>-<random>.json`, written create-only, locked by the evidence
bucket's default retention and
sealed into its signed chain: who (IAM ARN or local user), when (UTC), what, the purpose or ticket when given, and
the sha256 of every output. `freezeframe custody INCIDENT` prints the chain of custody; verify checks every entry.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from freezeframe.adapters import s3 as s3io
from freezeframe.adapters.s3 import ObjectStore
from freezeframe.contracts.config import Settings
from freezeframe.contracts.errors import CustodyError, NotFoundError, PayloadError
from freezeframe.contracts.keys import ledger_entry_key, manifest_key
from freezeframe.contracts.keys import ledger_prefix as ledger_prefix
from freezeframe.contracts.models import iso
from freezeframe.custody.chain import principal, seal_written
from freezeframe.custody.pinned import chain_versions, online_trust
from freezeframe.custody.signatures import sha256_hex

logger = logging.getLogger(__name__)
ENTRY_SCHEMA = "freezeframe.custody-entry/v1"
ACTIONS = ("export-pcap", "report", "query", "mcp-read", "verify", "bundle", "release-hold")




def entry_key(incident_id: str, at: datetime) -> str:
    return ledger_entry_key(incident_id, at, secrets.token_hex(4))


Output = bytes | Path  # what an access produced: its bytes, or the file it wrote


def output_digest(output: Output) -> dict[str, Any]:
    """sha256 and size of an output; a file is hashed in chunks (an exported capture can be large)."""
    if isinstance(output, bytes):
        return {"sha256": sha256_hex(output), "size": len(output)}
    digest, size = hashlib.sha256(), 0
    with output.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
            size += len(chunk)
    return {"sha256": digest.hexdigest(), "size": size, "path": str(output)}


def build_entry(incident_id: str, action: str, who: str, at: datetime, purpose: str | None,
                details: Mapping[str, Any], outputs: Iterable[Output]) -> dict[str, Any]:
    """One ledger entry (pure but for hashing output files)."""
    if action not in ACTIONS:
        raise PayloadError(f"custody action must be one of {ACTIONS}, got {action!r}")
    return {"schema": ENTRY_SCHEMA, "incident_id": incident_id, "action": action, "who": who, "at": iso(at),
            "purpose": purpose, "details": dict(details), "outputs": [output_digest(o) for o in outputs]}


def record_access(settings: Settings, s3: ObjectStore, incident_id: str, action: str, details: Mapping[str, Any],
                  outputs: Iterable[Output] = (), now: datetime | None = None) -> str | None:
    """Appends one entry and seals it; returns its key, or None for an incident that has no manifest (nothing was
    accessed)."""
    at = now or datetime.now(UTC)
    if not any(not marker for _, _, marker in s3io.list_all_versions(s3, settings.evidence_bucket,
                                                                     manifest_key(incident_id))):
        return None
    entry = build_entry(incident_id, action, principal(settings), at, settings.custody_purpose, details, outputs)
    key = entry_key(incident_id, at)
    # Locked by the evidence bucket's default retention: only the freeze and the indexer may set locks.
    version_id = s3io.put_json(s3, settings.evidence_bucket, key, entry, create_only=True)
    seal_written(settings, s3, incident_id, "custody", key, version_id, s3io.encode_json(entry), None)
    logger.info("custody entry recorded", extra={"incident_id": incident_id, "action": action})
    return key


def custody_trail(settings: Settings, s3: ObjectStore, incident_id: str) -> list[dict[str, Any]]:
    """Every link of the incident's chain in order, checked (signature, predecessor, timestamp), with the ledger
    entry each custody link names. Raises CustodyError when a link does not check."""
    from freezeframe.custody.chain import Envelope, check_links

    bucket = settings.evidence_bucket
    grouped = chain_versions(s3, bucket, incident_id)
    if not grouped:
        raise NotFoundError(f"incident {incident_id} has no custody chain")
    stored = [(key, s3io.get_bytes(s3, bucket, key, [v for v, marker in versions if not marker][-1]))
              for key, versions in sorted(grouped.items())]
    trail = []
    for result in check_links(incident_id, stored, online_trust(settings)):
        if not result.ok:
            problem = result.problems[0]
            raise CustodyError(f"{problem.subject}: {problem.name}: {problem.detail}")
        link = Envelope.from_bytes(dict(stored)[result.subject]).link
        item: dict[str, Any] = {"seq": link.seq, "kind": link.kind, "key": link.object.key,
                                "version_id": link.object.version_id, "sha256": link.object.sha256,
                                "signed_by": link.signed_by, "signed_at": link.signed_at,
                                "time_stamped_at": iso(result.stamped_at) if result.stamped_at else None}
        if link.kind == "custody":
            item["entry"] = s3io.get_json_version(s3, link.object.bucket, link.object.key, link.object.version_id)
        trail.append(item)
    return trail


def format_trail(incident_id: str, trail: list[dict[str, Any]]) -> str:
    lines = [f"chain of custody of incident {incident_id}: {len(trail)} signed link(s)"]
    for item in trail:
        stamped = item["time_stamped_at"] or "no timestamp"
        if item["kind"] == "custody":
            entry = item["entry"]
            purpose = f" purpose={entry['purpose']!r}" if entry.get("purpose") else ""
            outputs = ", ".join(o["sha256"][:16] for o in entry.get("outputs", [])) or "-"
            lines.append(f"  {item['seq']:>4}  {entry['at']}  {entry['action']:<12} by {entry['who']}{purpose}"
                         f"  outputs sha256 {outputs}  (stamped {stamped})")
        else:
            lines.append(f"  {item['seq']:>4}  {item['signed_at']}  {item['kind']:<12} {item['key']} "
                         f"sha256 {item['sha256'][:16]} signed by {item['signed_by']} (stamped {stamped})")
    return "\n".join(lines)
