"""Capture engine (b): scapy in-process, the low-rate fallback for nodes where tcpdump cannot run.

scapy opens the capture: an AF_PACKET socket on one interface, the BPF filter compiled and attached, promiscuous
mode, auxiliary data and nanosecond timestamps switched on. A reader thread then takes each frame from that socket
with recvmsg: the kernel's own nanosecond timestamp (SO_TIMESTAMPNS) and original length (PACKET_AUXDATA tp_len),
with a stripped VLAN tag put back as libpcap does. Nothing is dissected: the frame bytes go to the segmenter as they
are. Every packet costs Python work, so this engine is for low rates; tcpdump is the default.

Kernel drops are the socket's PACKET_STATISTICS (the kernel resets them on every read, so they are summed into a
running total). A full queue towards the segmenter drops the packet and counts it as an agent drop.
"""

from __future__ import annotations

import ctypes
import logging
import os
import queue
import select
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from freezeframe.capture.pcapio import LINKTYPE_ETHERNET, Packet
from freezeframe_agent.capture import AgentDrops, CaptureEngineError, drain, drops_at

logger = logging.getLogger(__name__)
SOL_PACKET = 263
PACKET_STATISTICS = 6
PACKET_AUXDATA = 8
SO_TIMESTAMPNS = 35
SO_RCVBUFFORCE = 33
CLONE_NEWNET = 0x40000000
ARPHRD_ETHER, ARPHRD_LOOPBACK = 1, 772  # both carry Ethernet headers (tcpdump's EN10MB)
ETH_P_8021Q = 0x8100
TP_STATUS_VLAN_VALID, TP_STATUS_VLAN_TPID_VALID = 1 << 4, 1 << 6
_AUXDATA = struct.Struct("=IIIHHHH")  # struct tpacket_auxdata: status, len, snaplen, mac, net, vlan_tci, vlan_tpid
_TIMESPEC = struct.Struct("=qq")
_STATS = struct.Struct("=II")  # struct tpacket_stats: tp_packets, tp_drops
_CMSG_SPACE = socket.CMSG_SPACE(_AUXDATA.size) + socket.CMSG_SPACE(_TIMESPEC.size)


class ScapySource:
    """One named interface (scapy binds a socket to a single interface; use tcpdump for `any`). `netns` names a
    network namespace (/var/run/netns/<name>) to capture in: only the reader thread enters it."""

    def __init__(self, interface: str, bpf: str = "", snaplen: int = 262_144, buffer_kib: int = 8192,
                 tick_s: float = 0.5, netns: str | None = None, stats_interval_s: float = 1.0,
                 queue_packets: int = 65_536, clock_ns: Callable[[], int] = time.time_ns,
                 start_timeout_s: float = 30.0) -> None:
        if not interface or interface == "any":
            raise CaptureEngineError("the scapy engine captures one named interface; use tcpdump for 'any'")
        self.interface = interface
        self.capture_filter = bpf
        self.snaplen = snaplen
        self.link_type = LINKTYPE_ETHERNET
        self.agent_drops = 0
        self._buffer_bytes = buffer_kib * 1024
        self._tick_s = tick_s
        self._netns = netns
        self._stats_interval_s = stats_interval_s
        self._clock_ns = clock_ns
        self._kernel_total = 0
        self._drop_readings: deque[tuple[int, int]] = deque(maxlen=100_000)
        self._last_loop: float | None = None
        self._error: str | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._queue: queue.Queue[Packet | AgentDrops | None] = queue.Queue(maxsize=queue_packets)
        self._thread = threading.Thread(target=self._run, name=f"scapy-{interface}", daemon=True)
        self._thread.start()
        if not self._ready.wait(start_timeout_s):
            self.close()
            raise CaptureEngineError(f"scapy capture on {interface} did not start within {start_timeout_s:g} s")
        if self._error is not None:
            self._thread.join(timeout=5)
            raise CaptureEngineError(f"scapy capture on {interface} did not start: {self._error}")

    @property
    def kernel_drops(self) -> int:
        return self._kernel_total

    def kernel_drops_until(self, ts_ns: int) -> int:
        return drops_at(self._drop_readings, ts_ns)

    def engine_silence_s(self) -> float | None:
        """Seconds since the reader loop last came round (it does at least every tick, packets or not)."""
        return None if self._last_loop is None else time.monotonic() - self._last_loop

    @property
    def exited_unexpectedly(self) -> bool:
        return not self._thread.is_alive() and not self._stop.is_set()

    def error_tail(self) -> str:
        return self._error or ""

    def _open(self) -> Any:
        if self._netns is not None:
            _enter_netns(self._netns)
        from scapy.arch.linux import L2ListenSocket  # scapy is slow to import: only when this engine is chosen

        sock = L2ListenSocket(iface=self.interface, filter=self.capture_filter or None, promisc=True)
        hatype = sock.ins.getsockname()[3]
        if hatype not in (ARPHRD_ETHER, ARPHRD_LOOPBACK):
            sock.close()
            raise CaptureEngineError(f"{self.interface} has hardware type {hatype}; the scapy engine records "
                                     "Ethernet-framed interfaces only")
        for option in (SO_RCVBUFFORCE, socket.SO_RCVBUF):
            try:
                sock.ins.setsockopt(socket.SOL_SOCKET, option, self._buffer_bytes)
                break
            except OSError:
                continue
        sock.ins.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
        sock.ins.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self._read_stats(sock.ins)  # counts from before the filter was attached are not this capture's
        self._kernel_total = 0
        return sock

    def _run(self) -> None:
        try:
            sock = self._open()
        except Exception as exc:  # noqa: BLE001 - reported to the constructor, which raises it
            self._error = f"{type(exc).__name__}: {exc}"
            self._ready.set()
            return
        self._ready.set()
        ins = sock.ins
        put = self._queue.put_nowait
        pending, pending_ts = 0, 0
        next_stats = time.monotonic() + self._stats_interval_s
        try:
            while not self._stop.is_set():
                self._last_loop = now = time.monotonic()
                if now >= next_stats:
                    self._read_stats(ins)
                    next_stats = now + self._stats_interval_s
                readable, _, _ = select.select([ins], [], [], self._tick_s)
                if not readable:
                    continue
                packet = _receive(ins, self.snaplen)
                if pending:
                    try:
                        put(AgentDrops(pending, pending_ts))  # before the next packet, so attribution keeps order
                        pending = 0
                    except queue.Full:
                        pass
                if not pending:
                    try:
                        put(packet)
                        continue
                    except queue.Full:
                        pending_ts = packet.ts_ns
                pending += 1
                self.agent_drops += 1  # the segmenter cannot keep up; counted, never silent
        except OSError as exc:
            self._error = f"reading {self.interface} failed: {exc}"
            logger.error("scapy capture failed", extra={"interface": self.interface, "error": self._error})
        finally:
            try:
                self._read_stats(ins)
            except OSError:
                pass
            sock.close()
            if pending:
                self._queue.put(AgentDrops(pending, pending_ts))
            self._queue.put(None)

    def _read_stats(self, ins: socket.socket) -> None:
        _packets, drops = _STATS.unpack(ins.getsockopt(SOL_PACKET, PACKET_STATISTICS, _STATS.size))
        self._kernel_total += drops  # the kernel resets its counters on every read
        self._drop_readings.append((self._clock_ns(), self._kernel_total))

    def packets(self) -> Iterator[Packet | AgentDrops | None]:
        return drain(self._queue, self._tick_s)

    def stop(self) -> None:
        self._stop.set()

    def close(self, timeout_s: float = 10.0) -> None:
        self.stop()
        self._thread.join(timeout=timeout_s)


def _receive(ins: socket.socket, snaplen: int) -> Packet:
    data, ancillary, _flags, _address = ins.recvmsg(snaplen, _CMSG_SPACE)
    ts_ns, orig_len = 0, len(data)
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(payload) >= _TIMESPEC.size:
            sec, nsec = _TIMESPEC.unpack_from(payload)
            ts_ns = sec * 1_000_000_000 + nsec
        elif level == SOL_PACKET and kind == PACKET_AUXDATA and len(payload) >= _AUXDATA.size:
            status, orig_len, _snap, _mac, _net, vlan_tci, vlan_tpid = _AUXDATA.unpack_from(payload)
            if vlan_tci or status & TP_STATUS_VLAN_VALID:  # the kernel stripped the tag: put it back, as libpcap does
                tpid = vlan_tpid if status & TP_STATUS_VLAN_TPID_VALID else ETH_P_8021Q
                data = (data[:12] + struct.pack("!HH", tpid, vlan_tci) + data[12:])[:snaplen]
                orig_len += 4
    return Packet(ts_ns or time.time_ns(), orig_len, data)


def _enter_netns(name: str) -> None:
    """Moves the calling thread (only it) into the named network namespace, as `ip netns exec` would."""
    path = Path(name) if "/" in name else Path("/var/run/netns") / name
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns({path}): {os.strerror(errno)}")
    finally:
        os.close(fd)
