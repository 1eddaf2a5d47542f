"""TCP analysis of one conversation, following Wireshark's sequence analysis so that tshark is the reference.

The per-segment logic is ``tcp_analyze_sequence_number`` of Wireshark 4.0 (epan/dissectors/packet-tcp.c; checked
frame by frame against tshark 4.0.17 on crafted, lossy and real kernel captures), with its
default preferences (relative sequence numbers do not matter here; "fast retransmission supersedes out-of-order"
on; no default window scaling). Every quirk that changes a flag is kept on purpose: a ``nextseq`` of 0 means
"unknown", the unacknowledged-segment list holds at most ``MAX_UNACKED_SEGMENTS`` segments, a zero-window probe
does not advance ``nextseq``, a fast or spurious retransmission is also a retransmission (tshark sets
``tcp.analysis.retransmission`` on both), and time differences that would be negative wrap to "too large", as
Wireshark's unsigned 64-bit arithmetic does.

Per segment, in Wireshark's order (the names are the tshark fields):

- ``tcp.analysis.zero_window_probe``: exactly 1 byte at the next expected sequence while the peer's window is 0;
  no further checks on that segment's sending side.
- ``tcp.analysis.zero_window``: window field 0 on a segment without SYN, FIN or RST.
- ``tcp.analysis.lost_segment`` ("previous segment not captured"): ``seq`` beyond the next expected sequence
  (RST excluded).
- ``tcp.analysis.keep_alive``: 0 or 1 byte at the next expected sequence minus one (no SYN, FIN, RST).
- ``tcp.analysis.window_full``: payload that ends exactly at the peer's last ACK plus its (scaled) window; only
  once the window scaling of the peer is known (it saw a SYN).
- ``tcp.analysis.duplicate_ack``: no payload, same window (non-zero), same ``seq`` and ``ack`` as the previous
  segment of that direction, no SYN, FIN or RST (keep-alive ACKs and zero-window-probe ACKs are not dup ACKs).
  The dup-ACK count of a direction restarts when its ACK number changes.
- For a segment with payload, SYN or FIN that is not a keep-alive: spurious retransmission when it ends at or
  before the peer's last ACK; else fast retransmission when it does not advance the sequence, the peer sent at
  least 2 duplicate ACKs for exactly this ``seq`` and its last ACK is under 20 ms old; else out-of-order when it
  does not advance the sequence, comes less than the initial RTT (3 ms when unknown) after the highest segment
  and does not end where the highest one ended; else retransmission when it does not advance the sequence.
  More than 1 byte starting at the next expected sequence minus one counts as advancing (new data after a
  zero-window probe).
- ``tcp.analysis.ack_rtt``: an ACK that acknowledges exactly the end of a not yet acknowledged segment of the
  peer; the sample is the time since that segment (the oldest one ending there, as Wireshark's list walk does),
  and a zero time is no sample (tshark does not show it).
- ``tcp.analysis.initial_rtt``: the first segment with ACK and without SYN after a SYN, minus the most recent SYN.
"""

from __future__ import annotations

from typing import Any

from freezeframe.dissect.tcp.flags import (
    A_ACK_LOST_PACKET,
    A_DUPLICATE_ACK,
    A_FAST_RETRANSMISSION,
    A_KEEP_ALIVE,
    A_KEEP_ALIVE_ACK,
    A_LOST_PACKET,
    A_OUT_OF_ORDER,
    A_RETRANSMISSION,
    A_RETRANSMITTED,
    A_SPURIOUS_RETRANSMISSION,
    A_WINDOW_FULL,
    A_WINDOW_UPDATE,
    A_ZERO_WINDOW,
    A_ZERO_WINDOW_PROBE,
    A_ZERO_WINDOW_PROBE_ACK,
    H_ACK,
    H_DATA,
    H_FIN,
    H_RETRANSMISSION,
    H_RST,
    H_SYN,
    H_SYNACK,
    H_ZERO_WINDOW,
    HISTORY_IN,
    HISTORY_LETTERS,
    HISTORY_OUT,
    TH_ACK,
    TH_FIN,
    TH_RST,
    TH_SYN,
)

MAX_UNACKED_SEGMENTS = 10_000  # TCP_MAX_UNACKED_SEGMENTS: Wireshark stops tracking past this many
FAST_RETRANSMISSION_NS = 20_000_000  # a fast retransmission follows the peer's dup ACK within 20 ms
DEFAULT_OOO_THRESHOLD_NS = 3_000_000  # out-of-order window when the initial RTT is unknown
MAX_WINDOW_SHIFT = 14  # RFC 7323 2.3: a larger shift is treated as 14
TCPOPT_EOL = 0
TCPOPT_NOP = 1
TCPOPT_WINDOW = 3
WS_UNKNOWN = -1  # no SYN seen yet: the scaling of this direction is unknown
WS_NONE = -2  # the handshake showed that window scaling is not in use

_MASK = 0xFFFFFFFF
_MASK64 = 0xFFFFFFFFFFFFFFFF
_HALF = 0x80000000
_SFR = TH_SYN | TH_FIN | TH_RST
_SF = TH_SYN | TH_FIN
_SFRA = TH_SYN | TH_FIN | TH_RST | TH_ACK
_SYN_ACK = TH_SYN | TH_ACK


def window_scale_option(data: bytes, start: int, end: int) -> int | None:
    """The shift of a Window Scale option (RFC 7323 2.2, kind 3, length 3) in ``data[start:end]``, else None."""
    end = min(end, len(data))
    position = start
    while position < end:
        kind = data[position]
        if kind == TCPOPT_EOL:
            return None
        if kind == TCPOPT_NOP:
            position += 1
            continue
        if position + 1 >= end:
            return None
        length = data[position + 1]
        if length < 2:
            return None  # malformed: stop instead of looping
        if kind == TCPOPT_WINDOW and length == 3 and position + 2 < end:
            return min(data[position + 2], MAX_WINDOW_SHIFT)
        position += length
    return None


class Direction:
    """The sequence state Wireshark keeps per direction (tcp_flow_t plus tcp_analyze_seq_flow_info_t)."""

    __slots__ = ("nextseq", "nextseq_ns", "maxseqtobeacked", "lastack", "lastack_ns", "window", "win_scale",
                 "window_from_syn", "dupacknum", "lastsegmentflags", "segments", "ascending", "announced_scale")

    def __init__(self) -> None:
        self.nextseq = 0
        self.nextseq_ns = 0
        self.maxseqtobeacked = 0
        self.lastack = 0
        self.lastack_ns = 0
        self.window = _MASK  # G_MAXUINT32 until the first segment
        self.win_scale = WS_UNKNOWN
        self.window_from_syn = False  # the stored window came from a SYN, which is never scaled
        self.dupacknum = 0
        self.lastsegmentflags = 0
        # Unacknowledged segments as [seq, nextseq, ts_ns], oldest first (Wireshark keeps newest first).
        self.segments: list[list[int]] = []
        self.ascending = True  # each segment's nextseq is after the previous one's: lets an ACK skip the list walk
        self.announced_scale: int | None = None


# The checks both paths of ``TcpAnalysis.segment`` make (the fast path for the common segment, the general path for
# every other): one definition each, so the two cannot drift apart.


def _ack_of_unseen(rev: Direction, ack: int) -> int:
    """A_ACK_LOST_PACKET when ``ack`` is beyond everything the peer was seen sending (reported once per hole)."""
    rev_max = rev.maxseqtobeacked
    if rev_max and ((rev_max - ack) & _MASK) >= _HALF:
        rev.maxseqtobeacked = rev.nextseq  # so the same hole is reported once
        return A_ACK_LOST_PACKET
    return 0


def _window_full(rev: Direction, end: int) -> bool:
    """Whether data ending at ``end`` fills the peer's (scaled) window exactly; never before the peer's SYN."""
    scale = rev.win_scale
    if scale == WS_UNKNOWN:
        return False
    shift = 0 if rev.window_from_syn or scale == WS_NONE else scale
    return end == (rev.lastack + ((rev.window << shift) & _MASK)) & _MASK


def _acknowledged(rev_lastack: int, end: int) -> bool:
    """Whether data ending at ``end`` was already acknowledged by the peer (a spurious retransmission)."""
    return bool(rev_lastack) and (end == rev_lastack or ((end - rev_lastack) & _MASK) >= _HALF)


def conn_state(out: int, in_: int) -> str:
    """Zeek's conn_state (base/protocols/conn/main.zeek) from the history bits (H_*) each side sent."""
    syn = bool(out & H_SYN)
    synack = bool(in_ & H_SYNACK)
    if syn and not synack:
        if in_ & H_RST:
            return "REJ"
        if out & H_RST:
            return "RSTOS0"
        if out & H_FIN:
            return "SH"
        return "S0"
    if synack and not syn:
        if in_ & H_RST:
            return "RSTRH"
        if in_ & H_FIN:
            return "SHR"
        return "OTH"
    if not syn:
        return "OTH"
    if out & H_RST:
        return "RSTO"
    if in_ & H_RST:
        return "RSTR"
    if out & H_FIN and in_ & H_FIN:
        return "SF"
    if out & H_FIN:
        return "S2"
    if in_ & H_FIN:
        return "S3"
    return "S1"


def history_bits(history: str) -> tuple[int, int]:
    """(the initiator's, the responder's) H_* bits of a ``history`` string (upper case is the initiator's letter)."""
    out = in_ = 0
    for bit, letter in HISTORY_LETTERS.items():
        if letter.upper() in history:
            out |= bit
        if letter in history:
            in_ |= bit
    return out, in_


class TcpAnalysis:
    """Wireshark's TCP analysis of one conversation plus the per-connection counters built from its flags.

    ``segment`` takes every TCP segment of the conversation in capture order; state carries across capture
    segments because the object lives as long as the conversation.
    """

    __slots__ = ("out", "in_", "retransmissions_out", "retransmissions_in", "fast_retransmissions",
                 "spurious_retransmissions", "out_of_order", "dup_acks_out", "dup_acks_in", "lost_segments",
                 "zero_window_out", "zero_window_in", "window_full", "keepalives", "rtt_samples", "rtt_sum_ns",
                 "rtt_min_ns", "rtt_max_ns", "rtt_last_ns", "rtt_jitter_sum_ns", "payload_bytes",
                 "retransmitted_bytes", "payload_segments", "rst_count", "fin_count", "first_syn_ns",
                 "first_synack_ns", "first_data_ns", "mru_syn_ns", "first_rtt_ns", "history", "seen_out",
                 "seen_in", "track_acks")

    def __init__(self) -> None:
        self.out = Direction()
        self.in_ = Direction()
        self.retransmissions_out = 0
        self.retransmissions_in = 0
        self.fast_retransmissions = 0
        self.spurious_retransmissions = 0
        self.out_of_order = 0
        self.dup_acks_out = 0
        self.dup_acks_in = 0
        self.lost_segments = 0
        self.zero_window_out = 0
        self.zero_window_in = 0
        self.window_full = 0
        self.keepalives = 0
        self.rtt_samples = 0
        self.rtt_sum_ns = 0
        self.rtt_min_ns = 0
        self.rtt_max_ns = 0
        self.rtt_last_ns = -1
        self.rtt_jitter_sum_ns = 0
        self.payload_bytes = 0
        self.retransmitted_bytes = 0
        self.payload_segments = 0
        self.rst_count = 0
        self.fin_count = 0
        self.first_syn_ns = -1
        self.first_synack_ns = -1
        self.first_data_ns = -1
        self.mru_syn_ns = 0  # Wireshark's ts_mru_syn: the most recent SYN; 0 is "none"
        self.first_rtt_ns = 0  # Wireshark's ts_first_rtt (tcp.analysis.initial_rtt); 0 is "not yet"
        self.history: list[str] = []
        self.seen_out = 0
        self.seen_in = 0
        # The unacknowledged-segment lists and the ack_rtt samples taken from them; off while the batched path
        # (dissect.tcp.batch) computes both for a whole batch of this conversation's packets.
        self.track_acks = True

    def segment(self, outbound: bool, ts: int, seq: int, ack: int, seglen: int, flags: int, window: int,
                window_scale: int | None = None) -> int:
        """Analyse one segment (``window`` as sent, ``window_scale`` from a SYN's options); returns its A_* flags."""
        if outbound:
            fwd = self.out
            rev = self.in_
        else:
            fwd = self.in_
            rev = self.out
        fwd_next = fwd.nextseq
        if (seq == fwd_next and fwd_next and window and flags & _SFRA == TH_ACK and (seglen or ack != fwd.lastack)
                and (seglen != 1 or rev.window)):
            # Fast path for the overwhelmingly common segment: ACK without SYN, FIN or RST, exactly at the next
            # expected sequence, a non-zero window, and either payload or a new ACK number. It gives the same result
            # as the general path below, evaluating only the checks that can still flag such a segment (window
            # full, ACK of a segment not captured, spurious retransmission); tests/unit/dissect compares both.
            if ack != fwd.lastack:
                fwd.dupacknum = 0
            ta = _ack_of_unseen(rev, ack)
            if seglen:
                end = (seq + seglen) & _MASK
                if _window_full(rev, end):
                    ta |= A_WINDOW_FULL
                if _acknowledged(rev.lastack, end):
                    ta |= A_SPURIOUS_RETRANSMISSION
                if self.track_acks and len(fwd.segments) < MAX_UNACKED_SEGMENTS:
                    self._remember(fwd, seq, end, ts)
                fwd.nextseq = end  # seglen < 2^31: the segment always advances nextseq
                fwd.nextseq_ns = ts
            maxseqtobeacked = fwd.maxseqtobeacked
            if seq == maxseqtobeacked or not maxseqtobeacked:
                fwd.maxseqtobeacked = fwd.nextseq
            fwd.window = window
            fwd.window_from_syn = False
            fwd.lastack = ack
            fwd.lastack_ns = ts
            fwd.lastsegmentflags = ta
            if rev.segments and self.track_acks:
                self._take_ack(rev, ack, ts)
            if not self.first_rtt_ns and self.mru_syn_ns:
                self.first_rtt_ns = ts - self.mru_syn_ns
            if seglen:
                bits = H_DATA
                self.payload_bytes += seglen
                self.payload_segments += 1
                if self.first_data_ns < 0:
                    self.first_data_ns = ts
            else:
                bits = H_ACK
            if ta:
                bits |= self._count(outbound, ta, seglen)
            new = bits & ~(self.seen_out if outbound else self.seen_in)
            if new:
                self.note_history(outbound, new)
            return ta
        ta = 0
        # seq relative to the next expected one: GT_SEQ(seq, nextseq) is 0 < ahead <= 2^31, LT_SEQ is >= 2^31.
        ahead = (seq - fwd_next) & _MASK
        if seglen == 1 and not ahead and rev.window == 0:
            ta = A_ZERO_WINDOW_PROBE
        elif flags & _SFR:
            # Zero window, keep-alive, window-full and the ACK checks all exclude SYN, FIN and RST.
            if fwd_next and 0 < ahead <= _HALF and not flags & TH_RST:
                ta = A_LOST_PACKET
        else:
            if window == 0:
                ta = A_ZERO_WINDOW
            if fwd_next and 0 < ahead <= _HALF:
                ta |= A_LOST_PACKET
            if seglen:
                if seglen == 1 and ahead == _MASK:
                    ta |= A_KEEP_ALIVE
                if _window_full(rev, (seq + seglen) & _MASK):
                    ta |= A_WINDOW_FULL
            elif not ahead:
                if ack == fwd.lastack:
                    if window and window != fwd.window:
                        ta |= A_WINDOW_UPDATE
                    elif window and rev.lastsegmentflags & A_KEEP_ALIVE:
                        ta |= A_KEEP_ALIVE_ACK
                    elif window == 0 and fwd.window == 0 and rev.lastsegmentflags & A_ZERO_WINDOW_PROBE:
                        ta |= A_ZERO_WINDOW_PROBE_ACK
                    elif window:
                        fwd.dupacknum += 1
                        ta |= A_DUPLICATE_ACK
            elif ahead == _MASK:
                ta |= A_KEEP_ALIVE
        # finished_fwd
        if ack != fwd.lastack:
            fwd.dupacknum = 0
        if flags & TH_ACK:
            ta |= _ack_of_unseen(rev, ack)
        if (seglen > 0 or flags & _SF) and not ta & A_KEEP_ALIVE:
            not_advanced = fwd_next and ahead >= _HALF and not (seglen > 1 and ahead == _MASK)
            end = (seq + seglen) & _MASK
            rev_lastack = rev.lastack
            if seglen > 0 and _acknowledged(rev_lastack, end):
                ta |= A_SPURIOUS_RETRANSMISSION
            elif not_advanced:
                # Wireshark holds these times in unsigned 64-bit integers: a negative difference is huge.
                since_ack = (ts - rev.lastack_ns) & _MASK64
                since_next = (ts - fwd.nextseq_ns) & _MASK64
                threshold = self.first_rtt_ns & _MASK64 if self.first_rtt_ns else DEFAULT_OOO_THRESHOLD_NS
                if rev.dupacknum >= 2 and rev_lastack == seq and since_ack < FAST_RETRANSMISSION_NS:
                    ta |= A_FAST_RETRANSMISSION
                elif since_next < threshold and fwd_next != (end + (1 if flags & _SF else 0)) & _MASK:
                    ta |= A_OUT_OF_ORDER
                else:
                    ta |= A_RETRANSMISSION
        # finished_checking_retransmission_type
        nextseq = (seq + seglen) & _MASK
        if (seglen or flags & _SF) and len(fwd.segments) < MAX_UNACKED_SEGMENTS:
            # As in Wireshark, SYN and FIN count in nextseq only for a segment that the list has room for.
            if flags & _SF:
                nextseq = (nextseq + 1) & _MASK
            if self.track_acks:
                self._remember(fwd, seq, nextseq, ts)
        if not ta & A_ZERO_WINDOW_PROBE:
            if not fwd_next or ((fwd_next - nextseq) & _MASK) >= _HALF:
                fwd.nextseq = nextseq
                fwd.nextseq_ns = ts
            if seq == fwd.maxseqtobeacked or not fwd.maxseqtobeacked:
                fwd.maxseqtobeacked = fwd.nextseq
        fwd.window = window
        fwd.window_from_syn = bool(flags & TH_SYN)
        fwd.lastack = ack
        fwd.lastack_ns = ts
        fwd.lastsegmentflags = ta
        if rev.segments and self.track_acks:
            self._take_ack(rev, ack, ts)
        if flags & TH_SYN:
            self._syn(fwd, rev, flags, ts, window_scale)
        elif not self.first_rtt_ns and self.mru_syn_ns and flags & TH_ACK:
            self.first_rtt_ns = ts - self.mru_syn_ns
        # Zeek history letter of this segment (the flags add t and w below).
        if flags & TH_SYN:
            bits = H_SYNACK if flags & TH_ACK else H_SYN
        elif seglen:
            bits = H_DATA
        elif flags & TH_ACK and not flags & (TH_FIN | TH_RST):
            bits = H_ACK
        else:
            bits = 0
        if seglen:
            self.payload_bytes += seglen
            self.payload_segments += 1
            if self.first_data_ns < 0:
                self.first_data_ns = ts
        if flags & (TH_FIN | TH_RST):
            if flags & TH_FIN:
                bits |= H_FIN
                self.fin_count += 1
            if flags & TH_RST:
                bits |= H_RST
                self.rst_count += 1
        if ta:
            bits |= self._count(outbound, ta, seglen)
        seen = self.seen_out if outbound else self.seen_in
        if bits & ~seen:
            self.note_history(outbound, bits & ~seen)
        return ta

    def note_history(self, outbound: bool, new: int) -> None:
        if outbound:
            self.history += HISTORY_OUT[new]
            self.seen_out |= new
        else:
            self.history += HISTORY_IN[new]
            self.seen_in |= new

    @staticmethod
    def _remember(fwd: Direction, seq: int, end: int, ts: int) -> None:
        """A segment into its side's unacknowledged list (the caller checked the list has room)."""
        segments = fwd.segments
        if segments and ((segments[-1][1] - end) & _MASK) < _HALF:
            fwd.ascending = False
        segments.append([seq, end, ts])

    def _take_ack(self, rev: Direction, ack: int, ts: int) -> None:
        """``ack`` against the peer's (non-empty) unacknowledged list; records an ack_rtt sample when one is due."""
        segments = rev.segments
        newest = segments[-1]
        if rev.ascending and (ack == newest[1] or ((newest[1] - ack) & _MASK) >= _HALF):
            # Everything is acknowledged; only the newest segment can end exactly at this ACK.
            segments.clear()
            if ack == newest[1] and ts != newest[2]:
                self._rtt(ts - newest[2])
        else:
            self._acknowledge(rev, ack, ts)

    def _acknowledge(self, rev: Direction, ack: int, ts: int) -> None:
        """Wireshark's walk of the peer's unacknowledged segments (newest first); records one ack_rtt sample."""
        segments = rev.segments
        acked_ns = -1
        kept: list[list[int]] = []
        for index in range(len(segments) - 1, -1, -1):
            entry = segments[index]
            seq, nextseq, sent_ns = entry
            if ack == nextseq:
                acked_ns = sent_ns  # a later (older) exact match overwrites, as in Wireshark
                continue
            if ((seq - ack) & _MASK) >= _HALF and ((ack - nextseq) & _MASK) >= _HALF:
                entry[0] = ack  # partly acknowledged: keep the rest
                kept.append(entry)
            elif ((ack - nextseq) & _MASK) >= _HALF:
                kept.append(entry)  # beyond this ACK
            # else: older than this ACK, dropped
        if len(kept) != len(segments):
            kept.reverse()
            segments[:] = kept
        if not segments:
            rev.ascending = True
        # Wireshark shows tcp.analysis.ack_rtt only when the time is non-zero ("something we are acking").
        if acked_ns >= 0 and ts != acked_ns:
            self._rtt(ts - acked_ns)

    def _rtt(self, sample: int) -> None:
        if self.rtt_samples:
            self.rtt_jitter_sum_ns += abs(sample - self.rtt_last_ns)
            if sample < self.rtt_min_ns:
                self.rtt_min_ns = sample
            if sample > self.rtt_max_ns:
                self.rtt_max_ns = sample
        else:
            self.rtt_min_ns = self.rtt_max_ns = sample
        self.rtt_samples += 1
        self.rtt_sum_ns += sample
        self.rtt_last_ns = sample

    def _syn(self, fwd: Direction, rev: Direction, flags: int, ts: int, window_scale: int | None) -> None:
        """Window scaling as Wireshark settles it from the handshake, and the handshake timestamps."""
        synack = flags & _SYN_ACK == _SYN_ACK
        if window_scale is not None:
            fwd.win_scale = window_scale
            if fwd.announced_scale is None:
                fwd.announced_scale = window_scale
        if fwd.win_scale == WS_UNKNOWN:
            fwd.win_scale = WS_NONE
            rev.win_scale = WS_NONE
        elif synack and rev.win_scale == WS_NONE:
            fwd.win_scale = WS_NONE
        if synack:
            if self.first_synack_ns < 0:
                self.first_synack_ns = ts
        else:
            self.mru_syn_ns = ts
            if self.first_syn_ns < 0:
                self.first_syn_ns = ts

    def _count(self, outbound: bool, ta: int, seglen: int) -> int:
        """Counts a flagged segment; returns the history bits its flags add."""
        bits = 0
        if ta & A_RETRANSMITTED:
            bits |= H_RETRANSMISSION
            self.retransmitted_bytes += seglen
            if outbound:
                self.retransmissions_out += 1
            else:
                self.retransmissions_in += 1
            if ta & A_FAST_RETRANSMISSION:
                self.fast_retransmissions += 1
            if ta & A_SPURIOUS_RETRANSMISSION:
                self.spurious_retransmissions += 1
        if ta & A_OUT_OF_ORDER:
            self.out_of_order += 1
        if ta & A_DUPLICATE_ACK:
            if outbound:
                self.dup_acks_out += 1
            else:
                self.dup_acks_in += 1
        if ta & A_LOST_PACKET:
            self.lost_segments += 1
        if ta & A_ZERO_WINDOW:
            bits |= H_ZERO_WINDOW
            if outbound:
                self.zero_window_out += 1
            else:
                self.zero_window_in += 1
        if ta & A_WINDOW_FULL:
            self.window_full += 1
        if ta & A_KEEP_ALIVE:
            self.keepalives += 1
        return bits

    def conn_state(self) -> str:
        """Zeek's conn_state from what each side sent (base/protocols/conn/main.zeek)."""
        return conn_state(self.seen_out, self.seen_in)

    def close(self) -> str:
        """'handshake_failed' when a SYN was never answered by a SYN-ACK, else 'rst', 'fin' or 'open'."""
        if self.seen_out & H_SYN and not self.seen_in & H_SYNACK:
            return "handshake_failed"
        if self.rst_count:
            return "rst"
        if self.fin_count:
            return "fin"
        return "open"

    def columns(self) -> dict[str, Any]:
        """The connection row's TCP insight columns (names as in schemas.TCP_INSIGHTS)."""
        first_syn = self.first_syn_ns
        retransmissions = self.retransmissions_out + self.retransmissions_in
        samples = self.rtt_samples
        return {
            "conn_state": self.conn_state(),
            "history": "".join(self.history),
            "syn_to_synack_us": (self.first_synack_ns - first_syn) // 1000
            if first_syn >= 0 and self.first_synack_ns >= first_syn else None,
            "handshake_us": self.first_rtt_ns // 1000 if self.first_rtt_ns else None,
            "time_to_first_data_us": (self.first_data_ns - first_syn) // 1000
            if first_syn >= 0 and self.first_data_ns >= first_syn else None,
            "retransmissions": retransmissions,
            "retransmissions_out": self.retransmissions_out,
            "retransmissions_in": self.retransmissions_in,
            "fast_retransmissions": self.fast_retransmissions,
            "spurious_retransmissions": self.spurious_retransmissions,
            "out_of_order": self.out_of_order,
            "dup_acks": self.dup_acks_out + self.dup_acks_in,
            "dup_acks_out": self.dup_acks_out,
            "dup_acks_in": self.dup_acks_in,
            "lost_segments": self.lost_segments,
            # NULL, not 0.0, without payload: retransmitted SYNs over no data segments are not a 0 % rate.
            "retransmission_rate": retransmissions / self.payload_segments if self.payload_segments else None,
            "zero_window_events": self.zero_window_out + self.zero_window_in,
            "zero_window_events_out": self.zero_window_out,
            "zero_window_events_in": self.zero_window_in,
            "window_full_events": self.window_full,
            "window_scale": self.out.announced_scale,
            "window_scale_in": self.in_.announced_scale,
            "keepalives": self.keepalives,
            "rtt_min_us": self.rtt_min_ns // 1000 if samples else None,
            "rtt_avg_us": self.rtt_sum_ns // samples // 1000 if samples else None,
            "rtt_max_us": self.rtt_max_ns // 1000 if samples else None,
            "rtt_samples": samples,
            "rtt_jitter_us": self.rtt_jitter_sum_ns // (samples - 1) // 1000 if samples > 1 else None,
            "bytes_total": self.payload_bytes,
            "goodput_bytes": self.payload_bytes - self.retransmitted_bytes,
            "rst_count": self.rst_count,
            "fin_count": self.fin_count,
            "close": self.close(),
        }
