"""Alert intake: authenticate, parse, and turn alerts into create-only incident records plus a freeze invocation.

Authentication and the whole parse happen before the first write, so a rejected request writes nothing.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from freezeframe.adapters import s3 as s3io
from freezeframe.alerts import alertmanager
from freezeframe.config import Settings
from freezeframe.errors import PayloadError, SignatureError
from freezeframe.keys import freeze_started_key, incident_key
from freezeframe.models import FreezeRequest, iso

logger = logging.getLogger(__name__)
MAX_BODY_BYTES = 1024 * 1024
INCIDENT_SCHEMA = "freezeframe.incident/v1"


class BodyTooLargeError(PayloadError):
    """The body is over MAX_BODY_BYTES; maps to HTTP 413."""


@dataclass(frozen=True, slots=True)
class IntakeResult:
    accepted: tuple[str, ...]
    duplicates: tuple[str, ...]
    resolved: tuple[str, ...]
    truncated_alerts: int

    def to_dict(self) -> dict[str, Any]:
        return {"accepted": list(self.accepted), "duplicates": list(self.duplicates),
                "resolved": list(self.resolved), "truncated_alerts": self.truncated_alerts}


def check_bearer(headers: Mapping[str, str], expected_token: str) -> None:
    """Constant-time check of `Authorization: Bearer <token>`; the header's value is never echoed."""
    auth = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
    scheme, _, presented = auth.partition(" ")
    # compare_digest on bytes of both, so a wrong scheme or length costs the same as a wrong token.
    valid_scheme = hmac.compare_digest(scheme.lower().encode(), b"bearer")
    valid_token = hmac.compare_digest(presented.strip().encode(), expected_token.encode())
    if not (valid_scheme and valid_token):
        raise SignatureError("missing or invalid bearer token")


def accept_alertmanager(settings: Settings, s3: Any, headers: Mapping[str, str], body: bytes, token: str,
                        now: datetime, start_freeze: Callable[[FreezeRequest], None]) -> IntakeResult:
    if len(body) > MAX_BODY_BYTES:
        raise BodyTooLargeError(f"body of {len(body)} bytes is over the {MAX_BODY_BYTES} byte limit")
    check_bearer(headers, token)
    batch = alertmanager.to_freeze_requests(alertmanager.parse_body(body), settings, now)
    if batch.truncated_alerts:
        logger.warning("alertmanager truncated alerts", extra={"truncated_alerts": batch.truncated_alerts,
                                                               "group_key": batch.group_key})
    accepted, duplicates = [], []
    for request in batch.requests:
        record = {"schema": INCIDENT_SCHEMA, "incident_id": request.incident_id, "state": "accepted",
                  "request": request.to_dict(), "truncated_alerts": batch.truncated_alerts,
                  "created_at": iso(now)}
        created = s3io.put_json(s3, settings.evidence_bucket, incident_key(request.incident_id), record,
                                create_only=True)
        if created is None:
            duplicates.append(request.incident_id)
            # A delivery whose first attempt died between the record and the hand-off is retried here;
            # the freeze itself is idempotent (create-only manifest), so a race costs a no-op, not a second freeze.
            if not s3io.exists(s3, settings.evidence_bucket, freeze_started_key(request.incident_id)):
                _hand_off(settings, s3, request, now, start_freeze)
            continue
        _hand_off(settings, s3, request, now, start_freeze)
        accepted.append(request.incident_id)
        logger.info("incident accepted", extra={"incident_id": request.incident_id, "source": request.source})
    return IntakeResult(tuple(accepted), tuple(duplicates), batch.resolved_incidents, batch.truncated_alerts)


def _hand_off(settings: Settings, s3: Any, request: FreezeRequest, now: datetime,
              start_freeze: Callable[[FreezeRequest], None]) -> None:
    start_freeze(request)
    s3io.put_json(s3, settings.evidence_bucket, freeze_started_key(request.incident_id),
                  {"incident_id": request.incident_id, "at": iso(now)}, create_only=True)
