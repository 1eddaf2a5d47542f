"""Upload of spooled segments in two stages, each in its own thread and each with its own backoff, so an S3 outage
and a bus outage are handled independently and capture never waits for either:

1. S3: create-only put with an S3-verified SHA-256 and metadata. On success the version id goes into the sidecar
   (atomically) and the spooled bytes are removed; a restart then only re-publishes. A re-put after a crash hits
   the existing object and gets its version back (`put_segment`), so a segment is never stored twice.
2. Bus: the segment record (and any gap record) on the segments topic, in seq order; then the sidecar goes.

An outage means spool and retry, with jittered exponential backoff and no giving up; the spool's storage cap
decides what is lost, and says so with a gap record.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from freezeframe.adapters import s3 as s3io
from freezeframe.adapters.bus import SegmentBus
from freezeframe.adapters.s3 import ObjectStore
from freezeframe.contracts.config import Settings
from freezeframe.contracts.models import SEGMENT_SCHEMA, SegmentRecord
from freezeframe_agent.spool import PendingGap, Spool, SpoolEntry

logger = logging.getLogger(__name__)
METADATA_FIELDS = ("cluster", "node", "start_ns", "end_ns", "packets", "bytes", "sha256", "seq", "link_type",
                   "compression", "format", "kernel_drops", "agent_drops")
STAGES = ("s3", "bus")


class Backoff:
    """Jittered exponential backoff: the n-th consecutive failure waits uniform(0.5, 1) x min(cap, base x 2^(n-1))."""

    def __init__(self, base_s: float = 0.5, cap_s: float = 30.0, rng: random.Random | None = None) -> None:
        self.base_s, self.cap_s = base_s, cap_s
        self.failures = 0
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not crypto

    def next_delay(self) -> float:
        self.failures += 1
        return min(self.cap_s, self.base_s * 2 ** (self.failures - 1)) * self._rng.uniform(0.5, 1.0)

    def reset(self) -> None:
        self.failures = 0


class Uploader:
    def __init__(self, settings: Settings, s3: ObjectStore, spool: Spool, *, bus: SegmentBus | None = None,
                 bus_factory: Callable[[], SegmentBus] | None = None, backoff_base_s: float = 0.5,
                 backoff_cap_s: float = 30.0, retain_days: int | None = None) -> None:
        if (bus is None) == (bus_factory is None):
            raise ValueError("give the uploader either a bus or a bus factory")
        self.settings = settings
        self.s3 = s3
        self.spool = spool
        self.retain_days = retain_days  # a recording job's retention: Object Lock retain-until set at upload
        # A bus from the factory is built lazily, in the bus stage: a broker that is down at start-up is an outage.
        self._bus = bus
        self._bus_factory = bus_factory
        self._backoff = {stage: Backoff(backoff_base_s, backoff_cap_s) for stage in STAGES}
        self.uploaded: list[SegmentRecord] = []
        self.stored_total = 0
        self.gaps_published_total = 0
        self.failures_total = dict.fromkeys(STAGES, 0)
        self.last_error: dict[str, str | None] = dict.fromkeys(STAGES)
        # Monotonic time of the first failure of the current failing streak per stage (None while it succeeds).
        self.failing_since: dict[str, float | None] = dict.fromkeys(STAGES)
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- one step of each stage (the threads wrap these with backoff; tests call them directly) -------------------

    def store(self, entry: SpoolEntry) -> None:
        """S3 stage for one segment; raises on an outage (the caller backs off and retries)."""
        meta = entry.meta
        body = entry.body_path.read_bytes()
        if hashlib.sha256(body).hexdigest() != meta["sha256"]:
            logger.error("spooled segment is corrupt", extra={"seq": entry.seq, "segment": meta["key"]})
            self.spool.evict([entry], "spool_corrupt")
            return
        metadata = {name: str(meta[name]) for name in METADATA_FIELDS}
        try:
            version_id = s3io.put_segment(self.s3, self.settings.raw_bucket, meta["key"], body, meta["sha256"],
                                          metadata)
        except FileExistsError:
            # Someone else's bytes under our key: retrying cannot help, and the loss must be reported.
            logger.error("segment key holds other bytes", extra={"seq": entry.seq, "segment": meta["key"]})
            self.spool.evict([entry], "key_conflict")
            return
        if self.retain_days is not None:
            # Before the segment counts as stored: a failure here retries the put (which returns the same version)
            # and then the lock. False means a stronger lock is already there, which is kept.
            retain_until = s3io.retain_until_days(self.retain_days, datetime.fromtimestamp(meta["end_ns"] / 1e9, UTC))
            s3io.try_put_retention(self.s3, self.settings.raw_bucket, meta["key"], version_id,
                                   self.settings.lock_mode, retain_until)
        self.spool.mark_stored(entry, self.settings.raw_bucket, version_id)
        self.stored_total += 1
        logger.info("segment stored", extra={"seq": entry.seq, "segment": meta["key"], "version_id": version_id})

    def publish(self, item: PendingGap | SpoolEntry) -> SegmentRecord | None:
        """Bus stage for one gap or stored segment; raises on an outage."""
        bus = self.bus()
        topic, key = self.settings.segments_topic, f"{self.settings.cluster}/{self.settings.node_name}"
        if isinstance(item, PendingGap):
            bus.publish(topic, key, item.record.to_dict())
            self.spool.mark_published(item)
            self.gaps_published_total += 1
            logger.warning("gap record published", extra={"first_seq": item.record.first_seq,
                                                          "last_seq": item.record.last_seq,
                                                          "reason": item.record.reason})
            return None
        record = SegmentRecord.from_dict({**item.meta, "schema": SEGMENT_SCHEMA})
        bus.publish(topic, key, record.to_dict())
        self.spool.mark_published(item)
        self.uploaded.append(record)
        logger.info("segment uploaded", extra={"node": record.node, "segment": record.key, "seq": record.seq})
        return record

    def bus(self) -> SegmentBus:
        if self._bus is None:
            assert self._bus_factory is not None
            self._bus = self._bus_factory()
        return self._bus

    def drain(self) -> list[SegmentRecord]:
        """Uploads everything in the spool now, in this thread; raises on the first failure."""
        done: list[SegmentRecord] = []
        while (entry := self.spool.take_for_store(0)) is not None:
            try:
                self.store(entry)
            finally:
                self.spool.release(entry)
        while (item := self.spool.take_for_publish(0)) is not None:
            record = self.publish(item)
            if record is not None:
                done.append(record)
        return done

    # -- the threads ----------------------------------------------------------------------------------------------

    def start(self) -> None:
        self._stopping.clear()
        self._threads = [threading.Thread(target=self._run_stage, args=(stage,), name=f"upload-{stage}", daemon=True)
                         for stage in STAGES]
        for thread in self._threads:
            thread.start()

    def alive(self) -> bool:
        return bool(self._threads) and all(thread.is_alive() for thread in self._threads)

    def stop(self, timeout_s: float = 15.0) -> None:
        self._stopping.set()
        with self.spool.changed:
            self.spool.changed.notify_all()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        if self._bus_factory is not None and self._bus is not None:
            self._bus.close()  # only a bus we built
            self._bus = None

    def _run_stage(self, stage: str) -> None:
        backoff = self._backoff[stage]
        while not self._stopping.is_set():
            item: PendingGap | SpoolEntry | None
            item = self.spool.take_for_store(1.0) if stage == "s3" else self.spool.take_for_publish(1.0)
            if item is None or self._stopping.is_set():
                if isinstance(item, SpoolEntry) and stage == "s3":
                    self.spool.release(item)
                continue
            try:
                if stage == "s3":
                    assert isinstance(item, SpoolEntry)
                    self.store(item)
                else:
                    self.publish(item)
            except Exception as exc:  # noqa: BLE001 - an outage of any kind: spool and retry, never give up
                if stage == "s3" and isinstance(item, SpoolEntry):
                    self.spool.release(item)
                self.failures_total[stage] += 1
                self.last_error[stage] = f"{type(exc).__name__}: {exc}"[:300]
                if self.failing_since[stage] is None:
                    self.failing_since[stage] = time.monotonic()
                delay = backoff.next_delay()
                logger.warning("upload stage failed; retrying", extra={
                    "stage": stage, "attempt": backoff.failures, "retry_in_s": round(delay, 2),
                    "error": type(exc).__name__})
                self._stopping.wait(delay)
            else:
                if backoff.failures:
                    logger.info("upload stage recovered", extra={"stage": stage, "failures": backoff.failures})
                backoff.reset()
                self.last_error[stage] = None
                self.failing_since[stage] = None
