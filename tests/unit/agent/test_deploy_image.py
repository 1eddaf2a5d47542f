"""The documented image build is the one that works, and a taken metrics port is a clear error.

Every `docker build` in the README and the Dockerfile's header must name node_agent/Dockerfile with the repository
root as the context (the Dockerfile COPYs pyproject.toml, README.md and layers/core from there; test_manifests.py
checks each COPY source exists). No Docker here: the context is checked against the COPY sources instead."""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
SAMPLE = REPO / "tests" / "fixtures" / "sample.pcap"


def _build_commands() -> list[list[str]]:
    commands = []
    for path in (REPO / "README.md", REPO / "node_agent" / "Dockerfile"):
        for match in re.finditer(r"docker build[^`\n]*", path.read_text(encoding="utf-8")):
            commands.append(shlex.split(match.group(0)))
    return commands


def _copy_sources() -> list[str]:
    sources = []
    for line in (REPO / "node_agent" / "Dockerfile").read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if parts[:1] == ["COPY"] and not any(p.startswith("--from") for p in parts):
            sources += parts[1:-1]
    return sources


def test_every_documented_build_uses_the_repository_root_as_context() -> None:
    commands = _build_commands()
    assert len(commands) >= 2, "the README and the Dockerfile both document the build"
    for command in commands:
        assert "-f" in command and command[command.index("-f") + 1] == "node_agent/Dockerfile", command
        context = command[-1]
        assert context == ".", f"the context must be the repository root, got {context!r}: {command}"
        for source in _copy_sources():  # what the build reads, relative to that context
            assert (REPO / context / source).exists(), source


def test_the_old_context_would_not_hold_the_copy_sources() -> None:
    """The README once said `docker build ... node_agent/`: with that context the COPY sources are missing."""
    assert [s for s in _copy_sources() if not (REPO / "node_agent" / s).exists()]


def test_a_taken_metrics_port_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("0.0.0.0", 0))  # noqa: S104 - as a second agent on the host network would hold it
        holder.listen()
        port = holder.getsockname()[1]
        env = {**os.environ, "FREEZEFRAME_AGENT_HTTP_PORT": str(port), "FREEZEFRAME_BUS_DIR": str(tmp_path / "bus"),
               "FREEZEFRAME_SPOOL_DIR": str(tmp_path / "spool"), "FREEZEFRAME_S3_ENDPOINT": "http://127.0.0.1:9"}
        env.pop("FREEZEFRAME_KAFKA_BOOTSTRAP", None)
        result = subprocess.run([sys.executable, "-m", "freezeframe_agent.main", "replay", str(SAMPLE)], env=env,
                                capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2, result.stderr
    assert f"the health and metrics port {port} is already in use" in result.stderr
    assert "FREEZEFRAME_AGENT_HTTP_PORT" in result.stderr and "Traceback" not in result.stderr
