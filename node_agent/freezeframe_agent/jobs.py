"""Recording jobs (as in Kubeshark's Traffic Recorder): bounded extra recordings on top of the always-on capture,
each with its own BPF filter, schedule, key prefix and retention.

The jobs file (YAML; the DaemonSet mounts the ConfigMap's jobs.yaml at /etc/freezeframe/jobs.yaml):

    jobs:
      - name: checkout-rollout-dns-http       # becomes a key part: jobs/<name>/<cluster>/<YYYY>/...
        filter: port 53 or tcp port 8080      # BPF; empty records everything
        start: "2025-01-15T02:00:00Z"         # RFC 3339, or "now" (the file's modification time)
        duration: 15m                         # each iteration; s, m, h, d suffixes or plain seconds
        daily_iterations: 4                   # N >= 1: N windows a day, evenly spaced from start, every day
                                              # 0: one continuous recording from start on ("forever")
        expiration: "2025-02-15T00:00:00Z"    # optional: no recording at or after it
        retention_days: 30                    # optional: Object Lock retain-until on every segment's put

`job_state(job, now)` is pure: it says whether the job is pending, recording, done (no window left before the
expiration) or expired, and which window is current or next.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from freezeframe.capture import bpf
from freezeframe.contracts import config
from freezeframe.contracts.errors import ConfigError, PayloadError
from freezeframe.contracts.keys import check_name
from freezeframe_agent.health import Sample

logger = logging.getLogger(__name__)
DAY = timedelta(days=1)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


class JobState(StrEnum):
    PENDING = "pending"
    RECORDING = "recording"
    DONE = "done"
    EXPIRED = "expired"
    INVALID = "invalid"  # its filter does not compile (libpcap's reason is shown): never recorded


@dataclass(frozen=True, slots=True)
class RecordingJob:
    name: str
    capture_filter: str
    start: datetime
    duration: timedelta
    daily_iterations: int
    expiration: datetime | None = None
    retention_days: int | None = None

    def __post_init__(self) -> None:
        try:
            check_name("job name", self.name)
        except PayloadError as exc:
            raise ConfigError(str(exc)) from exc
        if self.start.tzinfo is None or (self.expiration is not None and self.expiration.tzinfo is None):
            raise ConfigError(f"job {self.name}: times must carry a time zone (e.g. Z)")
        if self.daily_iterations < 0:
            raise ConfigError(f"job {self.name}: daily_iterations must be 0 (forever) or more")
        if self.daily_iterations and self.duration <= timedelta(0):
            raise ConfigError(f"job {self.name}: duration must be positive")
        if self.daily_iterations and self.duration > DAY / self.daily_iterations:
            raise ConfigError(f"job {self.name}: {self.daily_iterations} iterations of {self.duration} "
                              "overlap within a day")
        if self.expiration is not None and self.expiration <= self.start:
            raise ConfigError(f"job {self.name}: expiration is not after start")
        if self.retention_days is not None and self.retention_days < 1:
            raise ConfigError(f"job {self.name}: retention_days must be at least 1")


@dataclass(frozen=True, slots=True)
class JobStatus:
    state: JobState
    window_start: datetime | None = None  # the current window when recording, the next one when pending
    window_end: datetime | None = None  # None: open-ended (daily_iterations 0 without expiration)


def job_state(job: RecordingJob, now: datetime) -> JobStatus:
    """Where `job` stands at `now`; windows are half-open [start, end) and cut off at the expiration."""
    expiration = job.expiration
    if expiration is not None and now >= expiration:
        return JobStatus(JobState.EXPIRED)
    if job.daily_iterations == 0:
        state = JobState.PENDING if now < job.start else JobState.RECORDING
        return JobStatus(state, job.start, expiration)
    period = DAY / job.daily_iterations
    if now < job.start:
        begin = job.start
    else:
        begin = job.start + period * ((now - job.start) // period)
        if now >= begin + job.duration:
            begin += period
    if expiration is not None and begin >= expiration:
        return JobStatus(JobState.DONE)
    end = begin + job.duration
    if expiration is not None:
        end = min(end, expiration)
    return JobStatus(JobState.RECORDING if begin <= now else JobState.PENDING, begin, end)


def parse_duration(raw: object, what: str) -> timedelta:
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        return timedelta(seconds=float(raw))
    match = _DURATION.match(str(raw))
    if not match:
        raise ConfigError(f"{what}: {raw!r} is not a duration (e.g. 90s, 15m, 2h, 1d)")
    return timedelta(seconds=float(match[1]) * _UNITS[match[2]])


def parse_time(raw: object, what: str, now: datetime) -> datetime:
    if isinstance(raw, datetime):  # YAML parses unquoted timestamps itself
        value = raw
    elif str(raw).strip().lower() == "now":
        return now
    else:
        try:
            value = datetime.fromisoformat(str(raw).strip().replace("Z", "+00:00"))
        except ValueError as exc:
            raise ConfigError(f"{what}: {raw!r} is not an RFC 3339 time or 'now'") from exc
    if value.tzinfo is None:
        raise ConfigError(f"{what}: {raw!r} has no time zone (add Z or an offset)")
    return value.astimezone(UTC)


def parse_jobs(document: Any, now: datetime, source: str = "jobs file") -> list[RecordingJob]:
    """The jobs of a parsed jobs document. `now` stands for start: now (the loader passes the file's mtime, so
    an unchanged file keeps its schedule across reloads and restarts)."""
    if document is None:
        return []
    if not isinstance(document, Mapping) or not isinstance(document.get("jobs", []), Sequence):
        raise ConfigError(f"{source}: expected a mapping with a 'jobs' list")
    jobs: list[RecordingJob] = []
    for index, raw in enumerate(document.get("jobs") or []):
        if not isinstance(raw, Mapping) or not raw.get("name"):
            raise ConfigError(f"{source}: job #{index + 1} needs a name")
        name = str(raw["name"])
        what = f"{source}: job {name}"
        unknown = set(raw) - {"name", "filter", "start", "duration", "daily_iterations", "expiration",
                              "retention_days"}
        if unknown:
            raise ConfigError(f"{what}: unknown field(s) {sorted(unknown)}")
        iterations = int(raw.get("daily_iterations", 1))
        if iterations and "duration" not in raw:
            raise ConfigError(f"{what}: duration is required unless daily_iterations is 0")
        jobs.append(RecordingJob(
            name=name,
            capture_filter=str(raw.get("filter") or ""),
            start=parse_time(raw.get("start", "now"), f"{what} start", now),
            duration=parse_duration(raw.get("duration", 0), f"{what} duration"),
            daily_iterations=iterations,
            expiration=parse_time(raw["expiration"], f"{what} expiration", now) if raw.get("expiration") else None,
            retention_days=int(raw["retention_days"]) if raw.get("retention_days") is not None else None,
        ))
    names = [job.name for job in jobs]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ConfigError(f"{source}: job names must be unique, repeated: {duplicates}")
    return jobs


def load_jobs(path: Path) -> list[RecordingJob]:
    """Reads the jobs file; a missing file means no jobs (the ConfigMap may simply not define any)."""
    try:
        text = path.read_text(encoding="utf-8")
        mtime = datetime.fromtimestamp(path.stat().st_mtime, tz=UTC)
    except FileNotFoundError:
        return []
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    return parse_jobs(document, mtime, str(path))


def filter_errors(jobs: Sequence[RecordingJob], link_type: int = bpf.DLT_LINUX_SLL2) -> dict[str, str]:
    """job name -> libpcap's reason, for every job whose filter does not compile for the capture's link type."""
    errors = {}
    for job in jobs:
        reason = bpf.compile_error(job.capture_filter, link_type)
        if reason is not None:
            errors[job.name] = reason
    return errors


def file_stamp(path: Path) -> tuple[int, int] | None:
    """What the reload poll compares: (mtime_ns, size), None for a missing file. A ConfigMap update swaps a symlink,
    which changes the stamp of the path as followed."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_mtime_ns, stat.st_size


JOBS_TOPIC = config.JOBS_TOPIC  # job segments stay off freezeframe.segments: their seq runs per job, not per node
JOBS_SPOOL = "jobs"  # <spool_dir>/jobs/<name>/: each job has its own spool, so its own gapless seq
# The families of a recording's own metrics that /metrics repeats per job, as job_<family>{job="<name>"}.
JOB_FAMILIES = ("packets_captured_total", "bytes_captured_total", "kernel_drops_total", "agent_drops_total",
                "segments_closed_total", "segments_uploaded_total", "spool_bytes", "spool_segments",
                "upload_lag_seconds", "last_segment_age_seconds", "segments_evicted_total")


@dataclass(slots=True)
class _Running:
    job: RecordingJob
    stop: threading.Event
    thread: threading.Thread


class JobManager:
    """Keeps one recording running per job that is in a window: polls the jobs file's stamp (a ConfigMap update
    lands without a restart), starts `record_job(job, stop)` in a thread when a window opens and sets its `stop`
    when the window closes, the job changes or disappears. A file that does not parse keeps the jobs it had.
    `record_job` blocks until `stop` is set (or its engine fails) and returns what it published."""

    def __init__(self, path: Path, record_job: Callable[[RecordingJob, threading.Event], Sequence[Any]], *,
                 poll_s: float = 1.0, clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 retry_s: float = 10.0, link_type: int = bpf.DLT_LINUX_SLL2) -> None:
        self.path = path
        self.link_type = link_type  # what each job's filter is compiled for when the file is loaded
        self.rejected: dict[str, str] = {}  # job name -> why its filter was rejected
        self._record_job = record_job
        self.poll_s = poll_s
        self._clock = clock
        self._stamp: tuple[int, int] | None = None
        self._loaded = False
        self.jobs: list[RecordingJob] = []
        self.load_error: str | None = None
        self.reloads = 0
        self._running: dict[str, _Running] = {}
        self.retry_s = retry_s  # a recording that failed (a bad filter, a missing interface) waits this long
        self._failed_at: dict[str, float] = {}
        self.results: list[Any] = []  # what the recordings returned (their published records), in finishing order
        self._metrics: dict[str, Any] = {}  # job name -> the AgentMetrics of its current (or last) recording

    def reload_if_changed(self) -> bool:
        stamp = file_stamp(self.path)
        if self._loaded and stamp == self._stamp:
            return False
        self._stamp, self._loaded = stamp, True
        try:
            self.jobs = load_jobs(self.path)
            self.rejected = filter_errors(self.jobs, self.link_type)
            self.load_error = None
        except ConfigError as exc:
            self.load_error = str(exc)
            logger.error("jobs file not loaded; keeping the previous jobs", extra={"error": str(exc)})
            return False
        self.reloads += 1
        logger.info("jobs loaded", extra={"jobs": [job.name for job in self.jobs]})
        for name, reason in self.rejected.items():
            logger.error("job rejected: its filter is not valid BPF", extra={"job": name, "error": reason})
        return True

    def poll_once(self) -> None:
        self.reload_if_changed()
        now = self._clock()
        wanted = {job.name: job for job in self.jobs
                  if job.name not in self.rejected and job_state(job, now).state == JobState.RECORDING}
        for name, running in list(self._running.items()):
            if not running.thread.is_alive():
                del self._running[name]
            elif wanted.get(name) != running.job and not running.stop.is_set():
                logger.info("job recording stopping", extra={"job": name})
                running.stop.set()
        for name, job in wanted.items():
            failed_at = self._failed_at.get(name)
            if failed_at is not None and time.monotonic() - failed_at < self.retry_s:
                continue
            if name not in self._running:  # a stopping recording of the same name finishes (and drains) first
                stop = threading.Event()
                thread = threading.Thread(target=self._record, args=(job, stop), name=f"job-{name}", daemon=True)
                self._running[name] = _Running(job, stop, thread)
                logger.info("job recording starting", extra={"job": name})
                thread.start()

    def running(self) -> list[str]:
        return sorted(name for name, running in self._running.items() if running.thread.is_alive())

    def attach_metrics(self, name: str, metrics: Any) -> None:
        """A recording of job `name` reports through `metrics` (an AgentMetrics); its counters restart per window."""
        self._metrics[name] = metrics

    def samples(self) -> list[Sample]:
        """The jobs' part of /metrics: file reloads, each job's state and recording, and its recording's figures."""
        now, running = self._clock(), set(self.running())
        out = [Sample("jobs_reloads_total", "counter", "Times the jobs file was loaded (the first load and every "
                      "change).", self.reloads),
               Sample("jobs_file_valid", "gauge", "0 while the latest jobs file does not parse (the previous jobs "
                      "stay in force).", 0 if self.load_error else 1)]
        for job in self.jobs:
            label = ("job", job.name)
            state = JobState.INVALID if job.name in self.rejected else job_state(job, now).state
            out += [Sample("job_state", "gauge", "1 for the state the job is in.", 1 if option == state else 0,
                           (label, ("state", str(option)))) for option in JobState]
            out.append(Sample("job_recording", "gauge", "1 while a recording of the job runs.",
                              1 if job.name in running else 0, (label,)))
        jobs = {job.name for job in self.jobs} | running
        for name, metrics in sorted(self._metrics.items()):
            if name not in jobs:
                continue
            out += [Sample(f"job_{sample.name}", sample.kind, f"Per recording job: {sample.help}", sample.value,
                           (("job", name), *sample.labels))
                    for sample in metrics.samples() if sample.name in JOB_FAMILIES]
        return out

    def run(self, stop: threading.Event) -> None:
        """Polls until `stop` is set, then stops every recording and waits for them (they drain their spools)."""
        while True:
            self.poll_once()
            if stop.wait(self.poll_s):
                break
        for running in self._running.values():
            running.stop.set()
        for running in self._running.values():
            running.thread.join()

    def _record(self, job: RecordingJob, stop: threading.Event) -> None:
        try:
            self.results.extend(self._record_job(job, stop))
            self._failed_at.pop(job.name, None)
        except Exception:
            self._failed_at[job.name] = time.monotonic()
            # The next poll starts the job again while its window is open; the failure is in the log meanwhile.
            logger.exception("job recording failed", extra={"job": job.name})


    def health_details(self) -> dict[str, Any]:
        """For /healthz: the jobs file's load error and every rejected job with libpcap's reason."""
        return {"jobs_file_error": self.load_error, "jobs_rejected": dict(self.rejected),
                "jobs_recording": self.running()}


def describe_jobs(jobs: Sequence[RecordingJob], now: datetime, rejected: Mapping[str, str] | None = None
                  ) -> list[dict[str, Any]]:
    """One row per job for `freezeframe jobs`: its state at `now` and its current or next window; a job in
    `rejected` is `invalid`, with the reason as its `error`."""
    rows = []
    for job in jobs:
        status = job_state(job, now)
        error = (rejected or {}).get(job.name)
        rows.append({
            "name": job.name, "state": str(JobState.INVALID if error else status.state), "error": error,
            "filter": job.capture_filter,
            "window_start": status.window_start.isoformat() if status.window_start else None,
            "window_end": status.window_end.isoformat() if status.window_end else None,
            "daily_iterations": job.daily_iterations, "duration_s": job.duration.total_seconds(),
            "expiration": job.expiration.isoformat() if job.expiration else None,
            "retention_days": job.retention_days,
        })
    return rows


def format_jobs(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return "no recording jobs"
    header = ("NAME", "STATE", "WINDOW (current or next)", "RETENTION", "FILTER")
    table = [header] + [(
        str(row["name"]), str(row["state"]),
        f"{row['window_start'] or '-'} .. {row['window_end'] or 'open'}" if row["window_start"] else "-",
        f"{row['retention_days']}d" if row["retention_days"] else "-",
        (str(row["filter"]) or "(all traffic)") + (f"  <- rejected: {row['error']}" if row.get("error") else ""),
    ) for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(header) - 1)]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line[:-1], widths, strict=True))
                     + "  " + line[-1] for line in table)
