"""Capture engines and the capture loop. Each engine yields `RecordChunk`s (raw pcap records, the fast path),
`Packet`s, `AgentDrops` markers, or None as an idle tick (so the segmenter can close on time and the heartbeat keeps
beating while no packet flows).

- ReplaySource: a pcap file played back as if captured live, honouring inter-packet gaps divided by a speed-up.
- ScapySource (scapy_engine): in-process capture with scapy, the low-rate fallback, one packet at a time.
- TcpdumpSource: libpcap capture through tcpdump writing nanosecond pcap to a pipe. The agent reads the pipe in large
  chunks and passes them on untouched: no per-packet Python work happens before the segmenter's header walk.
  Back-pressure is the pipe: when the agent falls behind, tcpdump blocks and libpcap's kernel buffer (-B) fills,
  whose overflow tcpdump counts as kernel drops, so a slow agent still never loses a packet silently.

Kernel drops come from libpcap's own counters, which tcpdump prints on SIGUSR1 without stopping ("N packets dropped
by kernel"), so the source polls them every `stats_interval_s` and keeps a timestamped series of running totals; the
segmenter takes the total as of each segment's end. The signal is only sent once tcpdump catches it (SigCgt in
/proc/<pid>/status): before its handler is installed SIGUSR1 would kill it. /proc/net/packet carries no drop counts
and dumpcap's -S prints statistics only instead of capturing, so neither is a better source.
"""

from __future__ import annotations

import fcntl
import itertools
import logging
import os
import queue
import re
import shutil
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from freezeframe.capture.pcapio import GLOBAL_HEADER_LEN, Packet, PcapReader, parse_global_header
from freezeframe.contracts.errors import CaptureFormatError, FreezeframeError

if TYPE_CHECKING:
    from freezeframe_agent.scapy_engine import ScapySource

logger = logging.getLogger(__name__)
CHUNK_BYTES = 1 << 20  # one read of the engine's pipe at most
PIPE_BYTES = 1 << 20  # the pipe's capacity asked for (Linux caps it at /proc/sys/fs/pipe-max-size)
# A read that found less than this fraction of the pipe waits before the next one, so a busy link is read in large
# chunks rather than a syscall per packet, while the pipe still has room for what arrives meanwhile.
READ_PAUSE_S = 0.01
_streams = itertools.count(1)
_DROPPED = re.compile(r"(\d+) packets? dropped by kernel")
_STATS_LINE = re.compile(r"packets? (captured|received by filter|dropped by (kernel|interface))")


class CaptureEngineError(FreezeframeError):
    """The capture engine stopped on its own (tcpdump exited, the interface went away)."""


@dataclass(frozen=True, slots=True)
class RecordChunk:
    """Bytes of nanosecond little-endian pcap records as one engine's pipe delivered them (a record may continue in
    the same `stream`'s next chunk)."""

    data: bytes
    stream: int


@dataclass(frozen=True, slots=True)
class AgentDrops:
    """`count` packets the agent could not queue, the first of them captured at `first_ts_ns`."""

    count: int
    first_ts_ns: int


class Source(Protocol):
    @property
    def link_type(self) -> int: ...
    @property
    def snaplen(self) -> int: ...
    @property
    def capture_filter(self) -> str: ...
    @property
    def kernel_drops(self) -> int: ...
    @property
    def agent_drops(self) -> int: ...

    def kernel_drops_until(self, ts_ns: int) -> int: ...
    def packets(self) -> Iterator[Packet | RecordChunk | AgentDrops | None]: ...
    def close(self) -> None: ...


class _Sink(Protocol):
    def add(self, ts_ns: int, data: bytes, orig_len: int) -> object: ...
    def add_records(self, chunk: bytes, stream: int) -> object: ...
    def add_agent_drops(self, count: int, ts_ns: int) -> object: ...
    def tick(self, now_ns: int) -> object: ...


class _Heartbeat(Protocol):
    def beat(self) -> None: ...


def drops_at(readings: deque[tuple[int, int]], ts_ns: int) -> int:
    """The last running total of kernel drops observed at or before `ts_ns` in `readings` of
    (observed_ns, running total), oldest first; 0 before the first."""
    for observed_ns, total in reversed(readings):
        if observed_ns <= ts_ns:
            return total
    return 0


def drain(items: queue.Queue[Any], tick_s: float) -> Iterator[Any]:
    """A capture thread's queue as a source's items: None on every `tick_s` without one (the heartbeat, and the
    segmenter's chance to close an idle segment on time), ending at the None the thread puts last."""
    while True:
        try:
            item = items.get(timeout=tick_s)
        except queue.Empty:
            yield None
            continue
        if item is None:
            return
        yield item


def record(source: Source, segmenter: _Sink, heartbeat: _Heartbeat, *, live: bool,
           stop: threading.Event | None = None, on_stop: Callable[[], None] | None = None,
           clock_ns: Callable[[], int] = time.time_ns) -> bool:
    """Feeds the source into the segmenter until the source ends; True when it ended because `stop` was set.

    The heartbeat beats on every chunk, packet and idle tick: a loop that is stuck, or an engine that died, stops it.
    Only a live capture closes segments on the wall clock; a replay's packets carry their own timeline.
    """
    stopping = False
    for item in source.packets():
        heartbeat.beat()
        if isinstance(item, RecordChunk):
            segmenter.add_records(item.data, item.stream)
        elif isinstance(item, Packet):
            segmenter.add(item.ts_ns, item.data, item.orig_len)
        elif item is None:
            if live:
                segmenter.tick(clock_ns())
        elif isinstance(item, AgentDrops):
            segmenter.add_agent_drops(item.count, item.first_ts_ns)
        if stop is not None and not stopping and stop.is_set():
            stopping = True
            if on_stop is not None:
                on_stop()  # ends the source; its remaining packets still drain through the loop
    return stopping


class ReplaySource:
    """Plays a pcap file back in real time / speedup. With `retime`, timestamps are shifted by one constant so the
    first packet lands at the replay's start: the traffic looks live while every inter-packet gap (and so every RTT)
    is kept exactly."""

    def __init__(self, path: Path, speedup: float = 1.0, retime: bool = True,
                 clock_ns: Callable[[], int] = time.time_ns, tick_s: float = 0.5) -> None:
        if speedup <= 0:
            raise ValueError(f"speed-up must be positive, got {speedup}")
        self.path = path
        self.speedup = speedup
        self.retime = retime
        self._clock_ns = clock_ns
        self._tick_s = tick_s
        self._stop = threading.Event()
        self._handle = open(path, "rb")  # noqa: SIM115 - closed by close() / the generator's end
        try:
            self._reader = PcapReader(self._handle)
        except CaptureFormatError:
            self._handle.close()
            raise
        self.link_type = self._reader.link_type
        self.snaplen = self._reader.header.snaplen
        self.kernel_drops = 0
        self.capture_filter = ""

    def packets(self) -> Iterator[Packet | AgentDrops | None]:
        offset_ns: int | None = None
        first_ts: int | None = None
        wall_start = time.monotonic()
        try:
            for packet in self._reader:
                if self._stop.is_set():
                    return
                if first_ts is None:
                    first_ts = packet.ts_ns
                    offset_ns = self._clock_ns() - first_ts if self.retime else 0
                due = wall_start + (packet.ts_ns - first_ts) / 1e9 / self.speedup
                while (pause := due - time.monotonic()) > 0:
                    if pause <= self._tick_s:
                        time.sleep(pause)
                        break
                    # A long quiet stretch: idle ticks keep the heartbeat going.
                    if self._stop.wait(self._tick_s):
                        return
                    yield None
                yield Packet(packet.ts_ns + (offset_ns or 0), packet.orig_len, packet.data)
        finally:
            self.close()
        if self._reader.truncated:
            logger.warning("replay file ended in a truncated record", extra={"file": str(self.path)})

    @property
    def agent_drops(self) -> int:
        return self._reader.truncated

    def kernel_drops_until(self, ts_ns: int) -> int:
        return 0

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self._handle.close()


class TcpdumpSource:
    """tcpdump -w - on one interface. A reader thread reads the pipe in chunks of up to CHUNK_BYTES into a bounded
    queue; `packets()` yields them as `RecordChunk`s, and None every tick while the interface is idle so segments
    still close on time. A full queue blocks the reader (see the module docstring: the loss, if any, is counted by
    the kernel), so the agent itself drops nothing here."""

    agent_drops = 0

    def __init__(self, interface: str, bpf: str = "", snaplen: int = 262_144, buffer_kib: int = 8192,
                 tick_s: float = 0.5, tcpdump: str | None = None, command_prefix: Sequence[str] = (),
                 stats_interval_s: float = 1.0, queue_chunks: int = 64,
                 clock_ns: Callable[[], int] = time.time_ns) -> None:
        binary = tcpdump or shutil.which("tcpdump")
        if binary is None:
            raise FileNotFoundError("tcpdump is not installed (apt-get install tcpdump)")
        self.interface = interface
        self.capture_filter = bpf
        self.snaplen = snaplen
        self.stream = next(_streams)
        self._tick_s = tick_s
        self._stats_interval_s = stats_interval_s
        self._clock_ns = clock_ns
        self._stop_requested = False
        self._closing = threading.Event()
        self._last_answer: float | None = None  # monotonic time tcpdump last answered a stats request
        self._drop_readings: deque[tuple[int, int]] = deque(maxlen=100_000)  # (observed_ns, running total)
        self._stderr_tail: deque[str] = deque(maxlen=20)
        # command_prefix runs tcpdump elsewhere, e.g. ("ip", "netns", "exec", "ns1") for a network namespace; such
        # prefixes exec tcpdump, so the pid stays the one to signal.
        command = [*command_prefix, binary, "-i", interface, "-w", "-", "-U", "-n", "-s", str(snaplen),
                   "-B", str(buffer_kib), "--time-stamp-precision", "nano", "-Z", "root"]
        if bpf:
            command.append(bpf)
        self._proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
        assert self._proc.stdout is not None
        self._fd = self._proc.stdout.fileno()
        self._pipe_bytes = _grow_pipe(self._fd)
        self._stderr_thread = threading.Thread(target=self._read_stderr, name=f"tcpdump-stderr-{interface}",
                                               daemon=True)
        self._stderr_thread.start()
        try:
            header = parse_global_header(_read_exact(self._fd, GLOBAL_HEADER_LEN))
            if not header.nanosecond or header.byte_order != "<":
                raise CaptureFormatError(f"tcpdump wrote {'ns' if header.nanosecond else 'us'} {header.byte_order} "
                                         "pcap; the segments need nanosecond little-endian records")
        except CaptureFormatError as exc:
            self._proc.kill()
            self._proc.wait()
            self._stderr_thread.join(timeout=5)
            raise CaptureFormatError(f"tcpdump on {interface} did not start: {self.error_tail() or exc}") from exc
        self.link_type = header.link_type
        self._queue: queue.Queue[RecordChunk | None] = queue.Queue(maxsize=queue_chunks)
        self._pump_thread = threading.Thread(target=self._pump, name=f"tcpdump-{interface}", daemon=True)
        self._pump_thread.start()
        self._stats_thread = threading.Thread(target=self._poll_stats, name=f"tcpdump-stats-{interface}",
                                              daemon=True)
        self._stats_thread.start()

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def kernel_drops(self) -> int:
        """The latest running total of kernel drops tcpdump reported."""
        return self._drop_readings[-1][1] if self._drop_readings else 0

    def kernel_drops_until(self, ts_ns: int) -> int:
        """The running total as observed at or before `ts_ns` (wall clock)."""
        return drops_at(self._drop_readings, ts_ns)

    def engine_silence_s(self) -> float | None:
        """Seconds since tcpdump last answered a stats request; None before the first answer. A stopped or wedged
        tcpdump stops answering even while the pipe is merely idle, which idle ticks alone would not show."""
        return None if self._last_answer is None else time.monotonic() - self._last_answer

    @property
    def exited_unexpectedly(self) -> bool:
        return self._proc.poll() is not None and not self._stop_requested

    def error_tail(self) -> str:
        return " | ".join(self._stderr_tail)

    def _pump(self) -> None:
        small = self._pipe_bytes // 4
        try:
            while True:
                data = os.read(self._fd, CHUNK_BYTES)
                if not data:
                    break
                if not self._put(RecordChunk(data, self.stream)):
                    return
                if len(data) < small:
                    time.sleep(READ_PAUSE_S)  # let the pipe fill: one read per many packets, not one per packet
        except OSError as exc:
            self._stderr_tail.append(f"reading tcpdump's pipe failed: {exc}")
        self._put(None)

    def _put(self, item: RecordChunk | None) -> bool:
        """Blocks while the queue is full (back-pressure into the pipe); False once the source is being closed."""
        while not self._closing.is_set():
            try:
                self._queue.put(item, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    def _read_stderr(self) -> None:
        assert self._proc.stderr is not None
        for raw in self._proc.stderr:
            line = raw.decode(errors="replace").strip()
            match = _DROPPED.search(line)
            if match:
                self._drop_readings.append((self._clock_ns(), int(match.group(1))))
                self._last_answer = time.monotonic()
            elif line and not _STATS_LINE.search(line):
                self._stderr_tail.append(line)

    def _poll_stats(self) -> None:
        while self._proc.poll() is None and not self._stop_requested:
            time.sleep(self._stats_interval_s)
            if self._proc.poll() is None and not self._stop_requested and _catches_sigusr1(self._proc.pid):
                try:
                    self._proc.send_signal(signal.SIGUSR1)
                except ProcessLookupError:
                    return

    def packets(self) -> Iterator[RecordChunk | None]:
        return drain(self._queue, self._tick_s)

    def stop(self) -> None:
        """Asks tcpdump to finish (it flushes and prints its final counts); does not wait."""
        self._stop_requested = True
        if self._proc.poll() is None:
            self._proc.terminate()

    def close(self, timeout_s: float = 10.0) -> None:
        """Waits for tcpdump and the reader threads; call after `packets()` ended."""
        self.stop()
        try:
            self._proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._stderr_thread.join(timeout=timeout_s)  # its final counts are in once stderr hits EOF
        self._closing.set()  # a consumer that stopped reading must not leave the pump blocked on a full queue
        self._pump_thread.join(timeout=timeout_s)
        self._stats_thread.join(timeout=timeout_s)


def _grow_pipe(fd: int) -> int:
    """Asks for a PIPE_BYTES pipe (fewer, larger reads; more slack while the agent compresses); returns the capacity."""
    try:
        return fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    except OSError:  # above the unprivileged limit: keep the default
        return fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)


def _read_exact(fd: int, size: int) -> bytes:
    chunks, remaining = [], size
    while remaining:
        chunk = os.read(fd, remaining)
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _catches_sigusr1(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) >> (signal.SIGUSR1 - 1) & 1)
    except OSError:
        return False
    return False


class MergedSource:
    """Several tcpdump engines (one per interface; tcpdump takes a single -i) feeding one segmenter. The merge is in
    arrival order, which libpcap's block delivery keeps close to time order; the segmenter tolerates the rest. All
    engines must share one link type, since a pcap file has one: use `any` for a mix of interface kinds."""

    def __init__(self, sources: Sequence[TcpdumpSource], tick_s: float = 0.5) -> None:
        if not sources:
            raise ValueError("a merged source needs at least one engine")
        kinds = {source.link_type for source in sources}
        if len(kinds) > 1:
            for source in sources:
                source.close(timeout_s=2.0)
            names = ", ".join(f"{s.interface}={s.link_type}" for s in sources)
            raise CaptureEngineError(f"interfaces have different link types ({names}); capture on 'any' instead")
        self.sources = list(sources)
        self.link_type = sources[0].link_type
        self.snaplen = sources[0].snaplen
        self.capture_filter = sources[0].capture_filter
        self._tick_s = tick_s
        self._queue: queue.Queue[RecordChunk | None] = queue.Queue(maxsize=64)
        self._threads = [threading.Thread(target=self._forward, args=(source,), name=f"merge-{source.interface}",
                                          daemon=True) for source in self.sources]
        for thread in self._threads:
            thread.start()

    @property
    def kernel_drops(self) -> int:
        return sum(source.kernel_drops for source in self.sources)

    @property
    def agent_drops(self) -> int:
        return sum(source.agent_drops for source in self.sources)

    def kernel_drops_until(self, ts_ns: int) -> int:
        return sum(source.kernel_drops_until(ts_ns) for source in self.sources)

    def engine_silence_s(self) -> float | None:
        silences = [source.engine_silence_s() for source in self.sources]
        return None if any(s is None for s in silences) else max(s for s in silences if s is not None)

    def error_tail(self) -> str:
        return " | ".join(f"{s.interface}: {s.error_tail()}" for s in self.sources if s.error_tail())

    def _forward(self, source: TcpdumpSource) -> None:
        for item in source.packets():
            if item is not None:
                self._queue.put(item)  # blocking: back-pressure lands in the engine's own queue, where it is counted
        self._queue.put(None)

    def packets(self) -> Iterator[RecordChunk | None]:
        ended = 0
        while ended < len(self.sources):
            try:
                item = self._queue.get(timeout=self._tick_s)
            except queue.Empty:
                yield None
                continue
            if item is None:
                ended += 1
                if any(s.exited_unexpectedly for s in self.sources):
                    self.stop()  # one engine died: stop the rest so the agent reports it and restarts whole
                continue
            yield item

    def stop(self) -> None:
        for source in self.sources:
            source.stop()

    def close(self, timeout_s: float = 10.0) -> None:
        for source in self.sources:
            source.close(timeout_s)
        for thread in self._threads:
            thread.join(timeout=timeout_s)


def open_tcpdump(interfaces: Sequence[str], *, bpf: str = "", snaplen: int = 262_144, buffer_kib: int = 8192,
                 command_prefix: Sequence[str] = (), tcpdump: str | None = None) -> TcpdumpSource | MergedSource:
    """One engine for one interface (or `any`), a merge of engines for a list."""
    if not interfaces:
        raise ValueError("no interface to capture on")
    sources: list[TcpdumpSource] = []
    try:
        for name in interfaces:
            sources.append(TcpdumpSource(name, bpf=bpf, snaplen=snaplen, buffer_kib=buffer_kib,
                                         command_prefix=command_prefix, tcpdump=tcpdump))
    except BaseException:
        for source in sources:
            source.close(timeout_s=2.0)
        raise
    return sources[0] if len(sources) == 1 else MergedSource(sources)


def open_engine(engine: str, interfaces: Sequence[str], *, bpf: str = "", snaplen: int = 262_144,
                buffer_kib: int = 8192, netns: str | None = None, command_prefix: Sequence[str] = ()
                ) -> TcpdumpSource | MergedSource | ScapySource:
    """The configured capture engine: `tcpdump` (libpcap, the default) or `scapy` (in-process, one named interface,
    the low-rate fallback). `netns` captures inside that network namespace (tcpdump through `ip netns exec`)."""
    if engine == "scapy":
        if len(interfaces) != 1:
            raise CaptureEngineError(f"the scapy engine captures one named interface, got {list(interfaces)}")
        from freezeframe_agent.scapy_engine import ScapySource  # scapy is imported only when chosen

        return ScapySource(interfaces[0], bpf=bpf, snaplen=snaplen, buffer_kib=buffer_kib, netns=netns)
    if engine != "tcpdump":
        raise CaptureEngineError(f"unknown capture engine {engine!r} (tcpdump | scapy)")
    if netns is not None and not command_prefix:
        command_prefix = ("ip", "netns", "exec", netns)
    return open_tcpdump(interfaces, bpf=bpf, snaplen=snaplen, buffer_kib=buffer_kib, command_prefix=command_prefix)
