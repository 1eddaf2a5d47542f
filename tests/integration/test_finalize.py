"""The finalize function and the local form of the dissection state machine, on real S3 (LocalStack)."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest

from freezeframe.adapters import s3 as s3io
from freezeframe.contracts.config import Settings
from freezeframe.contracts.errors import SegmentCorruptError
from freezeframe.contracts.keys import dissect_status_key, table_part_key
from freezeframe.dissect import finalize
from tests.fixtures.custody import put_signed_manifest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
INCIDENT = "am-sample0000000000000"  # the incident of events/finalize/*.json
WINDOW_START_NS = 1_795_261_500_000_000_000  # 2026-11-21T11:45:00Z


def _segment(node: str, seq: int) -> dict[str, Any]:
    start = WINDOW_START_NS + seq * 10_000_000_000
    return {"key": f"raw/demo/2026/11/21/11/{node}/{start}-{start + 10_000_000_000}.pcap.zst",
            "version_id": f"v{seq}", "sha256": "0" * 64, "size": 100, "node": node, "start_ns": start,
            "end_ns": start + 10_000_000_000, "seq": seq, "lock_mode": "COMPLIANCE",
            "retain_until": "2026-12-21T12:00:00.000Z"}


def _write_manifest(config: Settings, s3: Any, nodes: Iterable[str]) -> None:
    segments = [_segment(node, i) for i, node in enumerate(nodes)]
    put_signed_manifest(config, s3, INCIDENT, {"incident_id": INCIDENT,
                                               "request": {"window_start": "2026-11-21T11:45:00.000Z"},
                                               "segments": segments})


def _write_status(config: Settings, s3: Any, node: str, state: str, tables: Mapping[str, int]) -> dict[str, str]:
    """What the dissect function leaves behind for one node: its status and the keys of its parts."""
    parts = {table: table_part_key(table, WINDOW_START_NS, INCIDENT, node) for table in tables}
    s3io.put_json(s3, config.evidence_bucket, dissect_status_key(INCIDENT, node),
                  {"incident_id": INCIDENT, "node": node, "state": state, "segments": 1, "tables": dict(tables),
                   "parts": parts, "corrupt_segments": [] if state == "done" else [{"key": "k", "reason": "sha"}]})
    return parts


def _handler() -> Any:
    spec = importlib.util.spec_from_file_location("freezeframe_function_finalize", REPO / "functions/finalize/app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.lambda_handler


def test_handler_writes_an_incomplete_summary_when_a_node_failed(local: Any, event: Any, lambda_context: Any,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    config, s3, _ = local
    _write_manifest(config, s3, ["node-a", "node-b"])
    parts_a = _write_status(config, s3, "node-a", "done", {"connections": 4, "dns": 3})
    _write_status(config, s3, "node-b", "failed", {})
    rendered: list[str] = []

    def fake_report(settings: Settings, s3_: Any, incident_id: str) -> str:
        rendered.append(incident_id)
        return f"incidents/{incident_id}/report.html"

    monkeypatch.setattr(finalize, "report_writer", lambda: fake_report)
    reply = _handler()(event("finalize", "one_node_failed"), lambda_context)

    assert reply["state"] == "incomplete" and rendered == [INCIDENT]
    assert reply["nodes"] == {"node-a": "done", "node-b": "failed"}
    summary = s3io.get_json(s3, config.evidence_bucket, reply["summary_key"])
    assert reply["summary_key"] == f"incidents/{INCIDENT}/summary.json"
    assert summary["schema"] == finalize.SUMMARY_SCHEMA and summary["state"] == "incomplete"
    assert summary["rows"] == {"connections": 4, "dns": 3}
    assert summary["parts"] == sorted(parts_a.values())
    assert {(p["table"], p["dt"]) for p in summary["partitions"]} == {("connections", "2026-11-21"),
                                                                       ("dns", "2026-11-21")}
    assert summary["partitions_registered"] == []  # local mode: no Glue database, DuckDB reads the hive layout
    assert summary["report"] == {"key": f"incidents/{INCIDENT}/report.html"}
    (failed,) = [n for n in summary["nodes"] if n["node"] == "node-b"]
    assert failed["error"] == "SegmentCorruptError" and failed["corrupt_segments"] == 1


def test_local_state_machine_dissects_every_node_then_finalizes_once(local: Any) -> None:
    config, s3, _ = local
    nodes = ["node-a", "node-b", "node-c"]
    _write_manifest(config, s3, nodes)
    attempts: dict[str, int] = {}
    registered: list[list[str]] = []

    def dissect(incident_id: str, node: str) -> Mapping[str, Any]:
        attempts[node] = attempts.get(node, 0) + 1
        if node == "node-b" and attempts[node] == 1:
            raise ConnectionError("throttled")  # retried, as the state machine's States.ALL retrier does
        if node == "node-c":
            raise SegmentCorruptError("sha256 mismatch")  # not retried
        _write_status(config, s3, node, "done", {"connections": 2})
        return {"node": node, "state": "done"}

    def register(settings: Settings, part_keys: Iterable[str]) -> list[str]:
        registered.append(sorted(part_keys))
        return ["connections"]

    summary = finalize.run_dissection_locally(config, s3, INCIDENT, nodes, dissect, register=register,
                                              writer=lambda *_: f"incidents/{INCIDENT}/report.html")
    assert attempts == {"node-a": 1, "node-b": 2, "node-c": 1}
    assert registered == [sorted(table_part_key("connections", WINDOW_START_NS, INCIDENT, n)
                                 for n in ("node-a", "node-b"))]
    assert [(n["node"], n["state"]) for n in summary["nodes"]] == [("node-a", "done"), ("node-b", "done"),
                                                                    ("node-c", "failed")]
    assert summary["rows"] == {"connections": 4} and summary["state"] == "incomplete"
    stored = s3io.get_json(s3, config.evidence_bucket, finalize.summary_key(INCIDENT))
    assert stored["nodes"] == summary["nodes"] and stored["partitions_registered"] == ["connections"]


def test_everything_dissected_is_complete(local: Any) -> None:
    config, s3, _ = local
    _write_manifest(config, s3, ["node-a"])

    def dissect(incident_id: str, node: str) -> Mapping[str, Any]:
        _write_status(config, s3, node, "done", {"dns": 1})
        return {"node": node, "state": "done"}

    summary = finalize.run_dissection_locally(config, s3, INCIDENT, ["node-a"], dissect,
                                              register=lambda settings, keys: [],
                                              writer=lambda *_: f"incidents/{INCIDENT}/report.html")
    assert summary["state"] == "complete" and summary["rows"] == {"dns": 1}
