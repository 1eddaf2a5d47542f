"""`freezeframe mcp`: freezeframe's on-call tools for an AI agent, over the Model Context Protocol (stdio).

Built on the official Python MCP SDK (`mcp`, its `MCPServer`). Every tool is a thin call into the same core code
the CLI and the functions use, so what an agent does is what a person would do:

- `freeze_window`: a manual freeze (the body of `POST /v1/freeze`), through the same intake path: parsed by
  `alerts.manual`, registered create-only by `intake.register`, which hands the freeze function off asynchronously.
  The webhook's bearer token is not asked for: whoever can start this server already holds the S3 credentials.
- `list_incidents`, `incident_status` (state, per-node coverage, dissection: `intake.incident_status`).
- `list_scenarios`, `run_scenario`, `run_sql`: the saved scenarios and Athena SQL on the local engine (`query`).
- `export_pcap`: the merged capture of an incident (`export.export_pcap`) written to a local path.

A tool that fails on bad input or missing evidence answers with an MCP tool error carrying freezeframe's message;
stdout belongs to the protocol, so logs go to stderr.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from freezeframe.adapters import s3 as s3io
from freezeframe.adapters.invoke import invoke_async
from freezeframe.adapters.s3 import ObjectStore
from freezeframe.contracts.config import Settings, settings
from freezeframe.contracts.errors import FreezeframeError, NotFoundError, PayloadError
from freezeframe.contracts.keys import incidents_prefix
from freezeframe.custody.incident import load_incident, partial_until, read_record
from freezeframe.intake import accept as intake

logger = logging.getLogger(__name__)
MAX_ROWS = 200
P = ParamSpec("P")
R = TypeVar("R")

server = MCPServer(
    "freezeframe",
    instructions="Freeze network evidence of a Kubernetes incident, check its coverage, ask SQL questions of the "
                 "dissected traffic (saved scenarios first), and export a merged PCAP for Wireshark.",
)


def current_settings() -> Settings:
    """The settings the CLI would use: the environment, plus the local stack's endpoints when one is running."""
    from freezeframe_local.stack import apply_state, load_state

    config = settings()
    return apply_state(config, load_state(config))


def _tool_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """freezeframe's own errors reach the agent as tool errors with their message (the SDK hides the text of any
    other exception, which is right for crashes)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except FreezeframeError as exc:
            raise ToolError(f"{type(exc).__name__}: {exc}") from exc

    return wrapper


@server.tool()
@_tool_errors
def freeze_window(window_start: str, window_end: str, title: str = "freeze requested by an agent",
                  severity: str = "unknown", incident_id: str | None = None, nodes: list[str] | None = None,
                  namespaces: list[str] | None = None, pods: list[str] | None = None,
                  lock_mode: str | None = None, retain_days: int | None = None,
                  legal_hold: bool = False) -> dict[str, Any]:
    """Freeze (lock in S3 Object Lock) every node's capture segments of a time window, as POST /v1/freeze does.

    Times are RFC 3339 with a zone (e.g. 2026-11-21T11:45:00Z). Scope by nodes, or by namespaces/pods (resolved to
    the nodes they ran on). Without incident_id, the id is derived from window, scope and title, so a retry is the
    same incident. The freeze runs asynchronously: poll incident_status until its state is "frozen".
    """
    config = current_settings()
    payload: dict[str, Any] = {"window_start": window_start, "window_end": window_end, "title": title,
                               "severity": severity,
                               "scope": {"cluster": config.cluster, "nodes": nodes or [],
                                         "namespaces": namespaces or [], "pods": pods or []},
                               "lock": {"legal_hold": legal_hold}}
    if incident_id is not None:
        payload["incident_id"] = incident_id
    if lock_mode is not None:
        payload["lock"]["mode"] = lock_mode
    if retain_days is not None:
        payload["lock"]["retain_days"] = retain_days
    from freezeframe.intake import manual

    now = datetime.now(UTC)
    request = manual.to_freeze_request(payload, config, now)
    accepted, duplicates = intake.register(
        config, s3io.client(config), [request], now,
        lambda req: invoke_async(config, config.freeze_function, {"request": req.to_dict()}))
    return {"incident_id": request.incident_id, "accepted": bool(accepted), "duplicate": bool(duplicates),
            "window_start": payload["window_start"], "window_end": payload["window_end"],
            "scope": request.scope.to_dict(), "lock": request.lock.to_dict()}


@server.tool()
@_tool_errors
def list_incidents(limit: int = 50) -> dict[str, Any]:
    """The incidents in the evidence bucket, newest first: id, source, title, severity, window and creation time."""
    if limit < 1:
        raise PayloadError("limit must be positive")
    config = current_settings()
    s3 = s3io.client(config)
    incidents = []
    for incident_id in _incident_ids(s3, config.evidence_bucket):
        try:
            record = read_record(config, s3, incident_id)
        except NotFoundError:
            continue  # a folder without its record (evidence written by hand): not an incident
        except PayloadError:
            # A record intake did not write (no valid request): listed by its id, as it is, not failing the list.
            incidents.append({"incident_id": incident_id, "source": None, "title": None, "severity": None,
                              "window_start": None, "window_end": None, "created_at": None})
            continue
        request = record.to_dict()["request"]
        incidents.append({"incident_id": incident_id, "source": request.get("source"),
                          "title": request.get("title"), "severity": request.get("severity"),
                          "window_start": request.get("window_start"), "window_end": request.get("window_end"),
                          "created_at": record.created_at})
    incidents.sort(key=lambda item: str(item["created_at"] or ""), reverse=True)
    return {"incidents": incidents[:limit], "total": len(incidents)}


def _incident_ids(s3: ObjectStore, bucket: str) -> list[str]:
    ids = []
    for prefix in s3io.list_prefixes(s3, bucket, incidents_prefix()):
        name = prefix[len(incidents_prefix()):].rstrip("/")
        if name and not name.startswith("_"):
            ids.append(name)
    return ids


@server.tool()
@_tool_errors
def incident_status(incident_id: str) -> dict[str, Any]:
    """Is the incident frozen (or failed, with its error), which nodes and intervals are covered (gaps, sequence
    gaps, drops, unverified segments), is dissection done, are its tables partial (`tables`: partial while the hold
    is open, `partial_until` its close time) and where the evidence lives."""
    config = current_settings()
    status = intake.incident_status(config, s3io.client(config), incident_id)
    _record(config, incident_id, "incident_status", {}, [json.dumps(status, sort_keys=True, default=str).encode()])
    return status


@server.tool()
@_tool_errors
def list_scenarios() -> dict[str, Any]:
    """The saved incident scenarios (name, title, what it answers) that run_scenario runs."""
    from freezeframe.investigate import scenarios

    return {"scenarios": [{"name": s.name, "title": s.title, "description": s.description}
                          for s in scenarios.SCENARIOS]}


@server.tool()
@_tool_errors
def run_scenario(name: str, incident_id: str | None = None, max_rows: int = MAX_ROWS) -> dict[str, Any]:
    """Run a saved scenario (see list_scenarios) over the dissected tables, for one incident or all of them. For one
    incident, `partial_until` says until when its tables miss segments its open hold is still locking; refused when
    the incident's custody chain does not vouch for its manifest."""
    from freezeframe.investigate import scenarios

    scenario = scenarios.get(name)
    result = _query(scenario.sql(incident_id), max_rows) | {"scenario": scenario.name, "title": scenario.title}
    if incident_id is not None:
        # While the incident's hold is open its tables miss what is still being locked: say so, and until when.
        config = current_settings()
        s3 = s3io.client(config)
        try:
            incident = load_incident(config, s3, incident_id, record=False, statuses=False, summary=False)
        except NotFoundError:
            incident = None  # tables without a frozen manifest: no hold to wait for
        result["partial_until"] = partial_until(config, s3, incident) if incident is not None else None
        if result["partial_until"]:
            result["note"] = (f"partial: the incident's hold is open until {result['partial_until']}; segments "
                              "locked until then are dissected as they arrive")
        _record(config, incident_id, "run_scenario", {"scenario": scenario.name},
                [json.dumps(result, sort_keys=True, default=str).encode()])
    return result


@server.tool()
@_tool_errors
def run_sql(sql: str, max_rows: int = MAX_ROWS) -> dict[str, Any]:
    """Run one Athena SQL statement on the local engine over the tables connections, dns, http, tls, k8s_events
    and workloads (partitioned by dt and incident_id)."""
    return _query(sql, max_rows)


def _query(sql: str, max_rows: int) -> dict[str, Any]:
    from freezeframe.investigate.query import run

    if max_rows < 1:
        raise PayloadError("max_rows must be positive")
    result = run(current_settings(), sql)
    records = result.records()
    # A JSON round trip: dates and decimals become what the result's JSON form holds.
    rows = json.loads(json.dumps(records[:max_rows], default=str))
    return {"sql": sql, "columns": list(result.columns), "rows": rows, "row_count": len(records),
            "truncated": len(records) > max_rows}


@server.tool()
@_tool_errors
def export_pcap(incident_id: str, output_path: str, bpf: str | None = None, start: str | None = None,
                end: str | None = None, namespaces: list[str] | None = None, pods: list[str] | None = None,
                nodes: list[str] | None = None, fmt: str = "pcapng", verify: bool = True,
                overwrite: bool = False) -> dict[str, Any]:
    """Write the incident's locked segments of every node, merged in time order, to a capture file at output_path
    (on the machine running this server; an existing file is kept unless overwrite). Filters: a BPF expression, an
    RFC 3339 time range, namespaces/pods (by pod IP at packet time) and nodes. verify checks every segment's
    sha256 while reading."""
    from freezeframe.investigate.export import ExportOptions, time_ns
    from freezeframe.investigate.export import export_pcap as export

    path = Path(output_path).expanduser()
    if output_path.strip() in ("", "-"):
        raise PayloadError("output_path must name a file (stdout carries the MCP protocol)")
    if path.exists() and not overwrite:
        raise PayloadError(f"{path} exists; pass overwrite=true to replace it")
    config = current_settings()
    options = ExportOptions(fmt=fmt, bpf=bpf, start_ns=time_ns(start, "start"), end_ns=time_ns(end, "end"),
                            namespaces=tuple(namespaces or ()), pods=tuple(pods or ()), nodes=tuple(nodes or ()),
                            verify=verify, progress=False)
    result = export(config, s3io.client(config), incident_id, path, options).to_dict()
    _record(config, incident_id, "export_pcap", result, [path])
    return result


def _record(config: Settings, incident_id: str, tool: str, details: dict[str, Any], outputs: list[Any]) -> None:
    """Every incident-scoped MCP read goes into the incident's custody ledger."""
    from freezeframe.custody.ledger import record_access

    record_access(config, s3io.client(config), incident_id, "mcp-read", {"tool": tool, **details}, outputs)


def serve() -> None:
    server.run("stdio")
