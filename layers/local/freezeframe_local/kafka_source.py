"""A local Kafka event source mapping: polls a topic and invokes a handler with the Lambda Kafka event shape.

Like Lambda's self-managed Kafka event source it invokes synchronously, commits the offsets of a batch that
succeeded, and on a partial batch response (`batchItemFailures`) seeks back to the first failed offset of each
partition and retries after a backoff.
"""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from kafka.errors import IllegalStateError

from freezeframe_local.functions import LocalContext

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
    """Polls `topic` in a daemon thread and invokes `handler` per batch, like a Lambda event source mapping.

    A broker outage never stops it: a failed poll, commit or (re)connection is logged and retried with exponential
    backoff (`retry_backoff_s` doubling up to `max_backoff_s`); a commit that failed is covered by the next one
    (Kafka offsets are cumulative) or, after a rebalance, by redelivery, which the idempotent handlers absorb. Only
    `stop()` ends the thread; `alive` says whether it still runs, which the gateway's health check reports.
    """

    def __init__(self, bootstrap: str, topic: str, group_id: str, handler: Handler, function_name: str,
                 batch_size: int = 100, retry_backoff_s: float = 2.0, max_retries: int = 3,
                 client_options: Mapping[str, Any] | None = None, max_backoff_s: float = 30.0,
                 consumer_factory: Callable[[], Any] | None = None, commit_timeout_ms: int = 10_000) -> None:
        self.bootstrap, self.topic, self.group_id = bootstrap, topic, group_id
        self.handler, self.function_name = handler, function_name
        self.batch_size, self.retry_backoff_s = batch_size, retry_backoff_s
        self.max_retries = max_retries
        self._client_options = dict(client_options or {})  # security (kafka_auth.client_options); never logged
        self.max_backoff_s = max_backoff_s
        self.commit_timeout_ms = commit_timeout_ms  # a commit during an outage fails after this and is retried
        self.batches = 0
        self.failures = 0
        self.commits = 0
        self.broker_errors = 0  # failed polls, commits and connections (each retried)
        self.last_error: str | None = None
        self.dead_letters: list[dict[str, Any]] = []
        self._attempts: dict[tuple[str, int, int], int] = {}
        self._stop = threading.Event()
        self._consumer_factory = consumer_factory or self._new_consumer
        self._thread = threading.Thread(target=self._run, name=f"kafka-source-{topic}", daemon=True)

    def start(self) -> KafkaEventSource:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)

    @property
    def alive(self) -> bool:
        """True while the polling thread runs (it ends only on stop(), or on a bug, which the health shows)."""
        return self._thread.is_alive()

    def health(self) -> dict[str, Any]:
        return {"topic": self.topic, "group_id": self.group_id, "alive": self.alive, "batches": self.batches,
                "commits": self.commits, "broker_errors": self.broker_errors, "last_error": self.last_error,
                "dead_letters": len(self.dead_letters)}

    def _new_consumer(self) -> Any:
        from kafka import KafkaConsumer

        return KafkaConsumer(self.topic, bootstrap_servers=self.bootstrap, group_id=self.group_id,
                             enable_auto_commit=False, auto_offset_reset="earliest",
                             max_poll_records=self.batch_size, **self._client_options)

    def _broker_error(self, what: str, exc: BaseException, backoff: float) -> float:
        """Log a failed broker operation, wait, and return the next backoff."""
        self.broker_errors += 1
        self.last_error = f"{what}: {type(exc).__name__}: {exc}"
        logger.warning("kafka source %s failed; retrying", what, extra={"topic": self.topic,
                                                                        "error": type(exc).__name__,
                                                                        "backoff_s": backoff})
        self._stop.wait(backoff)
        return min(self.max_backoff_s, backoff * 2)

    def _run(self) -> None:
        backoff = self.retry_backoff_s
        consumer: Any = None
        while not self._stop.is_set():
            try:
                if consumer is None:
                    consumer = self._consumer_factory()
                polled = consumer.poll(timeout_ms=500)
            except Exception as exc:  # noqa: BLE001 - a broker outage: retried, never the end of the source
                backoff = self._broker_error("poll" if consumer is not None else "connect", exc, backoff)
                consumer = self._reset(consumer, exc)
                continue
            records = [r for batch in polled.values() for r in batch]
            if not records:
                continue
            self.batches += 1
            failed = self._invoke(records)
            if not failed:
                try:
                    consumer.commit(timeout_ms=self.commit_timeout_ms)
                    self.commits += 1
                    backoff = self.retry_backoff_s
                except Exception as exc:  # noqa: BLE001 - the next commit covers this batch's offsets
                    backoff = self._broker_error("commit", exc, backoff)
                continue
            self.failures += 1
            try:
                self._seek_back(consumer, failed)
            except Exception as exc:  # noqa: BLE001 - a lost assignment: the uncommitted records come back anyway
                backoff = self._broker_error("seek", exc, backoff)
                consumer = self._reset(consumer, IllegalStateError(str(exc)))
                continue
            self._stop.wait(self.retry_backoff_s)
        if consumer is not None:
            try:
                consumer.close()
            except Exception:  # noqa: BLE001 - closing during an outage must not raise out of stop()
                logger.warning("kafka consumer did not close cleanly", extra={"topic": self.topic})

    def _reset(self, consumer: Any, exc: BaseException) -> Any:
        """After a failed poll the consumer is kept (kafka-python reconnects by itself) unless it is closed."""
        if consumer is None:
            return None
        if isinstance(exc, IllegalStateError | AssertionError):
            try:
                consumer.close()
            except Exception:  # noqa: BLE001 - a broken consumer is replaced either way
                logger.warning("kafka consumer did not close cleanly", extra={"topic": self.topic})
            return None
        return consumer

    def _invoke(self, records: list[Any]) -> list[dict[str, Any]]:
        try:
            reply = self.handler(lambda_kafka_event(records, self.bootstrap), LocalContext(self.function_name))
            return list((reply or {}).get("batchItemFailures", [])) if isinstance(reply, dict) else []
        except Exception:  # noqa: BLE001 - a failing invocation is retried as a whole, as Lambda does
            logger.exception("kafka source invocation failed")
            return [{"itemIdentifier": {"partition": f"{r.topic}-{r.partition}", "offset": r.offset}}
                    for r in records]

    def _seek_back(self, consumer: Any, failed: list[dict[str, Any]]) -> None:
        from kafka import TopicPartition

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
