"""Sample events (events/<function>/<case>.json) and Function URL event construction, shared by the local
gateway, the demo and the tests."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from freezeframe.contracts.config import Settings
from freezeframe.contracts.errors import NotFoundError
from freezeframe_local.functions import functions_dir


def events_dir(settings: Settings) -> Path:
    return functions_dir(settings).parent / "events"


def load_event(settings: Settings, function: str, case: str) -> dict[str, Any]:
    path = events_dir(settings) / function / f"{case}.json"
    if not path.is_file():
        raise NotFoundError(f"no sample event {path}")
    event = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(event, dict):
        raise NotFoundError(f"{path} is not a JSON object")
    return event


def function_url_event(method: str, path: str, headers: Mapping[str, str], body: bytes, query: str = "",
                       source_ip: str = "127.0.0.1") -> dict[str, Any]:
    """The payload format 2.0 event that a Lambda Function URL delivers for one HTTP request."""
    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        text_body: str | None = body.decode("utf-8") if body else None
        is_base64 = False
    except UnicodeDecodeError:
        text_body, is_base64 = base64.b64encode(body).decode(), True
    now = time.time()
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": lowered,
        "requestContext": {
            "accountId": "anonymous",
            "apiId": "freezeframe-local",
            "domainName": lowered.get("host", "localhost"),
            "domainPrefix": "freezeframe-local",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": source_ip,
                     "userAgent": lowered.get("user-agent", "")},
            "requestId": str(uuid.uuid4()),
            "routeKey": "$default",
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "timeEpoch": int(now * 1000),
        },
        "isBase64Encoded": is_base64,
    }
    if query:
        event["queryStringParameters"] = {k: v for k, _, v in (p.partition("=") for p in query.split("&"))}
    if text_body is not None:
        event["body"] = text_body
    return event
