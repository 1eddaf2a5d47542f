"""Freeze function (invoked asynchronously by the webhook): lock the window's segments, write the manifest,
then fan dissection out per node."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from freezeframe.adapters import s3 as s3io
from freezeframe.adapters.invoke import start_dissection
from freezeframe.config import settings
from freezeframe.freeze import freeze
from freezeframe.models import FreezeRequest

logger = Logger()
tracer = Tracer()
metrics = Metrics()


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    config = settings()
    request = FreezeRequest.from_dict(event["request"])
    logger.append_keys(incident_id=request.incident_id)
    result = freeze(config, s3io.client(config), request)
    metrics.add_metric(name="SegmentsLocked", unit=MetricUnit.Count, value=result.segments)
    start_dissection(config, result.incident_id, result.nodes)
    return {"incident_id": result.incident_id, "manifest": result.manifest_key, "segments": result.segments,
            "nodes": list(result.nodes), "created": result.created}
