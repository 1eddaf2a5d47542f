"""The agent's segment bus. Kafka through a producer tuned for outages; the core's file bus otherwise.

The core `KafkaBus` gives up waiting on a send after 30 s, while its producer keeps the record and delivers it once
the broker is back: a caller that then re-sends gets the record twice. This bus waits on the *same* send again when
the same record is published again after a timeout, and sends anew only after the producer itself gave up, so a
Kafka outage of any length adds no duplicate records (a crash between the broker's ack and the spool update can
still re-send one: delivery stays at-least-once).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from typing import Any

from freezeframe.adapters.bus import BusRecord, KafkaBus, SegmentBus, open_bus
from freezeframe.adapters.kafka_auth import client_options
from freezeframe.contracts.config import Settings

DELIVERY_TIMEOUT_MS = 24 * 3600 * 1000  # the producer keeps retrying a record through a day-long outage


class DurableKafkaBus(KafkaBus):
    def __init__(self, bootstrap: str, wait_s: float = 10.0, producer: Any = None,
                 security: Mapping[str, Any] | None = None) -> None:
        from kafka import KafkaProducer  # raises NoBrokersAvailable while the broker is down: build it lazily

        self._bootstrap = bootstrap
        self._client_options = dict(security or {})  # TLS / SASL (kafka_auth.client_options); never logged
        self._wait_s = wait_s
        self._producer = producer or KafkaProducer(
            bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5,
            delivery_timeout_ms=DELIVERY_TIMEOUT_MS,
            max_block_ms=int(wait_s * 1000),  # send() waits this long for metadata while the broker is away
            reconnect_backoff_max_ms=2000,  # notice a returning broker within seconds
            **self._client_options)
        self._in_flight: dict[tuple[str, str, bytes], Any] = {}

    def publish(self, topic: str, key: str, value: Mapping[str, Any]) -> None:
        body = json.dumps(dict(value), sort_keys=True).encode()
        ident = (topic, key, body)
        future = self._in_flight.get(ident)
        if future is not None and future.succeeded():
            # Acknowledged after an earlier publish stopped waiting for it (the broker came back in between):
            # it is on the topic, and sending it again would publish it twice.
            self._in_flight.pop(ident, None)
            return
        if future is None or future.is_done:  # never sent, or the producer gave up on it
            future = self._producer.send(topic, key=key.encode(), value=body)
            self._in_flight[ident] = future
        try:
            future.get(timeout=self._wait_s)
        except Exception:
            if future.is_done:  # the producer gave up on it: the next publish sends anew
                self._in_flight.pop(ident, None)
            raise
        self._in_flight.pop(ident, None)

    def close(self) -> None:
        self._producer.close(timeout=5)  # unacknowledged records stay in the spool and go out after a restart


def open_agent_bus(config: Settings) -> SegmentBus:
    if config.kafka_bootstrap:
        return DurableKafkaBus(config.kafka_bootstrap, security=client_options(config))
    return open_bus(config)


class LazyBus:
    """A bus built on first use and rebuilt after a failed build: a broker that is down when the agent starts is an
    outage its caller retries (the watcher backs off and re-lists), not a crash at start-up."""

    def __init__(self, factory: Callable[[], SegmentBus]) -> None:
        self._factory = factory
        self._bus: SegmentBus | None = None
        self._lock = threading.Lock()

    def _get(self) -> SegmentBus:
        with self._lock:
            if self._bus is None:
                self._bus = self._factory()
            return self._bus

    def publish(self, topic: str, key: str, value: Mapping[str, Any]) -> None:
        self._get().publish(topic, key, value)

    def read(self, topic: str, timeout_s: float = 5.0) -> list[BusRecord]:
        return self._get().read(topic, timeout_s)

    def close(self) -> None:
        with self._lock:
            if self._bus is not None:
                self._bus.close()
