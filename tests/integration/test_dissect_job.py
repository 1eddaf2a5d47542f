"""Dissection on the real endpoint: frozen segments become a hive-partitioned connections table; a segment whose
bytes do not match its manifest entry fails loudly and never feeds the table; a verified but damaged segment is
dissected as far as it goes and its problems land in dissect_errors; time chunks in parallel processes give the
same connections; and a real ``tcpdump -i any`` capture (LINUX_SLL2) dissects as tshark reads it."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import socket
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import zstandard

from freezeframe.adapters import s3 as s3io
from freezeframe.capture.pcapio import LINKTYPE_LINUX_SLL2, PcapReader, open_capture
from freezeframe.contracts.errors import SegmentCorruptError
from freezeframe.contracts.keys import dissect_status_key, manifest_key
from freezeframe.contracts.models import FreezeRequest, LockSpec, Scope, from_ns
from freezeframe.dissect import ConnectionTracker
from freezeframe.dissect.chunks import EXACT_COLUMNS
from freezeframe.dissect.job import dissect_node
from freezeframe.freeze.freeze import freeze
from freezeframe_agent.main import run_replay
from tests.fixtures.buses import MemoryBus
from tests.fixtures.custody import put_signed_manifest

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
    put_signed_manifest(config, s3, tampered_id, {**bad, "incident_id": tampered_id})
    with pytest.raises(SegmentCorruptError, match=victim["key"]):
        dissect_node(config, s3, tampered_id, config.node_name)
    status = s3io.get_json(s3, config.evidence_bucket, dissect_status_key(tampered_id, config.node_name))
    assert status["state"] == "failed"
    assert [c["key"] for c in status["corrupt_segments"]] == [victim["key"]]
    assert status["segments"] == len(bad["segments"]) - 1


def read_part(s3: Any, bucket: str, key: str) -> Any:
    return pq.read_table(io.BytesIO(s3io.get_bytes(s3, bucket, key)))


def test_a_damaged_but_verified_segment_is_dissected_as_far_as_it_goes(frozen: Any) -> None:
    config, s3, request = frozen
    manifest = s3io.get_json(s3, config.evidence_bucket, manifest_key(request.incident_id))
    damaged = json.loads(json.dumps(manifest))
    victim = max(damaged["segments"], key=lambda e: e["packets"])
    stored = s3io.get_bytes(s3, manifest.get("raw_bucket", config.raw_bucket), victim["key"], victim["version_id"])
    pcap = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(stored)).read()
    with io.BytesIO(pcap) as stream:
        total = sum(1 for _ in PcapReader(stream))
    # Garbage spliced into the middle and the last 10 bytes cut off: a new version of that key, which the
    # damaged manifest (of another incident) records with its true sha256, so it passes verification.
    middle = len(pcap) // 2
    broken = pcap[:middle] + b"\xde\xad\xbe\xef" * 50 + pcap[middle:-10]
    body = zstandard.ZstdCompressor().compress(broken)
    version = s3io.put_bytes(s3, manifest.get("raw_bucket", config.raw_bucket), victim["key"], body,
                             content_type="application/octet-stream")
    victim.update(version_id=version, sha256=hashlib.sha256(body).hexdigest(), size=len(body))
    damaged_id = "it-dissect-damaged"
    put_signed_manifest(config, s3, damaged_id, {**damaged, "incident_id": damaged_id})

    report = dissect_node(config, s3, damaged_id, config.node_name)
    assert report.state == "done" and report.corrupt_segments == []
    errors = read_part(s3, config.evidence_bucket, report.parts["dissect_errors"]).to_pylist()
    kinds = {row["kind"] for row in errors if row["segment"] == victim["key"] and row["stage"] == "read"}
    assert {"garbage_skipped", "truncated"} <= kinds, errors
    assert all(row["segment_version"] == version for row in errors if row["segment"] == victim["key"])
    assert report.stats["errors_read_truncated"] == 1
    # Everything but the packet hit by the garbage and the cut-off last one is still dissected.
    all_packets = sum(e["packets"] for e in manifest["segments"])
    assert all_packets - 2 <= report.stats["packets"] < all_packets
    assert total == victim["packets"]


def test_time_chunks_in_parallel_give_the_same_connections(frozen: Any) -> None:
    config, s3, request = frozen
    whole = dissect_node(config, s3, request.incident_id, config.node_name)
    expected = read_part(s3, config.evidence_bucket, whole.parts["connections"]).to_pylist()
    chunked = dissect_node(config, s3, request.incident_id, config.node_name, chunk_ns=5_000_000_000, workers=2)
    assert chunked.parts["connections"] == whole.parts["connections"]  # deterministic: the retry overwrites
    merged = read_part(s3, config.evidence_bucket, chunked.parts["connections"]).to_pylist()
    assert chunked.stats["chunks"] > 10 and chunked.stats["chunk_rows_merged"] > 0
    assert [{c: row[c] for c in EXACT_COLUMNS} for row in merged] == \
        [{c: row[c] for c in EXACT_COLUMNS} for row in expected]
    assert chunked.stats["packets"] == whole.stats["packets"]


@pytest.mark.skipif(shutil.which("tcpdump") is None or shutil.which("tshark") is None,
                    reason="tcpdump and tshark make and read the capture")
def test_a_real_any_interface_capture_is_linux_sll2(tmp_path: Path) -> None:
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    port = server.getsockname()[1]
    path = tmp_path / "any.pcap"
    sends = 10
    capture = subprocess.Popen(["tcpdump", "-i", "any", "-U", "-n", "-c", str(2 * sends), "-w", str(path),
                                "--time-stamp-precision", "nano", f"udp port {port}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(1.0)  # tcpdump needs a moment to attach before the first datagram
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for number in range(sends):
            client.sendto(b"ping %d" % number, ("127.0.0.1", port))
            _data, peer = server.recvfrom(100)
            server.sendto(b"pong", peer)
        capture.wait(timeout=10)
    finally:
        if capture.poll() is None:
            capture.kill()
            capture.wait()
        server.close()
    with path.open("rb") as stream:
        reader = open_capture(stream)
        runs = list(reader.runs())
    assert {link for link, _ in runs} == {LINKTYPE_LINUX_SLL2}
    ng = tmp_path / "any.pcapng"
    subprocess.run(["editcap", "-F", "pcapng", str(path), str(ng)], check=True)
    for capture_file in (path, ng):
        tracker = ConnectionTracker("node-a")
        with capture_file.open("rb") as stream:
            for link, packets in open_capture(stream).runs():
                tracker.feed(link, packets)
        rows = tracker.finish().to_pylist()
        out = subprocess.run(["tshark", "-n", "-r", str(capture_file), "-q", "-z", "conv,udp"], check=True,
                             capture_output=True, text=True).stdout
        assert len(rows) == sum(1 for line in out.splitlines() if "<->" in line) == 1
        assert rows[0]["packets_out"] == rows[0]["packets_in"] == sends
        assert tracker.stats.packets == tracker.stats.decoded == 2 * sends
