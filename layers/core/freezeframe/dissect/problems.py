"""Problems found while dissecting, counted per segment into the ``dissect_errors`` table and the job's stats.

Damage never stops a dissection: the reader (pcapio) resynchronises after a corrupt record, the decoders return
``Skip`` values and the protocol parsers count malformed messages. This module turns those counters into rows:
one per segment and problem kind, with where it was first seen. Three stages report:

- ``read``: capture framing (``pcapio.ReadProblem``: truncated, bad_record_header, bad_block_length,
  garbage_skipped, unrecoverable, zstd_corrupt, ...), plus ``not_a_capture`` for a segment that has no
  pcap or pcapng header at all;
- ``decode``: link, IP and transport headers that are malformed, cut short by the snaplen, or of an unknown link;
- ``app``: DNS, HTTP and TLS messages that do not parse.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pyarrow as pa

from freezeframe.capture.pcapio import CaptureReader
from freezeframe.contracts.schemas import DISSECT_ERRORS

# Tracker counters that mean damage (the other skip reasons, such as non-IP frames, are normal traffic).
DECODE_KINDS = ("malformed", "truncated", "unsupported_link")
APP_KINDS = ("dns_malformed", "http_malformed", "tls_malformed")


@dataclass(frozen=True, slots=True)
class SegmentRef:
    """Which segment a problem belongs to."""

    key: str  # S3 key or local path
    version_id: str | None = None
    start_ns: int | None = None
    end_ns: int | None = None


@dataclass(slots=True)
class ProblemRow:
    segment: SegmentRef
    stage: str
    kind: str
    count: int
    first_offset: int | None = None
    first_packet: int | None = None
    message: str | None = None


@dataclass(slots=True)
class SegmentProblems:
    """Collects the rows of one job (one node)."""

    node: str
    rows: list[ProblemRow] = field(default_factory=list)

    def add_reader(self, segment: SegmentRef, reader: CaptureReader) -> None:
        for problem in reader.problems.values():
            self.rows.append(ProblemRow(segment, "read", problem.kind, problem.count, problem.first_offset,
                                        problem.first_packet, problem.message))

    def add_rejected(self, segment: SegmentRef, kind: str, message: str) -> None:
        self.rows.append(ProblemRow(segment, "read", kind, 1, 0, 0, message))

    def add_unverified(self, segment: SegmentRef, reason: str) -> None:
        """A segment the freeze locked but could not verify: left out of the tables, reported here."""
        self.rows.append(ProblemRow(segment, "verify", "unverified", 1, None, None, reason))

    def add_counters(self, segment: SegmentRef, stage: str, kinds: tuple[str, ...], before: Mapping[str, int],
                     after: Mapping[str, int]) -> None:
        """Rows for the counters that grew while this segment was fed (the trackers count per job)."""
        for kind in kinds:
            grown = after.get(kind, 0) - before.get(kind, 0)
            if grown > 0:
                self.rows.append(ProblemRow(segment, stage, kind, grown))

    def extend(self, other: SegmentProblems) -> None:
        """Fold another collector's rows in, summing rows of the same segment, stage and kind (time chunks)."""
        index = {(row.segment, row.stage, row.kind): row for row in self.rows}
        for row in other.rows:
            found = index.get((row.segment, row.stage, row.kind))
            if found is None:
                copy = ProblemRow(row.segment, row.stage, row.kind, row.count, row.first_offset, row.first_packet,
                                  row.message)
                self.rows.append(copy)
                index[(row.segment, row.stage, row.kind)] = copy
            else:
                found.count += row.count

    def totals(self) -> dict[str, int]:
        """Counts per stage and kind over all segments, for the job's stats (``errors_<stage>_<kind>``)."""
        out: dict[str, int] = {}
        for row in self.rows:
            name = f"errors_{row.stage}_{row.kind}"
            out[name] = out.get(name, 0) + row.count
        return out

    def table(self) -> pa.Table:
        rows = sorted(self.rows, key=lambda r: (r.segment.start_ns or 0, r.segment.key, r.stage, r.kind))
        columns = {
            "node": [self.node] * len(rows),
            "segment": [r.segment.key for r in rows],
            "segment_version": [r.segment.version_id for r in rows],
            "segment_start_ns": [r.segment.start_ns for r in rows],
            "stage": [r.stage for r in rows],
            "kind": [r.kind for r in rows],
            "count": [r.count for r in rows],
            "first_offset": [r.first_offset for r in rows],
            "first_packet": [r.first_packet for r in rows],
            "message": [r.message for r in rows],
        }
        return pa.Table.from_arrays([pa.array(columns[f.name], type=f.type) for f in DISSECT_ERRORS],
                                    schema=DISSECT_ERRORS)
