"""Hostile input on the real local stack: the webhook routes over HTTP through the local gateway, the real handlers,
LocalStack S3 (Object Lock enforced) and the signed Invoke API for the freeze hand-off.

A fuzz sample per route (the generator of tests/fixtures/webhook_fuzz.py; the 100,000-input form runs in memory
from `make bench-webhook-fuzz`): no 5xx, an answer within the time limit, and for every 4xx no new object version in
either bucket and no invocation started. And the PagerDuty replay: the same signed delivery with a fresh
X-Webhook-Id writes nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import time
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from freezeframe_local.gateway import LocalGateway

from tests.fixtures.webhook_fuzz import (
    ALERTMANAGER_TOKEN,
    API_TOKEN,
    HANG_S,
    PAGERDUTY_SECRET,
    ROUTES,
    FuzzInput,
    Generator,
    _samples,
)

pytestmark = pytest.mark.integration
INPUTS_PER_ROUTE = 150


@pytest.fixture
def hostile(local: Any, handler_env: Any) -> Any:
    config, s3, gateway = local
    config = config.with_(alertmanager_token_env=ALERTMANAGER_TOKEN, api_token_env=API_TOKEN,
                          pagerduty_secrets_env=PAGERDUTY_SECRET)
    handler_env(config)
    gateway.settings = config
    return config, s3, gateway


def versions(s3: Any, *buckets: str) -> int:
    total = 0
    for bucket in buckets:
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
            total += len(page.get("Versions", [])) + len(page.get("DeleteMarkers", []))
    return total


def send(gateway: LocalGateway, item: FuzzInput) -> tuple[int, bytes]:
    """One request over a real socket, as a client would send it (header values HTTP cannot carry are dropped)."""
    parts = urlsplit(gateway.url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=HANG_S * 4)
    try:
        path = quote(item.path, safe="/%:@!$&'()*+,;=-._~")
        headers = {name: value for name, value in item.headers.items()
                   if "\r" not in value and "\n" not in value and all(ord(c) < 256 for c in value)}
        connection.request(item.method, path, body=item.body, headers=headers)
        reply = connection.getresponse()
        return reply.status, reply.read()
    finally:
        connection.close()


@pytest.mark.parametrize("route", ROUTES)
def test_fuzz_sample_over_http_on_the_real_stack(hostile: Any, route: str) -> None:
    config, s3, gateway = hostile
    buckets = (config.evidence_bucket, config.raw_bucket)
    incident_ids: list[str] = []
    if route == "incident":
        for index in range(3):
            payload = _samples()["alertmanager"][0]
            payload = {**payload, "alerts": [{**payload["alerts"][0], "fingerprint": f"seed{index}"}]}
            status, body = send(gateway, FuzzInput("POST", "/v1/alerts/alertmanager",
                                                   {"authorization": f"Bearer {ALERTMANAGER_TOKEN}"},
                                                   json.dumps(payload).encode(), "seed"))
            assert status == 202, body
            incident_ids.extend(json.loads(body)["accepted"])
    generator = Generator(route, seed=11, incident_ids=incident_ids or None)
    statuses: dict[int, int] = {}
    failures = []
    for index in range(INPUTS_PER_ROUTE):
        item = generator.next()
        assert gateway.wait_idle(60)
        before, started = versions(s3, *buckets), len(gateway.invocations)
        began = time.monotonic()
        status, body = send(gateway, item)
        took = time.monotonic() - began
        statuses[status] = statuses.get(status, 0) + 1
        if status >= 500 or took > HANG_S:
            failures.append(f"input {index} ({item.kind}) {item.method} {item.path[:60]}: {status} in {took:.1f}s "
                            f"{body[:200]!r}")
        if 400 <= status < 500:
            assert gateway.wait_idle(60)
            if versions(s3, *buckets) != before or len(gateway.invocations) != started:
                failures.append(f"input {index} ({item.kind}): {status} but wrote or invoked something")
    assert not failures, "\n".join(failures[:10])
    assert any(400 <= code < 500 for code in statuses) and any(code < 300 for code in statuses), statuses


@pytest.mark.parametrize("case", [0, 2, 3])  # triggered, resolved, acknowledged
def test_a_pagerduty_replay_with_a_fresh_webhook_id_writes_nothing(hostile: Any, case: int) -> None:
    config, s3, gateway = hostile
    samples = _samples()["pagerduty"]

    def deliver(payload: dict[str, Any], webhook_id: str | None) -> dict[str, Any]:
        body = json.dumps(payload).encode()
        headers = {"x-pagerduty-signature": "v1=" + hmac.new(PAGERDUTY_SECRET.encode(), body,
                                                             hashlib.sha256).hexdigest()}
        if webhook_id is not None:
            headers["x-webhook-id"] = webhook_id
        status, reply = send(gateway, FuzzInput("POST", "/v1/alerts/pagerduty", headers, body, "replay"))
        assert status == 202, reply
        return dict(json.loads(reply))

    if case == 2:
        deliver(samples[0], "the-trigger")  # a resolve writes only for a known incident
    deliver(samples[case], "delivery-1")
    assert gateway.wait_idle(60)
    before, invoked = versions(s3, config.evidence_bucket, config.raw_bucket), len(gateway.invocations)
    for fresh in ("delivery-2", "delivery-3", None):
        reply = deliver(samples[case], fresh)
        assert reply["accepted"] == [] and reply["duplicates"] == [f"delivery:{samples[case]['event']['id']}"]
    assert gateway.wait_idle(60)
    assert versions(s3, config.evidence_bucket, config.raw_bucket) == before
    assert len(gateway.invocations) == invoked
