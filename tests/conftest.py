"""Shared fixtures: the powertools environment, a Lambda context, sample events, repo paths and the local stack."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from freezeframe_local.events import load_event
from freezeframe_local.functions import LocalContext

from freezeframe.contracts.config import Settings, env_overrides, reset_settings_cache

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
SAMPLE_PCAP = FIXTURES / "sample.pcap"


@pytest.fixture(autouse=True)
def powertools_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "freezeframe")
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "freezeframe")
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    reset_settings_cache()
    yield
    reset_settings_cache()


@pytest.fixture
def lambda_context() -> LocalContext:
    return LocalContext("freezeframe-test")


@pytest.fixture
def event() -> Any:
    """`event("webhook", "alertmanager_firing")` loads events/webhook/alertmanager_firing.json."""
    base = Settings(functions_dir=REPO / "functions")
    return lambda function, case: load_event(base, function, case)


def use_settings(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    """Point the handlers' settings (read from the environment, as in Lambda) at a test setup."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    reset_settings_cache()


@pytest.fixture
def handler_env(monkeypatch: pytest.MonkeyPatch) -> Any:
    """`handler_env(settings)`: the handlers of this test read `settings` from their environment."""
    return lambda config: use_settings(monkeypatch, env_overrides(config))


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The real local stack of `freezeframe up`: Apache Kafka (KRaft) and LocalStack S3 enforcing Object Lock,
    plus the gateway process. Stopped with `freezeframe down` logic at the end of the session."""
    from freezeframe_local.stack import down, up

    state_dir = tmp_path_factory.mktemp("stack-state")
    config = Settings(state_dir=state_dir, functions_dir=REPO / "functions", lock_retain_days=1)
    state = up(config)
    try:
        yield state
    finally:
        down(config)
        if os.environ.get("FREEZEFRAME_KEEP_LOGS"):
            print(f"stack logs kept in {state.workdir}")


@pytest.fixture(scope="session")
def trino(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real Trino (Athena engine v3's engine) from Maven Central, started once per session (its start costs
    20-50 s) and stopped at the end; a `freezeframe.investigate.trino_sql.TrinoEngine` on it."""
    from freezeframe_local.trino import start_trino, stop_trino

    from freezeframe.investigate.trino_sql import TrinoEngine

    server = start_trino(tmp_path_factory.mktemp("trino"))
    try:
        yield TrinoEngine(server.url, server.metastore_root)
    finally:
        stop_trino(server.pid)
        if os.environ.get("FREEZEFRAME_KEEP_LOGS"):
            print(f"trino log kept in {server.log_path}")
