"""Capture engines. Each yields `Packet`s (or None as an idle tick, so the segmenter can close on time).

- ReplaySource: a pcap file played back as if captured live, honouring inter-packet gaps divided by a speed-up.
- TcpdumpSource: libpcap capture through tcpdump writing nanosecond pcap to a pipe.
"""

from __future__ import annotations

import logging
import queue
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from freezeframe.errors import CaptureFormatError
from freezeframe.pcapio import Packet, PcapReader

logger = logging.getLogger(__name__)
_DROPPED = re.compile(r"(\d+) packets? dropped by kernel")


class ReplaySource:
    """Plays a pcap file back in real time / speedup. With `retime`, timestamps are shifted by one constant so the
    first packet lands at the replay's start: the traffic looks live while every inter-packet gap (and so every RTT)
    is kept exactly."""

    def __init__(self, path: Path, speedup: float = 1.0, retime: bool = True,
                 clock_ns: Callable[[], int] = time.time_ns) -> None:
        if speedup <= 0:
            raise ValueError(f"speed-up must be positive, got {speedup}")
        self.path = path
        self.speedup = speedup
        self.retime = retime
        self._clock_ns = clock_ns
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

    def packets(self) -> Iterator[Packet | None]:
        offset_ns: int | None = None
        first_ts: int | None = None
        wall_start = time.monotonic()
        try:
            for packet in self._reader:
                if first_ts is None:
                    first_ts = packet.ts_ns
                    offset_ns = self._clock_ns() - first_ts if self.retime else 0
                due = wall_start + (packet.ts_ns - first_ts) / 1e9 / self.speedup
                pause = due - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                yield Packet(packet.ts_ns + (offset_ns or 0), packet.orig_len, packet.data)
        finally:
            self.close()
        if self._reader.truncated:
            logger.warning("replay file ended in a truncated record", extra={"file": str(self.path)})

    @property
    def agent_drops(self) -> int:
        return self._reader.truncated

    def close(self) -> None:
        self._handle.close()


class TcpdumpSource:
    """tcpdump -w - on one interface. A reader thread parses the pipe; `packets()` yields None every tick while the
    interface is idle so segments still close on time."""

    def __init__(self, interface: str, bpf: str = "", snaplen: int = 262_144, buffer_kib: int = 8192,
                 tick_s: float = 0.5, tcpdump: str | None = None, command_prefix: Sequence[str] = ()) -> None:
        binary = tcpdump or shutil.which("tcpdump")
        if binary is None:
            raise FileNotFoundError("tcpdump is not installed (apt-get install tcpdump)")
        self.capture_filter = bpf
        self.snaplen = snaplen
        self.kernel_drops = 0
        self.agent_drops = 0
        self._tick_s = tick_s
        # command_prefix runs tcpdump elsewhere, e.g. ("ip", "netns", "exec", "ns1") for a network namespace.
        command = [*command_prefix, binary, "-i", interface, "-w", "-", "-U", "-n", "-s", str(snaplen),
                   "-B", str(buffer_kib), "--time-stamp-precision", "nano", "-Z", "root"]
        if bpf:
            command.append(bpf)
        self._proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert self._proc.stdout is not None
        try:
            self._reader = PcapReader(self._proc.stdout)  # type: ignore[arg-type]  # a BufferedReader at runtime
        except CaptureFormatError as exc:
            self._proc.kill()
            err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
            raise CaptureFormatError(f"tcpdump on {interface} did not start: {err.strip()}") from exc
        self.link_type = self._reader.link_type
        self._queue: queue.Queue[Packet | None] = queue.Queue(maxsize=65_536)
        self._thread = threading.Thread(target=self._pump, name=f"tcpdump-{interface}", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        for packet in self._reader:
            try:
                self._queue.put(packet, timeout=1.0)
            except queue.Full:
                self.agent_drops += 1  # the segmenter cannot keep up; counted, never silent
        self._queue.put(None)

    def packets(self) -> Iterator[Packet | None]:
        while True:
            try:
                item = self._queue.get(timeout=self._tick_s)
            except queue.Empty:
                yield None
                continue
            if item is None:
                return
            yield item

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
        try:
            _, err = self._proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            _, err = self._proc.communicate()
        match = _DROPPED.search(err.decode(errors="replace") if err else "")
        if match:
            self.kernel_drops = int(match.group(1))
        self._thread.join(timeout=10)
