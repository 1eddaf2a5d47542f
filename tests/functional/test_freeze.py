"""Freeze through the freeze handler: the agent's segments (replayed from the sample capture into the in-memory
store) are locked in place, the manifest names exactly the versions the agent uploaded, and the store refuses to
delete or shorten anything afterwards. Expected values come from the agent's own upload records and the request."""

from __future__ import annotations

import hashlib
import time
from datetime import timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError
from freezeframe_local.functions import LocalContext

from freezeframe.adapters import s3 as s3io
from freezeframe.contracts.errors import DeadlineExceeded
from freezeframe.contracts.keys import manifest_key
from freezeframe.freeze.lifecycle import attempts_prefix, failed_key
from tests.functional.conftest import STATE_MACHINE, Harness


def freeze_event(request: Any) -> dict[str, Any]:
    return {"request": request.to_dict()}


def test_the_freeze_handler_locks_every_version_writes_the_manifest_and_starts_the_dissection(harness: Harness
                                                                                               ) -> None:
    records = harness.replay()
    assert len(records) >= 5
    request = harness.request("fn-freeze-1", records)
    reply = harness.call("freeze", freeze_event(request))
    assert reply == {"incident_id": "fn-freeze-1", "manifest": manifest_key("fn-freeze-1"),
                     "segments": len(records), "nodes": ["node-a"], "created": True}
    store, config = harness.store, harness.settings
    manifest = s3io.get_json(store, config.evidence_bucket, manifest_key("fn-freeze-1"))
    assert {(s["key"], s["version_id"], s["sha256"]) for s in manifest["segments"]} == {
        (r.key, r.version_id, r.sha256) for r in records}
    for record in records:
        (version,) = store.versions_of(config.raw_bucket, record.key)
        assert version.version_id == record.version_id
        assert hashlib.sha256(version.body or b"").hexdigest() == record.sha256
        assert (version.mode, version.retain_until) == ("COMPLIANCE", request.lock.retain_until)
        with pytest.raises(ClientError) as refused:
            store.delete_object(Bucket=config.raw_bucket, Key=record.key, VersionId=record.version_id)
        assert refused.value.response["Error"]["Code"] == "AccessDenied"
    (manifest_version,) = store.versions_of(config.evidence_bucket, manifest_key("fn-freeze-1"))
    assert (manifest_version.mode, manifest_version.retain_until) == ("COMPLIANCE", request.lock.retain_until)
    # One Step Functions execution for the incident's one node.
    assert [e["input"] for e in harness.step_functions.executions.values()] == [
        {"incident_id": "fn-freeze-1", "nodes": ["node-a"]}]
    assert all(e["stateMachineArn"] == STATE_MACHINE for e in harness.step_functions.executions.values())


def test_a_retried_freeze_is_a_no_op_and_starts_no_second_dissection(harness: Harness) -> None:
    records = harness.replay()
    request = harness.request("fn-freeze-retry", records)
    harness.call("freeze", freeze_event(request))
    again = harness.call("freeze", freeze_event(request))
    assert again["created"] is False and again["segments"] == len(records)
    assert len(harness.store.versions_of(harness.settings.evidence_bucket, manifest_key("fn-freeze-retry"))) == 1
    assert len(harness.step_functions.executions) == 1


def test_a_later_shorter_governance_freeze_keeps_the_longer_compliance_lock(harness: Harness) -> None:
    records = harness.replay()
    longer = harness.request("fn-long", records, days=3)
    shorter = harness.request("fn-short", records, mode="GOVERNANCE", days=1)
    harness.call("freeze", freeze_event(longer))
    harness.call("freeze", freeze_event(shorter))
    for record in records:
        (version,) = harness.store.versions_of(harness.settings.raw_bucket, record.key)
        assert (version.mode, version.retain_until) == ("COMPLIANCE", longer.lock.retain_until)
    manifest = s3io.get_json(harness.store, harness.settings.evidence_bucket, manifest_key("fn-short"))
    assert {s["lock_outcome"] for s in manifest["segments"]} == {"kept_stronger"}
    assert {s["lock_mode"] for s in manifest["segments"]} == {"COMPLIANCE"}
    # The product never sent a governance bypass.
    assert not any(c.get("BypassGovernanceRetention") for c in harness.store.operations("put_object_retention"))


def test_a_freeze_of_an_empty_window_writes_an_empty_manifest_and_dissects_nothing(harness: Harness) -> None:
    records = harness.replay()
    request = harness.request("fn-empty", records)
    past = request.window_start - timedelta(days=2)
    empty = harness.request("fn-empty", records, window_start=past, window_end=past + timedelta(minutes=5))
    reply = harness.call("freeze", freeze_event(empty))
    assert (reply["segments"], reply["nodes"], reply["created"]) == (0, [], True)
    manifest = s3io.get_json(harness.store, harness.settings.evidence_bucket, manifest_key("fn-empty"))
    assert manifest["segments"] == []
    assert harness.step_functions.executions == {}
    for record in records:
        assert harness.store.versions_of(harness.settings.raw_bucket, record.key)[0].mode is None


def test_a_failing_store_leaves_the_incident_failed_and_the_handler_raises(harness: Harness) -> None:
    records = harness.replay()
    request = harness.request("fn-fail", records)
    original = harness.store.put_object_retention

    def unavailable(**kwargs: Any) -> Any:
        raise ClientError({"Error": {"Code": "ServiceUnavailable", "Message": "down"},
                           "ResponseMetadata": {"HTTPStatusCode": 503}}, "PutObjectRetention")

    harness.patch.setattr(harness.store, "put_object_retention", unavailable)
    config = harness.settings
    for _ in range(config.freeze_attempts):  # the async invocation's attempts
        with pytest.raises(ClientError):
            harness.call("freeze", freeze_event(request))
    harness.patch.setattr(harness.store, "put_object_retention", original)
    assert_failed_for_good(harness, "fn-fail", "ClientError")


def assert_failed_for_good(harness: Harness, incident_id: str, error: str) -> None:
    """No manifest and no dissection; every attempt recorded, the last as the terminal state, with ``error``."""
    config = harness.settings
    assert not s3io.exists(harness.store, config.evidence_bucket, manifest_key(incident_id))
    assert harness.step_functions.executions == {}
    attempts = list(s3io.list_keys(harness.store, config.evidence_bucket, attempts_prefix(incident_id)))
    assert len(attempts) == config.freeze_attempts
    failed = s3io.get_json(harness.store, config.evidence_bucket, failed_key(incident_id))
    assert (failed["state"], failed["attempts"]) == ("failed", config.freeze_attempts)
    assert failed["error"].startswith(error)


# The handler's deadline is a SIGALRM timer, which it leaves alone while pytest-timeout's default method holds one.
@pytest.mark.timeout(600, method="thread")
def test_a_freeze_that_runs_out_of_time_records_each_attempt_and_the_last_leaves_the_incident_failed(
        harness: Harness) -> None:
    records = harness.replay()
    request = harness.request("fn-slow", records)
    original = harness.store.put_object_retention

    def slow(**kwargs: Any) -> Any:  # a store that answers, but too slowly for the function's timeout
        time.sleep(0.5)
        return original(**kwargs)

    harness.patch.setattr(harness.store, "put_object_retention", slow)
    handler = harness.handler("freeze")
    for _ in range(harness.settings.freeze_attempts):  # the async invocation's attempts, each with 0.5 s to live
        with pytest.raises(DeadlineExceeded, match="^the freeze did not finish in "):
            handler(freeze_event(request), LocalContext("freezeframe-freeze", timeout_ms=500))
    harness.patch.setattr(harness.store, "put_object_retention", original)
    assert_failed_for_good(harness, "fn-slow", "DeadlineExceeded: the freeze did not finish")
