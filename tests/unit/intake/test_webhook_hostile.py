"""Hostile input on the webhook's four routes, through the real handler (functions/webhook/app.py) with the local
gateway's event shape and an in-memory S3 (tests/fixtures/webhook_fuzz.py).

The issue's findings each have a test here that failed on the code before the fix: edge-of-calendar dates, absurd
retention, deep nesting, huge numbers, invalid UTF-8, wrong types, and the PagerDuty replay with a fresh
X-Webhook-Id. Then a fuzz sample per route (the long form is `make bench-webhook-fuzz`), and the checks that prove
the fuzz can fail: a handler that writes before it rejects, and an S3 outage, which must stay a 5xx.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from freezeframe.contracts.config import ENV_MAX_RETAIN_DAYS, Settings
from freezeframe.contracts.errors import ConfigError, PayloadError, WindowError
from freezeframe.contracts.models import parse_iso
from freezeframe.intake import accept as intake
from freezeframe.intake.body import MAX_DEPTH, parse_object
from freezeframe.intake.window import MAX_LEAD, MAX_WINDOW, freeze_window
from tests.fixtures.webhook_fuzz import (
    ALERTMANAGER_TOKEN,
    API_TOKEN,
    PAGERDUTY_SECRET,
    ROUTES,
    FuzzInput,
    WebhookTarget,
    _samples,
    run_route,
)

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
FUZZ_SAMPLE = 1000  # per route; `make bench-webhook-fuzz` runs 100,000


@pytest.fixture
def target(tmp_path: Path) -> Iterator[WebhookTarget]:
    with WebhookTarget(tmp_path) as webhook:
        yield webhook


def post(target: WebhookTarget, route: str, payload: Any, headers: dict[str, str] | None = None,
         raw: bytes | None = None) -> tuple[int, dict[str, Any]]:
    body = raw if raw is not None else json.dumps(payload).encode()
    path = {"alertmanager": "/v1/alerts/alertmanager", "pagerduty": "/v1/alerts/pagerduty", "freeze": "/v1/freeze"}
    sent = dict(headers or {})
    if route == "pagerduty":
        sent.setdefault("x-pagerduty-signature",
                        "v1=" + hmac.new(PAGERDUTY_SECRET.encode(), body, hashlib.sha256).hexdigest())
    else:
        sent.setdefault("authorization", f"Bearer {ALERTMANAGER_TOKEN if route == 'alertmanager' else API_TOKEN}")
    status, reply = target.call(FuzzInput("POST", path[route], sent, body, "test"))
    assert reply is not None
    return status, json.loads(reply["body"]) if "body" in reply else reply


def sample(route: str, index: int = 0) -> dict[str, Any]:
    return copy.deepcopy(_samples()[route][index])


def alert_starting(starts_at: str) -> dict[str, Any]:
    payload = sample("alertmanager")
    payload["alerts"] = payload["alerts"][:1]
    payload["alerts"][0]["startsAt"] = starts_at
    return payload


# ---------------------------------------------------------------- the inputs, one by one

@pytest.mark.parametrize("starts_at", ["9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z", "0001-01-01T00:00:00+01:00",
                                       "9999-12-31T23:59:59-01:00"])
def test_edge_of_calendar_alert_times_are_a_400_or_a_bounded_window(target: WebhookTarget, starts_at: str) -> None:
    status, reply = post(target, "alertmanager", alert_starting(starts_at))
    if starts_at.startswith("0001-01-01T00:00:00Z"):
        # An alert firing since the year 1 is a long-running alert: the most recent MAX_WINDOW is frozen.
        assert status == 202, reply
        [request] = [json.loads(json.dumps(f["request"])) for f in target.freezes]
        end = datetime.fromisoformat(request["window_end"].replace("Z", "+00:00"))
        start = datetime.fromisoformat(request["window_start"].replace("Z", "+00:00"))
        assert end - start == MAX_WINDOW
    else:
        assert status == 400, reply
        assert "startsAt" in reply["error"] or "after now" in reply["error"]
        assert target.s3.writes == 0 and target.freezes == []


def test_a_pagerduty_event_from_the_year_9999_is_a_400(target: WebhookTarget) -> None:
    payload = sample("pagerduty")
    payload["event"]["occurred_at"] = "9999-12-31T23:59:59Z"
    status, reply = post(target, "pagerduty", payload, {"x-webhook-id": "d1"})
    assert status == 400 and "after now" in reply["error"]
    assert target.s3.writes == 0


@pytest.mark.parametrize("raw", [b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
                                 b"[" * 100_000])
@pytest.mark.parametrize("route", ["alertmanager", "pagerduty", "freeze"])
def test_deep_nesting_is_a_400_not_a_recursion_error(target: WebhookTarget, route: str, raw: bytes) -> None:
    status, reply = post(target, route, None, raw=raw)
    assert status == 400 and "nests deeper" in reply["error"], reply
    assert target.s3.writes == 0


@pytest.mark.parametrize("route", ["alertmanager", "pagerduty", "freeze"])
@pytest.mark.parametrize("number", ["9" * 5000, "-" + "1" * 5000, "1." + "5" * 5000, "1e999999999", "NaN", "Infinity"])
def test_huge_numbers_and_non_json_constants_are_a_400(target: WebhookTarget, route: str, number: str) -> None:
    payload = sample(route)
    text = json.dumps({**payload, "extra": "PLACEHOLDER"}).replace('"PLACEHOLDER"', number)
    status, reply = post(target, route, None, raw=text.encode())
    assert status == 400, reply
    assert "number" in reply["error"] or "not a JSON value" in reply["error"]
    assert target.s3.writes == 0


@pytest.mark.parametrize("route", ["alertmanager", "pagerduty", "freeze"])
@pytest.mark.parametrize("garbage", [b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xc0\xaf"])
def test_invalid_utf8_is_a_400(target: WebhookTarget, route: str, garbage: bytes) -> None:
    body = json.dumps(sample(route)).encode()
    status, reply = post(target, route, None, raw=body[:20] + garbage + body[20:])
    assert status == 400 and "UTF-8" in reply["error"], reply
    assert target.s3.writes == 0


def test_a_lone_surrogate_escape_is_a_400(target: WebhookTarget) -> None:
    payload = alert_starting("2026-12-05T11:00:00Z")
    text = json.dumps(payload).replace(payload["alerts"][0]["fingerprint"], "\\ud800")
    status, reply = post(target, "alertmanager", None, raw=text.encode())
    assert status == 400 and "surrogate" in reply["error"], reply


@pytest.mark.parametrize(("lock", "message"), [
    ({"retain_days": 3_000_000}, "maximum"),
    ({"retain_days": "30"}, "positive integer"),
    ({"retain_days": 30.0}, "positive integer"),
    ({"retain_until": "9999-12-31T23:59:59Z"}, "maximum"),
    ({"retain_until": 4102444800}, "ISO 8601"),
    ({"legal_hold": "false"}, "true or false"),
    ({"legal_hold": 0}, "true or false"),
])
def test_absurd_retention_and_wrong_types_in_the_lock_are_a_400(target: WebhookTarget, lock: dict[str, Any],
                                                                message: str) -> None:
    payload = sample("freeze")
    payload["lock"] = {"mode": "COMPLIANCE", **lock}
    status, reply = post(target, "freeze", payload)
    assert status == 400 and message in reply["error"], reply
    assert target.s3.writes == 0 and target.freezes == []


def test_a_window_in_the_far_future_or_before_the_epoch_is_a_400(target: WebhookTarget) -> None:
    for start, end in (("9999-12-31T00:00:00Z", "9999-12-31T01:00:00Z"),
                       ("0001-01-01T00:00:00Z", "0001-01-01T01:00:00Z")):
        payload = {**sample("freeze"), "window_start": start, "window_end": end}
        status, reply = post(target, "freeze", payload)
        assert status == 400, reply
    assert target.s3.writes == 0


# ---------------------------------------------------------------- the configured maximum retention

def test_the_maximum_retention_comes_from_its_env_var() -> None:
    assert Settings().max_retain_days == 3650
    assert Settings.from_env({ENV_MAX_RETAIN_DAYS: "90"}).max_retain_days == 90
    with pytest.raises(ConfigError, match=ENV_MAX_RETAIN_DAYS):
        Settings.from_env({ENV_MAX_RETAIN_DAYS: "0"})
    with pytest.raises(ConfigError, match=ENV_MAX_RETAIN_DAYS):
        Settings(lock_retain_days=91, max_retain_days=90)


def test_the_stack_passes_its_maximum_retention_parameter_to_every_function() -> None:
    from cfnlint import decode

    from freezeframe.contracts.config import MAX_RETAIN_DAYS_LIMIT
    from tests.unit.deploy.test_template import TEMPLATE

    template, matches = decode.decode(str(TEMPLATE))
    assert template is not None and not matches
    parameter = template["Parameters"]["MaxRetainDays"]
    assert (parameter["Default"], parameter["MaxValue"]) == (Settings().max_retain_days, MAX_RETAIN_DAYS_LIMIT)
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    assert variables[ENV_MAX_RETAIN_DAYS] == {"Ref": "MaxRetainDays"}


def test_retention_up_to_the_maximum_is_accepted_and_one_day_more_is_not() -> None:
    from freezeframe.intake.manual import to_freeze_request

    settings = Settings(max_retain_days=90, lock_retain_days=30)
    payload = {"window_start": "2026-12-05T11:00:00Z", "window_end": "2026-12-05T11:30:00Z",
               "lock": {"mode": "COMPLIANCE", "retain_days": 90}}
    assert to_freeze_request(payload, settings, NOW).lock.retain_until == NOW + timedelta(days=90)
    with pytest.raises(PayloadError, match="maximum of 90"):
        to_freeze_request({**payload, "lock": {"retain_days": 91}}, settings, NOW)
    until = (NOW + timedelta(days=90)).isoformat()
    assert to_freeze_request({**payload, "lock": {"retain_until": until}}, settings, NOW).lock.retain_until == \
        NOW + timedelta(days=90)
    with pytest.raises(PayloadError, match="maximum of 90"):
        to_freeze_request({**payload, "lock": {"retain_until": (NOW + timedelta(days=90, seconds=1)).isoformat()}},
                          settings, NOW)


def test_a_freeze_rule_may_not_lock_longer_than_the_maximum() -> None:
    from freezeframe.intake.rules import parse_rules

    rules = parse_rules(json.dumps({"default": {"lock": {"retain_days": 4000}}}))
    with pytest.raises(ConfigError, match="maximum"):
        rules.decide(Settings(), source="alertmanager", severity="critical", labels={})


# ---------------------------------------------------------------- PagerDuty replays

@pytest.mark.parametrize("index", [0, 1, 2, 3])  # triggered, reopened, resolved, acknowledged
def test_a_pagerduty_replay_with_a_fresh_webhook_id_writes_nothing(target: WebhookTarget, index: int) -> None:
    payload = sample("pagerduty", index)
    if index == 2:  # a resolve only writes for a known incident: trigger it first
        post(target, "pagerduty", sample("pagerduty", 0), {"x-webhook-id": "first-trigger"})
    first_status, first = post(target, "pagerduty", payload, {"x-webhook-id": "delivery-1"})
    assert first_status == 202, first
    writes, freezes = target.s3.writes, len(target.freezes)
    for fresh in ("delivery-2", "delivery-3", ""):
        status, reply = post(target, "pagerduty", payload, {"x-webhook-id": fresh} if fresh else {})
        assert status == 202 and reply["accepted"] == [] and reply["duplicates"] == [
            f"delivery:{payload['event']['id']}"], reply
    assert (target.s3.writes, len(target.freezes)) == (writes, freezes)


def test_the_old_webhook_id_marker_still_recognises_a_redelivery(target: WebhookTarget) -> None:
    from freezeframe.adapters import s3 as s3io
    from freezeframe.contracts.keys import webhook_delivery_key

    s3io.put_json(target.s3, target.settings.evidence_bucket, webhook_delivery_key("pagerduty", "legacy-delivery"),
                  {"delivery": "legacy-delivery"})
    writes = target.s3.writes
    status, reply = post(target, "pagerduty", sample("pagerduty"), {"x-webhook-id": "legacy-delivery"})
    assert status == 202 and reply["accepted"] == [] and target.s3.writes == writes


def test_a_new_event_of_the_same_incident_is_not_taken_for_a_replay(target: WebhookTarget) -> None:
    trigger = sample("pagerduty", 0)
    assert post(target, "pagerduty", trigger, {"x-webhook-id": "a"})[1]["accepted"]
    other = copy.deepcopy(trigger)
    other["event"]["id"] = "01HZ5T8B3K9W2M4N6P8R0S1V3Y"  # a different event (a duplicate trigger PagerDuty sent)
    status, reply = post(target, "pagerduty", other, {"x-webhook-id": "b"})
    # Not a replay of the delivery; the incident itself is a duplicate by its create-only record.
    assert status == 202 and reply["duplicates"] and not reply["duplicates"][0].startswith("delivery:")


# ---------------------------------------------------------------- the pure parts

def test_the_body_parser_refuses_what_json_alone_lets_through() -> None:
    assert parse_object(b'{"a": [1, 2.5, {"b": "\\u00e9"}]}') == {"a": [1, 2.5, {"b": "\u00e9"}]}
    nested = b'{"a": ' + b"[" * (MAX_DEPTH - 1) + b"]" * (MAX_DEPTH - 1) + b"}"
    assert parse_object(nested)  # exactly MAX_DEPTH levels
    for body, message in ((b'{"a": ' + b"[" * MAX_DEPTH + b"]" * MAX_DEPTH + b"}", "nests deeper"),
                          (b'{"a": "' + b"[" * 100 + b'"}', None),  # brackets inside a string are text
                          (b'{"a": "\\"' + b"[" * 100 + b'"}', None),
                          (b'{"a": ' + b"1" * 65 + b"}", "number"),
                          (b'{"a": NaN}', "not a JSON value"),
                          (b'{"a": "\\udc00"}', "surrogate"),
                          (b'{"\\ud800": 1}', "surrogate"),
                          (b'{"a": "\xff"}', "UTF-8"),
                          (b"[]", "JSON object")):
        if message is None:
            assert parse_object(body)
        else:
            with pytest.raises(PayloadError, match=message):
                parse_object(body)


def test_the_depth_scan_stays_linear_on_a_megabyte_of_escapes() -> None:
    import time

    # An unterminated string full of escaped quotes made a backtracking scan quadratic (3.3 s here for 1 MiB).
    body = b'"' + b'\\"[' * (1 << 18)
    started = time.perf_counter()
    with pytest.raises(PayloadError, match="not valid JSON"):
        parse_object(body)
    assert time.perf_counter() - started < 1.0


def test_window_math_holds_at_both_ends_of_the_calendar() -> None:
    start, end = freeze_window(datetime(1, 1, 1, tzinfo=UTC), NOW, 900, 300)
    assert (start, end) == (NOW + timedelta(seconds=300) - MAX_WINDOW, NOW + timedelta(seconds=300))
    with pytest.raises(WindowError, match="after now"):
        freeze_window(datetime(9999, 12, 31, 23, 59, tzinfo=UTC), NOW, 900, 300)
    # Within the tolerated lead the usual window applies; margins beyond MAX_WINDOW cannot overflow either.
    ahead = NOW + MAX_LEAD
    assert freeze_window(ahead, NOW, 900, 300) == (ahead - timedelta(seconds=900), ahead + timedelta(seconds=300))
    assert freeze_window(NOW, NOW, 10**9, 10**9) == (NOW + MAX_WINDOW - MAX_WINDOW, NOW + MAX_WINDOW)


@pytest.mark.parametrize("text", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_times_outside_the_calendar_in_utc_are_a_payload_error(text: str) -> None:
    with pytest.raises(PayloadError, match="outside the years"):
        parse_iso(text, "startsAt")


def test_a_name_with_a_trailing_newline_is_refused() -> None:
    from freezeframe.contracts.keys import check_name

    with pytest.raises(PayloadError):
        check_name("incident_id", "abc\n")


# ---------------------------------------------------------------- the fuzz sample, and proof that it can fail

@pytest.mark.parametrize("route", ROUTES)
def test_fuzz_sample_no_5xx_no_hang_nothing_written_on_a_4xx(target: WebhookTarget, route: str) -> None:
    stats = run_route(target, route, FUZZ_SAMPLE, seed=7)
    assert stats.inputs == FUZZ_SAMPLE and not stats.failures, "\n".join([stats.summary(), *stats.failures])
    # The sample reaches every outcome it should: accepted requests, rejections, wrong credentials.
    assert {401, 400} <= set(stats.statuses) and any(code < 300 for code in stats.statuses), stats.summary()


def test_the_fuzz_reports_a_write_before_a_rejection(target: WebhookTarget, monkeypatch: pytest.MonkeyPatch) -> None:
    original = intake.accept_manual

    def writes_then_rejects(settings: Settings, s3: Any, *args: Any, **kwargs: Any) -> Any:
        s3.put_object(Bucket=settings.evidence_bucket, Key="incidents/x/half-written.json", Body=b"{}")
        return original(settings, s3, *args, **kwargs)

    monkeypatch.setattr(intake, "accept_manual", writes_then_rejects)
    stats = run_route(target, "freeze", 200, seed=7)
    assert stats.written_on_4xx, stats.summary()


def test_an_s3_outage_stays_a_5xx_and_the_fuzz_reports_it(target: WebhookTarget) -> None:
    target.s3.outage = True
    status, reply = post(target, "freeze", sample("freeze"))
    assert status == 502 and "EndpointConnectionError" in reply["exception"]
    stats = run_route(target, "alertmanager", 200, seed=7)
    assert stats.server_errors, stats.summary()
