"""Application-layer dispatch: hands the TCP/UDP payloads that ``ConnectionTracker`` has already decoded to the
DNS, HTTP and TLS modules, so every packet is decoded once for all tables.

Each conversation is classified once, on its first payload: port 53 is DNS (RFC 1035 4.2.1 over UDP, 4.2.2 over
TCP); other TCP payloads that open with a TLS handshake record (RFC 8446 5.1) are TLS, and those that open with an
HTTP method token (RFC 9112 3) are HTTP. Everything else is marked uninteresting, which costs one attribute test
per later packet.

TCP payloads go through ``TcpDirection``, a minimal per-direction reassembler for in-order data: bytes already
seen (retransmissions, overlaps) are trimmed by sequence number, and a hole (a lost or snaplen-cut segment) marks
the direction as broken, because a byte-stream parser cannot resynchronise reliably after it.
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

class FlowLike(Protocol):
    """What the application layer reads from connection tracking's per-flow state."""

    proto: int
    sport: int
    dport: int
    app: Any


class TcpDirection:
    """In-order reassembly of one TCP direction: returns only bytes not seen before, in sequence order."""

    __slots__ = ("next_seq", "broken")

    def __init__(self) -> None:
        self.next_seq = -1
        self.broken = False

    def accept(self, seq: int, chunk: bytes, length: int, stats: AppStats) -> bytes:
        """The new bytes of a segment carrying ``length`` payload bytes at ``seq``, of which ``chunk`` was captured."""
        if self.broken:
            return b""
        if self.next_seq < 0:
            self.next_seq = seq
        delta = (seq - self.next_seq) & 0xFFFFFFFF
        if delta >= 0x80000000:  # starts before what was already seen: a retransmission or an overlap
            delta -= 0x100000000
        if delta > 0:
            self.broken = True
            stats.tcp_stream_gaps += 1
            return b""
        if -delta >= length:
            return b""
        new = chunk[-delta:]
        self.next_seq = (seq + length) & 0xFFFFFFFF
        if len(chunk) < length:  # snaplen cut: the missing tail is a hole
            self.broken = True
            stats.tcp_stream_gaps += 1
        return new


class StreamHandler(Protocol):
    def data(self, from_client: bool, ts_ns: int, chunk: bytes) -> None: ...


class _AppFlow:
    """Per-conversation application state, stored on the flow."""

    __slots__ = ("client_outbound", "handler", "out", "in_")

    def __init__(self, client_outbound: bool, handler: StreamHandler) -> None:
        self.client_outbound = client_outbound
        self.handler = handler
        self.out = TcpDirection()
        self.in_ = TcpDirection()


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
        direction = state.out if outbound else state.in_
        new = direction.accept(seq, chunk, length, self.stats)
        if new:
            state.handler.data(outbound == state.client_outbound, ts_ns, new)

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

    def finish(self, identify: Callable[[Any], FlowIdentity]) -> dict[str, pa.Table]:
        return {"dns": self.dns.finish(self.node, identify), "http": self.http.finish(self.node, identify),
                "tls": self.tls.finish(self.node, identify)}
