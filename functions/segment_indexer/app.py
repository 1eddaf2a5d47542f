"""Segment indexer (Kafka event source on freezeframe.segments): locks late segments into open holds.

Each record is one segment (or a gap record, which it logs); a segment overlapping an open hold is locked in place
and appended to that incident's manifest parts, and the batch's segment records are written to the segment index.
Failures are reported per record (partial batch response), so the event source retries only what failed.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools import Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.kafka_event import KafkaEventRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from freezeframe.adapters import s3 as s3io
from freezeframe.contracts.config import settings
from freezeframe.contracts.errors import PayloadError
from freezeframe.contracts.logsetup import function_logger
from freezeframe.contracts.models import GAP_SCHEMA, SEGMENT_SCHEMA, SegmentRecord
from freezeframe.freeze import segment_index
from freezeframe.freeze.holds import Hold, index_segment, open_holds

logger = function_logger()
tracer = Tracer()
metrics = Metrics()
processor = BatchProcessor(event_type=EventType.Kafka)
_batch: dict[str, Any] = {}


@tracer.capture_method
def handle_record(record: KafkaEventRecord) -> None:
    """Raises only for what a retry can fix (S3 unavailable); a malformed record is logged and counted, because
    retrying it would block the partition forever."""
    try:
        value = json.loads(record.decoded_value)
        if not isinstance(value, dict):
            raise PayloadError("not a JSON object")
        if value.get("schema") == GAP_SCHEMA:
            # Loss the agent could not avoid (a full spool): kept for the coverage of any freeze of that time.
            logger.warning("gap record", node=value.get("node"), first_seq=value.get("first_seq"),
                           last_seq=value.get("last_seq"), reason=value.get("reason"))
            _batch["gaps"].append(value)
            return
        if value.get("schema") != SEGMENT_SCHEMA:
            logger.info("not a segment record", schema=value.get("schema"), offset=record.offset)
            return
        segment = SegmentRecord.from_dict(value)
    except (ValueError, PayloadError) as exc:
        logger.error("malformed segment record", topic=record.topic, partition=record.partition,
                     offset=record.offset, reason=str(exc))
        metrics.add_metric(name="MalformedSegmentRecords", unit=MetricUnit.Count, value=1)
        return
    _batch["segments"].append(segment)
    locked = index_segment(settings(), _batch["s3"], segment, _batch["holds"])
    if locked:
        metrics.add_metric(name="LateSegmentsLocked", unit=MetricUnit.Count, value=len(locked))


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    config = settings()
    s3 = s3io.client(config)
    holds: list[Hold] = open_holds(config, s3, datetime.now(UTC))  # once per batch, not per record
    _batch.update(s3=s3, holds=holds, segments=[], gaps=[])
    reply = process_partial_response(event=event, record_handler=handle_record, processor=processor, context=context)
    # The batch's records, indexed for the next freeze (one object per node and hour instead of a HEAD per segment).
    segment_index.write_batch(config, s3, _batch["segments"])
    segment_index.write_gaps(config, s3, _batch["gaps"])
    return dict(reply)
