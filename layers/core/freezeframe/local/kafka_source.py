"""A local Kafka event source mapping: polls a topic and invokes a handler with the Lambda Kafka event shape.

Like Lambda's self-managed Kafka event source it invokes synchronously, commits the offsets of a batch that
succeeded, and on a partial batch response (`batchItemFailures`) seeks back to the first failed offset of each
partition and retries after a backoff.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from freezeframe.local.functions import LocalContext

logger = logging.getLogger(__name__)
Handler = Callable[[dict[str, Any], Any], Any]


def lambda_kafka_event(records: Iterable[Any], bootstrap: str) -> dict[str, Any]:
    """The event Lambda delivers for a batch of kafka-python ConsumerRecords (or objects with the same fields)."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        key = record.key.encode() if isinstance(record.key, str) else record.key
        value = record.value.encode() if isinstance(record.value, str) else record.value
        grouped.setdefault(f"{record.topic}-{record.partition}", []).append({
            "topic": record.topic, "partition": record.partition, "offset": record.offset,
            "timestamp": record.timestamp, "timestampType": "CREATE_TIME",
            "key": base64.b64encode(key).decode() if key is not None else None,
            "value": base64.b64encode(value).decode(),
            "headers": [{name: list(data)} for name, data in (getattr(record, "headers", None) or [])],
        })
    return {"eventSource": "SelfManagedKafka", "bootstrapServers": bootstrap, "records": grouped}


class KafkaEventSource:
    def __init__(self, bootstrap: str, topic: str, group_id: str, handler: Handler, function_name: str,
                 batch_size: int = 100, retry_backoff_s: float = 2.0, max_retries: int = 3,
                 client_options: Mapping[str, Any] | None = None) -> None:
        self.bootstrap, self.topic, self.group_id = bootstrap, topic, group_id
        self.handler, self.function_name = handler, function_name
        self.batch_size, self.retry_backoff_s = batch_size, retry_backoff_s
        self.max_retries = max_retries
        self._client_options = dict(client_options or {})  # security (kafka_auth.client_options); never logged
        self.batches = 0
        self.failures = 0
        self.dead_letters: list[dict[str, Any]] = []
        self._attempts: dict[tuple[str, int, int], int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"kafka-source-{topic}", daemon=True)

    def start(self) -> KafkaEventSource:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)

    def _run(self) -> None:
        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(self.topic, bootstrap_servers=self.bootstrap, group_id=self.group_id,
                                 enable_auto_commit=False, auto_offset_reset="earliest",
                                 max_poll_records=self.batch_size, **self._client_options)
        try:
            while not self._stop.is_set():
                polled = consumer.poll(timeout_ms=500)
                records = [r for batch in polled.values() for r in batch]
                if not records:
                    continue
                self.batches += 1
                try:
                    reply = self.handler(lambda_kafka_event(records, self.bootstrap), LocalContext(self.function_name))
                    failed = (reply or {}).get("batchItemFailures", []) if isinstance(reply, dict) else []
                except Exception:  # noqa: BLE001 - a failing invocation is retried as a whole, as Lambda does
                    logger.exception("kafka source invocation failed")
                    failed = [{"itemIdentifier": {"partition": f"{r.topic}-{r.partition}", "offset": r.offset}}
                              for r in records]
                if not failed:
                    consumer.commit()
                    continue
                self.failures += 1
                first: dict[TopicPartition, int] = {}
                for item in failed:
                    ident = item["itemIdentifier"]
                    topic, _, partition = str(ident["partition"]).rpartition("-")
                    tp = TopicPartition(topic, int(partition))
                    first[tp] = min(first.get(tp, int(ident["offset"])), int(ident["offset"]))
                for tp, offset in first.items():
                    attempts = self._attempts.get((tp.topic, tp.partition, offset), 0) + 1
                    self._attempts[(tp.topic, tp.partition, offset)] = attempts
                    if attempts <= self.max_retries:
                        consumer.seek(tp, offset)
                        continue
                    # Like an event source mapping's MaximumRetryAttempts: give up on this record, record it.
                    logger.error("kafka record dead-lettered", extra={"partition": f"{tp.topic}-{tp.partition}",
                                                                      "offset": offset})
                    self.dead_letters.append({"topic": tp.topic, "partition": tp.partition, "offset": offset})
                    consumer.seek(tp, offset + 1)
                time.sleep(self.retry_backoff_s)
        finally:
            consumer.close()
