"""The batched hot path (dissect.tcp.batch) against the reference per-packet path: identical tables and counters.

The reference (``ConnectionTracker.feed_runs``) is what the tshark comparisons in this package check frame by frame;
the batched path must give the same result on every capture, with batches cut anywhere (a conversation's state is
handed over between batches). The captures cover what makes the batched path fall back or hand over: handshakes
and teardowns, loss, reordering, retransmissions of every kind, zero windows and probes, window-full, keep-alives,
sequence numbers wrapping past 2^32, port reuse, IPv6, VLAN tags, IP options, UDP and damaged records.
"""

from __future__ import annotations

import io
import random
import shutil
import struct
import subprocess
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pytest

from freezeframe.capture.pcapio import LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL2, PcapWriter, open_capture
from freezeframe.dissect import AppTracker, ConnectionTracker
from freezeframe.dissect.tcp.batch import feed_batches
from tests.fixtures.tcp_captures import Capture, Conversation, clean_download, lossy_capture

SAMPLE = Path(__file__).resolve().parents[2] / "fixtures" / "sample.pcap"
TSHARK = shutil.which("tshark")
BATCH_SIZES = (1, 3_000, 64 << 10, 16 << 20)  # bytes: one record per batch, a few, typical, all at once


def pcap_bytes(frames: list[tuple[int, bytes]], link_type: int = LINKTYPE_ETHERNET) -> bytes:
    stream = io.BytesIO()
    writer = PcapWriter(stream, link_type)
    for ts_ns, data in frames:
        writer.write(ts_ns, data)
    return stream.getvalue()


def tables(tracker: ConnectionTracker) -> dict[str, object]:
    return {"connections": tracker.finish(), **tracker.app_tables(), "stats": tracker.stats.as_dict(),
            "app_stats": tracker.app.stats.as_dict() if tracker.app else None}


def reference(capture: bytes) -> dict[str, object]:
    tracker = ConnectionTracker("node-a", AppTracker("node-a"))
    tracker.feed_runs(open_capture(io.BytesIO(capture)).runs())
    return tables(tracker)


def batched(capture: bytes, batch_bytes: int) -> dict[str, object]:
    tracker = ConnectionTracker("node-a", AppTracker("node-a"))
    feed_batches(tracker, open_capture(io.BytesIO(capture)).record_batches(batch_bytes))
    return tables(tracker)


def assert_same(capture: bytes, sizes: tuple[int, ...] = BATCH_SIZES) -> dict[str, object]:
    expected = reference(capture)
    assert expected["stats"]["packets"] > 0  # type: ignore[index]
    for size in sizes:
        actual = batched(capture, size)
        for name, value in expected.items():
            if isinstance(value, pa.Table):
                assert isinstance(actual[name], pa.Table)
                if not value.equals(actual[name]):
                    differing = [column for column in value.column_names
                                 if not value[column].equals(actual[name][column])]  # type: ignore[index]
                    pytest.fail(f"{name} differs with {size}-byte batches in columns {differing}")
            else:
                assert actual[name] == value, f"{name} differs with {size}-byte batches"
    return expected


def test_the_sample_with_dns_http_and_tls() -> None:
    result = assert_same(SAMPLE.read_bytes())
    assert {"dns", "http", "tls"} <= set(result)
    assert all(result[name].num_rows for name in ("dns", "http", "tls"))  # type: ignore[attr-defined]


@pytest.mark.parametrize("seed", range(8))
def test_lossy_reordering_conversations(seed: int) -> None:
    result = assert_same(pcap_bytes(lossy_capture(seed, conversations=4, steps=120).frames))
    connections = result["connections"]
    assert isinstance(connections, pa.Table)
    flagged = sum(connections[name].to_pylist()[row] for name in ("retransmissions", "dup_acks", "out_of_order")
                  for row in range(connections.num_rows))
    assert flagged > 0  # the capture really exercises the flagged paths


def test_lossy_ipv6_conversations() -> None:
    assert_same(pcap_bytes(lossy_capture(3, conversations=3, steps=80, ipv6=True).frames))


def test_clean_transfers_handed_over_between_batches_and_wrapping_sequence_numbers(tmp_path: Path) -> None:
    capture = Capture()
    clean_download(capture, 41000, 200)
    clean_download(capture, 41001, 120, isn=(0xFFFF_F000, 0xFFFF_0000))  # both sides wrap past 2^32
    data = pcap_bytes(capture.frames)
    result = assert_same(data, (1, 3_000, 20_000, 16 << 20))
    connections = result["connections"]
    assert isinstance(connections, pa.Table)
    if TSHARK is None:
        pytest.skip("tshark is not installed: the RTT sample counts below come from it")
    path = tmp_path / "clean.pcap"
    path.write_bytes(data)
    out = subprocess.run([TSHARK, "-n", "-r", str(path), "-Y", "tcp.analysis.ack_rtt", "-T", "fields", "-e",
                          "tcp.stream"], check=True, capture_output=True, text=True).stdout
    samples = Counter(int(stream) for stream in out.split())
    assert connections["rtt_samples"].to_pylist() == [samples[0], samples[1]]
    assert samples[0] > 200  # most of them come from clean runs, i.e. from the batched RTT computation


def test_port_reuse_and_a_connection_seen_from_the_middle() -> None:
    capture = Capture()
    first = Conversation(capture, 42000, 80, isn=(1000, 9000))
    first.handshake()
    first.data(True, 100)
    first.ack(False)
    first.close()
    capture.tick(1000)
    again = Conversation(capture, 42000, 80, isn=(777_000, 55_000))  # same 4-tuple, new ISNs
    again.handshake()
    again.data(True, 100)
    again.data(False, 500)
    again.ack(True)
    middle = Conversation(capture, 42001, 80)
    middle.client.next_seq = middle.server.next_seq = 1
    for _ in range(5):
        middle.data(True, 200)
        middle.ack(False)
    frames = capture.frames
    result = assert_same(pcap_bytes(frames))
    assert result["stats"]["tcp_port_reuse"] == 1  # type: ignore[index]


def test_keepalives_zero_windows_and_window_full_inside_clean_traffic() -> None:
    capture = Capture()
    conversation = Conversation(capture, 43000, 80)
    conversation.handshake(wscale=(2, 2))
    for step in range(40):
        conversation.data(True, 500)
        capture.tick(50)
        if step % 7 == 3:
            conversation.ack(False, window=0)  # zero window, then a probe
            capture.tick(100)
            conversation.data(True, 1)
        elif step % 7 == 5:
            conversation.ack(True, rel_seq=conversation.client.next_seq - 1, length=1)  # keep-alive
        elif step % 7 == 6:
            conversation.ack(False, window=125)  # 125 << 2 = 500: the next 500 bytes fill the window
        else:
            conversation.ack(False)
    conversation.close()
    result = assert_same(pcap_bytes(capture.frames))
    row = result["connections"].to_pylist()[0]  # type: ignore[attr-defined]
    assert row["zero_window_events"] and row["keepalives"] and row["window_full_events"]


def with_vlan_tag(frame: bytes) -> bytes:
    return frame[:12] + b"\x81\x00\x00\x07" + frame[12:]


def with_ip_options(frame: bytes) -> bytes:
    """The IPv4 header grown by one 4-byte option (NOP x4), lengths and header checksum left for the reader."""
    header = bytearray(frame[14:34])
    header[0] = 0x46
    struct.pack_into("!H", header, 2, struct.unpack_from("!H", frame, 16)[0] + 4)
    return frame[:14] + bytes(header) + b"\x01\x01\x01\x01" + frame[34:]


@pytest.mark.parametrize("change", [with_vlan_tag, with_ip_options])
def test_records_the_fast_decoder_skips_keep_their_conversation_on_the_reference_path(
        change: Callable[[bytes], bytes]) -> None:
    capture = Capture()
    clean_download(capture, 44000, 30)
    clean_download(capture, 44001, 30)
    frames = capture.frames
    # Every fifth frame of the first download (port 44000) only is changed; its conversation must stay whole.
    changed = [(ts, change(data) if b"\xab\xe0" in data[34:38] and index % 5 == 0 else data)
               for index, (ts, data) in enumerate(frames)]
    result = assert_same(pcap_bytes(changed))
    assert result["connections"].num_rows == 2  # type: ignore[attr-defined]


def test_linux_cooked_v2_links() -> None:
    capture = Capture()
    clean_download(capture, 45000, 40)
    # SLL2: protocol type, reserved, interface index, ARPHRD_ETHER, packet type, address length, address (8).
    frames = [(ts, struct.pack("!HHIHBB8s", 0x0800, 0, 3, 1, 0, 6, data[6:12]) + data[14:])
              for ts, data in capture.frames]
    assert_same(pcap_bytes(frames, LINKTYPE_LINUX_SLL2))


@pytest.mark.parametrize("seed", range(4))
def test_damaged_records(seed: int) -> None:
    """Bytes flipped inside frames and record headers: both paths count and skip the same things."""
    capture = Capture()
    clean_download(capture, 46000, 40)
    data = bytearray(pcap_bytes(capture.frames + lossy_capture(seed, conversations=2, steps=40).frames))
    rng = random.Random(seed)
    for _ in range(30):
        data[rng.randrange(24, len(data))] = rng.randrange(256)
    assert_same(bytes(data))
