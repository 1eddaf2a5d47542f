"""Size cuts: a segment that would outgrow FREEZEFRAME_SEGMENT_MAX_BYTES closes before the packet that overflows it,
at a packet boundary, and the time grid carries on. Expected sizes come from the pcap format itself (24-byte global
header, 16-byte record header), not from the segmenter."""

from __future__ import annotations

import io
import sys
import time
from pathlib import Path

import pytest
import zstandard

from freezeframe.capture.pcapio import LINKTYPE_ETHERNET, PcapReader, encode_global_header
from freezeframe.contracts.config import Settings
from freezeframe.contracts.errors import ConfigError
from freezeframe.contracts.keys import parse_raw_segment_key
from freezeframe_agent.capture import (
    CaptureEngineError,
    MergedSource,
    RecordChunk,
    TcpdumpSource,
    open_engine,
    open_tcpdump,
)
from freezeframe_agent.segmenter import Segmenter

S = 1_000_000_000
PAYLOAD = bytes(100)  # each record: 16 + 100 bytes
RECORD = 16 + len(PAYLOAD)
GLOBAL = 24


def make(tmp_path: Path, max_bytes: int, *, live: bool = False, clock: list[int] | None = None) -> Segmenter:
    now = clock or [0]
    return Segmenter(cluster="c", node="n1", spool_dir=tmp_path / "spool", link_type=LINKTYPE_ETHERNET,
                     snaplen=65535, period_s=10.0, capture_filter="", agent_version="t", max_bytes=max_bytes,
                     emit_empty=live, clock_ns=lambda: now[0])


def contents(seg: object) -> list[int]:
    stored = seg.path.read_bytes()  # type: ignore[attr-defined]
    return [p.ts_ns for p in PcapReader(io.BytesIO(zstandard.ZstdDecompressor().decompress(stored)))]


def test_a_full_segment_is_cut_before_the_overflowing_packet_and_the_grid_resumes(tmp_path: Path) -> None:
    segmenter = make(tmp_path, max_bytes=GLOBAL + 3 * RECORD)  # room for exactly three packets
    times = [100 * S + i * S // 10 for i in range(8)]  # 8 packets within one 10 s period
    closed = []
    for ts in times:
        closed += segmenter.add(ts, PAYLOAD, len(PAYLOAD))
    closed += segmenter.add(111 * S, PAYLOAD, len(PAYLOAD))  # next period: a time cut
    closed += segmenter.flush()
    intervals = [(s.meta["start_ns"], s.meta["end_ns"]) for s in closed]
    assert intervals == [
        (100 * S, times[3]),  # first segment starts on the grid, ends at the packet that did not fit
        (times[3], times[6]),
        (times[6], 110 * S),  # the last part of the period still ends on the grid
        (110 * S, 111 * S + 1),
    ]
    assert [s.meta["packets"] for s in closed] == [3, 3, 2, 1]
    assert segmenter.size_cuts == 2
    for seg in closed:
        meta = seg.meta
        inside = contents(seg)
        assert all(meta["start_ns"] <= ts < meta["end_ns"] for ts in inside)
        assert GLOBAL + len(inside) * RECORD <= GLOBAL + 3 * RECORD
        parsed = parse_raw_segment_key(meta["key"])
        assert parsed is not None and (parsed.start_ns, parsed.end_ns) == (meta["start_ns"], meta["end_ns"])
    assert len({s.meta["key"] for s in closed}) == len(closed)
    assert [s.meta["seq"] for s in closed] == [0, 1, 2, 3]


def test_packets_sharing_a_timestamp_are_never_split(tmp_path: Path) -> None:
    segmenter = make(tmp_path, max_bytes=GLOBAL + 2 * RECORD)
    closed = []
    for ts in (5 * S, 5 * S, 5 * S, 6 * S):
        closed += segmenter.add(ts, PAYLOAD, len(PAYLOAD))
    closed += segmenter.flush()
    # The three equal timestamps stay together (overshooting the limit); the cut waits for a later timestamp.
    assert [(s.meta["start_ns"], s.meta["end_ns"], s.meta["packets"]) for s in closed] == [
        (0, 6 * S, 3), (6 * S, 6 * S + 1, 1)]


def test_a_single_packet_larger_than_the_limit_gets_its_own_segment(tmp_path: Path) -> None:
    segmenter = make(tmp_path, max_bytes=GLOBAL + RECORD)
    big = bytes(5000)
    closed = []
    for ts, data in ((1 * S, PAYLOAD), (2 * S, big), (3 * S, PAYLOAD)):
        closed += segmenter.add(ts, data, len(data))
    closed += segmenter.flush()
    assert [s.meta["packets"] for s in closed] == [1, 1, 1]
    assert [(s.meta["start_ns"], s.meta["end_ns"]) for s in closed] == [(0, 2 * S), (2 * S, 3 * S), (3 * S, 3 * S + 1)]


def test_live_size_cuts_then_idle_close_on_time(tmp_path: Path) -> None:
    clock = [100 * S]
    segmenter = make(tmp_path, max_bytes=GLOBAL + 2 * RECORD, live=True, clock=clock)
    closed = []
    for i in range(5):
        closed += segmenter.add(101 * S + i, PAYLOAD, len(PAYLOAD))
    clock[0] = 109 * S
    closed += segmenter.tick(clock[0])  # still inside the period: nothing closes on time yet
    assert [s.meta["packets"] for s in closed] == [2, 2]
    clock[0] = 111 * S
    closed += segmenter.tick(clock[0])
    assert [s.meta["packets"] for s in closed] == [2, 2, 1]
    assert closed[-1].meta["end_ns"] == 110 * S
    assert [s.meta["start_ns"] for s in closed] == [100 * S, 101 * S + 2, 101 * S + 4]


def test_capture_settings_come_from_the_environment() -> None:
    default = Settings.from_env({})
    assert default.segment_max_bytes == 64 << 20 and default.capture_buffer_kib == 8192
    assert default.snaplen == 262_144 and default.interfaces == ("any",)
    config = Settings.from_env({"FREEZEFRAME_SEGMENT_MAX_BYTES": "1048576", "FREEZEFRAME_CAPTURE_BUFFER_KIB": "32768",
                                "FREEZEFRAME_SNAPLEN": "128", "FREEZEFRAME_INTERFACES": "eth0, eth1"})
    assert (config.segment_max_bytes, config.capture_buffer_kib, config.snaplen) == (1 << 20, 32768, 128)
    assert config.interfaces == ("eth0", "eth1")
    with pytest.raises(Exception, match="FREEZEFRAME_SEGMENT_MAX_BYTES"):
        Settings.from_env({"FREEZEFRAME_SEGMENT_MAX_BYTES": "0"})


def test_the_capture_engine_is_chosen_by_configuration() -> None:
    assert Settings.from_env({}).capture_engine == "tcpdump"
    assert Settings.from_env({"FREEZEFRAME_CAPTURE_ENGINE": "scapy"}).capture_engine == "scapy"
    with pytest.raises(ConfigError, match="FREEZEFRAME_CAPTURE_ENGINE"):
        Settings.from_env({"FREEZEFRAME_CAPTURE_ENGINE": "pcapy"})
    with pytest.raises(CaptureEngineError, match="unknown capture engine"):
        open_engine("pcapy", ["eth0"])
    with pytest.raises(CaptureEngineError, match="one named interface"):
        open_engine("scapy", ["eth0", "eth1"])


# -- capture settings reach tcpdump; several interfaces merge into one capture ------------------------------------


def recording_tcpdump(tmp_path: Path) -> str:
    """The stand-in tcpdump of test_capture_drops, which also writes its command line to <name>.argv."""
    from tests.unit.agent.test_capture_drops import FAKE_TCPDUMP

    script = tmp_path / "tcpdump"
    script.write_text(f"#!{sys.executable}\nimport sys, pathlib\n"
                      f"pathlib.Path({str(tmp_path)!r}, sys.argv[sys.argv.index('-i') + 1] + '.argv')"
                      ".write_text(' '.join(sys.argv[1:]))\n" + FAKE_TCPDUMP)
    script.chmod(0o755)
    return str(script)


def test_buffer_snaplen_and_filter_are_passed_and_interfaces_merge(tmp_path: Path) -> None:
    source = open_tcpdump(["eth0", "eth1"], bpf="udp", snaplen=1500, buffer_kib=32768,
                          tcpdump=recording_tcpdump(tmp_path))
    assert isinstance(source, MergedSource)
    try:
        streams: dict[int, bytes] = {}  # each engine's pipe bytes, kept apart by the chunks' stream
        deadline = time.monotonic() + 20
        for item in source.packets():
            if isinstance(item, RecordChunk):
                streams[item.stream] = streams.get(item.stream, b"") + item.data
            if sum(map(len, streams.values())) == 2 * 10 * (16 + 4) or time.monotonic() > deadline:
                break
        deadline = time.monotonic() + 20
        while source.kernel_drops < 4 and time.monotonic() < deadline:  # each engine answered SIGUSR1 at least once
            time.sleep(0.05)
        source.stop()
        rest = [item for item in source.packets() if isinstance(item, RecordChunk)]
    finally:
        source.close()
    assert rest == [] and len(streams) == 2  # ten records from each engine, every one in its own stream
    for data in streams.values():
        records = list(PcapReader(io.BytesIO(encode_global_header(1, 1500) + data)))
        assert [p.ts_ns for p in records] == [i * S for i in range(1, 11)]
    assert source.kernel_drops == 2 * 99  # both engines' exit totals, summed
    for name in ("eth0", "eth1"):
        argv = (tmp_path / f"{name}.argv").read_text().split()
        assert argv[argv.index("-B") + 1] == "32768" and argv[argv.index("-s") + 1] == "1500"
        assert argv[-1] == "udp"


def test_one_interface_is_one_engine(tmp_path: Path) -> None:
    source = open_tcpdump(["any"], tcpdump=recording_tcpdump(tmp_path))
    try:
        assert isinstance(source, TcpdumpSource) and source.interface == "any"
    finally:
        source.stop()
        source.close()
