"""The dissection planner: each node's frozen segments split into (node, time chunk) tasks that fit a Lambda.

Pure: manifest entries in, a plan out; no I/O. The state machine's plan step (template.yaml, DissectionStateMachine),
``dissect_node`` with a chunk length, and ``freezeframe dissect --chunk-seconds`` all cut their chunks here.

Sizing. A segment's packets (the manifest's ``packets``, or its stored bytes over ``CostModel.bytes_per_packet``
when the agent did not count them) are spread evenly over its time span, which gives each node a cumulative packet
curve. A chunk's work is its own packets plus the warm-up it replays before its start (``warmup_ns``, see
``dissect.chunks``); the planner walks each node's span and makes every chunk as long as it can while

    seconds = fixed_s + (chunk packets + warm-up packets) * s_per_packet  <=  limits.time_share * timeout
    memory  = base_mb + largest segment + (chunk + warm-up packets) * mb_per_packet  <=  limits.memory_share * memory

so every task ends well inside the function's time and memory (the defaults keep both under half). The cost
figures (``CostModel``) are measured on real captures by tests/bench/bench_scale.py. With a fixed chunk length
(``FREEZEFRAME_DISSECT_CHUNK_SECONDS``, ``--chunk-seconds``) the edges are fixed and the estimates only reported.

The first chunk of a node is open at its start and the last at its end (``open_start``/``open_end``), so a packet
stamped outside the planned span (clock skew) is still dissected exactly once.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from freezeframe.contracts.errors import WindowError

SECOND_NS = 1_000_000_000
MIN_CHUNK_NS = SECOND_NS  # never cut finer than a second: per-task overhead would dominate
# AWS list prices (us-east-1, x86) used for the predicted cost.
LAMBDA_USD_PER_GB_S = 0.0000166667
LAMBDA_USD_PER_REQUEST = 0.20 / 1_000_000
STATES_USD_PER_TRANSITION = 0.025 / 1000
TRANSITIONS_PER_CHUNK = 5  # the Distributed Map child: start, task, end (+ retries when they happen)


@dataclass(frozen=True, slots=True)
class SegmentSpan:
    """What the planner needs of one frozen segment (a manifest entry)."""

    key: str
    start_ns: int
    end_ns: int
    size: int
    packets: int | None = None

    @classmethod
    def from_entry(cls, entry: Any) -> SegmentSpan:
        return cls(entry.key, entry.start_ns, entry.end_ns, entry.size, entry.packets)


@dataclass(frozen=True, slots=True)
class CostModel:
    """Per-task cost of dissection, measured by tests/bench/bench_scale.py on real captures (one Lambda vCPU)."""

    # Defaults from `make bench-scale` (README, Scale of the dissection fan-out, 2026-12-06): the compiled core with
    # its compiled warm-up on 1 M packets of kernel traffic in 32 MB segments measured 1.26-1.45 us/packet and 377 MB
    # per M packets; merge-connections 38 us and 0.52 KB per row, scans 0.9-2.0 us and reads 2.8-4.4 us per row of
    # the parts, on a loaded machine. Rounded up here, for a Lambda vCPU slower than the local core and for traffic
    # denser in connections. (The Python engine measured 13.5 us/packet and about 900 MB per M packets.)
    s_per_packet: float = 1 / 400_000  # the compiled core on real traffic, warm-up reads included
    mb_per_packet: float = 0.0005  # peak resident growth per packet read (flows, rows, arrays), segments aside
    base_mb: float = 150.0  # the interpreter, pyarrow, numpy and the function's code
    fixed_s: float = 3.0  # cold start, fetching the first segment, writing the chunk's parts
    bytes_per_packet: int = 700  # when a manifest entry has no packet count: stored bytes per packet
    rows_per_packet: float = 0.085  # connections rows per packet (0.05-0.084 measured on kernel traffic)
    # The merge-connections step (dissect.fanout.merge_connections_step) holds the chunks' edge connections rows
    # (dissect.chunks.edge_mask) and the rows sharing their endpoint pairs (or a UDP pair with a neighbour chunk), and
    # reads the chunk parts' endpoint columns. Its rows per edge grow with the node's packet rate (conversations open
    # across the edge), plus rows that grow with a chunk's packets (lone SYNs, protocols other than TCP and UDP).
    crossing_rows_per_pps: float = 0.075  # rows the merge holds per edge, per packet/s of the node
    edge_rows_per_packet: float = 0.0005  # edge rows per packet of a chunk besides those
    s_per_edge_row: float = 40e-6  # merging one connections row (merge_connections, Python rows)
    mb_per_edge_row: float = 0.001  # the merge's memory per connections row (0.52 KB measured)
    s_per_scanned_row: float = 2.1e-6  # a chunk part's endpoint columns read and matched, per row
    read_share: float = 1.0  # share of the rows in chunk parts that hold a row to move (read whole)
    s_per_read_row: float = 4.5e-6  # such a connections part read whole and its rows to move taken, per row
    mb_per_part_row: float = 0.0016  # one connections part in memory (one part at a time), per row

    def to_dict(self) -> dict[str, float]:
        return {"s_per_packet": self.s_per_packet, "mb_per_packet": self.mb_per_packet, "base_mb": self.base_mb,
                "fixed_s": self.fixed_s, "bytes_per_packet": self.bytes_per_packet,
                "rows_per_packet": self.rows_per_packet, "crossing_rows_per_pps": self.crossing_rows_per_pps,
                "edge_rows_per_packet": self.edge_rows_per_packet, "s_per_edge_row": self.s_per_edge_row,
                "mb_per_edge_row": self.mb_per_edge_row, "s_per_scanned_row": self.s_per_scanned_row,
                "read_share": self.read_share, "s_per_read_row": self.s_per_read_row,
                "mb_per_part_row": self.mb_per_part_row}

    def edge_rows(self, chunk: PlannedChunk) -> float:
        """Estimated edge rows of one chunk (none cross into the node's first chunk)."""
        seconds = max((chunk.end_ns - chunk.start_ns) / SECOND_NS, 1e-9)
        crossing = 0.0 if chunk.open_start else self.crossing_rows_per_pps * chunk.own_packets / seconds
        return crossing + self.edge_rows_per_packet * chunk.own_packets


@dataclass(frozen=True, slots=True)
class Limits:
    """The chunk task's Lambda (template.yaml DissectFunction) and the share of it a planned chunk may use."""

    timeout_s: float = 900.0
    memory_mb: float = 3008.0
    time_share: float = 0.4
    memory_share: float = 0.5

    @property
    def time_budget_s(self) -> float:
        return self.timeout_s * self.time_share

    @property
    def memory_budget_mb(self) -> float:
        return self.memory_mb * self.memory_share


@dataclass(frozen=True, slots=True)
class PlannedChunk:
    """One (node, time chunk) task: packets with ``start_ns <= ts < end_ns``, TCP state from ``warmup_start_ns``."""

    node: str
    index: int
    start_ns: int
    end_ns: int
    warmup_start_ns: int
    open_start: bool  # the node's first chunk: also every packet before start_ns
    open_end: bool  # the node's last chunk: also every packet at or after end_ns
    packets: int  # estimated packets to read (warm-up included)
    seconds: float  # estimated task time
    memory_mb: float  # estimated peak memory
    segments: tuple[str, ...] = ()  # keys of the segments the task reads (warm-up included)
    own_packets: int = 0  # estimated packets of [start_ns, end_ns) alone (what its rows count)

    def owns(self, ts_ns: int) -> bool:
        return (self.open_start or ts_ns >= self.start_ns) and (self.open_end or ts_ns < self.end_ns)

    def to_item(self, incident_id: str) -> dict[str, Any]:
        """The Map item (and the chunk task's event); segments are looked up again by the task from the manifest."""
        return {"incident_id": incident_id, "node": self.node, "chunk": self.index, "start_ns": self.start_ns,
                "end_ns": self.end_ns, "warmup_start_ns": self.warmup_start_ns, "open_start": self.open_start,
                "open_end": self.open_end}

    def to_dict(self) -> dict[str, Any]:
        return {**self.to_item(""), "packets": self.packets, "own_packets": self.own_packets,
                "seconds": round(self.seconds, 3),
                "memory_mb": round(self.memory_mb, 1), "segments": list(self.segments)}


@dataclass(frozen=True, slots=True)
class Plan:
    chunks: tuple[PlannedChunk, ...]
    cost: CostModel = field(default_factory=CostModel)
    limits: Limits = field(default_factory=Limits)

    def nodes(self) -> list[str]:
        return sorted({chunk.node for chunk in self.chunks})

    def of(self, node: str) -> list[PlannedChunk]:
        return [chunk for chunk in self.chunks if chunk.node == node]

    def over_budget(self) -> list[PlannedChunk]:
        return [c for c in self.chunks if c.seconds > self.limits.time_budget_s
                or c.memory_mb > self.limits.memory_budget_mb]


@dataclass(frozen=True, slots=True)
class Prediction:
    tasks: int
    concurrency: int
    waves: int
    max_task_s: float
    max_task_mb: float
    merge_s: float
    merge_mb: float  # the largest node's merge step (one function: its chunks' edge rows in memory)
    wall_s: float
    lambda_gb_s: float
    cost_usd: float
    edge_rows: float = 0.0  # the largest node's edge rows
    rows: float = 0.0  # the largest node's connections rows

    def to_dict(self) -> dict[str, Any]:
        return {"tasks": self.tasks, "concurrency": self.concurrency, "waves": self.waves,
                "max_task_s": round(self.max_task_s, 1), "max_task_mb": round(self.max_task_mb, 1),
                "merge_s": round(self.merge_s, 1), "merge_mb": round(self.merge_mb, 1), "wall_s": round(self.wall_s, 1),
                "edge_rows": round(self.edge_rows), "rows": round(self.rows),
                "lambda_gb_s": round(self.lambda_gb_s, 1), "cost_usd": round(self.cost_usd, 4)}


class _Curve:
    """A node's cumulative packet count over time: each segment's packets spread evenly over its span."""

    def __init__(self, segments: Sequence[SegmentSpan], cost: CostModel) -> None:
        self.segments = sorted(segments, key=lambda s: (s.start_ns, s.key))
        self.rates = [(s, self._packets(s, cost) / max(s.end_ns - s.start_ns, 1)) for s in self.segments]
        self.largest_mb = max((s.size for s in self.segments), default=0) / 2**20

    @staticmethod
    def _packets(segment: SegmentSpan, cost: CostModel) -> int:
        if segment.packets is not None:
            return segment.packets
        return math.ceil(segment.size / cost.bytes_per_packet)

    def between(self, low: int, high: int) -> float:
        total = 0.0
        for segment, rate in self.rates:
            overlap = min(high, segment.end_ns) - max(low, segment.start_ns)
            if overlap > 0:
                total += overlap * rate
            elif segment.start_ns == segment.end_ns and low <= segment.start_ns < high:
                total += rate  # a segment of one instant: all its packets at that time
        return total

    def keys(self, low: int, high: int, open_start: bool, open_end: bool) -> tuple[str, ...]:
        return tuple(s.key for s in self.segments
                     if (open_end or s.start_ns < high) and (open_start or s.end_ns >= low))


def _estimate(packets: float, curve: _Curve, cost: CostModel) -> tuple[float, float]:
    seconds = cost.fixed_s + packets * cost.s_per_packet
    memory = cost.base_mb + curve.largest_mb + packets * cost.mb_per_packet
    return seconds, memory


def _fits(packets: float, curve: _Curve, cost: CostModel, limits: Limits) -> bool:
    seconds, memory = _estimate(packets, curve, cost)
    return seconds <= limits.time_budget_s and memory <= limits.memory_budget_mb


def _edges(curve: _Curve, start_ns: int, end_ns: int, warmup_ns: int, cost: CostModel, limits: Limits) -> list[int]:
    """Chunk edges over [start_ns, end_ns): each chunk as long as its packets and warm-up fit the budget."""
    edges = [start_ns]
    low = start_ns
    while low < end_ns:
        if _fits(curve.between(max(low - warmup_ns, start_ns), end_ns), curve, cost, limits):
            high = end_ns
        else:
            # Binary search on whole seconds for the longest chunk that fits (at least MIN_CHUNK_NS).
            lo_s, hi_s = 1, max(math.ceil((end_ns - low) / SECOND_NS), 1)
            while lo_s < hi_s:
                mid = (lo_s + hi_s + 1) // 2
                if _fits(curve.between(max(low - warmup_ns, start_ns), low + mid * SECOND_NS), curve, cost, limits):
                    lo_s = mid
                else:
                    hi_s = mid - 1
            high = min(low + max(lo_s * SECOND_NS, MIN_CHUNK_NS), end_ns)
        edges.append(high)
        low = high
    return edges


def _clusters(segments: Sequence[SegmentSpan], start_ns: int, end_ns: int, gap_ns: int) -> list[tuple[int, int]]:
    """Spans of [start_ns, end_ns) with segments, split where no segment covers more than ``gap_ns``."""
    spans = sorted((s.start_ns, s.end_ns + 1) for s in segments)
    clusters: list[list[int]] = []
    for low, high in spans:
        if clusters and low - clusters[-1][1] <= gap_ns:
            clusters[-1][1] = max(clusters[-1][1], high)
        else:
            clusters.append([low, high])
    if not clusters:
        return [(start_ns, end_ns)]
    clusters[0][0] = min(clusters[0][0], start_ns)
    clusters[-1][1] = max(clusters[-1][1], end_ns)
    return [(low, high) for low, high in clusters]


def plan_node(node: str, segments: Sequence[SegmentSpan], *, window: tuple[int, int] | None = None,
              chunk_ns: int | None = None, warmup_ns: int = 10 * SECOND_NS, cost: CostModel | None = None,
              limits: Limits | None = None) -> list[PlannedChunk]:
    """The chunks of one node: fixed ``chunk_ns`` edges, or sized to the budget when ``chunk_ns`` is None."""
    cost = cost or CostModel()
    limits = limits or Limits()
    if chunk_ns is not None and chunk_ns <= 0:
        raise WindowError(f"chunk length must be positive, got {chunk_ns} ns")
    if warmup_ns < 0:
        raise WindowError(f"warm-up must not be negative, got {warmup_ns} ns")
    starts = [s.start_ns for s in segments] + ([window[0]] if window else [])
    ends = [s.end_ns + 1 for s in segments] + ([window[1]] if window else [])
    if not starts:
        return []
    start_ns, end_ns = min(starts), max(ends)
    if end_ns <= start_ns:
        raise WindowError(f"empty or inverted window [{start_ns}, {end_ns})")
    curve = _Curve(segments, cost)
    edges: list[int] = []
    for low, high in _clusters(segments, start_ns, end_ns, max(chunk_ns or 0, warmup_ns, MIN_CHUNK_NS)):
        if chunk_ns is not None:
            cluster = list(range(low, high, chunk_ns)) + [high]
        else:
            cluster = _edges(curve, low, high, warmup_ns, cost, limits)
        # A gap without segments joins the chunk before it, so the chunks tile the node's span without holes.
        edges = edges[:-1] + cluster if edges else cluster
    chunks = []
    last = len(edges) - 2
    for index, (low, high) in enumerate(zip(edges, edges[1:], strict=False)):
        warm = low if index == 0 else max(low - warmup_ns, start_ns)
        packets = curve.between(warm, high)
        seconds, memory = _estimate(packets, curve, cost)
        chunks.append(PlannedChunk(node, index, low, high, warm, index == 0, index == last, math.ceil(packets),
                                   seconds, memory, curve.keys(warm, high, index == 0, index == last),
                                   math.ceil(curve.between(low, high))))
    return chunks


def plan_incident(entries: Iterable[Any], *, window: tuple[int, int] | None = None, chunk_ns: int | None = None,
                  warmup_ns: int = 10 * SECOND_NS, cost: CostModel | None = None, limits: Limits | None = None,
                  nodes: Iterable[str] | None = None) -> Plan:
    """Every node's chunks, from manifest entries (node, key, start_ns, end_ns, size, packets)."""
    cost = cost or CostModel()
    limits = limits or Limits()
    by_node: dict[str, list[SegmentSpan]] = {}
    for entry in entries:
        by_node.setdefault(entry.node, []).append(SegmentSpan.from_entry(entry))
    wanted = sorted(by_node) if nodes is None else sorted(set(nodes) & set(by_node))
    chunks = [chunk for node in wanted for chunk in plan_node(node, by_node[node], window=window, chunk_ns=chunk_ns,
                                                                warmup_ns=warmup_ns, cost=cost, limits=limits)]
    return Plan(tuple(chunks), cost, limits)


def predict(plan: Plan, concurrency: int, finalize_s: float = 30.0) -> Prediction:
    """Wall time and cost of a plan in AWS: the chunk tasks in waves of ``concurrency``, then the per-node merges
    (in parallel), then finalize. Cost: Lambda GB-seconds at the function's memory, requests, state transitions."""
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    cost, limits = plan.cost, plan.limits
    tasks = len(plan.chunks)
    waves = math.ceil(tasks / concurrency) if tasks else 0
    longest = max((c.seconds for c in plan.chunks), default=0.0)
    # Waves of equal-size chunks: each wave lasts about as long as its longest task.
    ordered = sorted((c.seconds for c in plan.chunks), reverse=True)
    chunk_wall = sum(ordered[wave * concurrency] for wave in range(waves))
    merges = []
    merge_mb = 0.0
    largest = (0.0, 0.0)
    for node in plan.nodes():
        chunks = plan.of(node)
        rows = sum(c.own_packets for c in chunks) * cost.rows_per_packet
        edge_rows = min(sum(cost.edge_rows(c) for c in chunks), rows)  # never more than the node's rows
        part_rows = max((c.own_packets for c in chunks), default=0) * cost.rows_per_packet
        # Edge rows merged; every chunk part's endpoint columns read, and the parts holding a row to move read whole,
        # one part at a time.
        per_row = cost.s_per_scanned_row + cost.read_share * cost.s_per_read_row
        merges.append(cost.fixed_s + edge_rows * cost.s_per_edge_row + rows * per_row)
        merge_mb = max(merge_mb, cost.base_mb + edge_rows * cost.mb_per_edge_row + part_rows * cost.mb_per_part_row)
        largest = max(largest, (edge_rows, rows))
    merge_s = max(merges, default=0.0)
    gb = limits.memory_mb / 1024
    gb_s = sum(c.seconds for c in plan.chunks) * gb + sum(merges) * gb + finalize_s * gb
    usd = (gb_s * LAMBDA_USD_PER_GB_S + (tasks + len(merges) + 2) * LAMBDA_USD_PER_REQUEST
           + (tasks * TRANSITIONS_PER_CHUNK + len(merges) * 3 + 10) * STATES_USD_PER_TRANSITION)
    return Prediction(tasks, concurrency, waves, longest, max((c.memory_mb for c in plan.chunks), default=0.0),
                      merge_s, merge_mb, chunk_wall + merge_s + finalize_s, gb_s, usd, *largest)


def chunk_of_item(item: Mapping[str, Any]) -> tuple[str, int, int, int, int, bool, bool]:
    """(node, index, start_ns, end_ns, warmup_start_ns, open_start, open_end) of a Map item, checked."""
    try:
        node, index = str(item["node"]), int(item["chunk"])
        start, end, warm = int(item["start_ns"]), int(item["end_ns"]), int(item["warmup_start_ns"])
        open_start, open_end = bool(item.get("open_start", False)), bool(item.get("open_end", False))
    except (KeyError, TypeError, ValueError) as exc:
        raise WindowError(f"not a chunk item: {exc}") from exc
    if not warm <= start < end or index < 0:
        raise WindowError(f"chunk {index} of {node}: needs warmup_start_ns <= start_ns < end_ns")
    return node, index, start, end, warm, open_start, open_end


def edges_index(chunks: Sequence[PlannedChunk], ts_ns: int) -> int:
    """The index of the chunk that owns ``ts_ns`` (chunks of one node, in order)."""
    starts = [c.start_ns for c in chunks]
    return max(bisect.bisect_right(starts, ts_ns) - 1, 0)
