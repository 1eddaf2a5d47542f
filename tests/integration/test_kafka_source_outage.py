"""The local Kafka event source survives a broker outage (issue 13): a real broker of its own (KRaft, from the
Maven Central jars) is stopped while the source commits a batch, then started again on the same port and storage.
The source retries with backoff instead of dying, takes the records produced after the restart, and the gateway's
health says 503 once a source has stopped for good. Before the fix the commit's timeout ended the polling thread,
silently: no late segment was locked any more and the health still answered 200."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from freezeframe_local.gateway import LocalGateway
from freezeframe_local.kafka import create_topics, start_kafka, stop_kafka
from freezeframe_local.kafka_source import KafkaEventSource
from kafka import KafkaProducer

from freezeframe.contracts.config import Settings
from tests.fixtures.waiting import until

pytestmark = pytest.mark.integration


def _produce(bootstrap: str, topic: str, values: list[int]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for value in values:
        producer.send(topic, value=json.dumps({"n": value}).encode()).get(timeout=30)
    producer.close()


def _health(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"{url}/_freezeframe/health", timeout=5) as reply:  # noqa: S310 - loopback
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


# Longer than the source's default commit timeout (10 s): the commit of the first batch fails inside the outage.
OUTAGE_S = 14.0


def test_the_event_source_rides_out_a_broker_stopped_during_its_commit(tmp_path: Path) -> None:
    """Only the interface that existed before the fix drives the defect: the source is built with the arguments it
    always took, the outage is a stopped broker, and the assertions are what a user sees (records produced after the
    restart are delivered; a stopped source turns the health endpoint to 503). The old source's thread ended on the
    failed commit, so the records after the restart never arrived; its gateway answered 200 regardless."""
    broker = start_kafka(tmp_path / "kafka")
    port = int(broker.bootstrap.rsplit(":", 1)[1])
    topic = f"ff-outage-{uuid.uuid4().hex[:8]}"
    seen: list[int] = []
    stopped_once = threading.Event()

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        import base64

        for records in event["records"].values():
            seen.extend(json.loads(base64.b64decode(r["value"]))["n"] for r in records)
        if not stopped_once.is_set():
            # The batch succeeded; the broker goes away before the source commits it.
            stopped_once.set()
            stop_kafka(broker.pid)
        return {"batchItemFailures": []}

    gateway: LocalGateway | None = None
    source: KafkaEventSource | None = None
    restarted = None
    try:
        create_topics(broker.bootstrap, [topic])
        _produce(broker.bootstrap, topic, [1, 2, 3])
        source = KafkaEventSource(broker.bootstrap, topic, f"outage-{uuid.uuid4().hex[:6]}", handler, "indexer",
                                  retry_backoff_s=0.5).start()
        gateway = LocalGateway(Settings(state_dir=tmp_path / "state"))
        gateway.sources = [source]
        gateway.start()
        until(stopped_once.is_set, 60, "the first batch")
        time.sleep(OUTAGE_S)  # the broker stays down while the source commits (and fails to)

        restarted = start_kafka(tmp_path / "kafka", port=port)
        _produce(restarted.bootstrap, topic, [4, 5])
        until(lambda: {4, 5} <= set(seen), 120, "the records produced after the restart", poll_s=0.2)
        assert set(seen) == {1, 2, 3, 4, 5}  # at least once: 1-3 may come again
        status, body = _health(gateway.url)
        assert status == 200, body

        # A source that stops (here: stopped on purpose) makes the stack's health fail.
        until(lambda: source is not None and source.commits >= 1, 60, "a commit after the restart", poll_s=0.2)
        source.stop()
        status, body = _health(gateway.url)
        assert status == 503 and body["reasons"] == [f"kafka event source of {topic} stopped"]
        # What the source says of the outage it rode out (reported in the health body since the fix).
        assert body["sources"][0]["broker_errors"] >= 1 and body["sources"][0]["last_error"]
        assert body["sources"][0]["commits"] >= 1
    finally:
        if source is not None:
            source.stop()
        if gateway is not None:
            gateway.stop()
        stop_kafka((restarted or broker).pid)
        stop_kafka(broker.pid)
