"""The dissection planner (dissect.plan): chunks cover each node's span once, and fit the task budget."""

from __future__ import annotations

import pytest

from freezeframe.contracts.errors import WindowError
from freezeframe.contracts.models import ManifestEntry
from freezeframe.dissect.plan import (
    SECOND_NS,
    CostModel,
    Limits,
    SegmentSpan,
    chunk_of_item,
    plan_incident,
    plan_node,
    predict,
)

T0 = 1_767_225_600 * SECOND_NS


def segments(count: int, seconds: int, packets: int | None, size: int = 50 * 2**20) -> list[SegmentSpan]:
    return [SegmentSpan(f"s{i}", T0 + i * seconds * SECOND_NS, T0 + (i + 1) * seconds * SECOND_NS - 1, size, packets)
            for i in range(count)]


def test_chunks_tile_the_span_without_gaps_and_only_the_ends_are_open() -> None:
    chunks = plan_node("n", segments(60, 60, 6_000_000))  # an hour at 100 k packets/s
    assert chunks[0].start_ns == T0 and chunks[-1].end_ns == T0 + 3600 * SECOND_NS
    for before, after in zip(chunks, chunks[1:], strict=False):
        assert before.end_ns == after.start_ns
        assert after.warmup_start_ns == after.start_ns - 10 * SECOND_NS
    assert [c.open_start for c in chunks].count(True) == 1 and chunks[0].open_start
    assert [c.open_end for c in chunks].count(True) == 1 and chunks[-1].open_end
    assert chunks[0].warmup_start_ns == chunks[0].start_ns


def test_every_chunk_fits_the_budget_and_a_denser_node_gets_more_chunks() -> None:
    limits = Limits()
    sparse = plan_node("a", segments(60, 60, 600_000))
    dense = plan_node("b", segments(60, 60, 6_000_000))
    assert len(dense) > len(sparse)
    for chunk in sparse + dense:
        assert chunk.seconds <= limits.timeout_s / 2
        assert chunk.memory_mb <= limits.memory_mb / 2
    # The estimate adds up: every packet of the node is in one chunk, plus the warm-ups.
    assert sum(c.packets for c in dense) >= 360_000_000


def test_unknown_packet_counts_are_estimated_from_the_bytes() -> None:
    cost = CostModel(bytes_per_packet=1000)
    chunks = plan_node("n", segments(2, 60, None, size=60_000_000), cost=cost, chunk_ns=120 * SECOND_NS)
    assert len(chunks) == 1 and chunks[0].packets == 120_000


def test_a_fixed_chunk_length_sets_the_edges() -> None:
    chunks = plan_node("n", segments(3, 60, 1000), chunk_ns=50 * SECOND_NS, warmup_ns=5 * SECOND_NS)
    assert [(c.start_ns - T0) // SECOND_NS for c in chunks] == [0, 50, 100, 150]
    assert [c.segments for c in chunks] == [("s0",), ("s0", "s1"), ("s1", "s2"), ("s2",)]  # warm-ups included
    with pytest.raises(WindowError):
        plan_node("n", segments(1, 60, 1000), chunk_ns=0)


def test_plan_incident_groups_manifest_entries_by_node_and_predicts_within_target() -> None:
    entries = [ManifestEntry(s.key + node, "v", "0" * 64, s.size, node, s.start_ns, s.end_ns, None, s.packets,
                             "COMPLIANCE", "2030-01-01T00:00:00Z", False)
               for node in ("n1", "n2") for s in segments(60, 60, 6_000_000)]
    plan = plan_incident(entries)
    assert plan.nodes() == ["n1", "n2"]
    assert not plan.over_budget()
    prediction = predict(plan, concurrency=1000)
    assert prediction.waves == -(-len(plan.chunks) // 1000)
    assert 0 < prediction.edge_rows <= prediction.rows
    assert prediction.wall_s < 15 * 60
    assert prediction.cost_usd > 0
    slow = predict(plan, concurrency=1)
    assert slow.wall_s > prediction.wall_s


def test_chunk_items_round_trip_and_bad_items_are_refused() -> None:
    chunk = plan_node("n", segments(3, 60, 1000), chunk_ns=50 * SECOND_NS)[1]
    item = chunk.to_item("inc")
    assert chunk_of_item(item) == ("n", 1, chunk.start_ns, chunk.end_ns, chunk.warmup_start_ns, False, False)
    with pytest.raises(WindowError):
        chunk_of_item({**item, "start_ns": item["end_ns"]})
    with pytest.raises(WindowError):
        chunk_of_item({"node": "n"})


def test_a_gap_between_segments_is_not_cut_into_empty_chunks() -> None:
    far = [SegmentSpan("late", T0 + 86_400 * 365 * SECOND_NS, T0 + 86_400 * 365 * SECOND_NS + 5 * SECOND_NS, 10, 10)]
    chunks = plan_node("n", segments(1, 60, 1000) + far, chunk_ns=10 * SECOND_NS)
    assert len(chunks) == 7  # six for the first minute, one for the late segment (the year between joins the sixth)
    assert chunks[5].end_ns == far[0].start_ns
