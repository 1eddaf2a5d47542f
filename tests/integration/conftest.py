"""Integration fixtures: settings pointed at the real local stack, with buckets of their own per test module."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from freezeframe_local.gateway import LocalGateway

from freezeframe.adapters import s3 as s3io
from freezeframe.contracts.config import Settings

REPO = Path(__file__).resolve().parents[2]


def stack_settings(stack: Any, **changes: Any) -> Settings:
    suffix = uuid.uuid4().hex[:10]
    base = Settings(cluster=f"it-{suffix}", node_name=f"node-{suffix}", s3_endpoint=stack.s3_endpoint,
                    kafka_bootstrap=stack.kafka_bootstrap, raw_bucket=f"ff-raw-{suffix}",
                    evidence_bucket=f"ff-evidence-{suffix}", lock_retain_days=1, functions_dir=REPO / "functions",
                    alertmanager_token_env="test-token")
    # Evidence is signed with the stack's LocalStack KMS key and time-stamped by its local RFC 3161 authority.
    base = base.with_(signing_key_id=stack.signing_key_id, kms_endpoint=stack.s3_endpoint, tsa_url=stack.tsa_url,
                      tsa_ca_file=Path(stack.tsa_ca_file))
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


@dataclass(frozen=True)
class VethPair:
    """Two fresh network namespaces joined by a veth pair: capture on `cap_dev`, send from `peer_ns`."""

    cap_ns: str
    cap_dev: str
    cap_ip: str
    peer_ns: str
    peer_dev: str
    peer_ip: str


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def veth_pair() -> Iterator[VethPair]:
    if os.geteuid() != 0 or shutil.which("tcpdump") is None or shutil.which("ip") is None:
        pytest.skip("needs root, tcpdump and iproute2")
    tag = uuid.uuid4().hex[:6]
    # TEST-NET-1 addresses, only ever inside these namespaces.
    pair = VethPair(f"ffcap-{tag}", f"ffa{tag}", "192.0.2.1", f"ffpeer-{tag}", f"ffb{tag}", "192.0.2.2")
    _ip("netns", "add", pair.cap_ns)
    _ip("netns", "add", pair.peer_ns)
    try:
        _ip("link", "add", pair.cap_dev, "type", "veth", "peer", "name", pair.peer_dev)
        for ns, dev, address in ((pair.cap_ns, pair.cap_dev, pair.cap_ip), (pair.peer_ns, pair.peer_dev, pair.peer_ip)):
            _ip("link", "set", dev, "netns", ns)
            _ip("-n", ns, "addr", "add", f"{address}/30", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        yield pair
    finally:
        _ip("netns", "del", pair.cap_ns)
        _ip("netns", "del", pair.peer_ns)
