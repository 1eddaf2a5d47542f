"""Dissect function (invoked per node by the freeze): frozen segments to Parquet tables in the evidence bucket."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from freezeframe.adapters import s3 as s3io
from freezeframe.adapters.catalog import register_parts
from freezeframe.config import settings
from freezeframe.dissect.job import dissect_node
from freezeframe.logsetup import function_logger

logger = function_logger()
tracer = Tracer()
metrics = Metrics()


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    config = settings()
    logger.append_keys(incident_id=event["incident_id"], node=event["node"])
    report = dissect_node(config, s3io.client(config), event["incident_id"], event["node"])
    register_parts(config, report.parts.values())
    metrics.add_metric(name="ConnectionsRows", unit=MetricUnit.Count, value=report.tables.get("connections", 0))
    return report.to_dict()
