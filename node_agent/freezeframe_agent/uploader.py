"""Upload of spooled segments: S3 put (create-only, SHA-256 checked by S3, metadata) and then the segment record
on the bus. A segment leaves the spool only after both succeeded, so delivery is at-least-once and a re-send
reuses the existing object version."""

from __future__ import annotations

import logging
import random
import time
from typing import Any

from freezeframe.adapters import s3 as s3io
from freezeframe.adapters.bus import SegmentBus
from freezeframe.config import Settings
from freezeframe.models import SegmentRecord
from freezeframe_agent.segmenter import SpooledSegment, pending

logger = logging.getLogger(__name__)
METADATA_FIELDS = ("cluster", "node", "start_ns", "end_ns", "packets", "bytes", "sha256", "seq", "link_type",
                   "compression", "format", "kernel_drops", "agent_drops")


class Uploader:
    def __init__(self, settings: Settings, s3: Any, bus: SegmentBus, max_attempts: int = 6) -> None:
        self.settings = settings
        self.s3 = s3
        self.bus = bus
        self.max_attempts = max_attempts
        self.uploaded: list[SegmentRecord] = []

    def upload(self, segment: SpooledSegment) -> SegmentRecord:
        meta = segment.meta
        body = segment.path.read_bytes()
        metadata = {name: str(meta[name]) for name in METADATA_FIELDS}
        version_id = self._retry("s3 put", lambda: s3io.put_segment(
            self.s3, self.settings.raw_bucket, meta["key"], body, meta["sha256"], metadata))
        record = SegmentRecord.from_dict({**meta, "bucket": self.settings.raw_bucket, "version_id": version_id,
                                          "schema": "freezeframe.segment/v1"})
        self._retry("bus publish", lambda: self.bus.publish(self.settings.segments_topic,
                                                            f"{record.cluster}/{record.node}", record.to_dict()))
        segment.meta_path.unlink()
        segment.path.unlink()
        self.uploaded.append(record)
        logger.info("segment uploaded", extra={"node": record.node, "segment": record.key, "seq": record.seq})
        return record

    def drain(self) -> list[SegmentRecord]:
        spool_dir = self.settings.spool_dir
        return [self.upload(segment) for segment in pending(spool_dir)]

    def _retry(self, what: str, action: Any) -> Any:
        for attempt in range(1, self.max_attempts + 1):
            try:
                return action()
            except Exception as exc:  # noqa: BLE001 - any outage is retried; the last attempt re-raises
                if attempt == self.max_attempts:
                    raise
                delay = min(30.0, 0.5 * 2 ** attempt) * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not crypto
                logger.warning("retrying after failure", extra={"what": what, "attempt": attempt,
                                                                "error": type(exc).__name__})
                time.sleep(delay)
        raise AssertionError("unreachable")
