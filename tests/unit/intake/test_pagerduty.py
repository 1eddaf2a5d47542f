import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from freezeframe.contracts.config import Settings
from freezeframe.contracts.errors import ConfigError, PayloadError, SignatureError
from freezeframe.intake.pagerduty import (
    CLOSE_TYPES,
    FREEZE_TYPES,
    closed_incident_id,
    event_type_of,
    parse_event,
    to_freeze_request,
    verify_signature,
)

# The signing secret of events/webhook/pagerduty_*.json, documented in tests/fixtures/make_pagerduty_events.py.
SECRET = "pd-test-secret"
NOW = datetime(2026, 11, 21, 12, 3, tzinfo=UTC)
SETTINGS = Settings(cluster="fallback", lookback_s=900, lookahead_s=300, lock_retain_days=30)
SIGNED_CASES = ["pagerduty_triggered", "pagerduty_reopened", "pagerduty_resolved", "pagerduty_acknowledged",
                "pagerduty_rotated_secret", "pagerduty_malformed"]


def body_of(event: dict[str, Any]) -> bytes:
    return event["body"].encode()


def payload_of(event: dict[str, Any]) -> dict[str, Any]:
    payload = json.loads(event["body"])
    assert isinstance(payload, dict)
    return payload


def at(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def v1(secret: str, body: bytes) -> str:
    return "v1=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# --- signatures ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", SIGNED_CASES)
def test_the_test_secret_verifies_every_signed_sample(event: Any, case: str) -> None:
    sample = event("webhook", case)
    verify_signature(sample["headers"], body_of(sample), [SECRET])


def test_a_rotated_secret_verifies_by_its_second_signature(event: Any) -> None:
    sample = event("webhook", "pagerduty_rotated_secret")
    signatures = sample["headers"]["x-pagerduty-signature"].split(",")
    assert len(signatures) == 2 and signatures[1] == v1(SECRET, body_of(sample)) != signatures[0]
    verify_signature(sample["headers"], body_of(sample), [SECRET])
    verify_signature(sample["headers"], body_of(sample), ["some-other-secret", SECRET])  # both secrets configured


def test_the_header_name_is_case_insensitive(event: Any) -> None:
    sample = event("webhook", "pagerduty_triggered")
    headers = {"X-PagerDuty-Signature": sample["headers"]["x-pagerduty-signature"]}
    verify_signature(headers, body_of(sample), [SECRET])


def test_unknown_signature_versions_are_skipped(event: Any) -> None:
    sample = event("webhook", "pagerduty_triggered")
    body = body_of(sample)
    good = v1(SECRET, body)
    verify_signature({"x-pagerduty-signature": f"v2=deadbeef, {good}"}, body, [SECRET])
    with pytest.raises(SignatureError):  # a valid digest under an unknown version does not count
        verify_signature({"x-pagerduty-signature": good.replace("v1=", "v2=")}, body, [SECRET])


def test_a_bad_signature_is_rejected(event: Any) -> None:
    sample = event("webhook", "pagerduty_bad_signature")
    with pytest.raises(SignatureError):
        verify_signature(sample["headers"], body_of(sample), [SECRET])


def test_a_wrong_secret_or_a_tampered_body_is_rejected(event: Any) -> None:
    sample = event("webhook", "pagerduty_triggered")
    with pytest.raises(SignatureError):
        verify_signature(sample["headers"], body_of(sample), ["pd-wrong-secret"])
    with pytest.raises(SignatureError):
        verify_signature(sample["headers"], body_of(sample) + b" ", [SECRET])


@pytest.mark.parametrize("header", [None, "", "garbage", "v1", "v1=", "v1=zz", "v1=é", ",,,", "sha256=abc",
                                    "v1=" + "0" * 64])
def test_missing_or_garbage_headers_are_rejected_without_echoing(event: Any, header: str | None) -> None:
    sample = event("webhook", "pagerduty_triggered")
    headers = {"content-type": "application/json"}
    if header is not None:
        headers["x-pagerduty-signature"] = header
    with pytest.raises(SignatureError) as info:
        verify_signature(headers, body_of(sample), [SECRET])
    assert SECRET not in str(info.value)
    if header:
        assert header not in str(info.value)


def test_the_error_never_contains_the_secret_or_the_presented_signature(event: Any) -> None:
    sample = event("webhook", "pagerduty_bad_signature")
    presented = sample["headers"]["x-pagerduty-signature"]
    with pytest.raises(SignatureError) as info:
        verify_signature(sample["headers"], body_of(sample), [SECRET, "pd-second-secret"])
    message = str(info.value)
    for secret_text in (SECRET, "pd-second-secret", presented, presented.removeprefix("v1="),
                        v1(SECRET, body_of(sample))):
        assert secret_text not in message


def test_an_absurd_number_of_signatures_is_rejected(event: Any) -> None:
    sample = event("webhook", "pagerduty_triggered")
    body = body_of(sample)
    header = ",".join([f"v1={'0' * 64}"] * 50 + [v1(SECRET, body)])
    with pytest.raises(SignatureError):
        verify_signature({"x-pagerduty-signature": header}, body, [SECRET])


@pytest.mark.parametrize("secrets", [[], (), [""], [SECRET, ""], SECRET])
def test_no_configured_secret_is_a_configuration_error(event: Any, secrets: Any) -> None:
    sample = event("webhook", "pagerduty_triggered")
    with pytest.raises(ConfigError) as info:
        verify_signature(sample["headers"], body_of(sample), secrets)
    assert SECRET not in str(info.value)


# --- parsing ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["pagerduty_triggered", "pagerduty_reopened", "pagerduty_resolved",
                                  "pagerduty_acknowledged", "pagerduty_rotated_secret"])
def test_each_sample_parses_to_its_fields(event: Any, case: str) -> None:
    raw = payload_of(event("webhook", case))["event"]
    data = raw["data"]
    parsed = parse_event(payload_of(event("webhook", case)))
    assert parsed.event_id == raw["id"]
    assert parsed.event_type == raw["event_type"] == event_type_of(payload_of(event("webhook", case)))
    assert parsed.occurred_at == at(raw["occurred_at"])
    assert parsed.incident_id == data["id"]
    assert parsed.incident_number == data["number"]
    assert parsed.title == data["title"]
    assert parsed.urgency == data["urgency"]
    assert parsed.priority == (data["priority"]["summary"] if data["priority"] else None)
    assert parsed.service_id == data["service"]["id"]
    assert parsed.service_name == data["service"]["summary"]
    assert parsed.status == data["status"]
    assert parsed.html_url == data["html_url"]


def test_sample_event_types_fall_into_freeze_close_or_ignore(event: Any) -> None:
    types = {case: event_type_of(payload_of(event("webhook", case)))
             for case in ("pagerduty_triggered", "pagerduty_reopened", "pagerduty_resolved", "pagerduty_acknowledged")}
    assert types["pagerduty_triggered"] in FREEZE_TYPES and types["pagerduty_reopened"] in FREEZE_TYPES
    assert types["pagerduty_resolved"] in CLOSE_TYPES
    assert types["pagerduty_acknowledged"] not in FREEZE_TYPES + CLOSE_TYPES


def test_a_non_incident_event_passes_the_envelope_check_but_not_the_incident_parse() -> None:
    ping = {"event": {"id": "01HZ61PING", "event_type": "pagey.ping", "resource_type": "pagey",
                      "occurred_at": "2026-11-21T10:00:00.000Z", "agent": None, "client": None,
                      "data": {"message": "Hello from your friend Pagey!", "type": "ping"}}}
    assert event_type_of(ping) == "pagey.ping"
    with pytest.raises(PayloadError, match="resource_type"):
        parse_event(ping)


def test_the_malformed_sample_names_the_missing_field(event: Any) -> None:
    sample = event("webhook", "pagerduty_malformed")
    with pytest.raises(PayloadError, match=r"event\.occurred_at"):
        parse_event(payload_of(sample))
    with pytest.raises(PayloadError, match=r"event\.occurred_at"):
        event_type_of(payload_of(sample))


def _without(path: str) -> Any:
    def mutate(payload: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = payload
        for name in parents:
            node = node[name]
        del node[last]
    return mutate


def _set(path: str, value: Any) -> Any:
    def mutate(payload: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = payload
        for name in parents:
            node = node[name]
        node[last] = value
    return mutate


@pytest.mark.parametrize(("mutate", "field"), [
    (_without("event"), "'event'"),
    (_without("event.id"), r"event\.id"),
    (_without("event.event_type"), r"event\.event_type"),
    (_without("event.data"), r"event\.data"),
    (_without("event.data.id"), r"event\.data\.id"),
    (_without("event.data.title"), r"event\.data\.title"),
    (_without("event.data.service"), r"event\.data\.service"),
    (_without("event.data.service.id"), r"event\.data\.service\.id"),
    (_set("event.occurred_at", "yesterday"), r"event\.occurred_at"),
    (_set("event.data.number", "1042"), r"event\.data\.number"),
    (_set("event.data.priority", "P1"), r"event\.data\.priority"),
    (_set("event.data.urgency", 3), r"event\.data\.urgency"),
    (_set("event.agent", "someone"), r"event\.agent"),
    (_set("event.data.type", "incident_note"), r"event\.data\.type"),
])
def test_malformed_bodies_name_the_field(event: Any, mutate: Any, field: str) -> None:
    payload = payload_of(event("webhook", "pagerduty_triggered"))
    mutate(payload)
    with pytest.raises(PayloadError, match=field):
        parse_event(payload)


def test_a_body_that_is_not_an_object_is_rejected() -> None:
    with pytest.raises(PayloadError, match="object"):
        parse_event([])  # type: ignore[arg-type]


# --- freeze requests ----------------------------------------------------------------------------------------------

def test_a_trigger_freezes_from_its_occurred_at(event: Any) -> None:
    raw = payload_of(event("webhook", "pagerduty_triggered"))["event"]
    request = to_freeze_request(parse_event(payload_of(event("webhook", "pagerduty_triggered"))), SETTINGS, NOW)
    assert request.window_start == at(raw["occurred_at"]) - timedelta(seconds=900)
    assert request.window_end == NOW + timedelta(seconds=300)
    assert request.source == "pagerduty"
    assert request.title == raw["data"]["title"]
    assert request.severity == f"{raw['data']['urgency']}/{raw['data']['priority']['summary']}"
    assert request.scope.cluster == SETTINGS.cluster and request.scope.nodes == ()
    assert request.lock.mode == SETTINGS.lock_mode
    assert request.lock.retain_until == NOW + timedelta(days=30)
    assert request.received_at == NOW
    labels = dict(request.labels)
    assert labels["pagerduty_service_id"] == raw["data"]["service"]["id"]
    assert labels["pagerduty_service"] == raw["data"]["service"]["summary"]
    assert labels["urgency"] == raw["data"]["urgency"]
    assert labels["priority"] == raw["data"]["priority"]["summary"]
    assert labels["pagerduty_incident_number"] == str(raw["data"]["number"])
    assert labels["pagerduty_incident_url"] == raw["data"]["html_url"]
    assert labels["pagerduty_incident_id"] == raw["data"]["id"]
    assert request.incident_id.startswith("pd-") and raw["data"]["id"] not in request.incident_id


def test_a_webhook_arriving_before_its_occurred_at_still_gets_a_look_ahead(event: Any) -> None:
    raw = payload_of(event("webhook", "pagerduty_triggered"))["event"]
    occurred = at(raw["occurred_at"])
    early = occurred - timedelta(seconds=2)  # clock skew between PagerDuty and us
    request = to_freeze_request(parse_event(payload_of(event("webhook", "pagerduty_triggered"))), SETTINGS, early)
    assert request.window_end == occurred + timedelta(seconds=300)


def test_an_incident_without_priority_has_urgency_as_severity_and_no_priority_label(event: Any) -> None:
    raw = payload_of(event("webhook", "pagerduty_rotated_secret"))["event"]
    assert raw["data"]["priority"] is None
    request = to_freeze_request(parse_event(payload_of(event("webhook", "pagerduty_rotated_secret"))), SETTINGS,
                                at(raw["occurred_at"]) + timedelta(seconds=5))
    assert request.severity == raw["data"]["urgency"]
    assert "priority" not in dict(request.labels)


def test_the_scope_cluster_can_be_given(event: Any) -> None:
    parsed = parse_event(payload_of(event("webhook", "pagerduty_triggered")))
    assert to_freeze_request(parsed, SETTINGS, NOW, scope_cluster="prod-eu").scope.cluster == "prod-eu"
    with pytest.raises(PayloadError, match="cluster"):
        to_freeze_request(parsed, SETTINGS, NOW, scope_cluster="../etc")


def test_a_redelivered_trigger_keeps_its_incident_id(event: Any) -> None:
    first = to_freeze_request(parse_event(payload_of(event("webhook", "pagerduty_triggered"))), SETTINGS, NOW)
    again = to_freeze_request(parse_event(payload_of(event("webhook", "pagerduty_triggered"))), SETTINGS,
                              NOW + timedelta(minutes=3))
    assert again.incident_id == first.incident_id
    # The signature-failing copy carries the same body: were it verified, it would be the same incident too.
    copy = to_freeze_request(parse_event(payload_of(event("webhook", "pagerduty_bad_signature"))), SETTINGS, NOW)
    assert copy.incident_id == first.incident_id


def test_a_trigger_id_depends_on_the_pagerduty_incident_not_the_webhook_event(event: Any) -> None:
    payload = payload_of(event("webhook", "pagerduty_triggered"))
    first = to_freeze_request(parse_event(payload), SETTINGS, NOW).incident_id
    payload["event"]["id"] = "01HZ5T8B3K9W2M4N6P8R0S1ZZZ"
    assert to_freeze_request(parse_event(payload), SETTINGS, NOW).incident_id == first
    payload["event"]["data"]["id"] = "PZZZZZZ"
    assert to_freeze_request(parse_event(payload), SETTINGS, NOW).incident_id != first


def test_a_reopen_is_a_new_freeze_of_the_same_family(event: Any) -> None:
    triggered = parse_event(payload_of(event("webhook", "pagerduty_triggered")))
    reopened_payload = payload_of(event("webhook", "pagerduty_reopened"))
    reopened = parse_event(reopened_payload)
    assert reopened.incident_id == triggered.incident_id  # the fixture: one PagerDuty incident
    first = to_freeze_request(triggered, SETTINGS, NOW)
    reopen_now = at(reopened_payload["event"]["occurred_at"]) + timedelta(seconds=1)
    reopen = to_freeze_request(reopened, SETTINGS, reopen_now)
    assert reopen.incident_id != first.incident_id
    assert reopen.incident_id.startswith(first.incident_id + "-")
    assert reopen.window_start == at(reopened_payload["event"]["occurred_at"]) - timedelta(seconds=900)
    assert to_freeze_request(reopened, SETTINGS, reopen_now + timedelta(minutes=2)).incident_id == reopen.incident_id
    reopened_payload["event"]["occurred_at"] = "2026-11-21T15:20:00.000Z"  # a second reopen, later
    assert to_freeze_request(parse_event(reopened_payload), SETTINGS, NOW).incident_id != reopen.incident_id


def test_a_resolve_names_the_incident_it_closes(event: Any) -> None:
    triggered = to_freeze_request(parse_event(payload_of(event("webhook", "pagerduty_triggered"))), SETTINGS, NOW)
    resolved = parse_event(payload_of(event("webhook", "pagerduty_resolved")))
    assert closed_incident_id(resolved) == triggered.incident_id
    with pytest.raises(PayloadError):
        closed_incident_id(parse_event(payload_of(event("webhook", "pagerduty_triggered"))))


@pytest.mark.parametrize("case", ["pagerduty_acknowledged", "pagerduty_resolved"])
def test_only_triggers_and_reopens_become_freeze_requests(event: Any, case: str) -> None:
    with pytest.raises(PayloadError, match="does not start a freeze"):
        to_freeze_request(parse_event(payload_of(event("webhook", case))), SETTINGS, NOW)
