"""Finalize function (the last step of the dissection state machine): Glue partitions, report, incident summary."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from freezeframe.adapters import s3 as s3io
from freezeframe.contracts.config import settings
from freezeframe.contracts.logsetup import function_logger
from freezeframe.dissect.finalize import COMPLETE, finalize_incident, parse_event

logger = function_logger()
tracer = Tracer()
metrics = Metrics()


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    config = settings()
    incident_id, outcomes = parse_event(event)
    logger.append_keys(incident_id=incident_id)
    summary = finalize_incident(config, s3io.client(config), incident_id, outcomes)
    metrics.add_metric(name="IncidentsIncomplete", unit=MetricUnit.Count, value=int(summary["state"] != COMPLETE))
    # Step Functions keeps at most 256 KB of state: the summary itself stays in S3.
    return {"incident_id": incident_id, "state": summary["state"], "summary_key": summary["summary_key"],
            "nodes": {n["node"]: n["state"] for n in summary["nodes"]}, "report_key": summary["report"].get("key"),
            # While the hold is open the state machine waits `wait_s` and dissects `nodes` again (follow.py).
            "follow": summary["follow"]}
