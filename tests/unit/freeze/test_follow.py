"""The dissection's passes while a hold is open (freezeframe.freeze.follow), and the state machine's loop that runs
them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import yaml

from freezeframe.contracts.models import ManifestEntry, iso
from freezeframe.freeze.follow import follow_up, hold_closes_at, incident_nodes, inputs_digest
from tests.unit.deploy.test_template import TEMPLATE

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def _entry(node: str, key: str, version: str = "v1", sha: str = "a" * 64) -> ManifestEntry:
    return ManifestEntry(key=key, version_id=version, sha256=sha, size=1, node=node, start_ns=1, end_ns=2, seq=1,
                         packets=1, lock_mode="COMPLIANCE", retain_until="2099-01-01T00:00:00.000Z", legal_hold=False)


def test_no_hold_means_one_pass() -> None:
    follow = follow_up(None, NOW, ["b", "a", "b"], 60, 30)
    assert (follow.again, follow.nodes, follow.partial_until) == (False, ("a", "b"), None)


def test_an_open_hold_refreshes_then_runs_a_last_pass_after_it_closes() -> None:
    closes = NOW + timedelta(minutes=5)
    early = follow_up(closes, NOW, ["a"], 60, 30)
    assert (early.again, early.wait_s, early.partial_until) == (True, 60, iso(closes))
    # Close to the end the next pass waits for the close plus the settle time, not a whole refresh.
    late = follow_up(closes, closes - timedelta(seconds=10), ["a"], 60, 30)
    assert (late.again, late.wait_s) == (True, 40)
    # Within the settle time the tables are still partial; after it the pass that ran was the last.
    assert follow_up(closes, closes + timedelta(seconds=29), ["a"], 60, 30).again is True
    final = follow_up(closes, closes + timedelta(seconds=30), ["a"], 60, 30)
    assert (final.again, final.partial_until) == (False, None)


def test_a_resolved_incident_closes_its_hold_early() -> None:
    manifest = {"hold": {"closes_at": iso(NOW + timedelta(minutes=10))}}
    assert hold_closes_at(manifest, None) == NOW + timedelta(minutes=10)
    assert hold_closes_at(manifest, NOW) == NOW
    assert hold_closes_at({"hold": None}, NOW) is None


def test_nodes_come_from_the_manifest_its_parts_and_unverified_segments() -> None:
    manifest = {"segments": [_entry("a", "k1").to_dict()], "unverified": [{"node": "c"}]}
    parts = [{"segments": [_entry("b", "k2").to_dict()]}, {"segments": [], "unverified": [{"node": "d"}]}]
    assert incident_nodes(manifest, parts) == ["a", "b", "c", "d"]


def test_the_inputs_digest_changes_with_any_new_or_different_segment() -> None:
    base = inputs_digest([_entry("a", "k1"), _entry("a", "k2")])
    assert inputs_digest([_entry("a", "k2"), _entry("a", "k1")]) == base  # order does not matter
    assert inputs_digest([_entry("a", "k1")]) != base
    assert inputs_digest([_entry("a", "k1"), _entry("a", "k2", version="v2")]) != base
    assert inputs_digest([_entry("a", "k1"), _entry("a", "k2")], [{"key": "k3", "version_id": "v"}]) != base


def test_the_state_machine_loops_back_to_the_map_while_the_hold_is_open() -> None:
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    template: dict[str, Any] = yaml.load(TEMPLATE.read_text(encoding="utf-8"), Loader=Loader)  # noqa: S506
    states = template["Resources"]["DissectionStateMachine"]["Properties"]["Definition"]["States"]
    assert "follow.$" in states["Finalize"]["ResultSelector"]
    assert states["Finalize"]["Next"] == "HoldStillOpen"
    choice = states["HoldStillOpen"]
    assert choice["Choices"] == [{"Variable": "$.finalize.follow.again", "BooleanEquals": True,
                                  "Next": "WaitForLateSegments"}]
    assert choice["Default"] == "EveryNodeDissected"
    assert states["WaitForLateSegments"] == {"Type": "Wait", "SecondsPath": "$.finalize.follow.wait_s",
                                             "Next": "NextPass"}
    assert states["NextPass"]["Parameters"] == {"incident_id.$": "$.incident_id",
                                                "nodes.$": "$.finalize.follow.nodes"}
    assert states["NextPass"]["Next"] == "PlanChunks"  # the next pass plans its (node, chunk) tasks again
