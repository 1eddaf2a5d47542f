"""PagerDuty post-back: when an incident came from PagerDuty and a REST API token is configured, the freeze and the
finalize steps each add a note to the PagerDuty incident, so the person on call sees in PagerDuty where the
evidence is, what it covers, where the report is and how to verify it.

The notes are built from the locked manifest and the incident summary (pure functions below); the HTTP call is in
`adapters.pagerduty_api`. A post-back never fails the step that sends it: it logs and gives up.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from freezeframe.adapters import pagerduty_api
from freezeframe.adapters.secrets import pagerduty_api_token
from freezeframe.contracts.config import Settings
from freezeframe.contracts.errors import ConfigError
from freezeframe.contracts.keys import manifest_key

logger = logging.getLogger(__name__)
NS = 1_000_000_000


def pagerduty_incident(manifest: Mapping[str, Any]) -> str | None:
    """PagerDuty's incident id (e.g. PGR0VU2) of a freeze that PagerDuty triggered, else None."""
    request = manifest.get("request") or {}
    if request.get("source") != "pagerduty":
        return None
    value = (request.get("labels") or {}).get("pagerduty_incident_id")
    return str(value) if value else None


def object_link(settings: Settings, bucket: str, key: str) -> str:
    """A link a person can open: the S3 console in AWS, the object URL on a local endpoint."""
    if settings.s3_endpoint:
        return f"{settings.s3_endpoint.rstrip('/')}/{bucket}/{quote(key)}"
    return (f"https://console.aws.amazon.com/s3/object/{bucket}?region={settings.region}"
            f"&prefix={quote(key, safe='')}")


def coverage_lines(manifest: Mapping[str, Any]) -> list[str]:
    request = manifest.get("request") or {}
    lines = []
    for node, cov in sorted((manifest.get("coverage") or {}).items()):
        covered_s = sum(end - start for start, end in cov.get("covered_ns", [])) / NS
        gaps_s = sum(end - start for start, end in cov.get("gaps_ns", [])) / NS
        window_s = covered_s + gaps_s
        lines.append(f"- {node}: {cov.get('segments', 0)} segments, {covered_s:.0f} s of {window_s:.0f} s covered"
                     f" ({len(cov.get('gaps_ns', []))} gaps, {len(cov.get('seq_gaps', []))} seq gaps), "
                     f"{cov.get('packets', 0)} packets, drops kernel {cov.get('kernel_drops', 0)} / agent "
                     f"{cov.get('agent_drops', 0)}")
    if not lines:
        lines.append(f"- no segment found in the window {request.get('window_start')} .. {request.get('window_end')}")
    return lines


def freeze_note(settings: Settings, manifest: Mapping[str, Any]) -> str:
    incident_id = str(manifest["incident_id"])
    request = manifest.get("request") or {}
    lock = request.get("lock") or {}
    segments = len(manifest.get("segments") or [])
    hold = manifest.get("hold")
    return "\n".join([
        f"freezeframe froze the network evidence of this incident ({incident_id}).",
        f"Window: {request.get('window_start')} .. {request.get('window_end')}; {segments} segments locked "
        f"{lock.get('mode')} until {lock.get('retain_until')}" + (", legal hold" if lock.get("legal_hold") else "")
        + (f"; segments arriving until {hold.get('closes_at')} are locked as they come"
           if isinstance(hold, Mapping) else "") + ".",
        f"Evidence: s3://{settings.evidence_bucket}/{manifest_key(incident_id)} (root hash "
        f"{manifest.get('root_hash')})",
        "Coverage:",
        *coverage_lines(manifest),
        "Dissection has started; a second note follows with the report.",
        f"Verify: freezeframe verify {incident_id}",
    ])


def finalize_note(settings: Settings, manifest: Mapping[str, Any], summary: Mapping[str, Any]) -> str:
    incident_id = str(manifest["incident_id"])
    report_key = (summary.get("report") or {}).get("key")
    rows = ", ".join(f"{table} {count}" for table, count in (summary.get("rows") or {}).items()) or "no rows"
    failed = [n["node"] for n in summary.get("nodes", []) if n.get("state") != "done"]
    return "\n".join([
        f"freezeframe dissected the evidence of this incident ({incident_id}): {summary.get('state')}.",
        f"Tables: {rows}" + (f"; nodes not dissected: {', '.join(failed)}" if failed else ""),
        (f"Report: {object_link(settings, settings.evidence_bucket, report_key)}" if report_key
         else "Report: not written (see the incident summary)"),
        f"Evidence: s3://{settings.evidence_bucket}/{manifest_key(incident_id)}",
        "Coverage:",
        *coverage_lines(manifest),
        f"Query: freezeframe query --incident {incident_id} --scenario first-failing-service",
        f"Verify: freezeframe verify {incident_id}",
    ])


def _post(settings: Settings, manifest: Mapping[str, Any], content: str) -> pagerduty_api.NoteResult | None:
    target = pagerduty_incident(manifest)
    if target is None:
        return None
    try:
        token = pagerduty_api_token(settings)
    except ConfigError as exc:
        logger.error("pagerduty post-back not configured", extra={"error": str(exc)})
        return None
    if token is None:
        return None
    if not settings.pagerduty_from:
        logger.error("pagerduty post-back needs FREEZEFRAME_PAGERDUTY_FROM (a PagerDuty user's e-mail)")
        return None
    return pagerduty_api.add_note(settings.pagerduty_api_url, token, settings.pagerduty_from, target, content)


def after_freeze(settings: Settings, manifest: Mapping[str, Any]) -> pagerduty_api.NoteResult | None:
    """The freeze step's note (None: not a PagerDuty incident, or no token configured)."""
    try:
        return _post(settings, manifest, freeze_note(settings, manifest))
    except Exception:  # noqa: BLE001 - a post-back must never fail the freeze
        logger.exception("pagerduty post-back failed", extra={"incident_id": manifest.get("incident_id")})
        return None


def after_finalize(settings: Settings, manifest: Mapping[str, Any], summary: Mapping[str, Any]
                   ) -> pagerduty_api.NoteResult | None:
    try:
        return _post(settings, manifest, finalize_note(settings, manifest, summary))
    except Exception:  # noqa: BLE001 - a post-back must never fail finalize
        logger.exception("pagerduty post-back failed", extra={"incident_id": manifest.get("incident_id")})
        return None
