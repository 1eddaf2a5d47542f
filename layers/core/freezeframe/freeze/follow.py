"""Dissection follows the hold: the passes an incident's dissection makes while segments are still being locked.

A freeze whose window reaches past "now" opens a hold (`holds.py`); the segment indexer locks the segments uploaded
later and appends them as manifest parts. The dissection therefore does not run once but in passes, each one the
state machine's Map over the nodes followed by finalize:

- the first pass right after the freeze (the tables exist within a minute of the alert, marked partial);
- while the hold is open, another pass every `dissect_refresh_s` (60 s): a node whose segment set did not change
  since its last pass is not dissected again (`dissect.job` compares the digest of its inputs), so a pass without new
  parts costs a few reads;
- a last pass `hold_settle_s` (30 s) after the hold closed (its close time, or when the incident was resolved), so a
  segment indexer batch that saw the hold open just before it closed has appended its parts.

Each pass re-dissects a changed node from its first segment, in time order, with one TCP state across every
segment: a connection that spans the freeze point is one row, and the node's Parquet part (one deterministic key per
table, node and incident) is overwritten, never added to. Dissecting only the new segments would need the previous
pass's TCP state carried over, or a merge of partial rows across passes; re-reading the node costs more CPU but keeps
one code path and one row per connection by construction.

Everything here is pure: values in, values out.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from freezeframe.contracts.models import ManifestEntry, iso, parse_iso

FOLLOW_SCHEMA = "freezeframe.follow/v1"


@dataclass(frozen=True, slots=True)
class FollowUp:
    """What the dissection does after a pass: `again` with `nodes` after `wait_s` seconds, or nothing more.

    `partial_until` is the hold's close time while the tables are partial (None once the last pass ran)."""

    again: bool
    wait_s: int
    nodes: tuple[str, ...]
    partial_until: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"schema": FOLLOW_SCHEMA, "again": self.again, "wait_s": self.wait_s, "nodes": list(self.nodes),
                "partial_until": self.partial_until}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> FollowUp:
        """The follow-up record `to_dict` wrote."""
        return cls(bool(raw.get("again")), int(raw.get("wait_s", 0)), tuple(raw.get("nodes") or ()),
                   raw.get("partial_until"))


def behind_plan(planned: Mapping[str, str], statuses: Mapping[str, Mapping[str, Any] | None]) -> list[str]:
    """Pure: the nodes whose status is not for the inputs the latest plan saw (their merge found the inputs changed
    since the plan and left the status alone, or has not written it yet): another pass has to dissect them."""
    return sorted(node for node, digest in planned.items()
                  if (statuses.get(node) or {}).get("inputs_digest") != digest)


def catch_up(follow: FollowUp, behind: Iterable[str], refresh_s: int, now: datetime) -> FollowUp:
    """Pure: `follow`, or another pass after `refresh_s` when nodes are behind the plan, even once the hold closed,
    so the last pass never leaves tables that stop short of what is locked (partial until that pass). It ends: a
    node falls behind only when parts arrive during a pass, and parts stop once the hold closed."""
    if follow.again or not list(behind):
        return follow
    wait = max(1, refresh_s)
    return FollowUp(True, wait, follow.nodes, follow.partial_until or iso(now + timedelta(seconds=wait)))


def hold_closes_at(manifest: Mapping[str, Any], resolved_at: datetime | None) -> datetime | None:
    """When the incident's hold closes (or closed): its own close time, or the resolution if that came first; None
    when the freeze opened no hold (its window was over)."""
    hold = manifest.get("hold")
    if not isinstance(hold, Mapping) or not hold.get("closes_at"):
        return None
    closes_at = parse_iso(str(hold["closes_at"]), "closes_at")
    return min(closes_at, resolved_at) if resolved_at is not None else closes_at


def follow_up(closes_at: datetime | None, now: datetime, nodes: Iterable[str], refresh_s: int,
              settle_s: int) -> FollowUp:
    """Pure: after a pass at `now`, whether another one is due and when.

    No hold, or a hold that closed more than `settle_s` ago: this pass saw every part, it was the last. Otherwise
    the next pass comes after `refresh_s`, but never later than `settle_s` after the close."""
    ordered = tuple(sorted(set(nodes)))
    if closes_at is None:
        return FollowUp(False, 0, ordered, None)
    last_pass_at = closes_at + timedelta(seconds=settle_s)
    if now >= last_pass_at:
        return FollowUp(False, 0, ordered, None)
    wait = min(timedelta(seconds=max(1, refresh_s)), last_pass_at - now)
    return FollowUp(True, max(1, int(wait.total_seconds() + 0.999)), ordered, iso(closes_at))


def incident_nodes(manifest: Mapping[str, Any], parts: Iterable[Mapping[str, Any]]) -> list[str]:
    """Every node with a segment in the manifest or any of its parts (a part may bring a node the freeze found
    nothing of), including segments recorded as unverified."""
    nodes = {str(raw["node"]) for raw in manifest.get("segments", [])}
    nodes |= {str(raw["node"]) for raw in manifest.get("unverified", [])}
    nodes |= {str(raw["node"]) for raw in manifest.get("node_state") or []}  # node state alone is dissected too
    for part in parts:
        nodes |= {str(raw["node"]) for raw in part.get("segments", [])}
        nodes |= {str(raw["node"]) for raw in part.get("unverified", [])}
    return sorted(nodes)


def inputs_digest(entries: Iterable[ManifestEntry], unverified: Iterable[Mapping[str, Any]] = (),
                  how: str = "") -> str:
    """A digest of what a node's pass reads: its segment versions and the ones left out as unverified, and `how` it
    reads them (the chunking). Two passes with the same digest produce the same tables, so the second is skipped."""
    digest = hashlib.sha256(f"{how}\n".encode())
    for entry in sorted(entries, key=lambda e: (e.key, e.version_id)):
        digest.update(f"{entry.key}@{entry.version_id}#{entry.sha256}\n".encode())
    for raw in sorted(unverified, key=lambda u: (str(u.get("key")), str(u.get("version_id")))):
        digest.update(f"unverified {raw.get('key')}@{raw.get('version_id')}\n".encode())
    return digest.hexdigest()
