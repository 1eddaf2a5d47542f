import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from freezeframe.contracts.config import Settings
from freezeframe.contracts.errors import PayloadError
from freezeframe.intake.alertmanager import parse_body, to_freeze_requests
from freezeframe.intake.window import MAX_WINDOW, freeze_window

NOW = datetime(2026, 11, 21, 12, 3, tzinfo=UTC)
SETTINGS = Settings(cluster="fallback", lookback_s=900, lookahead_s=300, lock_retain_days=30)


def body_of(event: dict[str, Any]) -> bytes:
    return event["body"].encode()


def test_a_firing_alert_becomes_one_freeze_request(event: Any) -> None:
    payload = parse_body(body_of(event("webhook", "alertmanager_firing")))
    batch = to_freeze_requests(payload, SETTINGS, NOW)
    alert = payload["alerts"][0]
    assert len(batch.requests) == 1 and batch.resolved_incidents == ()
    request = batch.requests[0]
    starts = datetime.fromisoformat(alert["startsAt"].replace("Z", "+00:00"))
    assert request.window_start == starts - timedelta(minutes=15)
    assert request.window_end == NOW + timedelta(minutes=5)
    assert request.scope.cluster == alert["labels"]["cluster"]
    assert request.scope.nodes == (alert["labels"]["node"],)
    assert request.scope.namespaces == (alert["labels"]["namespace"],)
    assert request.severity == alert["labels"]["severity"]
    assert request.title == alert["annotations"]["summary"]
    assert request.lock.mode == "COMPLIANCE"
    assert request.lock.retain_until == NOW + timedelta(days=30)


def test_the_incident_id_is_stable_across_redeliveries(event: Any) -> None:
    payload = parse_body(body_of(event("webhook", "alertmanager_firing")))
    first = to_freeze_requests(payload, SETTINGS, NOW).requests[0]
    again = to_freeze_requests(payload, SETTINGS, NOW + timedelta(seconds=40)).requests[0]
    assert first.incident_id == again.incident_id
    other = json.loads(json.dumps(payload))
    other["alerts"][0]["startsAt"] = "2026-11-21T12:01:00Z"  # the same alert firing again later is a new incident
    assert to_freeze_requests(other, SETTINGS, NOW).requests[0].incident_id != first.incident_id


def test_a_resolved_alert_names_the_incident_it_closes(event: Any) -> None:
    firing = to_freeze_requests(parse_body(body_of(event("webhook", "alertmanager_firing"))), SETTINGS, NOW)
    resolved = to_freeze_requests(parse_body(body_of(event("webhook", "alertmanager_resolved"))), SETTINGS, NOW)
    assert resolved.requests == ()
    assert resolved.resolved_incidents == (firing.requests[0].incident_id,)


@pytest.mark.parametrize(("case", "message"), [
    ("alertmanager_malformed_json", "not valid JSON"),
    ("alertmanager_wrong_version", "version"),
    ("alertmanager_missing_fingerprint", "fingerprint"),
])
def test_bad_payloads_name_the_problem(event: Any, case: str, message: str) -> None:
    with pytest.raises(PayloadError, match=message):
        to_freeze_requests(parse_body(body_of(event("webhook", case))), SETTINGS, NOW)


def test_a_long_running_alert_keeps_the_most_recent_maximum_window() -> None:
    start, end = freeze_window(NOW - timedelta(days=5), NOW, 900, 300)
    assert end == NOW + timedelta(minutes=5)
    assert end - start == MAX_WINDOW


def test_truncated_alerts_are_reported(event: Any) -> None:
    payload = dict(parse_body(body_of(event("webhook", "alertmanager_firing"))))
    payload["truncatedAlerts"] = 7
    assert to_freeze_requests(payload, SETTINGS, NOW).truncated_alerts == 7
