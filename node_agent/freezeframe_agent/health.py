"""Operability: the capture heartbeat, `/healthz` and `/metrics` (Prometheus text exposition format 0.0.4).

/healthz is a liveness check of capture: 200 while the capture loop beats (on every packet and every idle tick)
and the upload threads run; 503 with a JSON reason once the heartbeat is older than two segment periods, the capture
engine exited, or an upload thread died. An S3 or bus outage does not make it unhealthy (restarting the agent would
not help; the spool rides it out), but it makes it "degraded" (still 200, so a liveness probe does not restart it,
with `status: degraded` and the reasons in the body, and `freezeframe_agent_degraded 1` in /metrics) while the
evidence is at risk:

- the last closed segments (RECENT_SEGMENTS) lost more than the configured share of their packets to kernel or
  agent drops (FREEZEFRAME_HEALTH_DROP_RATIO, 1 %);
- an upload stage has failed for longer than one segment period;
- the spool evicted segments within the last EVICTION_MEMORY_PERIODS segment periods.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from freezeframe_agent.capture import Source
    from freezeframe_agent.segmenter import Segmenter
    from freezeframe_agent.spool import Spool
    from freezeframe_agent.uploader import Uploader

logger = logging.getLogger(__name__)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PREFIX = "freezeframe_agent_"
EVICTION_MEMORY_PERIODS = 30  # an eviction keeps the agent degraded for this many segment periods (5 min at 10 s)


@dataclass(frozen=True, slots=True)
class HealthReport:
    healthy: bool
    reasons: list[str]
    details: dict[str, Any] = field(default_factory=dict)
    degraded: list[str] = field(default_factory=list)  # alive, but the evidence is at risk (see the module doc)

    def to_dict(self) -> dict[str, Any]:
        status = "unhealthy" if not self.healthy else "degraded" if self.degraded else "ok"
        return {"status": status, "reasons": self.reasons + self.degraded, "degraded": self.degraded,
                **self.details}


def drop_problem(recent: Iterable[tuple[int, int, int]], ratio: float) -> str | None:
    """Pure: a reason when the recent segments' kernel + agent drops exceed `ratio` of their packets + drops."""
    packets = kernel = agent = 0
    for seg_packets, seg_kernel, seg_agent in recent:
        packets, kernel, agent = packets + seg_packets, kernel + seg_kernel, agent + seg_agent
    offered = packets + kernel + agent
    if not offered or (kernel + agent) / offered <= ratio:
        return None
    return (f"the last segments lost {kernel + agent} of {offered} packets ({(kernel + agent) * 100 / offered:.1f} %: "
            f"{kernel} kernel, {agent} agent drops), above the {ratio * 100:g} % threshold")


def upload_problems(failing_since: Mapping[str, float | None], last_error: Mapping[str, str | None], now: float,
                    period_s: float) -> list[str]:
    """Pure: a reason per upload stage that has been failing for longer than one segment period."""
    out = []
    for stage, since in sorted(failing_since.items()):
        if since is not None and now - since > period_s:
            out.append(f"uploads ({stage}) failing for {now - since:.0f} s (longer than the {period_s:g} s segment "
                       f"period): {last_error.get(stage) or 'unknown error'}")
    return out


class Health:
    """The heartbeat and the failures that make the agent unhealthy. `clock` is monotonic seconds (injectable)."""

    def __init__(self, period_s: float, clock: Callable[[], float] = time.monotonic, stale_periods: float = 2.0,
                 checks: Iterable[Callable[[], str | None]] = ()) -> None:
        self.period_s = period_s
        self.stale_after_s = stale_periods * period_s
        self._clock = clock
        self._last_beat = clock()
        self._failure: str | None = None
        self._checks = list(checks)

    def beat(self) -> None:
        self._last_beat = self._clock()

    def fail(self, reason: str) -> None:
        self._failure = reason

    def add_check(self, check: Callable[[], str | None]) -> None:
        """`check()` returns a reason when something is wrong, else None."""
        self._checks.append(check)

    def heartbeat_age_s(self) -> float:
        return max(0.0, self._clock() - self._last_beat)

    def report(self) -> HealthReport:
        age = self.heartbeat_age_s()
        reasons = []
        if self._failure is not None:
            reasons.append(self._failure)
        if age > self.stale_after_s:
            reasons.append(f"capture heartbeat is {age:.1f} s old (limit {self.stale_after_s:g} s, two segment "
                           "periods): the capture loop is stuck or the engine stopped")
        reasons += [reason for check in self._checks if (reason := check()) is not None]
        return HealthReport(not reasons, reasons, {"heartbeat_age_s": round(age, 3), "period_s": self.period_s})


@dataclass(frozen=True, slots=True)
class Sample:
    name: str  # without the prefix
    kind: str  # counter | gauge
    help: str
    value: float
    labels: tuple[tuple[str, str], ...] = ()


def render(samples: Iterable[Sample]) -> str:
    """Prometheus text format: one HELP and TYPE line per family, then its samples; families in first-seen order."""
    families: dict[str, list[Sample]] = {}
    for sample in samples:
        families.setdefault(sample.name, []).append(sample)
    lines = []
    for name, members in families.items():
        full = PREFIX + name
        lines.append(f"# HELP {full} {_escape_help(members[0].help)}")
        lines.append(f"# TYPE {full} {members[0].kind}")
        for sample in members:
            labels = ",".join(f'{key}="{_escape_label(value)}"' for key, value in sample.labels)
            lines.append(f"{full}{{{labels}}} {_number(sample.value)}" if labels else f"{full} {_number(sample.value)}")
    return "\n".join(lines) + "\n"


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "+Inf" if value > 0 else "-Inf"
        return repr(value)
    return str(int(value))


class AgentMetrics:
    """Collects the agent's figures from its parts at scrape time (nothing on the packet path)."""

    def __init__(self, *, cluster: str, node: str, version: str, health: Health, source: Source,
                 segmenter: Segmenter, spool: Spool, uploader: Uploader,
                 clock_ns: Callable[[], int] = time.time_ns, extra: Callable[[], list[Sample]] | None = None,
                 drop_ratio: float = 0.01, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.cluster, self.node, self.version = cluster, node, version
        self._extra = extra  # more families at scrape time (the recording jobs')
        self.health, self.source, self.segmenter = health, source, segmenter
        self.spool, self.uploader = spool, uploader
        self._clock_ns = clock_ns
        self._started_ns = clock_ns()
        self.drop_ratio = drop_ratio
        self._monotonic = monotonic
        self._evicted_seen = 0
        self._evicted_at: float | None = None

    def degraded(self) -> list[str]:
        """Why the evidence is at risk right now (empty: it is not)."""
        reasons = []
        problem = drop_problem(self.segmenter.recent, self.drop_ratio)
        if problem is not None:
            reasons.append(problem)
        now = self._monotonic()
        reasons += upload_problems(self.uploader.failing_since, self.uploader.last_error, now, self.health.period_s)
        evicted = self.spool.stats().evicted_total
        if evicted > self._evicted_seen:
            self._evicted_seen, self._evicted_at = evicted, now
        memory = EVICTION_MEMORY_PERIODS * self.health.period_s
        if self._evicted_at is not None and now - self._evicted_at <= memory:
            reasons.append(f"the spool evicted segments {now - self._evicted_at:.0f} s ago ({evicted} since start): "
                           "the storage cap was reached while uploads lagged, and that evidence is lost")
        return reasons

    def samples(self) -> list[Sample]:
        now = self._clock_ns()
        spool = self.spool.stats()
        report = self.health.report()
        degraded = self.degraded()
        last_closed = self.segmenter.last_closed_ns
        upload_lag = 0.0 if spool.oldest_spooled_ns is None else max(0.0, (now - spool.oldest_spooled_ns) / 1e9)
        out = [
            Sample("info", "gauge", "The agent's version and identity.", 1,
                   (("version", self.version), ("cluster", self.cluster), ("node", self.node),
                    ("engine", type(self.source).__name__))),
            Sample("healthy", "gauge", "1 while /healthz answers 200.", 1 if report.healthy else 0),
            Sample("degraded", "gauge", "1 while /healthz says degraded (drops, failing uploads, evictions).",
                   1 if degraded else 0),
            Sample("heartbeat_age_seconds", "gauge", "Seconds since the capture loop last beat.",
                   self.health.heartbeat_age_s()),
            Sample("packets_captured_total", "counter", "Packets written into segments.", self.segmenter.packets_total),
            Sample("bytes_captured_total", "counter", "Capture (original length) bytes written into segments.",
                   self.segmenter.bytes_total),
            Sample("kernel_drops_total", "counter", "Packets the kernel dropped, as the capture engine reports them.",
                   self.source.kernel_drops),
            Sample("agent_drops_total", "counter",
                   "Packets the agent dropped (a full in-process queue, a record cut off at the engine's end).",
                   self.source.agent_drops),
            Sample("segments_closed_total", "counter", "Segments closed and spooled.", self.segmenter.segments_closed),
            Sample("segments_stored_total", "counter", "Segments put to S3.", self.uploader.stored_total),
            Sample("segments_uploaded_total", "counter", "Segments put to S3 and published on the bus.",
                   len(self.uploader.uploaded)),
        ]
        out += [Sample("upload_failures_total", "counter", "Failed upload attempts, per stage.", failures,
                       (("stage", stage),)) for stage, failures in self.uploader.failures_total.items()]
        out += [
            Sample("spool_bytes", "gauge", "Spooled segment bytes S3 does not hold yet (what the cap counts).",
                   spool.bytes),
            Sample("spool_max_bytes", "gauge", "The spool's storage cap.", self.spool.max_bytes),
            Sample("spool_segments", "gauge", "Segments in the spool not yet fully uploaded.", spool.segments),
            Sample("upload_lag_seconds", "gauge", "Age of the oldest segment not yet fully uploaded (0 when none).",
                   upload_lag),
            Sample("last_segment_age_seconds", "gauge",
                   "Seconds since the last segment closed (since start while none has).",
                   (now - (last_closed if last_closed is not None else self._started_ns)) / 1e9),
            Sample("segments_evicted_total", "counter", "Segments the storage cap (or a corrupt file) evicted.",
                   spool.evicted_total),
            Sample("gap_records_pending", "gauge", "Gap records waiting to be published.", spool.gaps_pending),
            Sample("gap_records_published_total", "counter", "Gap records published.",
                   self.uploader.gaps_published_total),
        ]
        out += [Sample("degraded_reason", "gauge", "1 per reason /healthz gives for being degraded.", 1,
                       (("reason", reason),)) for reason in degraded]
        recent = list(self.segmenter.recent)
        offered = sum(p + k + a for p, k, a in recent)
        out.append(Sample("recent_drop_ratio", "gauge",
                          "Kernel + agent drops over packets + drops of the last closed segments.",
                          sum(k + a for _, k, a in recent) / offered if offered else 0.0))
        mono = self._monotonic()
        out += [Sample("upload_failing_seconds", "gauge", "How long an upload stage has been failing (0: it is not).",
                       0.0 if since is None else max(0.0, mono - since), (("stage", stage),))
                for stage, since in sorted(self.uploader.failing_since.items())]
        if self._extra is not None:
            out += self._extra()
        return out

    def render(self) -> str:
        return render(self.samples())

    def health_report(self) -> HealthReport:
        report = self.health.report()
        spool = self.spool.stats()
        now = self._clock_ns()
        lag = 0.0 if spool.oldest_spooled_ns is None else (now - spool.oldest_spooled_ns) / 1e9
        details = {**report.details, "spool_segments": spool.segments, "gap_records_pending": spool.gaps_pending,
                   "upload_lag_s": round(max(0.0, lag), 3),
                   "upload_errors": {k: v for k, v in self.uploader.last_error.items() if v}}
        return HealthReport(report.healthy, report.reasons, details, self.degraded())


class HealthServer:
    """A stdlib HTTP server in a daemon thread; port 0 picks a free one (see `.port`)."""

    def __init__(self, port: int, health: Callable[[], HealthReport], metrics: Callable[[], str],
                 host: str = "0.0.0.0") -> None:  # noqa: S104 - probes and scrapes come from the node's network
        self._health = health
        self._metrics = metrics
        self._server = ThreadingHTTPServer((host, port), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="health-http", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> HealthServer:
        self._thread.start()
        logger.info("health server listening", extra={"port": self.port})
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                try:
                    self._route(self.path.split("?", 1)[0])
                except Exception:  # noqa: BLE001 - a broken probe must answer, not hang up
                    logger.exception("health request failed", extra={"path": self.path})
                    self._reply(500, "application/json", b'{"error":"internal error"}')

            def _route(self, path: str) -> None:
                if path == "/healthz":
                    report = server._health()
                    self._reply(200 if report.healthy else 503, "application/json",
                                json.dumps(report.to_dict(), sort_keys=True).encode())
                elif path == "/metrics":
                    self._reply(200, CONTENT_TYPE, server._metrics().encode())
                else:
                    self._reply(404, "application/json", b'{"error":"not found"}')

            def _reply(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
                logger.debug("health request", extra={"request": format % args})

        return Handler
