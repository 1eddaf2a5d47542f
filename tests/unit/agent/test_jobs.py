"""The recording-job scheduler and the jobs file. Times are fixed in the fixtures; expected windows are worked out by
hand from the job definitions (start + k x 24h/N), not from the scheduler."""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from freezeframe.contracts.errors import ConfigError
from freezeframe_agent.health import Sample, render
from freezeframe_agent.jobs import JobManager, JobState, RecordingJob, file_stamp, job_state, load_jobs, parse_jobs

REPO = Path(__file__).resolve().parents[3]
JOBS_YAML = """
jobs:
  - name: checkout-rollout-dns-http
    filter: port 53 or (tcp port 8080 and net 10.42.0.0/16)
    start: "2025-01-15T02:00:00Z"
    duration: 15m
    daily_iterations: 4
    expiration: "2025-02-15T00:00:00Z"
  - name: continuous-dns
    filter: udp port 53
    start: "2025-01-20T00:00:00Z"
    daily_iterations: 0
    retention_days: 7
  - name: last-window-cut
    start: "2025-01-15T23:50:00+01:00"
    duration: 1h
    daily_iterations: 1
    expiration: "2025-01-16T23:10:00Z"
  - name: from-now
    start: now
    duration: 90s
"""
LOADED = datetime(2025, 1, 1, tzinfo=UTC)


def t(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.fixture
def jobs() -> dict[str, RecordingJob]:
    return {job.name: job for job in parse_jobs(yaml.safe_load(JOBS_YAML), LOADED)}


def test_the_file_is_parsed_into_jobs(jobs: dict[str, RecordingJob]) -> None:
    rollout = jobs["checkout-rollout-dns-http"]
    assert rollout.capture_filter == "port 53 or (tcp port 8080 and net 10.42.0.0/16)"
    assert (rollout.start, rollout.duration, rollout.daily_iterations) == (t("2025-01-15T02:00:00Z"),
                                                                           timedelta(minutes=15), 4)
    assert rollout.expiration == t("2025-02-15T00:00:00Z") and rollout.retention_days is None
    assert jobs["continuous-dns"].retention_days == 7
    assert jobs["last-window-cut"].start == t("2025-01-15T22:50:00Z")  # normalised to UTC
    assert jobs["from-now"].start == LOADED and jobs["from-now"].daily_iterations == 1


@pytest.mark.parametrize(("now", "state", "window"), [
    ("2025-01-14T00:00:00Z", "pending", ("2025-01-15T02:00:00Z", "2025-01-15T02:15:00Z")),
    ("2025-01-15T02:00:00Z", "recording", ("2025-01-15T02:00:00Z", "2025-01-15T02:15:00Z")),  # start inclusive
    ("2025-01-15T02:14:59Z", "recording", ("2025-01-15T02:00:00Z", "2025-01-15T02:15:00Z")),
    ("2025-01-15T02:15:00Z", "pending", ("2025-01-15T08:00:00Z", "2025-01-15T08:15:00Z")),  # end exclusive
    ("2025-01-15T20:10:00Z", "recording", ("2025-01-15T20:00:00Z", "2025-01-15T20:15:00Z")),
    ("2025-01-15T21:00:00Z", "pending", ("2025-01-16T02:00:00Z", "2025-01-16T02:15:00Z")),  # next day
    ("2025-02-14T20:05:00Z", "recording", ("2025-02-14T20:00:00Z", "2025-02-14T20:15:00Z")),  # last window
    ("2025-02-14T20:15:00Z", "done", None),  # the next window (02:00) would start after the expiration
    ("2025-02-15T00:00:00Z", "expired", None),
])
def test_daily_windows(jobs: dict[str, RecordingJob], now: str, state: str, window: tuple[str, str] | None) -> None:
    status = job_state(jobs["checkout-rollout-dns-http"], t(now))
    assert status.state == JobState(state)
    got = None if status.window_start is None else (status.window_start, status.window_end)
    assert got == (None if window is None else (t(window[0]), t(window[1])))


def test_zero_iterations_records_from_start_on(jobs: dict[str, RecordingJob]) -> None:
    job = jobs["continuous-dns"]
    assert job_state(job, t("2025-01-19T23:59:59Z")).state == JobState.PENDING
    status = job_state(job, t("2030-06-01T00:00:00Z"))
    assert (status.state, status.window_start, status.window_end) == (JobState.RECORDING, job.start, None)


def test_a_window_is_cut_at_the_expiration(jobs: dict[str, RecordingJob]) -> None:
    job = jobs["last-window-cut"]  # windows start 22:50 UTC daily, 1 h long; expires 2025-01-16T23:10Z
    status = job_state(job, t("2025-01-16T23:00:00Z"))
    assert (status.state, status.window_start, status.window_end) == (
        JobState.RECORDING, t("2025-01-16T22:50:00Z"), t("2025-01-16T23:10:00Z"))
    assert job_state(job, t("2025-01-16T23:10:00Z")).state == JobState.EXPIRED


@pytest.mark.parametrize(("bad", "message"), [
    ({"name": "a/b", "duration": "1m"}, "not a valid name"),
    ({"name": "x", "duration": "1m", "start": "2025-01-01T00:00:00"}, "time zone"),
    ({"name": "x", "duration": "7h", "daily_iterations": 4}, "overlap"),
    ({"name": "x", "daily_iterations": 2}, "duration is required"),
    ({"name": "x", "duration": "soon"}, "not a duration"),
    ({"name": "x", "duration": "1m", "start": "2025-01-02T00:00:00Z", "expiration": "2025-01-01T00:00:00Z"},
     "not after start"),
    ({"name": "x", "duration": "1m", "retention": 3}, "unknown field"),
    ({"name": "x", "duration": "1m", "retention_days": 0}, "retention_days"),
])
def test_invalid_jobs_are_refused_with_a_reason(bad: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_jobs({"jobs": [bad]}, LOADED)


def test_job_names_are_unique() -> None:
    with pytest.raises(ConfigError, match="unique"):
        parse_jobs({"jobs": [{"name": "x", "duration": "1m"}, {"name": "x", "duration": "2m"}]}, LOADED)


def test_the_configmap_example_is_a_valid_jobs_file() -> None:
    configmap = yaml.safe_load((REPO / "node_agent" / "deploy" / "configmap.yaml").read_text())
    parsed = parse_jobs(yaml.safe_load(configmap["data"]["jobs.yaml"]), LOADED)
    assert [job.name for job in parsed] == ["checkout-rollout-dns-http"]


def test_now_is_the_file_mtime_so_reloads_keep_the_schedule(tmp_path: Path) -> None:
    path = tmp_path / "jobs.yaml"
    assert load_jobs(path) == [] and file_stamp(path) is None
    path.write_text("jobs:\n  - name: quick\n    start: now\n    duration: 30s\n")
    os.utime(path, (1_700_000_000, 1_700_000_000))
    stamp = file_stamp(path)
    first = load_jobs(path)
    assert first[0].start == datetime.fromtimestamp(1_700_000_000, tz=UTC)
    assert load_jobs(path) == first
    path.write_text("jobs: []\n")
    assert file_stamp(path) != stamp and load_jobs(path) == []


class FakeRecorder:
    """Stands in for a tcpdump recording: it runs until its stop event is set."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.stopped: list[str] = []

    def __call__(self, job: RecordingJob, stop: threading.Event) -> list[str]:
        self.started.append(job.name)
        stop.wait(10)
        self.stopped.append(job.name)
        return [job.name]


def settle(manager: JobManager, recorder: FakeRecorder, started: int, stopped: int) -> None:
    deadline = time.monotonic() + 5
    while (len(recorder.started), len(recorder.stopped)) != (started, stopped) and time.monotonic() < deadline:
        time.sleep(0.01)
        manager.poll_once()
    assert (len(recorder.started), len(recorder.stopped)) == (started, stopped)


def test_the_manager_follows_windows_and_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "jobs.yaml"
    now = [t("2025-01-15T01:59:00Z")]
    recorder = FakeRecorder()
    manager = JobManager(path, recorder, poll_s=0.01, clock=lambda: now[0])
    manager.poll_once()
    assert manager.jobs == [] and manager.running() == []
    path.write_text('jobs:\n  - name: a\n    start: "2025-01-15T02:00:00Z"\n    duration: 10m\n')
    manager.poll_once()
    assert [job.name for job in manager.jobs] == ["a"] and manager.running() == []  # loaded, still pending
    now[0] = t("2025-01-15T02:00:00Z")
    settle(manager, recorder, 1, 0)
    assert manager.running() == ["a"]
    now[0] = t("2025-01-15T02:10:00Z")  # the window closes
    settle(manager, recorder, 1, 1)
    assert manager.results == ["a"]
    now[0] = t("2025-01-16T02:05:00Z")  # next day's window
    settle(manager, recorder, 2, 1)
    path.write_text("jobs: [not: valid")  # a broken edit keeps the running jobs
    os.utime(path, (1, 1))
    manager.poll_once()
    assert manager.load_error and manager.running() == ["a"]
    path.write_text('jobs:\n  - name: a\n    filter: tcp\n    start: "2025-01-15T02:00:00Z"\n    duration: 10m\n')
    settle(manager, recorder, 3, 2)  # a changed job restarts with its new definition
    path.write_text("jobs: []\n")
    settle(manager, recorder, 3, 3)  # a removed job stops
    assert manager.reloads == 4


def test_run_stops_every_recording_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "jobs.yaml"
    path.write_text("jobs:\n  - name: a\n    start: now\n    daily_iterations: 0\n"
                    "  - name: b\n    start: now\n    daily_iterations: 0\n")
    recorder = FakeRecorder()
    manager = JobManager(path, recorder, poll_s=0.01)
    stop = threading.Event()
    thread = threading.Thread(target=manager.run, args=(stop,))
    thread.start()
    deadline = time.monotonic() + 5
    while len(recorder.started) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    thread.join(timeout=5)
    assert not thread.is_alive() and sorted(recorder.stopped) == ["a", "b"]


def test_the_jobs_command_lists_state_and_window(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from freezeframe_local.cli import main

    path = tmp_path / "jobs.yaml"
    path.write_text(JOBS_YAML)
    assert main(["jobs", "--file", str(path), "--at", "2025-01-15T08:05:00Z", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert (rows["checkout-rollout-dns-http"]["state"], rows["checkout-rollout-dns-http"]["window_start"],
            rows["checkout-rollout-dns-http"]["window_end"]) == (
        "recording", "2025-01-15T08:00:00+00:00", "2025-01-15T08:15:00+00:00")
    assert rows["continuous-dns"]["state"] == "pending" and rows["continuous-dns"]["window_end"] is None
    assert main(["jobs", "--file", str(path), "--at", "2025-01-15T08:05:00Z"]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].startswith("NAME") and "continuous-dns" in table and "7d" in table
    assert main(["jobs", "--file", str(tmp_path / "missing.yaml")]) == 2


# -- the agent's wiring of the side tasks (watcher and jobs) beside the always-on capture ---------------------------


def test_the_k8s_watcher_runs_beside_capture_and_flushes_on_stop(tmp_path: Path) -> None:
    from kubernetes.client import Configuration

    from freezeframe.adapters.bus import FileBus
    from freezeframe.contracts.config import K8S_TOPIC, Settings
    from freezeframe_agent.main import _start_k8s, _stop_side_tasks
    from tests.fixtures.k8s_api import FakeKubeApi, Reply, load

    node = "ip-10-0-1-23.eu-west-1.compute.internal"
    config = Settings.from_env({"NODE_NAME": node, "FREEZEFRAME_CLUSTER": "prod-eu", "FREEZEFRAME_K8S_WATCH": "true"})
    assert config.k8s_watch and not Settings.from_env({}).k8s_watch
    bus = FileBus(tmp_path / "bus")
    expected = {item["metadata"]["name"] for item in load("pods-list.json")["items"]}
    with FakeKubeApi(node, hold_s=30.0) as api:
        api.script("pods", lists=[Reply.list("pods-list.json")])
        stop = threading.Event()
        k8s = _start_k8s(config, stop, bus=bus, configuration=Configuration(host=api.url), watch_events=False)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and {r.value.get("pod") for r in bus.read(K8S_TOPIC)} < expected:
            time.sleep(0.05)
        started = time.monotonic()
        stop.set()  # what SIGTERM does
        _stop_side_tasks(k8s, None)
    assert not k8s[0].is_alive() and time.monotonic() - started < 10
    assert {r.value.get("pod") for r in bus.read(K8S_TOPIC)} >= expected


def test_a_failing_recording_is_retried_after_a_pause(tmp_path: Path) -> None:
    path = tmp_path / "jobs.yaml"
    # A valid filter (a bad one is now rejected at load: test_job_filters.py); the engine fails on its interface.
    path.write_text("jobs:\n  - name: bad\n    filter: tcp\n    start: now\n    daily_iterations: 0\n")
    calls: list[float] = []

    def failing(job: RecordingJob, stop: threading.Event) -> list[str]:
        calls.append(time.monotonic())
        raise ConfigError("tcpdump: eth9: No such device exists")

    manager = JobManager(path, failing, poll_s=0.01, retry_s=0.3)
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:
        manager.poll_once()
        time.sleep(0.01)
    assert 1 <= len(calls) <= 2  # not once per poll
    assert all(b - a >= 0.3 for a, b in zip(calls, calls[1:], strict=False))


def test_the_watchers_bus_is_built_when_first_used_and_again_after_a_failed_build() -> None:
    from freezeframe_agent.publisher import LazyBus

    built: list[object] = []

    class Bus:
        def __init__(self) -> None:
            self.published: list[tuple[str, str]] = []

        def publish(self, topic: str, key: str, value: object) -> None:
            self.published.append((topic, key))

        def read(self, topic: str, timeout_s: float = 5.0) -> list[object]:
            return []

        def close(self) -> None:
            built.append("closed")

    def factory() -> Bus:
        if not built:
            built.append("refused")
            raise ConnectionError("NoBrokersAvailable")  # the broker is down at start-up
        bus = Bus()
        built.append(bus)
        return bus

    lazy = LazyBus(factory)  # type: ignore[arg-type]
    assert built == []  # nothing is built at start-up
    with pytest.raises(ConnectionError):
        lazy.publish("freezeframe.k8s", "c/n", {})
    lazy.publish("freezeframe.k8s", "c/n", {})
    lazy.close()
    refused, bus, closed = built
    assert (refused, closed) == ("refused", "closed")
    assert isinstance(bus, Bus) and bus.published == [("freezeframe.k8s", "c/n")]


class StubRunMetrics:
    """A recording's own metrics as AgentMetrics would report them."""

    def __init__(self, packets: int) -> None:
        self.packets = packets

    def samples(self) -> list[Sample]:
        return [Sample("packets_captured_total", "counter", "Packets written into segments.", self.packets),
                Sample("spool_bytes", "gauge", "Spooled bytes.", 10 * self.packets),
                Sample("info", "gauge", "Not a per-job family.", 1)]


def test_metrics_show_each_jobs_state_and_its_recordings_figures(tmp_path: Path) -> None:
    path = tmp_path / "jobs.yaml"
    path.write_text('jobs:\n  - name: a\n    start: "2025-01-15T02:00:00Z"\n    duration: 10m\n'
                    '  - name: b\n    start: "2025-01-15T03:00:00Z"\n    duration: 10m\n')
    now = [t("2025-01-15T02:05:00Z")]  # a is in its window, b waits for 03:00

    def recorder(job: RecordingJob, stop: threading.Event) -> list[str]:
        manager.attach_metrics(job.name, StubRunMetrics(packets=42))
        stop.wait(10)
        return [job.name]

    manager = JobManager(path, recorder, poll_s=0.01, clock=lambda: now[0])
    manager.poll_once()
    deadline = time.monotonic() + 5
    while manager.running() != ["a"] and time.monotonic() < deadline:
        time.sleep(0.01)
    lines = set(render(manager.samples()).splitlines())
    assert 'freezeframe_agent_job_state{job="a",state="recording"} 1' in lines
    assert 'freezeframe_agent_job_state{job="a",state="pending"} 0' in lines
    assert 'freezeframe_agent_job_state{job="b",state="pending"} 1' in lines
    assert 'freezeframe_agent_job_recording{job="a"} 1' in lines
    assert 'freezeframe_agent_job_recording{job="b"} 0' in lines
    assert 'freezeframe_agent_job_packets_captured_total{job="a"} 42' in lines
    assert 'freezeframe_agent_job_spool_bytes{job="a"} 420' in lines
    assert "freezeframe_agent_jobs_reloads_total 1" in lines and "freezeframe_agent_jobs_file_valid 1" in lines
    assert not any("job_info" in line or 'job="b"' in line and "packets" in line for line in lines)
    path.write_text("jobs: [broken")
    os.utime(path, (1, 1))
    manager.poll_once()
    assert "freezeframe_agent_jobs_file_valid 0" in render(manager.samples()).splitlines()
    stop = threading.Event()
    stop.set()
    manager.run(stop)
