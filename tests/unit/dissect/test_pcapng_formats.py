"""Capture formats in, identical tables out: pcap (µs, ns, both byte orders), pcapng (both byte orders, several
interfaces and link types, decimal and binary timestamp resolutions, if_tsoffset, enhanced, obsolete and simple
packet blocks, unknown and custom blocks, several sections),
zstd or not; plus SLL2, VLAN/QinQ and IPv6 frames built from the sample.

tshark, run here on the very same files, is the reference for packet counts, per-packet timestamps, lengths and
conversations; converted files come from editcap or are built with ``struct`` in the test from the fixture.
"""

from __future__ import annotations

import io
import shutil
import struct
import subprocess
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest
import zstandard

from freezeframe.capture.pcapio import CaptureReader, Packet, PcapReader, open_capture
from freezeframe.dissect import AppTracker, ConnectionTracker

SAMPLE = Path(__file__).resolve().parents[2] / "fixtures" / "sample.pcap"
TSHARK = shutil.which("tshark")
EDITCAP = shutil.which("editcap")
pytestmark = pytest.mark.skipif(TSHARK is None or EDITCAP is None,
                                reason="tshark and editcap (apt-get install tshark) are the reference")

LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL2 = 276


def sample_packets() -> list[Packet]:
    with SAMPLE.open("rb") as stream:
        return list(PcapReader(stream))


def read_all(path: Path) -> tuple[CaptureReader, list[tuple[int, Packet]]]:
    with path.open("rb") as stream:
        reader = open_capture(stream)
        return reader, [(link_type, packet) for link_type, packets in reader.runs() for packet in packets]


def dissect(path: Path) -> dict[str, pa.Table]:
    tracker = ConnectionTracker("node-a", AppTracker("node-a"))
    with path.open("rb") as stream:
        for link_type, packets in open_capture(stream).runs():
            tracker.feed(link_type, packets)
    return {"connections": tracker.finish(), **tracker.app_tables()}


def tshark_frames(path: Path, display_filter: str = "") -> list[tuple[int, int, int]]:
    """(timestamp ns or -1, wire length, captured length) of every frame, as tshark reads the file."""
    assert TSHARK is not None
    out = subprocess.run([TSHARK, "-n", "-r", str(path), "-Y", display_filter, "-T", "fields",
                          "-e", "frame.time_epoch", "-e", "frame.len", "-e", "frame.cap_len"],
                         check=True, capture_output=True, text=True).stdout
    frames = []
    for line in out.splitlines():
        epoch, length, captured = line.split("\t")
        # A simple packet block has no time: tshark leaves the field empty.
        frames.append((int(Decimal(epoch) * 1_000_000_000) if epoch else -1, int(length), int(captured)))
    return frames


def tshark_conversations(path: Path) -> int:
    assert TSHARK is not None
    out = subprocess.run([TSHARK, "-n", "-r", str(path), "-q", "-z", "conv,tcp", "-z", "conv,udp"], check=True,
                         capture_output=True, text=True).stdout
    return sum(1 for line in out.splitlines() if "<->" in line)


def editcap(tmp_path: Path, fmt: str, name: str) -> Path:
    assert EDITCAP is not None
    out = tmp_path / name
    subprocess.run([EDITCAP, "-F", fmt, str(SAMPLE), str(out)], check=True)
    return out


def zstd(path: Path) -> Path:
    out = path.with_name(path.name + ".zst")
    out.write_bytes(zstandard.ZstdCompressor(level=3).compress(path.read_bytes()))
    return out


# -- files built with struct, from the fixture's packets (the reader under test is not used to build them)

def pcap_bytes(packets: list[Packet], order: str, nanosecond: bool, link_type: int = LINKTYPE_ETHERNET) -> bytes:
    magic = 0xA1B23C4D if nanosecond else 0xA1B2C3D4
    out = [struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 262_144, link_type)]
    for packet in packets:
        sec, ns = divmod(packet.ts_ns, 1_000_000_000)
        out.append(struct.pack(order + "IIII", sec, ns if nanosecond else ns // 1000, len(packet.data),
                               packet.orig_len) + packet.data)
    return b"".join(out)


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def block(order: str, block_type: int, body: bytes) -> bytes:
    body = _pad(body)
    length = 12 + len(body)
    return struct.pack(order + "II", block_type, length) + body + struct.pack(order + "I", length)


def shb(order: str) -> bytes:
    return block(order, 0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1))


def idb(order: str, link_type: int, tsresol: int | None = None, tsoffset: int | None = None) -> bytes:
    options = b""
    if tsresol is not None:
        options += struct.pack(order + "HH", 9, 1) + _pad(bytes([tsresol]))
    if tsoffset is not None:
        options += struct.pack(order + "HHq", 14, 8, tsoffset)
    if options:
        options += struct.pack(order + "HH", 0, 0)
    return block(order, 1, struct.pack(order + "HHI", link_type, 0, 0) + options)


def epb(order: str, interface: int, units: int, data: bytes, orig_len: int | None = None) -> bytes:
    head = struct.pack(order + "IIIII", interface, units >> 32, units & 0xFFFFFFFF, len(data),
                       len(data) if orig_len is None else orig_len)
    return block(order, 6, head + data)


def opb(order: str, interface: int, units: int, data: bytes) -> bytes:
    """The obsolete Packet Block (type 2): 16-bit interface id and drops count, then as an EPB."""
    head = struct.pack(order + "HHIIII", interface, 0, units >> 32, units & 0xFFFFFFFF, len(data), len(data))
    return block(order, 2, head + data)


def spb(order: str, data: bytes) -> bytes:
    return block(order, 3, struct.pack(order + "I", len(data)) + data)


def to_units(ts_ns: int, tsresol: int, tsoffset: int = 0) -> int:
    """Timestamp units of an interface; the test picks timestamps that every resolution represents exactly."""
    ts_ns -= tsoffset * 1_000_000_000
    if tsresol & 0x80:
        units, rest = divmod(ts_ns << (tsresol & 0x7F), 1_000_000_000)
    else:
        units, rest = divmod(ts_ns * 10 ** tsresol, 1_000_000_000)
    assert rest == 0, (ts_ns, tsresol)
    return units


def strip_ethernet(packet: Packet) -> bytes:
    return packet.data[14:]


def sll2(packet: Packet) -> bytes:
    """LINKTYPE_LINUX_SLL2 header (protocol, reserved, ifindex, ARPHRD_ETHER, packet type, address) + payload."""
    ethertype = packet.data[12:14]
    return ethertype + b"\0\0" + struct.pack("!IHBB", 2, 1, 4, 6) + packet.data[6:12] + b"\0\0" + packet.data[14:]


def vlan(packet: Packet, tags: list[tuple[int, int]]) -> bytes:
    inserted = b"".join(struct.pack("!HH", tpid, vid) for tpid, vid in tags)
    return packet.data[:12] + inserted + packet.data[12:]


def ipv6(packet: Packet) -> bytes:
    """The IPv4 packet re-homed into IPv6 (2001:db8::<v4 address>), same transport header and payload."""
    data = packet.data
    ihl = (data[14] & 0x0F) * 4
    total = struct.unpack_from("!H", data, 16)[0]
    proto, src, dst = data[23], data[26:30], data[30:34]
    transport = data[14 + ihl:14 + total]
    head = struct.pack("!IHBB", 6 << 28, len(transport), proto, 64) + b"\x20\x01\x0d\xb8" + b"\0" * 8 + src + \
        b"\x20\x01\x0d\xb8" + b"\0" * 8 + dst
    return data[:12] + b"\x86\xdd" + head + transport


def with_data(packets: list[Packet], transform: Callable[[Packet], bytes]) -> list[Packet]:
    out = []
    for packet in packets:
        data = transform(packet)
        out.append(Packet(packet.ts_ns, packet.orig_len + len(data) - len(packet.data), data))
    return out


# -- tests

def test_every_container_format_gives_the_same_packets_and_tables_as_tshark_sees(tmp_path: Path) -> None:
    packets = sample_packets()
    variants = {
        "pcap-us": editcap(tmp_path, "pcap", "us.pcap"),
        "pcap-ns": editcap(tmp_path, "nsecpcap", "ns.pcap"),
        "pcapng": editcap(tmp_path, "pcapng", "sample.pcapng"),
    }
    variants["pcapng-zstd"] = zstd(variants["pcapng"])
    variants["pcap-ns-zstd"] = zstd(variants["pcap-ns"])
    for name, order, nanosecond in (("pcap-us-be", ">", False), ("pcap-ns-be", ">", True)):
        variants[name] = tmp_path / f"{name}.pcap"
        variants[name].write_bytes(pcap_bytes(packets, order, nanosecond))
    big_endian_ng = tmp_path / "be.pcapng"
    big_endian_ng.write_bytes(shb(">") + idb(">", LINKTYPE_ETHERNET, 9) +
                              b"".join(epb(">", 0, p.ts_ns, p.data, p.orig_len) for p in packets))
    variants["pcapng-be"] = big_endian_ng

    reference = dissect(SAMPLE)
    assert reference["connections"].num_rows == tshark_conversations(SAMPLE)
    for name, path in variants.items():
        reader, read = read_all(path)
        plain = path.with_suffix("") if path.suffix == ".zst" else path
        frames = tshark_frames(plain)
        assert [(p.ts_ns, p.orig_len, len(p.data)) for _, p in read] == frames, name
        assert {link for link, _ in read} == {LINKTYPE_ETHERNET}, name
        assert reader.problems == {}, name
        tables = dissect(path)
        for table, rows in reference.items():
            assert tables[table].equals(rows), f"{name}: {table} differs"


def test_pcapng_interfaces_resolutions_offsets_simple_packets_and_unknown_blocks(tmp_path: Path) -> None:
    packets = sample_packets()
    # Interface 0: Ethernet, ns; 1: raw IP, 2^-20 s with an offset; 2: Ethernet, default µs. A second section
    # in the other byte order declares its own interface 0 (ids are per section) with a 10^-4 resolution.
    sections = [
        ("<", [(LINKTYPE_ETHERNET, 9, None), (LINKTYPE_RAW, 0x80 | 20, 1_000), (LINKTYPE_ETHERNET, None, None)]),
        (">", [(LINKTYPE_ETHERNET, 4, None)]),
    ]
    unknown = block("<", 0x0BADC0DE, b"an unknown block type is skipped")
    custom = block("<", 0x00000BAD, b"\0\0\0\x01custom")
    out = [shb("<")]
    out += [idb("<", link, resol, offset) for link, resol, offset in sections[0][1]]
    out.append(unknown)
    expected: list[tuple[int, int, int]] = []  # (ts_ns, link type, data length)
    half = len(packets) // 2
    for index, packet in enumerate(packets[:half]):
        interface = index % 3
        link, resol, offset = sections[0][1][interface]
        # Times every resolution here represents exactly: whole ms, or whole 2^-9 s (1953125 ns) for 2^-20 s.
        grain = 1_953_125 if resol is not None and resol & 0x80 else 1_000_000
        ts = packet.ts_ns - packet.ts_ns % grain
        data = strip_ethernet(packet) if link == LINKTYPE_RAW else packet.data
        units = to_units(ts, resol if resol is not None else 6, offset or 0)
        # Every seventh packet as an obsolete Packet Block, which old writers still produce.
        out.append(opb("<", interface, units, data) if index % 7 == 6 else epb("<", interface, units, data))
        expected.append((ts, link, len(data)))
        if index == 5:
            out.append(custom)
    out.append(shb(">"))
    out.append(idb(">", LINKTYPE_ETHERNET, 4))
    for packet in packets[half:]:
        ts = packet.ts_ns - packet.ts_ns % 1_000_000
        out.append(epb(">", 0, to_units(ts, 4), packet.data))
        expected.append((ts, LINKTYPE_ETHERNET, len(packet.data)))
    # A simple packet block has no timestamp: it follows the last packet's.
    out.append(spb(">", packets[-1].data))
    expected.append((expected[-1][0], LINKTYPE_ETHERNET, len(packets[-1].data)))
    path = tmp_path / "multi.pcapng"
    path.write_bytes(b"".join(out))

    reader, read = read_all(path)
    assert reader.problems == {}
    assert [(p.ts_ns, link, len(p.data)) for link, p in read] == expected
    # Wireshark shows a custom block as a "data" frame; only frames with a link layer are packets.
    frames = tshark_frames(path, "eth or raw")
    assert len(frames) == len(read)
    # tshark shows a simple packet block without a time; compare the packets that carry one.
    assert [ts for ts, _, _ in frames[:-1]] == [p.ts_ns for _, p in read[:-1]]
    assert [length for _, length, _ in frames] == [p.orig_len for _, p in read]
    # Raw-IP and Ethernet interfaces mixed in one file still give tshark's conversations.
    tables = dissect(path)
    assert tables["connections"].num_rows == tshark_conversations(path)
    assert tables["connections"].column("packets_out").to_pylist() != []


@pytest.mark.parametrize("variant", ["sll2", "vlan", "qinq", "ipv6"])
def test_link_and_network_variants_match_tshark(tmp_path: Path, variant: str) -> None:
    packets = sample_packets()
    link_type = LINKTYPE_ETHERNET
    if variant == "sll2":
        built, link_type = with_data(packets, sll2), LINKTYPE_LINUX_SLL2
    elif variant == "vlan":
        built = with_data(packets, lambda p: vlan(p, [(0x8100, 42)]))
    elif variant == "qinq":
        built = with_data(packets, lambda p: vlan(p, [(0x88A8, 100), (0x8100, 42)]))
    else:
        built = with_data(packets, ipv6)
    path = tmp_path / f"{variant}.pcapng"
    assert EDITCAP is not None
    plain = tmp_path / f"{variant}.pcap"
    plain.write_bytes(pcap_bytes(built, "<", True, link_type))
    subprocess.run([EDITCAP, "-F", "pcapng", str(plain), str(path)], check=True)
    tables = dissect(path)
    connections = tables["connections"]
    assert connections.num_rows == tshark_conversations(path)
    assert sum(connections.column("packets_out").to_pylist() + connections.column("packets_in").to_pylist()) == \
        len(tshark_frames(path))
    # Only the link/network header changed: everything above it is what the Ethernet/IPv4 original gives.
    reference = dissect(SAMPLE)["connections"]
    same = ["proto", "src_port", "dst_port", "first_ts_ns", "last_ts_ns", "packets_out", "packets_in",
            "payload_bytes_out", "payload_bytes_in", "completeness"]
    assert connections.select(same).equals(reference.select(same))


def test_snaplen_cut_packets_keep_their_wire_lengths_and_counts(tmp_path: Path) -> None:
    assert EDITCAP is not None
    cut = tmp_path / "cut.pcapng"
    # 80 bytes: Ethernet, IPv4 and a TCP header with options survive, most payloads do not. (Below the TCP
    # options, tshark itself drops conversations whose every header is cut, so it is no reference there.)
    subprocess.run([EDITCAP, "-s", "80", "-F", "pcapng", str(SAMPLE), str(cut)], check=True)
    frames = tshark_frames(cut)
    assert max(captured for _, _, captured in frames) == 80
    reader, read = read_all(cut)
    assert [(p.ts_ns, p.orig_len, len(p.data)) for _, p in read] == frames
    assert reader.problems == {}
    tables = dissect(cut)
    assert tables["connections"].num_rows == tshark_conversations(cut)
    # Lengths come from the frame's original length and the IP header, so cutting the capture changes none.
    same = ["conn_id", "packets_out", "packets_in", "bytes_out", "bytes_in", "payload_bytes_out",
            "payload_bytes_in", "completeness"]
    assert tables["connections"].select(same).equals(dissect(SAMPLE)["connections"].select(same))


@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_reading_streams_in_bounded_memory(tmp_path: Path, fmt: str) -> None:
    """A 24 MB zstd capture is read with a peak of Python allocations far below its size."""
    import tracemalloc

    frame = next(p for p in sample_packets() if len(p.data) > 200).data
    frame = frame + b"\0" * (1514 - len(frame))  # full-size frames: many bytes, few packets, a fast test
    packets = 16_000
    first_ns = 1_767_225_600_000_000_000
    path = tmp_path / f"big.{fmt}.zst"
    with path.open("wb") as raw, zstandard.ZstdCompressor(level=1).stream_writer(raw) as out:
        if fmt == "pcapng":
            out.write(shb("<") + idb("<", LINKTYPE_ETHERNET, 9))
            for index in range(packets):
                out.write(epb("<", 0, first_ns + index * 1000, frame))
        else:
            out.write(pcap_bytes([], "<", True))
            for index in range(packets):
                out.write(pcap_bytes([Packet(first_ns + index * 1000, len(frame), frame)], "<", True)[24:])
    size = 0
    count = 0
    tracemalloc.start()
    try:
        with path.open("rb") as stream:
            for _link_type, run in open_capture(stream).runs():
                count += len(run)
                size += sum(len(p.data) for p in run)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == packets and size == packets * 1514
    print(f"{fmt}: peak {peak:,} bytes of Python allocations for {size:,} bytes of packets")
    assert peak < 8_000_000, f"peak {peak:,} bytes while reading {size:,} bytes of packets"


def test_damage_is_named_located_and_survived() -> None:
    packets = sample_packets()[:10]
    good = [epb("<", 0, p.ts_ns, p.data, p.orig_len) for p in packets]
    bad_interface = epb("<", 5, packets[0].ts_ns, packets[0].data)
    overlong = bytearray(epb("<", 0, packets[0].ts_ns, packets[0].data))
    overlong[20:24] = struct.pack("<I", len(overlong))  # captured length beyond its own block
    data = shb("<") + idb("<", LINKTYPE_ETHERNET, 9) + b"".join(good[:3]) + bad_interface + bytes(overlong) + \
        b"".join(good[3:])
    reader = open_capture(io.BytesIO(data))
    assert list(reader) == packets
    assert reader.problems["unknown_interface"].first_packet == 3
    assert reader.problems["bad_captured_length"].count == 1

    # Classic pcap: an impossible original length keeps the packet (its captured length is framed) ...
    raw = bytearray(pcap_bytes(packets, "<", True))
    first_record = 24
    raw[first_record + 12:first_record + 16] = struct.pack("<I", 1)  # orig_len 1 < incl_len
    reader = open_capture(io.BytesIO(bytes(raw)))
    read = list(reader)
    assert [p.data for p in read] == [p.data for p in packets]
    assert read[0].orig_len == len(packets[0].data)
    assert reader.problems["bad_original_length"].first_offset == first_record
    # ... and garbage in place of the first record header is skipped by a scan for two believable records.
    raw = pcap_bytes(packets, "<", True)
    reader = open_capture(io.BytesIO(raw[:24] + b"\xff" * 37 + raw[24:]))
    assert list(reader) == packets
    assert reader.problems["garbage_skipped"].message == "skipped 37 bytes to the next believable record"
