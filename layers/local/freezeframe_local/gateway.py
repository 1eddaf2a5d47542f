"""The local HTTP endpoint: a Function URL for the webhook function and the Lambda Invoke API for the rest.

Requests to any path other than the Invoke API become payload format 2.0 events for the webhook handler, exactly
as a Function URL would deliver them. `POST /2015-03-31/functions/<name>/invocations` with
`X-Amz-Invocation-Type: Event` queues the handler on a worker pool and answers 202, as Lambda's async invoke does,
including two retries on error and a dead-letter record after the last one.

Hostile clients: it binds to loopback unless told otherwise; the Invoke API requires a SigV4 signature by the
stack's own key (freezeframe_local.invoke_auth); a Content-Length that is not a plain number is a 400, a body over
MAX_BODY a 413 (before reading it), a chunked body a 411; every read from a client has a socket timeout, and a
request must arrive whole (line, headers and body) within its read deadline, so a slow or stalled client is cut off
(a body cut short is a 400) instead of holding a thread forever.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import logging
import os
import re
import socket
import threading
import time
import traceback
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from freezeframe.contracts.config import K8S_TOPIC, Settings, settings
from freezeframe.contracts.errors import FreezeframeError
from freezeframe_local import invoke_auth
from freezeframe_local.events import function_url_event
from freezeframe_local.functions import DISSECTION, LocalContext, function_names, load_handler
from freezeframe_local.kafka_source import KafkaEventSource

logger = logging.getLogger(__name__)
INVOKE_PATH = re.compile(r"^/2015-03-31/functions/(?P<name>[^/]+)/invocations$")
MAX_BODY = 6 * 1024 * 1024  # Lambda's synchronous payload limit
READ_TIMEOUT_S = 10.0  # the longest wait for any single read from a client
READ_DEADLINE_S = 30.0  # the longest a request (line, headers, body) may take to arrive, keep-alive waits included
_CONTENT_LENGTH = re.compile(r"[0-9]+")
ASYNC_RETRY_DELAYS_S = (1.0, 2.0)
# powertools warns on every invocation that adds no metric (a rejected webhook); in AWS that is a log line,
# locally it would drown the console.
warnings.filterwarnings("ignore", message="No application metrics to publish")


@dataclass(slots=True)
class Invocation:
    request_id: str
    function: str
    state: str  # queued | running | succeeded | failed
    attempts: int = 0
    error: str | None = None
    started: float = 0.0
    finished: float = 0.0


class LocalGateway:
    def __init__(self, config: Settings, host: str = "127.0.0.1", port: int = 0, workers: int = 4,
                 read_timeout_s: float = READ_TIMEOUT_S, read_deadline_s: float = READ_DEADLINE_S) -> None:
        self.settings = config
        self._names = function_names(config)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lambda-async")
        # The dissection state machine's stand-in runs beside the functions, not in their pool: in AWS a Step
        # Functions execution takes no concurrency from the freeze function, so a long dissection (and its report)
        # must not queue the next incident's freeze behind it.
        self._machines = ThreadPoolExecutor(max_workers=2, thread_name_prefix="state-machine")
        self._lock = threading.Lock()
        self.invocations: list[Invocation] = []
        self._timers: set[threading.Timer] = set()
        self.sources: list[KafkaEventSource] = []  # the event source mappings this gateway stands in for
        self._stopped = False
        gateway = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = read_timeout_s  # StreamRequestHandler.setup puts it on the socket: every read is bounded

            def log_message(self, fmt: str, *args: Any) -> None:
                logger.debug("gateway %s", fmt % args)

            def handle_one_request(self) -> None:
                # A client that trickles its request a byte at a time never trips the per-read timeout; the
                # deadline stops reading from it altogether (the read sees end of stream), and is cancelled once
                # the whole request has arrived, so a long-running handler is not cut off.
                self.read_deadline = threading.Timer(read_deadline_s, _stop_reading, (self.connection,))
                self.read_deadline.daemon = True
                self.read_deadline.start()
                try:
                    super().handle_one_request()
                finally:
                    self.read_deadline.cancel()

            def _serve(self) -> None:
                gateway._serve(self)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _serve  # noqa: N815

        self._server = ThreadingHTTPServer((host, port), _Handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> LocalGateway:
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.1,), name="gateway", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            timers, self._timers = list(self._timers), set()
        for timer in timers:
            timer.cancel()
        self._server.shutdown()
        self._server.server_close()
        self._pool.shutdown(wait=True, cancel_futures=False)
        self._machines.shutdown(wait=True, cancel_futures=False)

    def wait_idle(self, timeout_s: float) -> bool:
        """True once no async invocation is queued or running (tests and the demo wait on this in-process)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                busy = any(i.state in ("queued", "running") for i in self.invocations)
            if not busy:
                return True
            time.sleep(0.05)
        return False

    def invoke_async(self, folder: str, payload: dict[str, Any]) -> Invocation:
        invocation = Invocation(request_id=LocalContext(folder).aws_request_id, function=folder, state="queued")
        with self._lock:
            self.invocations.append(invocation)
        self._pool_of(folder).submit(self._run_async, invocation, payload)
        return invocation

    def _run_async(self, invocation: Invocation, payload: dict[str, Any]) -> None:
        handler = self._run_dissection if invocation.function == DISSECTION else load_handler(
            self.settings, invocation.function)
        invocation.started = invocation.started or time.time()
        invocation.state, invocation.attempts = "running", invocation.attempts + 1
        try:
            handler(payload, LocalContext(invocation.function, aws_request_id=invocation.request_id))
        except Exception as exc:  # noqa: BLE001 - an async Lambda failure is recorded and retried, as AWS does
            invocation.error = f"{type(exc).__name__}: {exc}"
            logger.warning("async invocation failed", extra={"function": invocation.function,
                                                             "attempt": invocation.attempts,
                                                             "error": invocation.error})
            if invocation.attempts <= len(ASYNC_RETRY_DELAYS_S):
                # The retry waits on a timer, not in a worker, so a failing function never blocks the others.
                invocation.state = "queued"
                timer = threading.Timer(ASYNC_RETRY_DELAYS_S[invocation.attempts - 1], self._resubmit,
                                        (invocation, payload))
                timer.daemon = True
                timer.start()
                return
            invocation.state, invocation.finished = "failed", time.time()
            self._dead_letter(invocation, payload)
            return
        invocation.state, invocation.error, invocation.finished = "succeeded", None, time.time()

    def _pool_of(self, folder: str) -> ThreadPoolExecutor:
        return self._machines if folder == DISSECTION else self._pool

    def _run_dissection(self, payload: dict[str, Any], context: LocalContext) -> dict[str, Any]:
        """The dissection state machine, locally: plan, the dissect function per (node, chunk) and per node merge
        with the Maps' retries (a corrupt segment is not retried), then finalize with every node's outcome."""
        from freezeframe.adapters import s3 as s3io
        from freezeframe.dissect.fanout import run_locally

        incident_id, nodes = str(payload["incident_id"]), [str(node) for node in payload["nodes"]]
        dissect = load_handler(self.settings, "dissect")
        # Plan, the (node, chunk) Map with its retries and catch per chunk, the per-node merge Map (dissect.fanout).
        outcomes = run_locally(self.settings, s3io.client(self.settings),
                               lambda event: dissect(event, LocalContext("dissect")), incident_id, nodes)
        finalize = load_handler(self.settings, "finalize")
        result = dict(finalize({"incident_id": incident_id, "nodes": outcomes}, LocalContext("finalize")))
        follow = result.get("follow") or {}
        if follow.get("again"):
            # The state machine's Wait state and its loop back to the Map: the next pass is a new invocation of
            # the stand-in after `wait_s`, so nothing is "running" in between (wait_idle returns).
            self._schedule(float(follow["wait_s"]), DISSECTION,
                           {"incident_id": incident_id, "nodes": list(follow.get("nodes") or [])})
        return result

    def _schedule(self, delay_s: float, folder: str, payload: dict[str, Any]) -> None:
        def fire() -> None:
            with self._lock:
                self._timers.discard(timer)
                if self._stopped:
                    return
            self.invoke_async(folder, payload)

        timer = threading.Timer(delay_s, fire)
        timer.daemon = True
        with self._lock:
            if self._stopped:
                return
            self._timers.add(timer)
        timer.start()

    def pending_passes(self) -> int:
        """Dissection passes scheduled for later (an open hold's next pass)."""
        with self._lock:
            return len(self._timers)

    def _resubmit(self, invocation: Invocation, payload: dict[str, Any]) -> None:
        try:
            self._pool_of(invocation.function).submit(self._run_async, invocation, payload)
        except RuntimeError:  # the gateway is shutting down: what is left is dead-lettered, never dropped silently
            invocation.state, invocation.finished = "failed", time.time()
            self._dead_letter(invocation, payload)

    def _dead_letter(self, invocation: Invocation, payload: dict[str, Any]) -> None:
        path = self.settings.state_dir / "dead-letters.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"invocation": asdict(invocation), "payload": payload}) + "\n")

    def _serve(self, request: BaseHTTPRequestHandler) -> None:
        path, _, query = request.path.partition("?")
        body = _read_body(request)
        if body is None:
            return  # answered (400, 411 or 413) and the connection is closing
        deadline = getattr(request, "read_deadline", None)
        if deadline is not None:
            deadline.cancel()  # the whole request is in: the handler may take as long as it needs
        if path == "/_freezeframe/health":
            # The stack is healthy only while every event source still polls: a stopped source means no late
            # segment is locked any more, which must not hide behind a 200.
            sources = [source.health() for source in self.sources]
            stopped = [source["topic"] for source in sources if not source["alive"]]
            if stopped:
                _reply(request, 503, {"status": "unhealthy", "reasons": [
                    f"kafka event source of {topic} stopped" for topic in stopped], "sources": sources})
                return
            _reply(request, 200, {"status": "ok", "sources": sources})
            return
        if path == "/_freezeframe/invocations":
            with self._lock:
                _reply(request, 200, {"invocations": [asdict(i) for i in self.invocations]})
            return
        match = INVOKE_PATH.match(path)
        if match:
            self._serve_invoke(request, match["name"], body)
            return
        self._serve_function_url(request, path, query, body)

    def _serve_invoke(self, request: BaseHTTPRequestHandler, name: str, body: bytes) -> None:
        access_key, secret_key = invoke_auth.credentials(self.settings)
        try:
            invoke_auth.verify(request.command, request.path, dict(request.headers.items()), body, access_key,
                               secret_key)
        except FreezeframeError as exc:
            logger.warning("invoke refused: %s", exc)
            _reply(request, 403, {"Type": "User", "message": str(exc)},
                   {"x-amzn-ErrorType": "InvalidSignatureException"})
            return
        folder = self._names.get(name)
        if request.command != "POST" or folder is None:
            _reply(request, 404, {"Type": "User", "message": f"Function not found: {name}"},
                   {"x-amzn-ErrorType": "ResourceNotFoundException"})
            return
        try:
            payload = json.loads(body or b"{}")
        except json.JSONDecodeError:
            _reply(request, 400, {"Type": "User", "message": "Could not parse request body into json"},
                   {"x-amzn-ErrorType": "InvalidRequestContentException"})
            return
        invocation_type = request.headers.get("X-Amz-Invocation-Type", "RequestResponse")
        if invocation_type == "Event":
            invocation = self.invoke_async(folder, payload)
            _reply(request, 202, None, {"x-amzn-RequestId": invocation.request_id})
            return
        result = _call(lambda: load_handler(self.settings, folder)(payload, LocalContext(folder)))
        headers = {"X-Amz-Function-Error": "Unhandled"} if isinstance(result, _Failure) else {}
        _reply(request, 200, result.to_dict() if isinstance(result, _Failure) else result, headers)

    def _serve_function_url(self, request: BaseHTTPRequestHandler, path: str, query: str, body: bytes) -> None:
        event = function_url_event(request.command, path, dict(request.headers.items()), body, query,
                                   source_ip=request.client_address[0])
        result = _call(lambda: load_handler(self.settings, "webhook")(event, LocalContext("freezeframe-webhook")))
        if isinstance(result, _Failure):
            # A Function URL answers 502 when the function itself fails.
            _reply(request, 502, {"message": "Internal Server Error"})
            return
        _reply_function_url(request, result)


def _read_body(request: BaseHTTPRequestHandler) -> bytes | None:
    """The request's body, or None once a 4xx has been sent for a framing the gateway refuses (the connection is then
    closed, because what follows on it can no longer be told apart from this body)."""
    lengths = request.headers.get_all("Content-Length") or []
    refusal: tuple[int, str] | None = None
    if request.headers.get("Transfer-Encoding"):
        refusal = (411, "chunked or otherwise transfer-encoded bodies are not accepted; send a Content-Length")
    elif len({value.strip() for value in lengths}) > 1:
        refusal = (400, "conflicting Content-Length headers")
    elif lengths and not _CONTENT_LENGTH.fullmatch(lengths[0].strip()):
        refusal = (400, "Content-Length must be a non-negative decimal integer")
    elif lengths and (len(lengths[0].strip()) > len(str(MAX_BODY)) or int(lengths[0]) > MAX_BODY):
        refusal = (413, f"request body over {MAX_BODY} bytes")
    if refusal is None:
        length = int(lengths[0]) if lengths else 0
        body = _read_exactly(request, length)
        if len(body) == length:
            return body
        refusal = (400, f"request body shorter than its Content-Length ({len(body)} of {length} bytes arrived "
                        "before the client stopped or timed out)")
    request.close_connection = True
    _reply(request, refusal[0], {"error": refusal[1]}, {"Connection": "close"})
    return None


def _read_exactly(request: BaseHTTPRequestHandler, length: int) -> bytes:
    """Up to `length` bytes: fewer when the client closes, stalls past the socket timeout or the read deadline."""
    chunks: list[bytes] = []
    remaining = length
    while remaining:
        try:
            chunk = request.rfile.read1(min(remaining, 1 << 16))
        except (TimeoutError, OSError):
            break
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _stop_reading(connection: socket.socket) -> None:
    with contextlib.suppress(OSError):
        connection.shutdown(socket.SHUT_RD)


@dataclass(frozen=True, slots=True)
class _Failure:
    error: str
    trace: str

    def to_dict(self) -> dict[str, Any]:
        return {"errorMessage": self.error, "errorType": "Unhandled", "stackTrace": self.trace.splitlines()}


def _call(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - a crashing handler becomes the Lambda error shape, never a dead server
        logger.exception("handler failed")
        return _Failure(f"{type(exc).__name__}: {exc}", traceback.format_exc())


def _reply_function_url(request: BaseHTTPRequestHandler, result: Any) -> None:
    if not isinstance(result, dict) or "statusCode" not in result:
        # Function URLs treat any other return value as a 200 JSON body.
        _reply(request, 200, result)
        return
    raw = result.get("body") or ""
    body = base64.b64decode(raw) if result.get("isBase64Encoded") else str(raw).encode()
    headers = {str(k): str(v) for k, v in (result.get("headers") or {}).items()}
    _send(request, int(result["statusCode"]), body, headers)


def _reply(request: BaseHTTPRequestHandler, status: int, document: Any, headers: dict[str, str] | None = None) -> None:
    body = b"" if document is None else json.dumps(document).encode()
    _send(request, status, body, {"Content-Type": "application/json", **(headers or {})})


def _send(request: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict[str, str]) -> None:
    request.send_response(status)
    for name, value in headers.items():
        if name.lower() != "content-length":
            request.send_header(name, value)
    request.send_header("Content-Length", str(len(body)))
    request.end_headers()
    if request.command != "HEAD":
        request.wfile.write(body)


def main(argv: list[str] | None = None) -> int:
    """`python -m freezeframe_local.gateway`: run the endpoint in the foreground (started detached by `up`)."""
    parser = argparse.ArgumentParser(description="freezeframe local Function URL + Lambda Invoke endpoint")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", help="write the bound port here once listening")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    config = settings()
    gateway = LocalGateway(config, args.host, args.port)
    sources: list[KafkaEventSource] = []
    if config.kafka_bootstrap:
        # The local stand-ins for the template's Kafka event source mappings of the two indexers.
        from freezeframe.adapters.kafka_auth import client_options

        kafka_options = client_options(config)  # TLS / SASL as the settings say, like the agent's clients
        sources = [
            KafkaEventSource(config.kafka_bootstrap, config.segments_topic, "freezeframe-segment-indexer",
                             load_handler(config, "segment_indexer"), "freezeframe-segment-indexer",
                             client_options=kafka_options).start(),
            KafkaEventSource(config.kafka_bootstrap, K8S_TOPIC, "freezeframe-k8s-indexer",
                             load_handler(config, "k8s_indexer"), "freezeframe-k8s-indexer",
                             client_options=kafka_options).start(),
        ]
    gateway.sources = sources
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(gateway.url)
        os.replace(tmp, args.port_file)
    logger.info("gateway listening on %s", gateway.url)
    try:
        gateway.serve_forever()
    except KeyboardInterrupt:
        return 0
    except FreezeframeError:
        logger.exception("gateway stopped")
        return 1
    finally:
        for source in sources:
            source.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
