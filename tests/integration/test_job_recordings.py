"""A recording job's segments in LocalStack (uploaded by the agent under jobs/<name>/, locked for the job's
retention): `freezeframe export-pcap --job`, `freezeframe dissect --job` and `freezeframe query --dir` over its
tables, through the CLI as a user runs them. References: tcpdump counts the packets of the fixture, and the job's
tables must equal `freezeframe dissect` run on the fixture file itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from freezeframe.adapters import s3 as s3io
from freezeframe.contracts.config import env_overrides
from freezeframe_agent.jobs import RecordingJob
from freezeframe_agent.main import run_replay
from tests.fixtures.buses import MemoryBus

pytestmark = pytest.mark.integration
SAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "sample.pcap"


def _cli(config: Any, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **env_overrides(config)}
    return subprocess.run([sys.executable, "-m", "freezeframe_local.cli", *args], env=env, capture_output=True,
                          text=True,
                          timeout=300, check=False)


def test_job_segments_export_dissect_and_query(local: Any, tmp_path: Path) -> None:
    config, s3, _ = local
    job = RecordingJob(name="checkout-dns", capture_filter="", start=datetime.now(UTC) - timedelta(minutes=1),
                       duration=timedelta(0), daily_iterations=0, retention_days=1)
    records = run_replay(config.with_(spool_dir=tmp_path / "spool"), SAMPLE, speedup=1000.0, s3=s3, bus=MemoryBus(),
                         job=job)
    assert records and all(r.key.startswith(f"jobs/checkout-dns/{config.cluster}/") for r in records)
    head = s3io.head_version(s3, config.raw_bucket, records[0].key, records[0].version_id)
    assert head["ObjectLockMode"] == config.lock_mode  # locked at upload for the job's retention

    expected_packets = len(subprocess.run(["tcpdump", "-nn", "-r", str(SAMPLE)], capture_output=True, text=True,
                                          check=True).stdout.splitlines())
    out = tmp_path / "job.pcap"
    exported = _cli(config, "export-pcap", "--job", "checkout-dns", "-o", str(out), "--format", "pcap", "--verify",
                    "--json")
    assert exported.returncode == 0, exported.stderr
    summary = json.loads(exported.stdout)
    assert summary["packets"] == expected_packets and summary["verified_segments"] == len(records)
    assert len(subprocess.run(["tcpdump", "-nn", "-r", str(out)], capture_output=True, text=True,
                              check=True).stdout.splitlines()) == expected_packets

    tables = tmp_path / "tables"
    dissected = _cli(config, "dissect", "--job", "checkout-dns", "--out", str(tables), "--json")
    assert dissected.returncode == 0, dissected.stderr
    reference = tmp_path / "reference"
    direct = _cli(config, "dissect", str(SAMPLE), "--out", str(reference), "--node", config.node_name, "--json")
    assert direct.returncode == 0, direct.stderr
    assert json.loads(dissected.stdout)["nodes"][config.node_name]["tables"] == json.loads(direct.stdout)["tables"]
    query = "SELECT proto, count(*) AS n FROM connections GROUP BY proto ORDER BY proto"
    job_rows = _cli(config, "query", "--dir", str(tables), "--json", query)
    file_rows = _cli(config, "query", "--dir", str(reference), "--json", query)
    assert job_rows.returncode == 0, job_rows.stderr
    assert json.loads(job_rows.stdout) == json.loads(file_rows.stdout) and json.loads(job_rows.stdout)


def test_unknown_job_is_a_clear_error(local: Any, tmp_path: Path) -> None:
    config, _, _ = local
    result = _cli(config, "export-pcap", "--job", "nope", "-o", str(tmp_path / "x.pcap"))
    assert result.returncode == 2 and "no segments of recording job 'nope'" in result.stderr
    assert not (tmp_path / "x.pcap").exists()
    both = _cli(config, "dissect", str(SAMPLE), "--job", "nope", "--out", str(tmp_path / "t"))
    assert both.returncode == 2 and "not both" in both.stderr
