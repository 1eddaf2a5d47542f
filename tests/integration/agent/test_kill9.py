"""kill -9 of the agent process while an S3 upload is in flight, then a restart: the spool resumes, no segment is lost,
none is stored or published twice, and the per-node seqs stay gapless across both runs. The agent runs as its own
process (`python -m freezeframe_agent.main replay ...`) configured through the environment, as in the DaemonSet, and
its /healthz, /metrics and JSON logs are checked on the way."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from freezeframe.contracts.config import ENV_AGENT_HTTP_PORT, env_overrides

pytestmark = pytest.mark.integration


class AgentProcess:
    def __init__(self, env: dict[str, str], capture: Path, speedup: float) -> None:
        self.logs: list[dict[str, Any]] = []
        self.proc = subprocess.Popen([sys.executable, "-m", "freezeframe_agent.main", "replay", str(capture),
                                      "--speedup", str(speedup)], env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.logs.append(json.loads(line))  # every stdout line is one JSON object

    def messages(self, message: str) -> list[dict[str, Any]]:
        return [entry for entry in list(self.logs) if entry.get("message") == message]

    def get(self, path: str) -> tuple[int, bytes]:
        port = self.messages("health server listening")[0]["port"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as reply:
            return reply.status, reply.read()

    def wait(self, timeout_s: float) -> int:
        code = self.proc.wait(timeout_s)
        self._reader.join(10)
        return code


def test_kill_9_during_an_upload_then_restart_loses_and_duplicates_nothing(
        proxied_s3: Any, udp_capture: Any, helpers: Any) -> None:
    config, endpoint, direct = proxied_s3()
    capture = udp_capture(seconds=20, rate_pps=25)
    env = {**os.environ, **env_overrides(config), ENV_AGENT_HTTP_PORT: "0", "PYTHONUNBUFFERED": "1"}

    first = AgentProcess(env, capture.path, speedup=2.0)
    try:
        helpers.until(lambda: len(first.messages("segment uploaded")) >= 2, 60, "the first uploads")
        status, body = first.get("/healthz")
        assert status == 200 and json.loads(body)["status"] == "ok"
        status, body = first.get("/metrics")
        assert status == 200 and b"\nfreezeframe_agent_segments_uploaded_total " in body
        endpoint.stall()  # the next S3 request hangs mid-flight ...
        helpers.until(lambda: endpoint.held_bytes > 0, 30, "an S3 request in flight")
        first.proc.send_signal(signal.SIGKILL)  # ... and the agent dies in the middle of it
        assert first.wait(30) == -signal.SIGKILL
    finally:
        if first.proc.poll() is None:
            first.proc.kill()
    left = sorted(int(p.stem) for p in config.spool_dir.glob("0*.json"))
    assert left, "the kill left segments in the spool for the restart to resume"
    # The first run's seqs (a kill between a sidecar and state.json leaves the sidecar's seq taken).
    first_run_seqs = max([json.loads((config.spool_dir / "state.json").read_text())["next_seq"]] +
                         [seq + 1 for seq in left])
    # The held request now reaches S3 after all: the restart meets an object its spool does not know was stored.
    endpoint.unstall()

    second = AgentProcess(env, capture.path, speedup=2.0)
    try:
        helpers.until(lambda: bool(second.messages("health server listening")), 60, "the restarted agent")
        status, _ = second.get("/healthz")
        assert status == 200
        assert second.wait(180) == 0, second.proc.stderr.read().decode() if second.proc.stderr else ""
    finally:
        if second.proc.poll() is None:
            second.proc.kill()
    final = json.loads((config.spool_dir / "state.json").read_text())
    on_kafka = helpers.node_records(config.kafka_bootstrap, config)
    segments, gaps = helpers.check_delivery(on_kafka, helpers.s3_versions(direct, config), final["next_seq"])
    assert gaps == []
    assert {r["seq"] for r in segments} >= set(left)
    # The second run replayed the whole capture into the seqs after the first run's.
    second_run = [r for r in segments if r["seq"] >= first_run_seqs]
    assert sum(r["packets"] for r in second_run) == capture.packets
    assert not list(config.spool_dir.glob("0*")), "the spool is empty once everything is uploaded"
    assert all(entry["service"] == "freezeframe-agent" and entry["node"] == config.node_name
               for entry in second.logs)
