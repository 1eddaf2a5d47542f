"""Live capture with tcpdump (libpcap) on a veth in network namespaces this test creates, into real segments."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zstandard

from freezeframe_agent.main import run_capture

pytestmark = [pytest.mark.integration, pytest.mark.capture]
DATAGRAMS = 40
PORT = 39999


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def netns_pair() -> Iterator[tuple[str, str]]:
    if os.geteuid() != 0 or shutil.which("tcpdump") is None or shutil.which("ip") is None:
        pytest.skip("needs root, tcpdump and iproute2")
    tag = uuid.uuid4().hex[:6]
    cap, peer = f"ffcap-{tag}", f"ffpeer-{tag}"
    _ip("netns", "add", cap)
    _ip("netns", "add", peer)
    try:
        _ip("link", "add", f"ffa{tag}", "type", "veth", "peer", "name", f"ffb{tag}")
        _ip("link", "set", f"ffa{tag}", "netns", cap)
        _ip("link", "set", f"ffb{tag}", "netns", peer)
        _ip("-n", cap, "addr", "add", "192.0.2.1/30", "dev", f"ffa{tag}")  # TEST-NET-1, inside our namespaces only
        _ip("-n", peer, "addr", "add", "192.0.2.2/30", "dev", f"ffb{tag}")
        for ns, dev in ((cap, f"ffa{tag}"), (peer, f"ffb{tag}")):
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        yield cap, f"ffa{tag}"
    finally:
        _ip("netns", "del", cap)
        _ip("netns", "del", peer)


def tshark_udp_to_port(path: Path, port: int) -> int:
    out = subprocess.run(["tshark", "-r", str(path), "-Y", f"udp.dstport == {port}", "-T", "fields", "-e",
                          "frame.number"], check=True, capture_output=True, text=True).stdout
    return len(out.split())


def test_live_capture_cuts_segments_including_idle_ones(local: Any, netns_pair: tuple[str, str],
                                                        tmp_path: Path) -> None:
    config, s3, _ = local
    config = config.with_(segment_seconds=1.0)
    ns, dev = netns_pair
    peer = ns.replace("ffcap", "ffpeer")
    sender = ("import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
              f"for i in range({DATAGRAMS}):\n    s.sendto(b'freezeframe-%d' % i, ('192.0.2.1', {PORT}))\n"
              "    time.sleep(0.01)\n")

    def send_later() -> None:
        time.sleep(1.5)  # tcpdump is listening by then
        subprocess.run(["ip", "netns", "exec", peer, "python3", "-c", sender], check=True, timeout=20)

    thread = threading.Thread(target=send_later)
    thread.start()
    records = run_capture(config, dev, duration_s=5.0, bpf="udp", command_prefix=("ip", "netns", "exec", ns),
                          s3=s3, bus=_ListBus())
    thread.join()
    assert len(records) >= 4, "five seconds at 1 s segments, idle ones included"
    assert any(r.packets == 0 for r in records), "an idle interface still closes its segments on time"
    captured = 0
    for record in records:
        body = s3.get_object(Bucket=config.raw_bucket, Key=record.key, VersionId=record.version_id)["Body"].read()
        plain = tmp_path / f"{record.seq}.pcap"
        plain.write_bytes(zstandard.ZstdDecompressor().decompress(body))
        captured += tshark_udp_to_port(plain, PORT)
        assert record.capture_filter == "udp"
    assert captured == DATAGRAMS
    assert [r.seq for r in records] == list(range(len(records)))


class _ListBus:
    def __init__(self) -> None:
        self.published: list[Any] = []

    def publish(self, topic: str, key: str, value: Any) -> None:
        self.published.append(value)

    def read(self, topic: str, timeout_s: float = 5.0) -> list[Any]:
        return []

    def close(self) -> None:
        return None
