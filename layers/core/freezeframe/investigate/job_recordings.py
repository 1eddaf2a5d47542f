"""A recording job's segments in the raw bucket (`jobs/<job>/<cluster>/<YYYY>/<MM>/<DD>/<HH>/<node>/...`), for
`freezeframe export-pcap --job NAME` and `freezeframe dissect --job NAME` (whose tables `freezeframe query --dir`
then reads).

A job has no manifest: its segments are listed under the job's prefix and read at the version the agent uploaded
(the first, create-only one), each with the sha256 the agent put in its metadata, so `--verify` checks them as an
incident's are checked against its manifest.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from freezeframe.adapters import s3 as s3io
from freezeframe.adapters.s3 import ObjectStore
from freezeframe.contracts.config import Settings
from freezeframe.contracts.errors import NotFoundError, SegmentCorruptError
from freezeframe.contracts.keys import job_prefix, parse_job_segment_key
from freezeframe.contracts.models import ManifestEntry, iso

logger = logging.getLogger(__name__)


def job_entries(settings: Settings, s3: ObjectStore, job: str, *, start_ns: int | None = None,
                end_ns: int | None = None, nodes: Sequence[str] = ()) -> list[tuple[str, ManifestEntry]]:
    """(bucket, entry) for every segment of `job` in the settings' cluster that overlaps [start_ns, end_ns]."""
    bucket = settings.raw_bucket
    first: dict[str, s3io.ObjectVersion] = {}
    for version in s3io.list_versions(s3, bucket, job_prefix(job, settings.cluster)):
        parsed = parse_job_segment_key(version.key)
        if parsed is None or (nodes and parsed.node not in nodes):
            continue
        if (start_ns is not None and parsed.end_ns < start_ns) or (end_ns is not None and parsed.start_ns > end_ns):
            continue
        kept = first.get(version.key)
        if kept is None or version.last_modified < kept.last_modified:
            first[version.key] = version  # the agent's create-only upload; a later version is not its bytes
    entries = []
    for key, version in sorted(first.items()):
        parsed = parse_job_segment_key(key)
        assert parsed is not None
        head = s3io.head_version(s3, bucket, key, version.version_id)
        metadata = head.get("Metadata", {})
        if not metadata.get("sha256"):
            raise SegmentCorruptError(f"job segment {key} has no sha256 metadata")
        state = s3io.lock_state(head)
        entries.append((bucket, ManifestEntry(
            key=key, version_id=version.version_id, sha256=metadata["sha256"], size=version.size,
            node=parsed.node, start_ns=parsed.start_ns, end_ns=parsed.end_ns,
            seq=int(metadata["seq"]) if str(metadata.get("seq", "")).isdigit() else None,
            packets=int(metadata["packets"]) if str(metadata.get("packets", "")).isdigit() else None,
            lock_mode=str(state.mode or ""), retain_until=iso(state.retain_until) if state.retain_until else "",
            legal_hold=state.legal_hold)))
    if not entries:
        raise NotFoundError(f"no segments of recording job {job!r} in cluster {settings.cluster!r} under "
                            f"s3://{bucket}/{job_prefix(job, settings.cluster)}")
    return entries


def download(s3: ObjectStore, entries: Sequence[tuple[str, ManifestEntry]], directory: Path) -> dict[str, list[Path]]:
    """Each segment's stored bytes into `directory`, checked against its sha256; node -> files in time order."""
    import hashlib

    by_node: dict[str, list[Path]] = {}
    for bucket, entry in sorted(entries, key=lambda item: (item[1].node, item[1].start_ns)):
        body = s3io.get_bytes(s3, bucket, entry.key, entry.version_id)
        if hashlib.sha256(body).hexdigest() != entry.sha256:
            raise SegmentCorruptError(f"job segment {entry.key} (version {entry.version_id}) does not match its "
                                      f"sha256 {entry.sha256}")
        path = directory / entry.node / entry.key.rsplit("/", 1)[1]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
        by_node.setdefault(entry.node, []).append(path)
    return by_node


def dissect_job(settings: Settings, s3: ObjectStore, job: str, out: Path, *, start_ns: int | None = None,
                end_ns: int | None = None, nodes: Sequence[str] = (), progress: bool | None = None
                ) -> dict[str, Any]:
    """Dissect a job's segments, node by node, into `out/<table>/<node>.parquet` (`freezeframe query --dir out`)."""
    from freezeframe.dissect.files import dissect_files

    entries = job_entries(settings, s3, job, start_ns=start_ns, end_ns=end_ns, nodes=nodes)
    results = {}
    with tempfile.TemporaryDirectory(prefix=f"freezeframe-job-{job}-") as tmp:
        for node, paths in download(s3, entries, Path(tmp)).items():
            results[node] = dissect_files(paths, out, node=node, progress=progress).to_dict()
    logger.info("job dissected", extra={"job": job, "nodes": sorted(results), "segments": len(entries)})
    return {"job": job, "segments": len(entries), "nodes": results}
