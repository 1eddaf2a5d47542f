"""The walking skeleton end to end on the real stack of `freezeframe up` (Apache Kafka + LocalStack S3 + the gateway
process): agent replay -> segment in S3 + record on Kafka -> Alertmanager webhook -> lock in place -> Parquet ->
`freezeframe query` rows, checked against tshark on the same capture."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from freezeframe.adapters import s3 as s3io
from freezeframe.adapters.bus import KafkaBus
from freezeframe.contracts.config import Settings
from freezeframe.contracts.keys import dissect_status_key, manifest_key
from freezeframe.contracts.models import iso
from freezeframe_agent.main import run_replay

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "tests" / "fixtures" / "sample.pcap"
CLI = [sys.executable, "-m", "freezeframe_local.cli"]


def tshark_conversations(path: Path) -> dict[str, int]:
    counts = {}
    for proto in ("tcp", "udp"):
        out = subprocess.run(["tshark", "-r", str(path), "-q", "-z", f"conv,{proto}"], check=True,
                             capture_output=True, text=True).stdout
        counts[proto] = sum(1 for line in out.splitlines() if "<->" in line)
    return counts


def tshark_refused(path: Path) -> int:
    """TCP streams whose final completeness is SYN+RST (33) or SYN+ACK+RST (37): connects answered by a reset."""
    out = subprocess.run(["tshark", "-2", "-r", str(path), "-Y", "tcp", "-T", "fields", "-e", "tcp.stream", "-e",
                          "tcp.completeness"], check=True, capture_output=True, text=True).stdout
    final: dict[str, int] = {}
    for line in out.splitlines():
        stream, _, value = line.partition("\t")
        if value:
            final[stream] = int(value)
    return sum(1 for v in final.values() if v in (33, 37))


def post(url: str, body: dict[str, Any], token: str) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",  # noqa: S310
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:  # noqa: S310 - the stack's loopback URL
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def test_packets_to_sql_through_kafka_and_a_worm_endpoint(stack: Any, tmp_path: Path, event: Any) -> None:
    suffix = uuid.uuid4().hex[:8]
    agent = Settings(cluster=f"e2e-{suffix}", node_name=f"node-{suffix}", s3_endpoint=stack.s3_endpoint,
                     kafka_bootstrap=stack.kafka_bootstrap, spool_dir=tmp_path / "spool")
    s3 = s3io.client(agent)
    bus = KafkaBus(stack.kafka_bootstrap)

    # 1. agent: replay as if live -> segments in the raw bucket + records on freezeframe.segments
    records = run_replay(agent, SAMPLE, speedup=100.0, s3=s3, bus=bus)
    on_kafka = {r.value["key"]: r.value for r in bus.read(agent.segments_topic, timeout_s=10)
                if r.value["node"] == agent.node_name}
    bus.close()
    assert records and set(on_kafka) == {r.key for r in records}

    # 2. an Alertmanager v4 webhook through the gateway process (Function URL event, bearer token)
    token = Path(stack.token_file).read_text().strip()
    payload = json.loads(event("webhook", "alertmanager_firing")["body"])
    alert = payload["alerts"][0]
    alert["labels"].update(cluster=agent.cluster, node=agent.node_name)
    alert["startsAt"], alert["fingerprint"] = iso(datetime.now(UTC)), suffix
    status, bad = post(f"{stack.gateway_url}/v1/alerts/alertmanager", payload, "not-the-token")
    assert status == 401 and bad == {"error": "unauthorized"}, (status, bad)
    status, reply = post(f"{stack.gateway_url}/v1/alerts/alertmanager", payload, token)
    assert status == 202, reply
    incident = reply["accepted"][0]

    # 3. freeze and dissect run asynchronously in the gateway; wait for the node's dissection status
    deadline = time.monotonic() + 90
    report = None
    while time.monotonic() < deadline and report is None:
        try:
            report = s3io.get_json(s3, agent.evidence_bucket, dissect_status_key(incident, agent.node_name))
        except s3io.NotFoundError:
            time.sleep(0.5)
    assert report is not None, "dissection did not finish within 90 s"
    assert report["state"] == "done"

    # 4. chain of custody: every Kafka record is in the manifest with the same version and hash, locked in place
    manifest = s3io.get_json(s3, agent.evidence_bucket, manifest_key(incident))
    assert {(s["key"], s["version_id"], s["sha256"]) for s in manifest["segments"]} == {
        (k, v["version_id"], v["sha256"]) for k, v in on_kafka.items()}
    for segment in manifest["segments"]:
        head = s3.head_object(Bucket=agent.raw_bucket, Key=segment["key"], VersionId=segment["version_id"])
        assert head["ObjectLockMode"] == "COMPLIANCE"
    victim = manifest["segments"][0]
    with pytest.raises(ClientError) as refused:
        s3.delete_object(Bucket=agent.raw_bucket, Key=victim["key"], VersionId=victim["version_id"])
    assert refused.value.response["Error"]["Code"] == "AccessDenied"

    # 5. SQL through the CLI, against tshark's reading of the same capture
    env = {**os.environ, "FREEZEFRAME_STATE_DIR": str(Path(stack.workdir).parent)}
    sql = (f"SELECT proto, count(*) AS n, sum(packets_out + packets_in) AS packets FROM freezeframe.connections "
           f"WHERE incident_id = '{incident}' GROUP BY proto ORDER BY proto")
    out = subprocess.run([*CLI, "query", "--json", sql], check=True, capture_output=True, text=True, env=env)
    rows = {r["proto"]: r for r in json.loads(out.stdout)["rows"]}
    expected = tshark_conversations(SAMPLE)
    assert {p: r["n"] for p, r in rows.items()} == expected
    assert sum(r["packets"] for r in rows.values()) == sum(r.packets for r in records)
    refused_sql = (f"SELECT count(*) AS n FROM connections WHERE incident_id = '{incident}' "
                   f"AND completeness IN (33, 37)")
    out = subprocess.run([*CLI, "query", "--json", refused_sql], check=True, capture_output=True, text=True, env=env)
    assert json.loads(out.stdout)["rows"] == [{"n": tshark_refused(SAMPLE)}]
    table = subprocess.run([*CLI, "query", sql], check=True, capture_output=True, text=True, env=env).stdout
    assert "| proto |" in table and f"({len(expected)} rows)" in table

    # 6. chain of custody from the command line: every hash and lock verifies
    verified = subprocess.run([*CLI, "verify", "--json", incident], capture_output=True, text=True, env=env)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert json.loads(verified.stdout)["ok"] is True


def test_demo_json_on_the_embedded_default(tmp_path: Path) -> None:
    out = subprocess.run([*CLI, "demo", "--json"], check=True, capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(result) >= {"incident_id", "segments", "locked", "tables", "queries", "seconds"}
    assert isinstance(result["incident_id"], str) and result["segments"] > 0
    assert result["locked"] == result["segments"]
    assert result["delete_refused"] is True
    assert result["tables"]["connections"] == sum(tshark_conversations(SAMPLE).values())
    assert 2 <= len(result["queries"]) <= 3 and all(isinstance(q["rows"], list) for q in result["queries"])
    assert result["seconds"] < 60


def test_demo_on_real_kafka_and_the_worm_endpoint(stack: Any, tmp_path: Path) -> None:
    out = subprocess.run([*CLI, "demo", "--json", "--kafka", stack.kafka_bootstrap, "--s3-endpoint",
                          stack.s3_endpoint], check=True, capture_output=True, text=True, timeout=180, cwd=tmp_path)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["locked"] == result["segments"] > 0
    assert result["published"] == result["segments"]
    assert result["delete_refused"] is True
