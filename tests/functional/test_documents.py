"""The typed evidence documents (freezeframe.contracts.documents) against what the writers store today: every document
the
pipeline writes on the in-memory store (intake's record, the freeze's manifest and hold, the segment indexer's
manifest parts, the dissect statuses, finalize's summary) parses and re-encodes to its stored bytes, and
`load_incident` hands back exactly those documents at the versions the custody chain names. The expected segments
come from the agent's own records of what it uploaded, not from the reader under test."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from freezeframe.adapters import s3 as s3io
from freezeframe.contracts.documents import (
    MANIFEST_SCHEMA,
    DissectStatus,
    Hold,
    IncidentRecord,
    Manifest,
    ManifestPart,
    Summary,
)
from freezeframe.contracts.errors import CustodyError, NotFoundError, PayloadError
from freezeframe.contracts.keys import manifest_key
from freezeframe.custody.incident import load_incident
from freezeframe.intake import accept as intake
from tests.functional.conftest import Harness

KINDS: list[tuple[re.Pattern[str], Any]] = [
    (re.compile(r"^incidents/[^/]+/incident\.json$"), IncidentRecord),
    (re.compile(r"^incidents/[^/]+/manifest\.json$"), Manifest),
    (re.compile(r"^incidents/[^/]+/manifest-parts/[^/]+\.json$"), ManifestPart),
    (re.compile(r"^incidents/[^/]+/dissect/[^/_][^/]*\.json$"), DissectStatus),
    (re.compile(r"^incidents/[^/]+/summary\.json$"), Summary),
    (re.compile(r"^holds/\d{4}-\d{2}-\d{2}/[^/]+\.json$"), Hold),
]


def round_trip_every_document(harness: Harness) -> dict[str, int]:
    """Every stored version of every document kind: parsed, re-encoded, compared byte for byte. Counts per kind."""
    store, bucket = harness.store, harness.settings.evidence_bucket
    seen: dict[str, int] = {}
    for key in store.all_keys(bucket):
        kind = next((cls for pattern, cls in KINDS if pattern.match(key)), None)
        if kind is None:
            continue
        for version in store.versions_of(bucket, key):
            if version.delete_marker:
                continue
            document = kind.from_dict(json.loads(version.body))
            assert s3io.encode_json(document.to_dict()) == version.body, key
            seen[kind.__name__] = seen.get(kind.__name__, 0) + 1
    return seen


def register(harness: Harness, request: Any) -> None:
    """Intake's create-only incident record, as the webhook writes it (the freeze itself is called directly)."""
    accepted, _ = intake.register(harness.settings, harness.store, [request], datetime.now(UTC), lambda _r: None,
                                  {"requested_by": {"token": True}})
    assert accepted == [request.incident_id]


def test_every_document_of_a_dissected_and_finalized_incident_round_trips(harness: Harness) -> None:
    config, node = harness.settings, harness.settings.node_name
    records = harness.replay(retime=False)
    request = harness.request("fn-docs", records)
    register(harness, request)
    harness.call("freeze", {"request": request.to_dict()})
    harness.call("dissect", {"incident_id": "fn-docs", "node": node})
    harness.call("finalize", {"incident_id": "fn-docs", "nodes": [{"node": node, "state": "done"}]})

    seen = round_trip_every_document(harness)
    assert {name: seen.get(name, 0) >= 1 for name in ("IncidentRecord", "Manifest", "DissectStatus", "Summary")} == {
        "IncidentRecord": True, "Manifest": True, "DissectStatus": True, "Summary": True}

    incident = load_incident(config, harness.store, "fn-docs")
    assert incident.record is not None and incident.record.request.to_dict() == request.to_dict()
    assert incident.record.extra == {"requested_by": {"token": True}}
    assert incident.manifest.request.to_dict() == request.to_dict()
    assert {(e.key, e.version_id, e.sha256) for e in incident.manifest.segments} == {
        (r.key, r.version_id, r.sha256) for r in records}
    assert incident.parts == ()
    assert incident.nodes == [node]
    status = incident.statuses[node]
    assert status is not None and status.node == node and status.state == "done"
    assert incident.summary is not None and incident.summary.incident_id == "fn-docs"
    assert set(incident.summary.parts) == set(status.parts.values())
    # The manifest it read is the version the chain names (the only one there is).
    (version,) = harness.store.versions_of(config.evidence_bucket, manifest_key("fn-docs"))
    assert incident.pinned.manifest.version_id == version.version_id and incident.pinned.signed


def test_the_hold_and_the_manifest_parts_of_late_segments_round_trip(harness: Harness) -> None:
    config = harness.settings
    early = harness.replay()
    request = harness.request("fn-docs-hold", early, days=2, window_end=datetime.now(UTC) + timedelta(minutes=10))
    register(harness, request)
    harness.call("freeze", {"request": request.to_dict()})
    late = harness.replay()
    assert harness.call("segment_indexer", harness.kafka_event(config.segments_topic, {r.key for r in late})) == {
        "batchItemFailures": []}

    seen = round_trip_every_document(harness)
    assert seen.get("Hold", 0) == 1 and seen.get("ManifestPart", 0) == len(late)

    incident = load_incident(config, harness.store, "fn-docs-hold", statuses=False, summary=False)
    assert {(e.key, e.version_id) for part in incident.parts for e in part.segments} == {
        (r.key, r.version_id) for r in late}
    assert {e.key for e in incident.manifest.segments} == {r.key for r in early}
    hold = incident.manifest.hold
    assert hold is not None and (hold.incident_id, hold.lock) == ("fn-docs-hold", request.lock)
    assert all(part.part_of == "fn-docs-hold" for part in incident.parts)
    assert incident.statuses == {} and incident.summary is None


def test_an_incident_without_a_manifest_is_not_found(harness: Harness) -> None:
    with pytest.raises(NotFoundError):
        load_incident(harness.settings, harness.store, "fn-docs-missing")


def test_a_pinned_manifest_that_is_not_a_manifest_is_a_custody_error(harness: Harness) -> None:
    """Without signing each key's original version is read; a JSON object that is no manifest is passed on as
    stored, and refused with its key and version named when a reader asks for it typed."""
    config = harness.settings.with_(signing_key_file=None, tsa_url=None)
    s3io.put_json(harness.store, config.evidence_bucket, manifest_key("fn-docs-bad"),
                  {"schema": MANIFEST_SCHEMA, "incident_id": "fn-docs-bad"}, create_only=True)
    incident = load_incident(config, harness.store, "fn-docs-bad")
    assert incident.manifest_document == {"schema": MANIFEST_SCHEMA, "incident_id": "fn-docs-bad"}
    with pytest.raises(CustodyError, match=r"manifest\.json@.*manifest: missing field 'request'"):
        incident.manifest  # noqa: B018 - typed on access


def test_from_dict_names_the_document_and_the_field() -> None:
    with pytest.raises(PayloadError, match=r"^incident summary: schema must be"):
        Summary.from_dict({"schema": "freezeframe.summary/v0"})
    with pytest.raises(PayloadError, match=r"^dissect status: field 'segments' must be int, got str"):
        DissectStatus.from_dict({"schema": "freezeframe.dissect-status/v1", "incident_id": "i", "node": "n",
                                 "state": "done", "segments": "3"})
    with pytest.raises(PayloadError, match=r"^manifest: this is a manifest part"):
        Manifest.from_dict({"schema": MANIFEST_SCHEMA, "part_of": "i"})
    with pytest.raises(PayloadError, match=r"^hold: missing field 'lock'"):
        Hold.from_dict({"incident_id": "i", "cluster": "c", "window_start_ns": 1, "window_end_ns": 2,
                        "closes_at": "2026-01-01T00:00:00.000Z"})


def test_a_hand_written_status_and_record_read_with_defaults_and_write_back_as_they_were() -> None:
    """Older or hand-written documents leave fields out: the optional ones default and stay left out on the way back
    (the dissect status a test writes has no schema, stats or finish time; a record no schema or state)."""
    status = {"incident_id": "i", "node": "n", "state": "failed", "segments": 1, "tables": {"tcp": 2},
              "parts": {"tcp": "tables/tcp/x.parquet"}, "corrupt_segments": [{"key": "k", "reason": "sha"}]}
    typed = DissectStatus.from_dict(status)
    assert (typed.stats, typed.finished_at, typed.corrupt_segments) == ({}, "", ({"key": "k", "reason": "sha"},))
    assert typed.to_dict() == status
    with pytest.raises(PayloadError, match=r"^dissect status: missing field 'state'"):
        DissectStatus.from_dict({"incident_id": "i", "node": "n"})
    with pytest.raises(PayloadError, match=r"^incident record: missing field 'request'"):
        IncidentRecord.from_dict({"incident_id": "i"})
