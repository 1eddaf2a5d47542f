"""The freeze's named steps, each run on its own against the in-memory Object Lock store: settle a retry, open the
hold, list and lock, preserve the context, write the manifest. Expected values come from the agent's upload records
(what was written to the store) and the request, never from the steps' own output."""

from __future__ import annotations

from concurrent.futures import Future
from datetime import UTC, datetime, timedelta
from typing import Any

from freezeframe.adapters import s3 as s3io
from freezeframe.contracts.keys import manifest_key
from freezeframe.contracts.models import ManifestEntry, Scope
from freezeframe.contracts.parallel import Tasks
from freezeframe.freeze import freeze as steps
from freezeframe.freeze.holds import hold_key
from tests.functional.conftest import Harness


def answered(value: dict[str, Any] | None) -> Future[dict[str, Any] | None]:
    future: Future[dict[str, Any] | None] = Future()
    future.set_result(value)
    return future


def test_settling_a_retry_without_a_manifest_writes_nothing_and_lets_the_freeze_go_on(harness: Harness) -> None:
    records = harness.replay(retime=False)
    request = harness.request("fn-steps-none", records)
    plan = steps.plan_freeze(request, harness.settings, request.window_end + timedelta(days=1))
    harness.store.calls.clear()
    assert steps.settle_retry(harness.settings, harness.store, request, plan, answered(None)) is None
    assert harness.store.calls == []


def test_settling_a_retry_of_a_finished_freeze_returns_its_result_and_writes_no_second_manifest(harness: Harness
                                                                                                ) -> None:
    config, store = harness.settings, harness.store
    records = harness.replay(retime=False)
    request = harness.request("fn-steps-retry", records)
    now = request.window_end + timedelta(days=1)
    first = steps.freeze(config, store, request, now)
    assert first.created
    plan = steps.plan_freeze(request, config, now)
    written = s3io.get_json(store, config.evidence_bucket, manifest_key("fn-steps-retry"))
    again = steps.settle_retry(config, store, request, plan, answered(written))
    assert again is not None
    assert (again.created, again.segments, again.nodes, again.hold_open) == (False, len(records), ("node-a",), False)
    assert len(store.versions_of(config.evidence_bucket, manifest_key("fn-steps-retry"))) == 1


def test_the_hold_opens_only_when_the_plan_has_one(harness: Harness) -> None:
    config, store = harness.settings, harness.store
    records = harness.replay()
    window_end = datetime.now(UTC) + timedelta(minutes=10)
    request = harness.request("fn-steps-hold", records, window_end=window_end)
    over = steps.plan_freeze(request, config, window_end + timedelta(days=1))
    store.calls.clear()
    steps.open_the_hold(config, store, over)
    assert store.calls == []
    open_ = steps.plan_freeze(request, config, datetime.now(UTC))
    steps.open_the_hold(config, store, open_)
    hold = s3io.get_json(store, config.evidence_bucket,
                         hold_key("fn-steps-hold", window_end + timedelta(seconds=config.hold_grace_s)))
    assert (hold["incident_id"], hold["cluster"]) == ("fn-steps-hold", config.cluster)


def test_list_and_lock_locks_exactly_the_scopes_versions_in_the_window(harness: Harness) -> None:
    config, store = harness.settings, harness.store
    records = harness.replay(retime=False)
    other = harness.replay("node-b", retime=False)
    inside = records[1:-1]  # a window strictly inside the first and last segments of node-a
    request = harness.request("fn-steps-list", inside, scope=Scope(config.cluster, nodes=("node-a",)))
    plan = steps.plan_freeze(request, config, request.window_end + timedelta(days=1))
    with Tasks(4) as aux, Tasks(4) as listers, Tasks(16) as lockers:
        listing = steps.list_and_lock(config, store, request, plan, answered(None),
                                      steps.Pools(aux, listers, lockers))
        locked = listing.drain()
    assert listing.nodes == ("node-a",)
    overlapping = {(r.key, r.version_id) for r in records
                   if r.start_ns <= request.window_end_ns and r.end_ns >= request.window_start_ns}
    assert overlapping >= {(r.key, r.version_id) for r in inside}
    # node-b recorded the same traffic at the same times: in the window, but outside the scope.
    assert any(r.start_ns <= request.window_end_ns and r.end_ns >= request.window_start_ns for r in other)
    assert {(e.key, e.version_id) for e in locked if isinstance(e, ManifestEntry)} == overlapping
    for record in records + other:
        (version,) = store.versions_of(config.raw_bucket, record.key)
        expected = ("COMPLIANCE", request.lock.retain_until) if (record.key, record.version_id) in overlapping \
            else (None, None)
        assert (version.mode, version.retain_until) == expected


def test_writing_the_manifest_of_an_empty_window_writes_one_locked_manifest(harness: Harness) -> None:
    config, store = harness.settings, harness.store
    records = harness.replay(retime=False)
    request = harness.request("fn-steps-write", records)
    now = request.window_end + timedelta(days=1)
    plan = steps.plan_freeze(request, config, now)
    result = steps.write_manifest(config, store, request, plan, (), [], [], [], [], now)
    assert (result.created, result.segments, result.nodes, result.unverified) == (True, 0, (), 0)
    (version,) = store.versions_of(config.evidence_bucket, manifest_key("fn-steps-write"))
    assert (version.mode, version.retain_until) == ("COMPLIANCE", request.lock.retain_until)
    manifest = s3io.get_json(store, config.evidence_bucket, manifest_key("fn-steps-write"))
    assert manifest["segments"] == [] and manifest["scope_nodes"] == [] and manifest["hold"] is None
