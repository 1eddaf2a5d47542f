"""The webhook handler on a real Object-Lock S3 endpoint: rejected requests write nothing; accepted ones write one
incident record and hand off one freeze, however often they are delivered."""

from __future__ import annotations

import json
from typing import Any

import pytest
from freezeframe_local.functions import load_handler

from freezeframe.contracts.keys import incident_key, manifest_key

pytestmark = pytest.mark.integration


def versions(s3: Any, bucket: str) -> list[dict[str, Any]]:
    reply = s3.list_object_versions(Bucket=bucket)
    return reply.get("Versions", []) + reply.get("DeleteMarkers", [])


@pytest.mark.parametrize(("case", "status", "message"), [
    ("alertmanager_bad_token", 401, "unauthorized"),
    ("alertmanager_no_auth", 401, "unauthorized"),
    ("alertmanager_malformed_json", 400, "not valid JSON"),
    ("alertmanager_wrong_version", 400, "version"),
    ("alertmanager_missing_fingerprint", 400, "fingerprint"),
    ("unknown_route", 404, "no route"),
])
def test_rejected_requests_write_nothing(local: Any, event: Any, lambda_context: Any, case: str, status: int,
                                         message: str) -> None:
    config, s3, gateway = local
    reply = load_handler(config, "webhook")(event("webhook", case), lambda_context)
    assert reply["statusCode"] == status
    assert message in json.loads(reply["body"])["error"]
    assert versions(s3, config.evidence_bucket) == []
    assert versions(s3, config.raw_bucket) == []
    assert gateway.invocations == []


def test_an_oversized_body_is_413_and_writes_nothing(local: Any, event: Any, lambda_context: Any) -> None:
    config, s3, _ = local
    big = event("webhook", "alertmanager_firing")
    big["body"] = json.dumps({"version": "4", "alerts": [], "pad": "x" * (1024 * 1024)})
    reply = load_handler(config, "webhook")(big, lambda_context)
    assert reply["statusCode"] == 413
    assert versions(s3, config.evidence_bucket) == []


def test_a_firing_alert_is_accepted_once_however_often_it_is_delivered(local: Any, event: Any,
                                                                         lambda_context: Any) -> None:
    config, s3, gateway = local
    handler = load_handler(config, "webhook")
    first = handler(event("webhook", "alertmanager_firing"), lambda_context)
    assert first["statusCode"] == 202
    accepted = json.loads(first["body"])["accepted"]
    assert len(accepted) == 1
    for _ in range(4):
        again = handler(event("webhook", "alertmanager_firing"), lambda_context)
        assert again["statusCode"] == 202
        assert json.loads(again["body"])["duplicates"] == accepted
    assert gateway.wait_idle(30)
    incident = s3.list_object_versions(Bucket=config.evidence_bucket, Prefix=incident_key(accepted[0]))
    assert len(incident["Versions"]) == 1
    # One freeze; its window reaches past now, so its hold's dissection starts too (freezeframe.freeze.follow).
    assert [i.function for i in gateway.invocations if i.function == "freeze"] == ["freeze"]
    assert gateway.invocations[0].state == "succeeded"
    manifest = json.loads(s3.get_object(Bucket=config.evidence_bucket, Key=manifest_key(accepted[0]))["Body"].read())
    assert manifest["incident_id"] == accepted[0]


def test_tokens_never_reach_the_logs(local: Any, event: Any, lambda_context: Any,
                                     capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    config, _, gateway = local
    handler = load_handler(config, "webhook")
    caplog.set_level("DEBUG")
    for case in ("alertmanager_bad_token", "alertmanager_firing", "alertmanager_malformed_json"):
        handler(event("webhook", case), lambda_context)
    gateway.wait_idle(30)
    logged = capsys.readouterr().out + capsys.readouterr().err + caplog.text
    assert "webhook rejected" in logged or "request rejected" in logged  # the rejections were logged...
    assert config.alertmanager_token_env and config.alertmanager_token_env not in logged  # ...without the secret
    assert "wrong-token" not in logged
