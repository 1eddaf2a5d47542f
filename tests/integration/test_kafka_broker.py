"""A real Kafka 4.1 broker (KRaft, from Maven Central jars) started, used and stopped by freezeframe_local.kafka."""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from freezeframe_local.kafka import (
    KAFKA_VERSION,
    KafkaBroker,
    create_topics,
    ensure_kafka_jars,
    health_check,
    start_kafka,
    stop_kafka,
)
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

pytestmark = pytest.mark.integration

RECORD_COUNT = 200
PARTITIONS = 3


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    started = start_kafka(tmp_path_factory.mktemp("kafka"))
    try:
        yield started
    finally:
        # test_stop_kafka_ends_process_and_port stops it first; a second stop must be a no-op.
        stop_kafka(started.pid)


def _port_open(bootstrap: str) -> bool:
    host, port = bootstrap.rsplit(":", 1)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((host, int(port))) == 0


def _produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> dict[bytes, tuple[int, int]]:
    """Produce keyed records; return each key's (partition, offset) as acknowledged by the broker."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        futures = {key: producer.send(topic, key=key, value=value) for key, value in records}
        producer.flush(timeout=30)
        acknowledged = {key: future.get(timeout=30) for key, future in futures.items()}
    finally:
        producer.close(timeout=10)
    return {key: (metadata.partition, metadata.offset) for key, metadata in acknowledged.items()}


def _consume_all(
    bootstrap: str, topic: str, expected: int, timeout: float = 30.0
) -> list[tuple[bytes, bytes, int, int]]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        seen: list[tuple[bytes, bytes, int, int]] = []
        deadline = time.monotonic() + timeout
        while len(seen) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                seen.extend((record.key, record.value, record.partition, record.offset) for record in batch)
    finally:
        consumer.close(autocommit=False)
    return seen


def test_jars_are_cached_outside_the_repo() -> None:
    libs = ensure_kafka_jars()
    repo_root = Path(__file__).resolve().parents[2]
    assert not libs.resolve().is_relative_to(repo_root)
    names = {jar.name for jar in libs.glob("*.jar")}
    assert f"kafka_2.13-{KAFKA_VERSION}.jar" in names
    assert any(name.startswith("log4j-slf4j-impl-") for name in names)


def test_broker_is_detached_and_logs_via_log4j(broker: KafkaBroker) -> None:
    # Its own session: the broker survives the process (a CLI) that started it.
    assert os.getsid(broker.pid) == broker.pid
    assert broker.bootstrap.startswith("127.0.0.1:")
    log_text = broker.log_path.read_text(encoding="utf-8")
    assert "Kafka Server started" in log_text  # a log4j line, so the generated log4j2 config took effect


def test_health_check_round_trip(broker: KafkaBroker) -> None:
    elapsed = health_check(broker.bootstrap)
    assert 0 < elapsed < 30


def test_keyed_records_round_trip(broker: KafkaBroker) -> None:
    topic = f"test.keyed.{uuid.uuid4().hex[:8]}"
    create_topics(broker.bootstrap, [topic], partitions=PARTITIONS)
    create_topics(broker.bootstrap, [topic], partitions=PARTITIONS)  # idempotent: an existing topic is fine
    records = [(f"key-{i:04d}".encode(), f"value-{i:04d}-{'x' * (i % 17)}".encode()) for i in range(RECORD_COUNT)]

    acknowledged = _produce(broker.bootstrap, topic, records)
    consumed = _consume_all(broker.bootstrap, topic, RECORD_COUNT)

    assert len(consumed) == RECORD_COUNT
    assert sorted((key, value) for key, value, _, _ in consumed) == sorted(records)
    assert {key: (partition, offset) for key, _, partition, offset in consumed} == acknowledged
    assert {partition for partition, _ in acknowledged.values()} == set(range(PARTITIONS))


def test_restart_in_same_workdir_keeps_data(tmp_path: Path) -> None:
    topic = "test.restart"
    first = start_kafka(tmp_path)
    try:
        create_topics(first.bootstrap, [topic])
        acknowledged = _produce(first.bootstrap, topic, [(b"k", b"survives restart")])
    finally:
        stop_kafka(first.pid)
    second = start_kafka(tmp_path)
    try:
        assert second.bootstrap != first.bootstrap or second.pid != first.pid
        assert _consume_all(second.bootstrap, topic, 1) == [(b"k", b"survives restart", *acknowledged[b"k"])]
    finally:
        stop_kafka(second.pid)


def test_stop_kafka_ends_process_and_port(broker: KafkaBroker) -> None:
    # Runs last in this module (pytest keeps definition order): it stops the shared broker.
    assert _port_open(broker.bootstrap)
    stop_kafka(broker.pid)
    with pytest.raises(ProcessLookupError):
        os.kill(broker.pid, 0)
    assert not _port_open(broker.bootstrap)
    stop_kafka(broker.pid)  # already gone: no error
