"""Coverage in the manifest on the real endpoint: per-segment drops from the segment index and the agent's gap
records (segments it had to evict) are reported for the frozen window."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from freezeframe.adapters import s3 as s3io
from freezeframe.contracts.keys import manifest_key, raw_segment_key
from freezeframe.contracts.models import FreezeRequest, LockSpec, Scope, SegmentRecord, from_ns, to_ns
from freezeframe.freeze import segment_index
from freezeframe.freeze.freeze import freeze

pytestmark = pytest.mark.integration
S = 1_000_000_000


def test_drops_and_gap_records_reach_the_manifest(local: Any) -> None:
    config, s3, _ = local
    t0 = to_ns(datetime.now(UTC) - timedelta(hours=3))
    records = []
    for seq, (kernel, agent) in enumerate([(7, 0), (0, 2)]):
        body = f"segment {seq}".encode()
        digest = hashlib.sha256(body).hexdigest()
        key = raw_segment_key(config.cluster, config.node_name, t0 + seq * 10 * S, t0 + (seq + 1) * 10 * S, "pcap.zst")
        version = s3io.put_segment(s3, config.raw_bucket, key, body, digest, {"sha256": digest, "seq": str(seq)})
        records.append(SegmentRecord(cluster=config.cluster, node=config.node_name, bucket=config.raw_bucket, key=key,
                                     version_id=version, start_ns=t0 + seq * 10 * S, end_ns=t0 + (seq + 1) * 10 * S,
                                     first_packet_ns=None, last_packet_ns=None, packets=10, bytes=100,
                                     stored_bytes=len(body), sha256=digest, compression="zstd", format="pcap",
                                     link_type=1, snaplen=262144, kernel_drops=kernel, agent_drops=agent, seq=seq,
                                     capture_filter="", agent_version="test"))
    segment_index.write_batch(config, s3, records)
    gap = {"schema": "freezeframe.gap/v1", "cluster": config.cluster, "node": config.node_name, "first_seq": 2,
           "last_seq": 4, "start_ns": t0 + 20 * S, "end_ns": t0 + 50 * S, "bytes": 123456, "packets": 999,
           "reason": "spool_full", "observed_ns": t0 + 60 * S}
    segment_index.write_gaps(config, s3, [gap])
    request = FreezeRequest(incident_id="it-coverage-1", source="api", title="t", severity="high",
                            window_start=from_ns(t0), window_end=from_ns(t0 + 60 * S), scope=Scope(config.cluster),
                            lock=LockSpec("COMPLIANCE", datetime.now(UTC) + timedelta(days=1)))
    freeze(config, s3, request)
    coverage = s3io.get_json(s3, config.evidence_bucket, manifest_key(request.incident_id))["coverage"]
    node = coverage[config.node_name]
    assert (node["kernel_drops"], node["agent_drops"]) == (7, 2)
    assert node["gap_records"] == [gap]
    assert node["gaps_ns"] == [[t0 + 20 * S, t0 + 60 * S]]
