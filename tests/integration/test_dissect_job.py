"""Dissection on the real endpoint: frozen segments become a hive-partitioned connections table; a segment whose
bytes do not match its manifest entry fails loudly and never feeds the table."""

from __future__ import annotations

import io
import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from freezeframe.adapters import s3 as s3io
from freezeframe.dissect.job import dissect_node
from freezeframe.errors import SegmentCorruptError
from freezeframe.freeze import freeze
from freezeframe.keys import dissect_status_key, manifest_key
from freezeframe.models import FreezeRequest, LockSpec, Scope, from_ns
from freezeframe_agent.main import run_replay
from tests.fixtures.buses import MemoryBus

pytestmark = pytest.mark.integration
SAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "sample.pcap"


def tshark_conversations(path: Path) -> int:
    count = 0
    for proto in ("tcp", "udp"):
        out = subprocess.run(["tshark", "-r", str(path), "-q", "-z", f"conv,{proto}"], check=True,
                             capture_output=True, text=True).stdout
        count += sum(1 for line in out.splitlines() if "<->" in line)
    return count


@pytest.fixture
def frozen(local: Any) -> tuple[Any, Any, FreezeRequest]:
    config, s3, _ = local
    records = run_replay(config, SAMPLE, speedup=1000.0, s3=s3, bus=MemoryBus())
    request = FreezeRequest(incident_id="it-dissect-1", source="api", title="t", severity="high",
                            window_start=from_ns(records[0].start_ns) - timedelta(seconds=1),
                            window_end=from_ns(records[-1].end_ns) + timedelta(seconds=1),
                            scope=Scope(config.cluster), lock=LockSpec("COMPLIANCE", datetime.now(UTC)
                                                                       + timedelta(days=1)))
    freeze(config, s3, request)
    return config, s3, request


def test_frozen_segments_become_one_row_per_conversation(frozen: Any) -> None:
    config, s3, request = frozen
    report = dissect_node(config, s3, request.incident_id, config.node_name)
    key = report.parts["connections"]
    assert key.startswith(f"tables/connections/dt={request.window_start:%Y-%m-%d}/incident_id={request.incident_id}/")
    table = pq.read_table(io.BytesIO(s3io.get_bytes(s3, config.evidence_bucket, key)))
    assert table.num_rows == tshark_conversations(SAMPLE) == report.tables["connections"]
    status = s3io.get_json(s3, config.evidence_bucket, dissect_status_key(request.incident_id, config.node_name))
    assert status["state"] == "done" and status["corrupt_segments"] == []


def test_a_segment_that_does_not_match_its_manifest_hash_fails_loudly(frozen: Any) -> None:
    config, s3, request = frozen
    manifest = s3io.get_json(s3, config.evidence_bucket, manifest_key(request.incident_id))
    # A tampered manifest for another incident: the evidence bucket itself would refuse to alter the real one.
    bad = json.loads(json.dumps(manifest))
    victim = bad["segments"][1]
    victim["sha256"] = "0" * 64
    tampered_id = "it-dissect-tampered"
    s3io.put_json(s3, config.evidence_bucket, manifest_key(tampered_id), {**bad, "incident_id": tampered_id})
    with pytest.raises(SegmentCorruptError, match=victim["key"]):
        dissect_node(config, s3, tampered_id, config.node_name)
    status = s3io.get_json(s3, config.evidence_bucket, dissect_status_key(tampered_id, config.node_name))
    assert status["state"] == "failed"
    assert [c["key"] for c in status["corrupt_segments"]] == [victim["key"]]
    assert status["segments"] == len(bad["segments"]) - 1
