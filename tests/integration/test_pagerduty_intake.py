"""PagerDuty v3 through the webhook handler on real S3: signatures, event types, redelivery, resolve."""

from __future__ import annotations

import json
from typing import Any

import pytest
from freezeframe_local.functions import load_handler

from freezeframe.contracts.keys import resolved_key

pytestmark = pytest.mark.integration
TEST_SECRET = "pd-test-secret"  # the secret tests/fixtures/make_pagerduty_events.py signs the fixtures with


@pytest.fixture
def pd(local: Any, handler_env: Any) -> Any:
    config, s3, gateway = local
    config = config.with_(pagerduty_secrets_env=f"old-rotated-out,{TEST_SECRET}")
    handler_env(config)
    return config, s3, gateway, load_handler(config, "webhook")


def evidence(s3: Any, bucket: str) -> list[str]:
    return [v["Key"] for v in s3.list_object_versions(Bucket=bucket).get("Versions", [])]


@pytest.mark.parametrize(("case", "status"), [("pagerduty_bad_signature", 401), ("pagerduty_malformed", 400)])
def test_rejections_write_nothing(pd: Any, event: Any, lambda_context: Any, case: str, status: int) -> None:
    config, s3, gateway, handler = pd
    assert handler(event("webhook", case), lambda_context)["statusCode"] == status
    assert evidence(s3, config.evidence_bucket) == [] and gateway.invocations == []


def test_trigger_freezes_once_redelivery_is_recognised_and_resolve_closes(pd: Any, event: Any,
                                                                        lambda_context: Any) -> None:
    config, s3, gateway, handler = pd
    first = handler(event("webhook", "pagerduty_triggered"), lambda_context)
    assert first["statusCode"] == 202
    [incident] = json.loads(first["body"])["accepted"]
    redelivered = json.loads(handler(event("webhook", "pagerduty_triggered"), lambda_context)["body"])
    assert redelivered["accepted"] == [] and redelivered["duplicates"][0].startswith("delivery:")
    # Signed twice during a secret rotation, for another PagerDuty incident: accepted as its own incident.
    rotated = json.loads(handler(event("webhook", "pagerduty_rotated_secret"), lambda_context)["body"])
    assert len(rotated["accepted"]) == 1 and rotated["accepted"] != [incident]
    reopened = json.loads(handler(event("webhook", "pagerduty_reopened"), lambda_context)["body"])
    assert len(reopened["accepted"]) == 1 and reopened["accepted"][0].startswith(incident + "-")
    ignored = handler(event("webhook", "pagerduty_acknowledged"), lambda_context)
    assert ignored["statusCode"] == 202 and json.loads(ignored["body"])["ignored"] == ["incident.acknowledged"]
    resolved = json.loads(handler(event("webhook", "pagerduty_resolved"), lambda_context)["body"])
    assert resolved["resolved"] == [incident]
    assert resolved_key(incident) in evidence(s3, config.evidence_bucket)
    assert gateway.wait_idle(30)
    assert [i.function for i in gateway.invocations].count("freeze") == 3  # trigger, rotated, reopen
