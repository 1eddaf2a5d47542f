"""K8s indexer (Kafka event source on freezeframe.k8s): keeps the Kubernetes context beside the evidence.

Each batch's pod and event records are written, per node and hour, as JSON lines in the evidence bucket, where a
freeze finds, locks and lists them. The object names come from the Kafka offsets, so a retried batch rewrites the
same objects instead of adding copies.
"""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools import Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes import KafkaEvent, event_source
from aws_lambda_powertools.utilities.typing import LambdaContext

from freezeframe.adapters import s3 as s3io
from freezeframe.contracts.config import settings
from freezeframe.contracts.logsetup import function_logger
from freezeframe.freeze import k8s_context

logger = function_logger()
tracer = Tracer()
metrics = Metrics()
REQUIRED = ("schema", "cluster", "node", "observed_ns")


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
@event_source(data_class=KafkaEvent)
def lambda_handler(event: KafkaEvent, context: LambdaContext) -> dict[str, Any]:
    records, malformed = [], 0
    for record in event.records:
        try:
            value = json.loads(record.decoded_value)
        except ValueError:
            value = None
        if not isinstance(value, dict) or any(value.get(name) is None for name in REQUIRED) or value["schema"] not in (
                k8s_context.SCHEMAS):
            # Retrying a malformed record cannot fix it; it is logged with its offset and counted.
            logger.error("malformed k8s record", topic=record.topic, partition=record.partition, offset=record.offset)
            malformed += 1
            continue
        records.append(k8s_context.K8sRecord(record.partition, record.offset, value))
    config = settings()
    keys = k8s_context.write_batch(config, s3io.client(config), records)
    metrics.add_metric(name="K8sRecords", unit=MetricUnit.Count, value=len(records))
    metrics.add_metric(name="MalformedK8sRecords", unit=MetricUnit.Count, value=malformed)
    return {"records": len(records), "malformed": malformed, "objects": keys}
