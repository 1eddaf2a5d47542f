"""Lean reading and writing of classic pcap streams (libpcap format, µs and ns, both byte orders).

The record header is a fixed 16-byte struct, so a struct walk over it is the fast path; see
https://www.ietf.org/archive/id/draft-ietf-opsawg-pcap-04.html. pcapng arrives with the dissection engine.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from freezeframe.errors import CaptureFormatError

MAGIC_US = 0xA1B2C3D4
MAGIC_NS = 0xA1B23C4D
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113
LINKTYPE_LINUX_SLL2 = 276
GLOBAL_HEADER_LEN = 24
RECORD_HEADER_LEN = 16
# A record longer than this is a corrupt length field, not a packet (libpcap's own cap is 256 KiB).
MAX_RECORD_LEN = 262_144


@dataclass(frozen=True, slots=True)
class PcapHeader:
    link_type: int
    snaplen: int
    nanosecond: bool
    byte_order: str  # "<" or ">"


@dataclass(frozen=True, slots=True)
class Packet:
    ts_ns: int
    orig_len: int
    data: bytes


def parse_global_header(raw: bytes) -> PcapHeader:
    if len(raw) < GLOBAL_HEADER_LEN:
        raise CaptureFormatError(f"pcap global header truncated: {len(raw)} of {GLOBAL_HEADER_LEN} bytes")
    for order in ("<", ">"):
        (magic,) = struct.unpack(order + "I", raw[:4])
        if magic in (MAGIC_US, MAGIC_NS):
            _major, _minor, _zone, _sigfigs, snaplen, link_type = struct.unpack(order + "HHiIII", raw[4:24])
            return PcapHeader(link_type=link_type & 0xFFFF, snaplen=snaplen, nanosecond=magic == MAGIC_NS,
                              byte_order=order)
    if raw[:4] == b"\x0a\x0d\x0d\x0a":
        raise CaptureFormatError("pcapng input is not supported by this reader yet")
    raise CaptureFormatError(f"not a pcap file (magic {raw[:4].hex()})")


def encode_global_header(link_type: int, snaplen: int, nanosecond: bool = True) -> bytes:
    return struct.pack("<IHHiIII", MAGIC_NS if nanosecond else MAGIC_US, 2, 4, 0, 0, snaplen, link_type)


def encode_record(ts_ns: int, data: bytes, orig_len: int | None = None) -> bytes:
    """One nanosecond-resolution record."""
    sec, frac = divmod(ts_ns, 1_000_000_000)
    return struct.pack("<IIII", sec, frac, len(data), len(data) if orig_len is None else orig_len) + data


class PcapReader:
    """Streams records from a file or a pipe. Stops cleanly at EOF; a truncated tail is counted, not raised."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self.header = parse_global_header(_read_exact(stream, GLOBAL_HEADER_LEN))
        self._record = struct.Struct(self.header.byte_order + "IIII")
        self._scale = 1 if self.header.nanosecond else 1000
        self.truncated = 0  # records cut short by EOF or with an impossible length

    @property
    def link_type(self) -> int:
        return self.header.link_type

    def __iter__(self) -> Iterator[Packet]:
        stream = self._stream
        # A pipe or an unbuffered stream may return short reads; only a short read at EOF is a truncated record.
        read = stream.read

        def read_exact(size: int) -> bytes:
            data = read(size)
            return data if len(data) == size or not data else data + _read_exact(stream, size - len(data))

        unpack = self._record.unpack
        scale = self._scale
        while True:
            head = read_exact(RECORD_HEADER_LEN)
            if len(head) < RECORD_HEADER_LEN:
                if head:
                    self.truncated += 1
                return
            sec, frac, incl_len, orig_len = unpack(head)
            if incl_len > MAX_RECORD_LEN:
                self.truncated += 1
                return
            data = read_exact(incl_len)
            if len(data) < incl_len:
                self.truncated += 1
                return
            yield Packet(sec * 1_000_000_000 + frac * scale, orig_len, data)


class PcapWriter:
    """Writes nanosecond pcap; the global header goes out with the first call."""

    def __init__(self, stream: BinaryIO, link_type: int, snaplen: int = 262_144) -> None:
        self._stream = stream
        self._stream.write(encode_global_header(link_type, snaplen))
        self.packets = 0
        self.bytes = 0

    def write(self, ts_ns: int, data: bytes, orig_len: int | None = None) -> None:
        self._stream.write(encode_record(ts_ns, data, orig_len))
        self.packets += 1
        self.bytes += len(data)


def _read_exact(stream: BinaryIO, size: int) -> bytes:
    chunks = []
    remaining = size
    while remaining:
        chunk = stream.read(remaining)
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)
