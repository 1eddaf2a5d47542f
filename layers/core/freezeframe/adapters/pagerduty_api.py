"""PagerDuty REST API v2: add a note to an incident (https://developer.pagerduty.com/api-reference/, "Create a note
on an incident": `POST /incidents/{id}/notes`, `Authorization: Token token=...`, a `From` header with the e-mail of
a PagerDuty user, body `{"note": {"content": ...}}`).

Retries 429 (honouring Retry-After) and 5xx and network errors with jittered exponential backoff, a bounded number
of times; any other 4xx is final. The token is never logged, nor put into an exception message.
"""

from __future__ import annotations

import json
import logging
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote

logger = logging.getLogger(__name__)
ACCEPT = "application/vnd.pagerduty+json;version=2"
MAX_NOTE_CHARS = 25_000  # PagerDuty refuses longer notes
RETRYABLE = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class NoteResult:
    delivered: bool
    status: int | None  # the last HTTP status, None when no answer came
    attempts: int
    error: str | None = None  # why it gave up (never contains the token)


def add_note(api_url: str, token: str, sender: str, incident_id: str, content: str, *, attempts: int = 5,
             base_delay_s: float = 0.5, max_delay_s: float = 8.0, timeout_s: float = 10.0,
             sleep: Callable[[float], None] = time.sleep, rng: random.Random | None = None) -> NoteResult:
    """POST the note; returns what happened instead of raising, so a post-back never fails a freeze or finalize."""
    if not api_url.startswith(("https://", "http://")):
        return NoteResult(False, None, 0, f"the PagerDuty API URL must be http(s), got {api_url[:40]!r}")
    url = f"{api_url.rstrip('/')}/incidents/{quote(incident_id, safe='')}/notes"
    if len(content) > MAX_NOTE_CHARS:
        content = content[:MAX_NOTE_CHARS - 20] + "\n[note truncated]"
    body = json.dumps({"note": {"content": content}}).encode()
    headers = {"Authorization": f"Token token={token}", "From": sender, "Accept": ACCEPT,
               "Content-Type": "application/json"}
    jitter = rng or random.Random()  # noqa: S311 - backoff jitter, not crypto
    status: int | None = None
    error = "not sent"
    for attempt in range(1, attempts + 1):
        retry_after: float | None = None
        try:
            request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310
            with urllib.request.urlopen(request, timeout=timeout_s) as reply:  # noqa: S310 - https, or the setting
                status = int(reply.status)
            logger.info("pagerduty note added", extra={"pagerduty_incident": incident_id, "attempt": attempt})
            return NoteResult(True, status, attempt)
        except urllib.error.HTTPError as exc:
            status, error = exc.code, f"HTTP {exc.code}"
            retry_after = _retry_after(exc.headers.get("Retry-After") if exc.headers else None)
            if exc.code not in RETRYABLE:
                logger.warning("pagerduty refused the note", extra={"pagerduty_incident": incident_id,
                                                                     "status": exc.code})
                return NoteResult(False, status, attempt, error)
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            status, error = None, f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
        if attempt == attempts:
            break
        delay = min(max_delay_s, base_delay_s * 2 ** (attempt - 1)) * jitter.uniform(0.5, 1.0)
        if retry_after is not None:
            delay = min(max(delay, retry_after), max_delay_s * 4)
        logger.warning("pagerduty note failed, retrying", extra={"pagerduty_incident": incident_id,
                                                                  "status": status, "attempt": attempt,
                                                                  "delay_s": round(delay, 2)})
        sleep(delay)
    logger.error("pagerduty note given up", extra={"pagerduty_incident": incident_id, "status": status,
                                                   "attempts": attempts, "error": error})
    return NoteResult(False, status, attempts, error)


def _retry_after(raw: str | None) -> float | None:
    try:
        return max(0.0, float(raw)) if raw else None
    except ValueError:
        return None
