"""Idempotent intake under concurrency, the manual freeze API and the incident status API, on real S3."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from freezeframe_local.functions import load_handler

from freezeframe.contracts.keys import incident_key

pytestmark = pytest.mark.integration


def test_fifty_concurrent_deliveries_make_one_incident_and_one_freeze(local: Any, event: Any,
                                                                      lambda_context: Any) -> None:
    config, s3, gateway = local
    handler = load_handler(config, "webhook")
    firing = event("webhook", "alertmanager_firing")
    with ThreadPoolExecutor(max_workers=16) as pool:
        replies = list(pool.map(lambda _: handler(firing, lambda_context), range(50)))
    assert {r["statusCode"] for r in replies} == {202}
    bodies = [json.loads(r["body"]) for r in replies]
    accepted = [i for b in bodies for i in b["accepted"]]
    duplicates = [i for b in bodies for i in b["duplicates"]]
    assert len(accepted) == 1 and len(duplicates) == 49 and set(duplicates) == set(accepted)
    assert gateway.wait_idle(30)
    # One freeze; its window reaches past now, so its hold's dissection starts too (freezeframe.freeze.follow).
    assert [i.function for i in gateway.invocations if i.function == "freeze"] == ["freeze"]
    versions = s3.list_object_versions(Bucket=config.evidence_bucket, Prefix=incident_key(accepted[0]))
    assert len(versions["Versions"]) == 1


def test_manual_freeze_then_status(local: Any, event: Any, lambda_context: Any, handler_env: Any) -> None:
    config, s3, gateway = local
    config = config.with_(api_token_env="test-api-token")
    handler_env(config)
    handler = load_handler(config, "webhook")
    assert handler(event("webhook", "manual_freeze_bad_token"), lambda_context)["statusCode"] == 401
    assert handler(event("webhook", "manual_freeze_inverted_window"), lambda_context)["statusCode"] == 400
    assert s3.list_object_versions(Bucket=config.evidence_bucket).get("Versions", []) == []
    reply = handler(event("webhook", "manual_freeze"), lambda_context)
    assert reply["statusCode"] == 202
    [incident] = json.loads(reply["body"])["accepted"]
    assert gateway.wait_idle(30)
    status_event = event("webhook", "incident_status")
    status_event["rawPath"] = status_event["requestContext"]["http"]["path"] = f"/v1/incidents/{incident}"
    status = handler(status_event, lambda_context)
    assert status["statusCode"] == 200
    document = json.loads(status["body"])
    assert document["incident_id"] == incident and document["state"] in ("frozen", "dissected")
    assert document["request"]["lock"]["legal_hold"] is True
    missing = dict(status_event, rawPath="/v1/incidents/api-nope")
    missing["requestContext"] = {**status_event["requestContext"],
                                 "http": {**status_event["requestContext"]["http"], "path": "/v1/incidents/api-nope"}}
    assert handler(missing, lambda_context)["statusCode"] == 404
    wrong = handler(event("webhook", "wrong_method"), lambda_context)
    assert wrong["statusCode"] == 405 and wrong["headers"]["Allow"] == "POST"


def test_manual_freeze_signed_by_iam_needs_no_token_and_records_the_caller(local: Any, event: Any,
                                                                           lambda_context: Any) -> None:
    """In AWS, POST /v1/freeze arrives through the HTTP API route with AWS_IAM authorization: AWS has verified the
    SigV4 signature and names the caller in requestContext.authorizer.iam. No API token is configured here at all."""
    config, s3, gateway = local
    assert config.api_token_env is None and config.api_token_file is None and config.api_token_secret_arn is None
    handler = load_handler(config, "webhook")
    signed = event("webhook", "manual_freeze_iam")
    reply = handler(signed, lambda_context)
    assert reply["statusCode"] == 202, reply
    [incident] = json.loads(reply["body"])["accepted"]
    record = json.loads(s3.get_object(Bucket=config.evidence_bucket, Key=incident_key(incident))["Body"].read())
    assert record["requested_by"] == {"iam": signed["requestContext"]["authorizer"]["iam"]["userArn"]}
    assert gateway.wait_idle(30)
    # One freeze; its window reaches past now, so its hold's dissection starts too (freezeframe.freeze.follow).
    assert [i.function for i in gateway.invocations if i.function == "freeze"] == ["freeze"]

    # The same body over a route without IAM authorization (no authorizer in the context) falls back to the token;
    # with none configured every token is refused, an empty one included, and nothing is written.
    unsigned = json.loads(json.dumps(signed))
    del unsigned["requestContext"]["authorizer"]
    body = json.loads(unsigned["body"])
    body["title"] = "unsigned copy"
    unsigned["body"] = json.dumps(body)
    before = s3.list_object_versions(Bucket=config.evidence_bucket).get("Versions", [])
    assert handler(unsigned, lambda_context)["statusCode"] == 401
    unsigned["headers"]["authorization"] = "Bearer "
    assert handler(unsigned, lambda_context)["statusCode"] == 401
    assert s3.list_object_versions(Bucket=config.evidence_bucket).get("Versions", []) == before
