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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from freezeframe.contracts.schemas import DNS
from freezeframe.dissect.rows import AppStats, FlowIdentity, traffic_table

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
# A name that is only a pointer to the question's QNAME at offset 12, the usual owner of an answer (RFC 1035 4.1.4).
QUESTION_POINTER = b"\xc0\x0c"
# The protocol columns of the dns table, in the order finish() gives their values.
_COLUMNS = ("transaction_id", "qname", "qtype", "rcode", "rcode_name", "answers", "ttls", "latency_us", "transport",
            "truncated", "response_ts_ns")

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
    return TYPE_NAMES.get(qtype) or f"TYPE{qtype}"  # not .get(qtype, f"..."): that formats a string every call


def rcode_name(rcode: int) -> str:
    return RCODE_NAMES.get(rcode) or f"RCODE{rcode}"


def _name(message: bytes, offset: int) -> tuple[str, int, bool] | None:
    """Domain name at ``offset`` (RFC 1035 4.1.4), the offset after it in the original position, and whether it
    followed a compression pointer."""
    labels: list[bytes] = []
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
        if length < 0x40:
            if offset + 1 + length > size:
                return None
            offset += 1 + length
            labels.append(message[offset - length:offset])
            continue
        if length < 0xC0:
            return None  # 0x40 and 0x80 label types are obsolete (RFC 6891 5)
        if offset + 2 > size:
            return None
        hops += 1
        if hops > MAX_POINTER_HOPS:
            return None
        if end < 0:
            end = offset + 2
        offset = _u16(message, offset)[0] & 0x3FFF
    # One decode for the whole name: ASCII with backslashreplace maps each byte on its own, as per label would.
    return b".".join(labels).decode("ascii", "backslashreplace"), (end if end >= 0 else offset), end >= 0


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


Answer = tuple[str, int, int, str]
"""A resource record as ``_fields`` reads it: NAME, TYPE, TTL and the rdata text (ResourceRecord's fields)."""
Fields = tuple[int, int, str, int, tuple[Answer, ...]]
"""A message as ``_fields`` reads it: ID, the flags word (QR through RCODE), QNAME, QTYPE and the answers."""

FLAG_QR = 0x8000
FLAG_TC = 0x0200


def _fields(message: bytes) -> Fields | None:
    """``parse`` without building the records: the tracker reads a handful of fields from each of its messages, and
    a frozen dataclass costs about a microsecond to build."""
    size = len(message)
    if size < 12:
        return None
    ident, flags, qdcount, ancount, _nscount, _arcount = _header(message, 0)
    if qdcount == 0:
        return None  # nothing to pair on (a bare NOTIMP/FORMERR reply): counted as malformed by the caller
    question = _name(message, 12)
    if question is None or question[1] + 4 > size:
        return None
    qname, offset, compressed_question = question
    question_wire = message[12:offset] if ancount else b""
    qtype = _u16(message, offset)[0]
    offset += 4
    for _ in range(qdcount - 1):
        skipped = _name(message, offset)
        if skipped is None:
            return None
        offset = skipped[1] + 4
    answers = []
    for _ in range(ancount):
        # The owner of an answer is usually QNAME again: written the same way (the same bytes read as the same name
        # anywhere, as pointers are absolute), or as a pointer to the question (RFC 1035 4.1.4) when that one holds
        # no pointer itself. Either way it reads as QNAME without walking the labels again.
        if message.startswith(question_wire, offset):
            owner_name = qname
            offset += len(question_wire)
        elif not compressed_question and message.startswith(QUESTION_POINTER, offset):
            owner_name = qname
            offset += 2
        else:
            owner = _name(message, offset)
            if owner is None:
                return None
            owner_name, offset, _compressed = owner
        if offset + 10 > size:
            return None
        rtype, _rclass, ttl, rdlength = _rr_fixed(message, offset)
        offset += 10
        if offset + rdlength > size:
            return None
        rdata = _rdata(message, rtype, offset, rdlength)
        if rdata is None:
            return None
        answers.append((owner_name, rtype, ttl, rdata))
        offset += rdlength
    return ident, flags, qname, qtype, tuple(answers)


def parse(message: bytes) -> Message | None:
    """One DNS message without the TCP length prefix, or None when it is malformed or truncated."""
    fields = _fields(message)
    if fields is None:
        return None
    ident, flags, qname, qtype, answers = fields
    return Message(ident, bool(flags & FLAG_QR), (flags >> 11) & 0xF, bool(flags & 0x0400), bool(flags & FLAG_TC),
                   bool(flags & 0x0100), bool(flags & 0x0080), flags & 0xF, qname, qtype,
                   tuple(ResourceRecord(*answer) for answer in answers))


class _Row:
    """One query and, once it is seen, its response; or a response whose query was not captured.

    The fields are copied out of the parsed messages rather than keeping them: fewer objects for the cyclic
    collector to visit when a feed ends.
    """

    __slots__ = ("ts_ns", "flow", "client_outbound", "transport", "answered_query", "transaction_id", "qname",
                 "qtype", "truncated", "rcode", "answers", "response_ts_ns")

    def __init__(self, ts_ns: int, flow: Any, client_outbound: bool, transport: str, message: Fields) -> None:
        ident, flags, qname, qtype, _answers = message
        self.ts_ns = ts_ns
        self.flow = flow
        self.client_outbound = client_outbound
        self.transport = transport
        self.answered_query = False  # a query that a response was paired with (latency known)
        self.transaction_id = ident
        self.qname = qname
        self.qtype = qtype
        self.truncated = bool(flags & FLAG_TC)  # of the response once there is one, else of the query
        self.rcode: int | None = None  # None until a response is seen
        self.answers: tuple[Answer, ...] = ()
        self.response_ts_ns: int | None = None

    def respond(self, ts_ns: int, response: Fields) -> None:
        _ident, flags, _qname, _qtype, answers = response
        self.truncated = bool(flags & FLAG_TC)
        self.rcode = flags & 0xF
        self.answers = answers
        self.response_ts_ns = ts_ns


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
        self._pending: dict[tuple[int, bool, int, str], list[_Row]] = {}

    def datagram(self, flow: Any, outbound: bool, ts_ns: int, payload: bytes) -> None:
        self.message(flow, outbound, ts_ns, payload, "udp")

    def stream(self, flow: Any, client_outbound: bool) -> _TcpStream:
        return _TcpStream(self, flow, client_outbound)

    def message(self, flow: Any, outbound: bool, ts_ns: int, payload: bytes, transport: str) -> None:
        stats = self.stats
        stats.dns_messages += 1
        message = _fields(payload)
        if message is None:
            stats.dns_malformed += 1
            return
        ident, flags, qname, _qtype, _answers = message
        is_response = bool(flags & FLAG_QR)
        # The flow fixes both endpoints; which side is the client follows from the direction of a query.
        client_outbound = outbound != is_response
        key = (id(flow), client_outbound, ident, qname.lower())
        pending = self._pending
        if not is_response:
            row = _Row(ts_ns, flow, client_outbound, transport, message)
            self.rows.append(row)
            waiting = pending.get(key)
            if waiting is None:
                pending[key] = [row]
            else:
                waiting.append(row)
            return
        waiting = pending.get(key)
        if waiting is not None:
            row = waiting.pop(0)  # FIFO; more than one outstanding query per key (a retry) is rare
            if not waiting:
                del pending[key]  # keeps the map to the queries still outstanding
            row.answered_query = True
            row.respond(ts_ns, message)
            return
        stats.dns_unmatched_responses += 1
        row = _Row(ts_ns, flow, client_outbound, transport, message)
        row.respond(ts_ns, message)
        self.rows.append(row)

    def finish(self, node: str, identify: Callable[[Any], FlowIdentity]) -> pa.Table:
        rows = []
        for row in self.rows:
            rcode = row.rcode
            if rcode is None:
                name = answers = ttls = latency_us = None
            else:
                name = rcode_name(rcode)
                answers = [answer[3] for answer in row.answers]
                ttls = [answer[2] for answer in row.answers]
                latency_us = ((row.response_ts_ns or 0) - row.ts_ns) // 1000 if row.answered_query else None
            rows.append((row.ts_ns, row.flow, row.client_outbound, (
                row.transaction_id, row.qname, type_name(row.qtype), rcode, name, answers, ttls, latency_us,
                row.transport, row.truncated, row.response_ts_ns)))
        return traffic_table(DNS, node, identify, _COLUMNS, rows)
