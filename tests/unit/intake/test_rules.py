import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from freezeframe.contracts.config import Settings
from freezeframe.contracts.errors import ConfigError
from freezeframe.intake.alertmanager import parse_body, to_freeze_requests
from freezeframe.intake.rules import parse_rules

NOW = datetime(2026, 11, 21, 12, 3, tzinfo=UTC)
SETTINGS = Settings(cluster="fallback", lookback_s=900, lookahead_s=300, lock_retain_days=30)
RULES = {
    "rules": [
        {"name": "ignore-latency", "match": {"labels": {"alertname": "CheckoutLatency"}}, "freeze": False},
        {"name": "critical-long", "match": {"source": "alertmanager", "severity": ["critical"]},
         "lookback_s": 3600, "lookahead_s": 60, "lock": {"mode": "GOVERNANCE", "retain_days": 7, "legal_hold": True},
         "scope_labels": {"node": "instance_node"}},
    ],
    "default": {"lookback_s": 120},
}


def multi(event: Any) -> dict[str, Any]:
    return dict(parse_body(event("webhook", "alertmanager_multi")["body"].encode()))


def test_the_first_matching_rule_decides_window_lock_and_scope(event: Any) -> None:
    payload = multi(event)
    payload["alerts"][0]["labels"]["instance_node"] = "ip-10-1-2-3"
    batch = to_freeze_requests(payload, SETTINGS, NOW, parse_rules(json.dumps(RULES)))
    [request] = batch.requests  # the latency alert is ignored, the resolved one closes
    starts = datetime.fromisoformat(payload["alerts"][0]["startsAt"].replace("Z", "+00:00"))
    assert request.window_start == starts - timedelta(hours=1)
    assert request.window_end == NOW + timedelta(minutes=1)
    assert (request.lock.mode, request.lock.legal_hold) == ("GOVERNANCE", True)
    assert request.lock.retain_until == NOW + timedelta(days=7)
    assert request.scope.nodes == ("ip-10-1-2-3",)
    assert batch.ignored == (payload["alerts"][1]["fingerprint"],)
    assert len(batch.resolved_incidents) == 1 and batch.truncated_alerts == 2


def test_without_a_match_the_default_and_then_the_settings_apply(event: Any) -> None:
    payload = multi(event)
    for alert in payload["alerts"]:
        alert["labels"]["severity"] = "warning"
    batch = to_freeze_requests(payload, SETTINGS, NOW, parse_rules(json.dumps(RULES)))
    request = batch.requests[0]
    assert request.window_start == datetime.fromisoformat(
        payload["alerts"][0]["startsAt"].replace("Z", "+00:00")) - timedelta(seconds=120)
    assert request.lock.mode == "COMPLIANCE" and request.lock.retain_until == NOW + timedelta(days=30)


@pytest.mark.parametrize(("document", "message"), [
    ("{not json", "not valid JSON"),
    ('{"rules": [{"match": {}, "lock": {"mode": "WEAK"}}]}', "lock.mode"),
    ('{"rules": [{"match": {}, "lookback_s": -5}]}', "lookback_s"),
    ('{"rules": [{"match": {}, "retention": 5}]}', "unknown keys"),
    ('{"default": {"scope_labels": {"zone": "z"}}}', "unknown scope fields"),
])
def test_bad_rule_documents_are_refused_with_the_reason(document: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_rules(document)
