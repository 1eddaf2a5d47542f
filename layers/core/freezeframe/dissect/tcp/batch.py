"""The batched hot path of dissection: numpy over whole record batches, per-packet Python only where TCP needs it.

``ConnectionTracker.feed`` is the reference: it walks packets one by one and runs Wireshark's sequence analysis
(``dissect.tcp.analysis``) on every TCP segment. Most segments of a healthy conversation change nothing that analysis
can flag; this module finds those in bulk and folds them into the same state without a per-packet Python step.

Per batch of records (``pcapio.RecordBatch``):

1. Decode: every header field of Ethernet / Linux cooked (v1, v2) / raw IP + IPv4 (no options, not a fragment) +
   TCP is gathered for all records at once through strided views of the read buffer. Anything else (UDP, IPv6,
   VLAN tags, IP options, damage) goes to the reference path unchanged.
2. Group: TCP records are sorted by their unordered 4-tuple (stable, so capture order holds within a group).
   A group goes to the reference path whole when batching could differ from it: a SYN that may start a new
   conversation on the 4-tuple (port reuse), a 4-tuple that also has records the fast decoder did not take,
   sequence numbers too far apart for relative arithmetic, or an unacknowledged list near Wireshark's cap.
3. Clean runs: a segment is *clean* when ``TcpAnalysis.segment`` would raise no flag on it and only move the
   sequence state forward: ACK without SYN or RST, at the next expected sequence, a non-zero window, new data, a
   FIN or a new ACK number, and none of window-full, ACK-of-unseen-segment or spurious retransmission possible.
   The tests use the fields of the previous segment of each side (every segment sets lastack and window and moves
   the sequence high-water mark, whatever path it took): from this batch, or from the conversation's state when
   that side's previous segment was in an earlier batch. Consecutive clean segments form a run; everything else
   goes through ``ConnectionTracker.tcp_segment`` one by one, in order, and a run is applied in one step between
   them, after checking that the conversation's real state at its start (next sequence numbers) is what the
   fields implied; when it is not, the run goes one by one too. So each state change happens in the same order
   as in the reference.
4. RTT: the unacknowledged-segment lists and ack_rtt samples (Wireshark's list walk) depend on packet fields only:
   a segment leaves its side's list at the first later packet of the other side whose ACK reaches its end, and
   a sample is taken when that ACK equals the end exactly (the oldest such segment). Segmented running maxima
   and binary searches find all of them at once; the lists left over are handed back to the conversations.

tests/unit/dissect/test_batch_engine.py checks that this path and the reference give identical tables.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from typing import Any

import numpy as np

from freezeframe.capture.pcapio import (
    LINKTYPE_ETHERNET,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_RAW,
    RECORD_HEADER_LEN,
    Packet,
    RecordBatch,
)
from freezeframe.dissect.apps import IGNORED
from freezeframe.dissect.connections import (
    COMPLETENESS_ACK,
    COMPLETENESS_DATA,
    COMPLETENESS_FIN,
    ConnectionTracker,
    collector_paused,
)
from freezeframe.dissect.decode import IPPROTO_TCP, LINKTYPE_IPV4, Decoded, decode
from freezeframe.dissect.tcp.analysis import MAX_UNACKED_SEGMENTS, MAX_WINDOW_SHIFT, Direction, TcpAnalysis
from freezeframe.dissect.tcp.flags import H_ACK, H_DATA, H_FIN, TH_ACK, TH_FIN, TH_RST, TH_SYN

# Link types the vectorised decoder reads: link header length, and where the ethertype is (-1: raw IP).
_LINKS = {LINKTYPE_ETHERNET: (14, 12), LINKTYPE_LINUX_SLL: (16, 14), LINKTYPE_LINUX_SLL2: (20, 0),
          LINKTYPE_RAW: (0, -1), LINKTYPE_IPV4: (0, -1)}
_MASK = 0xFFFFFFFF
_HALF = 0x80000000
_RANGE = 1 << 30  # relative sequence numbers stay within +-2^30 of a base, so signed order equals TCP order
_BLOCK = 1 << 34  # key spacing that keeps groups apart in segmented running maxima and searches
_BIG = 1 << 62
_new_tuple = tuple.__new__


def feed_batches(tracker: ConnectionTracker, batches: Iterable[RecordBatch],
                 window: tuple[int, int] | None = None) -> None:
    """Accounts every record of ``batches`` exactly as ``tracker.feed_runs`` would, most TCP segments in bulk.

    With ``window`` (low, high), only records with ``low <= ts_ns < high`` are fed (a time chunk).
    """
    with collector_paused():
        for batch in batches:
            _Batch(tracker, batch, window).run()


def _strided(buf: bytes, dtype: str) -> np.ndarray:
    """A view whose element i is the ``dtype`` value starting at byte i of ``buf`` (overlapping, unaligned)."""
    itemsize = np.dtype(dtype).itemsize
    count = max(len(buf) - itemsize + 1, 0)
    return np.ndarray((count,), dtype=dtype, buffer=buf, offset=0, strides=(1,))


def _s32(values: np.ndarray) -> np.ndarray:
    """Differences of 32-bit sequence numbers as signed values in [-2^31, 2^31)."""
    return ((values + _HALF) & _MASK) - _HALF


class _Batch:
    """One record batch through the three stages; see the module docstring."""

    def __init__(self, tracker: ConnectionTracker, batch: RecordBatch, window: tuple[int, int] | None) -> None:
        self.tracker = tracker
        self.buf = batch.buf
        starts = np.array(batch.starts, dtype=np.int64)
        words = _strided(batch.buf, batch.byte_order + "u4")
        scale = 1 if batch.nanosecond else 1000
        if batch.ts_ns is not None:
            self.ts = np.array(batch.ts_ns, dtype=np.int64)
        else:
            self.ts = words[starts].astype(np.int64) * 1_000_000_000 + words[starts + 4].astype(np.int64) * scale
        if window is not None:
            inside = (self.ts >= window[0]) & (self.ts < window[1])
            if not inside.all():
                starts, self.ts = starts[inside], self.ts[inside]
                batch = batch._replace(starts=starts.tolist(),
                                       ts_ns=None if batch.ts_ns is None else self.ts.tolist())
        self.batch = batch
        self.incl = words[starts + 8].astype(np.int64)
        self.orig = words[starts + 12].astype(np.int64)
        self.frames = starts + RECORD_HEADER_LEN
        self._rows: tuple[list[int], list[int], list[int], list[int]] | None = None
        self.payloads: list[tuple[int, ...]] | None = None
        self.payload_at: list[int] = []

    def packet(self, row: int) -> Packet:
        """The record as the reference path takes it."""
        if self._rows is None:
            self._rows = (self.ts.tolist(), self.orig.tolist(), self.frames.tolist(), self.incl.tolist())
        ts, orig, frames, incl = self._rows
        frame = frames[row]
        return _new_tuple(Packet, (ts[row], orig[row], self.buf[frame:frame + incl[row]]))

    def run(self) -> None:
        tracker = self.tracker
        link = _LINKS.get(self.batch.link_type)
        count = len(self.batch.starts)
        if link is None or not count:
            tracker.feed(self.batch.link_type, (self.packet(row) for row in range(count)))
            return
        rows = self._decode(*link)
        if rows is None or not len(rows):
            tracker.feed(self.batch.link_type, (self.packet(row) for row in range(count)))
            return
        self._group()
        simple = self._choose()
        exact_rows = np.sort(np.concatenate([self.other_rows, self.row_sorted[~simple]]))
        self._select(simple)
        if not len(self.s_row):
            tracker.feed(self.batch.link_type, (self.packet(row) for row in exact_rows.tolist()))
            return
        self._clean_runs()
        self._rtt()
        with tracker.acks_tracked_by_caller(self.batch_keys):
            tracker.feed(self.batch.link_type, (self.packet(row) for row in exact_rows.tolist()))
            self._fold()
        self._hand_back()

    # -- 1. decode
    def _decode(self, link_length: int, ethertype_at: int) -> np.ndarray | None:
        """Fields of the records the vectorised decoder takes; the other rows are kept in ``other_rows``."""
        buf = self.buf
        ip = link_length
        self.link = (link_length, ethertype_at)
        candidates = np.flatnonzero(self.incl >= ip + 40)
        if not len(candidates):
            return None
        base = self.frames[candidates]
        u8 = np.frombuffer(buf, dtype=np.uint8)
        u16 = _strided(buf, ">u2")
        u32 = _strided(buf, ">u4")
        version_ihl = u8[base + ip]
        total_length = u16[base + ip + 2].astype(np.int64)
        fragment = u16[base + ip + 6]
        protocol = u8[base + ip + 9]
        data_offset = u8[base + ip + 32].astype(np.int64)
        header_length = (data_offset >> 4) * 4
        fast = ((version_ihl == 0x45) & (protocol == IPPROTO_TCP) & ((fragment & 0x1FFF) == 0)
                & (header_length >= 20) & (header_length <= total_length - 20))
        if ethertype_at >= 0:
            fast &= u16[base + ethertype_at] == 0x0800
        rows = candidates[fast]
        base = base[fast]
        self.other_rows = np.setdiff1d(np.arange(len(self.incl)), rows, assume_unique=True)
        self.src = u32[base + ip + 12].astype(np.int64)
        self.dst = u32[base + ip + 16].astype(np.int64)
        self.sport = u16[base + ip + 20].astype(np.int64)
        self.dport = u16[base + ip + 22].astype(np.int64)
        self.seq = u32[base + ip + 24].astype(np.int64)
        self.ack = u32[base + ip + 28].astype(np.int64)
        data_offset = data_offset[fast]
        self.flags = u8[base + ip + 33].astype(np.int64) | ((data_offset & 1) << 8)
        self.window = u16[base + ip + 34].astype(np.int64)
        header_length = header_length[fast]
        self.payload_len = total_length[fast] - 20 - header_length
        self.payload_offset = ip + 20 + header_length
        self.key_offset = ip + 12  # the live-table key: addresses then ports, as ConnectionTracker builds it
        self.rows = rows
        return rows

    # -- 2. group
    def _group(self) -> None:
        """Sorts the decoded TCP records by unordered 4-tuple, capture order kept inside each group."""
        sender = (self.src << 16) | self.sport
        receiver = (self.dst << 16) | self.dport
        low = np.minimum(sender, receiver)
        high = np.maximum(sender, receiver)
        order = np.lexsort((low, high))
        self.order = order
        low, high = low[order], high[order]
        new = np.ones(len(order), dtype=bool)
        new[1:] = (high[1:] != high[:-1]) | (low[1:] != low[:-1])
        self.group_start = np.flatnonzero(new)
        self.group_low = low[self.group_start]
        self.group_high = high[self.group_start]
        self.group_self = self.group_low == self.group_high  # a socket talking to itself: one key, one side
        self.side_sorted = (sender[order] != low).astype(np.int64)  # 0: the sender is the lower endpoint
        self.row_sorted = self.rows[order]
        self.gid_sorted = np.cumsum(new) - 1

    def _choose(self) -> np.ndarray:
        """Which sorted records belong to groups that the batched path takes (the rest go to the reference)."""
        tracker = self.tracker
        order = self.order
        flags = self.flags[order]
        starts = self.group_start
        groups = len(starts)
        pure_syn = (flags & (TH_SYN | TH_ACK)) == TH_SYN
        late_syn = pure_syn.copy()
        late_syn[starts] = False
        has_late_syn = np.logical_or.reduceat(late_syn, starts)
        has_syn = np.logical_or.reduceat(pure_syn, starts)
        taint = self._tainted()
        live = tracker.tcp_conversations
        buf = self.buf
        key_at = (self.frames[self.row_sorted[starts]] + self.key_offset).tolist()
        complex_groups = (has_late_syn | self.group_self).tolist()
        has_syn_list = has_syn.tolist()
        lows, highs = self.group_low.tolist(), self.group_high.tolist()
        first_side = self.side_sorted[starts].tolist()
        self.group_keys: list[bytes] = []
        self.group_flows: list[Any] = [None] * groups
        # Lists the conversation already holds (side, seq, end, ts), from earlier batches.
        pre_items: list[tuple[int, int, int, int, int]] = []
        pre_lengths = np.zeros((groups, 2), dtype=np.int64)
        # Per side, what the conversation's state says of its last segment before this batch (next sequence
        # number, ACK number, window): it stands in for a previous packet that an earlier batch had.
        held: list[tuple[int, int, int, int, int, int, int]] = []
        for group in range(groups):
            at = key_at[group]
            key = buf[at:at + 12]
            self.group_keys.append(key)
            if taint and (lows[group], highs[group]) in taint:
                complex_groups[group] = True
                continue
            entry = live.get(key)
            if entry is None:
                continue
            if has_syn_list[group]:
                complex_groups[group] = True
                continue
            flow, outbound = entry
            tcp = flow.tcp
            assert tcp is not None
            self.group_flows[group] = flow
            out_side = first_side[group] if outbound else 1 - first_side[group]
            for side, direction in ((out_side, tcp.out), (1 - out_side, tcp.in_)):
                pre_lengths[group, side] = len(direction.segments)
                for seq, end, sent_ns in direction.segments:
                    pre_items.append((group, side, seq, end, sent_ns))
            low, high = (tcp.out, tcp.in_) if out_side == 0 else (tcp.in_, tcp.out)
            held.append((group, low.nextseq, high.nextseq, low.lastack, high.lastack, low.window, high.window))
        self.complex = np.array(complex_groups, dtype=bool)
        state = np.array(held, dtype=np.int64).reshape(-1, 7)
        self.held = np.zeros((groups, 7), dtype=np.int64)  # existing flag, then the values by side
        self.held[state[:, 0], 0] = 1
        self.held[state[:, 0], 1:] = state[:, 1:]
        self._relative(pre_items, pre_lengths)
        simple_groups = ~self.complex
        return simple_groups[self.gid_sorted]

    def _tainted(self) -> set[tuple[int, int]]:
        """Unordered IPv4 4-tuples of TCP records that the vectorised decoder did not take (options, tags, ...)."""
        taint = set()
        link_type = self.batch.link_type
        rows = self.other_rows
        # Plain IPv4 that is not TCP (UDP, ICMP) and IPv6 cannot share a 4-tuple with the decoded TCP: only the rest
        # (tags, options, fragments, damage) is decoded one by one to find out.
        ip, ethertype_at = self.link
        base = self.frames[rows]
        readable = np.flatnonzero(self.incl[rows] >= ip + 10)
        at = base[readable]
        u8 = np.frombuffer(self.buf, dtype=np.uint8)
        version_ihl = u8[at + ip]
        if ethertype_at >= 0:
            ethertype = _strided(self.buf, ">u2")[at + ethertype_at]
            unrelated = ((ethertype == 0x0800) & (version_ihl == 0x45) & (u8[at + ip + 9] != IPPROTO_TCP)) | \
                (ethertype == 0x86DD)
        else:
            unrelated = ((version_ihl == 0x45) & (u8[at + ip + 9] != IPPROTO_TCP)) | ((version_ihl >> 4) == 6)
        keep = np.ones(len(rows), dtype=bool)
        keep[readable[unrelated]] = False
        for row in rows[keep].tolist():
            result = decode(link_type, self.packet(row).data)
            if isinstance(result, Decoded) and result.proto == IPPROTO_TCP and len(result.src) == 4:
                sender = int.from_bytes(result.src, "big") << 16 | result.sport
                receiver = int.from_bytes(result.dst, "big") << 16 | result.dport
                taint.add((min(sender, receiver), max(sender, receiver)))
        return taint

    def _relative(self, pre_items: list[tuple[int, int, int, int, int]], pre_lengths: np.ndarray) -> None:
        """Sequence numbers relative to a base per group side; groups whose numbers do not fit are complex."""
        order = self.order
        gid = self.gid_sorted
        side = self.side_sorted
        count = len(order)
        groups = len(self.group_start)
        seq = self.seq[order]
        flags = self.flags[order]
        payload = self.payload_len[order]
        position = np.arange(count)
        base = np.zeros((groups, 2), dtype=np.int64)
        first = np.full((groups, 2), _BIG, dtype=np.int64)
        for one in (0, 1):
            mine = side == one
            first[:, one] = np.minimum.reduceat(np.where(mine, position, _BIG), self.group_start)
            present = first[:, one] < _BIG
            base[present, one] = seq[first[present, one]]
        held_next = self.held[:, 1:3]
        absent = first >= _BIG  # no packet of that side in the batch: base on the state, or on its list below
        base[absent] = held_next[absent]
        if pre_items:
            pre = np.array(pre_items, dtype=np.int64)
            missing = first[pre[:, 0], pre[:, 1]] >= _BIG
            base[pre[missing, 0], pre[missing, 1]] = pre[missing, 2]
        else:
            pre = np.zeros((0, 5), dtype=np.int64)
        self.pre = pre
        self.base = base
        syn_fin = ((flags & (TH_SYN | TH_FIN)) != 0).astype(np.int64)
        rel_seq = _s32(seq - base[gid, side])
        rel_end = rel_seq + payload + syn_fin
        rel_ack = _s32(self.ack[order] - base[gid, 1 - side])
        # Items: segments that enter their side's unacknowledged list; the first one of each list makes the
        # other side's ACKs relevant.
        item = (payload > 0) | (syn_fin > 0)
        first_item = np.full((groups, 2), _BIG, dtype=np.int64)
        for one in (0, 1):
            first_item[:, one] = np.minimum.reduceat(np.where(item & (side == one), position, _BIG),
                                                     self.group_start)
        if len(pre):
            first_item[pre[:, 0], pre[:, 1]] = -1
        relevant = first_item[gid, 1 - side] < position
        bad = (np.abs(rel_seq) >= _RANGE) | (np.abs(rel_end) >= _RANGE) | (relevant & (np.abs(rel_ack) >= _RANGE))
        if len(pre):
            pre_rel = _s32(pre[:, 3] - base[pre[:, 0], pre[:, 1]])
            np.logical_or.at(self.complex, pre[:, 0][np.abs(pre_rel) >= _RANGE], True)
        held_rel = _s32(held_next - base)
        self.complex |= ((held_next != 0) & (np.abs(held_rel) >= _RANGE)).any(axis=1)
        self.complex |= np.logical_or.reduceat(bad, self.group_start)
        items = np.zeros((groups, 2), dtype=np.int64)
        for one in (0, 1):
            items[:, one] = np.add.reduceat(item & (side == one), self.group_start)
        self.complex |= ((items + pre_lengths) >= MAX_UNACKED_SEGMENTS).any(axis=1)
        self.rel_seq, self.rel_end, self.rel_ack = rel_seq, rel_end, rel_ack
        self.relevant, self.is_item = relevant, item

    def _select(self, simple: np.ndarray) -> None:
        """Keeps the records of simple groups, renumbering their groups 0..n-1."""
        order = self.order[simple]
        self.s_row = self.row_sorted[simple]
        self.s_side = self.side_sorted[simple]
        old_gid = self.gid_sorted[simple]
        self.s_ts = self.ts[self.s_row]
        self.s_orig = self.orig[self.s_row]
        self.s_seq = self.seq[order]
        self.s_ack = self.ack[order]
        self.s_flags = self.flags[order]
        self.s_window = self.window[order]
        self.s_payload = self.payload_len[order]
        self.s_payload_offset = self.payload_offset[order]
        self.s_rel_seq = self.rel_seq[simple]
        self.s_rel_end = self.rel_end[simple]
        self.s_rel_ack = self.rel_ack[simple]
        self.s_relevant = self.relevant[simple]
        self.s_item = self.is_item[simple]
        count = len(order)
        new = np.ones(count, dtype=bool)
        new[1:] = old_gid[1:] != old_gid[:-1]
        self.s_new = new
        self.s_group_start = np.flatnonzero(new)
        self.s_gid = np.cumsum(new) - 1
        self.s_old_group = old_gid[self.s_group_start] if count else old_gid[:0]
        self.s_base = self.base[self.s_old_group]
        self.s_held = self.held[self.s_old_group]
        keep = np.zeros(len(self.complex), dtype=bool)
        keep[self.s_old_group] = True
        pre = self.pre
        if len(pre):
            pre = pre[keep[pre[:, 0]]]
            renumber = np.full(len(self.complex), -1, dtype=np.int64)
            renumber[self.s_old_group] = np.arange(len(self.s_old_group))
            pre = pre.copy()
            pre[:, 0] = renumber[pre[:, 0]]
        self.s_pre = pre
        keys = self.group_keys
        self.batch_keys = set()
        for group in self.s_old_group.tolist():
            key = keys[group]
            self.batch_keys.add(key)
            self.batch_keys.add(key[4:8] + key[:4] + key[10:12] + key[8:10])
            flow = self.group_flows[group]
            if flow is not None:
                flow.tcp.track_acks = False

    # -- 3. clean runs
    def _clean_runs(self) -> None:
        count = len(self.s_row)
        position = np.arange(count)
        side = self.s_side
        gid = self.s_gid
        group_first = self.s_group_start[gid]
        last = []
        for one in (0, 1):
            seen = np.maximum.accumulate(np.where(side == one, position, -1)) if count else position
            before = np.empty(count, dtype=np.int64)
            if count:
                before[0] = -1
                before[1:] = seen[:-1]
            last.append(before)
        prev_same = np.where(side == 0, last[0], last[1])
        prev_rev = np.where(side == 0, last[1], last[0])
        in_same = prev_same >= group_first  # the previous segment of this side is in the batch
        in_rev = prev_rev >= group_first
        prev_same_safe = np.where(in_same, prev_same, 0)
        prev_rev_safe = np.where(in_rev, prev_rev, 0)
        # Otherwise a conversation from an earlier batch has it in its state (values exact: nothing in this batch
        # changed that side's next sequence number, ACK or window before this packet).
        existing = (self.s_held[:, 0] == 1)[gid]
        has_same = in_same | existing
        has_rev = in_rev | existing
        same_at = gid * 2 + side  # index of (group, side) in arrays flattened from (groups, 2)
        rev_at = gid * 2 + (1 - side)
        base_flat = self.s_base.ravel()
        base_same = base_flat[same_at]
        base_rev = base_flat[rev_at]
        held_next = self.s_held[:, 1:3]
        held_rel = np.where(held_next != 0, _s32(held_next - self.s_base), -_BIG)  # per group and side
        held_rel_flat = held_rel.ravel()
        offset = gid * _BLOCK
        high_water = []  # per side: the running maximum of relative segment ends, as keys with the group offset
        for one in (0, 1):
            high_water.append(np.maximum.accumulate(np.where(side == one, self.s_rel_end + offset, -_BIG))
                              if count else position)
        est_same = np.maximum(np.where(in_same, np.where(side == 0, high_water[0][prev_same_safe],
                                                         high_water[1][prev_same_safe]) - offset, -_BIG),
                              held_rel_flat[same_at])
        est_rev = np.maximum(np.where(in_rev, np.where(side == 0, high_water[1][prev_rev_safe],
                                                       high_water[0][prev_rev_safe]) - offset, -_BIG),
                             held_rel_flat[rev_at])
        seq, ack, flags, window, payload = self.s_seq, self.s_ack, self.s_flags, self.s_window, self.s_payload
        # The previous segment's ACK and window; from the state (held columns: lastack by side at 3 and 4, window at
        # 5 and 6) for the few whose previous segment was in an earlier batch.
        prev_ack = ack[prev_same_safe]
        rev_ack = ack[prev_rev_safe]
        rev_window = window[prev_rev_safe]
        for values, inside, column, sides in ((prev_ack, in_same, 3, side), (rev_ack, in_rev, 3, 1 - side),
                                              (rev_window, in_rev, 5, 1 - side)):
            outside = np.flatnonzero(~inside)
            values[outside] = self.s_held[gid[outside], column + sides[outside]]
        end = (seq + payload) & _MASK
        known_rev = est_rev > -_RANGE
        rev_next = np.where(known_rev, (est_rev + base_rev) & _MASK, 0)
        fin = (flags & TH_FIN) != 0
        # A FIN at the next sequence number is as clean as data: Wireshark's checks for it (lost segment, ACK of an
        # unseen segment, spurious retransmission) are the ones excluded here, and it never counts as a dup ACK.
        # The array tests below are the negations, over a whole batch, of the checks TcpAnalysis.segment's fast path
        # makes (analysis._ack_of_unseen, _acknowledged, _window_full); the flag itself is only ever decided there.
        clean = (has_same & has_rev & ((flags & (TH_SYN | TH_RST | TH_ACK)) == TH_ACK) & (window != 0)
                 & (self.s_rel_seq == est_same) & (((est_same + base_same) & _MASK) != 0)
                 & ((payload > 0) | fin | (ack != prev_ack))
                 & ((payload != 1) | (rev_window != 0))
                 & ~((rev_next != 0) & (((rev_next - ack) & _MASK) >= _HALF)))
        data = payload > 0
        spurious = data & (rev_ack != 0) & ((end == rev_ack) | (((end - rev_ack) & _MASK) >= _HALF))
        clean &= ~spurious
        # Window full needs the peer's window scale, which only the state knows: exclude every segment that would
        # be window-full under some shift 0..MAX_WINDOW_SHIFT, i.e. whose end is the peer's ACK plus its 16-bit window
        # times a power of two up to 2^14 (never past 2^30, so no 32-bit wrap).
        to_limit = (end - rev_ack) & _MASK
        safe_window = np.maximum(rev_window, 1)
        multiple = to_limit // safe_window
        scaled = (to_limit % safe_window == 0) & (multiple > 0) & (multiple <= 1 << MAX_WINDOW_SHIFT) & \
            ((multiple & (multiple - 1)) == 0)
        clean &= ~(data & np.where(rev_window == 0, to_limit == 0, scaled))
        before = np.zeros(count, dtype=bool)
        if count:
            before[1:] = clean[:-1]
        item_start = np.flatnonzero(~clean | ~before | self.s_new)
        self.item_start = item_start
        self.item_end = np.append(item_start[1:], count)
        is_run = clean[item_start] if count else clean
        self.is_run = is_run
        runs = item_start[is_run]
        if not len(runs):
            self.runs: list[tuple[tuple[int, ...], tuple[int, ...], int, int]] = []
            return

        def per_run(ufunc: np.ufunc, values: np.ndarray) -> np.ndarray:
            return ufunc.reduceat(values, item_start)[is_run]

        end_raw = (seq + payload + fin) & _MASK
        sides = []
        for one in (0, 1):
            mine = side == one
            mine_data = mine & data
            mine_fin = mine & fin
            in_group = last[one][runs] >= group_first[runs]
            entry = np.maximum(np.where(in_group, high_water[one][runs - 1] - offset[runs], -_BIG),
                               held_rel[gid[runs], one])
            latest = per_run(np.maximum, np.where(mine, position, -1))
            latest_safe = np.maximum(latest, 0)
            advance = per_run(np.maximum, np.where(mine_data | mine_fin, position, -1))
            advance_safe = np.maximum(advance, 0)
            # One tuple per run and side, in the order _apply_run unpacks them.
            sides.append(list(zip(
                np.where(entry > -_RANGE, (entry + self.s_base[gid[runs], one]) & _MASK, 0).tolist(),
                per_run(np.add, mine.astype(np.int64)).tolist(),
                per_run(np.add, np.where(mine, self.s_orig, 0)).tolist(),
                per_run(np.add, np.where(mine, payload, 0)).tolist(),
                per_run(np.add, mine_data.astype(np.int64)).tolist(),
                ack[latest_safe].tolist(), self.s_ts[latest_safe].tolist(), window[latest_safe].tolist(),
                np.where(advance >= 0, end_raw[advance_safe], -1).tolist(), self.s_ts[advance_safe].tolist(),
                per_run(np.logical_or, mine & (ack != prev_ack)).tolist(),
                per_run(np.minimum, np.where(mine_data, position, _BIG)).tolist(),
                per_run(np.minimum, np.where(mine & ~data & ~fin, position, _BIG)).tolist(),
                per_run(np.add, mine_fin.astype(np.int64)).tolist(),
                per_run(np.minimum, np.where(mine_fin, position, _BIG)).tolist(), strict=True)))
        first_data = per_run(np.minimum, np.where(data, position, count - 1))
        self.runs = list(zip(sides[0], sides[1], runs.tolist(), self.item_end[is_run].tolist(),
                             self.s_ts[runs].tolist(), self.s_ts[first_data].tolist(),
                             per_run(np.minimum, self.s_ts).tolist(), per_run(np.maximum, self.s_ts).tolist(),
                             gid[runs].tolist(), strict=True))

    # -- 4. RTT
    def _rtt(self) -> None:
        """ack_rtt samples and the unacknowledged lists left at the end of the batch, for every simple group."""
        count = len(self.s_row)
        groups = len(self.s_group_start)
        position = np.arange(count)
        side, gid = self.s_side, self.s_gid
        # Items: the batch's own segments, then the lists held from before (placed before the group's first packet).
        own = np.flatnonzero(self.s_item)
        pre = self.s_pre
        item_block = np.concatenate([gid[own] * 2 + side[own], pre[:, 0] * 2 + pre[:, 1]])
        item_rel_end = np.concatenate([self.s_rel_end[own], _s32(pre[:, 3] - self.s_base[pre[:, 0], pre[:, 1]])])
        item_end_raw = np.concatenate([(self.s_seq[own] + self.s_payload[own]
                                        + ((self.s_flags[own] & (TH_SYN | TH_FIN)) != 0)) & _MASK, pre[:, 3]])
        item_seq_raw = np.concatenate([self.s_seq[own], pre[:, 2]])
        item_ts = np.concatenate([self.s_ts[own], pre[:, 4]])
        # The first acker that may remove an item: the next packet after it, or the group's first for older lists.
        item_from = np.concatenate([own + 1, self.s_group_start[pre[:, 0]] if len(pre) else pre[:, 0]])
        item_rank = np.concatenate([own * 2 + 1, self.s_group_start[pre[:, 0]] * 2 if len(pre) else pre[:, 0]])
        item_order = np.arange(len(item_block))  # pre items keep their list order among themselves
        # Ackers: every packet acknowledges the list of the other side of its group.
        acker_block = gid * 2 + (1 - side)
        acker_sort = np.argsort(acker_block * (1 << 31) + position, kind="stable")
        sorted_block = acker_block[acker_sort]
        sorted_position = position[acker_sort]
        rel_ack = np.where(self.s_relevant, np.clip(self.s_rel_ack, -_RANGE, _RANGE), -2 * _RANGE)
        reach = np.maximum.accumulate(sorted_block * _BLOCK + rel_ack[acker_sort]) if count else position
        composite = sorted_block * (1 << 31) + sorted_position
        first_after = np.searchsorted(composite, item_block * (1 << 31) + item_from, side="left")
        item_key = item_block * _BLOCK + item_rel_end
        prior = first_after - 1
        prior_reach = np.where((prior >= 0) & (sorted_block[np.maximum(prior, 0)] == item_block),
                               reach[np.maximum(prior, 0)], -_BIG)
        stale = prior_reach >= item_key
        found = np.searchsorted(reach, item_key, side="left")
        in_block = (found < count) & (sorted_block[np.minimum(found, count - 1)] == item_block) if count else found < 0
        removed_at = np.where(in_block & ~stale, found, -1)
        ack_raw = self.s_ack
        for index in np.flatnonzero(stale).tolist():
            # Acknowledged already when it was sent (a retransmission of old data): walk the ackers after it.
            removed_at[index] = -1
            end_raw = int(item_end_raw[index])
            block = int(item_block[index])
            at = int(first_after[index])
            while at < count and sorted_block[at] == block:
                if ((int(ack_raw[sorted_position[at]]) - end_raw) & _MASK) < _HALF:
                    removed_at[index] = at
                    break
                at += 1
        removed = removed_at >= 0
        remover = np.where(removed, sorted_position[np.maximum(removed_at, 0)], -1)
        exact = removed & (ack_raw[np.maximum(remover, 0)] == item_end_raw)
        candidates = np.flatnonzero(exact)
        samples_at = remover[candidates]
        ranked = np.lexsort((item_order[candidates], item_rank[candidates], samples_at))
        candidates, samples_at = candidates[ranked], samples_at[ranked]
        oldest = np.ones(len(candidates), dtype=bool)
        oldest[1:] = samples_at[1:] != samples_at[:-1]
        candidates, samples_at = candidates[oldest], samples_at[oldest]
        samples = self.s_ts[samples_at] - item_ts[candidates]
        taken = samples != 0
        samples = samples[taken]
        sample_group = gid[samples_at[taken]]  # samples are in capture order within each group
        # Per group: count, sum, min, max, first, last and the jitter between its consecutive samples, which is
        # what TcpAnalysis._rtt accumulates one sample at a time.
        self.rtt: list[tuple[int, ...]] = []
        if len(samples):
            # Sums and steps of hostile timestamps (a sample can be near +-2^63) overflow int64: exact Python ints
            # then, as TcpAnalysis._rtt has (found by fuzzing the compiled core against this path).
            if int(np.abs(samples).max()) * 2 * len(samples) >= 1 << 63:
                samples = samples.astype(object)
            first = np.flatnonzero(np.append(True, sample_group[1:] != sample_group[:-1]))
            last = np.append(first[1:], len(samples)) - 1
            steps = np.abs(np.diff(samples, prepend=samples[0]))
            steps[first] = 0
            self.rtt = list(zip(sample_group[first].tolist(), (last - first + 1).tolist(),
                                np.add.reduceat(samples, first).tolist(), np.minimum.reduceat(samples, first).tolist(),
                                np.maximum.reduceat(samples, first).tolist(), samples[first].tolist(),
                                samples[last].tolist(), np.add.reduceat(steps, first).tolist(), strict=True))
        self.touched = np.zeros(groups, dtype=bool)  # groups whose lists must be rebuilt: held some, or keep some
        self.touched[pre[:, 0]] = True
        # The lists left over, oldest first, per group and side.
        left = np.flatnonzero(~removed)
        left = left[np.lexsort((item_order[left], item_rank[left], item_block[left]))]
        self.touched[item_block[left] >> 1] = True
        self.left_block = item_block[left].tolist()
        self.left_items = np.stack([item_seq_raw[left], item_end_raw[left], item_ts[left]], axis=1).tolist() \
            if len(left) else []
        self.groups = groups

    # -- the simple groups: their segments one by one through the reference logic, clean runs in one step each
    def _fold(self) -> None:
        tracker = self.tracker
        tracker.forget_identities()
        self.group_keys_simple = [self.group_keys[group] for group in self.s_old_group.tolist()]
        self.first_side = self.s_side[self.s_group_start].tolist()
        single = self.item_start[~self.is_run]
        rows = self.s_row[single]
        fields = (self.frames[rows], self.incl[rows], self.s_ts[single], self.s_orig[single], self.s_flags[single],
                  self.s_seq[single], self.s_ack[single], self.s_window[single], self.s_payload[single],
                  self.s_payload_offset[single])
        singles = iter(zip(*(field.tolist() for field in fields), strict=True))
        buf = self.buf
        key_at = self.key_offset
        header_at = key_at + 8
        tcp_segment = tracker.tcp_segment
        runs = iter(self.runs)
        for is_run in self.is_run.tolist():
            if is_run:
                run = next(runs)
                if not self._apply_run(run):
                    for at in range(run[2], run[3]):
                        self._segment(at)
                continue
            frame, size, ts_ns, orig_len, flags, seq, ack, window, payload_len, payload_offset = next(singles)
            data = buf[frame:frame + size]
            tcp_segment(data[key_at:key_at + 12], ts_ns, orig_len, data, flags, seq, ack, window, payload_len,
                        header_at, payload_offset)
        stats = tracker.stats
        stats.packets += len(single)
        stats.decoded += len(single)

    def _segment(self, at: int) -> None:
        """One segment of a clean run whose conversation was not in the state the run needs, one by one."""
        frame = int(self.frames[self.s_row[at]])
        data = self.buf[frame:frame + int(self.incl[self.s_row[at]])]
        key_at = self.key_offset
        stats = self.tracker.stats
        stats.packets += 1
        stats.decoded += 1
        self.tracker.tcp_segment(data[key_at:key_at + 12], int(self.s_ts[at]), int(self.s_orig[at]), data,
                                 int(self.s_flags[at]), int(self.s_seq[at]), int(self.s_ack[at]),
                                 int(self.s_window[at]), int(self.s_payload[at]), key_at + 8,
                                 int(self.s_payload_offset[at]))

    def _apply_run(self, run: tuple[Any, ...]) -> bool:
        """Folds one clean run into its conversation; False (nothing changed) when its entry state differs."""
        side0, side1, start, stop, first_ts, first_data_ts, ts_min, ts_max, group = run
        tracker = self.tracker
        flow, key_outbound = tracker.tcp_conversations[self.group_keys_simple[group]]
        tcp = flow.tcp
        assert tcp is not None
        outbound0 = key_outbound if self.first_side[group] == 0 else not key_outbound
        directions = (tcp.out, tcp.in_) if outbound0 else (tcp.in_, tcp.out)
        if (directions[0].nextseq != side0[0] or directions[0].maxseqtobeacked != side0[0]
                or directions[1].nextseq != side1[0] or directions[1].maxseqtobeacked != side1[0]):
            return False
        data_packets = 0
        fin_packets = 0
        history = []
        for aggregate, direction, outbound in ((side0, directions[0], outbound0),
                                               (side1, directions[1], not outbound0)):
            (_entry, packets, size, payload, data, last_ack, last_ts, last_window, next_seq, next_ts, ack_changed,
             first_data, first_ack, fins, first_fin) = aggregate
            if not packets:
                continue
            direction.lastack = last_ack
            direction.lastack_ns = last_ts
            direction.window = last_window
            direction.window_from_syn = False
            direction.lastsegmentflags = 0
            if ack_changed:
                direction.dupacknum = 0
            if next_seq >= 0:
                direction.nextseq = next_seq
                direction.nextseq_ns = next_ts
                direction.maxseqtobeacked = next_seq
            data_packets += data
            fin_packets += fins
            if outbound:
                flow.packets_out += packets
                flow.bytes_out += size
                flow.payload_out += payload
                seen = tcp.seen_out
            else:
                flow.packets_in += packets
                flow.bytes_in += size
                flow.payload_in += payload
                seen = tcp.seen_in
            tcp.payload_bytes += payload
            tcp.payload_segments += data
            if first_data < _BIG and not seen & H_DATA:
                history.append((first_data, outbound, H_DATA))
            if first_ack < _BIG and not seen & H_ACK:
                history.append((first_ack, outbound, H_ACK))
            if fins and not seen & H_FIN:
                history.append((first_fin, outbound, H_FIN))
        if not tcp.first_rtt_ns and tcp.mru_syn_ns:
            if first_ts != tcp.mru_syn_ns:
                tcp.first_rtt_ns = first_ts - tcp.mru_syn_ns
            else:  # a zero time is "not yet": the next segment with another time sets it
                for ts_ns in self.s_ts[start:stop].tolist():
                    if ts_ns != tcp.mru_syn_ns:
                        tcp.first_rtt_ns = ts_ns - tcp.mru_syn_ns
                        break
        if data_packets and tcp.first_data_ns < 0:
            tcp.first_data_ns = first_data_ts
        if history:
            history.sort()
            for _at, outbound, bit in history:
                tcp.note_history(outbound, bit)
        packets = stop - start
        flow.completeness |= (COMPLETENESS_DATA if data_packets else 0) | \
            (COMPLETENESS_ACK if packets > data_packets else 0) | (COMPLETENESS_FIN if fin_packets else 0)
        tcp.fin_count += fin_packets
        if ts_max > flow.last_ns:
            flow.last_ns = ts_max
        if ts_min < flow.first_ns:
            flow.first_ns = ts_min
        stats = tracker.stats
        stats.packets += packets
        stats.decoded += packets
        app = tracker.app
        if data_packets and app is not None and flow.app is not IGNORED:
            self._run_payloads(flow, outbound0, start, stop)
        return True

    def _run_payloads(self, flow: Any, outbound0: bool, start: int, stop: int) -> None:
        """The payloads of a clean run, in order, to the application tracker (until it ignores the flow)."""
        app = self.tracker.app
        assert app is not None
        if self.payloads is None:
            # Every segment of the batch that carries payload, as Python values, made once when a run first needs it.
            at = np.flatnonzero(self.s_payload)
            rows = self.s_row[at]
            self.payload_at = at.tolist()
            self.payloads = list(zip(self.frames[rows].tolist(), self.incl[rows].tolist(), self.s_side[at].tolist(),
                                     self.s_ts[at].tolist(), self.s_seq[at].tolist(),
                                     self.s_payload_offset[at].tolist(), self.s_payload[at].tolist(), strict=True))
        buf = self.buf
        first, last = bisect.bisect_left(self.payload_at, start), bisect.bisect_left(self.payload_at, stop)
        for frame, size, side, ts_ns, seq, offset, length in self.payloads[first:last]:
            if flow.app is IGNORED:
                break
            app.payload(flow, outbound0 if side == 0 else not outbound0, ts_ns, seq, buf[frame:frame + size], offset,
                        length)

    def _hand_back(self) -> None:
        """RTT samples and the leftover unacknowledged lists to each simple group's conversation."""
        if not len(self.s_row):
            return
        live = self.tracker.tcp_conversations
        keys = [self.group_keys[group] for group in self.s_old_group.tolist()]
        first_side = self.s_side[self.s_group_start].tolist()
        touched = self.touched.tolist()
        tcps: list[tuple[TcpAnalysis, tuple[Direction, Direction]] | None] = []
        for group in range(self.groups):
            flow, key_outbound = live[keys[group]]
            tcp = flow.tcp
            assert tcp is not None
            tcp.track_acks = True
            if not touched[group]:
                tcps.append(None)  # its lists stayed empty: tracking was off for the whole batch
                continue
            outbound0 = key_outbound if first_side[group] == 0 else not key_outbound
            sides = (tcp.out, tcp.in_) if outbound0 else (tcp.in_, tcp.out)
            for direction in sides:
                direction.segments = []
                direction.ascending = True
            tcps.append((tcp, sides))
        for block, entry in zip(self.left_block, self.left_items, strict=True):
            held = tcps[block >> 1]
            assert held is not None
            direction = held[1][block & 1]
            segments = direction.segments
            if segments and ((segments[-1][1] - entry[1]) & _MASK) < _HALF:
                direction.ascending = False
            segments.append(entry)
        for group, count, total, smallest, largest, first, last, jitter in self.rtt:
            flow, _outbound = live[keys[group]]
            tcp = flow.tcp
            assert tcp is not None
            if tcp.rtt_samples:
                tcp.rtt_jitter_sum_ns += abs(first - tcp.rtt_last_ns) + jitter
                tcp.rtt_min_ns = min(tcp.rtt_min_ns, smallest)
                tcp.rtt_max_ns = max(tcp.rtt_max_ns, largest)
            else:
                tcp.rtt_jitter_sum_ns += jitter
                tcp.rtt_min_ns = smallest
                tcp.rtt_max_ns = largest
            tcp.rtt_samples += count
            tcp.rtt_sum_ns += total
            tcp.rtt_last_ns = last
