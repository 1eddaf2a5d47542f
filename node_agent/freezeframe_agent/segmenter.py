"""Rolling segments: packets cut on a time grid into nanosecond pcap, zstd-compressed, hashed, and written to the
spool atomically (temp file, fsync, rename), with a JSON sidecar that already holds the segment record."""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zstandard

from freezeframe.keys import raw_segment_key
from freezeframe.pcapio import PcapWriter

EXT = "pcap.zst"


@dataclass(slots=True)
class SpooledSegment:
    path: Path
    meta_path: Path
    meta: dict[str, Any]


@dataclass(slots=True)
class _Open:
    start_ns: int
    end_ns: int
    buffer: io.BytesIO
    writer: PcapWriter
    first_ns: int | None = None
    last_ns: int | None = None
    orig_bytes: int = 0
    extra: dict[str, int] = field(default_factory=dict)


class Segmenter:
    """Cuts on a grid of `period_s` (so segments of different nodes line up), always at packet boundaries."""

    def __init__(self, *, cluster: str, node: str, spool_dir: Path, link_type: int, snaplen: int, period_s: float,
                 capture_filter: str, agent_version: str, emit_empty: bool = False, level: int = 3) -> None:
        self.cluster, self.node = cluster, node
        self.spool_dir = spool_dir
        self.link_type, self.snaplen = link_type, snaplen
        self.period_ns = int(period_s * 1e9)
        self.capture_filter = capture_filter
        self.agent_version = agent_version
        self.emit_empty = emit_empty
        self._compressor = zstandard.ZstdCompressor(level=level)
        self._open: _Open | None = None
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        self._state_path = self.spool_dir / "state.json"
        self._next_seq = self._load_seq()

    def _load_seq(self) -> int:
        if self._state_path.exists():
            return int(json.loads(self._state_path.read_text())["next_seq"])
        return 0

    def _open_at(self, ts_ns: int) -> _Open:
        start = ts_ns - ts_ns % self.period_ns
        buffer = io.BytesIO()
        return _Open(start, start + self.period_ns, buffer, PcapWriter(buffer, self.link_type, self.snaplen))

    def add(self, ts_ns: int, data: bytes, orig_len: int) -> list[SpooledSegment]:
        closed: list[SpooledSegment] = []
        if self._open is not None and ts_ns >= self._open.end_ns:
            closed += self._close_until(ts_ns)
        if self._open is None:
            self._open = self._open_at(ts_ns)
        seg = self._open
        seg.writer.write(ts_ns, data, orig_len)
        seg.orig_bytes += orig_len
        seg.first_ns = ts_ns if seg.first_ns is None else seg.first_ns
        seg.last_ns = ts_ns
        return closed

    def tick(self, now_ns: int) -> list[SpooledSegment]:
        """Closes the open segment once the clock passes its end, even when no packet arrived (an idle interface)."""
        if self._open is not None and now_ns >= self._open.end_ns:
            return self._close_until(now_ns)
        if self._open is None and self.emit_empty:
            self._open = self._open_at(now_ns)
        return []

    def _close_until(self, ts_ns: int) -> list[SpooledSegment]:
        closed = []
        while self._open is not None and ts_ns >= self._open.end_ns:
            current = self._open
            self._open = None
            if current.writer.packets or self.emit_empty:
                closed.append(self._spool(current, current.end_ns))
            if self.emit_empty and ts_ns >= current.end_ns + self.period_ns:
                self._open = self._open_at(current.end_ns)
        return closed

    def flush(self, kernel_drops: int = 0, agent_drops: int = 0) -> list[SpooledSegment]:
        """Closes the open segment at its last packet (end of replay / shutdown)."""
        current, self._open = self._open, None
        if current is None or not current.writer.packets:
            return []
        current.extra = {"kernel_drops": kernel_drops, "agent_drops": agent_drops}
        return [self._spool(current, (current.last_ns or current.start_ns) + 1)]

    def _spool(self, seg: _Open, end_ns: int) -> SpooledSegment:
        seq = self._next_seq
        stored = self._compressor.compress(seg.buffer.getvalue())
        sha256 = hashlib.sha256(stored).hexdigest()
        key = raw_segment_key(self.cluster, self.node, seg.start_ns, end_ns, EXT)
        meta = {
            "cluster": self.cluster, "node": self.node, "key": key, "start_ns": seg.start_ns, "end_ns": end_ns,
            "first_packet_ns": seg.first_ns, "last_packet_ns": seg.last_ns, "packets": seg.writer.packets,
            "bytes": seg.orig_bytes, "stored_bytes": len(stored), "sha256": sha256, "compression": "zstd",
            "format": "pcap", "link_type": self.link_type, "snaplen": self.snaplen,
            "kernel_drops": seg.extra.get("kernel_drops", 0), "agent_drops": seg.extra.get("agent_drops", 0),
            "seq": seq, "capture_filter": self.capture_filter, "agent_version": self.agent_version,
        }
        base = self.spool_dir / f"{seq:012d}"
        path = base.with_suffix("." + EXT)
        meta_path = base.with_suffix(".json")
        _atomic_write(path, stored)
        # The sidecar lands last: a segment without its sidecar is an interrupted write and never uploaded.
        _atomic_write(meta_path, json.dumps(meta, sort_keys=True).encode())
        self._next_seq = seq + 1
        _atomic_write(self._state_path, json.dumps({"next_seq": self._next_seq}).encode())
        return SpooledSegment(path, meta_path, meta)


def pending(spool_dir: Path) -> list[SpooledSegment]:
    """Spooled segments not yet uploaded, in seq order (a restart resumes from here)."""
    out = []
    for meta_path in sorted(spool_dir.glob("*.json")):
        if meta_path.name == "state.json":
            continue
        path = meta_path.with_suffix("." + EXT)
        if path.exists():
            out.append(SpooledSegment(path, meta_path, json.loads(meta_path.read_text())))
    return out


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
