"""The MCP server's incident tools on the in-memory stack (the integration tier drives them over stdio against the
local stack, tests/integration/test_mcp.py): a scenario over an incident says until when its tables are partial, as
the incident API does, from the incident's pinned manifest (freezeframe.custody.incident.load_incident)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from freezeframe_local import mcp_server

from freezeframe.contracts.models import iso
from tests.functional.conftest import Harness


@pytest.fixture
def tools(harness: Harness) -> list[tuple[str, str | None]]:
    """The MCP server on the harness: its settings, and the SQL and ledger seams recorded (the local SQL engine
    and the custody ledger have their own tests)."""
    asked: list[tuple[str, str | None]] = []
    harness.patch.setattr(mcp_server, "current_settings", lambda: harness.settings)
    harness.patch.setattr(mcp_server, "_query", lambda sql, max_rows: {"rows": [], "sql": sql})
    harness.patch.setattr(mcp_server, "_record", lambda config, incident_id, tool, details, outputs:
                                asked.append((tool, incident_id)))
    return asked


def test_a_scenario_over_an_incident_with_an_open_hold_is_partial_until_the_hold_closes(
        harness: Harness, tools: list[tuple[str, str | None]]) -> None:
    config = harness.settings
    early = harness.replay()
    window_end = datetime.now(UTC) + timedelta(minutes=10)
    harness.call("freeze", {"request": harness.request("fn-mcp-hold", early, window_end=window_end).to_dict()})
    result: dict[str, Any] = mcp_server.run_scenario("dns-failures", "fn-mcp-hold")
    closes_at = iso(window_end + timedelta(seconds=config.hold_grace_s))
    assert (result["partial_until"], result["note"].startswith(f"partial: the incident's hold is open until "
                                                               f"{closes_at}")) == (closes_at, True)
    assert tools == [("run_scenario", "fn-mcp-hold")]


def test_a_scenario_over_tables_without_a_frozen_incident_is_not_partial(
        harness: Harness, tools: list[tuple[str, str | None]]) -> None:
    result = mcp_server.run_scenario("dns-failures", "fn-mcp-never-frozen")
    assert result["partial_until"] is None and "note" not in result
