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

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from freezeframe.dissect.rows import AppStats, FlowIdentity, traffic_table
from freezeframe.schemas import HTTP

MAX_HEADER_BYTES = 64 * 1024
NO_BODY_STATUSES = frozenset((204, 304))

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


def _fields(lines: list[bytes]) -> dict[str, str] | None:
    fields: dict[str, str] = {}
    last = ""
    for line in lines:
        if not line:
            continue
        if line[:1] in (b" ", b"\t"):  # obs-fold (RFC 9112 5.2): a continuation of the previous line
            if not last:
                return None
            fields[last] += " " + line.strip().decode("latin-1")
            continue
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.rstrip():
            return None
        last = name.decode("latin-1").lower()
        text = value.strip().decode("latin-1")
        fields[last] = f"{fields[last]}, {text}" if last in fields else text
    return fields


def parse(head: bytes) -> Request | Response | None:
    """One header section (start line through the empty line), or None when it is not valid HTTP/1.x."""
    lines = head.split(b"\r\n")
    start = lines[0]
    fields = _fields(lines[1:])
    if fields is None:
        return None
    if start.startswith(b"HTTP/"):
        version, _, rest = start.partition(b" ")
        code, _, reason = rest.partition(b" ")
        if len(code) != 3 or not code.isdigit():
            return None
        return Response(version.decode("latin-1"), int(code), reason.decode("latin-1"), fields)
    parts = start.split(b" ")
    if len(parts) != 3 or not parts[0].isalpha() or not parts[2].startswith(b"HTTP/"):
        return None
    return Request(parts[0].decode("latin-1"), parts[1].decode("latin-1"), parts[2].decode("latin-1"), fields)


class _Row:
    __slots__ = ("ts_ns", "request", "response", "response_ts_ns", "request_bytes", "response_bytes",
                 "response_complete")

    def __init__(self, ts_ns: int, request: Request) -> None:
        self.ts_ns = ts_ns
        self.request = request
        self.response: Response | None = None
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
    __slots__ = ("tracker", "flow", "client_outbound", "pending", "directions")

    def __init__(self, tracker: HttpTracker, flow: Any, client_outbound: bool) -> None:
        self.tracker = tracker
        self.flow = flow
        self.client_outbound = client_outbound
        self.pending: deque[_Row] = deque()
        self.directions = (_Direction(), _Direction())  # index 1: from the client

    def data(self, from_client: bool, ts_ns: int, chunk: bytes) -> None:
        side = self.directions[from_client]
        if side.state == _DEAD:
            return
        side.buffer += chunk
        while True:
            state = side.state
            buffer = side.buffer
            if state == _HEAD:
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
                message = parse(buffer[:end])
                if message is None or isinstance(message, Request) != from_client:
                    self._malformed(side)
                    return
                self._head(side, message)
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

    def _head(self, side: _Direction, message: Request | Response) -> None:
        fields = message.fields
        chunked = "chunked" in fields.get("transfer-encoding", "").lower()
        length_text = fields.get("content-length", "").split(",")[0].strip()
        if length_text and not (length_text.isascii() and length_text.isdigit()):  # str.isdigit() takes '³'
            self._malformed(side)
            return
        declared = int(length_text) if length_text else -1
        row: _Row | None
        if isinstance(message, Request):
            self.tracker.stats.http_requests += 1
            row = _Row(side.start_ts, message)
            self.tracker.rows.append((self.flow, self.client_outbound, row))
            self.pending.append(row)
            has_body = chunked or declared > 0
            until_close = False
        else:
            status = message.status_code
            if 100 <= status < 200 and status != 101:
                return  # interim response: the final one is still to come
            row = self.pending.popleft() if self.pending else None
            if row is None:
                self.tracker.stats.http_unmatched_responses += 1
            else:
                row.response = message
                row.response_ts_ns = side.start_ts
            if status == 101 or (row is not None and row.request.method == "CONNECT" and 200 <= status < 300):
                # The connection now carries another protocol.
                if row is not None:
                    row.response_complete = True
                for direction in self.directions:
                    direction.state = _DEAD
                    direction.buffer = b""
                return
            no_body = status in NO_BODY_STATUSES or (row is not None and row.request.method == "HEAD")
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
        if side is self.directions[True]:
            row.request_bytes = size
        else:
            row.response_bytes = size

    def _complete(self, side: _Direction) -> None:
        self._account(side)
        if side.row is not None and side is self.directions[False]:
            side.row.response_complete = True
        side.state = _HEAD
        side.row = None
        side.declared = -1
        side.seen = 0


class HttpTracker:
    """Pairs the HTTP/1.x requests and responses of one node into rows."""

    def __init__(self, stats: AppStats) -> None:
        self.stats = stats
        self.rows: list[tuple[Any, bool, _Row]] = []
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
            for side in connection.directions:
                if side.row is not None and side.state in (_BODY, _CHUNK_SIZE, _CHUNK_DATA, _TRAILERS):
                    connection._account(side)
        rows = []
        for flow, client_outbound, row in self.rows:
            request = row.request
            response = row.response
            fields = request.fields
            content_type = (response.fields.get("content-type") if response is not None else None) \
                or fields.get("content-type")
            rows.append((row.ts_ns, flow, client_outbound, {
                "method": request.method,
                "host": fields.get("host"),
                "path": request.request_target,
                "version": request.http_version,
                "status": response.status_code if response is not None else None,
                "reason": response.reason_phrase if response is not None else None,
                "latency_us": ((row.response_ts_ns or 0) - row.ts_ns) // 1000 if response is not None else None,
                "request_bytes": row.request_bytes,
                "response_bytes": row.response_bytes if response is not None else None,
                "response_complete": row.response_complete if response is not None else None,
                "user_agent": fields.get("user-agent"),
                "content_type": content_type,
                "response_ts_ns": row.response_ts_ns,
            }))
        return traffic_table(HTTP, node, identify, rows)
