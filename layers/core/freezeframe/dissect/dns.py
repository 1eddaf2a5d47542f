"""DNS messages (RFC 1035 4.1; AAAA from RFC 3596) and the ``dns`` table: one row per query, paired with its response.

Header fields keep the RFC 1035 4.1.1 names (ID, QR, OPCODE, AA, TC, RD, RA, RCODE, QDCOUNT, ANCOUNT), names are
read with message compression (4.1.4) and a pointer-loop guard. Over TCP each message carries the two-byte length
prefix of RFC 1035 4.2.2.

Pairing key: (client, server, ID, QNAME); several outstanding queries with one key (retries) are answered in FIFO
order. Queries never answered are kept with a null rcode. A response whose query was not captured still makes a
row, timed at the response, without latency.

``parse`` is pure and returns None for a malformed or truncated message; the caller counts it.
"""

from __future__ import annotations

import socket
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from freezeframe.dissect.rows import AppStats, FlowIdentity, traffic_table
from freezeframe.schemas import DNS

TYPE_NAMES = {1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 13: "HINFO", 15: "MX", 16: "TXT", 28: "AAAA",
              33: "SRV", 35: "NAPTR", 39: "DNAME", 41: "OPT", 43: "DS", 46: "RRSIG", 47: "NSEC", 48: "DNSKEY",
              64: "SVCB", 65: "HTTPS", 99: "SPF", 252: "AXFR", 255: "ANY", 257: "CAA"}
# RFC 1035 4.1.1 codes 0-5, RFC 2136 6-10 (IANA "DNS RCODEs").
RCODE_NAMES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED", 6: "YXDOMAIN",
               7: "YXRRSET", 8: "NXRRSET", 9: "NOTAUTH", 10: "NOTZONE"}
TYPE_A = 1
TYPE_NS = 2
TYPE_CNAME = 5
TYPE_PTR = 12
TYPE_MX = 15
TYPE_TXT = 16
TYPE_AAAA = 28
TYPE_DNAME = 39
_NAME_TYPES = frozenset((TYPE_NS, TYPE_CNAME, TYPE_PTR, TYPE_DNAME))
MAX_POINTER_HOPS = 64

_header = struct.Struct("!HHHHHH").unpack_from
_rr_fixed = struct.Struct("!HHIH").unpack_from  # TYPE, CLASS, TTL, RDLENGTH
_u16 = struct.Struct("!H").unpack_from


@dataclass(frozen=True, slots=True)
class ResourceRecord:
    name: str
    type: int
    ttl: int
    rdata: str  # text form: address, domain name, "preference exchange", quoted strings, or hex


@dataclass(frozen=True, slots=True)
class Message:
    """One DNS message; only the first question is kept (QDCOUNT > 1 is not used in practice)."""

    id: int
    qr: bool
    opcode: int
    aa: bool
    tc: bool
    rd: bool
    ra: bool
    rcode: int
    qname: str
    qtype: int
    answers: tuple[ResourceRecord, ...]


def type_name(qtype: int) -> str:
    return TYPE_NAMES.get(qtype, f"TYPE{qtype}")


def rcode_name(rcode: int) -> str:
    return RCODE_NAMES.get(rcode, f"RCODE{rcode}")


def _name(message: bytes, offset: int) -> tuple[str, int] | None:
    """Domain name at ``offset`` (RFC 1035 4.1.4) and the offset after it in the original position."""
    labels: list[str] = []
    end = -1
    hops = 0
    size = len(message)
    while True:
        if offset >= size:
            return None
        length = message[offset]
        if length == 0:
            offset += 1
            break
        kind = length & 0xC0
        if kind == 0xC0:
            if offset + 2 > size:
                return None
            hops += 1
            if hops > MAX_POINTER_HOPS:
                return None
            if end < 0:
                end = offset + 2
            offset = _u16(message, offset)[0] & 0x3FFF
            continue
        if kind:
            return None  # 0x40 and 0x80 label types are obsolete (RFC 6891 5)
        if offset + 1 + length > size:
            return None
        labels.append(message[offset + 1:offset + 1 + length].decode("ascii", "backslashreplace"))
        offset += 1 + length
    return ".".join(labels), (end if end >= 0 else offset)


def _rdata(message: bytes, rtype: int, start: int, length: int) -> str | None:
    rdata = message[start:start + length]
    if rtype == TYPE_A and length == 4:
        return socket.inet_ntop(socket.AF_INET, rdata)
    if rtype == TYPE_AAAA and length == 16:
        return socket.inet_ntop(socket.AF_INET6, rdata)
    if rtype in _NAME_TYPES:
        name = _name(message, start)
        return None if name is None else name[0]
    if rtype == TYPE_MX and length >= 3:
        name = _name(message, start + 2)
        return None if name is None else f"{_u16(message, start)[0]} {name[0]}"
    if rtype == TYPE_TXT:
        strings = []
        position = 0
        while position < length:
            size = rdata[position]
            strings.append('"' + rdata[position + 1:position + 1 + size].decode("utf-8", "backslashreplace") + '"')
            position += 1 + size
        return " ".join(strings)
    return rdata.hex()


def parse(message: bytes) -> Message | None:
    """One DNS message without the TCP length prefix, or None when it is malformed or truncated."""
    if len(message) < 12:
        return None
    ident, flags, qdcount, ancount, _nscount, _arcount = _header(message, 0)
    if qdcount == 0:
        return None  # nothing to pair on (a bare NOTIMP/FORMERR reply): counted as malformed by the caller
    offset = 12
    question = _name(message, offset)
    if question is None or question[1] + 4 > len(message):
        return None
    qname, offset = question
    qtype = _u16(message, offset)[0]
    offset += 4
    for _ in range(qdcount - 1):
        skipped = _name(message, offset)
        if skipped is None:
            return None
        offset = skipped[1] + 4
    answers = []
    for _ in range(ancount):
        owner = _name(message, offset)
        if owner is None or owner[1] + 10 > len(message):
            return None
        offset = owner[1]
        rtype, _rclass, ttl, rdlength = _rr_fixed(message, offset)
        offset += 10
        if offset + rdlength > len(message):
            return None
        rdata = _rdata(message, rtype, offset, rdlength)
        if rdata is None:
            return None
        answers.append(ResourceRecord(owner[0], rtype, ttl, rdata))
        offset += rdlength
    return Message(ident, bool(flags & 0x8000), (flags >> 11) & 0xF, bool(flags & 0x0400), bool(flags & 0x0200),
                   bool(flags & 0x0100), bool(flags & 0x0080), flags & 0xF, qname, qtype, tuple(answers))


class _Row:
    __slots__ = ("ts_ns", "flow", "client_outbound", "transport", "query", "response", "response_ts_ns")

    def __init__(self, ts_ns: int, flow: Any, client_outbound: bool, transport: str, query: Message | None,
                 response: Message | None, response_ts_ns: int | None) -> None:
        self.ts_ns = ts_ns
        self.flow = flow
        self.client_outbound = client_outbound
        self.transport = transport
        self.query = query
        self.response = response
        self.response_ts_ns = response_ts_ns


class _TcpStream:
    """Splits one TCP DNS connection into messages by their two-byte length prefix (RFC 1035 4.2.2)."""

    __slots__ = ("tracker", "flow", "client_outbound", "buffers")

    def __init__(self, tracker: DnsTracker, flow: Any, client_outbound: bool) -> None:
        self.tracker = tracker
        self.flow = flow
        self.client_outbound = client_outbound
        self.buffers = [b"", b""]  # index 1: from the client

    def data(self, from_client: bool, ts_ns: int, chunk: bytes) -> None:
        buffer = self.buffers[from_client] + chunk
        while len(buffer) >= 2:
            size = _u16(buffer, 0)[0]
            if len(buffer) < 2 + size:
                break
            outbound = from_client == self.client_outbound
            self.tracker.message(self.flow, outbound, ts_ns, buffer[2:2 + size], "tcp")
            buffer = buffer[2 + size:]
        self.buffers[from_client] = buffer


class DnsTracker:
    """Pairs the DNS messages of one node into rows."""

    def __init__(self, stats: AppStats) -> None:
        self.stats = stats
        self.rows: list[_Row] = []
        self._pending: dict[tuple[int, bool, int, str], deque[_Row]] = {}

    def datagram(self, flow: Any, outbound: bool, ts_ns: int, payload: bytes) -> None:
        self.message(flow, outbound, ts_ns, payload, "udp")

    def stream(self, flow: Any, client_outbound: bool) -> _TcpStream:
        return _TcpStream(self, flow, client_outbound)

    def message(self, flow: Any, outbound: bool, ts_ns: int, payload: bytes, transport: str) -> None:
        self.stats.dns_messages += 1
        message = parse(payload)
        if message is None:
            self.stats.dns_malformed += 1
            return
        # The flow fixes both endpoints; which side is the client follows from the direction of a query.
        client_outbound = outbound != message.qr
        key = (id(flow), client_outbound, message.id, message.qname.lower())
        if not message.qr:
            row = _Row(ts_ns, flow, client_outbound, transport, message, None, None)
            self.rows.append(row)
            self._pending.setdefault(key, deque()).append(row)
            return
        waiting = self._pending.get(key)
        if waiting:
            row = waiting.popleft()
            row.response = message
            row.response_ts_ns = ts_ns
            return
        self.stats.dns_unmatched_responses += 1
        self.rows.append(_Row(ts_ns, flow, client_outbound, transport, None, message, ts_ns))

    def finish(self, node: str, identify: Callable[[Any], FlowIdentity]) -> pa.Table:
        rows = []
        for row in self.rows:
            first = row.query or row.response
            assert first is not None
            response = row.response
            answered = response is not None
            rows.append((row.ts_ns, row.flow, row.client_outbound, {
                "transaction_id": first.id,
                "qname": first.qname,
                "qtype": type_name(first.qtype),
                "rcode": response.rcode if response is not None else None,
                "rcode_name": rcode_name(response.rcode) if response is not None else None,
                "answers": [answer.rdata for answer in response.answers] if response is not None else None,
                "ttls": [answer.ttl for answer in response.answers] if response is not None else None,
                "latency_us": ((row.response_ts_ns or 0) - row.ts_ns) // 1000 if answered and row.query else None,
                "transport": row.transport,
                "truncated": (response or first).tc,
                "response_ts_ns": row.response_ts_ns,
            }))
        return traffic_table(DNS, node, identify, rows)
