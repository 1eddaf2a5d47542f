"""Holds (a window that reaches into the future) and legal holds, through the freeze and segment-indexer handlers.

A freeze whose window is still open opens a hold; segments the agent uploads later reach the segment indexer as
Kafka records (here: the file bus's records in Lambda's Kafka event shape) and are locked in place under the
incident's lock and appended as manifest parts. A legal hold sets each version's flag, and the flag goes off only
when every incident holding that version has released it."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from freezeframe_local.events import function_url_event

from freezeframe.adapters import s3 as s3io
from freezeframe.contracts.keys import incident_key, manifest_key
from freezeframe.contracts.models import LockSpec, iso
from freezeframe.freeze import legal_hold, segment_index
from freezeframe.freeze.holds import hold_key, manifest_parts
from tests.functional.conftest import API_TOKEN, Harness


def test_segments_uploaded_after_the_freeze_are_locked_under_the_open_hold(harness: Harness) -> None:
    config, store = harness.settings, harness.store
    early = harness.replay()
    window_end = datetime.now(UTC) + timedelta(minutes=10)
    request = harness.request("fn-hold", early, days=2, window_end=window_end)
    reply = harness.call("freeze", {"request": request.to_dict()})
    assert reply["segments"] == len(early)
    closes_at = window_end + timedelta(seconds=config.hold_grace_s)
    hold = s3io.get_json(store, config.evidence_bucket, hold_key("fn-hold", closes_at))
    assert hold["incident_id"] == "fn-hold"
    # The dissection follows the hold (an execution even though more segments are to come).
    assert [e["input"]["incident_id"] for e in harness.step_functions.executions.values()] == ["fn-hold"]

    late = harness.replay()  # the agent keeps recording: these segments start after the freeze
    late_keys = {r.key for r in late}
    for record in late:
        (version,) = store.versions_of(config.raw_bucket, record.key)
        assert version.mode is None  # nothing locked them yet
    reply = harness.call("segment_indexer", harness.kafka_event(config.segments_topic, late_keys))
    assert reply == {"batchItemFailures": []}
    for record in late:
        (version,) = store.versions_of(config.raw_bucket, record.key)
        assert (version.mode, version.retain_until) == ("COMPLIANCE", request.lock.retain_until)
    parts = manifest_parts(config, store, "fn-hold")
    assert {(s["key"], s["version_id"], s["sha256"]) for p in parts for s in p["segments"]} == {
        (r.key, r.version_id, r.sha256) for r in late}
    # The manifest itself still names only the segments the freeze found.
    manifest = s3io.get_json(store, config.evidence_bucket, manifest_key("fn-hold"))
    assert {s["key"] for s in manifest["segments"]} == {r.key for r in early}


def test_a_malformed_record_is_counted_not_retried_and_the_rest_of_the_batch_is_indexed(harness: Harness) -> None:
    config, store = harness.settings, harness.store
    records = harness.replay()
    event = harness.kafka_event(config.segments_topic)
    (partition,) = event["records"].values()
    partition.append({**partition[0], "offset": 10_000, "value": "bm90IGpzb24="})  # base64 of "not json"
    reply = harness.call("segment_indexer", event)
    assert reply == {"batchItemFailures": []}
    # No hold is open, so nothing was locked; the well-formed records were indexed for the next freeze.
    assert all(store.versions_of(config.raw_bucket, r.key)[0].mode is None for r in records)
    index = segment_index.load(config, store, config.cluster, min(r.start_ns for r in records),
                               max(r.end_ns for r in records))[0]
    assert set(index) == {(r.key, r.version_id) for r in records}


def test_a_legal_hold_stays_on_until_every_incident_holding_the_version_releases_it(harness: Harness) -> None:
    config, store = harness.settings, harness.store
    records = harness.replay()
    for incident in ("fn-legal-a", "fn-legal-b"):
        base = harness.request(incident, records)
        request = harness.request(incident, records, lock=LockSpec("GOVERNANCE", base.lock.retain_until, True))
        harness.call("freeze", {"request": request.to_dict()})
    held = [legal_hold.HeldVersion(config.raw_bucket, r.key, r.version_id) for r in records]
    for version in held:
        assert store.versions_of(config.raw_bucket, version.key)[0].legal_hold is True
        for incident in ("fn-legal-a", "fn-legal-b"):
            assert s3io.exists(store, config.evidence_bucket, legal_hold.reference_key(version, incident))
    manifest = s3io.get_json(store, config.evidence_bucket, manifest_key("fn-legal-a"))
    assert {s["legal_hold"] for s in manifest["segments"]} == {True}

    first = legal_hold.release(config, store, "fn-legal-a", held, datetime.now(UTC))
    assert set(first.values()) == {True}  # fn-legal-b still holds every version
    assert all(store.versions_of(config.raw_bucket, v.key)[0].legal_hold for v in held)
    second = legal_hold.release(config, store, "fn-legal-b", held, datetime.now(UTC))
    assert set(second.values()) == {False}
    assert not any(store.versions_of(config.raw_bucket, v.key)[0].legal_hold for v in held)
    # The GOVERNANCE retention still refuses the delete (no bypass): releasing a legal hold unlocks nothing else.
    assert all(store.versions_of(config.raw_bucket, v.key)[0].mode == "GOVERNANCE" for v in held)


def test_while_the_hold_is_open_each_pass_dissects_the_late_segments_too_and_asks_to_follow(harness: Harness
                                                                                            ) -> None:
    config, store = harness.settings, harness.store
    early = harness.replay()
    window_end = datetime.now(UTC) + timedelta(minutes=10)
    request = harness.request("fn-follow", early, window_end=window_end)
    harness.call("freeze", {"request": request.to_dict()})
    first = harness.call("dissect", {"incident_id": "fn-follow", "node": config.node_name})
    assert first["segments"] == len(early)
    late = harness.replay()
    harness.call("segment_indexer", harness.kafka_event(config.segments_topic, {r.key for r in late}))
    second = harness.call("dissect", {"incident_id": "fn-follow", "node": config.node_name})
    assert second["segments"] == len(early) + len(late)  # the parts' segments join the manifest's
    assert second["stats"]["packets"] == sum(r.packets for r in early + late)
    reply = harness.call("finalize", {"incident_id": "fn-follow",
                                      "nodes": [{"node": config.node_name, "state": "done"}]})
    closes_at = window_end + timedelta(seconds=config.hold_grace_s)
    follow = reply["follow"]
    assert (follow["again"], follow["nodes"]) == (True, [config.node_name])
    assert 0 < follow["wait_s"] <= (closes_at - datetime.now(UTC)).total_seconds() + 1
    assert follow["partial_until"] == iso(closes_at)
    # The incident record intake would have written (the freeze was started directly here).
    s3io.put_json(store, config.evidence_bucket, incident_key("fn-follow"),
                  {"request": request.to_dict(), "created_at": iso(datetime.now(UTC))})
    status = harness.call("webhook", function_url_event("GET", "/v1/incidents/fn-follow",
                                                        {"authorization": f"Bearer {API_TOKEN}"}, b""))
    body = json.loads(status["body"])
    assert (body["tables"], body["late_segments"], body["frozen_segments"]) == ("partial", len(late), len(early))
