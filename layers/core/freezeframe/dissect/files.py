"""``freezeframe dissect PCAP... --out DIR``: the dissection engine on local capture files.

The files are taken as one node's segments: ordered by their first packet's time (a file that is not a capture
goes last and is reported in ``dissect_errors``), dissected in one pass with TCP state carried from file to file,
exactly as a dissection job does with an incident's frozen segments. Each file is mapped read-only and hashed (SHA-256)
when its turn comes, the engine reading the same bytes (`freezeframe.capture.mapped`).

Output, all or nothing, in the evidence bucket's layout (`keys.table_part_key`), so a local directory and the bucket
read the same on every engine: ``DIR/tables/<table>/dt=<day>/incident_id=<id>/<node>.parquet`` for connections, dns,
http, tls and dissect_errors (the day of the first packet; the incident ``local`` unless one is named), plus
``DIR/incidents/<id>/dissect/<node>.json`` (inputs with their sizes and hashes, rows per table, counters). Then the
incident's views are rewritten from every node's parts in DIR (``DIR/views/<table>/dt=<day>/incident_id=<id>/
incident.parquet``, `freezeframe.dissect.views`): dissect each node's captures with its ``--node`` into the same DIR and
the views hold one row per conversation across them, which ``freezeframe query --dir DIR`` reads. Each file
is written under a temporary name and renamed into place once every table is built, so a failed run leaves the
previous output (or none) and a re-run overwrites instead of adding files.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import struct
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import pyarrow as pa

from freezeframe.capture.mapped import MappedFile
from freezeframe.capture.pcapio import open_capture
from freezeframe.contracts.errors import CaptureFormatError, FreezeframeError
from freezeframe.contracts.keys import check_name, dissect_status_key, table_part_key
from freezeframe.contracts.models import iso
from freezeframe.dissect.compact import parquet_bytes
from freezeframe.dissect.crosslayer import CLUSTER_PART, cluster_tables, node_tables
from freezeframe.dissect.engine import EngineResult, SegmentSource, dissect_segments
from freezeframe.dissect.enrich import IpTimeline, enrich
from freezeframe.dissect.problems import SegmentRef
from freezeframe.dissect.views import write_local_views

if TYPE_CHECKING:
    from freezeframe.freeze.node_state import NodeStateDocument

SUMMARY_SCHEMA = "freezeframe.dissect-files/v1"
LOCAL_INCIDENT = "local"  # the incident id of tables dissected from local files when none is named


class DissectInputError(FreezeframeError):
    """A capture file to dissect cannot be read, or the output directory cannot be used."""


@dataclass(slots=True)
class InputFile:
    path: str
    size: int
    sha256: str = ""
    first_ts_ns: int | None = None


@dataclass(slots=True)
class FilesResult:
    node: str
    out: str
    inputs: list[InputFile] = field(default_factory=list)
    tables: dict[str, int] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    stats: dict[str, int] = field(default_factory=dict)
    views: dict[str, str] = field(default_factory=dict)  # table -> the incident's view file, which SQL reads
    engine: str = ""  # which engine made the tables (EngineResult.engine)

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SUMMARY_SCHEMA, "node": self.node, "out": self.out,
                "inputs": [{"path": i.path, "size": i.size, "sha256": i.sha256, "first_ts_ns": i.first_ts_ns}
                           for i in self.inputs],
                "tables": self.tables, "files": self.files, "stats": self.stats, "views": self.views,
                "engine": self.engine,
                "finished_at": iso(datetime.now(UTC))}


def first_timestamp(path: Path) -> int | None:
    """The time of the file's first packet, or None when it has none (or is not a capture).

    Read from the first record batch of one record (a pcap walk of ``runs()`` judges its first MiB of records:
    10 ms a segment); the reader yields the same first packet whatever the batch size."""
    try:
        with path.open("rb") as stream:
            for batch in open_capture(stream).record_batches(max_bytes=1):
                if batch.ts_ns is not None:
                    return batch.ts_ns[0]
                sec, frac = struct.unpack_from(batch.byte_order + "II", batch.buf, batch.starts[0])
                return sec * 1_000_000_000 + frac * (1 if batch.nanosecond else 1000)
    except CaptureFormatError:
        return None
    return None


def load_k8s_records(path: Path) -> list[dict[str, Any]]:
    """``freezeframe.k8s`` records (JSON lines, as the k8s indexer writes them) for enrichment."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise DissectInputError(f"cannot read the Kubernetes context {path}: {exc.strerror}") from exc
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DissectInputError(f"{path}:{number}: not a JSON record: {exc.msg}") from exc
        if not isinstance(record, dict):
            raise DissectInputError(f"{path}:{number}: a record must be a JSON object")
        records.append(record)
    return records


def time_span(path: Path) -> tuple[int, int] | None:
    """The times of the file's first and last packets (one quick pass over its record headers), or None."""
    import numpy as np

    low: int | None = None
    high: int | None = None
    try:
        with path.open("rb") as stream:
            for batch in open_capture(stream).record_batches():
                if batch.ts_ns is not None:
                    times = np.array(batch.ts_ns, dtype=np.int64)
                else:
                    starts = np.array(batch.starts, dtype=np.int64)
                    words = np.ndarray((max(len(batch.buf) - 3, 0),), dtype=batch.byte_order + "u4", buffer=batch.buf,
                                       strides=(1,))
                    times = (words[starts].astype(np.int64) * 1_000_000_000
                             + words[starts + 4].astype(np.int64) * (1 if batch.nanosecond else 1000))
                if len(times):
                    low = int(times.min()) if low is None else min(low, int(times.min()))
                    high = int(times.max()) if high is None else max(high, int(times.max()))
    except CaptureFormatError:
        return None
    return None if low is None or high is None else (low, high)


def _chunked(node: str, ordered: list[tuple[InputFile, Path]], chunk_s: float, warmup_s: float,
             workers: int | None) -> EngineResult:
    """The files as one node's segments, in planned time chunks dissected by a process pool, merged."""
    # The chunked path's modules (the planner, the process pool, the merge) are loaded only when it runs.
    from freezeframe.dissect.chunks import Chunk  # noqa: PLC0415
    from freezeframe.dissect.job import dissect_chunked  # noqa: PLC0415
    from freezeframe.dissect.plan import SegmentSpan, plan_node  # noqa: PLC0415

    spans = []
    sources = []
    for info, path in ordered:
        span = time_span(path)
        low, high = span if span is not None else (None, None)
        sources.append(SegmentSource(SegmentRef(str(path), None, low, high), path=path))
        if span is not None:
            spans.append(SegmentSpan(str(path), span[0], span[1], info.size))
        info.sha256 = _file_sha256(path)
    planned = plan_node(node, spans, chunk_ns=max(int(chunk_s * 1e9), 1), warmup_ns=int(warmup_s * 1e9))
    if not planned:  # no packet in any file: one pass reports what is wrong with them
        return dissect_segments(node, sources)
    chunks = [Chunk(c.index, c.start_ns, c.end_ns, None if c.open_start else c.warmup_start_ns) for c in planned]
    return dissect_chunked(node, sources, chunks, workers)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while block := stream.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def dissect_files(paths: list[Path], out: Path, node: str = "local", k8s: Path | None = None,
                  progress: bool | None = None, incident_id: str = LOCAL_INCIDENT, chunk_s: float | None = None,
                  warmup_s: float = 10.0, workers: int | None = None,
                  node_state: Path | None = None) -> FilesResult:
    """Dissect ``paths`` as one node's segments into Parquet under ``out``; see the module docstring. ``k8s``:
    Kubernetes context records (JSON lines); ``node_state``: node-state documents (JSON lines, one per period).

    With ``chunk_s``, the files are cut into time chunks of that length (``dissect.plan``), dissected in a process
    pool of ``workers`` with a TCP warm-up of ``warmup_s`` each (``dissect.warmup``) and merged (``dissect.chunks``).
    """
    if chunk_s is not None and chunk_s <= 0:
        raise DissectInputError(f"--chunk-seconds must be positive, got {chunk_s}")
    check_name("node", node)
    check_name("incident_id", incident_id)
    if not paths:
        raise DissectInputError("no capture files given")
    missing = [str(path) for path in paths if not path.is_file() or not os.access(path, os.R_OK)]
    if missing:
        raise DissectInputError(f"not a readable file: {', '.join(missing)}")
    if out.exists() and not out.is_dir():
        raise DissectInputError(f"--out {out} exists and is not a directory")
    records = load_k8s_records(k8s) if k8s is not None else []
    inputs = [InputFile(str(path), path.stat().st_size, first_ts_ns=first_timestamp(path)) for path in paths]
    ordered = sorted(zip(inputs, paths, strict=True),
                     key=lambda pair: (pair[0].first_ts_ns is None, pair[0].first_ts_ns or 0, pair[0].path))
    show = sys.stderr.isatty() if progress is None else progress
    bar = _progress_bar(sum(i.size for i in inputs), node) if show else None
    streams: list[MappedFile] = []

    def opener(path: Path) -> BinaryIO:
        stream = MappedFile(path, bar.update if bar is not None else None)
        streams.append(stream)
        return stream  # type: ignore[return-value]  # a read-only binary stream

    if chunk_s is not None:
        if bar is not None:
            bar.close()
        result = _chunked(node, ordered, chunk_s, warmup_s, workers)
    else:
        sources = [SegmentSource(SegmentRef(str(path), None, info.first_ts_ns, None),
                                 opener=functools.partial(opener, path)) for info, path in ordered]
        try:
            result = dissect_segments(node, sources)
        finally:
            if bar is not None:
                bar.close()
        for (info, _path), stream in zip(ordered, streams, strict=True):
            info.sha256 = stream.sha256.hexdigest()
    timeline = IpTimeline.from_records(records)
    tables = {name: enrich(table, timeline) for name, table in result.tables.items()}
    tables["dissect_errors"] = result.problems.table()
    tables.update(node_tables(tables["connections"], records, load_node_state(node_state) if node_state else [],
                              timeline))
    cluster = cluster_tables(records)
    summary = FilesResult(node, str(out), [info for info, _path in ordered])
    summary.stats = {**result.stats, **result.problems.totals()}
    summary.engine = result.engine
    staged: list[tuple[Path, Path]] = []
    fresh: dict[str, pa.Table] = {}
    encoded: dict[str, bytes] = {}
    first_ns = min((info.first_ts_ns for info in inputs if info.first_ts_ns is not None), default=None)
    day_ns = first_ns if first_ns is not None else time.time_ns()
    try:
        for name, table in [*tables.items(), *cluster.items()]:
            key = table_part_key(name, day_ns, incident_id, CLUSTER_PART if name in cluster else node)
            target = out / key
            encoded[key] = parquet_bytes(table)
            staged.append((_stage(target, encoded[key]), target))
            fresh[key] = table
            summary.tables[name] = table.num_rows
            summary.files[name] = str(target)
        status = out / dissect_status_key(incident_id, node)
        staged.append((_stage(status, json.dumps(summary.to_dict(), indent=2).encode()), status))
    except OSError as exc:
        for temporary, _target in staged:
            temporary.unlink(missing_ok=True)
        raise DissectInputError(f"cannot write under {out}: {exc.strerror}") from exc
    for temporary, target in staged:
        os.replace(temporary, target)
    # The incident's views over every node dissected into `out` so far (one row per conversation across nodes).
    for name, path in write_local_views(out, incident_id, fresh=fresh, encoded=encoded).items():
        summary.views[name] = str(path)
    return summary


def load_node_state(path: Path) -> list[NodeStateDocument]:
    """Node-state documents, one JSON object per line (a malformed one is a clear error)."""
    from freezeframe.freeze.node_state import NodeStateDocument  # noqa: PLC0415 - only with --node-state

    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DissectInputError(f"cannot read node-state file {path}: {exc.strerror}") from exc
    documents = []
    for number, line in enumerate(lines, 1):
        if line.strip():
            try:
                documents.append(NodeStateDocument.decode(line.encode()))
            except FreezeframeError as exc:
                raise DissectInputError(f"{path}:{number}: {exc}") from exc
    return documents


def _progress_bar(total: int, node: str) -> Any:
    """A progress bar of the bytes read, on stderr. tqdm is imported only when a bar is shown: without a terminal
    (a pipeline, CI, the bench) its import was 15-25 ms of the run for a bar nobody sees."""
    from tqdm import tqdm  # noqa: PLC0415 - only an interactive run needs it

    return tqdm(total=total, unit="B", unit_scale=True, desc=f"dissect {node}", file=sys.stderr, leave=False)


def _stage(target: Path, body: bytes) -> Path:
    """``body`` written next to ``target`` under a temporary name (renamed once every file is written)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.partial-{os.getpid()}")
    temporary.write_bytes(body)
    return temporary
