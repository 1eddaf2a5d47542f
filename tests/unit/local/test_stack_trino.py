"""`freezeframe up --trino` and `down` keep Trino's pid in the stack state: added to a running stack, stopped with it.
Stand-in processes play the services here (the real Trino start runs once per session in the integration tier)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from freezeframe_local import stack
from freezeframe_local.kafka import process_running
from freezeframe_local.s3 import stop_process
from freezeframe_local.trino import TrinoServer

from freezeframe.contracts.config import Settings


def _sleeper() -> int:
    return subprocess.Popen(["sleep", "300"], start_new_session=True).pid


@pytest.fixture
def running_stack(tmp_path: Path) -> Iterator[tuple[Settings, stack.StackState]]:
    config = Settings(state_dir=tmp_path / "state")
    workdir = tmp_path / "state" / "stack"
    workdir.mkdir(parents=True)
    state = stack.StackState("127.0.0.1:1", _sleeper(), "http://127.0.0.1:2", _sleeper(), "http://127.0.0.1:3",
                             _sleeper(), str(workdir / "token"), str(workdir))
    stack.state_path(config).write_text(json.dumps(state.to_dict()), encoding="utf-8")
    try:
        yield config, state
    finally:
        for pid in (state.kafka_pid, state.s3_pid, state.gateway_pid):
            if process_running(pid):
                stop_process(pid, timeout=5)


def test_up_trino_adds_trino_to_a_running_stack_and_down_stops_it(
        running_stack: tuple[Settings, stack.StackState], monkeypatch: pytest.MonkeyPatch) -> None:
    config, before = running_stack
    started: list[Path] = []

    def fake_start(workdir: Path) -> TrinoServer:
        started.append(workdir)
        return TrinoServer("http://127.0.0.1:4", _sleeper(), workdir, workdir / "trino.log")

    monkeypatch.setattr(stack.trino_stack, "start_trino", fake_start)
    assert stack.up(config) == before  # without --trino a running stack is left as it is
    after = stack.up(config, trino=True)
    assert started == [Path(before.workdir) / "trino"]
    assert (after.trino_url, after.kafka_pid) == ("http://127.0.0.1:4", before.kafka_pid)
    assert stack.load_state(config) == after
    assert stack.apply_state(config, after).trino_url == "http://127.0.0.1:4"
    assert stack.up(config, trino=True) == after and len(started) == 1  # already running: not started twice
    assert after.trino_pid is not None and process_running(after.trino_pid)
    stack.down(config)
    assert not process_running(after.trino_pid)
    assert stack.load_state(config) is None


def test_a_state_file_from_before_trino_still_loads(tmp_path: Path) -> None:
    config = Settings(state_dir=tmp_path)
    (tmp_path / "stack").mkdir()
    old = {"schema": stack.STATE_SCHEMA, "kafka_bootstrap": "k", "kafka_pid": 1, "s3_endpoint": "s", "s3_pid": 2,
           "gateway_url": "g", "gateway_pid": 3, "token_file": "t", "workdir": "w"}
    stack.state_path(config).write_text(json.dumps(old), encoding="utf-8")
    loaded = stack.load_state(config)
    assert loaded is not None and loaded.trino_url is None and loaded.trino_pid is None
