"""Agent outage fixtures: a TCP forwarder that can take an endpoint down (or hold its requests) without touching the
endpoint, a UDP capture built to order (so every expected count comes from its construction), and the checks that
no segment was lost or stored twice."""

from __future__ import annotations

import contextlib
import functools
import random
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from freezeframe_local.kafka import create_topics

from freezeframe.adapters import s3 as s3io
from freezeframe.adapters.bus import KafkaBus
from freezeframe.capture.pcapio import LINKTYPE_ETHERNET, PcapWriter
from freezeframe.contracts.config import Settings
from tests.fixtures.waiting import until

S = 1_000_000_000
GAP_SCHEMA = "freezeframe.gap/v1"


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target. `down()` refuses new connections and resets open ones (an outage as
    the client sees it); `up()` listens on the same port again; `stall()` holds client bytes unforwarded (a request
    in flight that never completes) until `unstall()`."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.held_bytes = 0
        self._stalled = threading.Event()
        self._closed = threading.Event()
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(0.2)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            conns, self._conns = self._conns, set()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST, not FIN
                conn.close()

    def stall(self) -> None:
        self.held_bytes = 0
        self._stalled.set()

    def unstall(self) -> None:
        self._stalled.clear()

    def close(self) -> None:
        self._closed.set()
        self.unstall()
        self.down()

    def _accept(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns |= {client, upstream}
            for src, dst, outbound in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pump, args=(src, dst, outbound), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, outbound: bool) -> None:
        try:
            while data := src.recv(65536):
                if outbound and self._stalled.is_set():
                    self.held_bytes += len(data)
                    while self._stalled.is_set() and not self._closed.is_set():
                        time.sleep(0.01)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def proxy() -> Iterator[Callable[[str], TcpProxy]]:
    """`proxy("http://127.0.0.1:4566")` starts a forwarder to that endpoint; all are closed at the end."""
    made: list[TcpProxy] = []

    def make(url: str) -> TcpProxy:
        host, port = url.removeprefix("http://").split(":")
        forwarder = TcpProxy(host, int(port))
        forwarder.up()
        made.append(forwarder)
        return forwarder

    yield make
    for forwarder in made:
        forwarder.close()


@dataclass(frozen=True, slots=True)
class BuiltCapture:
    path: Path
    packets: int
    capture_bytes: int
    duration_s: float


def build_udp_capture(path: Path, seconds: float, rate_pps: int, payload: int = 200, seed: int = 1) -> BuiltCapture:
    """UDP datagrams 192.0.2.1 -> 192.0.2.2:9999 at a fixed rate, random payloads (so compression cannot hide
    sizes); the counts come from the construction."""
    rng = random.Random(seed)
    count = int(seconds * rate_pps)
    start = 1_700_000_000 * S
    total = 0
    with open(path, "wb") as handle:
        writer = PcapWriter(handle, LINKTYPE_ETHERNET, 262144)
        for index in range(count):
            body = struct.pack("!I", index) + rng.randbytes(payload - 4)
            udp = struct.pack("!HHHH", 40000, 9999, 8 + len(body), 0) + body
            ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), index & 0xFFFF, 0, 64, 17, 0,
                             bytes([192, 0, 2, 1]), bytes([192, 0, 2, 2])) + udp
            frame = b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01" + b"\x08\x00" + ip
            writer.write(start + index * S // rate_pps, frame)
            total += len(frame)
    return BuiltCapture(path, count, total, seconds)


@pytest.fixture
def udp_capture(tmp_path: Path) -> Callable[..., BuiltCapture]:
    return lambda seconds, rate_pps, **kw: build_udp_capture(tmp_path / "traffic.pcap", seconds, rate_pps, **kw)


def node_records(bootstrap: str, config: Settings, timeout_s: float = 3.0) -> list[dict[str, Any]]:
    """Every value on the segments topic published for this test's node, in offset order."""
    bus = KafkaBus(bootstrap)
    try:
        return [r.value for r in bus.read(config.segments_topic, timeout_s=timeout_s)
                if r.value.get("node") == config.node_name and r.value.get("cluster") == config.cluster]
    finally:
        bus.close()


def s3_versions(s3: Any, config: Settings) -> dict[str, list[str]]:
    """Key -> version ids of every raw object of this test's node."""
    out: dict[str, list[str]] = {}
    paginator = s3.get_paginator("list_object_versions")
    for page in paginator.paginate(Bucket=config.raw_bucket, Prefix=f"raw/{config.cluster}/"):
        for version in page.get("Versions", []):
            out.setdefault(version["Key"], []).append(version["VersionId"])
    return out


def check_delivery(records: list[dict[str, Any]], versions: dict[str, list[str]], next_seq: int
                   ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """0 lost, 0 duplicates: every seq below next_seq is on the bus exactly once, as a segment or inside one gap
    record; every segment's object is in S3 as exactly one version, the one the record names; S3 holds nothing
    else. Returns (segments, gaps)."""
    segments = [r for r in records if r.get("schema") != GAP_SCHEMA]
    gaps = [r for r in records if r.get("schema") == GAP_SCHEMA]
    seqs = Counter(r["seq"] for r in segments)
    for gap in gaps:
        seqs.update(range(gap["first_seq"], gap["last_seq"] + 1))
    assert [seq for seq, n in seqs.items() if n > 1] == [], "a seq was published twice"
    assert sorted(seqs) == list(range(next_seq)), "seqs are not gapless"
    assert {key: len(ids) for key, ids in versions.items() if len(ids) > 1} == {}, "a segment was stored twice"
    assert {r["key"]: [r["version_id"]] for r in segments} == versions
    return sorted(segments, key=lambda r: r["seq"]), gaps


@pytest.fixture
def helpers() -> Any:
    class Helpers:
        node_records = staticmethod(node_records)
        s3_versions = staticmethod(s3_versions)
        check_delivery = staticmethod(check_delivery)
        until = staticmethod(functools.partial(until, poll_s=0.2))  # S3 and Kafka are polled, not spun on

    return Helpers


class ProxiedS3(NamedTuple):
    """The agent's settings with S3 behind a proxy the test can cut, and a client that bypasses the proxy."""

    config: Settings
    endpoint: TcpProxy
    direct: Any


@pytest.fixture
def proxied_s3(local: Any, proxy: Callable[[str], TcpProxy]) -> Callable[..., ProxiedS3]:
    """`proxied_s3(**changes)`: the `local` settings (with `changes`, 1 s segments by default) with S3 behind a
    fresh proxy, a direct S3 client for checking, and the segments topic created."""
    def make(**changes: Any) -> ProxiedS3:
        config, _, _ = local
        endpoint = proxy(config.s3_endpoint)
        proxied = config.with_(**{"segment_seconds": 1.0, **changes, "s3_endpoint": endpoint.url})
        create_topics(proxied.kafka_bootstrap, [proxied.segments_topic])
        return ProxiedS3(proxied, endpoint, s3io.client(config))

    return make
