"""The compiled dissection core (freezeframe_native) against the Python reference engine.

Every table (schema, rows, cells), every dissect_errors row and every job counter must be equal: on the fixture,
on crafted lossy TCP captures (IPv4 and IPv6, several segments with TCP state across them), on every capture format
the reader knows (pcap µs/ns both byte orders, pcapng both byte orders, SLL2, raw IP, VLAN, zstd) and on a sample of
fuzzed captures (the long run, >= 100,000 inputs, is ``make bench-native-fuzz``). The expected values are the
reference's; none come from the core's own output. The core's column set is checked against schemas.py.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pyarrow as pa
import pytest
import zstandard

from freezeframe.capture.pcapio import PcapReader
from freezeframe.contracts.schemas import TABLES
from freezeframe.dissect import native
from freezeframe.dissect.job import dissect_segments
from tests.fixtures.native_compare import differences, fuzz_inputs, sources
from tests.fixtures.tcp_captures import lossy_capture

SAMPLE = Path(__file__).resolve().parents[2] / "fixtures" / "sample.pcap"
FUZZ_SAMPLE = 1_500

pytestmark = pytest.mark.skipif(native.extension() is None, reason="the freezeframe_native extension is not built")


def _capture_bytes(tmp_path: Path, seed: int, ipv6: bool = False) -> bytes:
    path = lossy_capture(seed, conversations=4, steps=80, ipv6=ipv6).write(tmp_path / f"lossy-{seed}-{ipv6}.pcap")
    return path.read_bytes()


def _sample_packets() -> list[tuple[int, int, bytes]]:
    with SAMPLE.open("rb") as stream:
        return [(p.ts_ns, p.orig_len, p.data) for p in PcapReader(stream)]


def _pcap(packets: list[tuple[int, int, bytes]], order: str = "<", nanosecond: bool = True, link: int = 1) -> bytes:
    out = bytearray(struct.pack(order + "IHHiIII", 0xA1B23C4D if nanosecond else 0xA1B2C3D4, 2, 4, 0, 0, 262144, link))
    for ts_ns, orig_len, data in packets:
        sec, ns = divmod(ts_ns, 1_000_000_000)
        out += struct.pack(order + "IIII", sec, ns if nanosecond else ns // 1000, len(data), orig_len) + data
    return bytes(out)


def _block(order: str, block_type: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    return struct.pack(order + "II", block_type, 12 + len(body)) + body + struct.pack(order + "I", 12 + len(body))


def _pcapng(packets: list[tuple[int, int, bytes]], order: str, tsresol: int = 9, offset_s: int = 0) -> bytes:
    options = struct.pack(order + "HH", 9, 1) + bytes([tsresol, 0, 0, 0])
    if offset_s:
        options += struct.pack(order + "HHq", 14, 8, offset_s)
    options += struct.pack(order + "HH", 0, 0)
    out = bytearray(_block(order, 0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1)))
    out += _block(order, 1, struct.pack(order + "HHI", 1, 0, 262144) + options)
    for ts_ns, orig_len, data in packets:
        units = (ts_ns - offset_s * 1_000_000_000) // (10 ** (9 - tsresol)) if tsresol <= 9 else ts_ns
        out += _block(order, 6, struct.pack(order + "IIIII", 0, units >> 32, units & 0xFFFFFFFF, len(data),
                                            orig_len) + data)
    return bytes(out)


def test_core_columns_follow_schemas() -> None:
    """Every table the core builds has exactly the schema's columns (Kubernetes ones are joined later), in order."""
    module = native.extension()
    assert module is not None
    produced = dict(module.column_names())
    assert set(produced) == set(native.NATIVE_TABLES)
    for name, columns in produced.items():
        expected = [f.name for f in TABLES[name] if f.name not in native.LATER_COLUMNS]
        assert columns == expected, name


def test_default_engine_is_native_and_python_can_be_forced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FREEZEFRAME_DISSECT_ENGINE", raising=False)
    assert native.selected() == "native"
    monkeypatch.setenv("FREEZEFRAME_DISSECT_ENGINE", "python")
    assert native.selected() == "python"
    monkeypatch.setenv("FREEZEFRAME_DISSECT_ENGINE", "fast")
    with pytest.raises(Exception, match="FREEZEFRAME_DISSECT_ENGINE"):
        native.selected()


def test_fixture_equal() -> None:
    data = SAMPLE.read_bytes()
    assert differences([data]) == []
    result = dissect_segments("n1", sources([data]), engine="native")
    assert all(result.tables[name].num_rows for name in ("connections", "dns", "http", "tls"))


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_lossy_tcp_equal(tmp_path: Path, seed: int) -> None:
    assert differences([_capture_bytes(tmp_path, seed)]) == []
    assert differences([_capture_bytes(tmp_path, seed + 100, ipv6=True)]) == []


def test_segments_carry_tcp_state(tmp_path: Path) -> None:
    """A capture cut into three segments: conversations run across the cuts, as in a dissection job."""
    packets = _sample_packets()
    thirds = [packets[:40], packets[40:90], packets[90:]]
    segments = [_pcap(part, "<" if i % 2 else ">", nanosecond=i != 1) for i, part in enumerate(thirds)]
    segments.append(_capture_bytes(tmp_path, 7))
    assert differences(segments) == []


@pytest.mark.parametrize("form", ["pcap-us-le", "pcap-ns-be", "pcapng-le", "pcapng-be-us-offset", "zstd-pcapng",
                                  "zstd-pcap", "not-a-capture", "empty", "raw-ip", "sll2", "vlan"])
def test_formats_equal(form: str) -> None:
    packets = _sample_packets()
    if form == "pcap-us-le":
        data = _pcap(packets, "<", nanosecond=False)
    elif form == "pcap-ns-be":
        data = _pcap(packets, ">")
    elif form == "pcapng-le":
        data = _pcapng(packets, "<")
    elif form == "pcapng-be-us-offset":
        data = _pcapng(packets, ">", tsresol=6, offset_s=1_000)
    elif form == "zstd-pcapng":
        data = zstandard.ZstdCompressor().compress(_pcapng(packets, "<"))
    elif form == "zstd-pcap":
        compressor = zstandard.ZstdCompressor()
        raw = _pcap(packets)
        data = compressor.compress(raw[:3000]) + compressor.compress(raw[3000:])  # two frames
    elif form == "not-a-capture":
        data = b"this is not a capture at all"
    elif form == "empty":
        data = b""
    elif form == "raw-ip":
        data = _pcap([(t, o - 14, d[14:]) for t, o, d in packets], link=101)
    elif form == "sll2":
        data = _pcap([(t, o + 6, d[12:14] + b"\0" * 18 + d[14:]) for t, o, d in packets], link=276)
    else:
        data = _pcap([(t, o + 4, d[:12] + b"\x81\x00\x00\x07" + d[12:]) for t, o, d in packets])
    assert differences([data, SAMPLE.read_bytes()]) == []


def test_damaged_zstd_counted_like_the_reference() -> None:
    whole = zstandard.ZstdCompressor().compress(_pcap(_sample_packets()))
    for cut in (len(whole) // 2, len(whole) - 3):
        assert differences([whole[:cut]]) == []
    garbled = bytearray(whole)
    garbled[len(garbled) // 2] ^= 0xFF
    assert differences([bytes(garbled)]) == []


def test_fuzzed_captures_equal() -> None:
    """A fast sample of the fuzz comparison (make bench-native-fuzz runs >= 100,000 inputs)."""
    failures = []
    for label, data in fuzz_inputs(seed=20261206, count=FUZZ_SAMPLE):
        found = differences([data])
        if found:
            failures.append(f"{label}: {found[:2]}")
    assert failures == []


def test_tables_import_through_the_c_data_interface() -> None:
    module = native.extension()
    assert module is not None
    engine = module.Engine("n1")
    not_a_capture, problems = engine.feed(SAMPLE.read_bytes())
    assert not_a_capture is None and problems == []
    exported = engine.finish()
    batch = pa.record_batch(exported["connections"])
    assert batch.num_rows == exported["connections"].num_rows > 0
    table = native.to_table("connections", exported["connections"])
    assert table.schema == TABLES["connections"]
    walked = module.walk(SAMPLE.read_bytes())
    assert walked[0] == len(_sample_packets())
