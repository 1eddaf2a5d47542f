"""Capture engine (b), scapy in-process, on real kernel traffic in network namespaces: chosen by configuration, it
must record exactly what tcpdump, listening on the same interface at the same time, records of the same traffic, into
segments with the same guarantees as the default engine (gapless seq, counts, drops, hashes, S3 + bus)."""

from __future__ import annotations

import hashlib
import io
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import zstandard

from freezeframe.capture.pcapio import PcapReader
from freezeframe_agent.capture import CaptureEngineError, open_engine
from freezeframe_agent.main import run_capture
from tests.fixtures.buses import MemoryBus
from tests.fixtures.waiting import until

pytestmark = [pytest.mark.integration, pytest.mark.capture]
DATAGRAMS = 120
PORT = 39998


def test_scapy_engine_records_what_tcpdump_records_of_the_same_traffic(local: Any, veth_pair: Any,
                                                                        tmp_path: Path) -> None:
    config, s3, _ = local
    config = config.with_(segment_seconds=1.0, capture_engine="scapy")
    ns, dev = veth_pair.cap_ns, veth_pair.cap_dev
    reference = tmp_path / "tcpdump.pcap"
    tcpdump = subprocess.Popen(["ip", "netns", "exec", ns, "tcpdump", "-i", dev, "-U", "-n", "-w", str(reference),
                                "--time-stamp-precision", "nano", "udp"], stderr=subprocess.PIPE)
    sender = ("import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
              f"for i in range({DATAGRAMS}):\n    s.sendto(b'scapy-engine-%d' % i * (1 + i % 7), "
              f"('{veth_pair.cap_ip}', {PORT}))\n    time.sleep(0.01)\n")

    def send_later() -> None:
        time.sleep(2.0)  # both engines listen by then
        subprocess.run(["ip", "netns", "exec", veth_pair.peer_ns, "python3", "-c", sender], check=True, timeout=30)

    thread = threading.Thread(target=send_later)
    thread.start()
    try:
        records = run_capture(config, dev, duration_s=6.0, bpf="udp", netns=ns, s3=s3, bus=MemoryBus())
    finally:
        thread.join()
        tcpdump.send_signal(signal.SIGTERM)
        _, err = tcpdump.communicate(timeout=20)
    tcpdump_count = int(err.decode().split(" packets captured")[0].split()[-1])  # tcpdump's own count at exit

    frames: list[bytes] = []
    for record in records:
        body = s3.get_object(Bucket=config.raw_bucket, Key=record.key, VersionId=record.version_id)["Body"].read()
        assert hashlib.sha256(body).hexdigest() == record.sha256
        packets = list(PcapReader(io.BytesIO(zstandard.ZstdDecompressor().decompress(body))))
        assert record.packets == len(packets)
        assert all(record.start_ns <= p.ts_ns < record.end_ns for p in packets)
        assert record.kernel_drops == 0 and record.agent_drops == 0
        assert record.capture_filter == "udp"
        frames += [p.data for p in packets]
    with reference.open("rb") as handle:
        expected = [p.data for p in PcapReader(handle)]  # type: ignore[arg-type]
    assert tcpdump_count == len(expected) == DATAGRAMS
    assert frames == expected, "the same frames, byte for byte, in the same order"
    assert [r.seq for r in records] == list(range(len(records)))
    assert any(r.packets == 0 for r in records), "idle seconds still close segments on time"


def test_scapy_engine_reports_a_missing_interface_and_refuses_any(veth_pair: Any) -> None:
    with pytest.raises(CaptureEngineError, match="did not start"):
        open_engine("scapy", ["ffnosuchdev0"], netns=veth_pair.cap_ns)
    with pytest.raises(CaptureEngineError, match="one named interface"):
        open_engine("scapy", ["any"])


def test_scapy_engine_counts_kernel_drops_when_its_reader_is_stalled(veth_pair: Any) -> None:
    """A tiny socket buffer and a reader that does not read: the kernel's own drop counter must surface."""
    source = open_engine("scapy", [veth_pair.cap_dev], bpf="udp", netns=veth_pair.cap_ns, buffer_kib=1)
    assert source.kernel_drops == 0
    blaster = ("import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
               f"for i in range(3000):\n    s.sendto(bytes(1000), ('{veth_pair.cap_ip}', {PORT}))\n")
    stall = threading.Event()
    original = source._queue.put_nowait  # type: ignore[union-attr]

    def stalled_put(item: Any) -> None:
        stall.wait(10)
        original(item)

    source._queue.put_nowait = stalled_put  # type: ignore[union-attr]
    try:
        subprocess.run(["ip", "netns", "exec", veth_pair.peer_ns, "python3", "-c", blaster], check=True, timeout=30)
        stall.set()
        until(lambda: source.kernel_drops > 0, timeout_s=10)
    finally:
        stall.set()
        source.stop()
        for _ in source.packets():
            pass
        source.close()
