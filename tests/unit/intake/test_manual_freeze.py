import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from freezeframe.contracts.config import Settings
from freezeframe.contracts.errors import PayloadError, WindowError
from freezeframe.intake.manual import to_freeze_request

NOW = datetime(2026, 11, 21, 12, 3, tzinfo=UTC)
SETTINGS = Settings(cluster="fallback")


def body(event: Any, case: str = "manual_freeze") -> dict[str, Any]:
    return dict(json.loads(event("webhook", case)["body"]))


def test_an_explicit_window_scope_and_lock(event: Any) -> None:
    payload = body(event)
    request = to_freeze_request(payload, SETTINGS, NOW)
    assert request.window_start == datetime.fromisoformat(payload["window_start"].replace("Z", "+00:00"))
    assert request.scope.cluster == payload["scope"]["cluster"]
    assert request.scope.namespaces == tuple(payload["scope"]["namespaces"])
    assert request.lock.retain_until == NOW + timedelta(days=payload["lock"]["retain_days"])
    assert request.lock.legal_hold is payload["lock"]["legal_hold"]
    assert request.source == "api" and request.incident_id.startswith("api-")
    assert to_freeze_request(payload, SETTINGS, NOW + timedelta(seconds=5)).incident_id == request.incident_id


def test_an_inverted_window_is_refused(event: Any) -> None:
    with pytest.raises(WindowError, match="not after its start"):
        to_freeze_request(body(event, "manual_freeze_inverted_window"), SETTINGS, NOW)


@pytest.mark.parametrize(("change", "message"), [
    ({"window_end": None}, "window_end"),
    ({"lock": {"mode": "SOFT"}}, "lock.mode"),
    ({"lock": {"retain_days": 0}}, "retain_days"),
    ({"lock": {"retain_until": "2020-01-01T00:00:00Z"}}, "future"),
    ({"incident_id": "../etc"}, "incident_id"),
    ({"scope": {"cluster": "a/b"}}, "cluster"),
])
def test_bad_fields_are_named(event: Any, change: dict[str, Any], message: str) -> None:
    payload = {**body(event), **change}
    payload = {k: v for k, v in payload.items() if v is not None}
    with pytest.raises(PayloadError, match=message):
        to_freeze_request(payload, SETTINGS, NOW)
