"""Rolling segments: packets cut on a time grid (or earlier, on size) into nanosecond pcap, zstd-compressed, hashed,
and handed to the spool (which writes them atomically, with a JSON sidecar that already holds the segment record).

The hot path is `add_records`: a live engine hands over raw nanosecond little-endian pcap records in large chunks
(what tcpdump writes to its pipe), and the segmenter walks only their 16-byte headers in a tight loop, copying whole
runs of records into the open segment with one slice each. Only a record that needs a decision (it crosses the
segment's end or size limit, arrives out of order, or opens a segment) takes the per-packet path `add` also uses.
A segment is compressed once, at close, into a single zstd frame that records its content size (so every reader,
including `ZstdDecompressor().decompress`, can open it).

Drops are attributed per segment: agent drops to the segment whose interval holds the dropped packets' timestamp,
kernel drops by the capture engine's running count as observed by the segment's end (so an engine that reports
periodically gets per-segment figures, and one that reports only at exit puts them on the last segment).
"""

from __future__ import annotations

import hashlib
import struct
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path

import zstandard

from freezeframe.capture.pcapio import MAX_RECORD_LEN, RECORD_HEADER_LEN, encode_global_header, encode_record
from freezeframe.contracts.errors import CaptureFormatError
from freezeframe.contracts.keys import raw_segment_key
from freezeframe_agent.spool import DEFAULT_MAX_BYTES, EXT, Spool, SpooledSegment, pending

__all__ = ["EXT", "Segmenter", "SpooledSegment", "pending"]
MAX_IDLE_FILL = 4  # at most this many periods of empty segments are filled in after one close
DEFAULT_SEGMENT_MAX_BYTES = 64 << 20
RECENT_SEGMENTS = 3  # how many of the last closed segments the health's drop check looks at
_RECORD = struct.Struct("<IIII")  # ts_sec, ts_nsec, incl_len, orig_len of a nanosecond little-endian pcap record
_NS = 1_000_000_000
_NEVER = 1 << 64  # above any timestamp a pcap record can hold: sends a record to the per-packet path


@dataclass(slots=True)
class _Open:
    start_ns: int
    end_ns: int
    body: bytearray  # the segment's nanosecond pcap: global header, then the records
    packets: int = 0
    first_ns: int | None = None
    last_ns: int | None = None
    max_ns: int | None = None  # the latest timestamp, which out-of-order packets (merged interfaces) make differ
    orig_bytes: int = 0
    agent_drops: int = 0


class Segmenter:
    """Cuts on a grid of `period_s` (so segments of different nodes line up), always at packet boundaries.

    Every packet lies in [start_ns, end_ns) of its segment, and no two segments share a key: the first segment after a
    restart starts where the previous run's last one ended, and a packet older than the last closed segment's end
    (delivered very late, or a replay of old timestamps) moves the start of the segment it lands in back to itself.
    Live, an idle tick closes a segment only `close_grace_s` after its end (libpcap may hold a packet back that
    long) and the next segment follows on at once, so idle time is covered by empty segments.

    A segment whose pcap would grow past `max_bytes` is cut early, before the packet that would overflow it: it ends
    at that packet's timestamp and the next segment starts there and runs to the same grid end, so every key names
    its own interval and the grid stays the grid. Packets sharing one timestamp are never split (the interval
    [start, end) must hold each of them), so a burst of equal timestamps may overshoot the limit by that burst.
    """

    def __init__(self, *, cluster: str, node: str, spool_dir: Path, link_type: int, snaplen: int, period_s: float,
                 capture_filter: str, agent_version: str, emit_empty: bool = False, level: int = 3,
                 spool: Spool | None = None, spool_max_bytes: int = DEFAULT_MAX_BYTES,
                 kernel_drops_until: Callable[[int], int] | None = None, close_grace_s: float = 0.0,
                 max_bytes: int = DEFAULT_SEGMENT_MAX_BYTES, clock_ns: Callable[[], int] = time.time_ns,
                 key_for: Callable[[int, int], str] | None = None) -> None:
        if max_bytes < 1:
            raise ValueError(f"segment max_bytes must be positive, got {max_bytes}")
        self.cluster, self.node = cluster, node
        self.spool = spool if spool is not None else Spool(spool_dir, max_bytes=spool_max_bytes, clock_ns=clock_ns)
        self.spool_dir = self.spool.directory
        self.link_type, self.snaplen = link_type, snaplen
        self.period_ns = int(period_s * 1e9)
        self.max_bytes = max_bytes
        # The object key of a segment [start, end): the raw layout unless a recording job files it elsewhere.
        self._key_for = key_for or (lambda start, end: raw_segment_key(cluster, node, start, end, EXT))
        self.capture_filter = capture_filter
        self.agent_version = agent_version
        self.emit_empty = emit_empty
        self._compressor = zstandard.ZstdCompressor(level=level)
        self._kernel_drops_until = kernel_drops_until
        self._clock_ns = clock_ns
        self._close_grace_ns = int(close_grace_s * 1e9)
        self._header = encode_global_header(link_type, snaplen)
        self._tails: dict[Hashable, bytes] = {}  # per engine stream: a record cut in two by a chunk boundary
        self._open: _Open | None = None
        self._floor_ns = self.spool.last_end_ns  # the end of the last spooled segment, this run's or the last one's
        # Totals of closed segments, for /metrics.
        self.segments_closed = 0
        self.packets_closed = 0
        self.bytes_closed = 0
        self.kernel_drops_attributed = 0
        self.agent_drops_attributed = 0
        self.last_closed_ns: int | None = None
        # (packets, kernel drops, agent drops) of the last closed segments, newest last: the agent's health judges
        # recent loss on them.
        self.recent: deque[tuple[int, int, int]] = deque(maxlen=RECENT_SEGMENTS)
        self.size_cuts = 0

    @property
    def packets_total(self) -> int:
        current = self._open
        return self.packets_closed + (current.packets if current is not None else 0)

    @property
    def bytes_total(self) -> int:
        current = self._open
        return self.bytes_closed + (current.orig_bytes if current is not None else 0)

    def _open_at(self, ts_ns: int) -> _Open:
        grid = ts_ns - ts_ns % self.period_ns
        start = grid
        if self._floor_ns is not None and grid < self._floor_ns:
            start = self._floor_ns if ts_ns >= self._floor_ns else ts_ns
        return _Open(start, grid + self.period_ns, bytearray(self._header))

    def add(self, ts_ns: int, data: bytes, orig_len: int) -> list[SpooledSegment]:
        """One packet (engines that deliver packets one by one: replay, scapy)."""
        return self._add_record(ts_ns, encode_record(ts_ns, data, orig_len), len(data), orig_len)

    def add_records(self, chunk: bytes, stream: Hashable = 0) -> list[SpooledSegment]:
        """Raw nanosecond little-endian pcap records (no global header) as an engine's pipe delivered them: a chunk may
        end inside a record, whose head is kept for the same `stream`'s next chunk."""
        tail = self._tails.pop(stream, b"")
        data = tail + chunk if tail else chunk
        closed, used = self._walk(data)
        if used < len(data):
            self._tails[stream] = data[used:]
        return closed

    def _walk(self, data: bytes) -> tuple[list[SpooledSegment], int]:
        """Segments the whole records of `data`; returns the closed segments and the bytes used (whole records)."""
        closed: list[SpooledSegment] = []
        view = memoryview(data)
        unpack = _RECORD.unpack_from
        size = len(data)
        header_stop = size - RECORD_HEADER_LEN + 1  # a record header starts before this offset
        offset = 0
        while offset < header_stop:
            # Fast path: in-order records inside the open segment's interval and size are counted and copied as one
            # run. `low` is the latest timestamp so far, so a run's newest packet is its last one.
            seg = self._open
            if seg is None or not seg.packets:
                low, high, limit = _NEVER, 0, offset
            else:
                assert seg.max_ns is not None
                low, high, limit = seg.max_ns, seg.end_ns, min(size, offset + self.max_bytes - len(seg.body))
            run_start, packets, orig_bytes = offset, 0, 0
            while offset < header_stop:
                sec, nsec, incl_len, orig_len = unpack(data, offset)
                ts_ns = sec * _NS + nsec
                next_offset = offset + RECORD_HEADER_LEN + incl_len
                if next_offset > limit or not low <= ts_ns < high:
                    break
                packets += 1
                orig_bytes += orig_len
                low = ts_ns
                offset = next_offset
            if packets:
                assert seg is not None
                seg.body += view[run_start:offset]
                seg.packets += packets
                seg.orig_bytes += orig_bytes
                seg.last_ns = seg.max_ns = low
            if offset >= header_stop:
                break
            # Slow path: the record at `offset` needs a decision (or is cut off by the chunk's end).
            sec, nsec, incl_len, orig_len = unpack(data, offset)
            if incl_len > MAX_RECORD_LEN:
                raise CaptureFormatError(f"pcap record of {incl_len} bytes in the capture stream: it is out of frame")
            next_offset = offset + RECORD_HEADER_LEN + incl_len
            if next_offset > size:
                break
            closed += self._add_record(sec * _NS + nsec, view[offset:next_offset], incl_len, orig_len)
            offset = next_offset
        return closed, offset

    def _add_record(self, ts_ns: int, record: bytes | memoryview, incl_len: int, orig_len: int
                    ) -> list[SpooledSegment]:
        closed: list[SpooledSegment] = []
        if self._open is not None and ts_ns >= self._open.end_ns:
            closed += self._close_until(ts_ns)
        if self._open is None:
            self._open = self._open_at(ts_ns)
        seg = self._open
        if (seg.packets and len(seg.body) + RECORD_HEADER_LEN + incl_len > self.max_bytes
                and seg.max_ns is not None and ts_ns > seg.max_ns and ts_ns > seg.start_ns):
            closed.append(self._cut_on_size(seg, ts_ns))
            seg = self._open
            assert seg is not None
        if ts_ns < seg.start_ns:
            seg.start_ns = ts_ns  # late for an idle segment opened on the clock: the segment starts at it instead
        seg.body += record
        seg.packets += 1
        seg.orig_bytes += orig_len
        if seg.first_ns is None:
            seg.first_ns = ts_ns
        seg.last_ns = ts_ns
        seg.max_ns = ts_ns if seg.max_ns is None else max(seg.max_ns, ts_ns)
        return closed

    def _cut_on_size(self, seg: _Open, ts_ns: int) -> SpooledSegment:
        """Closes `seg` at `ts_ns` (the next packet's time, later than all of its packets) and opens its successor
        there, up to the same grid end."""
        self._open = None
        spooled = self._spool(seg, ts_ns)
        self._open = _Open(ts_ns, seg.end_ns, bytearray(self._header))
        self.size_cuts += 1
        return spooled

    def add_agent_drops(self, count: int, ts_ns: int) -> list[SpooledSegment]:
        """Packets the agent dropped (a full queue, a cut-off record), counted in the segment their timestamp falls
        into."""
        closed: list[SpooledSegment] = []
        if self._open is not None and ts_ns >= self._open.end_ns:
            closed += self._close_until(ts_ns)
        if self._open is None:
            self._open = self._open_at(ts_ns)
        self._open.start_ns = min(self._open.start_ns, ts_ns)
        self._open.agent_drops += count
        return closed

    def tick(self, now_ns: int) -> list[SpooledSegment]:
        """Closes the open segment once the clock passes its end (plus the grace for late packets), even when no
        packet arrived (an idle interface)."""
        settled_ns = now_ns - self._close_grace_ns
        if self._open is not None and settled_ns >= self._open.end_ns:
            return self._close_until(settled_ns)
        if self._open is None and self.emit_empty:
            self._open = self._open_at(now_ns)  # not earlier: capture may have started only just now
        return []

    def _close_until(self, ts_ns: int) -> list[SpooledSegment]:
        closed = []
        while self._open is not None and ts_ns >= self._open.end_ns:
            current = self._open
            self._open = None
            if current.packets or current.agent_drops or self.emit_empty:
                closed.append(self._spool(current, current.end_ns))
            # Live, the next segment follows on at once, so idle periods become empty segments (proof of silence).
            # A clock that jumped ahead or a loop that hung gets none: a gap in coverage is the honest record.
            if self.emit_empty and ts_ns < current.end_ns + MAX_IDLE_FILL * self.period_ns:
                self._open = self._open_at(current.end_ns)
        return closed

    def flush(self, kernel_drops: int = 0, agent_drops: int = 0) -> list[SpooledSegment]:
        """Closes the open segment at its last packet (end of replay / shutdown). `kernel_drops` and `agent_drops`
        are the engine's final totals: whatever earlier segments did not get lands on this last one. A record the engine
        left cut off at its end is counted as an agent drop."""
        truncated = sum(1 for tail in self._tails.values() if tail)
        self._tails.clear()
        if truncated:
            latest = self._open.max_ns if self._open is not None else None
            self.add_agent_drops(truncated, latest if latest is not None else self._clock_ns())
        if self.emit_empty:
            self._close_until(self._clock_ns())  # live: the engine has stopped, no packet can arrive late any more
        current, self._open = self._open, None
        kernel_left = max(0, kernel_drops - self.kernel_drops_attributed)
        agent_left = max(0, agent_drops - self.agent_drops_attributed)
        if current is None:
            if not kernel_left and not agent_left:
                return []
            current = self._open_at(self._clock_ns())  # drops reported after the last segment closed
        if not current.packets and not kernel_left and not agent_left and not current.agent_drops:
            return []
        current.agent_drops = max(current.agent_drops, agent_left)
        if current.max_ns is not None:
            end_ns = current.max_ns + 1
        else:
            end_ns = max(current.start_ns + 1, min(self._clock_ns(), current.end_ns))
        return [self._spool(current, end_ns, kernel_total=kernel_drops)]

    def _spool(self, seg: _Open, end_ns: int, kernel_total: int | None = None) -> SpooledSegment:
        if kernel_total is None:
            kernel_total = self._kernel_drops_until(end_ns) if self._kernel_drops_until is not None else 0
        kernel = max(0, kernel_total - self.kernel_drops_attributed)
        stored = self._compressor.compress(seg.body)
        meta = {
            "cluster": self.cluster, "node": self.node,
            "key": self._key_for(seg.start_ns, end_ns),
            "start_ns": seg.start_ns, "end_ns": end_ns,
            "first_packet_ns": seg.first_ns, "last_packet_ns": seg.last_ns, "packets": seg.packets,
            "bytes": seg.orig_bytes, "stored_bytes": len(stored), "sha256": hashlib.sha256(stored).hexdigest(),
            "compression": "zstd", "format": "pcap", "link_type": self.link_type, "snaplen": self.snaplen,
            "kernel_drops": kernel, "agent_drops": seg.agent_drops,
            "capture_filter": self.capture_filter, "agent_version": self.agent_version,
        }
        spooled = self.spool.add(stored, meta)
        self.kernel_drops_attributed += kernel
        self.agent_drops_attributed += seg.agent_drops
        self.segments_closed += 1
        self.recent.append((seg.packets, kernel, seg.agent_drops))
        self.packets_closed += seg.packets
        self.bytes_closed += seg.orig_bytes
        self.last_closed_ns = self._clock_ns()
        self._floor_ns = max(self._floor_ns or 0, end_ns)
        return spooled
