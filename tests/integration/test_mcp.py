"""`freezeframe mcp` driven by the MCP SDK's own client over stdio, against the real local stack: LocalStack S3 and
the local gateway running the freeze and dissect handlers. An agent freezes a window of the sample capture (spread
over three nodes), waits for dissection, lists incidents, reads the coverage, asks a scenario and SQL, and exports a
PCAP; each answer is checked against the stack's state and against tshark on the sample."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters

from freezeframe.adapters import s3 as s3io
from freezeframe.contracts.keys import manifest_key
from freezeframe.contracts.models import iso
from tests.integration.test_export_pcap import NODES, SAMPLE, build_incident, by_ip_pair, tshark

pytestmark = pytest.mark.integration
TOOLS = {"freeze_window", "list_incidents", "incident_status", "list_scenarios", "run_scenario", "run_sql",
         "export_pcap"}
RCODES = {"0": "NOERROR", "2": "SERVFAIL", "3": "NXDOMAIN", "5": "REFUSED"}


def dns_answers() -> set[tuple[str, str, str]]:
    """(client, qname, rcode name) of every DNS response in the sample, by tshark."""
    lines = tshark(SAMPLE, "-Y", "dns.flags.response == 1", "-e", "dns.qry.name", "-e", "dns.flags.rcode")
    return {(f[3], f[4], RCODES[f[5]]) for f in (line.split("\t") for line in lines)}


async def session(out: Path, incident_window: tuple[str, str]) -> dict[str, Any]:
    """One agent session; returns what each tool answered, for the test to check outside the event loop."""
    params = StdioServerParameters(command=sys.executable, args=["-m", "freezeframe_local.cli", "mcp"],
                                   env=dict(os.environ))
    answers: dict[str, Any] = {}
    async with Client(params, read_timeout_seconds=120) as client:
        answers["tools"] = {tool.name: tool for tool in (await client.list_tools()).tools}
        frozen = await client.call_tool("freeze_window", {
            "window_start": incident_window[0], "window_end": incident_window[1], "title": "checkout 5xx",
            "severity": "critical", "incident_id": "it-mcp-1"})
        answers["freeze"] = frozen
        answers["freeze_again"] = await client.call_tool("freeze_window", {
            "window_start": incident_window[0], "window_end": incident_window[1], "incident_id": "it-mcp-1"})
        deadline = time.monotonic() + 90
        status = None
        while time.monotonic() < deadline:
            status = await client.call_tool("incident_status", {"incident_id": "it-mcp-1"})
            if not status.is_error and status.structured_content["state"] == "dissected":
                break
            await anyio.sleep(0.5)
        answers["status"] = status
        answers["incidents"] = await client.call_tool("list_incidents", {})
        answers["scenarios"] = await client.call_tool("list_scenarios", {})
        answers["scenario"] = await client.call_tool("run_scenario", {"name": "dns-failures",
                                                                      "incident_id": "it-mcp-1"})
        answers["sql"] = await client.call_tool("run_sql", {
            "sql": "SELECT src_ip, qname, rcode_name FROM dns WHERE incident_id = 'it-mcp-1' "
                   "AND rcode_name IS NOT NULL"})
        answers["export"] = await client.call_tool("export_pcap", {"incident_id": "it-mcp-1",
                                                                   "output_path": str(out), "bpf": "udp port 53"})
        answers["export_again"] = await client.call_tool("export_pcap", {"incident_id": "it-mcp-1",
                                                                         "output_path": str(out)})
        answers["missing"] = await client.call_tool("incident_status", {"incident_id": "it-mcp-nope"})
        answers["bad_sql"] = await client.call_tool("run_sql", {"sql": "SELEC nothing"})
        answers["bad_window"] = await client.call_tool("freeze_window", {"window_start": "yesterday",
                                                                         "window_end": incident_window[1]})
    return answers


def test_an_agent_freezes_inspects_queries_and_exports_over_mcp(local: Any, tmp_path: Path) -> None:
    config, s3, gateway = local
    incident = build_incident(config, s3, tmp_path, "it-mcp-1", deal=by_ip_pair, late=False, freeze_now=False)
    window = (iso(incident.request.window_start), iso(incident.request.window_end))
    out = tmp_path / "dns.pcapng"
    answers = anyio.run(session, out, window)

    assert set(answers["tools"]) == TOOLS
    assert all(tool.description for tool in answers["tools"].values())
    assert "window_start" in answers["tools"]["freeze_window"].input_schema["required"]

    assert not answers["freeze"].is_error, answers["freeze"].content
    assert answers["freeze"].structured_content["accepted"] is True
    assert answers["freeze_again"].structured_content == answers["freeze_again"].structured_content | {
        "accepted": False, "duplicate": True}

    # the freeze really ran, through the gateway's freeze handler: the manifest on S3 lists every segment
    manifest = s3io.get_json(s3, config.evidence_bucket, manifest_key("it-mcp-1"))
    assert {(e["key"], e["version_id"]) for e in manifest["segments"]} == {
        (s.key, s.version_id) for s in incident.segments}
    status = answers["status"].structured_content
    assert status["state"] == "dissected", status
    assert status["frozen_segments"] == len(incident.segments) and status["root_hash"] == manifest["root_hash"]
    assert set(status["coverage"]) == set(NODES)
    assert {node: c["segments"] for node, c in status["coverage"].items()} == {
        node: sum(1 for s in incident.segments if s.node == node) for node in NODES}

    listed = answers["incidents"].structured_content["incidents"]
    assert [i for i in listed if i["incident_id"] == "it-mcp-1"][0]["title"] == "checkout 5xx"
    assert {s["name"] for s in answers["scenarios"].structured_content["scenarios"]} >= {"dns-failures"}

    reference = dns_answers()
    failures = {(row["client"], row["qname"], row["rcode_name"])
                for row in answers["scenario"].structured_content["rows"]}
    assert failures == {r for r in reference if r[2] in ("NXDOMAIN", "SERVFAIL")} and len(failures) == 2
    rows = answers["sql"].structured_content["rows"]
    assert {(r["src_ip"], r["qname"], r["rcode_name"]) for r in rows} == reference

    exported = answers["export"].structured_content
    assert not answers["export"].is_error, answers["export"].content
    expected = len(tshark(SAMPLE, "-Y", "udp.port == 53"))
    assert exported["packets"] == expected == len(tshark(out)) and exported["verified_segments"] == len(
        incident.segments)

    for name, needle in (("missing", "no incident"), ("bad_sql", "syntax error"), ("bad_window", "window_start"),
                         ("export_again", "overwrite")):
        answer = answers[name]
        assert answer.is_error, name
        assert needle in answer.content[0].text, answer.content[0].text
    assert subprocess.run(["tshark", "-r", str(out), "-c", "1"], capture_output=True).returncode == 0
