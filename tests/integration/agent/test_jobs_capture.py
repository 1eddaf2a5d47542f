"""A recording job end to end with a real tcpdump in network namespaces this test creates: the jobs file appears
while the agent runs (a reload, no restart), the job records its own filter during its window only, into its own
key prefix, and every segment is locked for the job's retention when it is uploaded. Expected counts come from the
traffic the test sends and are checked with tshark."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import zstandard

from freezeframe_agent.jobs import JobManager
from freezeframe_agent.main import run_jobs

pytestmark = [pytest.mark.integration, pytest.mark.capture]
JOB_PORT, OTHER_PORT = 39998, 39997
IN_WINDOW, OUTSIDE = 25, 10


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def veth() -> Iterator[tuple[str, str, str]]:
    if os.geteuid() != 0 or shutil.which("tcpdump") is None or shutil.which("ip") is None:
        pytest.skip("needs root, tcpdump and iproute2")
    tag = uuid.uuid4().hex[:6]
    cap, peer = f"ffjcap-{tag}", f"ffjpeer-{tag}"
    _ip("netns", "add", cap)
    _ip("netns", "add", peer)
    try:
        _ip("link", "add", f"ffja{tag}", "type", "veth", "peer", "name", f"ffjb{tag}")
        _ip("link", "set", f"ffja{tag}", "netns", cap)
        _ip("link", "set", f"ffjb{tag}", "netns", peer)
        _ip("-n", cap, "addr", "add", "192.0.2.5/30", "dev", f"ffja{tag}")
        _ip("-n", peer, "addr", "add", "192.0.2.6/30", "dev", f"ffjb{tag}")
        for ns, dev in ((cap, f"ffja{tag}"), (peer, f"ffjb{tag}")):
            _ip("-n", ns, "link", "set", dev, "up")
        yield cap, f"ffja{tag}", peer
    finally:
        _ip("netns", "del", cap)
        _ip("netns", "del", peer)


def send(peer: str, port: int, count: int) -> None:
    code = ("import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
            f"for i in range({count}):\n    s.sendto(b'job-%d' % i, ('192.0.2.5', {port}))\n    time.sleep(0.01)\n")
    subprocess.run(["ip", "netns", "exec", peer, "python3", "-c", code], check=True, timeout=20)


def tshark_count(path: Path, port: int) -> int:
    out = subprocess.run(["tshark", "-r", str(path), "-Y", f"udp.dstport == {port}", "-T", "fields", "-e",
                          "frame.number"], check=True, capture_output=True, text=True).stdout
    return len(out.split())


def test_a_job_loaded_at_runtime_records_its_window_under_its_prefix_with_retention(
        local: Any, veth: tuple[str, str, str], tmp_path: Path) -> None:
    if shutil.which("tshark") is None:
        pytest.skip("needs tshark")
    config, s3, _ = local
    config = config.with_(segment_seconds=1.0, lock_mode="GOVERNANCE")
    ns, dev, peer = veth
    jobs_file = tmp_path / "jobs.yaml"
    jobs_file.write_text("jobs: []\n")
    stop = threading.Event()
    result: dict[str, JobManager] = {}
    bus = _ListBus()
    runner = threading.Thread(target=lambda: result.update(manager=run_jobs(
        config, jobs_file, stop, interfaces=(dev,), command_prefix=("ip", "netns", "exec", ns), poll_s=0.2,
        s3=s3, bus=bus, drain_timeout_s=30.0)))
    runner.start()
    try:
        time.sleep(1.0)  # the agent runs with no job
        jobs_file.write_text(f"jobs:\n  - name: udp-probe\n    filter: udp dst port {JOB_PORT}\n    start: now\n"
                             "    duration: 5s\n    daily_iterations: 1\n    retention_days: 1\n")
        written = datetime.now(UTC)
        time.sleep(2.0)  # reload (0.2 s poll) and tcpdump start-up
        send(peer, JOB_PORT, IN_WINDOW)
        send(peer, OTHER_PORT, IN_WINDOW)  # outside the job's filter
        time.sleep(max(0.0, (written + timedelta(seconds=6.5) - datetime.now(UTC)).total_seconds()))
        send(peer, JOB_PORT, OUTSIDE)  # after the window closed
        time.sleep(1.0)
    finally:
        stop.set()
        runner.join(timeout=60)
    assert not runner.is_alive()
    records = result["manager"].results
    assert records, "the job recorded segments"
    key = re.compile(rf"^jobs/udp-probe/{config.cluster}/\d{{4}}/\d{{2}}/\d{{2}}/\d{{2}}/{config.node_name}/"
                     r"(\d+)-(\d+)\.pcap\.zst$")
    captured = other = 0
    for record in records:
        match = key.match(record.key)
        assert match and (int(match[1]), int(match[2])) == (record.start_ns, record.end_ns), record.key
        assert record.capture_filter == f"udp dst port {JOB_PORT}"
        head = s3.head_object(Bucket=config.raw_bucket, Key=record.key, VersionId=record.version_id)
        assert head["ObjectLockMode"] == "GOVERNANCE"
        expected_until = datetime.fromtimestamp(record.end_ns / 1e9, UTC) + timedelta(days=1)
        assert abs((head["ObjectLockRetainUntilDate"] - expected_until).total_seconds()) < 2
        body = s3.get_object(Bucket=config.raw_bucket, Key=record.key, VersionId=record.version_id)["Body"].read()
        plain = tmp_path / f"{record.seq}.pcap"
        plain.write_bytes(zstandard.ZstdDecompressor().decompress(body))
        captured += tshark_count(plain, JOB_PORT)
        other += tshark_count(plain, OTHER_PORT)
    assert (captured, other) == (IN_WINDOW, 0)
    assert [r.seq for r in records] == list(range(len(records))), "the job's own gapless seq"
    assert all(value["key"].startswith("jobs/udp-probe/") for value in bus.published)
    assert not list(s3.list_objects_v2(Bucket=config.raw_bucket, Prefix="raw/").get("Contents", []))


class _ListBus:
    def __init__(self) -> None:
        self.published: list[Any] = []
        self.topics: set[str] = set()

    def publish(self, topic: str, key: str, value: Any) -> None:
        self.topics.add(topic)
        self.published.append(value)

    def read(self, topic: str, timeout_s: float = 5.0) -> list[Any]:
        return []

    def close(self) -> None:
        return None
