"""The manual freeze API (`POST /v1/freeze`): an explicit window, scope and lock.

    {"incident_id": "optional, else derived", "title": "...", "severity": "high",
     "window_start": "2026-11-21T11:45:00Z", "window_end": "2026-11-21T12:05:00Z",
     "scope": {"cluster": "prod", "nodes": [], "namespaces": ["shop"], "pods": []},
     "lock": {"mode": "COMPLIANCE", "retain_days": 30, "legal_hold": false}}   # or "retain_until": ISO time

Without an incident_id, the id is a hash of the window, scope and title, so a client's retry is the same incident.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from freezeframe.contracts.config import Settings
from freezeframe.contracts.errors import PayloadError
from freezeframe.contracts.keys import check_name
from freezeframe.contracts.models import FreezeRequest, LockSpec, Scope, parse_iso
from freezeframe.intake.window import check_requested_window


def to_freeze_request(payload: Mapping[str, Any], settings: Settings, now: datetime) -> FreezeRequest:
    for name in ("window_start", "window_end"):
        if not isinstance(payload.get(name), str):
            raise PayloadError(f"missing field {name!r} (an ISO 8601 time)")
    start = parse_iso(payload["window_start"], "window_start")
    end = parse_iso(payload["window_end"], "window_end")
    start, end = check_requested_window(start, end, now)
    scope_raw = payload.get("scope") or {"cluster": settings.cluster}
    if not isinstance(scope_raw, Mapping):
        raise PayloadError("scope must be an object")
    scope = Scope.from_dict({"cluster": settings.cluster, **scope_raw})
    check_name("cluster", scope.cluster)
    lock_raw = payload.get("lock") or {}
    if not isinstance(lock_raw, Mapping):
        raise PayloadError("lock must be an object")
    mode = lock_raw.get("mode", settings.lock_mode)
    if mode not in ("COMPLIANCE", "GOVERNANCE"):
        raise PayloadError(f"lock.mode must be COMPLIANCE or GOVERNANCE, got {mode!r}")
    retain_until = _retain_until(lock_raw, settings, now)
    legal_hold = lock_raw.get("legal_hold", False)
    if not isinstance(legal_hold, bool):  # "false" is a string, and bool("false") would place a legal hold
        raise PayloadError("lock.legal_hold must be true or false")
    title = payload.get("title", "manual freeze")
    severity = payload.get("severity", "unknown")
    if not isinstance(title, str) or not isinstance(severity, str):
        raise PayloadError("title and severity must be strings")
    incident_id = payload.get("incident_id")
    if incident_id is None:
        canonical = json.dumps({"start": payload["window_start"], "end": payload["window_end"],
                                "scope": scope.to_dict(), "title": title}, sort_keys=True)
        incident_id = "api-" + hashlib.sha256(canonical.encode()).hexdigest()[:20]
    if not isinstance(incident_id, str):
        raise PayloadError("incident_id must be a string")
    return FreezeRequest(incident_id=check_name("incident_id", incident_id), source="api", title=title,
                         severity=severity, window_start=start, window_end=end, scope=scope,
                         lock=LockSpec(mode, retain_until, legal_hold),
                         received_at=now)


def _retain_until(lock_raw: Mapping[str, Any], settings: Settings, now: datetime) -> datetime:
    """`lock.retain_until` (an ISO time) or `lock.retain_days`, in the future and at most settings.max_retain_days
    ahead: a COMPLIANCE lock can never be shortened, so the bound is checked before anything is locked."""
    longest = timedelta(days=settings.max_retain_days)
    if "retain_until" in lock_raw:
        if not isinstance(lock_raw["retain_until"], str):
            raise PayloadError("lock.retain_until must be an ISO 8601 time")
        retain_until = parse_iso(lock_raw["retain_until"], "lock.retain_until")
        if retain_until <= now:
            raise PayloadError("lock.retain_until must be in the future")
        if retain_until - now > longest:
            raise PayloadError(f"lock.retain_until is more than the configured maximum of "
                               f"{settings.max_retain_days} days ahead")
        return retain_until
    days = lock_raw.get("retain_days", settings.lock_retain_days)
    if not isinstance(days, int) or isinstance(days, bool) or days < 1:
        raise PayloadError("lock.retain_days must be a positive integer")
    if days > settings.max_retain_days:
        raise PayloadError(f"lock.retain_days {days} is over the configured maximum of {settings.max_retain_days}")
    return now + timedelta(days=days)
