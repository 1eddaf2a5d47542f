"""PagerDuty Webhooks v3 (webhook subscriptions).

https://developer.pagerduty.com/docs/webhooks/v3-overview/: every delivery is one JSON object
`{"event": {"id", "event_type", "resource_type", "occurred_at", "agent", "client", "data"}}`; for incident events
`data` is the incident (id, number, title, status, urgency, priority, service, html_url).
https://developer.pagerduty.com/docs/webhooks/verifying-signatures/: `X-PagerDuty-Signature` carries one or more
comma-separated `v1=<hex HMAC-SHA256 of the raw body>`, one per signing secret, so that a secret can be rotated
without downtime. Deliveries are at-least-once; a retry repeats the body and the `X-Webhook-Id` header.

The flow a handler follows: `verify_signature` on the raw bytes, decode the JSON, `event_type_of` (any v3 event,
including `pagey.ping` and non-incident types, so it never 4xx's an event we merely ignore), then for FREEZE_TYPES
`parse_event` and `to_freeze_request`, for CLOSE_TYPES `parse_event` and `closed_incident_id`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from freezeframe.contracts.config import Settings
from freezeframe.contracts.errors import ConfigError, PayloadError, SignatureError
from freezeframe.contracts.keys import check_name
from freezeframe.contracts.models import FreezeRequest, LockSpec, Scope, iso, parse_iso
from freezeframe.intake.rules import FreezeRules
from freezeframe.intake.window import freeze_window

SIGNATURE_HEADER = "x-pagerduty-signature"
SIGNATURE_VERSION = "v1"
# PagerDuty sends one signature per active secret (two during a rotation); more than this is not PagerDuty and would
# only make us compute HMAC comparisons for an attacker.
MAX_SIGNATURES = 8
FREEZE_TYPES = ("incident.triggered", "incident.reopened")
CLOSE_TYPES = ("incident.resolved",)
INCIDENT_PREFIX = "pd-"


@dataclass(frozen=True, slots=True)
class PagerDutyEvent:
    """One v3 incident event. `incident_id` is PagerDuty's incident id (e.g. PGR0VU2), not freezeframe's."""

    event_id: str
    event_type: str
    occurred_at: datetime
    incident_id: str
    incident_number: int
    title: str
    urgency: str
    priority: str | None
    service_id: str
    service_name: str
    status: str
    html_url: str


def verify_signature(headers: Mapping[str, str], raw_body: bytes, secrets: Sequence[str]) -> None:
    """Accepts when any `v1` signature in the header matches the HMAC of the body under any configured secret.

    Every HMAC and every comparison is computed, so the time taken does not tell which secret (or which presented
    signature) matched. Unknown versions (`v2=...`) are skipped. The error never echoes the header or a secret.
    """
    if isinstance(secrets, str):  # a bare str is a Sequence[str] of one-character "secrets"
        raise ConfigError("PagerDuty signing secrets must be a list of secrets, not one string")
    if not secrets or any(not secret for secret in secrets):
        raise ConfigError("no PagerDuty webhook signing secret is configured (or one of them is empty)")
    header = next((value for name, value in headers.items() if name.lower() == SIGNATURE_HEADER), "")
    presented = []
    for part in header.split(","):
        version, sep, value = part.strip().partition("=")
        if sep and version == SIGNATURE_VERSION:
            # Bytes, not str: compare_digest refuses non-ASCII str, and the header is attacker-controlled.
            presented.append(value.strip().lower().encode("utf-8", "replace"))
    if not presented or len(presented) > MAX_SIGNATURES:
        raise SignatureError("missing or invalid PagerDuty signature")
    expected = [hmac.new(secret.encode(), raw_body, hashlib.sha256).hexdigest().encode() for secret in secrets]
    matched = False
    for want in expected:
        for got in presented:
            matched |= hmac.compare_digest(want, got)
    if not matched:
        raise SignatureError("missing or invalid PagerDuty signature")


def event_type_of(payload: Mapping[str, Any]) -> str:
    """Validates the envelope common to every v3 event and returns `event.event_type`.

    A handler calls this before `parse_event`: events it does not act on (acknowledged, annotated, the
    `pagey.ping` sent when a subscription is created) must get a 2xx, not a 400, because PagerDuty counts
    rejected deliveries against the subscription.
    """
    return str(_envelope(payload)["event_type"])


def event_id_of(payload: Mapping[str, Any]) -> str:
    """`event.id`: PagerDuty's id of the event, the same in every delivery of it (redeliveries included)."""
    return str(_envelope(payload)["id"])


def parse_event(payload: Mapping[str, Any]) -> PagerDutyEvent:
    """The incident event in a v3 payload; PayloadError names the missing or malformed field.

    `agent` and `client` may be null (PagerDuty sends null for system-initiated events) and are not used.
    """
    event = _envelope(payload)
    if event["resource_type"] != "incident":
        raise PayloadError(f"event.resource_type must be 'incident', got {event['resource_type']!r}")
    data = event["data"]
    if data.get("type") != "incident":
        raise PayloadError(f"event.data.type must be 'incident', got {data.get('type')!r}")
    service = _object(data, "service", "event.data.service")
    priority_raw = data.get("priority")
    if priority_raw is None:
        priority = None
    elif isinstance(priority_raw, Mapping):
        priority = _string(priority_raw, "summary", "event.data.priority.summary")
    else:
        raise PayloadError("event.data.priority must be an object or null")
    number = data.get("number")
    if not isinstance(number, int) or isinstance(number, bool):
        raise PayloadError("missing or malformed field 'event.data.number' (an integer)")
    return PagerDutyEvent(
        event_id=event["id"],
        event_type=event["event_type"],
        occurred_at=parse_iso(event["occurred_at"], "event.occurred_at"),
        incident_id=_string(data, "id", "event.data.id"),
        incident_number=number,
        title=_string(data, "title", "event.data.title"),
        urgency=_string(data, "urgency", "event.data.urgency"),
        priority=priority,
        service_id=_string(service, "id", "event.data.service.id"),
        service_name=_string(service, "summary", "event.data.service.summary"),
        status=_string(data, "status", "event.data.status"),
        html_url=_string(data, "html_url", "event.data.html_url"),
    )


def base_incident_id(pagerduty_incident_id: str) -> str:
    """freezeframe's id for a PagerDuty incident's first trigger; every reopen's id starts with it plus '-'."""
    digest = hashlib.sha256(f"pagerduty|{pagerduty_incident_id}".encode()).hexdigest()[:20]
    return f"{INCIDENT_PREFIX}{digest}"


def incident_id_for(event: PagerDutyEvent) -> str:
    """freezeframe's incident id for a trigger or reopen.

    - `incident.triggered`: a hash of PagerDuty's incident id only. An incident triggers once; every redelivery
      (same X-Webhook-Id, event id and occurred_at) and any duplicate trigger event land on the same id, which the
      create-only incident record turns into a no-op. The webhook/event id is not used: it would differ if
      PagerDuty ever emitted the trigger twice, and it says nothing about which incident this is.
    - `incident.reopened`: the base id plus a hash of event_type and occurred_at. A reopen is the same PagerDuty
      incident, but the problem is back at a new time, and an on-call engineer expects the traffic around the
      reopen to be frozen; reusing the trigger's id would make the create-only record swallow it as a duplicate
      and freeze nothing. A redelivered reopen carries the same occurred_at, so it is still stable, and each
      later reopen gets its own id. Sharing the base id as a prefix lets a resolve find the whole family.
    """
    base = base_incident_id(event.incident_id)
    if event.event_type == "incident.triggered":
        return base
    if event.event_type == "incident.reopened":
        digest = hashlib.sha256(f"{event.event_type}|{iso(event.occurred_at)}".encode()).hexdigest()[:8]
        return f"{base}-r{digest}"
    raise PayloadError(f"event type {event.event_type!r} does not start a freeze (expected one of {FREEZE_TYPES})")


def closed_incident_id(event: PagerDutyEvent) -> str:
    """The base id that an `incident.resolved` closes; reopens of the same incident are `<base>-r...`."""
    if event.event_type not in CLOSE_TYPES:
        raise PayloadError(f"event type {event.event_type!r} does not close an incident (expected {CLOSE_TYPES})")
    return base_incident_id(event.incident_id)


def severity_of(event: PagerDutyEvent) -> str:
    """Urgency ('high' | 'low'), qualified by the priority when the account uses priorities: 'high/P1'."""
    return event.urgency if event.priority is None else f"{event.urgency}/{event.priority}"


def to_freeze_request(event: PagerDutyEvent, settings: Settings, now: datetime,
                      scope_cluster: str | None = None, rules: FreezeRules | None = None) -> FreezeRequest | None:
    """The freeze for a trigger or reopen: [occurred_at - look-back, max(now, occurred_at) + look-ahead].

    PagerDuty knows services, not Kubernetes objects, so the scope is the whole cluster (settings.cluster unless
    `scope_cluster` is given); the service, urgency and priority travel as labels. None when a freeze rule says
    this service, urgency or priority does not freeze.
    """
    incident_id = incident_id_for(event)
    decision = (rules or FreezeRules()).decide(
        settings, source="pagerduty", severity=severity_of(event), labels={},
        attributes={"service": event.service_name, "service_id": event.service_id, "urgency": event.urgency,
                    "priority": event.priority or ""})
    if not decision.freeze:
        return None
    window_start, window_end = freeze_window(event.occurred_at, now, decision.lookback_s, decision.lookahead_s)
    labels = {
        "pagerduty_event_id": event.event_id,
        "pagerduty_event_type": event.event_type,
        "pagerduty_incident_id": event.incident_id,
        "pagerduty_incident_number": str(event.incident_number),
        "pagerduty_incident_url": event.html_url,
        "pagerduty_service_id": event.service_id,
        "pagerduty_service": event.service_name,
        "urgency": event.urgency,
    }
    if event.priority is not None:
        labels["priority"] = event.priority
    return FreezeRequest(
        incident_id=incident_id,
        source="pagerduty",
        title=event.title,
        severity=severity_of(event),
        window_start=window_start,
        window_end=window_end,
        scope=Scope(cluster=check_name("cluster", scope_cluster or settings.cluster)),
        lock=LockSpec(mode=decision.lock_mode, retain_until=now + timedelta(days=decision.retain_days),
                      legal_hold=decision.legal_hold),
        labels=tuple(sorted(labels.items())),
        received_at=now.astimezone(UTC),
        alert_at=event.occurred_at,
    )


def _envelope(payload: Mapping[str, Any]) -> Mapping[str, Any]:
    if not isinstance(payload, Mapping):
        raise PayloadError("body must be a JSON object")
    event = _object(payload, "event", "event")
    for name in ("id", "event_type", "resource_type", "occurred_at"):
        _string(event, name, f"event.{name}")
    for name in ("agent", "client"):
        if event.get(name) is not None and not isinstance(event[name], Mapping):
            raise PayloadError(f"event.{name} must be an object or null")
    _object(event, "data", "event.data")
    return event


def _object(raw: Mapping[str, Any], name: str, path: str) -> Mapping[str, Any]:
    value = raw.get(name)
    if not isinstance(value, Mapping):
        raise PayloadError(f"missing or malformed field {path!r} (an object)")
    return value


def _string(raw: Mapping[str, Any], name: str, path: str) -> str:
    value = raw.get(name)
    if not isinstance(value, str) or not value:
        raise PayloadError(f"missing or malformed field {path!r} (a non-empty string)")
    return value
