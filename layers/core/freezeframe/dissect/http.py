"""HTTP/1.x messages (RFC 9112 message syntax, RFC 9110 semantics) and the ``http`` table: one row per request.

``parse`` reads one header section: the start line (request-line ``method SP request-target SP HTTP-version``,
RFC 9112 3, or status-line ``HTTP-version SP status-code SP [reason-phrase]``, RFC 9112 4) and the field lines
(RFC 9112 5). It is pure and returns None for anything malformed.

Framing follows RFC 9112 6.3: no body for responses to HEAD, for 1xx, 204 and 304; else Transfer-Encoding chunked
(7.1, chunk sizes summed, trailers skipped), else Content-Length, else a request has no body and a response runs to
the end of the connection. Requests are paired with responses in order per connection (a FIFO), which covers
keep-alive and pipelining; interim 1xx responses other than 101 do not consume a request.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from freezeframe.contracts.schemas import HTTP
from freezeframe.dissect.rows import AppStats, FlowIdentity, traffic_table

MAX_HEADER_BYTES = 64 * 1024
NO_BODY_STATUSES = frozenset((204, 304))
# The protocol columns of the http table, in the order finish() gives their values.
_COLUMNS = ("method", "host", "path", "version", "status", "reason", "latency_us", "request_bytes", "response_bytes",
            "response_complete", "user_agent", "content_type", "response_ts_ns")

_HEAD = 0
_BODY = 1  # Content-Length body: ``remaining`` bytes to go
_CHUNK_SIZE = 2
_CHUNK_DATA = 3  # ``remaining`` counts the chunk data plus its CRLF
_TRAILERS = 4
_UNTIL_CLOSE = 5
_DEAD = 6  # malformed or a tunnel: this direction is no longer parsed


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    request_target: str
    http_version: str
    fields: dict[str, str]  # field names lower-cased; a repeated field keeps its values joined by ", "


@dataclass(frozen=True, slots=True)
class Response:
    http_version: str
    status_code: int
    reason_phrase: str
    fields: dict[str, str]


# What bytes.strip() removes (ASCII whitespace): the header is decoded to text once, and str.strip() would also take
# latin-1's \x1c-\x1f, \x85 and \xa0, which the byte-level grammar treats as field content.
_WHITESPACE = " \t\n\r\x0b\x0c"


def _fields(lines: list[str]) -> dict[str, str] | None:
    """Field lines (RFC 9112 5) of a header decoded as latin-1, the start line excluded; None when one is invalid."""
    fields: dict[str, str] = {}
    last = ""
    for line in lines:
        if not line:
            continue
        if line[0] in " \t":  # obs-fold (RFC 9112 5.2): a continuation of the previous line
            if not last:
                return None
            fields[last] += " " + line.strip(_WHITESPACE)
            continue
        name, colon, value = line.partition(":")
        if not colon or not name or name[-1] in _WHITESPACE:  # RFC 9112 5.1: no whitespace before the colon
            return None
        last = name.lower()
        text = value.strip(_WHITESPACE)
        fields[last] = f"{fields[last]}, {text}" if last in fields else text
    return fields


Head = tuple[bool, str, str, str, dict[str, str]]
"""A header section as ``_head_section`` reads it: whether it is a request, the three parts of its start line (method,
request-target, HTTP-version; or HTTP-version, status-code, reason-phrase) and its fields."""


def _head_section(head: bytes) -> Head | None:
    """``parse`` without building the record: the tracker copies a few of its parts into its row, and a frozen
    dataclass costs most of a microsecond to build."""
    # latin-1 maps each byte to one character, so decoding once up front gives every piece the text its bytes
    # would decode to; the ASCII tests below keep str.isdigit()/isalpha() from accepting '²' or 'é'.
    lines = head.decode("latin-1").split("\r\n")
    start = lines[0]
    del lines[0]
    fields = _fields(lines)
    if fields is None:
        return None
    if start.startswith("HTTP/"):
        version, _, rest = start.partition(" ")
        code, _, reason = rest.partition(" ")
        if len(code) != 3 or not code.isascii() or not code.isdigit():
            return None
        return False, version, code, reason, fields
    parts = start.split(" ")
    if len(parts) != 3 or not parts[0].isascii() or not parts[0].isalpha() or not parts[2].startswith("HTTP/"):
        return None
    return True, parts[0], parts[1], parts[2], fields


def parse(head: bytes) -> Request | Response | None:
    """One header section (start line through the empty line), or None when it is not valid HTTP/1.x."""
    section = _head_section(head)
    if section is None:
        return None
    is_request, first, second, third, fields = section
    if is_request:
        return Request(first, second, third, fields)
    return Response(first, int(second), third, fields)


class _Row:
    """One request and, once it is seen, its response (``status_code`` is None until then)."""

    __slots__ = ("ts_ns", "flow", "client_outbound", "method", "request_target", "http_version", "request_fields",
                 "status_code", "reason_phrase", "response_fields", "response_ts_ns", "request_bytes",
                 "response_bytes", "response_complete")

    def __init__(self, ts_ns: int, flow: Any, client_outbound: bool, method: str, request_target: str,
                 http_version: str, fields: dict[str, str]) -> None:
        self.ts_ns = ts_ns
        self.flow = flow
        self.client_outbound = client_outbound
        self.method = method
        self.request_target = request_target
        self.http_version = http_version
        self.request_fields = fields
        self.status_code: int | None = None
        self.reason_phrase: str | None = None
        self.response_fields: dict[str, str] | None = None
        self.response_ts_ns: int | None = None
        self.request_bytes = 0
        self.response_bytes = 0
        self.response_complete = False


class _Direction:
    """Message framing of one direction of one connection."""

    __slots__ = ("buffer", "state", "remaining", "start_ts", "row", "declared", "seen")

    def __init__(self) -> None:
        self.buffer = b""
        self.state = _HEAD
        self.remaining = 0
        self.start_ts = -1
        self.row: _Row | None = None  # the row whose body is being read
        self.declared = -1  # Content-Length, or -1
        self.seen = 0  # body bytes (decoded chunk data for chunked)


class _Connection:
    __slots__ = ("tracker", "flow", "client_outbound", "pending", "from_client", "from_server")

    def __init__(self, tracker: HttpTracker, flow: Any, client_outbound: bool) -> None:
        self.tracker = tracker
        self.flow = flow
        self.client_outbound = client_outbound
        self.pending: list[_Row] = []  # FIFO; a list, because a deque's first block is half a kilobyte per connection
        # Two attributes rather than a pair: every live object costs the cyclic collector's pass at the end of a feed.
        self.from_client = _Direction()
        self.from_server = _Direction()

    def data(self, from_client: bool, ts_ns: int, chunk: bytes) -> None:
        side = self.from_client if from_client else self.from_server
        if side.state == _DEAD:
            return
        side.buffer += chunk
        while True:
            state = side.state
            buffer = side.buffer
            if state == _HEAD:
                if not buffer:
                    return  # the usual end: the chunk held whole messages
                buffer = buffer.lstrip(b"\r\n")  # RFC 9112 2.2: empty lines before a message are ignored
                side.buffer = buffer
                if not buffer:
                    return
                if side.start_ts < 0:
                    side.start_ts = ts_ns
                end = buffer.find(b"\r\n\r\n")
                if end < 0:
                    if len(buffer) > MAX_HEADER_BYTES:
                        self._malformed(side)
                    return
                side.buffer = buffer[end + 4:]
                section = _head_section(buffer[:end])
                if section is None or section[0] != from_client:
                    self._malformed(side)
                    return
                self._head(side, section)
                side.start_ts = -1
            elif state == _BODY:
                take = min(side.remaining, len(buffer))
                side.seen += take
                side.remaining -= take
                side.buffer = buffer[take:]
                if side.remaining:
                    return
                self._complete(side)
            elif state == _CHUNK_SIZE or state == _TRAILERS:
                end = buffer.find(b"\r\n")
                if end < 0:
                    if len(buffer) > MAX_HEADER_BYTES:
                        self._malformed(side)
                    return
                line = buffer[:end]
                side.buffer = buffer[end + 2:]
                if state == _TRAILERS:
                    if not line:
                        self._complete(side)
                    continue
                size_text = line.split(b";", 1)[0].strip()
                try:
                    size = int(size_text, 16)
                except ValueError:
                    self._malformed(side)
                    return
                if size < 0:
                    self._malformed(side)
                    return
                if size == 0:
                    side.state = _TRAILERS
                else:
                    side.state = _CHUNK_DATA
                    side.remaining = size + 2
            elif state == _CHUNK_DATA:
                take = min(side.remaining, len(buffer))
                side.seen += min(take, max(side.remaining - 2, 0))
                side.remaining -= take
                side.buffer = buffer[take:]
                if side.remaining:
                    return
                side.state = _CHUNK_SIZE
            else:  # _UNTIL_CLOSE
                side.seen += len(buffer)
                side.buffer = b""
                self._account(side)
                return

    def _malformed(self, side: _Direction) -> None:
        self.tracker.stats.http_malformed += 1
        side.state = _DEAD
        side.buffer = b""

    def _head(self, side: _Direction, section: Head) -> None:
        is_request, first, second, third, fields = section
        coding = fields.get("transfer-encoding")
        chunked = coding is not None and "chunked" in coding.lower()
        length_text = fields.get("content-length")
        if length_text:
            length_text = length_text.split(",")[0].strip()
        if length_text and not (length_text.isascii() and length_text.isdigit()):  # str.isdigit() takes '³'
            self._malformed(side)
            return
        declared = int(length_text) if length_text else -1
        row: _Row | None
        if is_request:
            self.tracker.stats.http_requests += 1
            row = _Row(side.start_ts, self.flow, self.client_outbound, first, second, third, fields)
            self.tracker.rows.append(row)
            self.pending.append(row)
            has_body = chunked or declared > 0
            until_close = False
        else:
            status = int(second)
            if 100 <= status < 200 and status != 101:
                return  # interim response: the final one is still to come
            row = self.pending.pop(0) if self.pending else None
            if row is None:
                self.tracker.stats.http_unmatched_responses += 1
            else:
                row.status_code = status
                row.reason_phrase = third
                row.response_fields = fields
                row.response_ts_ns = side.start_ts
            if status == 101 or (row is not None and row.method == "CONNECT" and 200 <= status < 300):
                # The connection now carries another protocol.
                if row is not None:
                    row.response_complete = True
                for direction in (self.from_client, self.from_server):
                    direction.state = _DEAD
                    direction.buffer = b""
                return
            no_body = status in NO_BODY_STATUSES or (row is not None and row.method == "HEAD")
            has_body = not no_body and (chunked or declared != 0)
            until_close = has_body and not chunked and declared < 0
        side.row = row
        side.declared = declared
        side.seen = 0
        if not has_body:
            self._complete(side)
        elif chunked:
            side.state = _CHUNK_SIZE
            side.declared = -1
        elif until_close:
            side.state = _UNTIL_CLOSE
        else:
            side.state = _BODY
            side.remaining = declared

    def _account(self, side: _Direction) -> None:
        row = side.row
        if row is None:
            return
        size = side.declared if side.declared >= 0 else side.seen
        if side is self.from_client:
            row.request_bytes = size
        else:
            row.response_bytes = size

    def _complete(self, side: _Direction) -> None:
        self._account(side)
        if side.row is not None and side is self.from_server:
            side.row.response_complete = True
        side.state = _HEAD
        side.row = None
        side.declared = -1
        side.seen = 0


class HttpTracker:
    """Pairs the HTTP/1.x requests and responses of one node into rows."""

    def __init__(self, stats: AppStats) -> None:
        self.stats = stats
        self.rows: list[_Row] = []
        self._connections: list[_Connection] = []

    def stream(self, flow: Any, client_outbound: bool) -> _Connection:
        connection = _Connection(self, flow, client_outbound)
        self._connections.append(connection)
        return connection

    def close(self) -> None:
        """Forgets every row and connection (a connection refers back to this tracker)."""
        self.rows.clear()
        self._connections.clear()

    def finish(self, node: str, identify: Callable[[Any], FlowIdentity]) -> pa.Table:
        for connection in self._connections:  # bodies cut short by the end of the capture: bytes seen so far
            for side in (connection.from_client, connection.from_server):
                if side.row is not None and side.state in (_BODY, _CHUNK_SIZE, _CHUNK_DATA, _TRAILERS):
                    connection._account(side)
        rows = []
        for row in self.rows:
            fields = row.request_fields
            status = row.status_code
            if status is None:
                latency_us = response_bytes = response_complete = None
                content_type = fields.get("content-type")
            else:
                latency_us = ((row.response_ts_ns or 0) - row.ts_ns) // 1000
                response_bytes = row.response_bytes
                response_complete = row.response_complete
                response_fields = row.response_fields
                assert response_fields is not None
                content_type = response_fields.get("content-type") or fields.get("content-type")
            rows.append((row.ts_ns, row.flow, row.client_outbound, (
                row.method, fields.get("host"), row.request_target, row.http_version, status, row.reason_phrase,
                latency_us, row.request_bytes, response_bytes, response_complete, fields.get("user-agent"),
                content_type, row.response_ts_ns)))
        return traffic_table(HTTP, node, identify, _COLUMNS, rows)
