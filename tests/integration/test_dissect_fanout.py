"""Dissection fanned out over (node, time chunk) on the real stack (issue 17): LocalStack S3 with Object Lock, a
real Kafka broker, the local gateway running freeze, then the dissection state machine's steps (plan, a task per
(node, chunk), a merge per node writing the node's parts, finalize building the views) through the dissect and
finalize handlers.

Two nodes replay the sample capture (56 s, six 10 s segments each); 7 s chunks with a 5 s warm-up cut each node into
several chunks. Expected: each node's connections equal one sequential pass over the same frozen segments (the
sequential engine is checked against tshark elsewhere); the two nodes saw the same traffic, so the incident's view
(one file, small) holds each of those connections once, seen by both nodes; and a chunk that fails for good leaves a
hole that the node status and the summary report while the other chunks' rows are written.
"""

from __future__ import annotations

import io
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from freezeframe_local.kafka import create_topics

from freezeframe.adapters import s3 as s3io
from freezeframe.adapters.bus import KafkaBus
from freezeframe.contracts.keys import dissect_status_key, incident_key, manifest_key, view_prefix
from freezeframe.contracts.models import FreezeRequest, LockSpec, Scope, from_ns
from freezeframe.dissect.fanout import dissect_chunk, merge_node, plan_dissection, plan_items
from freezeframe.dissect.finalize import NodeOutcome, finalize_incident, summary_key
from freezeframe.dissect.job import SegmentSource, dissect_segments
from freezeframe.dissect.problems import SegmentRef
from freezeframe_agent.main import run_replay
from tests.fixtures.waiting import until

pytestmark = pytest.mark.integration
SAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "sample.pcap"
NODES = ("node-a", "node-b")
K8S_COLUMNS = {"src_namespace", "src_pod", "src_workload", "dst_namespace", "dst_pod", "dst_workload"}


def _read(s3: Any, bucket: str, key: str) -> list[dict[str, Any]]:
    return pq.read_table(io.BytesIO(s3io.get_bytes(s3, bucket, key))).to_pylist()


def _sequential(s3: Any, manifest: dict[str, Any], node: str) -> dict[str, dict[str, Any]]:
    entries = sorted((e for e in manifest["segments"] if e["node"] == node), key=lambda e: e["start_ns"])
    sources = [SegmentSource(SegmentRef(e["key"], e["version_id"], e["start_ns"], e["end_ns"]),
                             fetch=(lambda e=e: s3io.get_bytes(s3, manifest["raw_bucket"], e["key"],
                                                               e["version_id"])))
               for e in entries]
    table = dissect_segments(node, sources).tables["connections"]
    return {row["conn_id"]: row for row in table.to_pylist()}


def _row_key(row: dict[str, Any]) -> str:
    return repr(sorted(row.items()))


def _view_files(s3: Any, bucket: str, incident_id: str, table: str) -> list[str]:
    return sorted(k for k in s3io.list_keys(s3, bucket, view_prefix(table)) if f"incident_id={incident_id}/" in k)


def _freeze_two_nodes(local: Any, handler_env: Any, tmp_path: Path, **settings: Any) -> tuple[Any, Any, str]:
    """Both nodes replay the sample, an incident over their window is frozen through the gateway, and its
    dissection state machine (the gateway's stand-in) runs to its summary; (settings, s3, incident id)."""
    config, s3, gateway = local
    config = config.with_(segments_topic=f"ff-fanout-{uuid.uuid4().hex[:8]}", hold_grace_s=0, dissect_chunk_s=7,
                          dissect_warmup_s=5, **settings)
    handler_env(config)
    gateway.settings = config
    create_topics(config.kafka_bootstrap, [config.segments_topic])
    bus = KafkaBus(config.kafka_bootstrap)
    records = []
    try:
        for node in NODES:
            records += run_replay(config.with_(node_name=node, spool_dir=tmp_path / node), SAMPLE, speedup=1000.0,
                                  retime=False, s3=s3, bus=bus)
    finally:
        bus.close()
    first, last = min(r.start_ns for r in records), max(r.end_ns for r in records)
    incident_id = f"it-fanout-{uuid.uuid4().hex[:6]}"
    request = FreezeRequest(incident_id=incident_id, source="api", title="fan-out", severity="high",
                            window_start=from_ns(first - 1_000_000_000), window_end=from_ns(last),
                            scope=Scope(config.cluster),
                            lock=LockSpec("COMPLIANCE", datetime.now(UTC) + timedelta(days=1)))
    s3io.put_json(s3, config.evidence_bucket, incident_key(incident_id),
                  {"incident_id": incident_id, "state": "accepted", "request": request.to_dict()})
    gateway.invoke_async("freeze", {"request": request.to_dict()})
    until(lambda: s3io.exists(s3, config.evidence_bucket, summary_key(incident_id)), 120, "finalize")
    assert gateway.wait_idle(60)
    assert [i for i in gateway.invocations if i.state == "failed"] == []
    return config, s3, incident_id


def test_a_multi_node_incident_is_dissected_in_chunks_merged_into_parts_and_views_and_a_failed_chunk_is_a_hole(
        local: Any, handler_env: Any, tmp_path: Path) -> None:
    config, s3, incident_id = _freeze_two_nodes(local, handler_env, tmp_path)
    bucket = config.evidence_bucket
    summary = s3io.get_json(s3, bucket, summary_key(incident_id))
    assert summary["state"] == "complete", summary["nodes"]
    assert sorted(n["node"] for n in summary["nodes"]) == list(NODES)
    manifest = s3io.get_json(s3, bucket, manifest_key(incident_id))
    for node in NODES:
        status = s3io.get_json(s3, bucket, dissect_status_key(incident_id, node))
        assert status["state"] == "done" and status["holes"] == []
        assert status["stats"]["chunks"] == status["stats"]["chunks_planned"] >= 5
        assert status["stats"]["chunk_rows_merged"] > 0  # connections did cross chunk edges
        part = status["parts"]["connections"]
        assert part.endswith(f"/incident_id={incident_id}/{node}.parquet")  # where a one-pass dissection writes
        assert {"node_stats", "node_config", "service_flows", "services", "endpoints"} <= set(status["parts"])
        expected = _sequential(s3, manifest, node)
        # The merged edge rows in the node's part, every other row in its chunk's part, each row in one of them.
        chunk_parts = [key for key in status["chunk_parts"] if key.startswith(part.removesuffix(".parquet") + "~")]
        assert len(chunk_parts) == status["stats"]["chunks"]
        edge_rows = _read(s3, bucket, part)
        # Rows of a chunk part the merge folded into the node's part are in the node's moved list.
        moved = {row["conn_id"] for row in _read(s3, bucket, status["moved_rows"])}
        assert len(moved) <= status["stats"]["chunk_rows_pulled"]
        body_rows = [row for key in chunk_parts for row in _read(s3, bucket, key) if row["conn_id"] not in moved]
        assert 0 < len(edge_rows) < len(body_rows)  # most rows never reach the merge
        assert status["stats"]["chunk_edge_rows"] < status["tables"]["connections"] == len(expected)
        actual = {row["conn_id"]: row for row in edge_rows + body_rows}
        assert len(actual) == len(edge_rows) + len(body_rows)
        assert set(actual) == set(expected)
        for conn_id, row in expected.items():
            for column, value in row.items():
                if column not in K8S_COLUMNS:
                    assert actual[conn_id][column] == value, (node, conn_id, column)
        assert summary["rows"]["connections"] >= len(expected)
        assert part in summary["parts"]
    (view_file,) = _view_files(s3, bucket, incident_id, "connections")  # small: one file per table
    assert view_file.endswith("/incident.parquet")
    assert view_file == part.replace("tables/", "views/", 1).replace("/node-b.parquet", "/incident.parquet")
    view = _read(s3, bucket, view_file)
    assert len(view) == len(_sequential(s3, manifest, "node-a")) == summary["view_rows"]["connections"]
    assert all(row["observers"] == list(NODES) for row in view)  # the same traffic on both nodes: folded
    assert {"table": "connections", "dt": view_file.split("dt=")[1][:10], "incident_id": incident_id} in \
        summary["partitions"]

    # A later pass with other chunk edges in which node-b's chunk 1 fails for good (its task never writes a result):
    # the same steps, called one by one as the state machine calls the handlers.
    shorter = config.with_(dissect_chunk_s=5)
    plan = plan_dissection(shorter, s3, incident_id, list(NODES))
    items = plan_items(shorter, s3, plan)
    assert {item["node"] for item in items} == set(NODES)
    for item in items:
        if (item["node"], item["chunk"]) != ("node-b", 1):
            dissect_chunk(shorter, s3, item)
    reports = {node: merge_node(shorter, s3, incident_id, node) for node in NODES}
    outcomes = [NodeOutcome(node, "done") for node in NODES]
    summary = finalize_incident(shorter, s3, incident_id, outcomes)
    status_b = s3io.get_json(s3, bucket, dissect_status_key(incident_id, "node-b"))
    (hole,) = status_b["holes"]
    assert status_b["state"] == "partial" and hole["chunk"] == 1 and hole["end_ns"] - hole["start_ns"] == 5 * 10**9
    lines = {line["node"]: line for line in summary["nodes"]}
    assert lines["node-a"]["state"] == "done" and lines["node-b"]["state"] == "partial"
    assert lines["node-b"]["holes"][0]["chunk"] == 1 and summary["state"] == "incomplete"
    status_a = s3io.get_json(s3, bucket, dissect_status_key(incident_id, "node-a"))
    rows_a, rows_b = ([row for key in [status["parts"]["connections"], *status["chunk_parts"]] if "/connections/" in key
                       for row in _read(s3, bucket, key)
                       if "~" not in key or row["conn_id"] not in {r["conn_id"] for r in _read(s3, bucket,
                                                                                                status["moved_rows"])}]
                      for status in (status_a, status_b))
    assert 0 < len(rows_b) and sum(r["packets_out"] + r["packets_in"] for r in rows_b) < \
        sum(r["packets_out"] + r["packets_in"] for r in rows_a)
    (view_file,) = _view_files(s3, bucket, incident_id, "connections")
    assert {row["observer"] for row in _read(s3, bucket, view_file)} <= set(NODES)
    assert reports["node-a"].stats["holes"] == 0 and reports["node-b"].stats["holes"] == 1


def test_the_views_of_a_multi_node_incident_folded_in_buckets_on_the_real_stack_equal_the_fold_in_one_piece(
        local: Any, handler_env: Any, tmp_path: Path) -> None:
    """The same incident with FREEZEFRAME_FOLD_ROWS small: plan-fold, route, fold and compaction run as the state
    machine runs them (the gateway's stand-in, through the dissect handler, ranged GETs on LocalStack); the views are
    bucket files compacted into one part whose rows equal those of the fold in one piece (``views.build_views`` over
    the same parts), each conversation once with both nodes as observers, and SQL over the views counts each once."""
    from freezeframe.contracts.keys import fold_plan_key
    from freezeframe.dissect.views import build_views
    from freezeframe.investigate.query import run

    config, s3, incident_id = _freeze_two_nodes(local, handler_env, tmp_path, fold_rows=20)
    bucket = config.evidence_bucket
    summary = s3io.get_json(s3, bucket, summary_key(incident_id))
    assert summary["state"] == "complete", summary
    plan = s3io.get_json(s3, bucket, fold_plan_key(incident_id))
    routed = sum(plan["rows"].values())
    assert plan["buckets"] == -(-routed // 20) >= 3
    statuses = [s3io.get_json(s3, bucket, dissect_status_key(incident_id, node)) for node in NODES]
    part_keys = [key for status in statuses for key in [*status["parts"].values(), *status["chunk_parts"]]]
    moved = {node: pq.read_table(io.BytesIO(s3io.get_bytes(s3, bucket, status["moved_rows"]))).column("conn_id")
             .combine_chunks() for node, status in zip(NODES, statuses, strict=True) if status.get("moved_rows")}
    expected = build_views(incident_id, part_keys,
                           lambda key: pq.read_table(io.BytesIO(s3io.get_bytes(s3, bucket, key))), moved)
    for table in ("connections", "dns", "http", "tls"):
        files = _view_files(s3, bucket, incident_id, table)
        # the buckets' files compacted into one part (a few KB here), the joined bucket files emptied
        assert files and {key.rsplit("/", 1)[1] for key in files if _read(s3, bucket, key)} == {"part-00000.parquet"}
        assert sum("/bucket-" in key for key in files) == plan["buckets"], files
        rows = [row for key in files for row in _read(s3, bucket, key)]
        want = expected[table][1].to_pylist()
        assert sorted(map(_row_key, rows)) == sorted(map(_row_key, want)), table
        assert summary["view_rows"][table] == len(want)
    connections = [row for key in _view_files(s3, bucket, incident_id, "connections") for row in _read(s3, bucket, key)]
    assert connections and all(row["observers"] == list(NODES) for row in connections)
    # SQL (DuckDB over the bucket, as `freezeframe query`) reads the folder: every bucket file, each row once.
    result = run(config, f"SELECT count(*), count(DISTINCT conn_id) FROM connections WHERE incident_id = "
                         f"'{incident_id}'")
    assert result.rows == ((len(connections), len(connections)),)
