"""`freezeframe up --trino` and `freezeframe query --engine trino`: the stack's evidence bucket (LocalStack, through
Trino's native S3 file system) and a local copy of it read the same on Trino and on the local engine; `down` stops
Trino with the rest."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from freezeframe.adapters import s3 as s3io
from freezeframe.cli import main
from freezeframe.config import reset_settings_cache, settings
from freezeframe.local.kafka import process_running
from freezeframe.local.stack import apply_state, load_state
from freezeframe.query import connect, run
from freezeframe.trino_sql import DataLocation, TrinoEngine
from tests.fixtures.engine_compare import assert_same_answer
from tests.fixtures.engine_tables import INCIDENT, write_engine_tables

REPO = Path(__file__).resolve().parents[2]
REFUSED = ("SELECT src_ip, dst_ip, dst_port, completeness, incident_id, dt FROM freezeframe.connections "
           "WHERE conn_state = 'REJ' ORDER BY first_ts_ns")


def _query(capsys: pytest.CaptureFixture[str], *args: str) -> list[dict[str, Any]]:
    capsys.readouterr()
    assert main(["query", *args, "--json"]) == 0
    return list(json.loads(capsys.readouterr().out)["rows"])


def test_up_trino_queries_the_stack_bucket_and_a_directory_like_the_local_engine(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FREEZEFRAME_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("FREEZEFRAME_FUNCTIONS_DIR", str(REPO / "functions"))
    monkeypatch.setenv("FREEZEFRAME_EVIDENCE_BUCKET", f"ff-evidence-{uuid.uuid4().hex[:10]}")
    monkeypatch.setenv("FREEZEFRAME_RAW_BUCKET", f"ff-raw-{uuid.uuid4().hex[:10]}")
    monkeypatch.setenv("FREEZEFRAME_LOCK_RETAIN_DAYS", "1")
    reset_settings_cache()
    assert main(["up", "--trino"]) == 0
    state = load_state(settings())
    try:
        assert state is not None and state.trino_url and state.trino_pid
        assert "trino     http://127.0.0.1:" in capsys.readouterr().out
        config = apply_state(settings(), state)
        s3 = s3io.client(config)
        local_copy = write_engine_tables(tmp_path / "copy")
        for path in sorted((local_copy / "tables").rglob("*.parquet")):
            s3io.put_bytes(s3, config.evidence_bucket, str(path.relative_to(local_copy)), path.read_bytes(),
                           content_type="application/vnd.apache.parquet")

        # The bucket, through the CLI on both engines, and the directory through Trino.
        from_bucket = _query(capsys, "--engine", "trino", REFUSED)
        assert from_bucket == _query(capsys, REFUSED)
        assert from_bucket == _query(capsys, "--engine", "trino", "--dir", str(local_copy), REFUSED)
        assert {(r["dst_ip"], r["incident_id"]) for r in from_bucket} == {
            ("10.0.9.9", INCIDENT), ("10.0.9.10", INCIDENT), ("10.0.9.9", "inc-9")}
        # A scenario with timestamps: the same answer in the types each engine returns.
        engine = TrinoEngine(str(state.trino_url), Path(state.workdir) / "trino" / "metastore")
        catalog = engine.attach(DataLocation.bucket(config.evidence_bucket, config.s3_endpoint, config.region,
                                                    s3io.credentials(config)))
        from freezeframe import scenarios

        sql = scenarios.get("first-failing-service").query
        assert_same_answer(sql, engine.run(sql, catalog), run(config, sql, connect(config)))
        # Nothing of Trino's lands in the WORM bucket: only the Parquet parts put above.
        assert all(key.startswith("tables/") for key in s3io.list_keys(s3, config.evidence_bucket, ""))
    finally:
        assert main(["down"]) == 0
        reset_settings_cache()
    assert not process_running(int(state.trino_pid))
