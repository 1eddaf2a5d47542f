"""Live capture with real tcpdump on a veth in network namespaces of the test's own: kernel drops land in the segments
they happened in and add up with the captured packets to what was sent; a tcpdump that is stopped makes /healthz
unhealthy within two segment periods, and one that dies ends the capture with an error after its segments are
uploaded."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import zstandard

from freezeframe_agent.capture import CaptureEngineError, TcpdumpSource
from freezeframe_agent.main import run, run_capture
from tests.fixtures.buses import MemoryBus

pytestmark = [pytest.mark.integration, pytest.mark.capture]
PORT = 39999
SENDER = """\
import socket, sys, time
count, pause = int(sys.argv[1]), float(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sent = 0
for i in range(count):
    try:
        s.sendto(b"freezeframe-%d" % i, ("192.0.2.2", 39999))  # the veth_pair fixture's peer
        sent += 1
    except OSError:
        pass
    if pause:
        time.sleep(pause)
print(sent)
"""


@pytest.fixture
def veth(veth_pair: Any) -> tuple[str, str]:
    """(namespace, device) of the sending side: the sender runs in the capture namespace and sends to the peer."""
    return veth_pair.cap_ns, veth_pair.cap_dev


def send(ns: str, count: int, pause_s: float) -> int:
    """Datagrams sent from the capture's own namespace (the egress tap sees each one synchronously, so none can be
    lost before capture); returns how many sendto calls succeeded."""
    out = subprocess.run(["ip", "netns", "exec", ns, "python3", "-c", SENDER, str(count), str(pause_s)], check=True,
                         capture_output=True, text=True, timeout=120).stdout
    return int(out)


def udp_to_port(records: list[Any], s3: Any, bucket: str, tmp_path: Path) -> int:
    total = 0
    for record in records:
        body = s3.get_object(Bucket=bucket, Key=record.key, VersionId=record.version_id)["Body"].read()
        plain = tmp_path / f"{record.seq}.pcap"
        plain.write_bytes(zstandard.ZstdDecompressor().decompress(body))
        out = subprocess.run(["tshark", "-r", str(plain), "-Y", f"udp.dstport == {PORT}", "-T", "fields", "-e",
                              "frame.number"], check=True, capture_output=True, text=True).stdout
        total += len(out.split())
    return total


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def healthz(port: int) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except OSError:
        return 0, {}


def test_kernel_drops_are_counted_in_the_segment_they_happened_in(local: Any, veth: tuple[str, str],
                                                                  tmp_path: Path) -> None:
    config, s3, _ = local
    config = config.with_(segment_seconds=1.0)
    ns, dev = veth
    # A small kernel buffer, and tcpdump frozen while a burst arrives: the ring overflows for sure.
    source = TcpdumpSource(dev, bpf=f"udp dst port {PORT}", buffer_kib=256, stats_interval_s=0.2,
                           command_prefix=("ip", "netns", "exec", ns))
    stop = threading.Event()
    result: dict[str, Any] = {}
    agent = threading.Thread(target=lambda: result.update(records=run(
        config, source, live=True, stop=stop, on_stop=source.stop, s3=s3, bus=MemoryBus())))
    agent.start()
    try:
        time.sleep(1.5)
        os.kill(source.pid, signal.SIGSTOP)
        try:
            sent = send(ns, 20_000, 0)
        finally:
            os.kill(source.pid, signal.SIGCONT)
        time.sleep(3.0)  # the drops are polled while capture goes on
        sent += send(ns, 50, 0.02)
        time.sleep(2.5)
    finally:
        stop.set()
        agent.join(60)
    records = result["records"]
    drops = [r.kernel_drops for r in records]
    assert sum(drops) == source.kernel_drops > 0, "every drop tcpdump reported is in exactly one segment"
    assert udp_to_port(records, s3, config.raw_bucket, tmp_path) + sum(drops) == sent
    burst = next(i for i, d in enumerate(drops) if d)
    assert records[-1].kernel_drops == 0 and burst < len(records) - 3, "the drops sit near the burst, not at exit"


def test_a_stopped_tcpdump_is_unhealthy_within_two_segment_periods(local: Any, veth: tuple[str, str]) -> None:
    config, s3, _ = local
    config = config.with_(segment_seconds=1.0)
    ns, dev = veth
    port = free_port()
    stop = threading.Event()
    agent = threading.Thread(target=run_capture, args=(config, dev, None, "udp"),
                             kwargs={"command_prefix": ("ip", "netns", "exec", ns), "s3": s3, "bus": MemoryBus(),
                                     "stop": stop, "http_port": port})
    agent.start()
    try:
        deadline = time.monotonic() + 30
        while healthz(port)[0] != 200:
            assert time.monotonic() < deadline, "the agent never became healthy"
            time.sleep(0.1)
        time.sleep(1.5)  # a few stats answers in
        pid = int(subprocess.run(["pgrep", "-f", f"tcpdump -i {dev} "], capture_output=True, text=True,
                                 check=True).stdout.split()[0])
        os.kill(pid, signal.SIGSTOP)
        stopped_at = time.monotonic()
        while (reply := healthz(port))[0] == 200:
            assert time.monotonic() - stopped_at < 10, "still healthy long after tcpdump stopped"
            time.sleep(0.05)
        detected = time.monotonic() - stopped_at
        assert reply[0] == 503 and "capture engine has not answered" in reply[1]["reasons"][0]
        assert detected <= 2 * config.segment_seconds + 0.5
        os.kill(pid, signal.SIGCONT)
        deadline = time.monotonic() + 10
        while healthz(port)[0] != 200:
            assert time.monotonic() < deadline, "did not recover after SIGCONT"
            time.sleep(0.1)
    finally:
        stop.set()
        agent.join(60)


def test_a_tcpdump_that_dies_ends_the_capture_with_an_error_after_uploading(local: Any,
                                                                            veth: tuple[str, str]) -> None:
    config, s3, _ = local
    config = config.with_(segment_seconds=1.0)
    ns, dev = veth
    bus = MemoryBus()
    outcome: dict[str, Any] = {}

    def capture() -> None:
        try:
            run_capture(config, dev, 60.0, "udp", command_prefix=("ip", "netns", "exec", ns), s3=s3, bus=bus)
        except CaptureEngineError as exc:
            outcome["error"] = exc

    agent = threading.Thread(target=capture)
    agent.start()
    time.sleep(3.0)
    pid = int(subprocess.run(["pgrep", "-f", f"tcpdump -i {dev} "], capture_output=True, text=True,
                             check=True).stdout.split()[0])
    os.kill(pid, signal.SIGKILL)
    agent.join(60)
    assert not agent.is_alive() and "capture engine exited" in str(outcome.get("error"))
    assert len(bus.values) >= 2, "the segments before the engine died are uploaded"
    assert [r["seq"] for r in bus.values] == list(range(len(bus.values)))
