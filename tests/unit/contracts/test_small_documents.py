"""The small records around an incident (freezeframe.contracts.documents): the freeze's hand-off marker, its failed
attempts and its failure, the webhook delivery marker, the resolved record, legal-hold references and releases,
segment-index batches, the fanned-out dissection's plan, chunk items and chunk statuses, and the node-state entry.
Each round-trips from a document written here by hand, in the shape its writer stores (so the stored bytes
re-encode unchanged), and a malformed one is refused with a PayloadError that names the kind and the field."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from freezeframe.adapters.s3 import encode_json
from freezeframe.contracts.documents import (
    ChunkItem,
    ChunkStatus,
    DissectPlan,
    FoldPlan,
    FreezeAttempt,
    FreezeFailed,
    FreezeStarted,
    LegalHoldReference,
    LegalHoldRelease,
    NodeStateEntry,
    Resolved,
    SegmentIndexBatch,
    WebhookDelivery,
)
from freezeframe.contracts.errors import PayloadError
from freezeframe.contracts.models import ManifestEntry
from tests.unit.contracts.test_documents import REPO, SOURCE_ROOTS, schema_literals

ATTEMPT = {"schema": "freezeframe.freeze-attempt/v1", "incident_id": "inc-1", "attempt": 2,
           "error": "EndpointConnectionError: Could not connect to the endpoint URL", "at": "2026-11-30T10:00:01.250Z"}
FAILED = {"schema": "freezeframe.freeze-failed/v1", "incident_id": "inc-1", "state": "failed",
          "error": "AccessDenied: not authorized to perform s3:PutObjectRetention", "attempts": 3,
          "failed_at": "2026-11-30T10:04:00.000Z"}
RESOLVED = {"schema": "freezeframe.resolved/v1", "incident_id": "inc-1", "resolved_at": "2026-11-30T11:00:00.000Z"}
RESOLVED_BEFORE_SCHEMA = {"incident_id": "inc-1", "resolved_at": "2026-11-30T11:00:00.000Z"}
REFERENCE = {"schema": "freezeframe.legal-hold-reference/v1", "incident_id": "inc-1", "bucket": "raw",
             "key": "raw/c/2026/11/30/09/node-a/1-2.pcap.zst", "version_id": "3HL4kqtJlcpXroDTDmJ",
             "placed_at": "2026-11-30T10:00:00.000Z"}
RELEASE = {"schema": "freezeframe.legal-hold-release/v1", "incident_id": "inc-1",
           "released_at": "2026-12-01T08:00:00.000Z"}
SEGMENT = {"schema": "freezeframe.segment/v1", "cluster": "c", "node": "node-a", "bucket": "raw",
           "key": "raw/c/2026/11/30/09/node-a/1000-2000.pcap.zst", "version_id": "v1", "start_ns": 1000,
           "end_ns": 2000, "first_packet_ns": 1010, "last_packet_ns": 1990, "packets": 12, "bytes": 3400,
           "stored_bytes": 1200, "sha256": "ab" * 32, "compression": "zstd", "format": "pcap", "link_type": 1,
           "snaplen": 262144, "kernel_drops": 0, "agent_drops": 0, "seq": 7, "capture_filter": "",
           "agent_version": "0.9.0"}
GAP = {"schema": "freezeframe.gap/v1", "cluster": "c", "node": "node-a", "first_seq": 8, "last_seq": 9,
       "start_ns": 2000, "end_ns": 4000, "segments": 2, "packets": 20, "bytes": 5000, "stored_bytes": 2100,
       "kernel_drops": 0, "agent_drops": 0, "reason": "spool_full", "observed_ns": 5000}
INDEX_BATCH = {"schema": "freezeframe.segment-index/v1", "records": [SEGMENT]}
INDEX_GAP = {"schema": "freezeframe.segment-index/v1", "records": [], "gaps": [GAP]}
ITEM = {"incident_id": "inc-1", "node": "node-a", "chunk": 1, "start_ns": 60_000_000_000,
        "end_ns": 120_000_000_000, "warmup_start_ns": 50_000_000_000, "open_start": False, "open_end": True,
        "inputs_digest": "9f" * 32}
PLAN = {"schema": "freezeframe.dissect-plan/v1", "incident_id": "inc-1",
        "chunks": {"node-a": [{"incident_id": "", "node": "node-a", "chunk": 0, "start_ns": 0, "end_ns": 60,
                               "warmup_start_ns": 0, "open_start": True, "open_end": True, "packets": 900,
                               "own_packets": 900, "seconds": 1.5, "memory_mb": 210.0,
                               "segments": ["raw/c/2026/11/30/09/node-a/0-60.pcap"]}]},
        "unchanged": ["node-b"]}
CHUNK = {"schema": "freezeframe.dissect-chunk/v2", "incident_id": "inc-1", "node": "node-a", "chunk": 1,
         "start_ns": 60, "end_ns": 120, "warmup_start_ns": 50, "open_start": False, "open_end": True,
         "inputs_digest": "9f" * 32, "state": "done", "segments": 3,
         "parts": {"connections": "incidents/inc-1/dissect/_chunks/node-a/000001/edge-connections.parquet"},
         "chunk_parts": {"connections": "tables/connections/dt=2026-11-30/incident_id=inc-1/node-a~000001.parquet"},
         "body_rows": {"connections": 40, "dns": 6}, "edge_rows": 2, "stats": {"packets": 900},
         "corrupt_segments": [], "problems": [{"key": "k", "version_id": "v", "start_ns": 60, "end_ns": 90,
                                               "stage": "decode", "kind": "truncated", "count": 1,
                                               "first_offset": 24, "first_packet": 0, "message": "short header"}],
         "seconds": 1.25, "peak_rss_mb": 180.5}
FOLD_PLAN = {"schema": "freezeframe.dissect-fold/v1", "incident_id": "inc-1", "run": "5f0c", "buckets": 7,
             "day": "2026-11-30", "flows": True, "statuses": {"node-a": "0e" * 16},
             "sources": [{"node": "node-a", "source": "node",
                          "key": "incidents/inc-1/dissect/_fold/b7/node-a/0e0e/node.route"}],
             "rows": {"connections": 2_400_000, "service_flows": 900_000}, "flow_tasks": 3}
FOLD_PLAN_BEFORE_FLOW_TASKS = {key: value for key, value in FOLD_PLAN.items() if key != "flow_tasks"}
NODE_STATE = {"key": "nodestate/c/2026/11/30/09/node-a/1000-2000.json", "version_id": "v9", "sha256": "cd" * 32,
              "size": 2048, "node": "node-a", "start_ns": 1000, "end_ns": 2000, "lock_mode": "COMPLIANCE",
              "retain_until": "2027-11-30T10:00:00.000Z"}

STARTED = {"schema": "freezeframe.freeze-started/v1", "incident_id": "inc-1", "at": "2026-11-30T09:59:58.120Z"}
STARTED_BEFORE_SCHEMA = {"incident_id": "inc-1", "at": "2026-11-30T09:59:58.120Z"}
DELIVERY = {"schema": "freezeframe.webhook-delivery/v1", "event_id": "01DEN4HCQBIXDFHSBUHJPM0B0G",
            "delivery": "3c2e0a5e-8a53-4a1e-9b3e-2d3c9b8f1a11", "event_type": "incident.triggered",
            "at": "2026-11-30T09:59:58.000Z", "accepted": ["pd-Q1W2E3"], "duplicates": [], "resolved": [],
            "truncated_alerts": 0, "ignored": []}
DELIVERY_BEFORE_SCHEMA = {key: value for key, value in DELIVERY.items() if key != "schema"}
CASES: list[tuple[Any, dict[str, Any]]] = [
    (FreezeAttempt, ATTEMPT), (FreezeFailed, FAILED), (Resolved, RESOLVED), (Resolved, RESOLVED_BEFORE_SCHEMA),
    (LegalHoldReference, REFERENCE), (LegalHoldRelease, RELEASE), (SegmentIndexBatch, INDEX_BATCH),
    (SegmentIndexBatch, INDEX_GAP), (ChunkItem, ITEM), (DissectPlan, PLAN), (ChunkStatus, CHUNK),
    (NodeStateEntry, NODE_STATE), (FreezeStarted, STARTED), (FreezeStarted, STARTED_BEFORE_SCHEMA),
    (WebhookDelivery, DELIVERY), (WebhookDelivery, DELIVERY_BEFORE_SCHEMA), (FoldPlan, FOLD_PLAN)]


@pytest.mark.parametrize(("kind", "document"), CASES, ids=[f"{kind.__name__}-{n}" for n, (kind, _) in enumerate(CASES)])
def test_a_stored_document_round_trips_to_its_bytes(kind: Any, document: dict[str, Any]) -> None:
    assert encode_json(kind.from_dict(json.loads(encode_json(document))).to_dict()) == encode_json(document)


@pytest.mark.parametrize(("kind", "document"), [(FreezeAttempt, ATTEMPT), (Resolved, RESOLVED), (ChunkItem, ITEM),
                                                (ChunkStatus, CHUNK), (LegalHoldReference, REFERENCE)])
def test_fields_a_later_writer_adds_are_kept(kind: Any, document: dict[str, Any]) -> None:
    added = {**document, "written_by": "freezeframe 1.4"}
    parsed = kind.from_dict(added)
    assert parsed.extra == {"written_by": "freezeframe 1.4"}
    assert parsed.to_dict() == added


def test_the_typed_fields_read_as_written() -> None:
    assert FreezeFailed.from_dict(FAILED).attempts == 3
    assert Resolved.from_dict(RESOLVED_BEFORE_SCHEMA).at.isoformat() == "2026-11-30T11:00:00+00:00"
    batch = SegmentIndexBatch.from_dict(INDEX_BATCH)
    assert [(r.key, r.version_id, r.seq) for r in batch.records] == [(SEGMENT["key"], "v1", 7)]
    assert SegmentIndexBatch.from_dict(INDEX_GAP).gaps == (GAP,)
    item = ChunkItem.from_dict(ITEM)
    assert (item.node, item.chunk, item.warmup_start_ns, item.open_end) == ("node-a", 1, 50_000_000_000, True)
    assert DissectPlan.from_dict(PLAN).unchanged == ("node-b",)
    assert ChunkStatus.from_dict(CHUNK).body_rows == {"connections": 40, "dns": 6}
    assert (FoldPlan.from_dict(FOLD_PLAN).buckets, FoldPlan.from_dict(FOLD_PLAN).flow_tasks) == (7, 3)
    # A plan written before phase 2 had its own tasks re-pointed the flows in every bucket: one task per bucket.
    assert FoldPlan.from_dict(FOLD_PLAN_BEFORE_FLOW_TASKS).flow_tasks == 7


def test_new_records_carry_their_schema() -> None:
    assert Resolved("inc-1", "2026-11-30T11:00:00.000Z").to_dict() == RESOLVED
    assert LegalHoldRelease("inc-1", "2026-12-01T08:00:00.000Z").to_dict() == RELEASE
    assert FreezeFailed("inc-1", FAILED["error"], 3, "2026-11-30T10:04:00.000Z").to_dict() == FAILED


def without(document: dict[str, Any], name: str) -> dict[str, Any]:
    return {key: value for key, value in document.items() if key != name}


@pytest.mark.parametrize(("kind", "document", "message"), [
    (FreezeAttempt, without(ATTEMPT, "attempt"), r"^freeze attempt: missing field 'attempt'$"),
    (FreezeAttempt, {**ATTEMPT, "schema": "freezeframe.freeze-failed/v1"}, r"^freeze attempt: schema must be "),
    (FreezeFailed, {**FAILED, "attempts": "3"}, r"^freeze failure: field 'attempts' must be int, got str$"),
    (FreezeFailed, {**FAILED, "failed_at": "yesterday"}, r"^freeze failure: failed_at is not an ISO 8601 timestamp"),
    (Resolved, {**RESOLVED, "schema": "freezeframe.incident/v1"}, r"^resolved record: schema must be "),
    (Resolved, without(RESOLVED, "resolved_at"), r"^resolved record: missing field 'resolved_at'$"),
    (Resolved, ["inc-1"], r"^resolved record: not a JSON object$"),
    (LegalHoldReference, without(REFERENCE, "version_id"), r"^legal-hold reference: missing field 'version_id'$"),
    (LegalHoldRelease, {**RELEASE, "released_at": 5}, r"^legal-hold release: field 'released_at' must be str"),
    (SegmentIndexBatch, {**INDEX_BATCH, "records": [without(SEGMENT, "sha256")]},
     r"^segment index batch: records\[0\]: missing field 'sha256'$"),
    (SegmentIndexBatch, {**INDEX_GAP, "gaps": ["spool_full"]}, r"^segment index batch: field 'gaps' must be a list"),
    (SegmentIndexBatch, without(INDEX_BATCH, "records"), r"^segment index batch: missing field 'records'$"),
    (ChunkItem, {**ITEM, "start_ns": ITEM["end_ns"]}, r"^chunk item: chunk 1 of node-a: needs .*start_ns < end_ns"),
    (ChunkItem, {**ITEM, "open_end": "yes"}, r"^chunk item: field 'open_end' must be bool, got str$"),
    (DissectPlan, {**PLAN, "chunks": {"node-a": "all"}}, r"^dissect plan: chunks\['node-a'\] must be a list"),
    (DissectPlan, {**PLAN, "unchanged": [1]}, r"^dissect plan: field 'unchanged' must be a list of strings$"),
    (ChunkStatus, {**CHUNK, "schema": "freezeframe.dissect-chunk/v1"}, r"^chunk status: schema must be "),
    (ChunkStatus, without(CHUNK, "parts"), r"^chunk status: missing field 'parts'$"),
    (ChunkStatus, {**CHUNK, "problems": ["short header"]}, r"^chunk status: field 'problems' must be a list of obj"),
    (FreezeStarted, {**STARTED, "at": None}, r"^freeze-started record: missing field 'at'$"),
    (WebhookDelivery, {**DELIVERY, "accepted": "pd-Q1W2E3"}, r"^webhook delivery: field 'accepted' must be list"),
    (WebhookDelivery, {**DELIVERY, "ignored": [3]}, r"^webhook delivery: field 'ignored' must be a list of strings$"),
    (FoldPlan, {**FOLD_PLAN, "flow_tasks": 8}, r"^fold plan: flow_tasks must be from 1 to buckets \(7\), got 8$"),
    (FoldPlan, {**FOLD_PLAN, "flow_tasks": 0}, r"^fold plan: flow_tasks must be from 1 to buckets \(7\), got 0$"),
    (FoldPlan, {**FOLD_PLAN, "flow_tasks": "3"}, r"^fold plan: field 'flow_tasks' must be int, got str$"),
    (FoldPlan, {**FOLD_PLAN, "buckets": 0}, r"^fold plan: buckets must be at least 1, got 0$"),
    (NodeStateEntry, without(NODE_STATE, "sha256"), r"^malformed node_state entry: missing field 'sha256'$"),
    (NodeStateEntry, {**NODE_STATE, "size": "2048"}, r"^malformed node_state entry: field 'size' must be int"),
])
def test_a_malformed_document_is_refused_with_the_field_named(kind: Any, document: Any, message: str) -> None:
    with pytest.raises(PayloadError, match=message):
        kind.from_dict(copy.deepcopy(document))


def test_a_node_state_entry_is_a_manifest_entry_with_only_its_fields_on_the_wire() -> None:
    entry = NodeStateEntry.from_dict(NODE_STATE)
    assert isinstance(entry, ManifestEntry)
    assert (entry.seq, entry.packets, entry.legal_hold, entry.kernel_drops) == (None, None, False, None)
    assert entry.to_dict() == NODE_STATE
    checked = entry.as_manifest_entry()
    assert type(checked) is ManifestEntry
    assert (checked.key, checked.sha256, checked.size, checked.lock_mode) == (
        NODE_STATE["key"], NODE_STATE["sha256"], 2048, "COMPLIANCE")


def test_the_small_documents_schema_strings_are_defined_once_in_documents() -> None:
    roots = (*SOURCE_ROOTS, REPO / "layers" / "local" / "freezeframe_local")
    where: dict[str, list[str]] = {}
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            for literal in schema_literals(path.read_text(encoding="utf-8")):
                where.setdefault(literal, []).append(str(path.relative_to(REPO)))
    assert {literal: files for literal, files in where.items() if len(files) > 1} == {}
    kinds = ("freeze-started/v1", "webhook-delivery/v1", "freeze-attempt/v1", "freeze-failed/v1", "resolved/v1",
             "legal-hold-reference/v1",
             "legal-hold-release/v1", "segment-index/v1", "dissect-plan/v1", "dissect-chunk/v2")
    assert {kind: where.get(f"freezeframe.{kind}") for kind in kinds} == dict.fromkeys(
        kinds, ["layers/core/freezeframe/contracts/documents.py"])
