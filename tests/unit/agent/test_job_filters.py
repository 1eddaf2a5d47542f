"""A recording job's BPF filter is compiled with libpcap when the jobs file is loaded: a bad one is rejected with
libpcap's reason (the reference: `tcpdump -d`, libpcap's compiler behind tcpdump's own front end), never recorded,
and shown by `freezeframe jobs` and the agent's /healthz."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from freezeframe.capture.bpf import DLT_EN10MB, DLT_LINUX_SLL2, compile_error, link_type_for
from freezeframe_agent.jobs import JobManager, RecordingJob

JOBS = """jobs:
  - name: good
    filter: port 53 or (tcp port 8080 and net 10.42.0.0/16)
    start: now
    daily_iterations: 0
  - name: bad-port
    filter: tcp port 99999
    start: now
    daily_iterations: 0
  - name: bad-syntax
    filter: host and port
    start: now
    daily_iterations: 0
"""


def _tcpdump_reason(expression: str, link: str = "EN10MB") -> str:
    if shutil.which("tcpdump") is None:
        pytest.skip("tcpdump is the reference")
    result = subprocess.run(["tcpdump", "-d", "-y", link, expression], capture_output=True, text=True, check=False)
    assert result.returncode != 0
    return result.stderr.strip().splitlines()[-1].removeprefix("tcpdump: ")


@pytest.mark.parametrize("expression", ["tcp port 99999", "host and port", "udp and portrange 10-", "vlan 5000"])
def test_reasons_match_tcpdump(expression: str) -> None:
    assert compile_error(expression, DLT_EN10MB) == _tcpdump_reason(expression)


def test_link_type_matters_as_in_tcpdump() -> None:
    ether = "ether host 01:02:03:04:05:06"
    assert compile_error(ether, DLT_EN10MB) is None
    assert compile_error(ether, DLT_LINUX_SLL2) == _tcpdump_reason(ether, "LINUX_SLL2")
    assert link_type_for(("any",)) == DLT_LINUX_SLL2 and link_type_for(("eth0",)) == DLT_EN10MB
    assert compile_error("") is None and compile_error("   ") is None


def test_manager_rejects_bad_filters_at_load_and_never_records_them(tmp_path: Path) -> None:
    path = tmp_path / "jobs.yaml"
    path.write_text(JOBS, encoding="utf-8")
    started: list[str] = []

    def record(job: RecordingJob, stop: threading.Event) -> list[Any]:
        started.append(job.name)
        stop.wait(5)
        return []

    manager = JobManager(path, record, poll_s=0.01)
    manager.poll_once()
    stop = threading.Event()
    try:
        deadline = time.monotonic() + 5
        while "good" not in started and time.monotonic() < deadline:
            time.sleep(0.01)
        assert started == ["good"]
        assert manager.rejected == {"bad-port": _tcpdump_reason("tcp port 99999", "LINUX_SLL2"),
                                    "bad-syntax": _tcpdump_reason("host and port", "LINUX_SLL2")}
        details = manager.health_details()
        assert details["jobs_rejected"] == manager.rejected and details["jobs_recording"] == ["good"]
        states = {(dict(s.labels)["job"], dict(s.labels)["state"]) for s in manager.samples()
                  if s.name == "job_state" and s.value == 1}
        assert states == {("good", "recording"), ("bad-port", "invalid"), ("bad-syntax", "invalid")}
    finally:
        stop.set()
        for running in manager._running.values():
            running.stop.set()


def test_freezeframe_jobs_shows_the_reason_and_fails(tmp_path: Path) -> None:
    path = tmp_path / "jobs.yaml"
    path.write_text(JOBS, encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "freezeframe_local.cli", "jobs", "--file", str(path), "--json"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["good"]["state"] == "recording" and rows["good"]["error"] is None
    assert rows["bad-port"]["state"] == "invalid"
    assert rows["bad-port"]["error"] == _tcpdump_reason("tcp port 99999", "LINUX_SLL2")
    table = subprocess.run([sys.executable, "-m", "freezeframe_local.cli", "jobs", "--file", str(path)],
                           capture_output=True, text=True, timeout=60, check=False).stdout
    assert "rejected: can't parse filter expression: syntax error" in table


def test_healthz_lists_the_rejected_jobs(tmp_path: Path) -> None:
    from freezeframe.contracts.config import Settings
    from freezeframe_agent.main import job_manager, run_replay

    path = tmp_path / "jobs.yaml"
    path.write_text(JOBS, encoding="utf-8")
    config = Settings(bus_dir=tmp_path / "bus", spool_dir=tmp_path / "spool", segment_seconds=0.5)
    manager = job_manager(config, path)
    manager.reload_if_changed()
    seen: dict[str, Any] = {}
    stop = threading.Event()

    class S3:
        def put_object(self, **kwargs: Any) -> dict[str, Any]:
            return {"VersionId": "v1"}

    def probe(port_holder: list[int]) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and "body" not in seen:
            for port in port_holder:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as reply:
                        seen["body"] = json.loads(reply.read())
                except (urllib.error.URLError, OSError):
                    pass
            time.sleep(0.05)
        stop.set()

    from freezeframe_agent import health

    ports: list[int] = []
    original = health.HealthServer.start

    def start(self: Any) -> Any:
        ports.append(self.port)
        return original(self)

    sample = Path(__file__).resolve().parents[2] / "fixtures" / "sample.pcap"
    thread = threading.Thread(target=probe, args=(ports,), daemon=True)
    thread.start()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(health.HealthServer, "start", start)
        run_replay(config, sample, speedup=0.2, http_port=0, stop=stop, s3=S3(), drain_timeout_s=0,
                   extra_health=manager.health_details)
    thread.join(5)
    body = seen["body"]
    assert body["jobs_rejected"]["bad-port"] == _tcpdump_reason("tcp port 99999", "LINUX_SLL2")
    assert set(body["jobs_rejected"]) == {"bad-port", "bad-syntax"}
