"""The node-state recorder: every segment period, the node's network counters and (when they change) its routes,
MTUs and packet-filter ruleset, as a freezeframe.freeze.node_state document uploaded beside the segments.

Sources (all per network namespace, read from the recorder's own thread, which can be moved into a namespace):
- /proc/thread-self/net/snmp and netstat: Tcp, TcpExt (ListenOverflows, ListenDrops, SyncookiesSent, ...), Ip, Udp.
- /proc/sys/net/netfilter/nf_conntrack_count|max and /proc/thread-self/net/stat/nf_conntrack (per-CPU hex columns,
  summed: drop, insert_failed, early_drop, ...), when the conntrack module is loaded.
- /proc/thread-self/net/dev (per-interface bytes, packets, errors, drops) and each interface's MTU (SIOCGIFMTU on a
  socket opened in the namespace; sysfs would show the namespace that mounted it, not this one).
- /proc/thread-self/net/sockstat and sockstat6.
- `ip -o route show table all` (IPv4 and IPv6) and `nft list ruleset`, else `iptables-save` / `ip6tables-save`.

Documents are written to `<spool>/node-state/` (temp file + rename) and uploaded create-only with an S3-verified
SHA-256 by `s3.put_segment`, the segments' own upload call; a failed upload stays in the spool and is retried with
backoff, and the spool keeps at most MAX_SPOOLED documents (the oldest go first, with a warning).
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import json
import logging
import os
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from freezeframe.adapters import s3 as s3io
from freezeframe.adapters.s3 import ObjectStore
from freezeframe.contracts.config import Settings
from freezeframe.contracts.keys import node_state_key
from freezeframe.freeze.node_state import ConfigState, NodeStateDocument
from freezeframe_agent.uploader import Backoff

logger = logging.getLogger(__name__)

SPOOL_SUBDIR = "node-state"
MAX_SPOOLED = 10_000
COMMAND_TIMEOUT_S = 10.0
SIOCGIFMTU = 0x8921
CLONE_NEWNET = 0x40000000
# The kernel counters a node-state document keeps (group.name as in /proc/net/snmp and netstat). All of TcpExt
# would be ~120 numbers per period; these are the ones the runbooks read.
KEPT_COUNTERS = frozenset({
    "Tcp.ActiveOpens", "Tcp.PassiveOpens", "Tcp.AttemptFails", "Tcp.EstabResets", "Tcp.CurrEstab", "Tcp.InSegs",
    "Tcp.OutSegs", "Tcp.RetransSegs", "Tcp.InErrs", "Tcp.OutRsts", "Tcp.InCsumErrors",
    "TcpExt.ListenOverflows", "TcpExt.ListenDrops", "TcpExt.SyncookiesSent", "TcpExt.SyncookiesRecv",
    "TcpExt.SyncookiesFailed", "TcpExt.TCPBacklogDrop", "TcpExt.TCPReqQFullDrop", "TcpExt.TCPReqQFullDoCookies",
    "TcpExt.TCPTimeouts", "TcpExt.TCPSynRetrans", "TcpExt.TCPAbortOnData", "TcpExt.TCPAbortOnClose",
    "TcpExt.TCPAbortOnMemory", "TcpExt.TCPAbortOnTimeout", "TcpExt.TCPAbortOnLinger", "TcpExt.TCPAbortFailed",
    "TcpExt.TCPLostRetransmit", "TcpExt.TCPFastRetrans", "TcpExt.TCPSlowStartRetrans", "TcpExt.TCPRcvQDrop",
    "TcpExt.TCPZeroWindowDrop", "TcpExt.TCPMemoryPressures", "TcpExt.PAWSEstab", "TcpExt.TW", "TcpExt.TWRecycled",
    "Ip.InReceives", "Ip.InDiscards", "Ip.InHdrErrors", "Ip.InAddrErrors", "Ip.OutDiscards", "Ip.OutNoRoutes",
    "Ip.ReasmFails", "Ip.FragFails", "Ip.FragCreates",
    "Icmp.InDestUnreachs", "Icmp.OutDestUnreachs", "Icmp.InTimeExcds",
    "Udp.InDatagrams", "Udp.NoPorts", "Udp.InErrors", "Udp.RcvbufErrors", "Udp.SndbufErrors",
})
DEV_FIELDS = ("rx_bytes", "rx_packets", "rx_errors", "rx_dropped", "rx_fifo", "rx_frame", "rx_compressed",
              "rx_multicast", "tx_bytes", "tx_packets", "tx_errors", "tx_dropped", "tx_fifo", "tx_colls",
              "tx_carrier", "tx_compressed")


# -- parsers (pure: file text in, numbers out) --------------------------------------------------------------------


def parse_snmp(text: str) -> dict[str, int]:
    """/proc/net/snmp and /proc/net/netstat: pairs of lines, a header line of names then a line of values, both
    starting with "<Group>:". Keeps KEPT_COUNTERS."""
    out: dict[str, int] = {}
    lines = [line.split() for line in text.splitlines() if line.strip()]
    for header, values in zip(lines[::2], lines[1::2], strict=False):
        if not header or header[0] != values[0]:
            continue
        group = header[0].rstrip(":")
        for name, value in zip(header[1:], values[1:], strict=False):
            key = f"{group}.{name}"
            if key in KEPT_COUNTERS and value.lstrip("-").isdigit():
                out[key] = int(value)
    return out


def parse_net_dev(text: str) -> dict[str, dict[str, int]]:
    """/proc/net/dev: two header lines, then "<iface>: <16 numbers>"."""
    out: dict[str, dict[str, int]] = {}
    for line in text.splitlines()[2:]:
        name, _, rest = line.partition(":")
        numbers = rest.split()
        if not name.strip() or len(numbers) < len(DEV_FIELDS):
            continue
        out[name.strip()] = {field_: int(value) for field_, value in zip(DEV_FIELDS, numbers, strict=False)}
    return out


def parse_sockstat(text: str) -> dict[str, int]:
    """/proc/net/sockstat(6): "TCP: inuse 27 orphan 0 tw 73 alloc 39 mem 0" -> TCP.inuse, TCP.orphan, ..."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        proto, _, rest = line.partition(":")
        words = rest.split()
        for name, value in zip(words[::2], words[1::2], strict=False):
            if value.isdigit():
                out[f"{proto.strip()}.{name}"] = int(value)
    return out


def parse_conntrack_stat(text: str) -> dict[str, int]:
    """/proc/net/stat/nf_conntrack: a header of names, then one line of hex numbers per CPU; summed over CPUs
    (`entries` is the same global count on every line, so it is taken once)."""
    lines = [line.split() for line in text.splitlines() if line.strip()]
    if not lines:
        return {}
    header, out = lines[0], dict[str, int]()
    for row in lines[1:]:
        for name, value in zip(header, row, strict=False):
            try:
                number = int(value, 16)
            except ValueError:
                continue
            out[name] = number if name == "entries" else out.get(name, 0) + number
    return {name: value for name, value in out.items() if name != "entries"}


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# -- the collector (reads one namespace's state) ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What one read of the node found."""

    counters: dict[str, int]
    conntrack: dict[str, int]
    interfaces: dict[str, dict[str, int]]
    sockets: dict[str, int]
    config: dict[str, tuple[str, str | None]]  # kind -> (text, error)
    errors: tuple[str, ...]


@dataclass(slots=True)
class Collector:
    """Reads the namespace of the calling thread. `net_dir` and `netfilter_dir` point elsewhere in tests (recorded
    /proc files); `run` runs a command and returns its stdout (a test stand-in for `ip` and `nft`)."""

    net_dir: Path = Path("/proc/thread-self/net")
    netfilter_dir: Path = Path("/proc/sys/net/netfilter")
    run: Callable[[list[str]], str] | None = None
    mtu_of: Callable[[str], int | None] | None = None

    def snapshot(self) -> Snapshot:
        errors: list[str] = []
        counters: dict[str, int] = {}
        for name in ("snmp", "netstat"):
            counters.update(parse_snmp(self._read(self.net_dir / name, errors)))
        interfaces = parse_net_dev(self._read(self.net_dir / "dev", errors))
        mtu_of = self.mtu_of or interface_mtu
        for name, values in interfaces.items():
            mtu = mtu_of(name)
            if mtu is not None:
                values["mtu"] = mtu
        sockets = parse_sockstat(self._read(self.net_dir / "sockstat", errors))
        sockets.update(parse_sockstat(self._read(self.net_dir / "sockstat6", errors, optional=True)))  # TCP6.inuse
        conntrack = self._conntrack(errors)
        config = {"routes": self._routes(), "mtus": (mtus_text(interfaces), None), "ruleset": self._ruleset()}
        return Snapshot(counters, conntrack, interfaces, sockets, config, tuple(errors))

    def _read(self, path: Path, errors: list[str], optional: bool = False) -> str:
        try:
            return path.read_text(encoding="ascii", errors="replace")
        except OSError as exc:
            if not optional:
                errors.append(f"{path}: {exc.strerror or exc}")
            return ""

    def _conntrack(self, errors: list[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        for name in ("count", "max"):
            path = self.netfilter_dir / f"nf_conntrack_{name}"
            try:
                out[name] = int(path.read_text().strip())
            except FileNotFoundError:
                return {}  # the conntrack module is not loaded (in this namespace): nothing to track
            except (OSError, ValueError) as exc:
                errors.append(f"{path}: {exc}")
        stat = self.net_dir / "stat" / "nf_conntrack"
        out.update(parse_conntrack_stat(self._read(stat, errors, optional=True)))
        return out

    def _command(self, argv: list[str]) -> str:
        if self.run is not None:
            return self.run(argv)
        if shutil.which(argv[0]) is None:
            raise FileNotFoundError(f"{argv[0]} not found")
        done = subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False)  # noqa: S603
        if done.returncode != 0:
            raise OSError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()[:200]}")
        return done.stdout

    def _routes(self) -> tuple[str, str | None]:
        try:
            return (self._command(["ip", "-o", "route", "show", "table", "all"])
                    + self._command(["ip", "-o", "-6", "route", "show", "table", "all"]), None)
        except (OSError, subprocess.SubprocessError) as exc:
            text = "".join(self._read(self.net_dir / name, [], optional=True) for name in ("route", "ipv6_route"))
            return text, f"ip route: {exc}; kept /proc/net/route and ipv6_route"

    def _ruleset(self) -> tuple[str, str | None]:
        try:
            return self._command(["nft", "list", "ruleset"]), None
        except (OSError, subprocess.SubprocessError) as nft_error:
            try:
                return (self._command(["iptables-save"]) + self._command(["ip6tables-save"]), None)
            except (OSError, subprocess.SubprocessError) as exc:
                return "", f"nft: {nft_error}; iptables-save: {exc}"


def mtus_text(interfaces: Mapping[str, Mapping[str, int]]) -> str:
    return "".join(f"{name} {values['mtu']}\n" for name, values in sorted(interfaces.items()) if "mtu" in values)


def interface_mtu(name: str) -> int | None:
    """SIOCGIFMTU on a socket of the calling thread's namespace."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            reply = fcntl.ioctl(sock.fileno(), SIOCGIFMTU, struct.pack("16si", name.encode()[:15], 0))
    except OSError:
        return None
    return int(struct.unpack("16si", reply)[1])


def enter_netns(name: str) -> None:
    """Moves the calling thread (only) into the named network namespace (/run/netns/<name>, as `ip netns` makes)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into network namespace {name}: {os.strerror(err)}")
    finally:
        os.close(fd)


# -- the recorder (document per period, spool, upload) ------------------------------------------------------------


@dataclass(slots=True)
class NodeStateRecorder:
    """Records one document per `period_s` and uploads it; `run(stop)` blocks until `stop` is set, then records a
    last document and uploads what the spool holds (bounded by `drain_s`)."""

    settings: Settings
    s3: ObjectStore
    collector: Collector = field(default_factory=Collector)
    netns: str | None = None
    period_s: float | None = None  # default: the settings' segment period
    drain_s: float = 10.0
    clock_ns: Callable[[], int] = time.time_ns
    uploaded: list[str] = field(default_factory=list)
    failures_total: int = 0
    _seq: int = 0
    _last_ns: int | None = None
    _last_text: dict[str, str] = field(default_factory=dict)

    @property
    def spool_dir(self) -> Path:
        return self.settings.spool_dir / SPOOL_SUBDIR

    def run(self, stop: threading.Event) -> None:
        if self.netns is not None:
            enter_netns(self.netns)
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        period = self.period_s or self.settings.segment_seconds
        backoff = Backoff()
        self.record()  # the baseline: the first period's deltas subtract it
        while not stop.wait(max(0.05, period - (time.time_ns() - (self._last_ns or 0)) / 1e9)):
            self.record()
            if not self.upload_spooled():
                stop.wait(backoff.next_delay())
            else:
                backoff.reset()
        self.record()
        deadline = time.monotonic() + self.drain_s
        while not self.upload_spooled() and time.monotonic() < deadline:
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))

    def record(self) -> NodeStateDocument:
        """Reads the node now and spools the document of the period since the last read."""
        snapshot = self.collector.snapshot()
        now = self.clock_ns()
        start = self._last_ns if self._last_ns is not None else now - int(
            (self.period_s or self.settings.segment_seconds) * 1e9)
        config = {}
        for kind, (text, error) in snapshot.config.items():
            changed = self._last_text.get(kind) != text
            config[kind] = ConfigState(digest(text), text if changed else None, error)
            self._last_text[kind] = text
        document = NodeStateDocument(cluster=self.settings.cluster, node=self.settings.node_name, seq=self._seq,
                                     start_ns=start, end_ns=now, observed_ns=now, counters=snapshot.counters,
                                     conntrack=snapshot.conntrack, interfaces=snapshot.interfaces,
                                     sockets=snapshot.sockets, config=config, errors=snapshot.errors)
        self._seq += 1
        self._last_ns = now
        self._spool(document)
        return document

    def _spool(self, document: NodeStateDocument) -> None:
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        name = f"{document.start_ns:020d}-{document.end_ns:020d}.json"
        tmp = self.spool_dir / f".{name}.tmp"
        tmp.write_bytes(document.encode())
        os.replace(tmp, self.spool_dir / name)
        spooled = sorted(self.spool_dir.glob("*.json"))
        for old in spooled[:max(0, len(spooled) - MAX_SPOOLED)]:
            logger.warning("node-state spool full; dropping the oldest document", extra={"document": old.name})
            old.unlink(missing_ok=True)

    def upload_spooled(self) -> bool:
        """Uploads every spooled document in time order; False at the first failure (it stays spooled)."""
        for path in sorted(self.spool_dir.glob("*.json")):
            body = path.read_bytes()
            try:
                raw = json.loads(body)
                key = node_state_key(raw["cluster"], raw["node"], int(raw["start_ns"]), int(raw["end_ns"]))
                sha = hashlib.sha256(body).hexdigest()
                s3io.put_segment(self.s3, self.settings.raw_bucket, key, body, sha,
                                 {"sha256": sha, "node": str(raw["node"]), "schema": str(raw["schema"])})
            except FileExistsError:
                logger.error("node-state key holds other bytes", extra={"document": path.name})
            except Exception as exc:  # noqa: BLE001 - an outage of any kind: keep it spooled and retry
                self.failures_total += 1
                logger.warning("node-state upload failed; retrying", extra={"error": type(exc).__name__})
                return False
            else:
                self.uploaded.append(key)
            path.unlink(missing_ok=True)
        return True


def start_recorder(settings: Settings, s3: ObjectStore, stop: threading.Event, netns: str | None = None,
                   **options: Any) -> tuple[threading.Thread, NodeStateRecorder]:
    recorder = NodeStateRecorder(settings, s3, netns=netns, **options)
    thread = threading.Thread(target=recorder.run, args=(stop,), name="node-state", daemon=True)
    thread.start()
    return thread, recorder
