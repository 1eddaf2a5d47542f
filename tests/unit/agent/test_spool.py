"""The agent's spool: storage cap eviction into gap records, and recovery of everything a crash or restart left."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from freezeframe.capture.pcapio import PcapReader
from freezeframe_agent.segmenter import Segmenter
from freezeframe_agent.spool import GAP_SCHEMA, GapRecord, Spool

SAMPLE = Path(__file__).resolve().parents[2] / "fixtures" / "sample.pcap"
S = 1_000_000_000


def seg_meta(index: int, stored: bytes, packets: int = 10, capture_bytes: int = 1500) -> dict[str, Any]:
    """The sidecar of the index-th one-second segment of node n1, as the segmenter writes it."""
    start = 1_700_000_000 * S + index * S
    return {"cluster": "c1", "node": "n1", "key": f"raw/c1/x/n1/{start}-{start + S}.pcap.zst", "start_ns": start,
            "end_ns": start + S, "first_packet_ns": start, "last_packet_ns": start + S - 1, "packets": packets,
            "bytes": capture_bytes, "stored_bytes": len(stored), "sha256": hashlib.sha256(stored).hexdigest(),
            "compression": "zstd", "format": "pcap", "link_type": 1, "snaplen": 262144, "kernel_drops": index,
            "agent_drops": 0, "capture_filter": "", "agent_version": "t"}


def fill(spool: Spool, count: int, size: int = 1000) -> list[dict[str, Any]]:
    metas = []
    for index in range(count):
        body = bytes([index]) * size
        metas.append(spool.add(body, seg_meta(index, body, packets=10 + index, capture_bytes=1500 + index)).meta)
    return metas


def test_the_cap_evicts_the_oldest_unuploaded_segments_into_one_gap_record(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=3000, clock_ns=lambda: 42)
    first = fill(spool, 3)  # exactly at the cap: nothing evicted
    assert spool.gaps() == [] and spool.stats().bytes == 3000
    big = b"\xff" * 2500
    spool.add(big, seg_meta(3, big))  # needs 2500 of 3000: seqs 0, 1 and 2 have to go
    [gap] = spool.gaps()
    assert gap == GapRecord(cluster="c1", node="n1", first_seq=0, last_seq=2, start_ns=first[0]["start_ns"],
                            end_ns=first[2]["end_ns"], segments=3, packets=10 + 11 + 12, bytes=1500 + 1501 + 1502,
                            stored_bytes=3000, kernel_drops=0 + 1 + 2, agent_drops=0, reason="spool_full",
                            observed_ns=42)
    assert gap.to_dict()["schema"] == GAP_SCHEMA
    assert [e.seq for e in spool.entries()] == [3]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "000000000003.json", "000000000003.pcap.zst", "gap-000000000000-000000000002.json", "state.json"]
    assert spool.stats().bytes == 2500 and spool.stats().evicted_total == 3


def test_a_segment_in_flight_to_s3_is_not_evicted(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=2000)
    fill(spool, 2)
    in_flight = spool.take_for_store(0)
    assert in_flight is not None and in_flight.seq == 0
    body = b"x" * 1000
    spool.add(body, seg_meta(2, body))
    assert [(g.first_seq, g.last_seq) for g in spool.gaps()] == [(1, 1)]
    assert [e.seq for e in spool.entries()] == [0, 2]


def test_segments_s3_holds_do_not_count_against_the_cap(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=2000)
    fill(spool, 2)
    for _ in range(2):
        entry = spool.take_for_store(0)
        assert entry is not None
        spool.mark_stored(entry, "bucket", f"v{entry.seq}")
    assert spool.stats().bytes == 0 and spool.stats().segments == 2  # waiting for the bus, as sidecars only
    fill(spool, 2)
    assert spool.gaps() == []


def test_evictions_are_split_into_runs_of_consecutive_seqs(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=10_000)
    fill(spool, 5)
    entries = {e.seq: e for e in spool.entries()}
    records = spool.evict([entries[0], entries[1], entries[3]], "key_conflict")
    assert [(r.first_seq, r.last_seq, r.segments) for r in records] == [(0, 1, 2), (3, 3, 1)]


def test_a_restart_resumes_pending_segments_gap_records_and_the_sequence(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=2500)
    metas = fill(spool, 4)  # seqs 0 and 1 evicted on the way
    stored = spool.take_for_store(0)
    assert stored is not None and stored.seq == 2
    spool.mark_stored(stored, "bucket", "v2")
    before = ([(e.seq, e.stored) for e in spool.entries()], spool.gaps(), spool.next_seq, spool.last_end_ns)

    again = Spool(tmp_path, max_bytes=2500)
    assert ([(e.seq, e.stored) for e in again.entries()], again.gaps(), again.next_seq, again.last_end_ns) == before
    assert before[0] == [(2, True), (3, False)] and before[2] == 4 and before[3] == metas[3]["end_ns"]
    assert [(g.first_seq, g.last_seq) for g in again.gaps()] == [(0, 0), (1, 1)]
    assert again.take_for_publish(0).record.first_seq == 0  # type: ignore[union-attr]  # gaps go out first


def test_recovery_finishes_what_a_crash_interrupted(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    fill(spool, 4)
    # A crash after the gap record of seqs 0-1 was written but before their files were removed:
    record = GapRecord.covering([e.meta for e in spool.entries()[:2]], "spool_full", 7)
    (tmp_path / "gap-000000000000-000000000001.json").write_text(json.dumps(record.to_dict()))
    # ... after seq 4's sidecar was written but before state.json was updated:
    body = b"y" * 10
    (tmp_path / "000000000004.pcap.zst").write_bytes(body)
    (tmp_path / "000000000004.json").write_text(json.dumps({**seg_meta(4, body), "seq": 4}))
    # ... a body without its sidecar (seq never committed) and a half-written temp file:
    (tmp_path / "000000000005.pcap.zst").write_bytes(b"half")
    (tmp_path / "000000000003.json.tmp").write_bytes(b"{")

    again = Spool(tmp_path)
    assert [e.seq for e in again.entries()] == [2, 3, 4]
    assert [(g.first_seq, g.last_seq) for g in again.gaps()] == [(0, 1)]
    assert again.next_seq == 5  # seq 4 is taken even though state.json said 4
    assert not (tmp_path / "000000000000.json").exists() and not (tmp_path / "000000000005.pcap.zst").exists()
    assert not list(tmp_path.glob("*.tmp"))


def test_bytes_that_vanished_from_the_spool_are_reported_not_skipped(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    metas = fill(spool, 3)
    (tmp_path / "000000000001.pcap.zst").unlink()
    again = Spool(tmp_path)
    [gap] = again.gaps()
    assert (gap.first_seq, gap.last_seq, gap.reason, gap.stored_bytes) == (1, 1, "spool_corrupt",
                                                                           metas[1]["stored_bytes"])
    assert [e.seq for e in again.entries()] == [0, 2]


def test_segments_and_gaps_of_a_capped_run_account_for_every_packet_and_seq(tmp_path: Path) -> None:
    with open(SAMPLE, "rb") as handle:
        reader = PcapReader(handle)
        packets = list(reader)
    spool = Spool(tmp_path / "spool", max_bytes=600)  # smaller than three sample segments
    segmenter = Segmenter(cluster="c", node="n1", spool_dir=tmp_path / "spool", link_type=reader.link_type,
                          snaplen=reader.header.snaplen, period_s=5.0, capture_filter="", agent_version="t",
                          spool=spool)
    for packet in packets:
        segmenter.add(packet.ts_ns, packet.data, packet.orig_len)
    segmenter.flush()
    gaps, kept = spool.gaps(), spool.entries()
    assert gaps, "the cap must have evicted something"
    seqs = sorted([e.seq for e in kept] + [s for g in gaps for s in range(g.first_seq, g.last_seq + 1)])
    assert seqs == list(range(spool.next_seq))
    assert sum(g.packets for g in gaps) + sum(e.meta["packets"] for e in kept) == len(packets)
    assert sum(g.bytes for g in gaps) + sum(e.meta["bytes"] for e in kept) == sum(p.orig_len for p in packets)
    assert all(g.reason == "spool_full" for g in gaps)
    assert [g.first_seq for g in gaps][0] == 0, "the oldest go first"
