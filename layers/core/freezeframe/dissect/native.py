"""The compiled dissection core (the ``freezeframe_native`` extension, Rust, layers/native).

It does the whole per-packet path of ``engine.dissect_segments`` (capture reading, decoding, TCP analysis, connection
tracking, DNS, HTTP and TLS) and hands back Arrow record batches through the Arrow C data interface. The Python
engine stays the reference: tests/unit/dissect/test_native_engine.py asserts that both give equal tables, problems
and counters. ``FREEZEFRAME_DISSECT_ENGINE`` (config.dissect_engine) picks the engine; by default the native one
when the extension imports.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from freezeframe.capture.mapped import MappedFile
from freezeframe.contracts.errors import ConfigError, SegmentCorruptError
from freezeframe.contracts.schemas import TABLES
from freezeframe.dissect.choice import extension, selected  # noqa: F401 - native.extension, native.selected
from freezeframe.dissect.engine import EngineResult, owns_segment
from freezeframe.dissect.problems import APP_KINDS, DECODE_KINDS, ProblemRow, SegmentProblems

logger = logging.getLogger(__name__)

# Columns the core leaves out because a later stage fills them (Kubernetes enrichment); any other schema column
# it does not produce is an error, so a column added to schemas.py must be added to the core too.
LATER_COLUMNS = frozenset(("src_namespace", "src_pod", "src_workload", "dst_namespace", "dst_pod", "dst_workload"))
NATIVE_TABLES = ("connections", "dns", "http", "tls")


def to_table(name: str, exported: Any) -> pa.Table:
    """A batch from the core as a table of ``TABLES[name]``: the schema's order, types and metadata."""
    schema = TABLES[name]
    batch = pa.record_batch(exported)
    produced = set(batch.schema.names)
    unknown = produced - set(schema.names)
    if unknown:
        raise RuntimeError(f"compiled core: table {name} has columns not in schemas.py: {sorted(unknown)}")
    columns = []
    for field in schema:
        if field.name not in produced:
            if field.name not in LATER_COLUMNS:
                raise RuntimeError(f"compiled core: table {name} lacks column {field.name} of schemas.py")
            columns.append(pa.nulls(batch.num_rows, field.type))
            continue
        column = batch.column(field.name)
        if column.type != field.type:
            raise RuntimeError(f"compiled core: {name}.{field.name} is {column.type}, schemas.py says {field.type}")
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=schema)


def dissect_segments(node: str, segments: Sequence[Any], chunk: Any = None) -> Any:
    """``engine.dissect_segments`` on the compiled core; same arguments, same ``EngineResult``."""
    module = extension()
    if module is None:
        raise ConfigError("the freezeframe_native extension is not installed")
    engine = module.Engine(node) if chunk is None else module.Engine(node, chunk.start_ns, chunk.end_ns)
    warmed = chunk is not None and chunk.warmup_start_ns is not None and chunk.warmup_start_ns < chunk.start_ns
    if warmed:
        _warm_up(engine, segments, chunk.warmup_start_ns, chunk.start_ns)
    problems = SegmentProblems(node)
    corrupt = []
    for segment in segments:
        if warmed and segment.ref.end_ns is not None and segment.ref.end_ns < chunk.start_ns:
            continue  # read for the warm-up only
        try:
            opened = segment.open()
        except SegmentCorruptError as exc:
            logger.error("segment rejected", extra={"node": node, "segment": segment.ref.key, "reason": str(exc)})
            corrupt.append({"key": segment.ref.key, "version_id": segment.ref.version_id or "", "reason": str(exc)})
            continue
        before = engine.stats()
        with opened as stream:
            if isinstance(stream, MappedFile):  # read in place, no copy (capture.mapped)
                with stream.view() as view:
                    not_a_capture, read_problems = engine.feed(view)
            else:
                data = stream.read()
                not_a_capture, read_problems = engine.feed(bytes(data))
                del data  # freed before the next segment is read: one segment's bytes in memory at a time
        owns = owns_segment(chunk, segment.ref)
        if not_a_capture is not None:
            if owns:
                logger.warning("segment is not a capture", extra={"node": node, "segment": segment.ref.key,
                                                                  "reason": not_a_capture})
                problems.add_rejected(segment.ref, "not_a_capture", not_a_capture)
            continue
        if owns:
            for kind, count, first_offset, first_packet, message in read_problems:
                problems.rows.append(ProblemRow(segment.ref, "read", kind, count, first_offset, first_packet, message))
        after = engine.stats()
        problems.add_counters(segment.ref, "decode", DECODE_KINDS, before, after)
        problems.add_counters(segment.ref, "app", APP_KINDS, before, after)
    stats = dict(engine.stats())
    tables = {name: to_table(name, batch) for name, batch in engine.finish().items()}
    payload_segments = dict(engine.payload_segments()) if chunk is not None else {}
    extras: dict[str, tuple[int, int, int, int]] = {}
    if chunk is not None:
        flows = engine.chunk_flows()
        for conn_id, _, pseudo, tcp in flows:
            if tcp is not None:
                segments_, samples, _, _, total, jitter = tcp
                extras[conn_id] = (segments_, samples - (1 if pseudo else 0), total, jitter)
        if warmed:
            from freezeframe.dissect.warmup import WarmFlow, fix_rows  # noqa: PLC0415 - time chunks only

            tables["connections"] = fix_rows(tables["connections"], {
                conn_id: WarmFlow(bits, (tcp[1], tcp[2], tcp[3], tcp[4], tcp[5]) if pseudo and tcp else None)
                for conn_id, bits, pseudo, tcp in flows})
    return EngineResult({name: tables[name] for name in NATIVE_TABLES}, problems, stats, corrupt,
                        payload_segments, extras)


def _warm_up(engine: Any, segments: Sequence[Any], low: int, high: int) -> None:
    """``job._warm_up`` on the compiled core: ``[low, high)`` of the segments that overlap it, then the counts
    zeroed with the TCP state kept (dissect.warmup); problems are reported by the chunk that owns a segment."""
    for segment in segments:
        ref = segment.ref
        if ref.start_ns is not None and ref.start_ns >= high or ref.end_ns is not None and ref.end_ns < low:
            continue
        try:
            with segment.open() as stream:
                data = stream.read()
        except SegmentCorruptError:
            continue
        engine.warm_up(bytes(data), low, high)
    engine.begin_chunk()
