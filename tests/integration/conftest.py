"""Integration fixtures: settings pointed at the real local stack, with buckets of their own per test module."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from freezeframe.adapters import s3 as s3io
from freezeframe.config import Settings
from freezeframe.local.gateway import LocalGateway

REPO = Path(__file__).resolve().parents[2]


def stack_settings(stack: Any, **changes: Any) -> Settings:
    suffix = uuid.uuid4().hex[:10]
    base = Settings(cluster=f"it-{suffix}", node_name=f"node-{suffix}", s3_endpoint=stack.s3_endpoint,
                    kafka_bootstrap=stack.kafka_bootstrap, raw_bucket=f"ff-raw-{suffix}",
                    evidence_bucket=f"ff-evidence-{suffix}", lock_retain_days=1, functions_dir=REPO / "functions",
                    alertmanager_token_env="test-token")
    return base.with_(**changes)


@pytest.fixture
def local(stack: Any, tmp_path: Any, handler_env: Any) -> Iterator[tuple[Settings, Any, LocalGateway]]:
    """Settings on the stack's Kafka and LocalStack, fresh buckets, and an in-process gateway for async invokes;
    the handlers see the same settings through the environment."""
    config = stack_settings(stack, spool_dir=tmp_path / "spool", state_dir=tmp_path / "state")
    gateway = LocalGateway(config)
    config = config.with_(lambda_endpoint=gateway.url)
    gateway.settings = config
    s3 = s3io.client(config)
    s3io.ensure_buckets(s3, config)
    handler_env(config)
    gateway.start()
    try:
        yield config, s3, gateway
    finally:
        gateway.stop()
