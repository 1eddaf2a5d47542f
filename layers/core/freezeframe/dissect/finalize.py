"""Finalize an incident's dissection, once every node has been dissected (or has failed for good).

In AWS the dissection state machine (template.yaml, DissectionStateMachine) maps the dissect function over the
incident's nodes and then calls the finalize function with the list of node outcomes. `finalize_incident`:

1. reads the manifest and every node's dissect status (incidents/<id>/dissect/<node>.json);
2. writes the incident's views (freezeframe.dissect.views: every node's parts folded into one row per conversation
across
   nodes, under views/<table>/...) and registers their Glue partitions (a no-op without a Glue database);
3. writes the incident report with `freezeframe.investigate.report.write_incident_report` when that module is present;
4. writes the incident summary (incidents/<id>/summary.json): per node what happened, the rows per table, the
   partitions, the report key, and "complete" only when every node was dissected cleanly.

The per-node parts are never replaced (they are each node's evidence, in a WORM bucket that refuses deletes); the
queries read the views instead, one folder per table and incident under their own prefix, so no row is counted twice.
Whether a node was dissected in one pass (`dissect_node`) or in time chunks (`dissect.fanout.merge_node`), its parts
are the same; compaction (freezeframe.dissect.compact) applies to the views only: a view over about 128 MB is written as
several numbered files, a smaller one as one.

`run_dissection_locally` is one pass of the same state machine as a plain loop, for the tests: the nodes in
order, each with the state machine's retries, then `finalize_incident`. While the incident's hold is open, the
summary's `follow` says when the next pass is due (freezeframe.freeze.follow): the state machine's Wait state, or
locally
the gateway's stand-in (`LocalGateway._run_dissection`), runs it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from freezeframe.adapters import s3 as s3io
from freezeframe.adapters.catalog import register_parts
from freezeframe.adapters.s3 import ObjectStore
from freezeframe.contracts.config import Settings
from freezeframe.contracts.documents import SUMMARY_SCHEMA, FoldPlan, Resolved
from freezeframe.contracts.errors import NotFoundError, PayloadError, SegmentCorruptError
from freezeframe.contracts.keys import (
    check_name,
    follow_key,
    parse_table_part_key,
    resolved_key,
    summary_key,
    view_file_number,
    view_key,
)
from freezeframe.contracts.models import iso
from freezeframe.contracts.schemas import TABLES, VIEWS
from freezeframe.custody.chain import seal_written
from freezeframe.custody.incident import load_incident, read_planned_digests
from freezeframe.custody.incident import read_statuses as read_typed_statuses
from freezeframe.dissect import foldshard
from freezeframe.dissect.compact import empty_parquet
from freezeframe.dissect.views import PARQUET, write_incident_views
from freezeframe.freeze.follow import behind_plan, catch_up, follow_up, hold_closes_at, incident_nodes
from freezeframe.freeze.unverified import unverified_of
from freezeframe.intake import postback

logger = logging.getLogger(__name__)

COMPLETE = "complete"
INCOMPLETE = "incomplete"
DONE = "done"
FAILED = "failed"
PARTIAL = "partial"  # dissected, but some time chunks failed: their time ranges are holes in the tables
MISSING = "missing"  # in the manifest, but no outcome arrived for it (it was never dissected)
# How long after a hold's last pass finalize still sends an incident round again for nodes behind the plan.
CATCH_UP_S = 600
# The state machine's retries of a dissect task error (States.ALL: MaxAttempts 2, so three tries in all).
LOCAL_DISSECT_ATTEMPTS = 3

Dissect = Callable[[str, str], Mapping[str, Any]]
RegisterParts = Callable[[Settings, Iterable[str]], list[str]]
ReportWriter = Callable[[Settings, Any, str], str]




def resolved_at(settings: Settings, s3: ObjectStore, incident_id: str) -> datetime | None:
    try:
        raw = s3io.get_json(s3, settings.evidence_bucket, resolved_key(incident_id))
    except NotFoundError:
        return None
    return Resolved.from_dict(raw).at


@dataclass(frozen=True, slots=True)
class NodeOutcome:
    """What the fan-out reports for one node: the dissect function's state, or the error that ended its retries."""

    node: str
    state: str  # done | failed
    error: str | None = None

    @classmethod
    def from_dict(cls, raw: object) -> NodeOutcome:
        if not isinstance(raw, Mapping):
            raise PayloadError(f"a node outcome must be an object, got {type(raw).__name__}")
        node, state, error = raw.get("node"), raw.get("state"), raw.get("error")
        if not isinstance(node, str):
            raise PayloadError(f"a node outcome needs a string 'node', got {node!r}")
        check_name("node", node)
        if state not in (DONE, FAILED):
            raise PayloadError(f"node {node}: state must be {DONE!r} or {FAILED!r}, got {state!r}")
        if error is not None and not isinstance(error, str):
            raise PayloadError(f"node {node}: error must be a string, got {type(error).__name__}")
        return cls(node, state, error)

    def to_dict(self) -> dict[str, Any]:
        return {"node": self.node, "state": self.state, "error": self.error}


def parse_event(event: object) -> tuple[str, list[NodeOutcome]]:
    """The finalize input the state machine sends: {"incident_id": ..., "nodes": [<outcome>, ...]}."""
    if not isinstance(event, Mapping):
        raise PayloadError("the finalize event must be a JSON object")
    incident_id = event.get("incident_id")
    if not isinstance(incident_id, str):
        raise PayloadError(f"the finalize event needs a string incident_id, got {incident_id!r}")
    check_name("incident_id", incident_id)
    nodes = event.get("nodes")
    if not isinstance(nodes, list):
        raise PayloadError("the finalize event needs a list of node outcomes under 'nodes'")
    return incident_id, [NodeOutcome.from_dict(raw) for raw in nodes]


def node_summary(node: str, outcome: NodeOutcome | None, status: Mapping[str, Any] | None) -> dict[str, Any]:
    """One node's line of the summary. Done only when the fan-out said done AND its status says done."""
    error: str | None
    if outcome is None:
        state, error = MISSING, "no dissection outcome arrived for this node"
    elif outcome.state == FAILED:
        state, error = FAILED, outcome.error
    elif status is None:
        state, error = FAILED, "the dissect function reported done but wrote no status"
    elif status.get("state") == PARTIAL:
        # Some time chunks failed (dissect.fanout): the rest of the node's tables are written; the holes are listed.
        state, error = PARTIAL, f"{len(status.get('holes', []))} time chunk(s) missing from the tables"
    elif status.get("state") != DONE:
        state, error = FAILED, f"dissect status is {status.get('state')!r}"
    else:
        state, error = DONE, None
    status = status or {}
    line: dict[str, Any] = {"node": node, "state": state, "error": error, "segments": int(status.get("segments", 0)),
            "tables": dict(status.get("tables", {})), "corrupt_segments": len(status.get("corrupt_segments", []))}
    if status.get("holes"):
        line["holes"] = list(status["holes"])
    if status.get("engine"):
        line["engine"] = str(status["engine"])  # which engine made the node's tables (native, python, mixed)
    return line


def partitions(part_keys: Iterable[str]) -> list[dict[str, str]]:
    """The distinct (table, dt, incident_id) partitions of some Parquet part keys, sorted."""
    found = sorted({p[:3] for key in part_keys if (p := parse_table_part_key(key))})
    return [{"table": table, "dt": dt, "incident_id": incident_id} for table, dt, incident_id in found]


def build_summary(incident_id: str, manifest_nodes: Iterable[str], outcomes: Sequence[NodeOutcome],
                  statuses: Mapping[str, Mapping[str, Any] | None], registered: Sequence[str],
                  report: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    by_node = {o.node: o for o in outcomes}
    nodes = [node_summary(node, by_node.get(node), statuses.get(node))
             for node in sorted(set(manifest_nodes) | set(by_node))]
    rows: dict[str, int] = {}
    for line in nodes:
        if line["state"] in (DONE, PARTIAL):
            for table, count in line["tables"].items():
                rows[table] = rows.get(table, 0) + int(count)
    part_keys = sorted(key for status in statuses.values() if status for key in status.get("parts", {}).values())
    complete = bool(nodes) and all(n["state"] == DONE for n in nodes) and report.get("error") is None
    return {
        "schema": SUMMARY_SCHEMA,
        "incident_id": incident_id,
        "state": COMPLETE if complete else INCOMPLETE,
        "nodes": nodes,
        "rows": dict(sorted(rows.items())),
        "parts": part_keys,
        "partitions": partitions(part_keys),
        "partitions_registered": list(registered),
        "report": dict(report),
        "finished_at": iso(now),
    }


def report_writer() -> ReportWriter | None:
    """`freezeframe.investigate.report.write_incident_report`, or None when this build has no report module.

    Only the report module's own absence counts as "no report": a report module that cannot import one of its
    dependencies (duckdb without the query layer) is a deployment error and raises."""
    try:
        from freezeframe.investigate import report
    except ModuleNotFoundError as exc:
        if exc.name != "freezeframe.investigate.report":
            raise
        return None
    writer: ReportWriter = report.write_incident_report
    return writer


def write_report(settings: Settings, s3: ObjectStore, incident_id: str, writer: ReportWriter | None) -> dict[str, Any]:
    """{"key": <report key>} or {"key": None, "skipped": why}, or {"key": None, "error": what failed}.

    A failed report does not stop the summary: the summary records the error and says "incomplete", which fails
    the state machine's execution (its alarm fires) after the summary is safely written."""
    if writer is None:
        return {"key": None, "skipped": "this build has no freezeframe.investigate.report module"}
    try:
        return {"key": writer(settings, s3, incident_id)}
    except Exception as exc:  # noqa: BLE001 - recorded in the summary and failing the execution, never dropped
        logger.exception("incident report failed", extra={"incident_id": incident_id})
        return {"key": None, "error": f"{type(exc).__name__}: {exc}"}


def read_statuses(settings: Settings, s3: ObjectStore, incident_id: str,
                  nodes: Iterable[str]) -> dict[str, dict[str, Any] | None]:
    """Each node's dissect status (validated: freezeframe.contracts.documents.DissectStatus) as stored, None when
    missing."""
    return {node: status.to_dict() if status is not None else None
            for node, status in read_typed_statuses(settings, s3, incident_id, nodes).items()}


def write_sharded_views(settings: Settings, s3: ObjectStore, incident_id: str, fold: FoldPlan,
                        part_keys: Sequence[str], moved: Mapping[str, str]
                        ) -> tuple[dict[str, int], list[str], list[str]]:
    """The views when the fold ran in buckets: rows per view (the routed tables' from the fold's results), an
    error per bucket whose fold left no result, and one per compaction group that left none. The view's files are
    the compacted ones plus the bucket files no compaction joined; every other file in a routed view's folder (the
    joined bucket files, an earlier pass's incident.parquet, a larger bucket count's files, a failed bucket's older
    file, a failed compaction's part) is overwritten empty: the bucket refuses deletes, and a stale row must not be
    counted."""
    bucket = settings.evidence_bucket
    small = [name for name in TABLES if name not in foldshard.ROUTED]
    views = write_incident_views(bucket, s3, incident_id, part_keys, moved_keys=moved, tables=small, day=fold.day)
    rows, written, errors = foldshard.fold_results(settings, s3, incident_id, fold)
    compact_files, joined, compact_errors = foldshard.compacted(settings, s3, incident_id, fold)
    kept = (written - joined) | compact_files
    stale = [(name, key) for name in foldshard.ROUTED
             for key in s3io.list_keys(s3, bucket, view_key(name, str(fold.day), incident_id).rsplit("/", 1)[0] + "/")
             if key not in kept and view_file_number(key.rsplit("/", 1)[1]) is not None]
    with ThreadPoolExecutor(max_workers=foldshard.READERS) as pool:
        list(pool.map(lambda job: s3io.put_bytes(s3, bucket, job[1], empty_parquet(VIEWS[job[0]]),
                                                 content_type=PARQUET), stale))
    for error in errors:
        logger.error("fold bucket missing from the views", extra={"incident_id": incident_id, "error": error})
    for error in compact_errors:
        logger.warning("view files left uncompacted", extra={"incident_id": incident_id, "error": error})
    return {**views, **rows}, errors, compact_errors


def finalize_incident(settings: Settings, s3: ObjectStore, incident_id: str, outcomes: Sequence[NodeOutcome], *,
                      register: RegisterParts = register_parts, writer: ReportWriter | None = None,
                      now: datetime | None = None) -> dict[str, Any]:
    """Register the partitions, write the report and the summary; returns the summary with its key.

    `writer` defaults to `report_writer()`, looked up at call time."""
    now = now or datetime.now(UTC)
    incident = load_incident(settings, s3, incident_id, record=False, statuses=False, summary=False)
    manifest, parts = incident.manifest_document, incident.part_documents
    # Every node with a segment locked under the incident: the freeze's and those the hold's parts brought.
    manifest_nodes = set(incident_nodes(manifest, parts))
    # Decided before the report, so the report says whether its tables are partial and until when.
    closes_at = hold_closes_at(manifest, resolved_at(settings, s3, incident_id))
    follow = follow_up(closes_at, now, manifest_nodes, settings.dissect_refresh_s, settings.hold_settle_s)
    statuses = read_statuses(settings, s3, incident_id, manifest_nodes | {o.node for o in outcomes})
    # A part locked while this pass ran: the node's merge left its status behind the plan; one more pass. Only a
    # hold brings parts, and only for a while after it closed (bounded, whatever a stale plan says).
    behind = behind_plan(read_planned_digests(settings, s3, incident_id), statuses) if closes_at is not None and \
        now < closes_at + timedelta(seconds=settings.hold_settle_s + CATCH_UP_S) else []
    follow = catch_up(follow, behind, settings.dissect_refresh_s, now)
    s3io.put_json(s3, settings.evidence_bucket, follow_key(incident_id), follow.to_dict())
    part_keys = [key for status in statuses.values() if status for key in status.get("parts", {}).values()]
    # A fanned-out node's rows on no chunk edge are in one part per chunk (dissect.fanout), named by its status.
    chunk_keys = [key for status in statuses.values() if status for key in status.get("chunk_parts", [])]
    # The views SQL reads (one row per conversation across nodes) before the partitions and the report that use them.
    moved = {node: str(status["moved_rows"]) for node, status in statuses.items()
             if status and status.get("moved_rows")}
    fold = foldshard.current_plan(settings, s3, incident_id, statuses)
    if fold is not None and fold.buckets > 1:
        # The routed tables were folded in buckets by this pass's fold tasks (dissect.foldshard): their results
        # give the rows; the small tables are folded here.
        views, fold_errors, compact_errors = write_sharded_views(settings, s3, incident_id, fold,
                                                                 [*part_keys, *chunk_keys], moved)
    else:
        views, fold_errors, compact_errors = write_incident_views(settings.evidence_bucket, s3, incident_id,
                                                                  [*part_keys, *chunk_keys], moved_keys=moved), [], []
    registered = register(settings, part_keys)
    report = write_report(settings, s3, incident_id, writer if writer is not None else report_writer())
    summary = build_summary(incident_id, manifest_nodes, outcomes, statuses, registered, report, now)
    # `rows`: the per-node sum of the nodes dissected cleanly (sightings); `view_rows`: what SQL counts (conversations).
    summary["view_rows"] = dict(sorted(views.items()))
    summary["fold"] = {"buckets": fold.buckets if fold else 1, "errors": fold_errors,
                       "uncompacted": compact_errors}
    if fold_errors:  # a bucket's rows are missing from the views: never a complete incident
        summary["state"] = INCOMPLETE
    summary["chunk_parts"] = len(chunk_keys)
    summary["partial_until"] = follow.partial_until
    summary["follow"] = follow.to_dict()
    summary["behind_plan"] = behind
    summary["unverified"] = [u.to_dict() for document in [manifest, *parts] for u in unverified_of(document)]
    key = summary_key(incident_id)
    # Locked by the evidence bucket's default retention (only the freeze and the indexer may set locks).
    version_id = s3io.put_json(s3, settings.evidence_bucket, key, summary)
    seal_written(settings, s3, incident_id, "summary", key, version_id, s3io.encode_json(summary), None)
    logger.info("incident finalized", extra={"incident_id": incident_id, "state": summary["state"],
                                             "nodes": len(summary["nodes"]), "parts": len(part_keys)})
    postback.after_finalize(settings, manifest, summary)
    return {**summary, "summary_key": key}


def dissect_with_retries(dissect: Dissect, incident_id: str, node: str,
                         attempts: int = LOCAL_DISSECT_ATTEMPTS) -> NodeOutcome:
    """One Map iteration of the state machine: retry errors, but not a corrupt segment (it fails again)."""
    for attempt in range(1, attempts + 1):
        try:
            result = dissect(incident_id, node)
        except SegmentCorruptError as exc:
            return NodeOutcome(node, FAILED, type(exc).__name__)
        except Exception as exc:  # noqa: BLE001 - the state machine's catch: the node fails, the others go on
            logger.warning("dissect attempt failed", extra={"incident_id": incident_id, "node": node,
                                                            "attempt": attempt, "error": type(exc).__name__})
            if attempt == attempts:
                return NodeOutcome(node, FAILED, type(exc).__name__)
            continue
        return NodeOutcome(node, DONE if result.get("state") == DONE else FAILED)
    raise AssertionError("unreachable")  # pragma: no cover


def run_dissection_locally(settings: Settings, s3: ObjectStore, incident_id: str, nodes: Sequence[str],
                           dissect: Dissect, **finalize_options: Any) -> dict[str, Any]:
    """The dissection state machine, sequentially in this process: each node, then finalize."""
    outcomes = [dissect_with_retries(dissect, incident_id, node) for node in nodes]
    return finalize_incident(settings, s3, incident_id, outcomes, **finalize_options)
