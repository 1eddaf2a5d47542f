"""Segment indexer (Kafka event source on freezeframe.segments): validates the segment records of a batch.

This skeleton decodes and validates every record and reports malformed ones; locking late segments into open
holds arrives with the alert-intake issue.
"""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes import KafkaEvent, event_source
from aws_lambda_powertools.utilities.typing import LambdaContext

from freezeframe.errors import PayloadError
from freezeframe.models import SegmentRecord

logger = Logger()
tracer = Tracer()
metrics = Metrics()


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
@event_source(data_class=KafkaEvent)
def lambda_handler(event: KafkaEvent, context: LambdaContext) -> dict[str, Any]:
    valid, malformed = [], []
    for record in event.records:
        try:
            segment = SegmentRecord.from_dict(json.loads(record.decoded_value))
        except (ValueError, PayloadError) as exc:
            malformed.append({"topic": record.topic, "partition": record.partition, "offset": record.offset,
                              "reason": str(exc)})
            continue
        valid.append(segment)
        logger.debug("segment seen", node=segment.node, segment=segment.key, seq=segment.seq)
    metrics.add_metric(name="SegmentRecords", unit=MetricUnit.Count, value=len(valid))
    metrics.add_metric(name="MalformedSegmentRecords", unit=MetricUnit.Count, value=len(malformed))
    if malformed:
        logger.error("malformed segment records", count=len(malformed))
    return {"segments": len(valid), "malformed": malformed}
