"""Application-layer dispatch: hands the TCP/UDP payloads that ``ConnectionTracker`` has already decoded to the
DNS, HTTP and TLS modules, so every packet is decoded once for all tables.

Each conversation is classified once, on its first payload: port 53 is DNS (RFC 1035 4.2.1 over UDP, 4.2.2 over
TCP); other TCP payloads that open with a TLS handshake record (RFC 8446 5.1) are TLS, and those that open with an
HTTP method token (RFC 9112 3) are HTTP. Everything else is marked uninteresting, which costs one attribute test
per later packet.

TCP payloads go through ``TcpDirection``, a per-direction reassembler: bytes already seen (retransmissions,
overlaps) are trimmed by sequence number, segments that arrive early wait (bounded) for the hole before them to
be filled, and a hole that stays open (a segment the capture missed, a snaplen cut) ends that direction, because
a byte-stream parser cannot resynchronise reliably after it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import pyarrow as pa

from freezeframe.dissect.decode import IPPROTO_UDP
from freezeframe.dissect.dns import DnsTracker
from freezeframe.dissect.http import HttpTracker
from freezeframe.dissect.rows import AppStats, FlowIdentity
from freezeframe.dissect.tls import TlsTracker

DNS_PORT = 53
HTTP_METHODS = (b"GET ", b"POST ", b"PUT ", b"HEAD ", b"DELETE ", b"OPTIONS ", b"PATCH ", b"CONNECT ", b"TRACE ")
TLS_HANDSHAKE = 22
TLS_SERVER_HELLO = 2
SYN_SEEN = 0x01  # tcp.completeness bits (connections.COMPLETENESS_SYN / _SYNACK)
SYN_ACK_SEEN = 0x02

class FlowLike(Protocol):
    """What the application layer reads from connection tracking's per-flow state."""

    proto: int
    sport: int
    dport: int
    app: Any
    completeness: int  # Wireshark tcp.completeness bits: 1 the initiator's SYN, 2 the responder's SYN-ACK seen
    base_seq_out: int  # initial sequence number of each direction (-1 until known)
    base_seq_in: int


class TcpDirection:
    """Reassembly of one TCP direction: returns the bytes not seen before, in sequence order, with their times.

    A segment that arrives ahead of the next expected sequence (reordering, or a loss that a retransmission will
    fill) waits, up to ``MAX_PENDING_SEGMENTS`` segments and ``MAX_PENDING_BYTES`` bytes; once the hole is filled the
    waiting data follows, each piece with the time of the segment that carried it. A hole that is never filled
    (the capture missed the segment) or a snaplen cut ends the direction: it is counted and parsing stops there,
    because a byte-stream parser cannot resynchronise reliably.
    """

    __slots__ = ("next_seq", "broken", "pending", "pending_bytes")

    MAX_PENDING_SEGMENTS = 256
    MAX_PENDING_BYTES = 1 << 20

    def __init__(self) -> None:
        self.next_seq = -1
        self.broken = False
        self.pending: dict[int, tuple[int, bytes, int]] = {}  # seq -> (ts_ns, captured bytes, length per IP)
        self.pending_bytes = 0

    def accept(self, seq: int, chunk: bytes, length: int, ts_ns: int, stats: AppStats) -> list[tuple[int, bytes]]:
        """New (ts_ns, bytes) pieces after a segment of ``length`` payload bytes at ``seq`` (``chunk`` captured)."""
        if self.broken:
            return []
        if self.next_seq < 0:
            self.next_seq = seq
        if _ahead(seq, self.next_seq) > 0:
            self._wait(seq, chunk, length, ts_ns, stats)
            return []
        pieces: list[tuple[int, bytes]] = []
        self._take(seq, chunk, length, ts_ns, pieces, stats)
        pending = self.pending
        while pending and not self.broken:
            due = [waiting for waiting in pending if _ahead(waiting, self.next_seq) <= 0]
            if not due:
                break
            waiting = min(due, key=lambda start: _ahead(start, self.next_seq))
            waiting_ts, waiting_chunk, waiting_length = pending.pop(waiting)
            self.pending_bytes -= len(waiting_chunk)
            self._take(waiting, waiting_chunk, waiting_length, waiting_ts, pieces, stats)
        return pieces

    def _take(self, seq: int, chunk: bytes, length: int, ts_ns: int, pieces: list[tuple[int, bytes]],
              stats: AppStats) -> None:
        """A segment at or before the next expected sequence: keep only its bytes not seen before."""
        behind = -_ahead(seq, self.next_seq)
        if behind >= length:
            return  # a retransmission of bytes already delivered
        new = chunk[behind:]
        if new:
            pieces.append((ts_ns, new))
        self.next_seq = (seq + length) & 0xFFFFFFFF
        if len(chunk) < length:  # snaplen cut: the missing tail is a hole
            self._break(stats)

    def _wait(self, seq: int, chunk: bytes, length: int, ts_ns: int, stats: AppStats) -> None:
        held = self.pending.get(seq)
        if held is not None:
            if held[2] >= length:
                return  # the same segment again
            self.pending_bytes -= len(held[1])
        self.pending[seq] = (ts_ns, chunk, length)
        self.pending_bytes += len(chunk)
        if len(self.pending) > self.MAX_PENDING_SEGMENTS or self.pending_bytes > self.MAX_PENDING_BYTES:
            self._break(stats)  # the hole is not going to be filled within any reasonable window

    def _break(self, stats: AppStats) -> None:
        self.broken = True
        self.pending.clear()
        self.pending_bytes = 0
        stats.tcp_stream_gaps += 1


def _ahead(seq: int, reference: int) -> int:
    """How far ``seq`` lies after ``reference`` in sequence space (RFC 9293 3.4: modulo 2**32), negative if before."""
    delta = (seq - reference) & 0xFFFFFFFF
    return delta - 0x100000000 if delta >= 0x80000000 else delta


class StreamHandler(Protocol):
    def data(self, from_client: bool, ts_ns: int, chunk: bytes) -> None: ...


class _AppFlow:
    """Per-conversation application state, stored on the flow.

    Each direction keeps only its next expected sequence number while its segments arrive in order and whole, as
    almost all do; its ``TcpDirection`` is made on the first one that does not, and from then on does the work.
    Most conversations never need one: two objects fewer per conversation saves their allocation and the cyclic
    collector's visit to each when a feed ends.
    """

    __slots__ = ("client_outbound", "handler", "next_out", "next_in", "out", "in_")

    def __init__(self, client_outbound: bool, handler: StreamHandler) -> None:
        self.client_outbound = client_outbound
        self.handler = handler
        self.next_out = -1  # while ``out`` is None: the next expected sequence number, -1 until known
        self.next_in = -1
        self.out: TcpDirection | None = None
        self.in_: TcpDirection | None = None


IGNORED = False  # flow.app value of a conversation that carries nothing the tables describe


class AppTracker:
    """Dispatches payloads to the protocol trackers and builds their tables."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.stats = AppStats()
        self.dns = DnsTracker(self.stats)
        self.http = HttpTracker(self.stats)
        self.tls = TlsTracker(self.stats)

    def payload(self, flow: FlowLike, outbound: bool, ts_ns: int, seq: int, data: bytes, offset: int,
                length: int) -> None:
        """One packet's transport payload (``length`` bytes per IP at ``data[offset:]``) on a tracked flow."""
        state = flow.app
        if state is IGNORED:
            return
        chunk = data[offset:offset + length]
        if flow.proto == IPPROTO_UDP:
            if state is None:
                if DNS_PORT not in (flow.sport, flow.dport):
                    flow.app = IGNORED
                    return
                flow.app = True
            self.dns.datagram(flow, outbound, ts_ns, chunk)
            return
        if state is None:
            state = flow.app = self._classify(flow, outbound, chunk)
            if state is IGNORED:
                return
        from_client = outbound == state.client_outbound
        direction = state.out if outbound else state.in_
        if direction is None:
            next_seq = state.next_out if outbound else state.next_in
            if next_seq < 0 and flow.completeness & (SYN_SEEN if outbound else SYN_ACK_SEEN):
                # The handshake gave this direction's ISN, so a first segment that arrives early waits for its hole.
                next_seq = ((flow.base_seq_out if outbound else flow.base_seq_in) + 1) & 0xFFFFFFFF
            if (seq == next_seq or next_seq < 0) and len(chunk) == length > 0:
                # The next segment in order and whole: TcpDirection.accept would hand back the chunk itself.
                if outbound:
                    state.next_out = (seq + length) & 0xFFFFFFFF
                else:
                    state.next_in = (seq + length) & 0xFFFFFFFF
                state.handler.data(from_client, ts_ns, chunk)
                return
            direction = TcpDirection()
            direction.next_seq = next_seq
            if outbound:
                state.out = direction
            else:
                state.in_ = direction
        for piece_ts_ns, piece in direction.accept(seq, chunk, length, ts_ns, self.stats):
            state.handler.data(from_client, piece_ts_ns, piece)

    def _classify(self, flow: FlowLike, outbound: bool, chunk: bytes) -> Any:
        if DNS_PORT in (flow.sport, flow.dport):
            # The client is the side that does not use port 53.
            client_outbound = flow.dport == DNS_PORT
            return _AppFlow(client_outbound, self.dns.stream(flow, client_outbound))
        if len(chunk) >= 3 and chunk[0] == TLS_HANDSHAKE and chunk[1] == 3:
            # Normally the ClientHello; a ServerHello first (the ClientHello was missed) comes from the server.
            client_outbound = outbound != (len(chunk) > 5 and chunk[5] == TLS_SERVER_HELLO)
            return _AppFlow(client_outbound, self.tls.stream(flow, client_outbound))
        if chunk.startswith(HTTP_METHODS):
            return _AppFlow(outbound, self.http.stream(flow, outbound))
        return IGNORED

    def close(self) -> None:
        """Forgets every row and connection (see ``ConnectionTracker.close``)."""
        self.http.close()
        self.dns = DnsTracker(self.stats)
        self.http = HttpTracker(self.stats)
        self.tls = TlsTracker(self.stats)

    def finish(self, identify: Callable[[Any], FlowIdentity]) -> dict[str, pa.Table]:
        return {"dns": self.dns.finish(self.node, identify), "http": self.http.finish(self.node, identify),
                "tls": self.tls.finish(self.node, identify)}
