"""Kafka security on a real broker: TLS, mutual TLS and SASL/SCRAM through every client freezeframe builds.

One broker per session (tests/fixtures/kafka_security.py: keytool keystores, SSL, MTLS and SASL_SSL listeners,
SCRAM users made with kafka-configs). The clients get their options only from Settings, through
freezeframe.adapters.kafka_auth: the core bus, the agent's durable bus, the local Kafka event source, the admin
client of `create_topics` and the `freezeframe topics` CLI.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from freezeframe_local.kafka import create_topics, health_check, stop_kafka
from freezeframe_local.kafka_source import KafkaEventSource
from kafka import KafkaAdminClient

from freezeframe.adapters.bus import open_bus
from freezeframe.adapters.kafka_auth import client_options
from freezeframe.contracts.config import JOBS_TOPIC, K8S_TOPIC, SEGMENTS_TOPIC, Settings
from freezeframe.contracts.errors import StackError
from freezeframe_agent.publisher import open_agent_bus
from tests.fixtures.kafka_security import SecureBroker, add_scram_user, start_secure_broker

pytestmark = pytest.mark.integration
REFUSAL_TIMEOUT_S = 4.0  # a refused handshake never succeeds: waiting longer proves nothing more
SCRAM_USER, SCRAM_PASSWORD = "freezeframe-agent", "scram-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    broker = start_secure_broker(tmp_path_factory.mktemp("secure-kafka"))
    try:
        add_scram_user(broker, SCRAM_USER, SCRAM_PASSWORD, "SCRAM-SHA-512")
        yield broker
    finally:
        stop_kafka(broker.broker.pid)


def _topic() -> str:
    return f"ff-sec-{uuid.uuid4().hex[:8]}"


def _tls(secure: SecureBroker, **changes: Any) -> Settings:
    return Settings(kafka_bootstrap=secure.ssl, kafka_security_protocol="SSL", kafka_ca_file=secure.ca_file
                    ).with_(**changes)


def _scram(secure: SecureBroker, **changes: Any) -> Settings:
    return Settings(kafka_bootstrap=secure.sasl_ssl, kafka_sasl_mechanism="SCRAM-SHA-512",
                    kafka_sasl_username=SCRAM_USER, kafka_sasl_password_env=SCRAM_PASSWORD,
                    kafka_ca_file=secure.ca_file).with_(**changes)


def _round_trip(config: Settings) -> None:
    """Topic made by the admin client, a record through the core bus, read back by its consumer."""
    assert config.kafka_bootstrap
    topic = _topic()
    create_topics(config.kafka_bootstrap, [topic], client_options=client_options(config))
    bus = open_bus(config)
    try:
        bus.publish(topic, "node-a", {"seq": 1, "mode": config.kafka_security_protocol or "default"})
        records = bus.read(topic, timeout_s=3)
    finally:
        bus.close()
    assert [(r.key, r.value["seq"]) for r in records] == [("node-a", 1)]


def test_tls_round_trip_verifies_the_broker(secure: SecureBroker) -> None:
    _round_trip(_tls(secure))


def test_tls_refuses_a_broker_signed_by_another_ca(secure: SecureBroker) -> None:
    config = _tls(secure, kafka_ca_file=secure.other_ca_file)
    with pytest.raises(StackError):
        health_check(secure.ssl, timeout=REFUSAL_TIMEOUT_S, client_options=client_options(config))


def test_mutual_tls_needs_the_client_certificate(secure: SecureBroker) -> None:
    _round_trip(_tls(secure, kafka_bootstrap=secure.mtls, kafka_cert_file=secure.client_cert,
                     kafka_key_file=secure.client_key))
    without = _tls(secure, kafka_bootstrap=secure.mtls)
    with pytest.raises(StackError):
        health_check(secure.mtls, timeout=REFUSAL_TIMEOUT_S, client_options=client_options(without))


def test_plaintext_client_cannot_use_the_tls_listener(secure: SecureBroker) -> None:
    with pytest.raises(StackError):
        health_check(secure.ssl, timeout=REFUSAL_TIMEOUT_S, client_options=client_options(Settings()))


def test_scram_agent_publishes_and_the_event_source_consumes(secure: SecureBroker, tmp_path: Path) -> None:
    """The agent's producer and the local event source mapping both authenticate with SCRAM-SHA-512 over TLS."""
    password_file = tmp_path / "kafka-password"
    password_file.write_text(SCRAM_PASSWORD + "\n", encoding="utf-8")
    config = _scram(secure, kafka_sasl_password_env=None, kafka_sasl_password_file=password_file)
    topic = _topic()
    create_topics(secure.sasl_ssl, [topic], client_options=client_options(config))
    agent_bus = open_agent_bus(config)
    try:
        for seq in range(3):
            agent_bus.publish(topic, "cluster/node-a", {"seq": seq})
    finally:
        agent_bus.close()

    seen: list[dict[str, Any]] = []
    got_all = threading.Event()

    def handler(event: dict[str, Any], _context: Any) -> dict[str, Any]:
        seen.extend(record for batch in event["records"].values() for record in batch)
        if len(seen) >= 3:
            got_all.set()
        return {"batchItemFailures": []}

    source = KafkaEventSource(secure.sasl_ssl, topic, f"g-{uuid.uuid4().hex[:6]}", handler, "indexer",
                              client_options=client_options(config)).start()
    try:
        assert got_all.wait(30), f"event source saw {len(seen)} of 3 records"
    finally:
        source.stop()
    assert sorted(record["offset"] for record in seen) == [0, 1, 2]


def test_scram_wrong_password_is_refused(secure: SecureBroker) -> None:
    config = _scram(secure, kafka_sasl_password_env="not-the-password")
    with pytest.raises(StackError):
        health_check(secure.sasl_ssl, timeout=REFUSAL_TIMEOUT_S, client_options=client_options(config))


def test_scram_sha256_user_made_with_kafka_configs(secure: SecureBroker) -> None:
    password = uuid.uuid4().hex
    add_scram_user(secure, "sha256-user", password, "SCRAM-SHA-256")
    _round_trip(_scram(secure, kafka_sasl_mechanism="SCRAM-SHA-256", kafka_sasl_username="sha256-user",
                       kafka_sasl_password_env=password))


def test_cli_creates_the_topics_over_scram(secure: SecureBroker, tmp_path: Path) -> None:
    env = {**os.environ, "FREEZEFRAME_KAFKA_BOOTSTRAP": secure.sasl_ssl,
           "FREEZEFRAME_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512", "FREEZEFRAME_KAFKA_SASL_USERNAME": SCRAM_USER,
           "FREEZEFRAME_KAFKA_SASL_PASSWORD": SCRAM_PASSWORD, "FREEZEFRAME_KAFKA_CA_FILE": str(secure.ca_file)}
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "freezeframe_local.cli", "topics", "--partitions", "2",
                             "--replication-factor", "1"], env=env, capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert "SASL_SSL, SCRAM-SHA-512" in result.stdout and SCRAM_PASSWORD not in result.stdout + result.stderr
    admin = KafkaAdminClient(bootstrap_servers=secure.plaintext)  # an independent look, through another listener
    try:
        described = {t["name"]: len(t["partitions"]) for t in admin.describe_topics([SEGMENTS_TOPIC, K8S_TOPIC,
                                                                                      JOBS_TOPIC])}
    finally:
        admin.close()
    assert described == {SEGMENTS_TOPIC: 2, K8S_TOPIC: 2, JOBS_TOPIC: 2}, time.monotonic() - started
