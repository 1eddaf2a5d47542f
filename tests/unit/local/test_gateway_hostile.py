"""The local gateway against hostile clients: bad Content-Length, slow and stalled clients, oversized bodies, and
unauthenticated or forged Lambda Invoke API calls. Raw sockets, so the requests are exactly what an attacker sends."""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from freezeframe_local import invoke_auth
from freezeframe_local.gateway import MAX_BODY, LocalGateway

from freezeframe.contracts.config import Settings
from freezeframe.contracts.errors import SignatureError

ECHO = '''
import json
def lambda_handler(event, context):
    return {"statusCode": 200, "body": json.dumps({"body": event.get("body")})}
'''
RECORD = '''
import json, pathlib
def lambda_handler(event, context):
    with open(event["out"], "a") as handle:
        handle.write(json.dumps(event) + "\\n")
'''
READ_TIMEOUT_S = 0.5
READ_DEADLINE_S = 1.5


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[LocalGateway]:
    import freezeframe_local.functions as functions

    functions_dir = tmp_path / "functions"
    for folder, source in (("webhook", ECHO), ("freeze", RECORD)):
        (functions_dir / folder).mkdir(parents=True)
        (functions_dir / folder / "app.py").write_text(source)
    functions._loaded.clear()
    config = Settings(functions_dir=functions_dir, state_dir=tmp_path / "state")
    gw = LocalGateway(config, read_timeout_s=READ_TIMEOUT_S, read_deadline_s=READ_DEADLINE_S).start()
    yield gw
    gw.stop()
    functions._loaded.clear()


def raw_exchange(gateway: LocalGateway, data: bytes, wait_s: float = 10.0, pause_after_send_s: float = 0.0) -> bytes:
    """Send `data` as is, keep the socket open (a stalled client), and return everything the gateway answers."""
    host, port = gateway._server.server_address[:2]
    with socket.create_connection((str(host), int(port)), timeout=wait_s) as sock:
        sock.sendall(data)
        if pause_after_send_s:
            time.sleep(pause_after_send_s)
        received = b""
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            received += chunk
        return received


def status_of(reply: bytes) -> int:
    assert reply.startswith(b"HTTP/1.1 "), reply[:200]
    return int(reply.split(b" ", 2)[1])


def post_head(length: str, extra: str = "") -> bytes:
    return (f"POST /v1/freeze HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\n{extra}\r\n").encode()


# ---------------------------------------------------------------- framing

@pytest.mark.parametrize("length", ["-1", "abc", "+5", " 5x", "0x10", "1e3", "99999999999999999999"])
def test_a_malformed_content_length_is_a_400(gateway: LocalGateway, length: str) -> None:
    started = time.monotonic()
    reply = raw_exchange(gateway, post_head(length) + b"{}")
    assert status_of(reply) == (413 if length.isdigit() else 400), reply
    assert b"Content-Length" in reply or b"over" in reply
    assert time.monotonic() - started < READ_TIMEOUT_S + 2  # answered at once, not after a timeout


def test_conflicting_content_lengths_are_a_400(gateway: LocalGateway) -> None:
    reply = raw_exchange(gateway, post_head("2", "Content-Length: 3\r\n") + b"{}")
    assert status_of(reply) == 400 and b"conflicting" in reply


def test_a_body_shorter_than_its_length_is_a_400_after_the_read_timeout(gateway: LocalGateway) -> None:
    started = time.monotonic()
    reply = raw_exchange(gateway, post_head("100") + b'{"a": 1}')  # and then the client stalls
    took = time.monotonic() - started
    assert status_of(reply) == 400 and b"8 of 100 bytes" in reply, reply
    assert READ_TIMEOUT_S * 0.8 <= took < READ_DEADLINE_S + 2, took


def test_a_body_cut_short_by_the_client_closing_is_a_400(gateway: LocalGateway) -> None:
    host, port = gateway._server.server_address[:2]
    with socket.create_connection((str(host), int(port)), timeout=10) as sock:
        sock.sendall(post_head("100") + b'{"a"')
        sock.shutdown(socket.SHUT_WR)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    assert status_of(reply) == 400 and b"4 of 100 bytes" in reply


def test_a_client_trickling_its_request_is_cut_off_at_the_read_deadline(gateway: LocalGateway) -> None:
    host, port = gateway._server.server_address[:2]
    started = time.monotonic()
    with socket.create_connection((str(host), int(port)), timeout=10) as sock:
        sock.sendall(post_head("1000"))
        cut_off = False
        for _ in range(40):  # one byte every READ_TIMEOUT_S / 2: never trips the per-read timeout
            try:
                sock.sendall(b"x")
            except OSError:
                cut_off = True
                break
            time.sleep(READ_TIMEOUT_S / 2)
            if time.monotonic() - started > READ_DEADLINE_S + 1:
                break
        sock.settimeout(2)
        reply = sock.recv(65536)
    took = time.monotonic() - started
    assert cut_off or status_of(reply) == 400, reply
    assert took < READ_DEADLINE_S + 2.5, took


def test_a_client_that_sends_nothing_is_disconnected(gateway: LocalGateway) -> None:
    started = time.monotonic()
    assert raw_exchange(gateway, b"") == b""  # no request line: closed without an answer
    assert time.monotonic() - started < READ_DEADLINE_S + 1


def test_a_body_over_the_cap_is_a_413_before_it_is_read(gateway: LocalGateway) -> None:
    started = time.monotonic()
    reply = raw_exchange(gateway, post_head(str(MAX_BODY + 1)) + b"{")
    assert status_of(reply) == 413
    assert time.monotonic() - started < READ_TIMEOUT_S  # no waiting for the 6 MiB that never come


def test_a_chunked_body_is_refused_with_411(gateway: LocalGateway) -> None:
    request = (b"POST /v1/freeze HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n")
    assert status_of(raw_exchange(gateway, request)) == 411


def test_a_well_formed_request_still_goes_through(gateway: LocalGateway) -> None:
    reply = raw_exchange(gateway, post_head("8", "Connection: close\r\n") + b'{"a": 1}')
    assert status_of(reply) == 200 and json.loads(reply.split(b"\r\n\r\n", 1)[1]) == {"body": '{"a": 1}'}


def test_the_gateway_still_serves_after_hostile_clients(gateway: LocalGateway) -> None:
    for data in (post_head("-1"), post_head("abc"), post_head("50") + b"{"):
        raw_exchange(gateway, data, wait_s=READ_DEADLINE_S + 1)
    with urllib.request.urlopen(f"{gateway.url}/_freezeframe/health", timeout=5) as reply:
        assert reply.status == 200


# ---------------------------------------------------------------- the Invoke API requires the stack's credentials

INVOKE_PATH = "/2015-03-31/functions/freezeframe-freeze/invocations"


def signed_invoke(gateway: LocalGateway, payload: bytes, access_key: str, secret_key: str,
                  when: datetime | None = None, tamper: bytes | None = None) -> bytes:
    host, port = gateway._server.server_address[:2]
    request = AWSRequest(method="POST", url=f"http://{host}:{port}{INVOKE_PATH}", data=payload,
                         headers={"X-Amz-Invocation-Type": "Event", "Content-Type": "application/json"})
    signer = SigV4Auth(Credentials(access_key, secret_key), "lambda", "us-east-1")
    if when is None:
        signer.add_auth(request)
    else:
        request.context["timestamp"] = when.strftime("%Y%m%dT%H%M%SZ")
        request.headers["X-Amz-Date"] = request.context["timestamp"]
        signature = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
        request.headers["Authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={access_key}/{request.context['timestamp'][:8]}/us-east-1/lambda/"
            f"aws4_request, SignedHeaders={signer.signed_headers(signer.headers_to_sign(request))}, "
            f"Signature={signature}")
    body = tamper if tamper is not None else payload
    head = "".join(f"{name}: {value}\r\n" for name, value in request.headers.items() if name.lower() != "host")
    data = (f"POST {INVOKE_PATH} HTTP/1.1\r\nHost: {host}:{port}\r\n{head}Content-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n").encode() + body
    return raw_exchange(gateway, data)


def test_the_stack_key_is_made_once_private_and_shared(gateway: LocalGateway, tmp_path: Path) -> None:
    first = invoke_auth.credentials(gateway.settings)
    assert invoke_auth.credentials(Settings(state_dir=gateway.settings.state_dir)) == first
    path = invoke_auth.key_file(gateway.settings)
    assert path.stat().st_mode & 0o777 == 0o600 and len(first[1]) >= 32
    assert invoke_auth.credentials(Settings(state_dir=tmp_path / "another-stack")) != first


def test_a_signed_invocation_runs(gateway: LocalGateway, tmp_path: Path) -> None:
    out = tmp_path / "ran.jsonl"
    access_key, secret_key = invoke_auth.credentials(gateway.settings)
    reply = signed_invoke(gateway, json.dumps({"out": str(out)}).encode(), access_key, secret_key)
    assert status_of(reply) == 202, reply
    assert gateway.wait_idle(10) and json.loads(out.read_text()) == {"out": str(out)}


@pytest.mark.parametrize("case", ["unsigned", "well-known-test-key", "wrong-secret", "tampered-body", "stale",
                                  "from-the-future"])
def test_an_invocation_without_the_stack_credentials_is_refused_and_runs_nothing(gateway: LocalGateway,
                                                                                tmp_path: Path, case: str) -> None:
    out = tmp_path / "ran.jsonl"
    payload = json.dumps({"out": str(out)}).encode()
    access_key, secret_key = invoke_auth.credentials(gateway.settings)
    now = datetime.now(UTC)
    if case == "unsigned":
        host, port = gateway._server.server_address[:2]
        reply = raw_exchange(gateway, (f"POST {INVOKE_PATH} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                                       f"X-Amz-Invocation-Type: Event\r\nContent-Length: {len(payload)}\r\n"
                                       "Connection: close\r\n\r\n").encode() + payload)
    elif case == "well-known-test-key":
        reply = signed_invoke(gateway, payload, "test", "test")
    elif case == "wrong-secret":
        reply = signed_invoke(gateway, payload, access_key, secret_key + "x")
    elif case == "tampered-body":
        reply = signed_invoke(gateway, payload, access_key, secret_key,
                              tamper=json.dumps({"out": str(out), "x": 1}).encode())
    elif case == "stale":
        reply = signed_invoke(gateway, payload, access_key, secret_key, when=now - timedelta(minutes=6))
    else:
        reply = signed_invoke(gateway, payload, access_key, secret_key, when=now + timedelta(minutes=6))
    assert status_of(reply) == 403, reply
    assert b"InvalidSignatureException" in reply and secret_key.encode() not in reply
    time.sleep(0.2)
    assert gateway.invocations == [] and not out.exists()


def test_a_boto3_client_with_other_credentials_gets_an_error(gateway: LocalGateway) -> None:
    client = boto3.client("lambda", endpoint_url=gateway.url, region_name="us-east-1", aws_access_key_id="test",
                          aws_secret_access_key="test")
    with pytest.raises(ClientError, match="InvalidSignatureException"):
        client.invoke(FunctionName="freezeframe-freeze", InvocationType="Event", Payload=b"{}")
    assert gateway.invocations == []


def test_the_handlers_own_invoke_client_signs_with_the_stack_key(gateway: LocalGateway, tmp_path: Path) -> None:
    from freezeframe.adapters.invoke import invoke_async

    out = tmp_path / "ran.jsonl"
    config = gateway.settings.with_(lambda_endpoint=gateway.url)
    invoke_async(config, "freezeframe-freeze", {"out": str(out)})
    assert gateway.wait_idle(10) and json.loads(out.read_text()) == {"out": str(out)}


def test_the_signature_check_itself() -> None:
    access_key, secret_key = "AKID", "s" * 40
    request = AWSRequest(method="POST", url="http://127.0.0.1:9/2015-03-31/functions/f/invocations?Qualifier=1",
                         data=b"{}", headers={"X-Amz-Invocation-Type": "Event"})
    SigV4Auth(Credentials(access_key, secret_key), "lambda", "eu-west-1").add_auth(request)
    headers: dict[str, Any] = {**dict(request.headers.items()), "Host": "127.0.0.1:9"}
    target = "/2015-03-31/functions/f/invocations?Qualifier=1"
    invoke_auth.verify("POST", target, headers, b"{}", access_key, secret_key)
    for changed in ({"target": target.replace("f/", "g/")}, {"target": target.replace("=1", "=2")},
                    {"body": b"{ }"}, {"secret": secret_key + "x"}, {"access_key": "OTHER"},
                    {"headers": {**headers, "X-Amz-Invocation-Type": "RequestResponse"}},
                    {"headers": {**headers, "x-amz-content-sha256": "0" * 64}},
                    {"headers": {k: v for k, v in headers.items() if k != "Authorization"}}):
        with pytest.raises(SignatureError):
            invoke_auth.verify("POST", changed.get("target", target), changed.get("headers", headers),
                               changed.get("body", b"{}"), changed.get("access_key", access_key),
                               changed.get("secret", secret_key))
