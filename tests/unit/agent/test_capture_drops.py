"""Per-segment drops: agent drops in the segment of the dropped packets, kernel drops from tcpdump's
running totals (polled with SIGUSR1) as of each segment's end, the exit-time remainder on the last segment. The
tcpdump here is a stand-in script speaking tcpdump's pipe and stderr protocol, so no capture privileges are needed."""

from __future__ import annotations

import struct
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from freezeframe.capture.pcapio import Packet
from freezeframe_agent.capture import AgentDrops, RecordChunk, TcpdumpSource, record
from freezeframe_agent.segmenter import Segmenter
from tests.fixtures.waiting import until

S = 1_000_000_000
FAKE_TCPDUMP = """\
import signal, struct, sys, time
out = sys.stdout.buffer
out.write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 262144, 1))
out.flush()
answered = 0
def stats(signum, frame):
    global answered
    answered += 1
    sys.stderr.write(f"tcpdump: 10 packets captured, 10 packets received by filter, {2 * answered} packets dropped "
                     "by kernel\\n")
    sys.stderr.flush()
def finish(signum, frame):
    sys.stderr.write("10 packets captured\\n10 packets received by filter\\n99 packets dropped by kernel\\n")
    sys.exit(0)
time.sleep(0.3)  # like tcpdump, the SIGUSR1 handler comes after the pcap header: an early signal would kill it
signal.signal(signal.SIGUSR1, stats)
signal.signal(signal.SIGTERM, finish)
sys.stderr.write("tcpdump: listening on fake0, link-type EN10MB (Ethernet), snapshot length 262144 bytes\\n")
for i in range(1, 11):  # one write per record, like tcpdump -U
    out.write(struct.pack("<IIII", i, 0, 4, 4) + b"pkt%d" % (i % 10))
    out.flush()
    time.sleep(0.02)
while True:
    time.sleep(0.05)
"""


def fake_tcpdump(tmp_path: Path) -> str:
    script = tmp_path / "tcpdump"
    script.write_text(f"#!{sys.executable}\n{FAKE_TCPDUMP}")
    script.chmod(0o755)
    return str(script)


def test_the_pipe_is_passed_on_in_chunks_that_hold_every_record_and_a_slow_reader_loses_none(tmp_path: Path) -> None:
    # Room for one chunk only: the pump blocks (back-pressure into the pipe) instead of dropping anything.
    source = TcpdumpSource("fake0", tcpdump=fake_tcpdump(tmp_path), queue_chunks=1, tick_s=0.05,
                           stats_interval_s=0.05)
    try:
        time.sleep(1.0)  # the fake has written all ten records by now, one by one; nobody has read the queue yet
        source.stop()
        items = [item for item in source.packets() if item is not None]
    finally:
        source.close()
    assert all(isinstance(item, RecordChunk) and item.stream == source.stream for item in items)
    expected = b"".join(struct.pack("<IIII", i, 0, 4, 4) + b"pkt%d" % (i % 10) for i in range(1, 11))
    assert b"".join(item.data for item in items) == expected
    assert len(items) > 1, "several reads went through the one-chunk queue"
    assert source.agent_drops == 0 and source.link_type == 1


def test_kernel_drops_are_polled_while_capturing_and_the_exit_count_is_kept(tmp_path: Path) -> None:
    source = TcpdumpSource("fake0", tcpdump=fake_tcpdump(tmp_path), tick_s=0.05, stats_interval_s=0.05)
    try:
        until(lambda: source.kernel_drops >= 4)  # two answers to SIGUSR1, the engine still running
        assert not source.exited_unexpectedly
        silence = source.engine_silence_s()
        assert silence is not None and silence >= 0
        assert source.kernel_drops_until(0) == 0 and source.kernel_drops_until(time.time_ns()) == source.kernel_drops
        source.stop()
        for _ in source.packets():
            pass
    finally:
        source.close()
    assert source.kernel_drops == 99  # the final count tcpdump prints at exit
    assert not source.exited_unexpectedly


def test_drops_are_attributed_to_the_segment_they_happened_in(tmp_path: Path) -> None:
    readings = [(5 * S, 3), (15 * S, 10)]  # the engine's running totals and when they were observed

    def kernel_until(ts_ns: int) -> int:
        return max([total for observed, total in readings if observed <= ts_ns], default=0)

    segmenter = Segmenter(cluster="c", node="n", spool_dir=tmp_path, link_type=1, snaplen=65535, period_s=10.0,
                          capture_filter="", agent_version="t", kernel_drops_until=kernel_until)
    segmenter.add(1 * S, b"a", 1)
    segmenter.add(12 * S, b"b", 1)
    segmenter.add_agent_drops(4, 13 * S)
    segmenter.add(25 * S, b"c", 1)
    last = segmenter.flush(kernel_drops=12, agent_drops=5)  # exit totals: 2 more kernel drops, 1 more agent drop
    metas = [m.meta for m in [*segmenter.spool.entries()]]
    assert [(m["start_ns"], m["end_ns"], m["kernel_drops"], m["agent_drops"]) for m in metas] == [
        (0, 10 * S, 3, 0), (10 * S, 20 * S, 7, 4), (20 * S, 25 * S + 1, 2, 1)]
    assert last[0].meta["seq"] == 2


def test_an_interval_with_only_drops_still_closes_a_segment_that_reports_them(tmp_path: Path) -> None:
    segmenter = Segmenter(cluster="c", node="n", spool_dir=tmp_path, link_type=1, snaplen=65535, period_s=10.0,
                          capture_filter="", agent_version="t")
    segmenter.add(1 * S, b"a", 1)
    segmenter.add_agent_drops(7, 11 * S)  # every packet of [10 s, 20 s) was dropped
    segmenter.add(21 * S, b"b", 1)
    segmenter.flush()
    assert [(m.meta["start_ns"], m.meta["packets"], m.meta["agent_drops"]) for m in segmenter.spool.entries()] == [
        (0, 1, 0), (10 * S, 0, 7), (20 * S, 1, 0)]


class ListSource:
    link_type, snaplen, capture_filter, kernel_drops, agent_drops = 1, 65535, "", 0, 0

    def __init__(self, items: list[Any]) -> None:
        self.items = items

    def kernel_drops_until(self, ts_ns: int) -> int:
        return 0

    def packets(self) -> Iterator[Any]:
        yield from self.items

    def close(self) -> None:
        return None


class Beats:
    def __init__(self) -> None:
        self.count = 0

    def beat(self) -> None:
        self.count += 1


def test_the_loop_beats_on_every_packet_and_idle_tick_and_only_live_capture_closes_on_the_clock(
        tmp_path: Path) -> None:
    items: list[Any] = [Packet(1 * S, 1, b"a"), None, AgentDrops(2, 3 * S), None, Packet(4 * S, 1, b"b")]
    # Live, the idle tick at 15 s closes [0, 10 s) and opens [10 s, 20 s), which the late drops then extend back to
    # 3 s; a replay's timeline is its packets', so its ticks close nothing.
    for live, expected_closed in ((True, 1), (False, 0)):
        segmenter = Segmenter(cluster="c", node="n", spool_dir=tmp_path / str(live), link_type=1, snaplen=65535,
                              period_s=10.0, capture_filter="", agent_version="t", emit_empty=live)
        beats = Beats()
        record(ListSource(items), segmenter, beats, live=live, clock_ns=lambda: 15 * S)  # type: ignore[arg-type]
        assert beats.count == len(items)
        assert segmenter.segments_closed == expected_closed
        keys = [e.meta["key"] for e in segmenter.spool.entries()]
        assert len(set(keys)) == len(keys)


def test_a_late_packet_opens_its_own_segment_instead_of_reusing_a_closed_key(tmp_path: Path) -> None:
    segmenter = Segmenter(cluster="c", node="n", spool_dir=tmp_path, link_type=1, snaplen=65535, period_s=10.0,
                          capture_filter="", agent_version="t", emit_empty=True, close_grace_s=1.5,
                          clock_ns=lambda: 14 * S)
    segmenter.add(1 * S, b"a", 1)
    assert segmenter.tick(11 * S) == []  # within the grace: a packet from before 10 s may still be on its way
    segmenter.add(9 * S, b"late", 4)
    segmenter.tick(12 * S)  # past the grace: [0, 10 s) closes with both packets
    segmenter.add(9 * S + 5, b"later", 5)  # later than any grace: the open [10 s, 20 s) starts at it instead
    segmenter.add(13 * S, b"b", 1)
    segmenter.flush()
    spans = [(e.meta["start_ns"], e.meta["end_ns"], e.meta["packets"]) for e in segmenter.spool.entries()]
    assert spans == [(0, 10 * S, 2), (9 * S + 5, 13 * S + 1, 2)]


def test_a_replay_of_old_timestamps_after_a_restart_gets_keys_of_its_own(tmp_path: Path) -> None:
    def run() -> list[str]:
        segmenter = Segmenter(cluster="c", node="n", spool_dir=tmp_path, link_type=1, snaplen=65535,
                              period_s=10.0, capture_filter="", agent_version="t")
        for ts in (1 * S, 12 * S):
            segmenter.add(ts, b"a", 1)
        return [s.meta["key"] for s in segmenter.flush()]

    first, second = run(), run()
    assert first != second and second[0].endswith(f"/{12 * S}-{12 * S + 1}.pcap.zst")
