"""Lean reading and writing of capture streams: classic pcap (µs and ns, both byte orders) and pcapng.

The record header is a fixed 16-byte struct, so a struct walk over it is the fast path; see
https://www.ietf.org/archive/id/draft-ietf-opsawg-pcap-04.html (pcap) and
https://www.ietf.org/archive/id/draft-ietf-opsawg-pcapng-03.html (pcapng).

Two readers:

- ``PcapReader`` reads classic pcap with exact-size reads, so it works on a live pipe (tcpdump -w -).
- ``open_capture`` is the dissection input: it detects zstd, pcap and pcapng by their magic numbers and
  returns a ``CaptureReader`` that reads in bounded chunks (memory is bounded by the chunk size and the
  largest block, never by the file), gives each run of packets its link type (pcapng interfaces may differ),
  and counts every problem (truncation, impossible lengths, garbage) as a ``ReadProblem`` instead of raising.
  After a corrupt record it resynchronises on the next plausible record or block, so the valid parts
  after the damage are still read.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, NamedTuple

import zstandard

from freezeframe.contracts.errors import CaptureFormatError

MAGIC_US = 0xA1B2C3D4
MAGIC_NS = 0xA1B23C4D
# Link-layer header types (tcpdump.org/linktypes.html): the one place freezeframe names them. pcap, pcapng, libpcap's
# DLT_ values and the compiled core (layers/native) use the same numbers.
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
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


class Packet(NamedTuple):
    """One captured frame. A named tuple, not a dataclass: building and unpacking millions of them is the
    readers' and the dissection loop's hot path (``for ts_ns, orig_len, data in packets``)."""

    ts_ns: int
    orig_len: int
    data: bytes


# Builds a Packet without the Python-level __new__ of a named tuple (measured faster on the readers' hot paths).
_new_tuple = tuple.__new__


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
        raise CaptureFormatError("pcapng input needs open_capture; PcapReader reads classic pcap only")
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
            yield _new_tuple(Packet, (sec * 1_000_000_000 + frac * scale, orig_len, data))


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


# ---------------------------------------------------------------------------------------------------------------
# Dissection input: pcap and pcapng, zstd or not, bounded memory, problems counted and survived.

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"
BLOCK_SHB = 0x0A0D0D0A
BLOCK_IDB = 1
BLOCK_OPB = 2  # obsolete Packet Block (pcapng drafts before EPB)
BLOCK_SPB = 3
BLOCK_NRB = 4
BLOCK_ISB = 5
BLOCK_EPB = 6
BLOCK_DSB = 10
BYTE_ORDER_MAGIC = {b"\x4d\x3c\x2b\x1a": "<", b"\x1a\x2b\x3c\x4d": ">"}
OPTION_IF_TSRESOL = 9
OPTION_IF_TSOFFSET = 14
# Reads stay below glibc's mmap threshold (128 KiB): 1 MiB reads were mapped and unmapped each time, and the page
# faults of that churn cost 0.1-0.3 s of system time per million packets (measured: 55 k faults became 2 k).
READ_CHUNK = 64 << 10
# A pcapng block longer than this is a corrupt length field (a 256 KiB packet plus generous options fits).
MAX_BLOCK_LEN = 16 << 20
# An original length above this is a corrupt field, not a frame (GSO / BIG TCP super-frames stay far below).
MAX_ORIG_LEN = 1 << 20
# How far a resynchronisation looks ahead per step, and how far it walks byte by byte without a time anchor.
RESYNC_WINDOW = 4 << 20
RESYNC_BLIND_SCAN = 256 << 10
RUN_PACKETS = 256  # small runs keep the packets of a run young for the garbage collector (measured faster)
# A run also ends after this many bytes (pcap runs end with the read buffer anyway), bounding memory per run.
RUN_BYTES = 1 << 20
# if_tsresol exponents beyond these are corrupt (10^-18 s and 2^-63 s are already far below any clock).
MAX_TSRESOL_EXPONENT = 63
MAX_DECIMAL_EXPONENT = 18
MAX_TS_NS = (1 << 63) - 1  # timestamps are stored as signed 64-bit nanoseconds

PacketRun = tuple[int, list[Packet]]
"""A link type and consecutive packets that share it."""

# Record batches (the vectorised dissection input) span about this many bytes of the stream.
BATCH_BYTES = 16 << 20


class RecordBatch(NamedTuple):
    """Consecutive whole, sane pcap records sharing a link type, left in the bytes they were read into.

    ``starts`` are the offsets of the 16-byte record headers in ``buf`` (pcap layout, ``byte_order``, fractions in
    ns when ``nanosecond`` else in µs): the vectorised dissection path gathers every header field from them at
    once instead of building a ``Packet`` per record. pcapng packets are re-encoded into this layout, with their
    times in ``ts_ns`` (a pcapng time can be past what 32-bit pcap seconds hold).
    """

    link_type: int
    buf: bytes
    starts: list[int]
    byte_order: str
    nanosecond: bool
    ts_ns: list[int] | None = None  # when set, the records' times (their headers' time fields are then 0)


@dataclass(slots=True)
class ReadProblem:
    """One kind of damage found while reading a capture: how often, and where it was first seen."""

    kind: str
    count: int
    first_offset: int  # byte offset in the (decompressed) capture stream
    first_packet: int  # packets read before it, i.e. the 0-based index of the next good packet
    message: str


@dataclass(frozen=True, slots=True)
class Interface:
    """A pcapng Interface Description Block, reduced to what timestamps and decoding need."""

    link_type: int
    snaplen: int
    ts_mult: int  # ns = units * ts_mult // ts_div (decimal resolutions) ...
    ts_div: int
    ts_shift: int  # ... or ns = (units * 10**9) >> ts_shift for binary resolutions (-1 when decimal)
    ts_offset_ns: int

    def ns(self, units: int) -> int:
        if self.ts_shift >= 0:
            return ((units * 1_000_000_000) >> self.ts_shift) + self.ts_offset_ns
        return units * self.ts_mult // self.ts_div + self.ts_offset_ns


def interface_from_idb(link_type: int, snaplen: int, tsresol: int = 6, tsoffset_s: int = 0) -> Interface:
    """if_tsresol: high bit clear means 10^-n seconds, set means 2^-n seconds (pcapng 4.2)."""
    if tsresol & 0x80:
        return Interface(link_type, snaplen, 1, 1, tsresol & 0x7F, tsoffset_s * 1_000_000_000)
    exponent = tsresol
    if exponent <= 9:
        return Interface(link_type, snaplen, 10 ** (9 - exponent), 1, -1, tsoffset_s * 1_000_000_000)
    return Interface(link_type, snaplen, 1, 10 ** (exponent - 9), -1, tsoffset_s * 1_000_000_000)


class _PrefixedStream:
    """The bytes already peeked from a stream, then the rest of it (zstd needs to see its magic again)."""

    def __init__(self, head: bytes, stream: BinaryIO) -> None:
        self._head = head
        self._stream = stream

    def read(self, size: int = -1) -> bytes:
        if not self._head:
            return self._stream.read(size)
        if size < 0:
            head, self._head = self._head, b""
            return head + self._stream.read()
        head, self._head = self._head[:size], self._head[size:]
        return head + self._stream.read(size - len(head)) if len(head) < size else head


class CaptureReader:
    """Common buffer handling of the dissection readers. Iterate ``runs()`` (or the reader itself for packets)."""

    format = "capture"

    def __init__(self, read: Callable[[int], bytes], head: bytes, compression: str) -> None:
        self._read = read
        self._buf = head
        self._pos = 0
        self._base = 0  # stream offset of self._buf[0]
        self._eof = False
        self.compression = compression
        self.problems: dict[str, ReadProblem] = {}
        self.packets = 0  # packets handed out so far

    # -- problems
    def problem(self, kind: str, offset: int, message: str) -> None:
        found = self.problems.get(kind)
        if found is None:
            self.problems[kind] = ReadProblem(kind, 1, offset, self.packets, message)
        else:
            found.count += 1

    @property
    def truncated(self) -> int:
        """Records or blocks cut short by the end of the stream."""
        found = self.problems.get("truncated")
        return found.count if found else 0

    @property
    def offset(self) -> int:
        return self._base + self._pos

    # -- buffer
    def _fill(self, need: int) -> bool:
        """Make ``need`` bytes available from the current position; False at the end of the stream."""
        avail = len(self._buf) - self._pos
        if avail >= need:
            return True
        if self._eof:
            return False
        parts = [self._buf[self._pos:]]
        self._base += self._pos
        self._pos = 0
        while avail < need:
            try:
                chunk = self._read(max(READ_CHUNK, need - avail))
            except zstandard.ZstdError as exc:
                self.problem("zstd_corrupt", self._base + avail, f"zstd stream is corrupt: {exc}")
                chunk = b""
            if not chunk:
                self._eof = True
                break
            parts.append(chunk)
            avail += len(chunk)
        self._buf = b"".join(parts)
        return avail >= need

    def _fill_window(self, size: int) -> None:
        self._fill(size)  # a short result just means the end of the stream is inside the window

    # -- iteration
    def runs(self, max_packets: int = RUN_PACKETS) -> Iterator[PacketRun]:
        """Consecutive packets sharing a link type, at most ``max_packets`` (and about 1 MiB) at a time."""
        raise NotImplementedError

    def record_batches(self, max_bytes: int = BATCH_BYTES) -> Iterator[RecordBatch]:
        """The packets of ``runs()`` as record batches of about ``max_bytes``: they re-encoded as pcap records."""
        link_type = -1
        parts: list[bytes] = []
        starts: list[int] = []
        times: list[int] = []
        size = 0
        for run_link, packets in self.runs():
            if run_link != link_type or size >= max_bytes:
                if starts:
                    yield RecordBatch(link_type, b"".join(parts), starts, "<", True, times)
                link_type, parts, starts, times, size = run_link, [], [], [], 0
            for ts_ns, orig_len, data in packets:
                starts.append(size)
                times.append(ts_ns)
                record = encode_record(0, data, orig_len)
                parts.append(record)
                size += len(record)
        if starts:
            yield RecordBatch(link_type, b"".join(parts), starts, "<", True, times)

    def __iter__(self) -> Iterator[Packet]:
        for _link_type, packets in self.runs():
            yield from packets


class PcapFileReader(CaptureReader):
    """Classic pcap from a chunked source; see ``open_capture``."""

    format = "pcap"

    def __init__(self, read: Callable[[int], bytes], head: bytes, compression: str) -> None:
        super().__init__(read, head, compression)
        if not self._fill(GLOBAL_HEADER_LEN):
            raise CaptureFormatError(f"pcap global header truncated: {len(self._buf)} of {GLOBAL_HEADER_LEN} bytes")
        self.header = parse_global_header(self._buf[:GLOBAL_HEADER_LEN])
        self._pos = GLOBAL_HEADER_LEN
        self._record = struct.Struct(self.header.byte_order + "IIII")
        self._frac_limit = 1_000_000_000 if self.header.nanosecond else 1_000_000
        self._last_sec: int | None = None

    @property
    def link_type(self) -> int:
        return self.header.link_type

    def _plausible(self, buf: bytes, pos: int) -> int:
        """Length of the record at ``pos`` if its header is believable, else -1 (used only while resyncing)."""
        sec, frac, incl_len, orig_len = self._record.unpack_from(buf, pos)
        if frac >= self._frac_limit or incl_len > MAX_RECORD_LEN or not incl_len <= orig_len <= MAX_ORIG_LEN:
            return -1
        if self._last_sec is not None and abs(sec - self._last_sec) > 0x20000:
            return -1
        return RECORD_HEADER_LEN + incl_len

    def _resync(self) -> bool:
        """Skip to the next offset where two consecutive believable records start (or one that ends the file)."""
        start = self.offset
        self._pos += 1
        while True:
            self._fill_window(RESYNC_WINDOW)
            buf, size = self._buf, len(self._buf)
            if self._last_sec is not None:
                # Records near the last good one share the high 16 bits of their seconds (or the next value).
                high = self._last_sec >> 16
                patterns = [struct.pack(self.header.byte_order + "H", h & 0xFFFF) for h in (high, high + 1)]
                shift = 2 if self.header.byte_order == "<" else 0
                candidates = self._pattern_positions(buf, self._pos, patterns, shift)
            else:
                candidates = iter(range(self._pos, min(size, self._pos + RESYNC_BLIND_SCAN)))
            for pos in candidates:
                if pos + RECORD_HEADER_LEN > size:
                    break
                length = self._plausible(buf, pos)
                if length < 0:
                    continue
                after = pos + length
                if after + RECORD_HEADER_LEN <= size:
                    following = self._plausible(buf, after)
                    if following < 0:
                        continue
                elif not (self._eof and after == size):
                    continue
                self._pos = pos
                self.problem("garbage_skipped", start, f"skipped {self._base + pos - start} bytes to the next "
                                                     "believable record")
                return True
            if self._eof or self._last_sec is None:
                self.problem("unrecoverable", start, "no believable record after a corrupt one; rest ignored")
                return False
            # Nothing in this window: keep its last header-length bytes (a record may straddle) and move on.
            self._pos = max(self._pos, size - RECORD_HEADER_LEN)

    @staticmethod
    def _pattern_positions(buf: bytes, start: int, patterns: list[bytes], shift: int) -> Iterator[int]:
        """Ascending positions p >= start with one of ``patterns`` at p + shift."""
        nexts = [buf.find(pattern, start + shift) for pattern in patterns]
        while True:
            live = [n for n in nexts if n >= 0]
            if not live:
                return
            found = min(live)
            yield found - shift
            nexts = [buf.find(patterns[i], found + 1) if n == found else n for i, n in enumerate(nexts)]

    def runs(self, max_packets: int = RUN_PACKETS) -> Iterator[PacketRun]:
        """The packets of ``record_batches()`` (the same walk, the same judgements), at most ``max_packets`` a run."""
        link_type = self.header.link_type
        new = _new_tuple
        for batch in self.record_batches(RUN_BYTES):
            unpack = _RECORD_HEADERS[batch.byte_order].unpack_from
            scale = 1 if batch.nanosecond else 1000
            buf, times = batch.buf, batch.ts_ns
            run: list[Packet] = []
            for index, start in enumerate(batch.starts):
                sec, frac, incl_len, orig_len = unpack(buf, start)
                data = buf[start + RECORD_HEADER_LEN:start + RECORD_HEADER_LEN + incl_len]
                run.append(new(Packet, (times[index] if times is not None else sec * 1_000_000_000 + frac * scale,
                                        orig_len, data)))
                if len(run) >= max_packets:
                    yield link_type, run
                    run = []
            if run:
                yield link_type, run

    def record_batches(self, max_bytes: int = BATCH_BYTES) -> Iterator[RecordBatch]:
        """Batches of whole, sane records straight from the read buffer, each record header read once.

        The walk judges each record (lengths, fraction) and keeps only its offset; a record that needs a decision
        (bad lengths, truncation, garbage to resynchronise past) goes to the general path, and a packet kept from
        there comes as a one-record batch. ``runs()`` is built on this, so both read exactly the same records.
        """
        unpack = self._record.unpack_from
        link_type = self.header.link_type
        order, nanosecond = self.header.byte_order, self.header.nanosecond
        frac_limit = self._frac_limit
        while True:
            self._fill_window(max_bytes)
            buf, pos = self._buf, self._pos
            size = len(buf)
            limit = size - RECORD_HEADER_LEN
            starts: list[int] = []
            append = starts.append
            limit = min(limit, pos + max_bytes - 1)  # a batch holds at least one record, then about max_bytes
            while pos <= limit:
                sec, frac, incl_len, orig_len = unpack(buf, pos)
                end = pos + RECORD_HEADER_LEN + incl_len
                if end > size or incl_len > MAX_RECORD_LEN or frac >= frac_limit or \
                        not incl_len <= orig_len <= MAX_ORIG_LEN:
                    break
                append(pos)
                pos = end
            self._pos = pos
            if starts:
                self._last_sec = unpack(buf, starts[-1])[0]
                self.packets += len(starts)
                yield RecordBatch(link_type, buf, starts, order, nanosecond)
            go_on, packet = self._general_record()
            if packet is not None:
                yield RecordBatch(link_type, encode_record(0, packet.data, packet.orig_len), [0], "<", True,
                                  [packet.ts_ns])
            if not go_on:
                return

    def _general_record(self) -> tuple[bool, Packet | None]:
        """Judges the record where a fast walk stopped: whether reading goes on, and a packet kept despite damage.

        Most stops are just the end of the buffer: the record is completed from the stream and the walk resumes.
        """
        unpack = self._record.unpack_from
        if not self._fill(RECORD_HEADER_LEN):
            if len(self._buf) > self._pos:
                self.problem("truncated", self.offset, "the stream ends inside a record header")
            return False, None
        sec, frac, incl_len, orig_len = unpack(self._buf, self._pos)
        if incl_len > MAX_RECORD_LEN or frac >= self._frac_limit:
            self.problem("bad_record_header", self.offset,
                         f"record header with captured length {incl_len} and fraction {frac}")
            return self._resync(), None
        if not self._fill(RECORD_HEADER_LEN + incl_len):
            self.problem("truncated", self.offset, f"the stream ends inside a record of {incl_len} bytes")
            return False, None
        if incl_len <= orig_len <= MAX_ORIG_LEN:
            return True, None
        # The data is there and framed: keep the packet, count the field, trust the captured length.
        self.problem("bad_original_length", self.offset, f"original length {orig_len} with captured length {incl_len}")
        start = self._pos + RECORD_HEADER_LEN
        self._pos = start + incl_len
        self._last_sec = sec
        self.packets += 1
        scale = 1 if self.header.nanosecond else 1000
        return True, Packet(sec * 1_000_000_000 + frac * scale, incl_len, self._buf[start:self._pos])


class PcapngReader(CaptureReader):
    """pcapng sections, interfaces and packet blocks from a chunked source; see ``open_capture``."""

    format = "pcapng"

    def __init__(self, read: Callable[[int], bytes], head: bytes, compression: str) -> None:
        super().__init__(read, head, compression)
        self._order = "<"
        self.interfaces: list[Interface] = []
        self.sections = 0
        if not self._fill(28) or self._section_order(self._pos) is None:
            raise CaptureFormatError("pcapng section header block is truncated or has no byte-order magic")
        self._last_ts_ns = 0

    def _section_order(self, pos: int) -> str | None:
        return BYTE_ORDER_MAGIC.get(self._buf[pos + 8:pos + 12])

    @property
    def link_types(self) -> list[int]:
        return [interface.link_type for interface in self.interfaces]

    def _block_ok(self, pos: int) -> bool:
        """Whether a whole, self-consistent block starts at ``pos`` of the current buffer (used while resyncing)."""
        buf = self._buf
        if pos + 12 > len(buf):
            return False
        block_type = struct.unpack_from(self._order + "I", buf, pos)[0]
        order = self._order
        if block_type == BLOCK_SHB:
            found = self._section_order(pos)
            if found is None:
                return False
            order = found
        length = struct.unpack_from(order + "I", buf, pos + 4)[0]
        if length < 12 or length % 4 or length > MAX_BLOCK_LEN or pos + length > len(buf):
            return False
        return struct.unpack_from(order + "I", buf, pos + length - 4)[0] == length

    def _resync(self) -> bool:
        start = self.offset
        self._pos += 1
        kinds = (BLOCK_EPB, BLOCK_SPB, BLOCK_IDB, BLOCK_ISB, BLOCK_NRB, BLOCK_OPB, BLOCK_DSB)
        while True:
            self._fill_window(RESYNC_WINDOW)
            buf = self._buf
            patterns = [struct.pack(self._order + "I", kind) for kind in kinds] + [PCAPNG_MAGIC]
            for pos in PcapFileReader._pattern_positions(buf, self._pos, patterns, 0):
                if self._block_ok(pos):
                    self._pos = pos
                    self.problem("garbage_skipped", start, f"skipped {self._base + pos - start} bytes to the next "
                                                         "consistent block")
                    return True
            if self._eof:
                self.problem("unrecoverable", start, "no consistent block after a corrupt one; rest ignored")
                return False
            self._pos = max(self._pos, len(buf) - 12)

    def _interface(self, pos: int, length: int) -> Interface:
        order = self._order
        buf = self._buf
        link_type, _reserved, snaplen = struct.unpack_from(order + "HHI", buf, pos + 8)
        tsresol, tsoffset = 6, 0
        option = pos + 16
        end = pos + length - 4
        while option + 4 <= end:
            code, size = struct.unpack_from(order + "HH", buf, option)
            if code == 0:
                break
            value = option + 4
            if value + size > end:
                self.problem("bad_option", self._base + option, f"interface option {code} of {size} bytes overruns "
                                                               "its block")
                break
            if code == OPTION_IF_TSRESOL and size >= 1:
                resolution = buf[value]
                if resolution & 0x7F > (MAX_TSRESOL_EXPONENT if resolution & 0x80 else MAX_DECIMAL_EXPONENT):
                    self.problem("bad_option", self._base + option, f"if_tsresol {resolution:#x} is not a usable "
                                                                   "resolution; microseconds assumed")
                else:
                    tsresol = resolution
            elif code == OPTION_IF_TSOFFSET and size >= 8:
                tsoffset = struct.unpack_from(order + "q", buf, value)[0]
            option = value + (size + 3) // 4 * 4
        return interface_from_idb(link_type, snaplen, tsresol, tsoffset)

    def runs(self, max_packets: int = RUN_PACKETS) -> Iterator[PacketRun]:
        batch: list[Packet] = []
        batch_bytes = 0
        batch_link = -1
        while True:
            # Fast path: whole, well-formed Enhanced Packet Blocks already in the buffer. Anything else (another
            # block type, a block past the buffer's end, any inconsistency) goes to the general path below.
            byte_order = self._order
            head, trailer, epb_fields = _BLOCK_HEAD[byte_order], _BLOCK_TRAILER[byte_order], _EPB_FIELDS[byte_order]
            interfaces = self.interfaces
            buf, pos = self._buf, self._pos
            size = len(buf)
            while pos + 12 <= size:
                block_type, length = head(buf, pos)
                end = pos + length
                if block_type != BLOCK_EPB or end > size or length < 32 or length & 3 or \
                        trailer(buf, end - 4)[0] != length:
                    break
                interface_id, high, low, captured, original = epb_fields(buf, pos + 8)
                if interface_id >= len(interfaces) or captured > length - 32 or \
                        not captured <= original <= MAX_ORIG_LEN:
                    break
                described = interfaces[interface_id]
                ts_ns = described.ns(high << 32 | low)
                if not 0 <= ts_ns <= MAX_TS_NS:
                    break
                if described.link_type != batch_link or len(batch) >= max_packets or batch_bytes >= RUN_BYTES:
                    if batch:
                        self._pos = pos
                        yield batch_link, batch
                    batch = []
                    batch_bytes = 0
                    batch_link = described.link_type
                batch.append(_new_tuple(Packet, (ts_ns, original, buf[pos + 28:pos + 28 + captured])))
                batch_bytes += length
                self.packets += 1
                self._last_ts_ns = ts_ns
                pos = end
            self._pos = pos
            if not self._fill(12):
                if len(self._buf) > self._pos:
                    self.problem("truncated", self.offset, "the stream ends inside a block header")
                break
            buf, pos = self._buf, self._pos
            block_type = struct.unpack_from(self._order + "I", buf, pos)[0]
            if block_type == BLOCK_SHB:
                order = self._section_order(pos)
                if order is None:
                    self.problem("bad_section_header", self.offset, "section header without byte-order magic")
                    if not self._resync():
                        break
                    continue
                self._order = order
            order = self._order
            length = struct.unpack_from(order + "I", buf, pos + 4)[0]
            if length < 12 or length % 4 or length > MAX_BLOCK_LEN:
                self.problem("bad_block_length", self.offset, f"block type {block_type:#x} with length {length}")
                if not self._resync():
                    break
                continue
            if not self._fill(length):
                self.problem("truncated", self.offset, f"the stream ends inside a block of {length} bytes")
                break
            buf, pos = self._buf, self._pos
            if struct.unpack_from(order + "I", buf, pos + length - 4)[0] != length:
                self.problem("bad_block_length", self.offset,
                             f"block type {block_type:#x}: trailing length differs from {length}")
                if not self._resync():
                    break
                continue
            packet: Packet | None = None
            interface: Interface | None = None
            if block_type == BLOCK_EPB or block_type == BLOCK_OPB:
                if length < 32:
                    self.problem("bad_block_length", self.offset, f"packet block of {length} bytes")
                elif block_type == BLOCK_EPB:
                    interface_id, high, low, captured, original = struct.unpack_from(order + "IIIII", buf, pos + 8)
                else:
                    interface_id, _drops, high, low, captured, original = struct.unpack_from(order + "HHIIII", buf,
                                                                                             pos + 8)
                if length >= 32:
                    if interface_id >= len(self.interfaces):
                        self.problem("unknown_interface", self.offset, f"packet on undeclared interface {interface_id}")
                    elif captured > length - 32:
                        self.problem("bad_captured_length", self.offset,
                                     f"captured length {captured} exceeds its block of {length} bytes")
                    else:
                        interface = self.interfaces[interface_id]
                        if not captured <= original <= MAX_ORIG_LEN:
                            self.problem("bad_original_length", self.offset,
                                         f"original length {original} with captured length {captured}")
                            original = captured
                        ts_ns = interface.ns(high << 32 | low)
                        if 0 <= ts_ns <= MAX_TS_NS:
                            self._last_ts_ns = ts_ns
                            packet = Packet(ts_ns, original, buf[pos + 28:pos + 28 + captured])
                        else:
                            self.problem("bad_timestamp", self.offset, f"timestamp {ts_ns} ns is outside 1970..2262")
            elif block_type == BLOCK_SPB:
                if not self.interfaces:
                    self.problem("unknown_interface", self.offset, "simple packet block before any interface")
                elif length < 16:
                    self.problem("bad_block_length", self.offset, f"simple packet block of {length} bytes")
                else:
                    interface = self.interfaces[0]
                    (original,) = struct.unpack_from(order + "I", buf, pos + 8)
                    captured = min(original, length - 16)
                    if interface.snaplen:
                        captured = min(captured, interface.snaplen)
                    if original > MAX_ORIG_LEN:
                        self.problem("bad_original_length", self.offset, f"simple packet of original length "
                                                                        f"{original}")
                        original = captured
                    # A simple packet has no timestamp: it inherits the last one, keeping the stream in time order.
                    packet = Packet(self._last_ts_ns, original, buf[pos + 12:pos + 12 + captured])
            elif block_type == BLOCK_IDB:
                if length < 20:
                    self.problem("bad_block_length", self.offset, f"interface block of {length} bytes")
                else:
                    self.interfaces.append(self._interface(pos, length))
            elif block_type == BLOCK_SHB:
                self.sections += 1
                self.interfaces = []  # interface ids are scoped to their section
            self._pos = pos + length
            if packet is not None and interface is not None:
                if interface.link_type != batch_link or len(batch) >= max_packets or batch_bytes >= RUN_BYTES:
                    if batch:
                        yield batch_link, batch
                    batch = []
                    batch_bytes = 0
                    batch_link = interface.link_type
                batch.append(packet)
                batch_bytes += length
                self.packets += 1  # counted as read, so a later problem knows its packet index
        if batch:
            yield batch_link, batch


def open_capture(stream: BinaryIO) -> CaptureReader:
    """A reader for a pcap or pcapng stream, zstd-compressed or not, chosen by magic number.

    Raises ``CaptureFormatError`` only when the stream is not a capture at all; damage after the header is
    counted in ``reader.problems``.
    """
    head = _read_exact(stream, 4)
    compression = "none"
    read: Callable[[int], bytes] = stream.read
    if head == ZSTD_MAGIC:
        compression = "zstd"
        source = _PrefixedStream(head, stream)
        decompressed = zstandard.ZstdDecompressor().stream_reader(source,  # type: ignore[arg-type]  # has read()
                                                                  read_across_frames=True)
        read = decompressed.read
        try:
            head = _read_exact(decompressed, 4)
        except zstandard.ZstdError as exc:
            raise CaptureFormatError(f"zstd stream is corrupt before the capture header: {exc}") from exc
    if len(head) < 4:
        raise CaptureFormatError(f"capture stream too short for a magic number ({len(head)} bytes)")
    if head == PCAPNG_MAGIC:
        return PcapngReader(read, head, compression)
    if head in _PCAP_MAGICS:
        return PcapFileReader(read, head, compression)
    raise CaptureFormatError(f"not a pcap or pcapng stream (magic {head.hex()})")


_BLOCK_HEAD = {order: struct.Struct(order + "II").unpack_from for order in "<>"}  # block type, total length
_BLOCK_TRAILER = {order: struct.Struct(order + "I").unpack_from for order in "<>"}  # the repeated total length
_EPB_FIELDS = {order: struct.Struct(order + "IIIII").unpack_from for order in "<>"}
_RECORD_HEADERS = {order: struct.Struct(order + "IIII") for order in "<>"}  # pcap: seconds, fraction, lengths
_PCAP_MAGICS = frozenset(struct.pack(order + "I", magic) for order in "<>" for magic in (MAGIC_US, MAGIC_NS))
