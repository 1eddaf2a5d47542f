"""The views' fold in hash buckets (dissect.foldshard) through the local state machine (fanout.run_locally, then the
finalize handler): a two-node incident (the sample capture replayed as node-a and node-b), each node fanned out in
10 s chunks, one merge group per chunk. The reference is the same incident's views folded in one piece (B == 1, as
before the buckets): the bucketed views hold the same rows, a pass with another bucket count (or in one piece again)
leaves no stale row counted, and a fold task that fails makes the summary incomplete, naming its bucket. The
buckets' files are compacted (runs of buckets joined into part-<g>.parquet, the joined bucket files emptied); a
compaction task that fails leaves its buckets' files as the view."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import pyarrow.parquet as pq
import pytest

from freezeframe.adapters import s3 as s3io
from freezeframe.contracts.keys import (
    dissect_status_key,
    fold_compact_items_key,
    merge_prefix,
    view_file_bucket,
    view_key,
)
from freezeframe.dissect import fanout, foldshard
from freezeframe.dissect.compact import TARGET_BYTES
from freezeframe.dissect.finalize import summary_key
from tests.functional.conftest import Harness

INCIDENT = "fn-fold-1"
NODES = ["node-a", "node-b"]
ROWS_PER_NODE = 41  # the sample capture: 21 connections, 8 dns, 9 http and 3 tls rows (no service flows)


@pytest.fixture
def two_nodes(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> Harness:
    records = [*harness.replay("node-a", retime=False), *harness.replay("node-b", retime=False)]
    request = harness.request(INCIDENT, records)
    assert harness.call("freeze", {"request": request.to_dict()})["segments"] == len(records)
    monkeypatch.setattr(fanout, "GROUP_ROWS", 1)  # every chunk its own merge group: one route source each
    return harness


def _pass(harness: Harness, handler_env: Callable[[Any], None], fold_rows: int) -> dict[str, Any]:
    """One pass of the dissection state machine, locally, with ``fold_rows`` input rows per fold task."""
    config = harness.settings.with_(dissect_chunk_s=10, fold_rows=fold_rows)
    harness.settings = config
    handler_env(config)
    outcomes = fanout.run_locally(config, harness.store, lambda event: harness.call("dissect", event), INCIDENT,
                                  NODES)
    assert [o["state"] for o in outcomes] == ["done", "done"]
    harness.call("finalize", {"incident_id": INCIDENT, "nodes": outcomes})
    return s3io.get_json(harness.store, config.evidence_bucket, summary_key(INCIDENT))


def _views(harness: Harness, day: str) -> tuple[dict[str, list[str]], set[int]]:
    """Every routed view's rows (sorted, as text) over all files of its folder, and the buckets with rows."""
    rows, filled, _parts = _files(harness, day)
    return rows, filled


def _files(harness: Harness, day: str) -> tuple[dict[str, list[str]], set[int], dict[str, set[str]]]:
    """As ``_views``, and per routed view the names of its compacted files with rows."""
    bucket = harness.settings.evidence_bucket
    rows: dict[str, list[str]] = {}
    filled: set[int] = set()
    parts: dict[str, set[str]] = {}
    for name in foldshard.ROUTED:
        folder = view_key(name, day, INCIDENT).rsplit("/", 1)[0] + "/"
        rows[name] = []
        parts[name] = set()
        for key in s3io.list_keys(harness.store, bucket, folder):
            table = pq.read_table(io.BytesIO(s3io.get_bytes(harness.store, bucket, key)))
            rows[name] += [repr(sorted(row.items())) for row in table.to_pylist()]
            if table.num_rows and (number := view_file_bucket(key.rsplit("/", 1)[1])) is not None:
                filled.add(number)
            if table.num_rows and key.rsplit("/", 1)[1].startswith("part-"):
                parts[name].add(key.rsplit("/", 1)[1])
        rows[name].sort()
    return rows, filled, parts


def _day(harness: Harness) -> str:
    plan = foldshard.read_plan(harness.settings, harness.store, INCIDENT)
    assert plan is not None
    return str(plan.day)


def test_views_folded_in_buckets_equal_the_fold_in_one_piece_and_a_new_bucket_count_leaves_nothing_stale(
        two_nodes: Harness, handler_env: Callable[[Any], None]) -> None:
    harness = two_nodes
    whole = _pass(harness, handler_env, 10**9)
    assert whole["state"] == "complete" and whole["fold"] == {"buckets": 1, "errors": [], "uncompacted": []}
    assert whole["chunk_parts"] > 0  # the nodes were fanned out in chunks
    reference, _ = _views(harness, _day(harness))
    assert len(reference["connections"]) == 21 and len(reference["dns"]) == 8  # each conversation once
    # 82 input rows of the routed tables, 20 a task: 5 buckets.
    sharded = _pass(harness, handler_env, 20)
    assert sharded["state"] == "complete" and sharded["fold"] == {"buckets": 5, "errors": [], "uncompacted": []}
    assert foldshard.fold_buckets(2 * ROWS_PER_NODE, 20) == 5
    views, filled, parts = _files(harness, _day(harness))
    assert views == reference  # incident.parquet of the first pass was emptied
    # A few KB a bucket: each view's five buckets joined into one file of its own, the bucket files emptied.
    assert filled == set() and all(parts[name] == {"part-00000.parquet"} for name in ("connections", "dns", "http"))
    assert sharded["view_rows"] == whole["view_rows"]
    # Fewer buckets: buckets 3 and 4 of the last pass are emptied, not counted.
    fewer = _pass(harness, handler_env, 30)
    assert fewer["fold"] == {"buckets": 3, "errors": [], "uncompacted": []}
    views, filled = _views(harness, _day(harness))
    assert views == reference and filled == set()
    assert fewer["view_rows"] == whole["view_rows"]
    # node-a's merge work gone (its status stays): its chunks are routed one by one, its part whole; same views.
    status = s3io.get_json(harness.store, harness.settings.evidence_bucket, dissect_status_key(INCIDENT, "node-a"))
    harness.store.delete_object(Bucket=harness.settings.evidence_bucket,
                                Key=f"{merge_prefix(INCIDENT, 'node-a', status['inputs_digest'])}state.json")
    by_chunk = _pass(harness, handler_env, 25)
    assert by_chunk["fold"] == {"buckets": 4, "errors": [], "uncompacted": []}
    plan = foldshard.read_plan(harness.settings, harness.store, INCIDENT)
    assert plan is not None and any(source["source"].startswith("chunk-") for source in plan.sources)
    views, _ = _views(harness, _day(harness))
    assert views == reference
    # Back to one piece: every bucket file is emptied, incident.parquet holds the view again.
    again = _pass(harness, handler_env, 10**9)
    assert again["fold"] == {"buckets": 1, "errors": [], "uncompacted": []}
    views, filled, parts = _files(harness, _day(harness))
    assert views == reference and filled == set() and not any(parts.values())


def test_compaction_joins_runs_of_buckets_up_to_its_size_and_a_failed_group_keeps_its_bucket_files(
        two_nodes: Harness, handler_env: Callable[[Any], None]) -> None:
    harness = two_nodes
    # 1 byte a file: every bucket is a run of its own (part-0000<b>), with its rows.
    harness.patch.setattr(foldshard, "TARGET_BYTES", 1)
    handler = harness.module_of("dissect")
    compact_step = handler["compact_step"]

    def failing(settings: Any, s3: Any, incident_id: str, item: dict[str, Any]) -> dict[str, Any]:
        if item["table"] == "connections" and item["group"] == 2:
            raise RuntimeError("out of memory")
        return dict(compact_step(settings, s3, incident_id, item))

    harness.patch.setitem(handler, "compact_step", failing)
    summary = _pass(harness, handler_env, 20)
    assert summary["state"] == "complete"  # no row is missing: the failed group's bucket file is still the view's
    assert [error.split(":")[0] for error in summary["fold"]["uncompacted"]] == ["compaction group 2 of connections"]
    items = json.loads(s3io.get_bytes(harness.store, harness.settings.evidence_bucket,
                                      fold_compact_items_key(INCIDENT)))
    connections = [item for item in items if item["table"] == "connections"]
    assert [(item["first"], item["last"]) for item in connections] == [(b, b) for b in range(5)]
    views, filled, parts = _files(harness, _day(harness))
    assert filled == {2} and parts["connections"] and "part-00002.parquet" not in parts["connections"]
    harness.patch.setattr(foldshard, "TARGET_BYTES", TARGET_BYTES)
    harness.patch.setitem(handler, "compact_step", compact_step)
    whole = _pass(harness, handler_env, 10**9)
    reference, _ = _views(harness, _day(harness))
    assert views == reference and summary["view_rows"] == whole["view_rows"]


def test_a_fold_task_that_fails_makes_the_summary_incomplete_naming_its_bucket(
        two_nodes: Harness, handler_env: Callable[[Any], None]) -> None:
    harness = two_nodes
    handler = harness.module_of("dissect")
    fold_step = handler["fold_step"]

    def failing(settings: Any, s3: Any, incident_id: str, bucket: int, phase: int = 1) -> dict[str, Any]:
        if bucket == 1:
            raise RuntimeError("out of memory")
        return dict(fold_step(settings, s3, incident_id, bucket, phase))

    harness.patch.setitem(handler, "fold_step", failing)
    summary = _pass(harness, handler_env, 20)
    assert summary["state"] == "incomplete"
    assert summary["fold"]["buckets"] == 5
    assert [error.split(":")[0] for error in summary["fold"]["errors"]] == ["fold bucket 1 phase 1"]
    assert all(node["state"] == "done" for node in summary["nodes"])  # the nodes themselves are fine
