"""The agent's entry point: it only wires capture -> segmenter -> spool -> upload threads -> health server."""

from __future__ import annotations

import argparse
import functools
import logging
import signal
import threading
import time
from pathlib import Path
from typing import Any

from freezeframe.adapters import s3 as s3io
from freezeframe.adapters.bus import SegmentBus
from freezeframe.config import Settings, settings
from freezeframe.models import SegmentRecord
from freezeframe_agent import __version__
from freezeframe_agent.capture import CaptureEngineError, ReplaySource, Source, TcpdumpSource, record
from freezeframe_agent.health import AgentMetrics, Health, HealthServer
from freezeframe_agent.logs import configure_logging
from freezeframe_agent.publisher import open_agent_bus
from freezeframe_agent.segmenter import Segmenter
from freezeframe_agent.spool import Spool
from freezeframe_agent.uploader import Uploader

logger = logging.getLogger(__name__)
# libpcap hands packets over in blocks, after up to tcpdump's 1 s buffer timeout: an idle segment closes this long after
# its end, so a packet captured just before the end still lands in it.
LATE_PACKET_GRACE_S = 1.5
SHUTDOWN_GRACE_S = 20.0  # after SIGTERM, time to finish uploads before the spool keeps the rest for the next start

__all__ = ["Source", "main", "run", "run_capture", "run_replay"]


def run(config: Settings, source: Source, *, live: bool, stop: threading.Event | None = None,
        s3: Any = None, bus: SegmentBus | None = None, on_stop: Any = None, http_port: int | None = None,
        terminate: threading.Event | None = None, drain_timeout_s: float | None = None) -> list[SegmentRecord]:
    """Runs one source to its end (or until `stop`), then waits until the spool is uploaded: for `drain_timeout_s`
    (None: as long as it takes), or SHUTDOWN_GRACE_S once `terminate` is set. Returns the records this run
    published, which include segments an earlier run left in the spool.

    `http_port` starts /healthz and /metrics (0: a free port). A live source that ends without being asked to
    raises CaptureEngineError once its segments are uploaded."""
    spool = Spool(config.spool_dir, max_bytes=config.spool_max_bytes)
    uploader = Uploader(config, s3 if s3 is not None else s3io.client(config), spool, bus=bus,
                        bus_factory=None if bus is not None else functools.partial(open_agent_bus, config))
    segmenter = Segmenter(cluster=config.cluster, node=config.node_name, spool_dir=config.spool_dir,
                          link_type=source.link_type, snaplen=source.snaplen, period_s=config.segment_seconds,
                          capture_filter=source.capture_filter, agent_version=__version__, emit_empty=live,
                          spool=spool, kernel_drops_until=source.kernel_drops_until,
                          close_grace_s=LATE_PACKET_GRACE_S if live else 0.0)
    health = Health(config.segment_seconds)
    health.add_check(lambda: None if uploader.alive() else "an upload thread is not running")
    health.add_check(functools.partial(_engine_check, source, health.stale_after_s))
    metrics = AgentMetrics(cluster=config.cluster, node=config.node_name, version=__version__, health=health,
                           source=source, segmenter=segmenter, spool=spool, uploader=uploader)
    server = HealthServer(http_port, metrics.health_report, metrics.render) if http_port is not None else None
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


def run_capture(config: Settings, interface: str, duration_s: float | None, bpf: str = "", snaplen: int = 262_144,
                command_prefix: tuple[str, ...] = (), **kwargs: Any) -> list[SegmentRecord]:
    """Live capture for `duration_s` seconds (None: until `stop` is set)."""
    source = TcpdumpSource(interface, bpf=bpf, snaplen=snaplen, command_prefix=command_prefix)
    stop: threading.Event = kwargs.pop("stop", None) or threading.Event()
    timer = threading.Timer(duration_s, stop.set) if duration_s is not None else None
    if timer is not None:
        timer.start()
    try:
        return run(config, source, live=True, stop=stop, on_stop=source.stop, **kwargs)
    finally:
        if timer is not None:
            timer.cancel()
        source.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="freezeframe-agent", description="freezeframe node agent")
    sub = parser.add_subparsers(dest="command", required=True)
    replay = sub.add_parser("replay", help="replay a pcap file as if captured live")
    replay.add_argument("pcap", type=Path)
    replay.add_argument("--speedup", type=float, default=1.0)
    replay.add_argument("--keep-timestamps", action="store_true", help="do not shift timestamps to now")
    capture = sub.add_parser("capture", help="capture from an interface with tcpdump")
    capture.add_argument("--interface", "-i", required=True)
    capture.add_argument("--duration", type=float, default=None, help="seconds to capture (default: until SIGTERM)")
    capture.add_argument("--filter", default="", help="BPF capture filter")
    args = parser.parse_args(argv)
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
        if args.command == "replay":
            records = run_replay(config, args.pcap, args.speedup, retime=not args.keep_timestamps, **common)
        else:
            records = run_capture(config, args.interface, args.duration, args.filter, **common)
    except CaptureEngineError:
        return 1
    logger.info("agent stopped", extra={"segments_uploaded": len(records)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
