"""The local gateway speaks the Function URL (payload 2.0) and Lambda Invoke API shapes, with AWS's async retries."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import boto3
import pytest
from freezeframe_local.gateway import LocalGateway
from freezeframe_local.invoke_auth import credentials

from freezeframe.contracts.config import Settings

ECHO = '''
import json
def lambda_handler(event, context):
    return {"statusCode": 207, "headers": {"x-echo": "1"}, "body": json.dumps(event), "isBase64Encoded": False}
'''
FAILING = '''
def lambda_handler(event, context):
    raise RuntimeError("boom " + event["n"])
'''
OK = '''
import json, pathlib
def lambda_handler(event, context):
    pathlib.Path(event["out"]).write_text(json.dumps({"event": event, "request_id": context.aws_request_id}))
'''


@pytest.fixture
def gateway(tmp_path: Path) -> Any:
    functions = tmp_path / "functions"
    for folder, source in (("webhook", ECHO), ("freeze", FAILING), ("dissect", OK)):
        (functions / folder).mkdir(parents=True)
        (functions / folder / "app.py").write_text(source)
    config = Settings(functions_dir=functions, state_dir=tmp_path / "state")
    gw = LocalGateway(config).start()
    yield gw
    gw.stop()


def lambda_client(gateway: LocalGateway) -> Any:
    """A boto3 Lambda client with the stack's own invoke credentials, as the handlers' client has."""
    access_key, secret_key = credentials(gateway.settings)
    return boto3.client("lambda", endpoint_url=gateway.url, region_name="us-east-1", aws_access_key_id=access_key,
                        aws_secret_access_key=secret_key)


def test_http_requests_become_function_url_events(gateway: LocalGateway) -> None:
    request = urllib.request.Request(f"{gateway.url}/v1/alerts/x?a=1&b=2", data=b'{"k": "v"}', method="POST",
                                     headers={"Authorization": "Bearer t", "X-Custom": "yes"})
    with urllib.request.urlopen(request, timeout=10) as reply:
        assert reply.status == 207 and reply.headers["x-echo"] == "1"
        event = json.loads(reply.read())
    assert event["version"] == "2.0" and event["routeKey"] == "$default"
    assert event["rawPath"] == "/v1/alerts/x" and event["rawQueryString"] == "a=1&b=2"
    assert event["queryStringParameters"] == {"a": "1", "b": "2"}
    assert event["headers"]["authorization"] == "Bearer t" and event["headers"]["x-custom"] == "yes"
    assert event["requestContext"]["http"]["method"] == "POST" and event["body"] == '{"k": "v"}'
    assert event["isBase64Encoded"] is False


def test_binary_bodies_arrive_base64_encoded(gateway: LocalGateway) -> None:
    request = urllib.request.Request(f"{gateway.url}/x", data=b"\xff\x00\xfe", method="POST")
    with urllib.request.urlopen(request, timeout=10) as reply:
        event = json.loads(reply.read())
    assert event["isBase64Encoded"] is True and event["body"] == "/wD+"


def test_async_invoke_answers_202_and_runs_the_handler(gateway: LocalGateway, tmp_path: Path) -> None:
    out = tmp_path / "ran.json"
    reply = lambda_client(gateway).invoke(FunctionName="freezeframe-dissect", InvocationType="Event",
                                              Payload=json.dumps({"out": str(out)}).encode())
    assert reply["StatusCode"] == 202
    assert gateway.wait_idle(10)
    assert json.loads(out.read_text())["event"] == {"out": str(out)}


def test_a_failing_async_invocation_is_retried_twice_then_dead_lettered(gateway: LocalGateway) -> None:
    lambda_client(gateway).invoke(FunctionName="freezeframe-freeze", InvocationType="Event",
                                      Payload=b'{"n": "7"}')
    assert gateway.wait_idle(15)
    [invocation] = gateway.invocations
    assert (invocation.state, invocation.attempts) == ("failed", 3)
    assert "boom 7" in (invocation.error or "")
    dead = [json.loads(line) for line in (gateway.settings.state_dir / "dead-letters.jsonl").read_text().splitlines()]
    assert [d["payload"] for d in dead] == [{"n": "7"}]


def test_unknown_functions_are_404_like_lambda(gateway: LocalGateway) -> None:
    with pytest.raises(Exception, match="ResourceNotFoundException|Function not found"):
        lambda_client(gateway).invoke(FunctionName="nope", InvocationType="Event", Payload=b"{}")


def test_a_crashing_function_url_handler_is_a_502(gateway: LocalGateway, tmp_path: Path) -> None:
    (Path(str(gateway.settings.functions_dir)) / "webhook" / "app.py").write_text(FAILING)
    # The handler module is cached per path; a fresh gateway on a copy picks up the crashing one.
    config = Settings(functions_dir=gateway.settings.functions_dir, state_dir=tmp_path / "s2")
    import freezeframe_local.functions as functions

    functions._loaded.clear()
    other = LocalGateway(config).start()
    try:
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(urllib.request.Request(f"{other.url}/x", data=b'{"n": "1"}', method="POST"),
                                   timeout=10)
        assert info.value.code == 502
    finally:
        other.stop()
        functions._loaded.clear()
