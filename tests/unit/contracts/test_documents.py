"""The Kubernetes context records and gap records (freezeframe.contracts.documents) round-trip: each record the agent's
pure
builders make from every recorded API object in tests/fixtures/k8s/ parses back and re-encodes to the same JSON; a
malformed record is refused with the field named. (The incident documents round-trip in
tests/functional/test_documents.py, from what the writers store.)"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

import pytest

from freezeframe.adapters.s3 import encode_json
from freezeframe.contracts.documents import K8S_POD_SCHEMA, EventRecord, GapRecord, ObjectRecord, PodRecord
from freezeframe.contracts.errors import PayloadError
from freezeframe_agent.k8s import event_record, pod_record
from freezeframe_agent.k8s_objects import ENDPOINTSLICE_SCHEMA, NODE_SCHEMA, SERVICE_SCHEMA, object_record
from tests.fixtures.k8s_api import load, load_events

REPO = Path(__file__).resolve().parents[3]
SOURCE_ROOTS = (REPO / "layers" / "core" / "freezeframe", REPO / "node_agent" / "freezeframe_agent", REPO / "functions")
SCHEMA_STRING = re.compile(r"^freezeframe\.[a-z0-9-]+/v\d+$")
# The evidence documents' schema strings live in these two modules (models: the records that exist before an
# incident does); the other kinds (custody links, the local stack's state, ...) each in their own module.
DOCUMENT_MODULES = {"layers/core/freezeframe/contracts/documents.py", "layers/core/freezeframe/contracts/models.py"}


def schema_literals(source: str) -> list[str]:
    return [node.value for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and SCHEMA_STRING.match(node.value)]


def objects(list_name: str, watch_names: tuple[str, ...] = ()) -> list[tuple[str, dict[str, Any]]]:
    """(change, object) of a recorded list (SYNC) and its recorded watch streams (their event type)."""
    found = [("SYNC", item) for item in load(list_name)["items"]]
    for name in watch_names:
        found += [(event["type"], event["object"]) for event in load_events(name) if event["type"] != "BOOKMARK"]
    return found


def round_trips(record: Any, kind: Any) -> None:
    document = json.loads(encode_json(record.to_dict()))  # what the bus carries
    assert encode_json(kind.from_dict(document).to_dict()) == encode_json(document)


def test_every_recorded_pod_and_event_round_trips() -> None:
    pods = objects("pods-list.json", ("pods-watch-1.jsonl", "pods-watch-2.jsonl")) + objects("pods-list-relist.json")
    events = objects("events-list.json", ("events-watch-1.jsonl",)) + objects("events-list-relist.json")
    assert pods and events
    for index, (change, pod) in enumerate(pods):
        round_trips(pod_record(pod, cluster="c", node="n", change=change, observed_ns=index,
                               snapshot_rv="7" if change == "SYNC" else None,
                               snapshot_size=len(pods) if change == "SYNC" else None), PodRecord)
    for index, (change, event) in enumerate(events):
        round_trips(event_record(event, cluster="c", node="n", change=change, observed_ns=index), EventRecord)


@pytest.mark.parametrize(("schema", "list_name", "watches"), [
    (SERVICE_SCHEMA, "services-list.json", ()), (SERVICE_SCHEMA, "services-list-ledger.json", ()),
    (ENDPOINTSLICE_SCHEMA, "endpointslices-list.json", ("endpointslices-watch-1.jsonl",)),
    (ENDPOINTSLICE_SCHEMA, "endpointslices-list-ledger.json", ()), (NODE_SCHEMA, "nodes-list.json", ())])
def test_every_recorded_service_endpointslice_and_node_round_trips(schema: str, list_name: str,
                                                                   watches: tuple[str, ...]) -> None:
    found = objects(list_name, watches)
    assert found
    for index, (change, raw) in enumerate(found):
        round_trips(object_record(schema, raw, cluster="c", node="n", change=change, observed_ns=index), ObjectRecord)


def test_a_gap_record_round_trips() -> None:
    metas = [{"cluster": "c", "node": "n", "seq": seq, "start_ns": seq * 10, "end_ns": seq * 10 + 9, "packets": 3,
              "bytes": 300, "stored_bytes": 120, "kernel_drops": 0, "agent_drops": 1} for seq in (4, 5, 6)]
    round_trips(GapRecord.covering(metas, "spool_full", 99), GapRecord)


def test_a_malformed_kubernetes_record_names_its_field() -> None:
    (change, pod) = objects("pods-list.json")[0]
    good = pod_record(pod, cluster="c", node="n", change=change, observed_ns=1).to_dict()
    with pytest.raises(PayloadError, match=r"^pod record: field 'observed_ns' must be int, got str"):
        PodRecord.from_dict({**good, "observed_ns": "1"})
    with pytest.raises(PayloadError, match=r"^pod record: missing field 'phase'"):
        PodRecord.from_dict({key: value for key, value in good.items() if key != "phase"})
    with pytest.raises(PayloadError, match=r"^pod record: field 'pod_ips' must be a list of strings"):
        PodRecord.from_dict({**good, "pod_ips": [1]})
    with pytest.raises(PayloadError, match=r"^event record: schema must be"):
        EventRecord.from_dict({**good, "schema": K8S_POD_SCHEMA})
    with pytest.raises(PayloadError, match=r"^object record: schema must be one of"):
        ObjectRecord.from_dict(good)


def test_every_schema_string_is_written_once_in_the_source() -> None:
    where: dict[str, list[str]] = {}
    for root in SOURCE_ROOTS:
        for path in sorted(root.rglob("*.py")):
            for literal in schema_literals(path.read_text(encoding="utf-8")):
                where.setdefault(literal, []).append(str(path.relative_to(REPO)))
    assert {literal: files for literal, files in where.items() if len(files) > 1} == {}
    kinds = ("manifest", "incident", "hold", "gap", "dissect-status", "incident-summary", "node-state", "k8s-pod",
             "k8s-event", "k8s-service", "k8s-endpointslice", "k8s-node", "segment", "freeze-request")
    assert {kind: where[f"freezeframe.{kind}/v1"][0] in DOCUMENT_MODULES for kind in kinds} == dict.fromkeys(
        kinds, True)


def test_the_schema_rule_sees_a_literal_and_ignores_prose() -> None:
    assert schema_literals('POD = "freezeframe.k8s-pod/v1"\n"""reads `freezeframe.k8s-pod/v1` records"""') == [
        "freezeframe.k8s-pod/v1"]
