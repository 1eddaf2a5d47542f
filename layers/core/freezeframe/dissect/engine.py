"""The dissection engine's entry: a node's segments in time order into every table, on the compiled core
(`freezeframe.dissect.native`) or the reference (`freezeframe.dissect.job`, in Python).

Kept apart from the job so that a caller on the compiled core (`freezeframe dissect` on local files) loads neither the
reference trackers nor the S3 job: their imports were a tenth of a CPU-second of every run.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import pyarrow as pa

from freezeframe.dissect.problems import SegmentProblems, SegmentRef

if TYPE_CHECKING:
    from freezeframe.dissect.chunks import Chunk


@dataclass(frozen=True, slots=True)
class SegmentSource:
    """A verified segment to dissect: its identity and where its (possibly zstd-compressed) bytes are."""

    ref: SegmentRef
    path: Path | None = None
    fetch: Callable[[], bytes] | None = None  # fetched when its turn comes, so one segment is in memory at a time
    opener: Callable[[], BinaryIO] | None = None  # a stream of its bytes, opened when its turn comes

    def open(self) -> BinaryIO:
        if self.opener is not None:
            return self.opener()
        if self.fetch is not None:
            return io.BytesIO(self.fetch())
        if self.path is None:
            raise ValueError(f"segment {self.ref.key} has neither a path nor a fetch function")
        return self.path.open("rb")


@dataclass(slots=True)
class EngineResult:
    """Unenriched tables of one pass over some segments, the problems found and the trackers' counters."""

    tables: dict[str, pa.Table]
    problems: SegmentProblems
    stats: dict[str, int]
    corrupt: list[dict[str, str]] = field(default_factory=list)  # segments that failed verification
    payload_segments: dict[str, int] = field(default_factory=dict)  # per TCP conn_id, for merging time chunks
    # per TCP conn_id of a warmed chunk: payload segments, RTT samples, RTT sum and jitter sum (dissect.warmup)
    extras: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)
    # Which engine made the tables: "native" (the compiled core), "python" (the reference), or "mixed" for time
    # chunks that ran on both (`mixed_engine`); the dissect status records it.
    engine: str = ""


def mixed_engine(engines: Iterable[str]) -> str:
    """The engine of a result put together from several: theirs when they agree, else "mixed"."""
    found = {engine for engine in engines if engine}
    return found.pop() if len(found) == 1 else ("mixed" if found else "")


def dissect_segments(node: str, segments: Sequence[SegmentSource], chunk: Chunk | None = None,
                     engine: str | None = None) -> EngineResult:
    """The engine: segments in time order through one decode pass into every table; TCP state carries across them.

    With ``chunk``, only packets with ``chunk.start_ns <= ts_ns < chunk.end_ns`` are fed, and framing problems
    of a segment are reported by the chunk where the segment starts (so chunks do not count them twice).
    ``engine`` is 'native' (the compiled core, dissect.native) or 'python' (the reference, dissect.job); by default
    FREEZEFRAME_DISSECT_ENGINE decides (native when the extension imports).
    """
    from freezeframe.dissect import native  # noqa: PLC0415 - native imports this module

    if (engine or native.selected()) == "native":
        result: EngineResult = native.dissect_segments(node, segments, chunk)
        result.engine = "native"
        return result
    from freezeframe.dissect import job  # noqa: PLC0415 - the reference engine, loaded only when it runs

    result = job.reference_segments(node, segments, chunk)
    result.engine = "python"
    return result


def owns_segment(chunk: Chunk | None, ref: SegmentRef) -> bool:
    """Whether ``chunk`` reports the framing problems of the segment ``ref`` (the chunk where it starts)."""
    if chunk is None:
        return True
    if ref.start_ns is None or ref.start_ns < chunk.start_ns:
        return chunk.index == 0
    return chunk.start_ns <= ref.start_ns < chunk.end_ns
