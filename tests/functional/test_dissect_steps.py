"""A node's dissection job as a plan plus named steps (issue 12 item 4), each run on its own against the in-memory
Object Lock store: plan the pass, read the inputs, verify and spool the segments, run the engine, write the parts and
the status. Expected values come from the agent's upload records (what was written to the store), the sample
capture's tshark conversations and the manifest's own sha256s, never from the steps' own output."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path
from typing import Any

import pytest

from freezeframe.adapters import s3 as s3io
from freezeframe.contracts.documents import DissectStatus
from freezeframe.contracts.errors import SegmentCorruptError
from freezeframe.contracts.keys import dissect_status_key
from freezeframe.contracts.models import SegmentRecord
from freezeframe.dissect import job
from tests.functional.conftest import Harness
from tests.functional.test_handlers import needs_tshark, tshark_conversations

INCIDENT = "fn-dissect-steps"
CHUNK_NS = 5_000_000_000


@pytest.fixture
def frozen(harness: Harness) -> tuple[Harness, list[SegmentRecord]]:
    """The sample capture at its own (past) time, frozen: no hold, so the inputs are final."""
    records = harness.replay(retime=False)
    request = harness.request(INCIDENT, records)
    assert harness.call("freeze", {"request": request.to_dict()})["segments"] == len(records)
    return harness, records


def test_the_plan_reads_the_nodes_segments_in_time_order_and_cuts_chunks_only_when_asked(frozen: Any) -> None:
    harness, records = frozen
    config, node = harness.settings, harness.settings.node_name
    inputs = job.read_inputs(config, harness.store, INCIDENT, node, force=False)
    assert inputs.previous is None  # no pass yet
    plan = job.plan_node_pass(config, INCIDENT, node, inputs)
    uploaded = sorted(records, key=lambda r: (r.start_ns, r.key))
    assert [(e.key, e.version_id, e.sha256) for e in plan.entries] == [(r.key, r.version_id, r.sha256)
                                                                       for r in uploaded]
    assert (plan.raw_bucket, plan.unverified, plan.skip, plan.chunks) == (config.raw_bucket, (), False, None)
    assert job.plan_node_pass(config, INCIDENT, "no-such-node", inputs).entries == ()

    chunked = job.plan_node_pass(config, INCIDENT, node, inputs, chunk_ns=CHUNK_NS)
    assert chunked.chunks is not None and len(chunked.chunks) > 1
    assert chunked.inputs_digest != plan.inputs_digest  # the chunking is part of what a pass reads
    assert [c.index for c in chunked.chunks] == list(range(len(chunked.chunks)))
    # The chunks tile the node's span without holes, from the first segment (or the window) to the last.
    assert all(a.end_ns == b.start_ns for a, b in zip(chunked.chunks, chunked.chunks[1:], strict=False))
    assert chunked.chunks[0].start_ns <= min(uploaded[0].start_ns, chunked.window_start_ns)
    assert chunked.chunks[-1].end_ns > max(r.end_ns for r in records)
    assert chunked.chunks[0].warmup_start_ns is None  # the first chunk has nothing before it to warm up on


def test_a_pass_over_the_same_inputs_is_planned_as_a_skip_and_writes_nothing(frozen: Any) -> None:
    harness, records = frozen
    config, store, node = harness.settings, harness.store, harness.settings.node_name
    first = job.dissect_node(config, store, INCIDENT, node)
    assert (first.state, first.segments, first.skipped) == ("done", len(records), False)
    inputs = job.read_inputs(config, store, INCIDENT, node, force=False)
    assert inputs.previous == s3io.get_json(store, config.evidence_bucket, dissect_status_key(INCIDENT, node))
    assert job.plan_node_pass(config, INCIDENT, node, inputs).skip
    assert not job.plan_node_pass(config, INCIDENT, node, inputs, chunk_ns=CHUNK_NS).skip  # read differently
    failed = dataclasses.replace(inputs, previous={**(inputs.previous or {}), "state": "failed"})
    assert not job.plan_node_pass(config, INCIDENT, node, failed).skip
    assert job.read_inputs(config, store, INCIDENT, node, force=True).previous is None

    store.calls.clear()
    read = store.get_object
    raw_reads: list[str] = []

    def get_object(**args: Any) -> Any:
        if args["Bucket"] == config.raw_bucket:
            raw_reads.append(args["Key"])
        return read(**args)

    harness.patch.setattr(store, "get_object", get_object)
    again = job.dissect_node(config, store, INCIDENT, node)
    assert again.skipped and again.tables == first.tables and again.parts == first.parts
    assert (store.calls, raw_reads) == ([], [])  # no write at all, and no segment read
    job.dissect_node(config, store, INCIDENT, node, force=True)
    assert sorted(raw_reads) == sorted(r.key for r in records)  # the check above can see a read


def test_spooling_verifies_each_segment_against_the_manifest_and_rejects_a_mismatch(frozen: Any,
                                                                                   tmp_path: Path) -> None:
    harness, records = frozen
    config, node = harness.settings, harness.settings.node_name
    plan = job.plan_node_pass(config, INCIDENT, node, job.read_inputs(config, harness.store, INCIDENT, node, True),
                              chunk_ns=CHUNK_NS)
    victim = plan.entries[0]
    wrong = dataclasses.replace(victim, sha256="0" * 64)
    tampered = dataclasses.replace(plan, entries=(wrong, *plan.entries[1:]))
    sources, corrupt = job.spool_verified(harness.store, tampered, tmp_path)
    assert [c["key"] for c in corrupt] == [victim.key]
    assert corrupt[0]["version_id"] == victim.version_id and "does not match" in corrupt[0]["reason"]
    assert [s.ref.key for s in sources] == [e.key for e in plan.entries[1:]]
    by_key = {r.key: r for r in records}
    for source in sources:  # what the chunk workers read is the stored segment, byte for byte
        assert source.path is not None and source.path.stat().st_size == by_key[source.ref.key].stored_bytes
    with pytest.raises(SegmentCorruptError, match="does not match"):
        job.fetch_verified(harness.store, plan.raw_bucket, wrong)


@needs_tshark
def test_one_pass_and_parallel_time_chunks_write_the_conversations_tshark_sees(frozen: Any) -> None:
    harness, records = frozen
    config, store, node = harness.settings, harness.store, harness.settings.node_name
    whole = job.dissect_node(config, store, INCIDENT, node)
    chunked = job.dissect_node(config, store, INCIDENT, node, chunk_ns=CHUNK_NS, workers=2)
    assert whole.tables["connections"] == chunked.tables["connections"] == tshark_conversations()
    assert chunked.parts == whole.parts  # deterministic keys: the second pass overwrote the first
    assert chunked.stats["chunks"] > 1 and chunked.segments == len(records)
    assert chunked.stats["packets"] == whole.stats["packets"] == sum(r.packets for r in records)
    status = s3io.get_json(store, config.evidence_bucket, dissect_status_key(INCIDENT, node))
    assert (status["state"], status["tables"], status["stats"]["chunks"]) == ("done", chunked.tables,
                                                                              chunked.stats["chunks"])
    # Which engine made the tables is part of the record: the compiled core when it is installed (the default).
    engine = "native" if importlib.util.find_spec("freezeframe_native") else "python"
    assert whole.engine == chunked.engine == status["engine"] == DissectStatus.from_dict(status).engine == engine


def test_the_status_records_the_reference_engine_when_it_made_the_tables(
        frozen: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    harness, _records = frozen
    config, store, node = harness.settings, harness.store, harness.settings.node_name
    monkeypatch.setenv("FREEZEFRAME_DISSECT_ENGINE", "python")
    report = job.dissect_node(config, store, INCIDENT, node, force=True)
    status = s3io.get_json(store, config.evidence_bucket, dissect_status_key(INCIDENT, node))
    assert report.engine == status["engine"] == "python"
    assert job.DissectReport.from_status(status).engine == "python"  # a skipped pass reports the tables' engine
