"""PagerDuty post-back on the real local stack: a signed PagerDuty trigger freezes replayed segments in LocalStack,
the gateway runs freeze, dissect and finalize, and both the freeze and finalize steps POST a note to a local HTTP
server standing in for the PagerDuty REST API, which records every request (and answers 503 and 429 first, so the
backoff is exercised)."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from freezeframe_local.events import function_url_event
from freezeframe_local.functions import load_handler

from freezeframe.adapters import pagerduty_api
from freezeframe.adapters import s3 as s3io
from freezeframe.adapters.bus import KafkaBus
from freezeframe_agent.main import run_replay
from tests.fixtures.make_pagerduty_events import checkout, envelope

pytestmark = pytest.mark.integration
SAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "sample.pcap"
SIGNING_SECRET = "pd-postback-signing"  # noqa: S105
SENDER = "oncall@example.com"


class Recorder:
    """A loopback HTTP server that records each request and answers with the next scripted status (then 201)."""

    def __init__(self, script: list[tuple[int, dict[str, str]]]) -> None:
        self.requests: list[dict[str, Any]] = []
        self.script = list(script)
        self.lock = threading.Lock()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with recorder.lock:
                    recorder.requests.append({"path": self.path, "headers": dict(self.headers),
                                              "body": json.loads(body)})
                    status, headers = recorder.script.pop(0) if recorder.script else (201, {})
                reply = json.dumps({"note": {"id": "PWL7QXS"}} if status == 201 else {"error": "busy"}).encode()
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def notes(self) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.requests if r["path"].endswith("/notes")]


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    server = Recorder([(503, {}), (429, {"Retry-After": "0"})])
    server.thread.start()
    try:
        yield server
    finally:
        server.server.shutdown()
        server.server.server_close()


def signed_trigger(pd_incident: str, occurred_at: datetime) -> dict[str, Any]:
    data = {**checkout("triggered"), "id": pd_incident}
    body = json.dumps(envelope(uuid.uuid4().hex, "incident.triggered",
                               occurred_at.isoformat().replace("+00:00", "Z"), None, data),
                      separators=(",", ":")).encode()
    signature = hmac.new(SIGNING_SECRET.encode(), body, hashlib.sha256).hexdigest()
    headers = {"Content-Type": "application/json", "X-PagerDuty-Signature": f"v1={signature}",
               "X-Webhook-Id": uuid.uuid4().hex}
    return function_url_event("POST", "/v1/alerts/pagerduty", headers, body)


def test_freeze_and_finalize_post_notes_to_the_pagerduty_incident(local: Any, handler_env: Any, recorder: Recorder,
                                                                   lambda_context: Any,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    config, s3, gateway = local
    api_token = "pd-api-" + uuid.uuid4().hex
    config = config.with_(pagerduty_secrets_env=SIGNING_SECRET, pagerduty_api_token_env=api_token,
                          pagerduty_api_url=recorder.url, pagerduty_from=SENDER, lookback_s=3600, lookahead_s=5)
    gateway.settings = config
    handler_env(config)
    assert config.kafka_bootstrap
    records = run_replay(config, SAMPLE, speedup=1000.0, s3=s3, bus=KafkaBus(config.kafka_bootstrap))
    assert records
    pd_incident = "Q" + uuid.uuid4().hex[:6].upper()
    caplog.set_level(logging.DEBUG)
    reply = load_handler(config, "webhook")(signed_trigger(pd_incident, datetime.now(UTC) - timedelta(seconds=5)),
                                            lambda_context)
    assert reply["statusCode"] == 202, reply
    [incident] = json.loads(reply["body"])["accepted"]
    assert gateway.wait_idle(120)

    notes = recorder.notes()
    # 503 then 429 answered the first two tries of the freeze note; the third and the finalize note got 201.
    assert len(notes) == 4, [n["path"] for n in notes]
    for note in notes:
        assert note["path"] == f"/incidents/{pd_incident}/notes"
        assert note["headers"]["Authorization"] == f"Token token={api_token}"
        assert note["headers"]["From"] == SENDER
        assert note["headers"]["Accept"] == "application/vnd.pagerduty+json;version=2"
    frozen, finalized = notes[2]["body"]["note"]["content"], notes[3]["body"]["note"]["content"]
    assert notes[0]["body"] == notes[1]["body"] == notes[2]["body"]
    assert f"s3://{config.evidence_bucket}/incidents/{incident}/manifest.json" in frozen
    window = s3io.get_json(s3, config.evidence_bucket, f"incidents/{incident}/manifest.json")["request"]
    start_ns, end_ns = (int(datetime.fromisoformat(window[k].replace("Z", "+00:00")).timestamp() * 1e9)
                        for k in ("window_start", "window_end"))
    in_window = [r for r in records if r.start_ns <= end_ns and r.end_ns >= start_ns]
    assert in_window and f"- {config.node_name}: {len(in_window)} segments" in frozen
    assert f"freezeframe verify {incident}" in frozen and f"freezeframe verify {incident}" in finalized
    assert f"{config.s3_endpoint}/{config.evidence_bucket}/incidents/{incident}/report.html" in finalized
    assert "Coverage:" in finalized and "connections " in finalized
    assert api_token not in caplog.text


def test_gives_up_cleanly_on_refusal_and_after_retries(recorder: Recorder) -> None:
    sleeps: list[float] = []
    recorder.script = [(401, {})]
    refused = pagerduty_api.add_note(recorder.url, "secret-token", SENDER, "PX1", "hello", sleep=sleeps.append)
    assert (refused.delivered, refused.status, refused.attempts) == (False, 401, 1) and sleeps == []
    recorder.script = [(500, {})] * 3
    failed = pagerduty_api.add_note(recorder.url, "secret-token", SENDER, "PX1", "hello", attempts=3,
                                    sleep=sleeps.append)
    assert (failed.delivered, failed.status, failed.attempts) == (False, 500, 3)
    assert len(sleeps) == 2 and sleeps[1] > sleeps[0] * 0.9 / 2  # backoff grows (jitter within [0.5, 1])
    unreachable = pagerduty_api.add_note("http://127.0.0.1:9", "secret-token", SENDER, "PX1", "x", attempts=2,
                                         sleep=sleeps.append)
    assert not unreachable.delivered and unreachable.status is None and "secret-token" not in str(unreachable)
