"""Alert intake: authenticate, parse, and turn alerts into create-only incident records plus a freeze hand-off.

Authentication and the whole parse happen before the first write, so a rejected request writes nothing.

Idempotency: the incident record `incidents/<id>/incident.json` is written create-only (S3 `If-None-Match: *`),
so of any number of concurrent deliveries of one alert exactly one creates it, and only that one hands the freeze
off. A conditional write was chosen over powertools idempotency because the record is the evidence's own first
document (no extra DynamoDB table, the same code on every S3 endpoint) and S3 arbitrates the race atomically.
A delivery that died between the record and the hand-off is healed by a later redelivery once the record is older
than HANDOFF_GRACE and still has no `freeze-started` marker; the freeze is itself idempotent (create-only
manifest), so even that rare path cannot freeze twice.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from freezeframe.adapters import s3 as s3io
from freezeframe.adapters.s3 import ObjectStore
from freezeframe.contracts.config import Settings
from freezeframe.contracts.documents import FreezeStarted, IncidentRecord, Resolved, WebhookDelivery
from freezeframe.contracts.errors import CustodyError, NotFoundError, PayloadError, SignatureError
from freezeframe.contracts.keys import (
    freeze_started_key,
    incident_key,
    manifest_key,
    resolved_key,
    tables_prefix,
    webhook_delivery_key,
)
from freezeframe.contracts.models import FreezeRequest, iso, parse_iso
from freezeframe.custody.incident import load_incident, partial_until, read_record
from freezeframe.freeze.lifecycle import freeze_failure
from freezeframe.freeze.unverified import unverified_of
from freezeframe.intake import alertmanager, manual, pagerduty
from freezeframe.intake.rules import FreezeRules

logger = logging.getLogger(__name__)
MAX_BODY_BYTES = 1024 * 1024
HANDOFF_GRACE = timedelta(seconds=60)
StartFreeze = Callable[[FreezeRequest], None]


class BodyTooLargeError(PayloadError):
    """The body is over MAX_BODY_BYTES; maps to HTTP 413."""


@dataclass(frozen=True, slots=True)
class IntakeResult:
    accepted: tuple[str, ...]
    duplicates: tuple[str, ...]
    resolved: tuple[str, ...] = ()
    truncated_alerts: int = 0
    ignored: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"accepted": list(self.accepted), "duplicates": list(self.duplicates),
                "resolved": list(self.resolved), "truncated_alerts": self.truncated_alerts,
                "ignored": list(self.ignored)}


def check_size(body: bytes) -> None:
    if len(body) > MAX_BODY_BYTES:
        raise BodyTooLargeError(f"body of {len(body)} bytes is over the {MAX_BODY_BYTES} byte limit")


def check_bearer(headers: Mapping[str, str], expected_token: str) -> None:
    """Constant-time check of `Authorization: Bearer <token>`; the header's value is never echoed."""
    if not expected_token:
        # An IAM-only deployment: never let an empty presented token equal an empty expected one.
        raise SignatureError("bearer tokens are not accepted here: no API token is configured")
    auth = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
    scheme, _, presented = auth.partition(" ")
    # compare_digest on bytes of both, so a wrong scheme or length costs the same as a wrong token.
    valid_scheme = hmac.compare_digest(scheme.lower().encode(), b"bearer")
    valid_token = hmac.compare_digest(presented.strip().encode(), expected_token.encode())
    if not (valid_scheme and valid_token):
        raise SignatureError("missing or invalid bearer token")


def register(settings: Settings, s3: ObjectStore, requests: Iterable[FreezeRequest], now: datetime,
             start_freeze: StartFreeze, extra: Mapping[str, Any] | None = None) -> tuple[list[str], list[str]]:
    """Create-only incident records; hands off a freeze for each record this call created."""
    accepted, duplicates = [], []
    for request in requests:
        record = IncidentRecord(request=request, incident_id=request.incident_id, state="accepted",
                                created_at=iso(now), extra=dict(extra or {})).to_dict()
        created = s3io.put_json(s3, settings.evidence_bucket, incident_key(request.incident_id), record,
                                create_only=True)
        if created is not None:
            _hand_off(settings, s3, request, now, start_freeze)
            accepted.append(request.incident_id)
            logger.info("incident accepted", extra={"incident_id": request.incident_id, "source": request.source})
            continue
        duplicates.append(request.incident_id)
        if _stalled(settings, s3, request.incident_id, now):
            logger.warning("healing a stalled hand-off", extra={"incident_id": request.incident_id})
            _hand_off(settings, s3, request, now, start_freeze)
    return accepted, duplicates


def check_bearer_or_basic(headers: Mapping[str, str], expected: str) -> None:
    """Alertmanager's `authorization` (bearer) or `basic_auth` http_config: a bearer token equal to the secret, or
    basic credentials whose `user:password` equals it. Both comparisons always run, in constant time."""
    auth = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
    scheme, _, presented = auth.partition(" ")
    try:
        basic = base64.b64decode(presented.strip(), validate=True)
    except (binascii.Error, ValueError):
        basic = b""
    bearer_ok = hmac.compare_digest(scheme.lower().encode(), b"bearer") & hmac.compare_digest(
        presented.strip().encode(), expected.encode())
    basic_ok = hmac.compare_digest(scheme.lower().encode(), b"basic") & hmac.compare_digest(basic, expected.encode())
    if not (bearer_ok or basic_ok):
        raise SignatureError("missing or invalid credentials")


def accept_alertmanager(settings: Settings, s3: ObjectStore, headers: Mapping[str, str], body: bytes, token: str,
                        now: datetime, start_freeze: StartFreeze, rules: FreezeRules | None = None) -> IntakeResult:
    check_size(body)
    check_bearer_or_basic(headers, token)
    batch = alertmanager.to_freeze_requests(alertmanager.parse_body(body), settings, now, rules)
    if batch.truncated_alerts:
        logger.warning("alertmanager truncated alerts", extra={"truncated_alerts": batch.truncated_alerts,
                                                               "group_key": batch.group_key})
    accepted, duplicates = register(settings, s3, batch.requests, now, start_freeze,
                                    {"truncated_alerts": batch.truncated_alerts})
    resolved = record_resolved(settings, s3, batch.resolved_incidents, now)
    return IntakeResult(tuple(accepted), tuple(duplicates), resolved, batch.truncated_alerts, batch.ignored)


def accept_pagerduty(settings: Settings, s3: ObjectStore, headers: Mapping[str, str], body: bytes, secrets: list[str],
                     now: datetime, start_freeze: StartFreeze, rules: FreezeRules | None = None) -> IntakeResult:
    """PagerDuty v3: triggered/reopened freeze, resolved closes, every other type is acknowledged and ignored
    (a 4xx would count against the subscription).

    Redeliveries are recognised by the event's own id (`event.id`, inside the signed body, so a replay cannot change
    it) as well as by X-Webhook-Id (a header outside the signature, which a replay can change at will). A recognised
    delivery writes nothing. The marker of a delivery is keyed by its event id."""
    check_size(body)
    pagerduty.verify_signature(headers, body, secrets)
    payload = alertmanager.parse_body(body)
    event_type = pagerduty.event_type_of(payload)
    event_id = pagerduty.event_id_of(payload)
    delivery = next((v for k, v in headers.items() if k.lower() == "x-webhook-id"), "")
    marker = webhook_delivery_key("pagerduty", f"event:{event_id}")
    # The X-Webhook-Id marker is what earlier versions wrote; it still recognises their deliveries.
    seen = [marker, *([webhook_delivery_key("pagerduty", delivery)] if delivery else [])]
    if any(s3io.exists(s3, settings.evidence_bucket, key) for key in seen):
        return IntakeResult((), (f"delivery:{event_id}",))
    result = IntakeResult((), (), ignored=(event_type,))
    if event_type in pagerduty.FREEZE_TYPES:
        request = pagerduty.to_freeze_request(pagerduty.parse_event(payload), settings, now, rules=rules)
        if request is not None:
            accepted, duplicates = register(settings, s3, [request], now, start_freeze)
            result = IntakeResult(tuple(accepted), tuple(duplicates))
    elif event_type in pagerduty.CLOSE_TYPES:
        closed = pagerduty.closed_incident_id(pagerduty.parse_event(payload))
        result = IntakeResult((), (), record_resolved(settings, s3, [closed], now))
    s3io.put_json(s3, settings.evidence_bucket, marker,
                  WebhookDelivery(event_id, delivery, event_type, iso(now), result.accepted, result.duplicates,
                                  result.resolved, result.truncated_alerts, result.ignored).to_dict(),
                  create_only=True)
    return result


def record_resolved(settings: Settings, s3: ObjectStore, incident_ids: Iterable[str], now: datetime) -> tuple[str, ...]:
    """Marks known incidents resolved (the signal that closes their open hold); unknown ids are ignored."""
    closed = []
    for incident_id in incident_ids:
        if not s3io.exists(s3, settings.evidence_bucket, incident_key(incident_id)):
            continue
        s3io.put_json(s3, settings.evidence_bucket, resolved_key(incident_id),
                      Resolved(incident_id, iso(now)).to_dict(), create_only=True)
        closed.append(incident_id)
    return tuple(closed)


def iam_caller(request_context: Mapping[str, Any]) -> str | None:
    """The caller's ARN when AWS verified the request's SigV4 signature before invoking the function: an HTTP API
    route with AWS_IAM authorization, or a Function URL with AuthType AWS_IAM, both put it in payload 2.0's
    `requestContext.authorizer.iam`. The request context is written by AWS, never by the caller, so the field
    cannot be forged over a route without IAM authorization (there it is absent)."""
    iam = (request_context.get("authorizer") or {}).get("iam") or {}
    arn = iam.get("userArn") or iam.get("callerId")
    return str(arn) if arn else None


def accept_manual(settings: Settings, s3: ObjectStore, headers: Mapping[str, str], body: bytes,
                  token: Callable[[], str], now: datetime, start_freeze: StartFreeze,
                  caller_arn: str | None = None) -> IntakeResult:
    """POST /v1/freeze: signed by IAM in AWS (`caller_arn`, verified by AWS before the call), else a bearer token,
    read through `token` only when needed, so an IAM-only deployment needs no token at all."""
    check_size(body)
    if caller_arn is None:
        check_bearer(headers, token())
    request = manual.to_freeze_request(alertmanager.parse_body(body), settings, now)
    requested_by = {"iam": caller_arn} if caller_arn else {"token": True}
    accepted, duplicates = register(settings, s3, [request], now, start_freeze, {"requested_by": requested_by})
    return IntakeResult(tuple(accepted), tuple(duplicates))


def incident_status(settings: Settings, s3: ObjectStore, incident_id: str) -> dict[str, Any]:
    """What an on-call engineer asks first: is it frozen, what is covered, is dissection done, where is it."""
    record = read_record(settings, s3, incident_id)
    status: dict[str, Any] = {"incident_id": incident_id, "state": "accepted", "request": record.request.to_dict(),
                              "created_at": record.created_at,
                              "links": {"incident": f"s3://{settings.evidence_bucket}/{incident_key(incident_id)}"}}
    try:
        # The versions the signed chain names, never the latest.
        incident = load_incident(settings, s3, incident_id, record=False, summary=False)
    except NotFoundError:
        failure = freeze_failure(settings, s3, incident_id)
        if failure is not None:
            status.update(state="failed", error=failure.error, failed_at=failure.failed_at, attempts=failure.attempts)
        return status
    except CustodyError as exc:
        # Served as the truth only what the chain vouches for: a broken chain shows as such, with nothing else.
        status.update(state="custody-broken", custody={"ok": False, "error": str(exc)})
        return status
    pinned, manifest, parts = incident.pinned, incident.manifest_document, incident.part_documents
    nodes = incident.nodes
    dissection: dict[str, dict[str, Any]] = {}
    for node in nodes:
        report = incident.statuses.get(node)
        dissection[node] = {"state": "pending"} if report is None else {
            "state": report.state, "tables": dict(report.tables), "corrupt_segments": len(report.corrupt_segments)}
    done = all(d["state"] == "done" for d in dissection.values())
    unverified = [u.to_dict() for document in [manifest, *parts] for u in unverified_of(document)]
    # Tables are partial while the hold is open: until the last pass after it closes (freezeframe.freeze.follow).
    until = partial_until(settings, s3, incident)
    status.update(
        state="dissected" if nodes and done else "frozen_with_problems" if unverified else "frozen",
        tables="partial" if until else "complete" if nodes and done else "pending",
        partial_until=until,
        unverified=unverified,
        late_segments=sum(len(part.segments) for part in incident.parts),
        frozen_segments=len(incident.manifest.segments),
        root_hash=incident.manifest.root_hash,
        coverage=dict(incident.manifest.coverage),
        dissection=dissection,
    )
    status["custody"] = {"ok": True, "signed": pinned.signed, "manifest_version": pinned.manifest.version_id,
                         "parts": len(pinned.parts)}
    status["links"].update(manifest=f"s3://{settings.evidence_bucket}/{manifest_key(incident_id)}"
                                    f"?versionId={pinned.manifest.version_id}",
                           tables=f"s3://{settings.evidence_bucket}/{tables_prefix()}")
    return status


def _stalled(settings: Settings, s3: ObjectStore, incident_id: str, now: datetime) -> bool:
    if s3io.exists(s3, settings.evidence_bucket, freeze_started_key(incident_id)):
        return False
    record = read_record(settings, s3, incident_id)
    return now - parse_iso(str(record.created_at), "created_at") > HANDOFF_GRACE


def _hand_off(settings: Settings, s3: ObjectStore, request: FreezeRequest, now: datetime,
              start_freeze: StartFreeze) -> None:
    start_freeze(request)
    s3io.put_json(s3, settings.evidence_bucket, freeze_started_key(request.incident_id),
                  FreezeStarted(request.incident_id, iso(now)).to_dict(), create_only=True)
