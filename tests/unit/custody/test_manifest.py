from dataclasses import replace
from datetime import UTC, datetime, timedelta

from freezeframe.contracts.models import FreezeRequest, LockSpec, ManifestEntry, Scope, to_ns
from freezeframe.custody.manifest import build_manifest, node_coverage, root_hash

S = 1_000_000_000
W0 = to_ns(datetime(2026, 11, 21, 12, 0, tzinfo=UTC))


def entry(node: str, start_s: int, end_s: int, seq: int) -> ManifestEntry:
    return ManifestEntry(key=f"raw/c/2026/11/21/12/{node}/{W0 + start_s * S}-{W0 + end_s * S}.pcap.zst",
                         version_id=f"v{seq}", sha256=f"{seq:064x}", size=100, node=node, start_ns=W0 + start_s * S,
                         end_ns=W0 + end_s * S, seq=seq, packets=10, lock_mode="COMPLIANCE",
                         retain_until="2026-12-21T12:00:00.000Z", legal_hold=False)


def test_coverage_reports_intervals_gaps_and_missing_seqs() -> None:
    # node-a: seq 3 (20-30 s) was never uploaded; the window runs to 60 s.
    entries = [entry("node-a", 0, 10, 1), entry("node-a", 10, 20, 2), entry("node-a", 30, 40, 4)]
    coverage = node_coverage(entries, W0, W0 + 60 * S)["node-a"]
    assert coverage["covered_ns"] == [[W0, W0 + 20 * S], [W0 + 30 * S, W0 + 40 * S]]
    assert coverage["gaps_ns"] == [[W0 + 20 * S, W0 + 30 * S], [W0 + 40 * S, W0 + 60 * S]]
    assert coverage["seq_gaps"] == [[3, 3]]
    assert coverage["packets"] == 30


def test_segments_reaching_outside_the_window_are_clipped() -> None:
    coverage = node_coverage([entry("n", -5, 5, 1)], W0, W0 + 5 * S)["n"]
    assert coverage["covered_ns"] == [[W0, W0 + 5 * S]] and coverage["gaps_ns"] == []


def test_root_hash_is_order_independent_and_detects_any_change() -> None:
    entries = [entry("node-a", 0, 10, 1), entry("node-b", 0, 10, 2)]
    assert root_hash(entries) == root_hash(list(reversed(entries)))
    tampered = [replace(entries[0], sha256="f" * 64), entries[1]]
    assert root_hash(tampered) != root_hash(entries)


def test_manifest_lists_every_segment_with_key_version_and_hash() -> None:
    request = FreezeRequest(incident_id="am-1", source="alertmanager", title="t", severity="critical",
                            window_start=datetime(2026, 11, 21, 12, 0, tzinfo=UTC),
                            window_end=datetime(2026, 11, 21, 12, 1, tzinfo=UTC), scope=Scope("c"),
                            lock=LockSpec("COMPLIANCE", datetime(2026, 12, 21, tzinfo=UTC)))
    entries = [entry("node-b", 0, 10, 2), entry("node-a", 0, 10, 1)]
    manifest = build_manifest(request, entries, request.window_start + timedelta(minutes=2), "raw-bucket")
    assert [(s["key"], s["version_id"], s["sha256"]) for s in manifest["segments"]] == [
        (e.key, e.version_id, e.sha256) for e in (entries[1], entries[0])]
    assert manifest["root_hash"] == root_hash(entries)
    assert manifest["request"]["incident_id"] == "am-1"


def test_coverage_sums_drops_and_keeps_the_agents_gap_records() -> None:
    entries = [replace(entry("node-a", 0, 10, 1), kernel_drops=3, agent_drops=1),
               replace(entry("node-a", 10, 20, 2), kernel_drops=2, agent_drops=None)]
    gap = {"schema": "freezeframe.gap/v1", "cluster": "c", "node": "node-a", "first_seq": 3, "last_seq": 5,
           "start_ns": W0 + 20 * S, "end_ns": W0 + 50 * S, "bytes": 4096, "packets": 40, "reason": "spool_full"}
    elsewhere = {**gap, "node": "node-b"}
    later = {**gap, "start_ns": W0 + 100 * S, "end_ns": W0 + 110 * S}
    coverage = node_coverage(entries, W0, W0 + 60 * S, [gap, elsewhere, later])["node-a"]
    assert (coverage["kernel_drops"], coverage["agent_drops"]) == (5, 1)
    assert coverage["gap_records"] == [gap]
