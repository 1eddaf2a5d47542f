"""The two upload stages: S3 then bus, each retried on its own, resumable after a restart without a second object."""

from __future__ import annotations

import hashlib
import random
import threading
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from freezeframe.contracts.config import Settings
from freezeframe.contracts.models import SegmentRecord
from freezeframe_agent.publisher import DurableKafkaBus
from freezeframe_agent.spool import GAP_SCHEMA, Spool
from freezeframe_agent.uploader import Backoff, Uploader
from tests.fixtures.waiting import until

S = 1_000_000_000


class FakeS3:
    """put_object with IfNoneMatch and head_object, as put_segment uses them; `down` makes every call fail."""

    def __init__(self) -> None:
        self.objects: dict[str, tuple[bytes, str, dict[str, str]]] = {}
        self.puts = 0
        self.down = False
        self.fail_next = 0

    def _check(self) -> None:
        if self.down or self.fail_next:
            self.fail_next = max(0, self.fail_next - 1)
            raise EndpointConnectionError(endpoint_url="http://s3.invalid")

    def put_object(self, *, Bucket: str, Key: str, Body: bytes, Metadata: dict[str, str], IfNoneMatch: str,
                   **_: Any) -> dict[str, str]:
        self._check()
        self.puts += 1
        if Key in self.objects:
            raise ClientError({"Error": {"Code": "PreconditionFailed"}}, "PutObject")
        version = f"v{len(self.objects) + 1}"
        self.objects[Key] = (Body, version, dict(Metadata))
        return {"VersionId": version}

    def head_object(self, *, Bucket: str, Key: str) -> dict[str, Any]:
        self._check()
        _, version, metadata = self.objects[Key]
        return {"VersionId": version, "Metadata": metadata}


class FakeBus:
    def __init__(self) -> None:
        self.published: list[tuple[str, str, dict[str, Any]]] = []
        self.down = False

    def publish(self, topic: str, key: str, value: Any) -> None:
        if self.down:
            raise ConnectionError("bus down")
        self.published.append((topic, key, dict(value)))

    def read(self, topic: str, timeout_s: float = 5.0) -> list[Any]:
        return []

    def close(self) -> None:
        return None


CONFIG = Settings(cluster="c1", node_name="n1", raw_bucket="raw")


def add_segments(spool: Spool, count: int, size: int = 100) -> None:
    for index in range(count):
        body = bytes([index + 1]) * size
        start = 1_700_000_000 * S + index * S
        spool.add(body, {"cluster": "c1", "node": "n1", "key": f"raw/c1/2023/11/14/22/n1/{start}-{start + S}.pcap.zst",
                         "start_ns": start, "end_ns": start + S, "first_packet_ns": start,
                         "last_packet_ns": start + 5, "packets": 3, "bytes": 300, "stored_bytes": len(body),
                         "sha256": hashlib.sha256(body).hexdigest(), "compression": "zstd", "format": "pcap",
                         "link_type": 1, "snaplen": 262144, "kernel_drops": 0, "agent_drops": 0,
                         "capture_filter": "", "agent_version": "t"})


def test_after_s3_succeeded_and_publish_failed_a_restart_only_republishes(tmp_path: Path) -> None:
    s3, bus = FakeS3(), FakeBus()
    spool = Spool(tmp_path)
    add_segments(spool, 2)
    bus.down = True
    with pytest.raises(ConnectionError):
        Uploader(CONFIG, s3, spool, bus=bus).drain()
    assert s3.puts == 2 and len(s3.objects) == 2
    assert not list(tmp_path.glob("*.pcap.zst")), "S3 holds the bytes: the spool keeps only the sidecars"
    versions = {key: version for key, (_, version, _) in s3.objects.items()}

    bus.down = False  # the agent restarts with the bus back
    records = Uploader(CONFIG, s3, Spool(tmp_path), bus=bus).drain()
    assert s3.puts == 2, "no second put after the restart"
    assert [(r.key, r.version_id) for r in records] == sorted(versions.items())
    assert [SegmentRecord.from_dict(v) for _, _, v in bus.published] == records
    assert [r.seq for r in records] == [0, 1]
    assert {k for _, k, _ in bus.published} == {"c1/n1"}
    assert not [p for p in tmp_path.iterdir() if p.name != "state.json"]


def test_a_crash_between_the_put_and_the_sidecar_update_reuses_the_version(tmp_path: Path) -> None:
    s3, bus = FakeS3(), FakeBus()
    spool = Spool(tmp_path)
    add_segments(spool, 1)
    [entry] = spool.entries()
    body = entry.body_path.read_bytes()
    s3.objects[entry.meta["key"]] = (body, "v-first", {"sha256": entry.meta["sha256"]})  # the put before the crash
    [record] = Uploader(CONFIG, s3, Spool(tmp_path), bus=bus).drain()
    assert record.version_id == "v-first" and len(s3.objects) == 1


def test_a_key_holding_other_bytes_becomes_a_reported_gap_not_a_stuck_queue(tmp_path: Path) -> None:
    s3, bus = FakeS3(), FakeBus()
    spool = Spool(tmp_path)
    add_segments(spool, 2)
    first = spool.entries()[0]
    s3.objects[first.meta["key"]] = (b"other", "v-other", {"sha256": "0" * 64})
    records = Uploader(CONFIG, s3, spool, bus=bus).drain()
    assert [r.seq for r in records] == [1]
    gaps = [v for _, _, v in bus.published if v.get("schema") == GAP_SCHEMA]
    assert [(g["first_seq"], g["last_seq"], g["reason"]) for g in gaps] == [(0, 0, "key_conflict")]


def test_a_corrupt_spool_file_is_reported_as_a_gap(tmp_path: Path) -> None:
    s3, bus = FakeS3(), FakeBus()
    spool = Spool(tmp_path)
    add_segments(spool, 1)
    spool.entries()[0].body_path.write_bytes(b"bit rot")
    assert Uploader(CONFIG, s3, spool, bus=bus).drain() == []
    assert s3.puts == 0
    assert [(v["first_seq"], v["reason"]) for _, _, v in bus.published] == [(0, "spool_corrupt")]


def test_outages_of_s3_and_the_bus_are_ridden_out_independently(tmp_path: Path) -> None:
    s3, bus = FakeS3(), FakeBus()
    spool = Spool(tmp_path, max_bytes=250)
    uploader = Uploader(CONFIG, s3, spool, bus=bus, backoff_base_s=0.001, backoff_cap_s=0.01)
    s3.down = True
    add_segments(spool, 3)  # 300 bytes with a 250-byte cap: seq 0 is evicted
    uploader.start()
    try:
        until(lambda: any(v["schema"] == GAP_SCHEMA for _, _, v in bus.published))  # the bus stage still works
        until(lambda: uploader.failures_total["s3"] >= 5)
        assert s3.objects == {}
        bus.down = True
        s3.down = False
        until(lambda: len(s3.objects) == 2)  # ... and S3 works while the bus is down
        until(lambda: uploader.failures_total["bus"] >= 5)
        assert spool.stats().bytes == 0
        bus.down = False
        until(spool.drained)
    finally:
        uploader.stop()
    segments = [SegmentRecord.from_dict(v) for _, _, v in bus.published if v["schema"] != GAP_SCHEMA]
    gaps = [v for _, _, v in bus.published if v["schema"] == GAP_SCHEMA]
    assert [r.seq for r in segments] == [1, 2] and [(g["first_seq"], g["last_seq"]) for g in gaps] == [(0, 0)]
    assert s3.puts == 2 and uploader.alive() is False


def test_the_upload_never_gives_up(tmp_path: Path) -> None:
    s3, bus = FakeS3(), FakeBus()
    spool = Spool(tmp_path)
    s3.fail_next = 25  # more than the old max_attempts many times over
    uploader = Uploader(CONFIG, s3, spool, bus=bus, backoff_base_s=0.001, backoff_cap_s=0.002)
    uploader.start()
    try:
        add_segments(spool, 2)
        assert spool.wait_drained(30)
    finally:
        uploader.stop()
    assert [r.seq for r in uploader.uploaded] == [0, 1] and uploader.failures_total["s3"] == 25


def test_backoff_is_exponential_jittered_and_capped() -> None:
    backoff = Backoff(base_s=0.5, cap_s=4.0, rng=random.Random(7))
    delays = [backoff.next_delay() for _ in range(6)]
    for n, delay in enumerate(delays):
        ceiling = min(4.0, 0.5 * 2 ** n)
        assert ceiling * 0.5 <= delay <= ceiling
    backoff.reset()
    assert backoff.next_delay() <= 0.5


class _Future:
    """kafka-python's FutureRecordMetadata as the bus uses it: the producer's I/O thread completes it (is_done, with
    an exception when it gave up) whether or not anyone waits in get()."""

    def __init__(self) -> None:
        self.is_done = False
        self.exception: Exception | None = None
        self.done = threading.Event()

    def get(self, timeout: float) -> None:
        from kafka.errors import KafkaTimeoutError

        if not self.done.wait(timeout):
            raise KafkaTimeoutError("waited")
        self.is_done = True
        if self.exception is not None:
            raise self.exception

    def acknowledge(self) -> None:
        self.is_done = True
        self.done.set()

    def give_up(self, exception: Exception) -> None:
        self.is_done, self.exception = True, exception
        self.done.set()

    def succeeded(self) -> bool:
        return self.is_done and self.exception is None


class _Producer:
    def __init__(self) -> None:
        self.sent: list[_Future] = []

    def send(self, topic: str, key: bytes, value: bytes) -> _Future:
        self.sent.append(_Future())
        return self.sent[-1]


def test_a_publish_that_timed_out_waits_on_the_same_send_instead_of_sending_twice() -> None:
    from kafka.errors import KafkaTimeoutError

    producer = _Producer()
    bus = DurableKafkaBus("unused:9092", wait_s=0.01, producer=producer)
    with pytest.raises(KafkaTimeoutError):
        bus.publish("t", "k", {"seq": 1})  # the broker is away; the producer keeps the record
    producer.sent[0].done.set()  # the broker came back and acknowledged it
    bus.publish("t", "k", {"seq": 1})
    assert len(producer.sent) == 1


def test_a_publish_the_producer_gave_up_on_is_sent_again() -> None:
    from kafka.errors import KafkaTimeoutError

    producer = _Producer()
    bus = DurableKafkaBus("unused:9092", wait_s=0.01, producer=producer)
    with pytest.raises(KafkaTimeoutError):
        bus.publish("t", "k", {"seq": 1})
    producer.sent[0].give_up(KafkaTimeoutError("delivery timeout"))  # its delivery timeout expired: not coming
    with pytest.raises(KafkaTimeoutError):
        bus.publish("t", "k", {"seq": 1})
    assert len(producer.sent) == 2


def test_a_record_acknowledged_while_nobody_waited_is_not_sent_again() -> None:
    # The agent's outage test saw a seq published twice: the first publish stopped waiting while the broker was
    # away, the producer delivered the record when it came back, and the retried publish sent it a second time.
    from kafka.errors import KafkaTimeoutError

    producer = _Producer()
    bus = DurableKafkaBus("unused:9092", wait_s=0.01, producer=producer)
    with pytest.raises(KafkaTimeoutError):
        bus.publish("t", "k", {"seq": 1})
    producer.sent[0].acknowledge()  # the producer's I/O thread completes it before the stage retries
    bus.publish("t", "k", {"seq": 1})
    assert len(producer.sent) == 1
