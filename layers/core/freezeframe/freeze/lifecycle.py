"""The freeze's failed attempts and its terminal "failed" state.

A freeze never aborts for one bad version (it locks it and records it as unverified), but it can still fail as a
whole: the raw bucket unreachable, permissions missing. The freeze function is invoked asynchronously with two
retries (template.yaml: MaximumRetryAttempts 2; the local gateway does the same), so each failed attempt is recorded
create-only under `incidents/<id>/freeze-attempts/<n>.json`, and the attempt that reaches `freeze_attempts` writes
`incidents/<id>/freeze-failed.json` with the error: the incident API then says "failed" with that error instead of
"accepted" forever. A later successful freeze (a manual retry) wins: the manifest is what counts.
"""

from __future__ import annotations

import logging
from datetime import datetime

from freezeframe.adapters import s3 as s3io
from freezeframe.adapters.s3 import ObjectStore
from freezeframe.contracts.config import Settings
from freezeframe.contracts.documents import FreezeAttempt, FreezeFailed
from freezeframe.contracts.errors import NotFoundError
from freezeframe.contracts.keys import attempt_key, attempts_prefix, failed_key
from freezeframe.contracts.models import iso

logger = logging.getLogger(__name__)
MAX_ERROR_CHARS = 2000


def record_failed_attempt(settings: Settings, s3: ObjectStore, incident_id: str, error: BaseException,
                          now: datetime) -> int:
    """Records one failed freeze attempt; returns how many have failed. The last allowed one writes the terminal
    record. Never raises for its own sake: the caller re-raises the freeze's error."""
    message = f"{type(error).__name__}: {error}"[:MAX_ERROR_CHARS]
    attempts = sum(1 for _ in s3io.list_keys(s3, settings.evidence_bucket, attempts_prefix(incident_id)))
    while True:
        attempts += 1
        created = s3io.put_json(s3, settings.evidence_bucket, attempt_key(incident_id, attempts),
                                FreezeAttempt(incident_id, attempts, message, iso(now)).to_dict(), create_only=True)
        if created is not None:
            break
    logger.warning("freeze attempt failed", extra={"incident_id": incident_id, "attempt": attempts,
                                                   "error": type(error).__name__})
    if attempts >= settings.freeze_attempts:
        s3io.put_json(s3, settings.evidence_bucket, failed_key(incident_id),
                      FreezeFailed(incident_id, message, attempts, iso(now)).to_dict(), create_only=True)
        logger.error("freeze failed for good", extra={"incident_id": incident_id, "attempts": attempts})
    return attempts


def freeze_failure(settings: Settings, s3: ObjectStore, incident_id: str) -> FreezeFailed | None:
    """The terminal failure record of an incident's freeze, or None."""
    try:
        raw = s3io.get_json(s3, settings.evidence_bucket, failed_key(incident_id))
    except NotFoundError:
        return None
    return FreezeFailed.from_dict(raw)
