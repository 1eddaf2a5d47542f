"""Intake through the webhook handler (Function URL events): Alertmanager and PagerDuty webhooks become incident
records and asynchronous freeze invocations; the freeze that invocation starts locks the alert's window; bad input
is a 4xx that writes nothing and starts nothing. Bodies come from the sample events (events/webhook/), with the
alert time moved to now where the test freezes real segments; PagerDuty signatures are computed here as
PagerDuty documents them (v1=HMAC-SHA256 of the body, hex)."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from freezeframe_local.events import function_url_event, load_event

from freezeframe.adapters import s3 as s3io
from freezeframe.contracts.config import Settings
from freezeframe.contracts.keys import incident_key, manifest_key
from tests.functional.conftest import ALERTMANAGER_TOKEN, API_TOKEN, PAGERDUTY_SECRET, REPO, Harness

BASE = Settings(functions_dir=REPO / "functions")


def sample_body(case: str) -> dict[str, Any]:
    return dict(json.loads(load_event(BASE, "webhook", case)["body"]))


def post(harness: Harness, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    reply = harness.call("webhook", function_url_event("POST", path, {"content-type": "application/json",
                                                                        **headers}, body))
    return int(reply["statusCode"]), json.loads(reply["body"])


def alertmanager(harness: Harness, body: bytes, token: str = ALERTMANAGER_TOKEN) -> tuple[int, dict[str, Any]]:
    return post(harness, "/v1/alerts/alertmanager", body, {"authorization": f"Bearer {token}"})


def pagerduty(harness: Harness, body: bytes, secret: str = PAGERDUTY_SECRET,
              webhook_id: str = "8d5e0a3c-6a8f-4c1e-9b0d-1f2a3b4c5d01") -> tuple[int, dict[str, Any]]:
    signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return post(harness, "/v1/alerts/pagerduty", body, {"x-pagerduty-signature": f"v1={signature}",
                                                        "x-webhook-id": webhook_id})


def evidence_keys(harness: Harness) -> list[str]:
    return harness.store.all_keys(harness.settings.evidence_bucket)


def test_an_alertmanager_alert_becomes_an_incident_and_its_freeze_locks_the_alert_window(harness: Harness) -> None:
    payload = sample_body("alertmanager_firing")
    (alert,) = payload["alerts"]
    config = harness.settings.with_(cluster=alert["labels"]["cluster"])
    harness.settings = config
    harness.patch.setenv("FREEZEFRAME_CLUSTER", config.cluster)
    records = harness.replay(node=alert["labels"]["node"])
    alert["startsAt"] = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    status, reply = alertmanager(harness, json.dumps(payload).encode())
    assert status == 202
    (incident_id,) = reply["accepted"]
    record = s3io.get_json(harness.store, config.evidence_bucket, incident_key(incident_id))
    assert (record["request"]["source"], record["request"]["severity"], record["request"]["title"]) == (
        "alertmanager", alert["labels"]["severity"], alert["annotations"]["summary"])
    ((function, invocation),) = harness.lambdas.invocations
    assert function == config.freeze_function and invocation["request"]["incident_id"] == incident_id

    # The invocation's payload is what the freeze function receives.
    frozen = harness.call("freeze", invocation)
    assert frozen["segments"] == len(records) and frozen["created"] is True
    manifest = s3io.get_json(harness.store, config.evidence_bucket, manifest_key(incident_id))
    assert {(s["key"], s["version_id"]) for s in manifest["segments"]} == {(r.key, r.version_id) for r in records}
    for r in records:
        assert harness.store.versions_of(config.raw_bucket, r.key)[0].mode == record["request"]["lock"]["mode"]

    # The incident API answers from the signed chain's versions.
    reply_status = harness.call("webhook", function_url_event("GET", f"/v1/incidents/{incident_id}",
                                                              {"authorization": f"Bearer {API_TOKEN}"}, b""))
    assert reply_status["statusCode"] == 200
    status_body = json.loads(reply_status["body"])
    assert (status_body["state"], status_body["frozen_segments"]) == ("frozen", len(records))
    assert status_body["custody"]["ok"] is True and status_body["custody"]["signed"] is True

    # Alertmanager re-sends a firing group every group_interval: the same alert is a duplicate, not a new freeze.
    status, again = alertmanager(harness, json.dumps(payload).encode())
    assert (status, again["accepted"], again["duplicates"]) == (202, [], [incident_id])
    assert len(harness.lambdas.invocations) == 1


def test_a_signed_pagerduty_incident_becomes_an_incident_and_a_freeze_invocation(harness: Harness) -> None:
    payload = sample_body("pagerduty_triggered")
    body = json.dumps(payload).encode()
    status, reply = pagerduty(harness, body)
    assert status == 202
    (incident_id,) = reply["accepted"]
    record = s3io.get_json(harness.store, harness.settings.evidence_bucket, incident_key(incident_id))
    assert (record["request"]["source"], record["request"]["title"]) == ("pagerduty", payload["event"]["data"]["title"])
    ((function, invocation),) = harness.lambdas.invocations
    assert (function, invocation["request"]["incident_id"]) == (harness.settings.freeze_function, incident_id)


BAD_REQUESTS = [
    # (route, body, headers, expected status)
    ("alertmanager", b'{"version": "4", "alerts": [', {"authorization": f"Bearer {ALERTMANAGER_TOKEN}"}, 400),
    ("alertmanager", None, {"authorization": "Bearer wrong-token"}, 401),
    ("alertmanager", None, {}, 401),
    ("alertmanager", b"[" * 2_000_000, {"authorization": f"Bearer {ALERTMANAGER_TOKEN}"}, 413),
    ("pagerduty", None, {"x-pagerduty-signature": "v1=" + "0" * 64}, 401),
    ("pagerduty", b'{"event": {"event_type": "incident.triggered"}}', "sign", 400),
    ("freeze", b'{"title": "no window"}', {"authorization": f"Bearer {API_TOKEN}"}, 400),
    ("freeze", None, {"authorization": "Bearer wrong"}, 401),
]
SAMPLES = {"alertmanager": "alertmanager_firing", "pagerduty": "pagerduty_triggered", "freeze": "manual_freeze"}
PATHS = {"alertmanager": "/v1/alerts/alertmanager", "pagerduty": "/v1/alerts/pagerduty", "freeze": "/v1/freeze"}


@pytest.mark.parametrize(("route", "body", "headers", "expected"), BAD_REQUESTS)
def test_bad_input_is_a_4xx_that_writes_nothing_and_starts_nothing(harness: Harness, route: str, body: bytes | None,
                                                                   headers: Any, expected: int) -> None:
    before = evidence_keys(harness)
    raw = body if body is not None else json.dumps(sample_body(SAMPLES[route])).encode()
    if headers == "sign":
        headers = {"x-pagerduty-signature": "v1=" + hmac.new(PAGERDUTY_SECRET.encode(), raw,
                                                              hashlib.sha256).hexdigest()}
    status, reply = post(harness, PATHS[route], raw, headers)
    assert status == expected, reply
    assert "error" in reply
    assert evidence_keys(harness) == before
    assert harness.lambdas.invocations == []


def test_a_wrong_method_is_405_and_an_unknown_incident_is_404(harness: Harness) -> None:
    reply = harness.call("webhook", function_url_event("GET", "/v1/alerts/alertmanager", {}, b""))
    assert (reply["statusCode"], reply["headers"]["Allow"]) == (405, "POST")
    reply = harness.call("webhook", function_url_event("GET", "/v1/incidents/no-such-incident",
                                                       {"authorization": f"Bearer {API_TOKEN}"}, b""))
    assert reply["statusCode"] == 404
    assert evidence_keys(harness) == []


def test_intakes_markers_and_the_resolved_record_read_back_as_their_documents(harness: Harness) -> None:
    from freezeframe.contracts.documents import FreezeStarted, Resolved, WebhookDelivery
    from freezeframe.contracts.keys import freeze_started_key, resolved_key, webhook_delivery_key

    config, store = harness.settings, harness.store
    triggered, resolved = sample_body("pagerduty_triggered"), sample_body("pagerduty_resolved")
    assert pagerduty(harness, json.dumps(triggered).encode())[0] == 202
    assert pagerduty(harness, json.dumps(resolved).encode(), webhook_id="8d5e0a3c-6a8f-4c1e-9b0d-1f2a3b4c5d02")[0] \
        == 202
    (incident_id,) = [key.split("/")[1] for key in evidence_keys(harness) if key.endswith("/incident.json")]
    started = FreezeStarted.from_dict(s3io.get_json(store, config.evidence_bucket, freeze_started_key(incident_id)))
    assert started.incident_id == incident_id
    closed = Resolved.from_dict(s3io.get_json(store, config.evidence_bucket, resolved_key(incident_id)))
    assert closed.incident_id == incident_id
    deliveries = [WebhookDelivery.from_dict(s3io.get_json(store, config.evidence_bucket, webhook_delivery_key(
        "pagerduty", f"event:{body['event']['id']}"))) for body in (triggered, resolved)]
    assert [(d.event_type, d.delivery, d.accepted, d.resolved) for d in deliveries] == [
        ("incident.triggered", "8d5e0a3c-6a8f-4c1e-9b0d-1f2a3b4c5d01", (incident_id,), ()),
        ("incident.resolved", "8d5e0a3c-6a8f-4c1e-9b0d-1f2a3b4c5d02", (), (incident_id,))]
