"""freezeframe.dissect.finalize without S3: the event the state machine sends, the per-node verdicts, the summary, the
local
executor's retries, the optional report module, and the freeze's hand-off (execution names, StartExecution)."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

import freezeframe.investigate
from freezeframe.adapters import invoke
from freezeframe.contracts.config import Settings
from freezeframe.contracts.errors import FreezeframeError, PayloadError, SegmentCorruptError
from freezeframe.dissect import finalize
from freezeframe.dissect.finalize import (
    DONE,
    FAILED,
    MISSING,
    NodeOutcome,
    build_summary,
    dissect_with_retries,
    node_summary,
    parse_event,
)

NOW = datetime(2026, 11, 21, 12, 30, tzinfo=UTC)
INCIDENT = "am-sample0000000000000"


def _status(state: str, tables: Mapping[str, int], parts: Mapping[str, str] | None = None) -> dict[str, Any]:
    return {"state": state, "segments": 2, "tables": dict(tables), "parts": dict(parts or {}), "corrupt_segments": []}


def test_sample_events_parse(event: Any) -> None:
    incident_id, outcomes = parse_event(event("finalize", "two_nodes_done"))
    assert incident_id == INCIDENT
    assert outcomes == [NodeOutcome("node-a", DONE), NodeOutcome("node-b", DONE)]
    _, outcomes = parse_event(event("finalize", "one_node_failed"))
    assert outcomes[1] == NodeOutcome("node-b", FAILED, "SegmentCorruptError")


@pytest.mark.parametrize("bad, message", [
    ([], "JSON object"),
    ({"nodes": []}, "incident_id"),
    ({"incident_id": "../x", "nodes": []}, "incident_id"),
    ({"incident_id": INCIDENT}, "list of node outcomes"),
    ({"incident_id": INCIDENT, "nodes": ["node-a"]}, "must be an object"),
    ({"incident_id": INCIDENT, "nodes": [{"state": "done"}]}, "string 'node'"),
    ({"incident_id": INCIDENT, "nodes": [{"node": "node-a", "state": "finished"}]}, "state must be"),
    ({"incident_id": INCIDENT, "nodes": [{"node": "node-a", "state": "failed", "error": 3}]}, "error must be"),
])
def test_malformed_events_are_refused_with_a_reason(bad: Any, message: str) -> None:
    with pytest.raises(FreezeframeError, match=message):
        parse_event(bad)


def test_malformed_sample_event_is_refused(event: Any) -> None:
    with pytest.raises(PayloadError, match="finished"):
        parse_event(event("finalize", "malformed"))


@pytest.mark.parametrize("outcome, status, state", [
    (NodeOutcome("n", DONE), _status("done", {"dns": 1}), DONE),
    (NodeOutcome("n", DONE), None, FAILED),  # said done, wrote nothing
    (NodeOutcome("n", DONE), _status("failed", {}), FAILED),
    (NodeOutcome("n", FAILED, "States.Timeout"), _status("done", {"dns": 1}), FAILED),
    (None, _status("done", {"dns": 1}), MISSING),
])
def test_a_node_is_done_only_when_the_fan_out_and_its_status_agree(outcome: NodeOutcome | None,
                                                                  status: dict[str, Any] | None, state: str) -> None:
    line = node_summary("n", outcome, status)
    assert line["state"] == state
    assert (line["error"] is None) == (state == DONE)


def test_a_nodes_line_names_the_engine_its_status_records() -> None:
    status = {**_status("done", {"dns": 1}), "engine": "native"}
    assert node_summary("n", NodeOutcome("n", DONE), status)["engine"] == "native"
    assert "engine" not in node_summary("n", NodeOutcome("n", DONE), _status("done", {"dns": 1}))  # an older status


def test_summary_counts_rows_of_clean_nodes_and_names_every_partition() -> None:
    parts_a = {"connections": f"tables/connections/dt=2026-11-21/incident_id={INCIDENT}/node-a.parquet",
               "dns": f"tables/dns/dt=2026-11-21/incident_id={INCIDENT}/node-a.parquet"}
    parts_b = {"connections": f"tables/connections/dt=2026-11-21/incident_id={INCIDENT}/node-b.parquet"}
    statuses = {"node-a": _status("done", {"connections": 5, "dns": 2}, parts_a),
                "node-b": _status("done", {"connections": 7}, parts_b)}
    both = [NodeOutcome("node-a", DONE), NodeOutcome("node-b", DONE)]
    summary = build_summary(INCIDENT, ["node-a", "node-b"], both, statuses, ["connections"], {"key": "r"}, NOW)
    assert summary["state"] == "complete"
    assert summary["rows"] == {"connections": 12, "dns": 2}
    assert summary["partitions"] == [
        {"table": "connections", "dt": "2026-11-21", "incident_id": INCIDENT},
        {"table": "dns", "dt": "2026-11-21", "incident_id": INCIDENT},
    ]
    assert summary["parts"] == sorted([*parts_a.values(), *parts_b.values()])
    assert summary["finished_at"] == "2026-11-21T12:30:00.000Z"

    one_failed = [NodeOutcome("node-a", DONE), NodeOutcome("node-b", FAILED, "SegmentCorruptError")]
    summary = build_summary(INCIDENT, ["node-a", "node-b"], one_failed, statuses, [], {"key": "r"}, NOW)
    assert summary["state"] == "incomplete"
    assert summary["rows"] == {"connections": 5, "dns": 2}  # the failed node's rows are not vouched for

    # A node of the manifest that never reached the fan-out, and a failed report, both make it incomplete.
    summary = build_summary(INCIDENT, ["node-a", "node-c"], both[:1], statuses, [], {"key": "r"}, NOW)
    assert [n["state"] for n in summary["nodes"]] == [DONE, MISSING]
    assert build_summary(INCIDENT, ["node-a"], both[:1], statuses, [], {"key": None, "error": "boom"},
                         NOW)["state"] == "incomplete"
    assert build_summary(INCIDENT, [], [], {}, [], {"key": None}, NOW)["state"] == "incomplete"


class Flaky:
    def __init__(self, failures: int, error: type[Exception] = RuntimeError, state: str = DONE) -> None:
        self.failures, self.error, self.state, self.calls = failures, error, state, 0

    def __call__(self, incident_id: str, node: str) -> Mapping[str, Any]:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error(f"attempt {self.calls}")
        return {"incident_id": incident_id, "node": node, "state": self.state}


def test_local_executor_retries_like_the_state_machine() -> None:
    flaky = Flaky(failures=2)
    assert dissect_with_retries(flaky, INCIDENT, "node-a") == NodeOutcome("node-a", DONE)
    assert flaky.calls == 3
    broken = Flaky(failures=99)
    assert dissect_with_retries(broken, INCIDENT, "node-a") == NodeOutcome("node-a", FAILED, "RuntimeError")
    assert broken.calls == 3
    corrupt = Flaky(failures=99, error=SegmentCorruptError)
    assert dissect_with_retries(corrupt, INCIDENT, "node-a") == NodeOutcome("node-a", FAILED, "SegmentCorruptError")
    assert corrupt.calls == 1  # a corrupt segment fails again: no retry
    assert dissect_with_retries(Flaky(0, state="failed"), INCIDENT, "node-a").state == FAILED


def test_report_module_is_optional(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(freezeframe.investigate, "report", raising=False)
    # import of it now fails as if it were absent
    monkeypatch.setitem(sys.modules, "freezeframe.investigate.report", None)
    assert finalize.report_writer() is None
    assert finalize.write_report(Settings(), None, INCIDENT, None)["key"] is None


def test_report_writer_is_the_report_module_when_present() -> None:
    report = pytest.importorskip("freezeframe.investigate.report")
    assert finalize.report_writer() is report.write_incident_report


def test_a_failing_report_is_recorded_not_dropped() -> None:
    def broken(settings: Settings, s3: Any, incident_id: str) -> str:
        raise OSError("disk full")

    assert finalize.write_report(Settings(), None, INCIDENT, broken) == {"key": None, "error": "OSError: disk full"}
    assert finalize.write_report(Settings(), None, INCIDENT, lambda *_: "incidents/x/report.html") == {
        "key": "incidents/x/report.html"}


# ---------------------------------------------------------------- the freeze's hand-off


def test_execution_names_are_valid_stable_and_distinct() -> None:
    name = invoke.execution_name(INCIDENT, ["node-b", "node-a"])
    assert name == invoke.execution_name(INCIDENT, ["node-a", "node-b", "node-a"])
    assert name != invoke.execution_name(INCIDENT, ["node-a"])
    assert invoke.execution_name("a:b", ["n"]) != invoke.execution_name("a.b", ["n"])
    long_name = invoke.execution_name("x" * 250 + ":y", ["n"])
    for candidate in (name, long_name):
        assert len(candidate) <= 80 and all(c.isalnum() or c in "-_" for c in candidate), candidate


def test_without_a_state_machine_each_node_is_invoked_asynchronously(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(invoke, "invoke_async", lambda settings, name, payload: calls.append((name, dict(payload))))
    assert invoke.start_dissection(Settings(), INCIDENT, ["node-a", "node-b"]) is None
    assert calls == [("freezeframe-dissect", {"incident_id": INCIDENT, "node": "node-a"}),
                     ("freezeframe-dissect", {"incident_id": INCIDENT, "node": "node-b"})]
    assert invoke.start_dissection(Settings(), INCIDENT, []) is None and len(calls) == 2


def test_locally_the_gateway_s_stand_in_for_the_state_machine_is_invoked(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(invoke, "invoke_async", lambda settings, name, payload: calls.append((name, dict(payload))))
    local = Settings(lambda_endpoint="http://127.0.0.1:9")
    assert invoke.start_dissection(local, INCIDENT, ["node-b", "node-a", "node-b"]) is None
    assert calls == [("freezeframe-dissection", {"incident_id": INCIDENT, "nodes": ["node-a", "node-b"]})]


def test_with_a_state_machine_one_execution_is_started_once(monkeypatch: pytest.MonkeyPatch) -> None:
    arn = "arn:aws:states:us-east-1:123456789012:stateMachine:freezeframe-dissection"
    client = boto3.client("stepfunctions", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    monkeypatch.setattr(invoke, "_sfn_client", lambda settings: client)
    name = invoke.execution_name(INCIDENT, ["node-a", "node-b"])
    expected = {"stateMachineArn": arn, "name": name,
                "input": json.dumps({"incident_id": INCIDENT, "nodes": ["node-a", "node-b"]})}
    with Stubber(client) as stub:
        stub.add_response("start_execution", {"executionArn": f"{arn}:{name}", "startDate": NOW}, expected)
        stub.add_client_error("start_execution", "ExecutionAlreadyExists", expected_params=expected)
        config = Settings(dissect_state_machine=arn)
        assert invoke.start_dissection(config, INCIDENT, ["node-b", "node-a"]) == name
        assert invoke.start_dissection(config, INCIDENT, ["node-a", "node-b"]) == name  # a retried freeze
        stub.assert_no_pending_responses()
