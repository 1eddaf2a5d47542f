"""A chunk's warm-up: packets before its start replayed to rebuild TCP state, then the counters zeroed.

A time chunk counts exactly the packets with ``start_ns <= ts < end_ns`` (each packet in one chunk), but the TCP
analysis of its first packets depends on what came before: sequence high-water marks (retransmission, out of
order, lost segment), the last ACK and window (dup-ACK, zero window, window full, keepalive), the unacknowledged
segments (RTT samples), the handshake times and the history letters already seen. So the chunk's tracker is first
fed ``[warmup_start_ns, start_ns)`` (the warm-up); ``begin_chunk`` then keeps that state and zeroes everything the
connections row counts, so the row holds the chunk's own share. ``dissect.chunks.merge_connections`` adds the
shares up; with the warm-up in place the sums equal one sequential pass.

What is kept: flow identity and orientation (so port reuse and UDP idle splits are decided as sequentially), the
per-direction sequence state and unacknowledged lists, window scale, handshake times (``first_syn_ns`` etc.: the
merge takes the first non-null, and a handshake split by the edge is complete in the later chunk), the seen
history bits (so a letter already written earlier is not written again), the last RTT sample (so the jitter step
across the edge is counted by the later chunk). What is zeroed: packets, bytes, payload, every TCP event counter,
the history letters, RTT sums; ``ChunkState.fix`` then removes the warm-up's completeness bits from the rows and
replaces the RTT columns by the chunk's own (the pseudo-sample that carries the last RTT is taken out again).

Flows seen only in the warm-up are not the chunk's: their rows are dropped (``ChunkState.fix``). Application rows
(dns, http, tls) stamped before ``start_ns`` came from the warm-up: ``dissect.chunks`` keeps one only to replace
the earlier chunk's row of the same transaction (same merged ``conn_id`` and ``ts_ns``), which it completes when
the answer came after the edge.

Bounds (README, "Chunked dissection"): state older than the warm-up is not rebuilt. A segment retransmitted or
acknowledged more than ``warmup`` after it was first sent, or a conversation silent for longer than the warm-up
across an edge, is analysed as the unwarmed chunk would (the counts of packets and bytes stay exact either way).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from freezeframe.dissect.connections import ConnectionTracker, DissectStats

_ZEROED_TCP = ("retransmissions_out", "retransmissions_in", "fast_retransmissions", "spurious_retransmissions",
               "out_of_order", "dup_acks_out", "dup_acks_in", "lost_segments", "zero_window_out", "zero_window_in",
               "window_full", "keepalives", "rtt_sum_ns", "rtt_jitter_sum_ns", "payload_bytes", "retransmitted_bytes",
               "payload_segments", "rst_count", "fin_count")
_BIG = 1 << 62


@dataclass(slots=True)
class ChunkState:
    """The warm-up's leftovers the chunk's rows are corrected with (flows keyed by identity)."""

    warm_bits: dict[int, int] = field(default_factory=dict)  # id(flow) -> completeness bits set in the warm-up
    pseudo_rtt: set[int] = field(default_factory=set)  # id(flow) whose rtt_samples holds one carried sample
    flows: list[Any] = field(default_factory=list)  # keeps the warm flows alive so their ids stay unique

    def extras(self, tracker: ConnectionTracker) -> dict[str, tuple[int, int, int, int]]:
        """conn_id -> (payload segments, RTT samples, RTT sum ns, RTT jitter sum ns) of this chunk's share."""
        out = {}
        for flow in _flows(tracker):
            tcp = flow.tcp
            if tcp is None:
                continue
            samples = tcp.rtt_samples - (1 if id(flow) in self.pseudo_rtt else 0)
            out[tracker.identify(flow)[0]] = (tcp.payload_segments, samples, tcp.rtt_sum_ns, tcp.rtt_jitter_sum_ns)
        return out

    def fix(self, tracker: ConnectionTracker, table: pa.Table) -> pa.Table:
        """The chunk's connections rows: warm-only flows dropped, warm completeness bits and pseudo RTT removed."""
        flows = {}
        for flow in _flows(tracker):
            tcp = flow.tcp
            rtt = None if tcp is None or id(flow) not in self.pseudo_rtt else (
                tcp.rtt_samples, tcp.rtt_min_ns, tcp.rtt_max_ns, tcp.rtt_sum_ns, tcp.rtt_jitter_sum_ns)
            flows[tracker.identify(flow)[0]] = WarmFlow(self.warm_bits.get(id(flow)), rtt)
        return fix_rows(table, flows)


@dataclass(frozen=True, slots=True)
class WarmFlow:
    """What a chunk's row is corrected with: the warm-up's completeness bits (None when the flow was not live at the
    chunk's start), and, when one RTT sample was carried, (samples, min, max, sum, jitter sum in ns) with it."""

    warm_bits: int | None
    carried_rtt: tuple[int, int, int, int, int] | None


def fix_rows(table: pa.Table, flows: dict[str, WarmFlow]) -> pa.Table:
    """Pure: the chunk's connections rows with warm-only flows dropped, the warm completeness bits and the carried
    RTT sample removed (both engines: ``ChunkState.fix`` and dissect.native)."""
    # Column by column: only the six corrected columns go through Python lists (a chunk has tens of thousands of rows).
    packets = pc.add(pc.fill_null(table.column("packets_out"), 0), pc.fill_null(table.column("packets_in"), 0))
    table = table.filter(pc.greater(packets, 0))  # rows seen only in the warm-up are the earlier chunk's
    if not table.num_rows:
        return table.schema.empty_table()
    columns = {name: table.column(name).to_pylist()
               for name in ("completeness", "rtt_samples", "rtt_min_us", "rtt_max_us", "rtt_avg_us", "rtt_jitter_us")}
    for index, conn_id in enumerate(table.column("conn_id").to_pylist()):
        flow = flows.get(conn_id)
        if flow is None:
            continue
        completeness = columns["completeness"][index]
        if flow.warm_bits is not None and completeness is not None:
            columns["completeness"][index] = completeness & ~flow.warm_bits
        if flow.carried_rtt is not None:
            samples, low, high, total, jitter = flow.carried_rtt
            samples -= 1
            columns["rtt_samples"][index] = samples
            columns["rtt_min_us"][index] = low // 1000 if samples else None
            columns["rtt_max_us"][index] = high // 1000 if samples else None
            columns["rtt_avg_us"][index] = total // samples // 1000 if samples else None
            columns["rtt_jitter_us"][index] = jitter // samples // 1000 if samples else None
    for name, values in columns.items():
        position = table.schema.get_field_index(name)
        table = table.set_column(position, table.schema.field(name), pa.array(values, table.schema.field(name).type))
    return table.combine_chunks()


def _flows(tracker: ConnectionTracker) -> list[Any]:
    return tracker.conversations()


def begin_chunk(tracker: ConnectionTracker) -> ChunkState:
    """Keep the warm-up's TCP state, zero what the rows count; see the module docstring."""
    state = ChunkState()
    tracker.forget_ended()  # conversations that ended in the warm-up belong wholly to earlier chunks
    for flow in tracker.live_conversations():
        state.flows.append(flow)
        state.warm_bits[id(flow)] = flow.completeness
        flow.packets_out = flow.packets_in = flow.bytes_out = flow.bytes_in = 0
        flow.payload_out = flow.payload_in = 0
        tcp = flow.tcp
        if tcp is None:
            continue
        for name in _ZEROED_TCP:
            setattr(tcp, name, 0)
        tcp.history = []
        if tcp.rtt_samples:
            # One carried sample: the next one adds its jitter step from rtt_last_ns, as sequentially.
            tcp.rtt_samples = 1
            tcp.rtt_min_ns, tcp.rtt_max_ns = _BIG, -1
            state.pseudo_rtt.add(id(flow))
    tracker.stats = DissectStats()
    if tracker.app is not None:
        stats = tracker.app.stats
        for item in dataclasses.fields(stats):
            setattr(stats, item.name, 0)
    tracker.forget_identities()
    return state


def warm_rows(table: pa.Table, start_ns: int) -> tuple[pa.Table, pa.Table]:
    """(rows stamped before ``start_ns``: the warm-up's, rows of the chunk itself)."""
    if not table.num_rows:
        return table, table
    before = pc.less(table.column("ts_ns"), start_ns)
    return table.filter(before), table.filter(pc.invert(before))
