"""Reading one incident's evidence documents, typed (freezeframe.contracts.documents), through the object store.

`load_incident` is the one reader of an incident: its record, the manifest and manifest parts at the versions the
signed custody chain names (freezeframe.custody.pinned: never "the latest version"), every node's dissect status
and the summary when finalize has written it. The smaller readers beside it serve callers that need one document.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from freezeframe.adapters import s3 as s3io
from freezeframe.adapters.s3 import ObjectStore
from freezeframe.contracts.config import Settings
from freezeframe.contracts.documents import DissectPlan, DissectStatus, IncidentRecord, Manifest, ManifestPart, Summary
from freezeframe.contracts.errors import CustodyError, NotFoundError, PayloadError
from freezeframe.contracts.keys import dissect_plan_nodes_key, dissect_status_key, incident_key, summary_key
from freezeframe.custody.chain import Trust
from freezeframe.custody.pinned import PinnedDocument, PinnedIncident, read_pinned
from freezeframe.freeze.follow import incident_nodes
from freezeframe.freeze.holds import read_follow

T = TypeVar("T")

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Incident:
    """One incident's documents. The manifest and its parts are kept as read (`pinned`: keys, versions, bytes
    checked against the chain) and typed on access (`manifest`, `parts`), so a caller that only passes the stored
    document on (finalize, dissect, export) never rejects what it did not look into."""

    incident_id: str
    record: IncidentRecord | None  # None: not asked for, or frozen without intake (the CLI's direct freezes)
    pinned: PinnedIncident  # where the manifest and parts were read: keys, versions, whether the chain is signed
    statuses: Mapping[str, DissectStatus | None] = field(default_factory=dict)  # per node; None: not dissected yet
    summary: Summary | None = None

    @property
    def manifest(self) -> Manifest:
        """The typed manifest; CustodyError naming its key and version when it is not a valid one."""
        return _typed(self.pinned.manifest, Manifest.from_dict)

    @property
    def parts(self) -> tuple[ManifestPart, ...]:
        return tuple(_typed(part, ManifestPart.from_dict) for part in self.pinned.parts)

    @property
    def manifest_document(self) -> dict[str, Any]:
        """The manifest as stored (the dict the pure functions of manifest, follow and unverified take)."""
        return self.pinned.manifest.document

    @property
    def part_documents(self) -> list[dict[str, Any]]:
        return [part.document for part in self.pinned.parts]

    @property
    def nodes(self) -> list[str]:
        """Every node with a segment (or node state, or an unverified segment) in the manifest or its parts."""
        return incident_nodes(self.manifest_document, self.part_documents)


def load_incident(settings: Settings, store: ObjectStore, incident_id: str, *, trust: Trust | None = None,
                  record: bool = True, statuses: bool = True, summary: bool = True) -> Incident:
    """The incident's documents. Raises NotFoundError without a manifest and CustodyError when the chain does not
    vouch for what is stored (freezeframe.custody.pinned). `record`, `statuses` and `summary` False skip those
    reads for callers that only need the frozen evidence (the record is None then, or when intake never wrote
    one). Statuses are read for every node of the manifest and its parts."""
    pinned = read_pinned(settings, store, incident_id, trust)
    incident_record: IncidentRecord | None = None
    if record:
        try:
            incident_record = read_record(settings, store, incident_id)
        except NotFoundError:
            pass
    incident = Incident(incident_id, incident_record, pinned)
    return Incident(incident_id, incident_record, pinned,
                    read_statuses(settings, store, incident_id, incident.nodes) if statuses else {},
                    read_summary(settings, store, incident_id) if summary else None)


def partial_until(settings: Settings, store: ObjectStore, incident: Incident) -> str | None:
    """Until when the incident's tables are partial (its hold is open): what the latest dissection pass said
    (freezeframe.freeze.follow), else, before the first pass ends, the close time of the hold the freeze opened; None
    once the tables describe the whole locked window."""
    follow = read_follow(settings, store, incident.incident_id)
    if follow is not None:
        return follow.partial_until
    closes_at = (incident.manifest_document.get("hold") or {}).get("closes_at")
    return None if closes_at is None else str(closes_at)


def read_record(settings: Settings, store: ObjectStore, incident_id: str) -> IncidentRecord:
    """incidents/<id>/incident.json; NotFoundError when intake never saw the incident."""
    key = incident_key(incident_id)
    try:
        raw = s3io.get_json(store, settings.evidence_bucket, key)
    except NotFoundError as exc:
        raise NotFoundError(f"no incident {incident_id!r}") from exc
    return IncidentRecord.from_dict(raw)


def read_status(settings: Settings, store: ObjectStore, incident_id: str, node: str) -> DissectStatus | None:
    """One node's dissect status, or None before its first pass ends."""
    try:
        raw = s3io.get_json(store, settings.evidence_bucket, dissect_status_key(incident_id, node))
    except NotFoundError:
        return None
    return DissectStatus.from_dict(raw)


def read_statuses(settings: Settings, store: ObjectStore, incident_id: str,
                  nodes: Iterable[str]) -> dict[str, DissectStatus | None]:
    return {node: read_status(settings, store, incident_id, node) for node in sorted(set(nodes))}


def read_planned_digests(settings: Settings, store: ObjectStore, incident_id: str) -> dict[str, str]:
    """Each node's inputs digest as the latest dissection plan saw them (freezeframe.dissect.fanout); empty before
    the first plan."""
    try:
        raw = s3io.get_json(store, settings.evidence_bucket, dissect_plan_nodes_key(incident_id))
        plan = DissectPlan.from_dict(raw)
    except NotFoundError:
        return {}
    except PayloadError as exc:
        # A plan that does not parse decides nothing: finalize still writes the views and the summary.
        logger.warning("dissect plan unreadable; no node is taken as behind it",
                       extra={"incident_id": incident_id, "error": str(exc)})
        return {}
    digests = plan.extra.get("digests")
    return {str(node): str(digest) for node, digest in digests.items()} if isinstance(digests, Mapping) else {}


def read_summary(settings: Settings, store: ObjectStore, incident_id: str) -> Summary | None:
    try:
        raw = s3io.get_json(store, settings.evidence_bucket, summary_key(incident_id))
    except NotFoundError:
        return None
    return Summary.from_dict(raw)


def _typed(document: PinnedDocument, parse: Callable[[Mapping[str, Any]], T]) -> T:
    try:
        return parse(document.document)
    except PayloadError as exc:
        raise CustodyError(f"{document.key}@{document.version_id}: {exc}") from exc
