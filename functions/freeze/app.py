"""Freeze function (invoked asynchronously by the webhook): lock the window's segments, write the manifest,
then fan dissection out per node."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools import Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from freezeframe.adapters import s3 as s3io
from freezeframe.adapters.invoke import start_dissection
from freezeframe.contracts.config import settings
from freezeframe.contracts.deadline import deadline
from freezeframe.contracts.logsetup import function_logger
from freezeframe.contracts.models import FreezeRequest
from freezeframe.freeze.freeze import freeze
from freezeframe.freeze.lifecycle import record_failed_attempt

logger = function_logger()
tracer = Tracer()
metrics = Metrics()


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    config = settings()
    request = FreezeRequest.from_dict(event["request"])
    logger.append_keys(incident_id=request.incident_id)
    s3 = s3io.client(config)
    try:
        with deadline(context, "the freeze"):  # short of the timeout, which would leave no record of the failure
            result = freeze(config, s3, request)
    except Exception as exc:
        # Retried by the async invocation; the last attempt leaves the incident in its terminal "failed" state.
        record_failed_attempt(config, s3, request.incident_id, exc, datetime.now(UTC))
        raise
    metrics.add_metric(name="SegmentsLocked", unit=MetricUnit.Count, value=result.segments)
    start_dissection(config, result.incident_id, result.nodes, follow_hold=result.hold_open)
    return {"incident_id": result.incident_id, "manifest": result.manifest_key, "segments": result.segments,
            "nodes": list(result.nodes), "created": result.created}
