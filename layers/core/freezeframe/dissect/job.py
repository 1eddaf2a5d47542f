"""A dissection job: one node's frozen segments of one incident, in time order, into Parquet parts.

Every segment's stored bytes are checked against the manifest's sha256 before a single packet is read; a
mismatch fails that segment loudly (recorded in the job status and raised), and never feeds the tables.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

from freezeframe.adapters import s3 as s3io
from freezeframe.config import Settings
from freezeframe.dissect.apps import AppTracker
from freezeframe.dissect.connections import ConnectionTracker
from freezeframe.dissect.enrich import IpTimeline, enrich
from freezeframe.errors import CaptureFormatError, SegmentCorruptError
from freezeframe.holds import manifest_parts
from freezeframe.keys import dissect_status_key, manifest_key, table_part_key
from freezeframe.manifest import entries_of
from freezeframe.models import ManifestEntry, iso
from freezeframe.pcapio import PcapReader

logger = logging.getLogger(__name__)
STATUS_SCHEMA = "freezeframe.dissect-status/v1"


@dataclass(slots=True)
class DissectReport:
    incident_id: str
    node: str
    segments: int = 0
    tables: dict[str, int] = field(default_factory=dict)
    parts: dict[str, str] = field(default_factory=dict)
    corrupt_segments: list[dict[str, str]] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)

    @property
    def state(self) -> str:
        return "failed" if self.corrupt_segments else "done"

    def to_dict(self) -> dict[str, Any]:
        return {"schema": STATUS_SCHEMA, "incident_id": self.incident_id, "node": self.node, "state": self.state,
                "segments": self.segments, "tables": self.tables, "parts": self.parts,
                "corrupt_segments": self.corrupt_segments, "stats": self.stats, "finished_at": iso(datetime.now(UTC))}


def verified_segment_bytes(stored: bytes, entry: ManifestEntry) -> bytes:
    """The decompressed pcap of a segment whose stored bytes hash to the manifest's sha256."""
    actual = hashlib.sha256(stored).hexdigest()
    if actual != entry.sha256:
        raise SegmentCorruptError(f"segment {entry.key} version {entry.version_id}: sha256 {actual} does not match "
                                  f"the manifest's {entry.sha256}")
    if not entry.key.endswith(".zst"):
        return stored
    try:
        return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(stored)).read()
    except zstandard.ZstdError as exc:
        raise SegmentCorruptError(f"segment {entry.key}: zstd stream is corrupt: {exc}") from exc


def dissect_node(settings: Settings, s3: Any, incident_id: str, node: str) -> DissectReport:
    manifest = s3io.get_json(s3, settings.evidence_bucket, manifest_key(incident_id))
    raw_bucket = manifest.get("raw_bucket", settings.raw_bucket)
    window_start_ns = int(datetime.fromisoformat(manifest["request"]["window_start"].replace("Z", "+00:00"))
                          .timestamp() * 1e9)
    # Late segments locked under the incident's hold arrive as manifest parts; a segment in both counts once.
    late = [e for part in manifest_parts(settings, s3, incident_id) for e in entries_of(part)]
    unique = {(e.key, e.version_id): e for e in [*entries_of(manifest), *late] if e.node == node}
    entries = sorted(unique.values(), key=lambda e: (e.start_ns, e.key))
    report = DissectReport(incident_id, node)
    app = AppTracker(node)
    tracker = ConnectionTracker(node, app)  # one decode pass feeds connections, dns, http and tls
    for entry in entries:
        stored = s3io.get_bytes(s3, raw_bucket, entry.key, entry.version_id)
        try:
            pcap = verified_segment_bytes(stored, entry)
            reader = PcapReader(io.BytesIO(pcap))
        except (SegmentCorruptError, CaptureFormatError) as exc:
            logger.error("segment rejected", extra={"incident_id": incident_id, "node": node, "segment": entry.key,
                                                    "reason": str(exc)})
            report.corrupt_segments.append({"key": entry.key, "version_id": entry.version_id, "reason": str(exc)})
            continue
        tracker.feed(reader.link_type, reader)
        report.stats["truncated_records"] = report.stats.get("truncated_records", 0) + reader.truncated
        report.segments += 1
    timeline = IpTimeline.from_records(context_records(s3, manifest))
    tables = {name: enrich(table, timeline)
              for name, table in {"connections": tracker.finish(), **tracker.app_tables()}.items()}
    report.stats.update(tracker.stats.as_dict())
    report.stats.update(app.stats.as_dict())
    for name, table in tables.items():
        key = table_part_key(name, window_start_ns, incident_id, node)
        s3io.put_bytes(s3, settings.evidence_bucket, key, parquet_bytes(table),
                       content_type="application/vnd.apache.parquet")
        report.tables[name] = table.num_rows
        report.parts[name] = key
    s3io.put_json(s3, settings.evidence_bucket, dissect_status_key(incident_id, node), report.to_dict())
    if report.corrupt_segments:
        raise SegmentCorruptError(f"incident {incident_id} node {node}: {len(report.corrupt_segments)} segment(s) "
                                  f"failed verification: {', '.join(c['key'] for c in report.corrupt_segments)}")
    return report


def context_records(s3: Any, manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The incident's preserved Kubernetes context records (pod IPs and events), read from their frozen snapshots."""
    records = []
    for entry in manifest.get("k8s_context") or []:
        body = s3io.get_bytes(s3, entry["bucket"], entry["key"], entry["version_id"])
        records += [json.loads(line) for line in body.decode().splitlines() if line.strip()]
    return records


def parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()
