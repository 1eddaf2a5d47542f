"""TLS record and handshake layers (RFC 8446 5.1 and 4, RFC 5246 6.2 and 7.4) and the ``tls`` table: one row per
handshake.

From the ClientHello: server_name (RFC 6066 3), application_layer_protocol_negotiation (RFC 7301 3.1) and
supported_versions (RFC 8446 4.2.1); from the ServerHello: legacy_version or the selected supported_versions,
cipher_suite and the selected ALPN protocol; and plaintext alerts (RFC 8446 6: AlertLevel, AlertDescription).
GREASE values (RFC 8701) are ignored.

Handshake messages are reassembled across records. Parsing a direction stops at its ChangeCipherSpec (TLS 1.2:
what follows is encrypted) and at its first application_data record (TLS 1.3 encrypts everything after the
ServerHello); nothing after that is buffered. ``established`` means a ServerHello was seen
and no fatal alert followed.

``parse`` (one handshake message), ``parse_client_hello``, ``parse_server_hello`` and ``parse_alert`` are pure and
return None for malformed input.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import pyarrow as pa

from freezeframe.contracts.schemas import TLS
from freezeframe.dissect.rows import AppStats, FlowIdentity, traffic_table

CHANGE_CIPHER_SPEC = 20
ALERT = 21
HANDSHAKE = 22
APPLICATION_DATA = 23
CLIENT_HELLO = 1
SERVER_HELLO = 2
EXT_SERVER_NAME = 0
EXT_ALPN = 16
EXT_SUPPORTED_VERSIONS = 43
MAX_RECORD = 16384 + 2048  # TLSCiphertext.length limit (RFC 8446 5.2)
MAX_HANDSHAKE = 64 * 1024
ALERT_FATAL = 2
# The protocol columns of the tls table, in the order finish() gives their values.
_COLUMNS = ("sni", "version", "client_versions", "alpn", "alpn_selected", "cipher", "established", "alert",
            "alert_from", "server_hello_ts_ns")

VERSION_NAMES = {0x0300: "SSL 3.0", 0x0301: "TLS 1.0", 0x0302: "TLS 1.1", 0x0303: "TLS 1.2", 0x0304: "TLS 1.3"}
ALERT_LEVELS = {1: "warning", 2: "fatal"}
ALERT_DESCRIPTIONS = {
    0: "close_notify", 10: "unexpected_message", 20: "bad_record_mac", 21: "decryption_failed", 22: "record_overflow",
    30: "decompression_failure", 40: "handshake_failure", 41: "no_certificate", 42: "bad_certificate",
    43: "unsupported_certificate", 44: "certificate_revoked", 45: "certificate_expired", 46: "certificate_unknown",
    47: "illegal_parameter", 48: "unknown_ca", 49: "access_denied", 50: "decode_error", 51: "decrypt_error",
    60: "export_restriction", 70: "protocol_version", 71: "insufficient_security", 80: "internal_error",
    86: "inappropriate_fallback", 90: "user_canceled", 100: "no_renegotiation", 109: "missing_extension",
    110: "unsupported_extension", 112: "unrecognized_name", 113: "bad_certificate_status_response",
    115: "unknown_psk_identity", 116: "certificate_required", 120: "no_application_protocol",
}
CIPHER_NAMES = {
    0x1301: "TLS_AES_128_GCM_SHA256", 0x1302: "TLS_AES_256_GCM_SHA384", 0x1303: "TLS_CHACHA20_POLY1305_SHA256",
    0xC02B: "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", 0xC02C: "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    0xC02F: "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", 0xC030: "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    0xCCA8: "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256", 0xCCA9: "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    0x009C: "TLS_RSA_WITH_AES_128_GCM_SHA256", 0x009D: "TLS_RSA_WITH_AES_256_GCM_SHA384",
    0x002F: "TLS_RSA_WITH_AES_128_CBC_SHA", 0x0035: "TLS_RSA_WITH_AES_256_CBC_SHA",
}

_u16 = struct.Struct("!H").unpack_from
_u16_pair = struct.Struct("!HH").unpack_from


def version_name(version: int) -> str:
    return VERSION_NAMES.get(version, f"0x{version:04X}")


def is_grease(value: int) -> bool:
    return value & 0x0F0F == 0x0A0A and value >> 8 == value & 0xFF


@dataclass(frozen=True, slots=True)
class ClientHello:
    legacy_version: int
    server_name: str | None
    alpn: tuple[str, ...]
    supported_versions: tuple[int, ...]  # GREASE removed; empty when the extension is absent


@dataclass(frozen=True, slots=True)
class ServerHello:
    legacy_version: int
    cipher_suite: int
    selected_version: int | None  # supported_versions extension of the ServerHello
    alpn: str | None


@dataclass(frozen=True, slots=True)
class Alert:
    level: int
    description: int

    @property
    def text(self) -> str:
        return (f"{ALERT_LEVELS.get(self.level, str(self.level))}:"
                f"{ALERT_DESCRIPTIONS.get(self.description, str(self.description))}")


def _vector(body: bytes, offset: int, length_size: Literal[1, 2]) -> tuple[bytes, int] | None:
    """A length-prefixed vector (RFC 8446 3.4) at ``offset`` and the offset after it."""
    if offset + length_size > len(body):
        return None
    length = body[offset] if length_size == 1 else _u16(body, offset)[0]
    end = offset + length_size + length
    if end > len(body):
        return None
    return body[offset + length_size:end], end


def _extensions(body: bytes, offset: int) -> dict[int, bytes] | None:
    if offset == len(body):
        return {}  # extensions are optional before TLS 1.3
    block = _vector(body, offset, 2)
    if block is None:
        return None
    data = block[0]
    size = len(data)
    extensions: dict[int, bytes] = {}
    position = 0
    while position < size:
        if position + 4 > size:
            return None
        ext_type, length = _u16_pair(data, position)  # extension_type, then the extension_data vector's length
        end = position + 4 + length
        if end > size:
            return None
        extensions.setdefault(ext_type, data[position + 4:end])
        position = end
    return extensions


def _alpn_names(data: bytes) -> tuple[str, ...] | None:
    listing = _vector(data, 0, 2)
    if listing is None:
        return None
    names = []
    position = 0
    body = listing[0]
    while position < len(body):
        name = _vector(body, position, 1)
        if name is None:
            return None
        names.append(name[0].decode("ascii", "backslashreplace"))
        position = name[1]
    return tuple(names)


def _server_name(data: bytes) -> str | None:
    listing = _vector(data, 0, 2)
    if listing is None:
        return None
    body = listing[0]
    position = 0
    while position + 1 <= len(body):
        name_type = body[position]
        name = _vector(body, position + 1, 2)
        if name is None:
            return None
        if name_type == 0:  # host_name
            return name[0].decode("ascii", "backslashreplace")
        position = name[1]
    return None


def parse_client_hello(body: bytes) -> ClientHello | None:
    """A ClientHello body (after the 4-byte handshake header)."""
    if len(body) < 34:
        return None
    legacy_version = _u16(body, 0)[0]
    session_id = _vector(body, 34, 1)
    ciphers = session_id and _vector(body, session_id[1], 2)
    compression = ciphers and _vector(body, ciphers[1], 1)
    if not compression:
        return None
    extensions = _extensions(body, compression[1])
    if extensions is None:
        return None
    server_name = None
    if EXT_SERVER_NAME in extensions:
        server_name = _server_name(extensions[EXT_SERVER_NAME])
    alpn: tuple[str, ...] = ()
    if EXT_ALPN in extensions:
        names = _alpn_names(extensions[EXT_ALPN])
        if names is None:
            return None
        alpn = names
    versions: tuple[int, ...] = ()
    if EXT_SUPPORTED_VERSIONS in extensions:
        listing = _vector(extensions[EXT_SUPPORTED_VERSIONS], 0, 1)
        if listing is None or len(listing[0]) % 2:
            return None
        raw = listing[0]
        versions = tuple(v for i in range(0, len(raw), 2) if not is_grease(v := _u16(raw, i)[0]))
    return ClientHello(legacy_version, server_name, alpn, versions)


def parse_server_hello(body: bytes) -> ServerHello | None:
    """A ServerHello body (after the 4-byte handshake header)."""
    if len(body) < 34:
        return None
    legacy_version = _u16(body, 0)[0]
    session_id = _vector(body, 34, 1)
    if session_id is None or session_id[1] + 3 > len(body):
        return None
    offset = session_id[1]
    cipher_suite = _u16(body, offset)[0]
    extensions = _extensions(body, offset + 3)  # cipher_suite, legacy_compression_method
    if extensions is None:
        return None
    selected = extensions.get(EXT_SUPPORTED_VERSIONS)
    selected_version = _u16(selected, 0)[0] if selected is not None and len(selected) == 2 else None
    alpn = None
    if EXT_ALPN in extensions:
        names = _alpn_names(extensions[EXT_ALPN])
        alpn = names[0] if names else None
    return ServerHello(legacy_version, cipher_suite, selected_version, alpn)


def parse(message: bytes) -> ClientHello | ServerHello | None:
    """One whole handshake message (msg_type, uint24 length, body; RFC 8446 4) if it is a Client- or ServerHello."""
    if len(message) < 4 or int.from_bytes(message[1:4], "big") != len(message) - 4:
        return None
    if message[0] == CLIENT_HELLO:
        return parse_client_hello(message[4:])
    if message[0] == SERVER_HELLO:
        return parse_server_hello(message[4:])
    return None


def parse_alert(fragment: bytes) -> Alert | None:
    """A plaintext alert record fragment; encrypted alerts are longer than two bytes and give None."""
    if len(fragment) != 2:
        return None
    return Alert(fragment[0], fragment[1])


class _Row:
    __slots__ = ("ts_ns", "flow", "client_outbound", "client_hello", "server_hello", "server_hello_ts_ns", "alert",
                 "alert_from", "fatal_after_hello")

    def __init__(self, ts_ns: int, flow: Any, client_outbound: bool) -> None:
        self.ts_ns = ts_ns
        self.flow = flow
        self.client_outbound = client_outbound
        self.client_hello: ClientHello | None = None
        self.server_hello: ServerHello | None = None
        self.server_hello_ts_ns: int | None = None
        self.alert: Alert | None = None
        self.alert_from: str | None = None
        self.fatal_after_hello = False


class _Direction:
    __slots__ = ("buffer", "handshake", "done")

    def __init__(self) -> None:
        self.buffer = b""
        self.handshake = b""  # handshake bytes not yet forming a whole message
        self.done = False  # encrypted from here on: only record boundaries matter, and not even those


class _Connection:
    __slots__ = ("tracker", "flow", "client_outbound", "row", "from_client", "from_server")

    def __init__(self, tracker: TlsTracker, flow: Any, client_outbound: bool) -> None:
        self.tracker = tracker
        self.flow = flow
        self.client_outbound = client_outbound
        self.row: _Row | None = None
        # Two attributes rather than a pair: every live object costs the cyclic collector's pass at the end of a feed.
        self.from_client = _Direction()
        self.from_server = _Direction()

    def data(self, from_client: bool, ts_ns: int, chunk: bytes) -> None:
        side = self.from_client if from_client else self.from_server
        if side.done:
            return
        buffer = side.buffer + chunk
        stats = self.tracker.stats
        while len(buffer) >= 5:
            content_type = buffer[0]
            length = _u16(buffer, 3)[0]
            if buffer[1] != 3 or length > MAX_RECORD or content_type not in (20, 21, 22, 23, 24):
                stats.tls_malformed += 1
                side.done = True
                side.buffer = b""
                return
            stats.tls_records += 1
            if content_type == APPLICATION_DATA or content_type == CHANGE_CIPHER_SPEC:
                side.done = True  # the rest of this direction is encrypted
                side.buffer = b""
                return
            if len(buffer) < 5 + length:
                break
            fragment = buffer[5:5 + length]
            buffer = buffer[5 + length:]
            if content_type == ALERT:
                self._alert(from_client, fragment)
            elif content_type == HANDSHAKE:
                if not self._handshake(side, from_client, ts_ns, fragment):
                    stats.tls_malformed += 1
                    side.done = True
                    side.buffer = b""
                    return
        side.buffer = buffer

    def _ensure_row(self, ts_ns: int) -> _Row:
        if self.row is None:
            self.row = _Row(ts_ns, self.flow, self.client_outbound)
            self.tracker.rows.append(self.row)
        return self.row

    def _alert(self, from_client: bool, fragment: bytes) -> None:
        alert = parse_alert(fragment)
        if alert is None or self.row is None:
            return
        if self.row.alert is None:
            self.row.alert = alert
            self.row.alert_from = "client" if from_client else "server"
        if alert.level == ALERT_FATAL and self.row.server_hello is not None:
            self.row.fatal_after_hello = True

    def _handshake(self, side: _Direction, from_client: bool, ts_ns: int, fragment: bytes) -> bool:
        data = side.handshake + fragment
        while len(data) >= 4:
            msg_type = data[0]
            length = data[1] << 16 | _u16(data, 2)[0]  # uint24
            if length > MAX_HANDSHAKE:
                return False
            if len(data) < 4 + length:
                break
            body = data[4:4 + length]
            data = data[4 + length:]
            if msg_type == CLIENT_HELLO and from_client:
                hello = parse_client_hello(body)
                if hello is None:
                    return False
                if self.row is None or self.row.client_hello is None:
                    self._ensure_row(ts_ns).client_hello = hello
            elif msg_type == SERVER_HELLO and not from_client:
                server_hello = parse_server_hello(body)
                if server_hello is None:
                    return False
                row = self._ensure_row(ts_ns)
                if row.server_hello is None:
                    row.server_hello = server_hello
                    row.server_hello_ts_ns = ts_ns
        side.handshake = data
        return True


class TlsTracker:
    """Collects the TLS handshakes of one node into rows."""

    def __init__(self, stats: AppStats) -> None:
        self.stats = stats
        self.rows: list[_Row] = []

    def stream(self, flow: Any, client_outbound: bool) -> _Connection:
        return _Connection(self, flow, client_outbound)

    def finish(self, node: str, identify: Callable[[Any], FlowIdentity]) -> pa.Table:
        rows = []
        for row in self.rows:
            client = row.client_hello
            server = row.server_hello
            offered: list[int] = []
            if client is not None:
                offered = list(client.supported_versions) or [client.legacy_version]
            if server is not None:
                version: str | None = version_name(server.selected_version or server.legacy_version)
            else:
                version = version_name(max(offered)) if offered else None
            rows.append((row.ts_ns, row.flow, row.client_outbound, (
                client.server_name if client is not None else None,
                version,
                [version_name(v) for v in offered] if client is not None else None,
                list(client.alpn) if client is not None else None,
                server.alpn if server is not None else None,
                CIPHER_NAMES.get(server.cipher_suite, f"0x{server.cipher_suite:04X}") if server is not None else None,
                server is not None and not row.fatal_after_hello,
                row.alert.text if row.alert is not None else None,
                row.alert_from,
                row.server_hello_ts_ns,
            )))
        return traffic_table(TLS, node, identify, _COLUMNS, rows)
