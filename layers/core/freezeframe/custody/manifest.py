"""Building the incident manifest: pure functions from a request and its frozen entries to a JSON document.

The root hash is the sha256 of the canonical JSON of the entries sorted by (node, start_ns, key), so anyone can
recompute it from the manifest alone.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import freezeframe

# MANIFEST_SCHEMA re-exported: tests build manifests by hand.
from freezeframe.contracts.documents import MANIFEST_SCHEMA as MANIFEST_SCHEMA
from freezeframe.contracts.documents import Manifest
from freezeframe.contracts.models import FreezeRequest, ManifestEntry, iso


def sort_entries(entries: Iterable[ManifestEntry]) -> list[ManifestEntry]:
    return sorted(entries, key=lambda e: (e.node, e.start_ns, e.key, e.version_id))


def root_hash(entries: Iterable[ManifestEntry]) -> str:
    digest = hashlib.sha256()
    for entry in sort_entries(entries):
        digest.update(json.dumps(entry.to_dict(), sort_keys=True, separators=(",", ":")).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def node_coverage(entries: Sequence[ManifestEntry], window_start_ns: int, window_end_ns: int,
                  gap_records: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """Per node: the merged intervals the segments cover inside the window, the gaps between them, seq gaps, the
    kernel and agent drops, and the agent's own gap records (segments it evicted from a full spool)."""
    by_node: dict[str, list[ManifestEntry]] = defaultdict(list)
    for entry in entries:
        by_node[entry.node].append(entry)
    coverage: dict[str, Any] = {}
    for node, items in sorted(by_node.items()):
        intervals: list[list[int]] = []
        for entry in sorted(items, key=lambda e: e.start_ns):
            start, end = max(entry.start_ns, window_start_ns), min(entry.end_ns, window_end_ns)
            if intervals and start <= intervals[-1][1]:
                intervals[-1][1] = max(intervals[-1][1], end)
            else:
                intervals.append([start, end])
        gaps, cursor = [], window_start_ns
        for start, end in intervals:
            if start > cursor:
                gaps.append([cursor, start])
            cursor = max(cursor, end)
        if cursor < window_end_ns:
            gaps.append([cursor, window_end_ns])
        seqs = sorted({e.seq for e in items if e.seq is not None})
        seq_gaps = [[a + 1, b - 1] for a, b in zip(seqs, seqs[1:], strict=False) if b - a > 1]
        lost = [dict(g) for g in gap_records if g.get("node") == node
                and int(g.get("start_ns", 0)) <= window_end_ns and int(g.get("end_ns", 0)) >= window_start_ns]
        coverage[node] = {"segments": len(items), "covered_ns": intervals, "gaps_ns": gaps, "seq_gaps": seq_gaps,
                          "packets": sum(e.packets or 0 for e in items),
                          "kernel_drops": sum(e.kernel_drops or 0 for e in items),
                          "agent_drops": sum(e.agent_drops or 0 for e in items),
                          "gap_records": lost}
    return coverage


def build_manifest(request: FreezeRequest, entries: Sequence[ManifestEntry], created_at: datetime,
                   raw_bucket: str, gap_records: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """The manifest document (contracts.documents.Manifest) of the freeze's segments; the freeze adds the optional
    sections (hold, unverified, Kubernetes context, node state, ...) to it."""
    ordered = tuple(sort_entries(entries))
    return Manifest(incident_id=request.incident_id, request=request, raw_bucket=raw_bucket, segments=ordered,
                    coverage=node_coverage(ordered, request.window_start_ns, request.window_end_ns, gap_records),
                    root_hash=root_hash(ordered), tool_versions={"freezeframe": freezeframe.__version__},
                    created_at=iso(created_at)).to_dict()


def entries_of(manifest: dict[str, Any]) -> list[ManifestEntry]:
    return [ManifestEntry.from_dict(raw) for raw in manifest.get("segments", [])]
