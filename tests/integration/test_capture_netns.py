"""Live capture with tcpdump (libpcap) on a veth in network namespaces this test creates, into real segments."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import zstandard

from freezeframe_agent.main import run_capture
from tests.fixtures.buses import MemoryBus

pytestmark = [pytest.mark.integration, pytest.mark.capture]
DATAGRAMS = 40
PORT = 39999


def tshark_udp_to_port(path: Path, port: int) -> int:
    out = subprocess.run(["tshark", "-r", str(path), "-Y", f"udp.dstport == {port}", "-T", "fields", "-e",
                          "frame.number"], check=True, capture_output=True, text=True).stdout
    return len(out.split())


def test_live_capture_cuts_segments_including_idle_ones(local: Any, veth_pair: Any, tmp_path: Path) -> None:
    config, s3, _ = local
    config = config.with_(segment_seconds=1.0)
    ns, dev, peer = veth_pair.cap_ns, veth_pair.cap_dev, veth_pair.peer_ns
    sender = ("import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
              f"for i in range({DATAGRAMS}):\n    s.sendto(b'freezeframe-%d' % i, ('{veth_pair.cap_ip}', {PORT}))\n"
              "    time.sleep(0.01)\n")

    def send_later() -> None:
        time.sleep(1.5)  # tcpdump is listening by then
        subprocess.run(["ip", "netns", "exec", peer, "python3", "-c", sender], check=True, timeout=20)

    thread = threading.Thread(target=send_later)
    thread.start()
    records = run_capture(config, dev, duration_s=5.0, bpf="udp", command_prefix=("ip", "netns", "exec", ns),
                          s3=s3, bus=MemoryBus())
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


