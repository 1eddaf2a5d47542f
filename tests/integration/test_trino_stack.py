"""`freezeframe query --engine trino` over the stack's evidence bucket (LocalStack, read through Trino's native S3 file
system) and over a local copy of it: both read the same on Trino and on the local engine. The session's one Trino
(the `trino` fixture) and the session's stack serve, so this costs no extra start."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from freezeframe_local.cli import main

from freezeframe.adapters import s3 as s3io
from freezeframe.contracts.config import reset_settings_cache
from freezeframe.investigate import scenarios
from freezeframe.investigate.query import connect, run
from freezeframe.investigate.trino_sql import DataLocation, TrinoEngine
from tests.fixtures.engine_compare import assert_same_answer
from tests.fixtures.engine_tables import INCIDENT, write_engine_tables
from tests.integration.conftest import stack_settings

REFUSED = ("SELECT src_ip, dst_ip, dst_port, completeness, incident_id, dt FROM freezeframe.connections "
           "WHERE conn_state = 'REJ' ORDER BY first_ts_ns")


def _query(capsys: pytest.CaptureFixture[str], *args: str) -> list[dict[str, Any]]:
    capsys.readouterr()
    assert main(["query", *args, "--json"]) == 0
    return list(json.loads(capsys.readouterr().out)["rows"])


def test_query_engine_trino_reads_the_stack_bucket_and_a_directory_like_the_local_engine(
        stack: Any, trino: TrinoEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    config = stack_settings(stack)
    s3 = s3io.client(config)
    s3io.ensure_buckets(s3, config)
    local_copy = write_engine_tables(tmp_path / "copy")
    for path in sorted([*(local_copy / "tables").rglob("*.parquet"), *(local_copy / "views").rglob("*.parquet")]):
        s3io.put_bytes(s3, config.evidence_bucket, str(path.relative_to(local_copy)), path.read_bytes(),
                       content_type="application/vnd.apache.parquet")
    for name, value in {"FREEZEFRAME_S3_ENDPOINT": str(config.s3_endpoint),
                        "FREEZEFRAME_EVIDENCE_BUCKET": config.evidence_bucket, "FREEZEFRAME_TRINO_URL": trino.url,
                        "FREEZEFRAME_STATE_DIR": str(tmp_path / "state")}.items():
        monkeypatch.setenv(name, value)
    reset_settings_cache()

    # The bucket through the CLI on both engines, and the local copy through Trino.
    from_bucket = _query(capsys, "--engine", "trino", REFUSED)
    assert from_bucket == _query(capsys, REFUSED)
    assert from_bucket == _query(capsys, "--engine", "trino", "--dir", str(local_copy), REFUSED)
    assert [(r["dst_ip"], r["incident_id"]) for r in from_bucket] == [  # by hand from the fixture, in time order
        ("10.0.9.9", INCIDENT), ("10.0.9.9", INCIDENT), ("10.0.9.10", INCIDENT), ("10.0.9.9", "inc-9")]
    # A scenario with timestamps and a join: the same answer, in the types each engine returns.
    engine = TrinoEngine(trino.url, tmp_path / "metastore")
    catalog = engine.attach(DataLocation.bucket(config.evidence_bucket, config.s3_endpoint, config.region,
                                                s3io.credentials(config)))
    for name in ("first-failing-service", "network-vs-application-latency"):
        sql = scenarios.get(name).query
        assert_same_answer(sql, engine.run(sql, catalog), run(config, sql, connect(config)))
    # Nothing of Trino's lands in the WORM bucket: only the Parquet parts and views put above.
    assert all(key.startswith(("tables/", "views/")) for key in s3io.list_keys(s3, config.evidence_bucket, ""))


def test_query_engine_trino_without_a_trino_says_how_to_get_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FREEZEFRAME_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("FREEZEFRAME_TRINO_URL", raising=False)
    reset_settings_cache()
    assert main(["query", "--engine", "trino", "--dir", str(tmp_path), "SELECT 1"]) == 2
    assert "freezeframe up --trino" in capsys.readouterr().err
