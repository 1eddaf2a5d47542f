"""The agent's local spool: closed segments wait here until S3 and then the bus have them.

Files in the spool directory (every write is temp file + fsync + rename, so a crash leaves the old or the new
file, never half of one):

- `<seq>.pcap.zst`: the stored (compressed) segment bytes, removed once S3 holds them.
- `<seq>.json`: the sidecar, the segment record without bucket and version id while the segment is only spooled;
  rewritten with `bucket` and `version_id` once S3 has the object (so a restart only re-publishes), removed once
  the record is on the bus. It lands after the bytes: a body without a sidecar is an interrupted write.
- `gap-<first_seq>-<last_seq>.json`: a gap record for segments the storage cap evicted (or that could never be
  uploaded), removed once published. It lands before the evicted files go, so a loss is never silent.
- `state.json`: the next seq and the end of the last spooled segment, so a restart continues the per-node sequence
  and never cuts a segment that overlaps one from before the restart.

The storage cap counts the bytes of segments S3 does not hold yet. Segments S3 holds only wait for the bus as a
small sidecar, so a bus outage never fills the disk.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from freezeframe.contracts.documents import GAP_SCHEMA as GAP_SCHEMA
from freezeframe.contracts.documents import GapRecord

logger = logging.getLogger(__name__)

EXT = "pcap.zst"
DEFAULT_MAX_BYTES = 1 << 30
STATE_NAME = "state.json"
_SIDECAR = re.compile(r"^(\d{12})\.json$")
_BODY = re.compile(r"^(\d{12})\.pcap\.zst$")
_GAP = re.compile(r"^gap-(\d{12})-(\d{12})\.json$")


@dataclass(slots=True)
class SpooledSegment:
    path: Path
    meta_path: Path
    meta: dict[str, Any]


@dataclass(slots=True)
class SpoolEntry:
    """One segment in the spool: waiting for S3 (no version id yet) or, once S3 has it, for the bus."""

    seq: int
    meta: dict[str, Any]
    body_path: Path
    meta_path: Path
    in_flight: bool = False  # the S3 stage is putting it right now: eviction skips it

    @property
    def stored(self) -> bool:
        return "version_id" in self.meta

    @property
    def size(self) -> int:
        return 0 if self.stored else int(self.meta["stored_bytes"])


@dataclass(slots=True)
class PendingGap:
    path: Path
    record: GapRecord


@dataclass(frozen=True, slots=True)
class SpoolStats:
    bytes: int  # segment bytes S3 does not hold yet (what the cap counts)
    segments: int  # segments not yet fully uploaded (S3 and bus)
    unstored: int  # of which S3 does not hold the bytes yet
    oldest_spooled_ns: int | None
    gaps_pending: int
    evicted_total: int
    gaps_total: int


class Spool:
    """The spool directory and its in-memory index. Thread-safe: the capture thread adds, the S3 stage and the
    publish stage take work in seq order, and every change notifies the waiters."""

    def __init__(self, directory: Path, *, max_bytes: int = DEFAULT_MAX_BYTES,
                 clock_ns: Callable[[], int] = time.time_ns) -> None:
        if max_bytes < 1:
            raise ValueError(f"spool cap must be positive, got {max_bytes}")
        self.directory = directory
        self.max_bytes = max_bytes
        self._clock_ns = clock_ns
        self.changed = threading.Condition()
        self._entries: dict[int, SpoolEntry] = {}  # kept in seq order: seqs only grow
        self._gaps: dict[Path, PendingGap] = {}
        self.evicted_total = 0
        self.gaps_total = 0
        self.directory.mkdir(parents=True, exist_ok=True)
        self._state_path = directory / STATE_NAME
        self.next_seq, self.last_end_ns = self._recover()

    # -- recovery -------------------------------------------------------------------------------------------------

    def _recover(self) -> tuple[int, int | None]:
        """Rebuilds the index from the files a previous run left, finishing what a crash interrupted."""
        for tmp in self.directory.glob("*.tmp"):
            tmp.unlink()  # an interrupted atomic write; the file it was replacing is intact
        covered: list[tuple[int, int]] = []
        for path in sorted(self.directory.glob("gap-*.json")):
            if _GAP.match(path.name):
                record = GapRecord.from_dict(json.loads(path.read_text()))
                self._gaps[path] = PendingGap(path, record)
                covered.append((record.first_seq, record.last_seq))
        lost: list[dict[str, Any]] = []
        for meta_path in sorted(self.directory.glob("*.json")):
            match = _SIDECAR.match(meta_path.name)
            if not match:
                continue
            seq = int(match[1])
            body_path = meta_path.with_name(f"{match[1]}.{EXT}")
            if any(first <= seq <= last for first, last in covered):
                # Evicted, and the gap record already says so: finish the eviction the crash interrupted.
                meta_path.unlink()
                body_path.unlink(missing_ok=True)
                continue
            meta = json.loads(meta_path.read_text())
            entry = SpoolEntry(seq, meta, body_path, meta_path)
            if entry.stored:
                body_path.unlink(missing_ok=True)  # S3 has it; the crash came before the body was removed
            elif not body_path.exists():
                lost.append(meta)  # the bytes are gone (removed by hand?): report them, never skip them silently
                meta_path.unlink()
                continue
            self._entries[seq] = entry
        for body_path in self.directory.glob(f"*.{EXT}"):
            match = _BODY.match(body_path.name)
            if match and int(match[1]) not in self._entries:
                body_path.unlink()  # written before its sidecar: the seq was never committed
        state = json.loads(self._state_path.read_text()) if self._state_path.exists() else {}
        next_seq = max([int(state.get("next_seq", 0))] + [seq + 1 for seq in self._entries]
                       + [last + 1 for _, last in covered] + [int(m["seq"]) + 1 for m in lost])
        ends = [e.meta["end_ns"] for e in self._entries.values()] + [m["end_ns"] for m in lost]
        if state.get("last_end_ns") is not None:
            ends.append(int(state["last_end_ns"]))
        for run in _runs(sorted(lost, key=lambda m: m["seq"])):
            self._write_gap(run, "spool_corrupt")
        if self._entries or self._gaps:
            logger.info("spool recovered", extra={"segments": len(self._entries), "gaps": len(self._gaps),
                                                  "next_seq": next_seq})
        return next_seq, max(ends) if ends else None

    # -- the capture side -----------------------------------------------------------------------------------------

    def add(self, stored: bytes, meta: Mapping[str, Any]) -> SpooledSegment:
        """Spools one closed segment under the next seq, evicting the oldest segments S3 does not hold yet when the
        cap would be exceeded (a single segment larger than the cap is still kept: it is the newest evidence)."""
        with self.changed:
            self._make_room(len(stored))
            seq = self.next_seq
            full = {**meta, "seq": seq, "spooled_ns": self._clock_ns()}
            base = self.directory / f"{seq:012d}"
            body_path = base.with_name(f"{base.name}.{EXT}")
            meta_path = base.with_name(f"{base.name}.json")
            atomic_write(body_path, stored)
            atomic_write(meta_path, _encode(full))
            self.next_seq = seq + 1
            self.last_end_ns = max(self.last_end_ns or 0, int(full["end_ns"]))
            atomic_write(self._state_path, _encode({"next_seq": self.next_seq, "last_end_ns": self.last_end_ns}))
            self._entries[seq] = SpoolEntry(seq, full, body_path, meta_path)
            self.changed.notify_all()
            return SpooledSegment(body_path, meta_path, full)

    def _make_room(self, incoming: int) -> None:
        total = sum(entry.size for entry in self._entries.values())
        if total + incoming <= self.max_bytes:
            return
        victims = []
        for entry in self._entries.values():
            if total + incoming <= self.max_bytes:
                break
            if entry.stored or entry.in_flight:
                continue
            victims.append(entry)
            total -= entry.size
        if victims:
            self._evict(victims, "spool_full")

    # -- the upload side ------------------------------------------------------------------------------------------

    def take_for_store(self, timeout_s: float) -> SpoolEntry | None:
        """The oldest segment S3 does not hold yet, marked in flight; None when there is none within timeout_s."""
        with self.changed:
            entry = self._first(lambda e: not e.stored and not e.in_flight)
            if entry is None:
                self.changed.wait(timeout_s)
                entry = self._first(lambda e: not e.stored and not e.in_flight)
            if entry is not None:
                entry.in_flight = True
            return entry

    def release(self, entry: SpoolEntry) -> None:
        """The put failed: the segment is evictable again while the S3 stage backs off."""
        with self.changed:
            entry.in_flight = False

    def mark_stored(self, entry: SpoolEntry, bucket: str, version_id: str) -> None:
        with self.changed:
            entry.meta = {**entry.meta, "bucket": bucket, "version_id": version_id}
            atomic_write(entry.meta_path, _encode(entry.meta))  # from here on a restart only re-publishes
            entry.body_path.unlink(missing_ok=True)
            entry.in_flight = False
            self.changed.notify_all()

    def take_for_publish(self, timeout_s: float) -> PendingGap | SpoolEntry | None:
        """A pending gap record first (loss is reported as soon as the bus is reachable), else the oldest segment S3
        holds; None when there is none within timeout_s."""
        with self.changed:
            item = self._next_publishable()
            if item is None:
                self.changed.wait(timeout_s)
                item = self._next_publishable()
            return item

    def _next_publishable(self) -> PendingGap | SpoolEntry | None:
        if self._gaps:
            return min(self._gaps.values(), key=lambda gap: gap.record.first_seq)
        entry = next(iter(self._entries.values()), None)
        return entry if entry is not None and entry.stored else None  # records go out in seq order

    def mark_published(self, item: PendingGap | SpoolEntry) -> None:
        with self.changed:
            if isinstance(item, PendingGap):
                item.path.unlink(missing_ok=True)
                self._gaps.pop(item.path, None)
            else:
                item.meta_path.unlink(missing_ok=True)
                self._entries.pop(item.seq, None)
            self.changed.notify_all()

    def evict(self, entries: list[SpoolEntry], reason: str) -> list[GapRecord]:
        """Gives segments up for good (cap, a corrupt spool file, a key S3 holds with other bytes), with a gap record
        written before their files go."""
        with self.changed:
            return self._evict(entries, reason)

    def _evict(self, entries: list[SpoolEntry], reason: str) -> list[GapRecord]:
        records = []
        for run in _runs([e.meta for e in sorted(entries, key=lambda e: e.seq)]):
            record = self._write_gap(run, reason)
            records.append(record)
            for meta in run:
                entry = self._entries.pop(int(meta["seq"]))
                entry.meta_path.unlink(missing_ok=True)
                entry.body_path.unlink(missing_ok=True)
            self.evicted_total += len(run)
            logger.warning("segments evicted from the spool", extra={
                "reason": reason, "first_seq": record.first_seq, "last_seq": record.last_seq,
                "segments": record.segments, "stored_bytes": record.stored_bytes})
        self.changed.notify_all()
        return records

    def _write_gap(self, run: list[Mapping[str, Any]], reason: str) -> GapRecord:
        record = GapRecord.covering(list(run), reason, self._clock_ns())
        path = self.directory / f"gap-{record.first_seq:012d}-{record.last_seq:012d}.json"
        atomic_write(path, _encode(record.to_dict()))
        self._gaps[path] = PendingGap(path, record)
        self.gaps_total += 1
        return record

    # -- observation ----------------------------------------------------------------------------------------------

    def entries(self) -> list[SpoolEntry]:
        with self.changed:
            return list(self._entries.values())

    def gaps(self) -> list[GapRecord]:
        with self.changed:
            return sorted((gap.record for gap in self._gaps.values()), key=lambda r: r.first_seq)

    def drained(self) -> bool:
        with self.changed:
            return not self._entries and not self._gaps

    def wait_drained(self, timeout_s: float | None) -> bool:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self.changed:
            while self._entries or self._gaps:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self.changed.wait(1.0 if left is None else min(left, 1.0))
            return True

    def stats(self) -> SpoolStats:
        with self.changed:
            entries = list(self._entries.values())
            return SpoolStats(bytes=sum(e.size for e in entries), segments=len(entries),
                              unstored=sum(1 for e in entries if not e.stored),
                              oldest_spooled_ns=min((int(e.meta.get("spooled_ns", e.meta["end_ns"])) for e in entries),
                                                    default=None),
                              gaps_pending=len(self._gaps), evicted_total=self.evicted_total,
                              gaps_total=self.gaps_total)

    def _first(self, wanted: Callable[[SpoolEntry], bool]) -> SpoolEntry | None:
        return next((entry for entry in self._entries.values() if wanted(entry)), None)


def pending(spool_dir: Path) -> list[SpooledSegment]:
    """Segments in the spool not yet fully uploaded, in seq order, read from the files alone (no recovery)."""
    out = []
    for meta_path in sorted(spool_dir.glob("*.json")):
        match = _SIDECAR.match(meta_path.name)
        if not match:
            continue
        path = meta_path.with_name(f"{match[1]}.{EXT}")
        meta = json.loads(meta_path.read_text())
        if path.exists() or "version_id" in meta:
            out.append(SpooledSegment(path, meta_path, meta))
    return out


def atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    # The rename itself must survive a power cut, not just the process: sync the directory entry too.
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _encode(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True).encode()


def _runs(metas: Iterable[Mapping[str, Any]]) -> list[list[Mapping[str, Any]]]:
    """Splits sidecars (sorted by seq) into runs of consecutive seqs: one gap record per run."""
    runs: list[list[Mapping[str, Any]]] = []
    for meta in metas:
        if runs and int(runs[-1][-1]["seq"]) + 1 == int(meta["seq"]):
            runs[-1].append(meta)
        else:
            runs.append([meta])
    return runs
