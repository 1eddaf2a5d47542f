"""The look-ahead on real kernel traffic (issue 13, Done when): traffic recorded by tcpdump between network
namespaces (DNS over UDP and TCP, HTTP with pipelining, TLS, lossy bulk transfers) continues through the freeze
point: its first half is uploaded before the freeze, the rest after it, locked by the segment indexer into the hold.
Once the hold closed, the incident's tables equal `freezeframe dissect` of the incident's merged `export-pcap`, table
for table, and its HTTP and DNS rows equal tshark's count of requests and queries on the same export.

Before the fix the segments after the freeze were locked but never dissected: the tables held only the first half.
The test uses only interfaces that code had too (the stack, the settings' environment variables, the documents in
S3), so on it the test fails on that: the node's dissection read the first half's segments only.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from freezeframe_local.functions import load_handler
from freezeframe_local.kafka import create_topics
from freezeframe_local.kafka_source import KafkaEventSource

from freezeframe.adapters import s3 as s3io
from freezeframe.adapters.bus import KafkaBus
from freezeframe.capture.pcapio import PcapReader, PcapWriter
from freezeframe.contracts.keys import dissect_status_key, incident_key
from freezeframe.contracts.models import FreezeRequest, LockSpec, Scope
from freezeframe.dissect.files import dissect_files
from freezeframe.intake.accept import incident_status
from freezeframe.investigate.export import ExportOptions, export_pcap
from freezeframe_agent.main import run_replay
from tests.fixtures import netns_traffic as traffic
from tests.fixtures.hold_follow import FAST_FOLLOW, after_the_hold, locked_into, with_env
from tests.fixtures.node_parts import node_table
from tests.fixtures.waiting import until
from tests.integration.test_dissect_kernel_captures import tshark_dns

pytestmark = pytest.mark.integration
GRID_NS = 10 * 1_000_000_000
TABLES = ("connections", "dns", "http", "tls")


@pytest.fixture(scope="module")
def captures(tmp_path_factory: pytest.TempPathFactory) -> Iterator[traffic.KernelCaptures]:
    if shutil.which("tshark") is None:
        pytest.skip("needs tshark")
    yield from traffic.kernel_captures(tmp_path_factory.mktemp("kernel"))


def _shifted_halves(source: Path, directory: Path, split_ns: int) -> tuple[Path, Path, int]:
    """The capture moved in time so that its middle packet lands on `split_ns`, cut there into two files."""
    with source.open("rb") as stream:
        reader = PcapReader(stream)
        link_type, packets = reader.link_type, list(reader)
    offset = split_ns - packets[len(packets) // 2].ts_ns
    paths = (directory / "before.pcap", directory / "after.pcap")
    with paths[0].open("wb") as before, paths[1].open("wb") as after:
        writers = (PcapWriter(before, link_type), PcapWriter(after, link_type))
        for packet in packets:
            ts = packet.ts_ns + offset
            writers[ts >= split_ns].write(ts, packet.data, packet.orig_len)
    return paths[0], paths[1], packets[-1].ts_ns + offset


def _tshark_http_requests(path: Path) -> int:
    out = subprocess.run(["tshark", "-n", "-2", "-r", str(path), "-Y", "http.request", "-T", "fields",
                          "-e", "http.request.method"], check=True, capture_output=True, text=True).stdout
    return sum(len(line.split(",")) for line in out.splitlines() if line.strip())


def test_kernel_traffic_through_the_look_ahead_agrees_with_its_export(
        captures: traffic.KernelCaptures, local: Any, handler_env: Any, tmp_path: Path) -> None:
    config, s3, gateway = local
    config = with_env(config.with_(segments_topic=f"ff-kernel-{uuid.uuid4().hex[:8]}", hold_grace_s=4), FAST_FOLLOW)
    handler_env(config)
    gateway.settings = config
    create_topics(config.kafka_bootstrap, [config.segments_topic])
    now_ns = int(datetime.now(UTC).timestamp() * 1e9)
    grid = (now_ns - 40 * 1_000_000_000) // GRID_NS * GRID_NS
    # The freeze point is a grid boundary (so no segment key is shared) in the middle of the traffic (about 10 s).
    before, after, last_ns = _shifted_halves(captures.server_side, tmp_path, grid + GRID_NS)
    agent = config.with_(spool_dir=tmp_path / "spool")
    bus = KafkaBus(config.kafka_bootstrap)
    try:
        first_half = run_replay(agent, before, speedup=1000.0, retime=False, s3=s3, bus=bus)
        incident = f"it-kernel-{uuid.uuid4().hex[:6]}"
        request = FreezeRequest(incident_id=incident, source="api", title="kernel", severity="high",
                                window_start=datetime.fromtimestamp(grid / 1e9, UTC),
                                window_end=datetime.now(UTC) + timedelta(seconds=8), scope=Scope(config.cluster),
                                lock=LockSpec("COMPLIANCE", datetime.now(UTC) + timedelta(days=1)))
        assert request.window_end_ns > last_ns
        s3io.put_json(s3, config.evidence_bucket, incident_key(incident),
                      {"incident_id": incident, "state": "accepted", "request": request.to_dict()})
        gateway.invoke_async("freeze", {"request": request.to_dict()})
        until(lambda: incident_status(config, s3, incident)["state"] != "accepted", 60, "the freeze")
        gateway.wait_idle(60)  # the first pass
        source = KafkaEventSource(config.kafka_bootstrap, config.segments_topic, f"indexer-{uuid.uuid4().hex[:6]}",
                                  load_handler(config, "segment_indexer"), "freezeframe-segment-indexer",
                                  retry_backoff_s=0.5).start()
        try:
            second_half = run_replay(agent, after, speedup=1000.0, retime=False, s3=s3, bus=bus)
            assert first_half and second_half
            until(lambda: locked_into(config, s3, incident, second_half), 60, "the late segments locked", poll_s=0.5)
            after_the_hold(config, s3, gateway, incident,
                           request.window_end + timedelta(seconds=config.hold_grace_s))
        finally:
            source.stop()
    finally:
        bus.close()

    status = s3io.get_json(s3, config.evidence_bucket, dissect_status_key(incident, config.node_name))
    assert status["segments"] == len(first_half) + len(second_half)
    incident_rows = {table: node_table(s3, config.evidence_bucket, status, table).num_rows for table in TABLES}
    export = tmp_path / "incident.pcap"
    export_pcap(config, s3, incident, export, ExportOptions(fmt="pcap", verify=True, progress=False))
    offline = dissect_files([export], tmp_path / "offline", node=config.node_name, progress=False)
    assert incident_rows == {table: offline.tables[table] for table in TABLES}
    assert incident_rows["http"] == _tshark_http_requests(export) > 0
    assert incident_rows["dns"] == sum(1 for m in tshark_dns(export) if not m.response) > 0
