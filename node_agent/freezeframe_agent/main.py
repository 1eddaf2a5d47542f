"""The agent's entry point: it only wires capture -> segmenter -> spool -> upload threads -> health server, plus the
recording jobs (each the same pipeline under its own prefix) and the Kubernetes watcher."""

from __future__ import annotations

import argparse
import errno
import functools
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from freezeframe.adapters import s3 as s3io
from freezeframe.adapters.bus import SegmentBus
from freezeframe.adapters.s3 import ObjectStore
from freezeframe.capture.bpf import capture_filter, link_type_for
from freezeframe.contracts.config import ENV_AGENT_HTTP_PORT, Settings, settings
from freezeframe.contracts.errors import ConfigError
from freezeframe.contracts.keys import job_segment_key
from freezeframe.contracts.models import SegmentRecord
from freezeframe_agent import __version__
from freezeframe_agent.capture import CaptureEngineError, ReplaySource, Source, open_engine, record
from freezeframe_agent.health import AgentMetrics, Health, HealthReport, HealthServer, Sample
from freezeframe_agent.jobs import JOBS_SPOOL, JOBS_TOPIC, JobManager, RecordingJob
from freezeframe_agent.k8s import K8sWatcher
from freezeframe_agent.logs import configure_logging
from freezeframe_agent.node_state import start_recorder
from freezeframe_agent.publisher import LazyBus, open_agent_bus
from freezeframe_agent.segmenter import EXT, Segmenter
from freezeframe_agent.spool import Spool
from freezeframe_agent.uploader import Uploader

logger = logging.getLogger(__name__)
# libpcap hands packets over in blocks, after up to tcpdump's 1 s buffer timeout: an idle segment closes this long after
# its end, so a packet captured just before the end still lands in it.
LATE_PACKET_GRACE_S = 1.5
SHUTDOWN_GRACE_S = 20.0  # after SIGTERM, time to finish uploads before the spool keeps the rest for the next start

__all__ = ["Source", "main", "run", "run_capture", "run_jobs", "run_replay"]


def run(config: Settings, source: Source, *, live: bool, stop: threading.Event | None = None,
        s3: ObjectStore | None = None, bus: SegmentBus | None = None, on_stop: Any = None, http_port: int | None = None,
        terminate: threading.Event | None = None, drain_timeout_s: float | None = None,
        job: RecordingJob | None = None, on_metrics: Callable[[AgentMetrics], None] | None = None,
        extra_metrics: Callable[[], list[Sample]] | None = None,
        extra_health: Callable[[], dict[str, Any]] | None = None) -> list[SegmentRecord]:
    """Runs one source to its end (or until `stop`), then waits until the spool is uploaded: for `drain_timeout_s`
    (None: as long as it takes), or SHUTDOWN_GRACE_S once `terminate` is set. Returns the records this run
    published, which include segments an earlier run left in the spool.

    `http_port` starts /healthz and /metrics (0: a free port). A live source that ends without being asked to
    raises CaptureEngineError once its segments are uploaded.

    With `job`, the segments are a recording job's: keyed under jobs/<name>/, spooled apart, published to the jobs
    topic, locked for the job's retention at upload. `on_metrics` receives this run's metrics (the job manager shows
    them per job); `extra_metrics` adds families to this run's /metrics (the jobs')."""
    if job is not None:
        config = config.with_(spool_dir=config.spool_dir / JOBS_SPOOL / job.name, segments_topic=JOBS_TOPIC)
    spool = Spool(config.spool_dir, max_bytes=config.spool_max_bytes)
    uploader = Uploader(config, s3 if s3 is not None else s3io.client(config), spool, bus=bus,
                        bus_factory=None if bus is not None else functools.partial(open_agent_bus, config),
                        retain_days=job.retention_days if job is not None else None)
    key_for = None
    if job is not None:
        name, cluster, node = job.name, config.cluster, config.node_name
        key_for = lambda start, end: job_segment_key(name, cluster, node, start, end, EXT)  # noqa: E731
    segmenter = Segmenter(cluster=config.cluster, node=config.node_name, spool_dir=config.spool_dir,
                          link_type=source.link_type, snaplen=source.snaplen, period_s=config.segment_seconds,
                          capture_filter=source.capture_filter, agent_version=__version__, emit_empty=live,
                          spool=spool, kernel_drops_until=source.kernel_drops_until,
                          close_grace_s=LATE_PACKET_GRACE_S if live else 0.0,
                          max_bytes=config.segment_max_bytes, key_for=key_for)
    health = Health(config.segment_seconds)
    health.add_check(lambda: None if uploader.alive() else "an upload thread is not running")
    health.add_check(functools.partial(_engine_check, source, health.stale_after_s))
    metrics = AgentMetrics(cluster=config.cluster, node=config.node_name, version=__version__, health=health,
                           source=source, segmenter=segmenter, spool=spool, uploader=uploader, extra=extra_metrics,
                           drop_ratio=config.health_drop_ratio)
    if on_metrics is not None:
        on_metrics(metrics)
    health_report = metrics.health_report
    if extra_health is not None:  # the recording jobs' state (a rejected filter and its reason) in /healthz
        health_report = functools.partial(_with_details, metrics.health_report, extra_health)
    server = _health_server(http_port, health_report, metrics.render) if http_port is not None else None
    uploader.start()
    if server is not None:
        server.start()
    engine_error: str | None = None
    try:
        requested = record(source, segmenter, health, live=live, stop=stop, on_stop=on_stop)
        source.close()  # an engine's final counts (tcpdump prints them at exit) are in after this
        segmenter.flush(kernel_drops=source.kernel_drops, agent_drops=source.agent_drops)
        if live and not requested:
            engine_error = f"capture engine exited: {getattr(source, 'error_tail', lambda: '')() or 'no message'}"
            health.fail(engine_error)
            logger.error("capture engine exited", extra={"error": engine_error})
        if not _wait_drained(spool, drain_timeout_s, terminate):
            logger.warning("stopping with segments left in the spool; the next start uploads them",
                           extra={"spool_segments": spool.stats().segments})
    finally:
        uploader.stop()
        if server is not None:
            server.stop()
    if engine_error is not None:
        raise CaptureEngineError(engine_error)
    return uploader.uploaded


def _health_server(port: int, report: Callable[[], HealthReport], render: Callable[[], str]) -> HealthServer:
    """The /healthz and /metrics server; a port already taken is a clear configuration error, not a traceback
    (the DaemonSet runs on the host network: a second agent, or anything else on the node, may hold the port)."""
    try:
        return HealthServer(port, report, render)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        raise ConfigError(f"the health and metrics port {port} is already in use on this host ({exc.strerror}); "
                          f"set {ENV_AGENT_HTTP_PORT} to a free port (0 picks one) and keep the DaemonSet's "
                          "containerPort, probes and scrape annotation on the same number") from exc


def _with_details(report: Callable[[], HealthReport], extra: Callable[[], dict[str, Any]]) -> HealthReport:
    base = report()
    return HealthReport(base.healthy, base.reasons, {**base.details, **extra()})


def _engine_check(source: Source, limit_s: float) -> str | None:
    silence = getattr(source, "engine_silence_s", lambda: None)()
    if silence is not None and silence > limit_s:
        return f"capture engine has not answered for {silence:.1f} s (limit {limit_s:g} s)"
    return None


def _wait_drained(spool: Spool, timeout_s: float | None, terminate: threading.Event | None) -> bool:
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    grace_deadline: float | None = None
    while not spool.wait_drained(0.5):
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            return False
        if terminate is not None and terminate.is_set():
            grace_deadline = grace_deadline or now + SHUTDOWN_GRACE_S
            if now >= grace_deadline:
                return False
    return True


def run_replay(config: Settings, path: Path, speedup: float = 1.0, retime: bool = True, **kwargs: Any
               ) -> list[SegmentRecord]:
    source = ReplaySource(path, speedup=speedup, retime=retime)
    return run(config, source, live=False, on_stop=source.stop, **kwargs)


def run_capture(config: Settings, interface: str | None, duration_s: float | None, bpf: str = "",
                snaplen: int | None = None, command_prefix: tuple[str, ...] = (), netns: str | None = None,
                **kwargs: Any) -> list[SegmentRecord]:
    """Live capture for `duration_s` seconds (None: until `stop` is set) with the configured engine. `interface` may
    list several, comma-separated (None: the configured interfaces); snaplen and the kernel buffer default to the
    settings. `netns` (or, for tcpdump, `command_prefix`) captures inside a network namespace."""
    interfaces = _interfaces(interface) if interface else config.interfaces
    source = open_engine(config.capture_engine, interfaces, bpf=bpf, snaplen=snaplen or config.snaplen,
                         buffer_kib=config.capture_buffer_kib, netns=netns, command_prefix=command_prefix)
    stop: threading.Event = kwargs.pop("stop", None) or threading.Event()
    timer = threading.Timer(duration_s, stop.set) if duration_s is not None else None
    # The node's network state is recorded beside the capture, in the capture's namespace, every segment period.
    state_stop = threading.Event()
    recorder = start_recorder(config, kwargs.get("s3") or s3io.client(config), state_stop,
                              netns=netns or _netns_of(command_prefix)) if config.node_state else None
    if timer is not None:
        timer.start()
    try:
        return run(config, source, live=True, stop=stop, on_stop=source.stop, **kwargs)
    finally:
        if timer is not None:
            timer.cancel()
        source.close()
        if recorder is not None:
            state_stop.set()
            recorder[0].join(timeout=SHUTDOWN_GRACE_S)


def run_jobs(config: Settings, jobs_file: Path, stop: threading.Event, *, interfaces: tuple[str, ...] | None = None,
             command_prefix: tuple[str, ...] = (), netns: str | None = None, poll_s: float = 1.0,
             **kwargs: Any) -> JobManager:
    """Runs the recording jobs of `jobs_file` until `stop` is set (blocking), one capture engine per job in a window;
    `kwargs` go to `run` (s3, bus, terminate, drain_timeout_s). Returns the manager, whose `results` holds the
    records the job recordings published."""
    manager = job_manager(config, jobs_file, interfaces=interfaces, command_prefix=command_prefix, netns=netns,
                          poll_s=poll_s, **kwargs)
    manager.run(stop)
    return manager


def job_manager(config: Settings, jobs_file: Path, *, interfaces: tuple[str, ...] | None = None,
                command_prefix: tuple[str, ...] = (), netns: str | None = None, poll_s: float = 1.0,
                exclude_own_traffic: bool = False, **kwargs: Any) -> JobManager:
    """The manager `run_jobs` runs: each job's recording is `run` with its own engine, prefix, spool and metrics;
    `exclude_own_traffic` leaves the agent's Kafka and S3 connections out of each job's filter (the agent's main)."""
    def record_job(job: RecordingJob, job_stop: threading.Event) -> list[SegmentRecord]:
        bpf = capture_filter(job.capture_filter, config) if exclude_own_traffic else job.capture_filter
        source = open_engine(config.capture_engine, interfaces or config.interfaces, bpf=bpf,
                             snaplen=config.snaplen, buffer_kib=config.capture_buffer_kib, netns=netns,
                             command_prefix=command_prefix)
        try:
            return run(config, source, live=True, stop=job_stop, on_stop=source.stop, job=job,
                       on_metrics=functools.partial(manager.attach_metrics, job.name), **kwargs)
        finally:
            source.close()

    manager = JobManager(jobs_file, record_job, poll_s=poll_s,
                         link_type=link_type_for(interfaces or config.interfaces))
    return manager


def _start_k8s(config: Settings, stop: threading.Event, bus: SegmentBus | None = None,
               **watcher_options: Any) -> tuple[threading.Thread, K8sWatcher]:
    """The watcher publishes to its own bus (the uploader's is built lazily in its own thread and backs off on its
    own); `watcher_options` go to K8sWatcher (tests point it at a fake API server)."""
    if bus is None:
        bus = LazyBus(functools.partial(open_agent_bus, config))
    watcher = K8sWatcher.from_settings(config, bus, **watcher_options)
    thread = threading.Thread(target=watcher.run, args=(stop,), name="k8s-watcher", daemon=True)
    thread.start()
    return thread, watcher


def _start_jobs(config: Settings, stop: threading.Event, terminate: threading.Event
                ) -> tuple[threading.Thread, JobManager] | None:
    if config.jobs_file is None:
        return None
    manager = job_manager(config, config.jobs_file, terminate=terminate, exclude_own_traffic=True)
    thread = threading.Thread(target=manager.run, args=(stop,), name="jobs", daemon=True)
    thread.start()
    return thread, manager


def _stop_side_tasks(k8s: tuple[threading.Thread, K8sWatcher] | None,
                     jobs: tuple[threading.Thread, JobManager] | None) -> None:
    """After `stop` is set: the watcher interrupts its watches and flushes what it was publishing; the jobs drain
    their spools (bounded by SHUTDOWN_GRACE_S once terminating)."""
    if k8s is not None:
        thread, watcher = k8s
        thread.join(timeout=SHUTDOWN_GRACE_S)
        if not watcher.flush(timeout_s=SHUTDOWN_GRACE_S):
            logger.warning("kubernetes records still in flight at shutdown")
        watcher.bus.close()
    if jobs is not None:
        jobs[0].join(timeout=SHUTDOWN_GRACE_S + 5)


def _netns_of(command_prefix: tuple[str, ...]) -> str | None:
    """The namespace of an `ip netns exec <name>` prefix (tcpdump's way into a namespace), else None."""
    return command_prefix[3] if len(command_prefix) >= 4 and command_prefix[:3] == ("ip", "netns", "exec") else None


def _interfaces(spec: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in spec.split(",") if name.strip())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="freezeframe-agent", description="freezeframe node agent")
    sub = parser.add_subparsers(dest="command", required=True)
    replay_help = "replay a pcap file as if captured live"
    replay = sub.add_parser("replay", help=replay_help, description=replay_help)
    replay.add_argument("pcap", type=Path, help="the capture file (pcap or pcapng)")
    replay.add_argument("--speedup", type=float, default=1.0, help="replay this many times faster than captured")
    replay.add_argument("--keep-timestamps", action="store_true", help="do not shift timestamps to now")
    capture_help = "capture live (engine: FREEZEFRAME_CAPTURE_ENGINE, tcpdump or scapy)"
    capture = sub.add_parser("capture", help=capture_help, description=capture_help)
    capture.add_argument("--interface", "-i", default=None,
                         help="interface(s), comma-separated, or 'any' (default: FREEZEFRAME_INTERFACES)")
    capture.add_argument("--duration", type=float, default=None, help="seconds to capture (default: until SIGTERM)")
    capture.add_argument("--filter", default=None, help="BPF capture filter (default: FREEZEFRAME_CAPTURE_FILTER)")
    capture.add_argument("--snaplen", type=int, default=None,
                         help="bytes kept per packet (default: FREEZEFRAME_SNAPLEN)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = settings()
    configure_logging(config.cluster, config.node_name)
    stop, terminate = threading.Event(), threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        logger.info("signal received; flushing and stopping", extra={"signal": signal.Signals(signum).name})
        terminate.set()
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    common: dict[str, Any] = {"stop": stop, "terminate": terminate, "http_port": config.agent_http_port}
    try:
        return _run_command(args, config, common, stop)
    except ConfigError as exc:
        logger.error("agent not started: bad configuration", extra={"error": str(exc)})
        print(f"freezeframe-agent: error: {exc}", file=sys.stderr)
        return 2


def _run_command(args: argparse.Namespace, config: Settings, common: dict[str, Any], stop: threading.Event) -> int:
    terminate = common["terminate"]
    if args.command == "replay":
        try:
            records = run_replay(config, args.pcap, args.speedup, retime=not args.keep_timestamps, **common)
        except CaptureEngineError:
            return 1
        logger.info("agent stopped", extra={"segments_uploaded": len(records)})
        return 0
    # Live: the watcher and the jobs run beside the always-on capture and stop with it (SIGTERM or --duration).
    k8s = _start_k8s(config, stop) if config.k8s_watch else None
    jobs = _start_jobs(config, stop, terminate)
    try:
        # The agent's own Kafka and S3 connections stay out of the capture (FREEZEFRAME_EXCLUDE_OWN_TRAFFIC).
        bpf = capture_filter(config.capture_filter if args.filter is None else args.filter, config)
        records = run_capture(config, args.interface, args.duration, bpf, snaplen=args.snaplen,
                              extra_metrics=jobs[1].samples if jobs is not None else None,
                              extra_health=jobs[1].health_details if jobs is not None else None, **common)
    except CaptureEngineError:
        return 1
    finally:
        stop.set()
        _stop_side_tasks(k8s, jobs)
    logger.info("agent stopped", extra={"segments_uploaded": len(records)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
