"""The segment bus: real Kafka when a bootstrap server is configured, an embedded file-backed log otherwise.

Both keep the Kafka semantics the rest of the code relies on: keyed records, an offset per record, readers that
start from the earliest offset.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from freezeframe.contracts.config import Settings
from freezeframe.contracts.errors import ConfigError

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BusRecord:
    topic: str
    partition: int
    offset: int
    key: str | None
    value: dict[str, Any]
    timestamp_ms: int


class SegmentBus(Protocol):
    def publish(self, topic: str, key: str, value: Mapping[str, Any]) -> None: ...
    def read(self, topic: str, timeout_s: float = 5.0) -> list[BusRecord]: ...
    def close(self) -> None: ...


class KafkaBus:
    """kafka-python producer with acks=all (idempotent by default); publish blocks until the broker has it."""

    def __init__(self, bootstrap: str, client_options: Mapping[str, Any] | None = None) -> None:
        from kafka import KafkaProducer  # imported here: Lambda functions never load the Kafka client

        self._bootstrap = bootstrap
        self._client_options = dict(client_options or {})  # TLS / SASL (kafka_auth.client_options); never logged
        self._producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, **self._client_options)

    def publish(self, topic: str, key: str, value: Mapping[str, Any]) -> None:
        body = json.dumps(dict(value), sort_keys=True).encode()
        self._producer.send(topic, key=key.encode(), value=body).get(timeout=30)

    def read(self, topic: str, timeout_s: float = 5.0) -> list[BusRecord]:
        from kafka import KafkaConsumer

        consumer = KafkaConsumer(topic, bootstrap_servers=self._bootstrap, auto_offset_reset="earliest",
                                 enable_auto_commit=False, group_id=None, consumer_timeout_ms=int(timeout_s * 1000),
                                 **self._client_options)
        try:
            return [BusRecord(m.topic, m.partition, m.offset, m.key.decode() if m.key else None,
                              json.loads(m.value), m.timestamp) for m in consumer]
        finally:
            consumer.close()

    def close(self) -> None:
        self._producer.flush(timeout=30)
        self._producer.close(timeout=30)


class FileBus:
    """An append-only JSON-lines log per topic under one directory; the offset is the line number.

    Appends take an exclusive flock and fsync, so concurrent writers never interleave and a crash never leaves
    half a record that a reader would accept (a torn last line is skipped).
    """

    def __init__(self, directory: Path) -> None:
        self._dir = directory
        self._dir.mkdir(parents=True, exist_ok=True)

    def _path(self, topic: str) -> Path:
        if "/" in topic or topic.startswith("."):
            raise ConfigError(f"invalid topic name {topic!r}")
        return self._dir / f"{topic}.jsonl"

    def publish(self, topic: str, key: str, value: Mapping[str, Any]) -> None:
        line = json.dumps({"key": key, "value": dict(value), "timestamp_ms": int(time.time() * 1000)},
                          sort_keys=True, separators=(",", ":"))
        with open(self._path(topic), "a", encoding="utf-8") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                handle.write(line + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def read(self, topic: str, timeout_s: float = 5.0) -> list[BusRecord]:
        path = self._path(topic)
        if not path.exists():
            return []
        records: list[BusRecord] = []
        with open(path, encoding="utf-8") as handle:
            for offset, line in enumerate(handle):
                if not line.endswith("\n"):
                    break  # a torn final append from a crash
                raw = json.loads(line)
                records.append(BusRecord(topic, 0, offset, raw["key"], raw["value"], raw["timestamp_ms"]))
        return records

    def close(self) -> None:
        return None


def open_bus(settings: Settings) -> SegmentBus:
    if settings.kafka_bootstrap:
        from freezeframe.adapters.kafka_auth import client_options

        return KafkaBus(settings.kafka_bootstrap, client_options(settings))
    if settings.bus_dir is None:
        raise ConfigError("no segment bus: set FREEZEFRAME_KAFKA_BOOTSTRAP (Kafka) or FREEZEFRAME_BUS_DIR (file bus)")
    return FileBus(settings.bus_dir)
