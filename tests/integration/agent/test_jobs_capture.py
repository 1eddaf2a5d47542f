"""A recording job end to end with a real tcpdump in network namespaces this test creates: the jobs file appears
while the agent runs (a reload, no restart), the job records its own filter during its window only, into its own
key prefix, and every segment is locked for the job's retention when it is uploaded. Expected counts come from the
traffic the test sends and are checked with tshark."""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import zstandard

from freezeframe_agent.jobs import JobManager
from freezeframe_agent.main import run_jobs
from tests.fixtures.buses import MemoryBus

pytestmark = [pytest.mark.integration, pytest.mark.capture]
JOB_PORT, OTHER_PORT = 39998, 39997
IN_WINDOW, OUTSIDE = 25, 10


@pytest.fixture
def veth(veth_pair: Any) -> tuple[str, str, str]:
    return veth_pair.cap_ns, veth_pair.cap_dev, veth_pair.peer_ns


def send(peer: str, port: int, count: int) -> None:
    code = ("import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
            f"for i in range({count}):\n    s.sendto(b'job-%d' % i, ('192.0.2.1', {port}))\n    time.sleep(0.01)\n")
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
    bus = MemoryBus()
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
    assert all(value["key"].startswith("jobs/udp-probe/") for value in bus.values)
    assert not list(s3.list_objects_v2(Bucket=config.raw_bucket, Prefix="raw/").get("Contents", []))


