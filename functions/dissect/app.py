"""Dissect function: the dissection state machine's plan, chunk and merge steps (freezeframe.dissect.fanout).

``{"action": "plan", "incident_id", "nodes"}`` writes the chunk items for the Distributed Map; ``{"action": "chunk",
...item}`` dissects one (node, time chunk); ``{"action": "merge-connections", "incident_id", "node"}`` merges a node's
connections at its chunks' edges and returns its groups of chunks; ``{"action": "merge-apps", "incident_id", "node",
"group"}`` merges one group's dns/http/tls rows; ``{"action": "merge", "incident_id", "node"}`` writes the node's part
and status (running the steps before it when their results are missing); ``{"action": "plan-fold", "incident_id",
"nodes"}``, ``{"action": "route", "item"}`` and ``{"action": "fold", "incident_id", "bucket", "phase"}`` fold the views
in hash buckets (freezeframe.dissect.foldshard); ``{"action": "plan-compact", "incident_id"}`` and ``{"action":
"compact", "incident_id", "item"}`` join their files to about 128 MB.
Without an action (``{"incident_id", "node"}``) it dissects a whole node in one pass, as before the fan-out.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from freezeframe.adapters import s3 as s3io
from freezeframe.adapters.catalog import register_parts
from freezeframe.contracts.config import settings
from freezeframe.contracts.errors import PayloadError
from freezeframe.contracts.logsetup import function_logger
from freezeframe.dissect.fanout import (
    dissect_chunk,
    merge_apps_step,
    merge_connections_step,
    merge_node,
    plan_dissection,
)
from freezeframe.dissect.foldshard import compact_step, fold_step, plan_compact, plan_fold, route_step
from freezeframe.dissect.job import dissect_node

logger = function_logger()
tracer = Tracer()
metrics = Metrics()


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    config = settings()
    action = event.get("action")
    logger.append_keys(incident_id=event.get("incident_id"), node=event.get("node"), action=action,
                       chunk=event.get("chunk"))
    s3 = s3io.client(config)
    if action == "plan":
        plan = plan_dissection(config, s3, event["incident_id"], event.get("nodes") or None)
        metrics.add_metric(name="DissectChunksPlanned", unit=MetricUnit.Count, value=plan["chunks"])
        return plan
    if action == "chunk":
        return dissect_chunk(config, s3, event.get("item") or event)
    if action == "merge-connections":
        return merge_connections_step(config, s3, event["incident_id"], event["node"])
    if action == "merge-apps":
        return merge_apps_step(config, s3, event["incident_id"], event["node"], int(event["group"]))
    if action == "merge":
        report = merge_node(config, s3, event["incident_id"], event["node"])
        metrics.add_metric(name="ConnectionsRows", unit=MetricUnit.Count, value=report.tables.get("connections", 0))
        return {"node": report.node, "state": report.state, "holes": report.stats.get("holes", 0)}
    if action == "plan-fold":
        return plan_fold(config, s3, event["incident_id"], event.get("nodes") or [])
    if action == "route":
        item = event.get("item") or event
        return route_step(config, s3, item["incident_id"], item)
    if action == "fold":
        return fold_step(config, s3, event["incident_id"], int(event["bucket"]), int(event.get("phase", 1)))
    if action == "plan-compact":
        return plan_compact(config, s3, event["incident_id"])
    if action == "compact":
        return compact_step(config, s3, event["incident_id"], event["item"])
    if action is not None:
        raise PayloadError(f"unknown dissect action {action!r}: plan, chunk, merge-connections, merge-apps, merge, "
                           f"plan-fold, route, fold, plan-compact or compact")
    report = dissect_node(config, s3, event["incident_id"], event["node"])
    register_parts(config, report.parts.values())
    metrics.add_metric(name="ConnectionsRows", unit=MetricUnit.Count, value=report.tables.get("connections", 0))
    return report.to_dict()
