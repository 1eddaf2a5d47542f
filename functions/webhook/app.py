"""Webhook function (Function URL, payload format 2.0): alert intake.

Routes: POST /v1/alerts/alertmanager. Authenticates in code, answers 202 and hands the freeze off asynchronously.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import LambdaFunctionUrlResolver, Response, content_types
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from freezeframe import intake
from freezeframe.adapters import s3 as s3io
from freezeframe.adapters.invoke import invoke_async
from freezeframe.adapters.secrets import alertmanager_token
from freezeframe.config import settings
from freezeframe.errors import ConfigError, PayloadError, SignatureError, WindowError
from freezeframe.models import FreezeRequest

logger = Logger()
tracer = Tracer()
metrics = Metrics()
app = LambdaFunctionUrlResolver()


@app.post("/v1/alerts/alertmanager")
@tracer.capture_method
def alertmanager() -> Response:
    config = settings()

    def start_freeze(request: FreezeRequest) -> None:
        invoke_async(config, config.freeze_function, {"request": request.to_dict()})

    result = intake.accept_alertmanager(config, s3io.client(config), app.current_event.headers, _raw_body(),
                                        alertmanager_token(config), datetime.now(UTC), start_freeze)
    metrics.add_metric(name="IncidentsAccepted", unit=MetricUnit.Count, value=len(result.accepted))
    return _json(202, result.to_dict())


@app.exception_handler(intake.BodyTooLargeError)
def too_large(error: intake.BodyTooLargeError) -> Response:
    return _json(413, {"error": str(error)})


@app.exception_handler(SignatureError)
def unauthorized(error: SignatureError) -> Response:
    logger.warning("webhook rejected: authentication failed", path=app.current_event.path)
    return _json(401, {"error": "unauthorized"})


@app.exception_handler([PayloadError, WindowError])
def bad_request(error: Exception) -> Response:
    logger.warning("webhook rejected: bad payload", path=app.current_event.path, reason=str(error))
    return _json(400, {"error": str(error)})


@app.exception_handler(ConfigError)
def misconfigured(error: ConfigError) -> Response:
    logger.error("webhook misconfigured", reason=str(error))
    return _json(500, {"error": "freezeframe is misconfigured; see the function logs"})


@app.not_found
def not_found(_: Exception) -> Response:
    return _json(404, {"error": f"no route {app.current_event.http_method} {app.current_event.path}"})


def _raw_body() -> bytes:
    """The body exactly as sent (signatures are computed over these bytes)."""
    event = app.current_event
    if not event.body:
        return b""
    return base64.b64decode(event.body) if event.is_base64_encoded else event.body.encode()


def _json(status: int, body: dict[str, Any]) -> Response:
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=body)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
