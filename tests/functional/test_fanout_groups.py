"""The fan-out's merge split into groups of chunks (dissect.fanout: merge-connections, merge-apps per group, merge)
writes the same node tables as the merge in one group, on the sample capture cut into 10 s chunks: every
connections, dns, http and tls row of the node (its part plus its chunk parts less the moved rows, as the views
read them)."""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest

from freezeframe.adapters import s3 as s3io
from freezeframe.contracts.keys import dissect_status_key
from freezeframe.dissect import fanout
from freezeframe.dissect.chunks import sort_rows
from tests.fixtures.node_parts import node_table
from tests.functional.test_handlers import INCIDENT, frozen  # noqa: F401 - the fixture

TABLES = ("connections", "dns", "http", "tls")


def _merged_tables(harness: Any, config: Any, node: str) -> tuple[dict[str, list[dict[str, Any]]], dict[str, Any]]:
    groups = fanout.merge_connections_step(config, harness.store, INCIDENT, node)["groups"]
    for group in groups:
        fanout.merge_apps_step(config, harness.store, INCIDENT, node, group)
    report = fanout.merge_node(config, harness.store, INCIDENT, node)
    assert report.state == "done"
    status = s3io.get_json(harness.store, config.evidence_bucket, dissect_status_key(INCIDENT, node))
    tables = {name: sort_rows(name, node_table(harness.store, config.evidence_bucket, status, name)).to_pylist()
              for name in TABLES}
    return tables, status


def test_the_merge_in_groups_of_one_chunk_writes_the_same_node_tables_as_one_group(
        frozen: Any, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811 - the fixture
    harness, _ = frozen
    config = harness.settings.with_(dissect_chunk_s=10)
    node = config.node_name
    plan = fanout.plan_dissection(config, harness.store, INCIDENT, [node])
    items = fanout.plan_items(config, harness.store, plan)
    assert len(items) >= 5
    for item in items:
        fanout.dissect_chunk(config, harness.store, item)
    monkeypatch.setattr(fanout, "GROUP_ROWS", 10**12)
    whole, status = _merged_tables(harness, config, node)
    assert status["stats"]["merge_groups"] == 1
    # Each chunk task records its engine; the node's status records theirs (the default: the compiled core if any).
    assert status["engine"] == ("native" if importlib.util.find_spec("freezeframe_native") else "python")
    assert status["stats"]["chunk_rows_merged"] > 0  # connections do cross the chunk edges
    assert whole["dns"] and whole["connections"]
    # The same pass again (its status withdrawn), every chunk its own group.
    harness.store.delete_object(Bucket=config.evidence_bucket, Key=dissect_status_key(INCIDENT, node))
    monkeypatch.setattr(fanout, "GROUP_ROWS", 1)
    grouped, status = _merged_tables(harness, config, node)
    assert status["stats"]["merge_groups"] == len(items)
    for name in TABLES:
        assert grouped[name] == whole[name], name
