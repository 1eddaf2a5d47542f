"""A part locked while a dissection pass runs (issue 13, seen on the real stack under load): the pass planned its
chunks for the node's inputs before the part came, and its merge then found other inputs. The merge used to write a
status for the new inputs with every chunk a hole (no rows at all), and the last pass after the hold closed left the
incident's tables empty. Now the merge leaves the node's status alone and finalize sends the incident round again,
even after the hold's last pass, so the pass that follows dissects every locked segment."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from freezeframe.adapters import s3 as s3io
from freezeframe.contracts.keys import dissect_plan_nodes_key, dissect_status_key
from freezeframe.contracts.models import iso
from freezeframe.custody.incident import read_planned_digests
from freezeframe.dissect import fanout
from freezeframe.dissect.finalize import NodeOutcome, finalize_incident
from tests.functional.conftest import Harness

INCIDENT = "fn-race"


def _chunks(harness: Harness) -> list[dict[str, object]]:
    config, store = harness.settings, harness.store
    plan = fanout.plan_dissection(config, store, INCIDENT, [config.node_name])
    items = fanout.plan_items(config, store, plan)
    for item in items:
        fanout.dissect_chunk(config, store, item)
    return items


def _merge(harness: Harness) -> tuple[dict[str, object], str]:
    config, store, node = harness.settings, harness.store, harness.settings.node_name
    merged = fanout.merge_connections_step(config, store, INCIDENT, node)
    for group in merged["groups"]:
        fanout.merge_apps_step(config, store, INCIDENT, node, group)
    return merged, fanout.merge_node(config, store, INCIDENT, node).state


def test_a_part_locked_during_a_pass_gets_one_more_pass_even_after_the_hold_closed(harness: Harness) -> None:
    config, store, node = harness.settings, harness.store, harness.settings.node_name
    early = harness.replay()
    window_end = datetime.now(UTC) + timedelta(minutes=10)
    request = harness.request(INCIDENT, early, window_end=window_end)
    harness.call("freeze", {"request": request.to_dict()})
    after_close = window_end + timedelta(seconds=config.hold_grace_s + config.hold_settle_s + 5)

    _chunks(harness)
    # The agent uploads more while the chunks run; the segment indexer locks them under the hold.
    late = harness.replay()
    harness.call("segment_indexer", harness.kafka_event(config.segments_topic, {r.key for r in late}))
    merged, _state = _merge(harness)
    assert merged.get("superseded") is True
    assert s3io.exists(store, config.evidence_bucket, dissect_status_key(INCIDENT, node)) is False
    # The hold's last pass (its close time is past): it would have been the last, but the node is behind its plan.
    summary = finalize_incident(config, store, INCIDENT, [NodeOutcome(node, "done")], now=after_close)
    assert summary["behind_plan"] == [node]
    assert summary["follow"]["again"] is True
    assert summary["state"] == "incomplete"
    assert summary["partial_until"] == iso(after_close + timedelta(seconds=config.dissect_refresh_s))

    # The pass that follows plans the node's inputs as they are now and merges them.
    _chunks(harness)
    merged, state = _merge(harness)
    assert "superseded" not in merged and state == "done"
    status = s3io.get_json(store, config.evidence_bucket, dissect_status_key(INCIDENT, node))
    assert status["segments"] == len(early) + len(late)
    assert status["stats"]["packets"] == sum(r.packets for r in early + late)
    summary = finalize_incident(config, store, INCIDENT, [NodeOutcome(node, "done")], now=after_close)
    assert (summary["behind_plan"], summary["follow"]["again"], summary["state"]) == ([], False, "complete")
    assert summary["partial_until"] is None
    assert summary["view_rows"]["connections"] > 0


def test_a_part_locked_between_the_merge_steps_leaves_the_status_to_the_next_pass(harness: Harness) -> None:
    config, store, node = harness.settings, harness.store, harness.settings.node_name
    early = harness.replay()
    request = harness.request(INCIDENT, early, window_end=datetime.now(UTC) + timedelta(minutes=10))
    harness.call("freeze", {"request": request.to_dict()})
    _chunks(harness)
    merged = fanout.merge_connections_step(config, store, INCIDENT, node)
    assert merged["groups"] and "superseded" not in merged
    late = harness.replay()
    harness.call("segment_indexer", harness.kafka_event(config.segments_topic, {r.key for r in late}))
    # The Map over the node's groups, then its part: none fails (no dead letter), none writes a status.
    assert all(fanout.merge_apps_step(config, store, INCIDENT, node, group).get("superseded") is True
               for group in merged["groups"])
    report = fanout.merge_node(config, store, INCIDENT, node)
    assert report.skipped is True
    assert s3io.exists(store, config.evidence_bucket, dissect_status_key(INCIDENT, node)) is False


def test_a_plan_document_that_does_not_parse_decides_nothing_and_finalize_still_writes_the_summary(
        harness: Harness) -> None:
    config, store, node = harness.settings, harness.store, harness.settings.node_name
    early = harness.replay()
    request = harness.request(INCIDENT, early, window_end=datetime.now(UTC) + timedelta(minutes=10))
    harness.call("freeze", {"request": request.to_dict()})
    _chunks(harness)
    _merge(harness)
    store.put_object(Bucket=config.evidence_bucket, Key=dissect_plan_nodes_key(INCIDENT), Body=b'{"schema": 7}')
    assert read_planned_digests(config, store, INCIDENT) == {}
    summary = finalize_incident(config, store, INCIDENT, [NodeOutcome(node, "done")])
    assert summary["behind_plan"] == [] and summary["view_rows"]["connections"] > 0
