"""Overlapping incidents on the real stack (LocalStack S3 refuses shortening a COMPLIANCE lock): locking a late
segment that another incident locks more strongly or for longer, at the same moment, succeeds; the stronger lock
stands and each incident's part records what the version really holds. Before the fix, the second locker computed
its retention from a stale read and LocalStack refused it (AccessDenied), which dead-lettered the record and left
that incident without the part.

The conflict is made to happen deterministically: the indexer locking a late segment for one incident works on an S3
client that lets the other incident's locker lock the same version right after the indexer read its lock, the exact
interleaving that concurrent lockers produce by chance (the code before the fix raised AccessDenied there, which
dead-letters the record). The race also runs for real (both lockers released together by a barrier, on fresh
versions, many times), and the whole path runs once more through Kafka and the segment indexer with two open holds.
"""

from __future__ import annotations

import dataclasses
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from freezeframe_local.functions import load_handler
from freezeframe_local.kafka import create_topics
from freezeframe_local.kafka_source import KafkaEventSource

from freezeframe.adapters import s3 as s3io
from freezeframe.adapters.bus import KafkaBus
from freezeframe.contracts.keys import incident_key, raw_segment_key
from freezeframe.contracts.models import FreezeRequest, LockSpec, Scope, SegmentRecord, iso
from freezeframe.freeze.freeze import freeze
from freezeframe.freeze.holds import Hold, index_segment, lock_late_segment, manifest_parts
from freezeframe_agent.main import run_replay
from tests.fixtures.custody import put_signed_manifest
from tests.fixtures.waiting import until

pytestmark = pytest.mark.integration
SAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "sample.pcap"
ROUNDS = 25


def _second(text: str) -> str:
    """S3 keeps retention dates to the second."""
    return text[:19]


def _copies(s3: Any, bucket: str, record: SegmentRecord, count: int, tag: str) -> list[SegmentRecord]:
    """Fresh, unlocked versions of one real segment under other nodes' keys (same bytes, same sha256)."""
    body = s3io.get_bytes(s3, bucket, record.key, record.version_id)
    out = []
    for index in range(count):
        node = f"race-{tag}-{index}"
        key = raw_segment_key(record.cluster, node, record.start_ns, record.end_ns, "pcap.zst")
        version = s3io.put_segment(s3, bucket, key, body, record.sha256, {"sha256": record.sha256})
        out.append(dataclasses.replace(record, key=key, version_id=version, node=node, seq=index))
    return out


class _LockedInBetween:
    """An S3 client that, right after the caller read a version's lock (its first HeadObject of that version), lets
    `other` lock the same version: what a concurrent locker (another incident's hold or freeze) does by chance."""

    def __init__(self, s3: Any, other: Callable[[], object]) -> None:
        self._s3, self._other, self.interleaved = s3, other, 0

    def head_object(self, **kwargs: Any) -> Any:
        head = self._s3.head_object(**kwargs)
        if not self.interleaved:
            self.interleaved += 1
            self._other()
        return head

    def __getattr__(self, name: str) -> Any:
        return getattr(self._s3, name)


def _hold(config: Any, s3: Any, name: str, retain_until: datetime) -> Hold:
    now = datetime.now(UTC)
    hold = Hold(f"it-{name}-{uuid.uuid4().hex[:6]}", config.cluster, (), 0, 2**62, now + timedelta(hours=1),
                LockSpec("COMPLIANCE", retain_until))
    # The incident's manifest, sealed as the freeze seals it (its parts are read through the custody chain).
    put_signed_manifest(config, s3, hold.incident_id, {"incident_id": hold.incident_id, "segments": []},
                        (hold.lock.mode, hold.lock.retain_until))
    return hold


def test_a_longer_lock_set_between_the_indexers_read_and_write_is_kept_not_dead_lettered(
        local: Any, tmp_path: Path) -> None:
    config, s3, _ = local
    bus = KafkaBus(config.kafka_bootstrap)
    try:
        (record, *_) = run_replay(config.with_(spool_dir=tmp_path / "spool"), SAMPLE, speedup=1000.0, s3=s3, bus=bus)
    finally:
        bus.close()
    (segment,) = _copies(s3, config.raw_bucket, record, 1, uuid.uuid4().hex[:4])
    now = datetime.now(UTC)
    longer, shorter = now + timedelta(days=2), now + timedelta(days=1)
    long_hold, short_hold = _hold(config, s3, "long", longer), _hold(config, s3, "short", shorter)
    # The indexer locks the segment for the shorter incident; the longer one's locker locks it in between, so the
    # lock the indexer read (none) is stale when it writes its own, shorter one.
    indexing, other = short_hold, long_hold
    racing = _LockedInBetween(s3, lambda: lock_late_segment(config, s3, other, segment))
    try:
        locked = index_segment(config, racing, segment, [indexing])
    except ClientError as exc:
        pytest.fail(f"locking {segment.key} for {indexing.incident_id} failed after {other.incident_id} locked it "
                    f"in between (the record would be dead-lettered): {exc}")
    assert racing.interleaved == 1
    assert locked == [indexing.incident_id]
    # The longer lock stands.
    head = s3.head_object(Bucket=config.raw_bucket, Key=segment.key, VersionId=segment.version_id)
    assert head["ObjectLockMode"] == "COMPLIANCE"
    assert _second(iso(head["ObjectLockRetainUntilDate"])) == _second(iso(longer))
    # Both incidents have the part, and each part records the lock the version really holds or its own, never a
    # lock the version does not have.
    for hold in (long_hold, short_hold):
        (part,) = manifest_parts(config, s3, hold.incident_id)
        (entry,) = part["segments"]
        assert (entry["key"], entry["version_id"]) == (segment.key, segment.version_id)
        assert entry["lock_mode"] == "COMPLIANCE"
        assert _second(entry["retain_until"]) in (_second(iso(hold.lock.retain_until)), _second(iso(longer)))
    (indexed,) = manifest_parts(config, s3, indexing.incident_id)[0]["segments"]
    # The indexer's entry records the longer lock it kept, and says so.
    assert _second(indexed["retain_until"]) == _second(iso(longer))
    assert indexed["lock_outcome"] == "kept_stronger"


def test_two_holds_locking_one_segment_at_once_both_succeed_and_the_longer_lock_stands(
        local: Any, tmp_path: Path) -> None:
    config, s3, _ = local
    bus = KafkaBus(config.kafka_bootstrap)
    try:
        (record, *_) = run_replay(config.with_(spool_dir=tmp_path / "spool"), SAMPLE, speedup=1000.0, s3=s3, bus=bus)
    finally:
        bus.close()
    now = datetime.now(UTC)
    longer = now + timedelta(days=2)
    holds = [Hold(f"it-long-{uuid.uuid4().hex[:6]}", config.cluster, (), 0, 2**62, now + timedelta(hours=1),
                  LockSpec("COMPLIANCE", longer)),
             Hold(f"it-short-{uuid.uuid4().hex[:6]}", config.cluster, (), 0, 2**62, now + timedelta(hours=1),
                  LockSpec("COMPLIANCE", now + timedelta(days=1)))]
    for hold in holds:  # the incidents' manifests, sealed as the freeze seals them (parts are read through the chain)
        put_signed_manifest(config, s3, hold.incident_id, {"incident_id": hold.incident_id, "segments": []},
                            (hold.lock.mode, hold.lock.retain_until))
    copies = _copies(s3, config.raw_bucket, record, ROUNDS, uuid.uuid4().hex[:4])
    outcomes: dict[str | None, int] = {}
    with ThreadPoolExecutor(max_workers=2) as pool:
        for copy in copies:
            barrier = threading.Barrier(2)

            def lock(hold: Hold, segment: SegmentRecord = copy, gate: threading.Barrier = barrier) -> Any:
                gate.wait(5)
                return lock_late_segment(config, s3, hold, segment)

            entries = list(pool.map(lock, holds))  # raises if either locker failed
            head = s3.head_object(Bucket=config.raw_bucket, Key=copy.key, VersionId=copy.version_id)
            assert head["ObjectLockMode"] == "COMPLIANCE"
            assert head["ObjectLockRetainUntilDate"] >= longer - timedelta(seconds=1)
            actual = _second(iso(head["ObjectLockRetainUntilDate"]))
            for hold, entry in zip(holds, entries, strict=True):
                # Each incident records a lock at least its own: its own when it applied it (a longer one may come
                # after), or the stronger one that already stood, which it kept.
                assert entry is not None and entry.lock_mode == "COMPLIANCE"
                assert _second(entry.retain_until) in (_second(iso(hold.lock.retain_until)), actual)
                if entry.lock_outcome == "kept_stronger":
                    assert _second(entry.retain_until) == actual
            assert _second(entries[0].retain_until) == actual  # the longer lock is always its own
            outcomes[entries[1].lock_outcome] = outcomes.get(entries[1].lock_outcome, 0) + 1
    # Over the rounds the shorter lock came second (and kept the longer one) at least once.
    assert outcomes.get("kept_stronger", 0) >= 1, outcomes
    for hold in holds:
        parts = manifest_parts(config, s3, hold.incident_id)
        assert sorted(p["segments"][0]["key"] for p in parts) == sorted(c.key for c in copies)


def test_overlapping_incidents_get_every_late_segment_through_the_indexer(local: Any, handler_env: Any,
                                                                         tmp_path: Path) -> None:
    config, s3, _ = local
    config = config.with_(segments_topic=f"ff-overlap-{uuid.uuid4().hex[:8]}", hold_grace_s=60)
    handler_env(config)
    create_topics(config.kafka_bootstrap, [config.segments_topic])
    now = datetime.now(UTC)
    incidents = []
    for name, days, start in (("a", 2, 2), ("b", 1, 1)):
        request = FreezeRequest(incident_id=f"it-overlap-{name}-{uuid.uuid4().hex[:6]}", source="api", title=name,
                                severity="high", window_start=now - timedelta(minutes=start),
                                window_end=now + timedelta(minutes=3), scope=Scope(config.cluster),
                                lock=LockSpec("COMPLIANCE", now + timedelta(days=days)))
        s3io.put_json(s3, config.evidence_bucket, incident_key(request.incident_id),
                      {"incident_id": request.incident_id})
        freeze(config, s3, request)
        incidents.append(request)
    bus = KafkaBus(config.kafka_bootstrap)
    try:
        records = run_replay(config.with_(spool_dir=tmp_path / "spool"), SAMPLE, speedup=1000.0, s3=s3, bus=bus)
    finally:
        bus.close()
    source = KafkaEventSource(config.kafka_bootstrap, config.segments_topic, f"indexer-{uuid.uuid4().hex[:6]}",
                              load_handler(config, "segment_indexer"), "freezeframe-segment-indexer",
                              retry_backoff_s=0.5).start()
    try:
        until(lambda: all(len(manifest_parts(config, s3, r.incident_id)) == len(records) for r in incidents), 60,
              "every late segment in both incidents", poll_s=0.3)
    finally:
        source.stop()
    assert source.dead_letters == [] and source.failures == 0
    for request in incidents:
        parts = manifest_parts(config, s3, request.incident_id)
        assert sorted(p["segments"][0]["key"] for p in parts) == sorted(r.key for r in records)
        for part in parts:
            entry = part["segments"][0]
            head = s3.head_object(Bucket=config.raw_bucket, Key=entry["key"], VersionId=entry["version_id"])
            assert _second(entry["retain_until"]) == _second(iso(head["ObjectLockRetainUntilDate"]))
            assert head["ObjectLockRetainUntilDate"] >= incidents[0].lock.retain_until - timedelta(seconds=1)
