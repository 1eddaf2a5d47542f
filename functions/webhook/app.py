"""Webhook function (Function URL, payload format 2.0): alert intake and the incident API.

Routes: POST /v1/alerts/alertmanager, POST /v1/alerts/pagerduty, POST /v1/freeze, GET /v1/incidents/<id>.
Authenticates in code, answers 202 and hands the freeze off asynchronously. Every 4xx is decided before anything
is written.
"""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools import Metrics, Tracer
from aws_lambda_powertools.event_handler import LambdaFunctionUrlResolver, Response, content_types
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from freezeframe.adapters import s3 as s3io
from freezeframe.adapters.invoke import invoke_async
from freezeframe.adapters.secrets import alertmanager_token, api_token, pagerduty_secrets
from freezeframe.contracts.config import Settings, settings
from freezeframe.contracts.errors import ConfigError, NotFoundError, PayloadError, SignatureError, WindowError
from freezeframe.contracts.logsetup import function_logger
from freezeframe.intake import accept as intake
from freezeframe.intake.rules import load_rules

logger = function_logger()
tracer = Tracer()
metrics = Metrics()
app = LambdaFunctionUrlResolver()
# Methods each known path answers, so a wrong method is a 405 and not a 404.
ROUTES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^/v1/alerts/alertmanager$"), "POST"),
    (re.compile(r"^/v1/alerts/pagerduty$"), "POST"),
    (re.compile(r"^/v1/freeze$"), "POST"),
    (re.compile(r"^/v1/incidents/[^/]+$"), "GET"),
)


def _start_freeze(config: Settings) -> intake.StartFreeze:
    return lambda request: invoke_async(config, config.freeze_function, {"request": request.to_dict()})


@app.post("/v1/alerts/alertmanager")
@tracer.capture_method
def alertmanager() -> Response:
    config = settings()
    result = intake.accept_alertmanager(config, s3io.client(config), app.current_event.headers, _raw_body(),
                                        alertmanager_token(config), datetime.now(UTC), _start_freeze(config),
                                        load_rules(config))
    metrics.add_metric(name="IncidentsAccepted", unit=MetricUnit.Count, value=len(result.accepted))
    return _json(202, result.to_dict())


@app.post("/v1/alerts/pagerduty")
@tracer.capture_method
def pagerduty() -> Response:
    config = settings()
    result = intake.accept_pagerduty(config, s3io.client(config), app.current_event.headers, _raw_body(),
                                     pagerduty_secrets(config), datetime.now(UTC), _start_freeze(config),
                                     load_rules(config))
    metrics.add_metric(name="IncidentsAccepted", unit=MetricUnit.Count, value=len(result.accepted))
    return _json(202, result.to_dict())


@app.post("/v1/freeze")
@tracer.capture_method
def manual_freeze() -> Response:
    config = settings()
    caller = intake.iam_caller(app.current_event.raw_event.get("requestContext") or {})
    result = intake.accept_manual(config, s3io.client(config), app.current_event.headers, _raw_body(),
                                  lambda: _api_token(config), datetime.now(UTC), _start_freeze(config), caller)
    metrics.add_metric(name="IncidentsAccepted", unit=MetricUnit.Count, value=len(result.accepted))
    return _json(202, result.to_dict())


@app.get("/v1/incidents/<incident_id>")
@tracer.capture_method
def incident(incident_id: str) -> Response:
    config = settings()
    intake.check_bearer(app.current_event.headers, _api_token(config))
    return _json(200, intake.incident_status(config, s3io.client(config), incident_id))


@app.exception_handler(intake.BodyTooLargeError)
def too_large(error: intake.BodyTooLargeError) -> Response:
    return _json(413, {"error": str(error)})


@app.exception_handler(SignatureError)
def unauthorized(error: SignatureError) -> Response:
    logger.warning("request rejected: authentication failed", path=app.current_event.path)
    return _json(401, {"error": "unauthorized"})


@app.exception_handler([PayloadError, WindowError])
def bad_request(error: Exception) -> Response:
    logger.warning("request rejected: bad payload", path=app.current_event.path, reason=str(error))
    return _json(400, {"error": str(error)})


@app.exception_handler(NotFoundError)
def missing(error: NotFoundError) -> Response:
    return _json(404, {"error": str(error)})


@app.exception_handler(ConfigError)
def misconfigured(error: ConfigError) -> Response:
    logger.error("webhook misconfigured", reason=str(error))
    return _json(500, {"error": "freezeframe is misconfigured; see the function logs"})


@app.not_found
def not_found(_: Exception) -> Response:
    path, method = app.current_event.path, app.current_event.http_method
    allowed = sorted({m for pattern, m in ROUTES if pattern.match(path)})
    if allowed:
        return Response(status_code=405, content_type=content_types.APPLICATION_JSON,
                        body={"error": f"{method} not allowed on {path}"}, headers={"Allow": ", ".join(allowed)})
    return _json(404, {"error": f"no route {method} {path}"})


def _api_token(config: Settings) -> str:
    """The API token, or "" in a deployment that configures none (IAM only), where every bearer token gets 401."""
    if not (config.api_token_env or config.api_token_file or config.api_token_secret_arn):
        return ""
    return api_token(config)


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


