"""The bundled sample capture: about 60 s of cluster traffic that exercises every table.

Built with scapy, which is tooling here and never on the dissection hot path, and written as nanosecond
pcap through ``pcapio.PcapWriter``. The output is byte-for-byte deterministic: fixed epoch, addresses,
ports, initial sequence numbers, IP ids and TLS randoms.

Scenarios (seconds after ``SAMPLE_START_NS``, 2026-01-01T00:00:00Z):

====  =========================================================================================
0.2   DNS A query for the backend service, NOERROR with one answer
1.0   HTTP/1.1 GET, 200, client closes with FIN
2.0   DNS A query, SERVFAIL
3.0   HTTP/1.1 GET, 404, client closes with FIN
4.0   DNS A query, REFUSED
5.0   DNS A query for a retired name, NXDOMAIN
6.0   connection refused: SYN answered by RST-ACK
7.0   DNS AAAA query over TCP (two-byte length prefix), NOERROR with one answer
8.0   database session 8.0-18.5 s, crossing the 10 s segment boundary, closed with FIN
14.0  SYN never answered, retransmitted after 1, 2 and 4 s with the same ISN
19.0  DNS A query never answered
25.0  TLS ClientHello with SNI and ALPN, ServerHello, client closes
26.5  TLS 1.3: supported_versions offered and selected, ServerHello, encrypted data, client closes
28.0  TLS ClientHello answered by a fatal handshake_failure alert, server closes
30.0  HTTP/1.1 POST, 503 with "Connection: close", server closes first
35.0  HTTP/1.1 GET, part of a 200 response, then the server resets the connection
40.0  DNS A query for the payments service, NOERROR
45.0  HTTP/1.1 keep-alive: two GETs, both 200, client closes at 52 s
53.0  HTTP/1.1 pipelining: two GETs in one segment; a chunked 200 and a 404 in one segment
55.0  DNS A query, NOERROR, then HTTP/1.1 GET 200 at 56 s
====  =========================================================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from scapy.layers.dns import DNS, DNSQR, DNSRR
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.layers.tls.extensions import ProtocolName, ServerName, TLS_Ext_ALPN, TLS_Ext_ServerName
from scapy.layers.tls.handshake import TLSClientHello, TLSServerHello
from scapy.layers.tls.record import TLS

from freezeframe.capture.pcapio import LINKTYPE_ETHERNET, PcapWriter
from freezeframe_local.sample_context import SAMPLE_START_NS  # its Kubernetes and node context shares the epoch

__all__ = ["SAMPLE_START_NS", "write_sample_pcap"]

FRONTEND = "10.244.1.10"  # shop/frontend pod
CHECKOUT = "10.244.1.11"  # shop/checkout pod
DATABASE = "10.244.2.20"  # shop/postgres-0 pod, also serves the streaming API on 8080
PAYMENTS = "10.244.3.30"  # shop/payments pod (down in this story)
KUBE_DNS = "10.96.0.10"  # kube-system/kube-dns service
BACKEND_SVC = "10.96.12.34"  # shop/backend service
API_SVC = "10.96.0.1"  # default/kubernetes service

_SYN_OPTIONS = [("MSS", 1460), ("SAckOK", b""), ("WScale", 7)]


def _mac(ip: str) -> str:
    """Docker-style locally administered MAC derived from the address, so frames are stable."""
    return "02:42:" + ":".join(f"{int(octet):02x}" for octet in ip.split("."))


def _us(seconds: float) -> int:
    return round(seconds * 1_000_000)


class _Capture:
    """Collects frames with their time; ``write`` emits them in time order."""

    def __init__(self) -> None:
        self._frames: list[tuple[int, int, bytes]] = []
        self._ip_ids: dict[str, int] = {}

    def ip(self, src: str, dst: str) -> IP:
        ip_id = self._ip_ids.get(src, 0x1000 + int(src.split(".")[-1]) * 64) + 1
        self._ip_ids[src] = ip_id
        return IP(src=src, dst=dst, id=ip_id & 0xFFFF, ttl=64, flags="DF")

    def add(self, at_us: int, src: str, dst: str, l4: TCP | UDP) -> None:
        frame = Ether(src=_mac(src), dst=_mac(dst)) / self.ip(src, dst) / l4
        self._frames.append((at_us, len(self._frames), bytes(frame)))

    def write(self, path: Path) -> None:
        with path.open("wb") as stream:
            writer = PcapWriter(stream, LINKTYPE_ETHERNET)
            for at_us, _order, frame in sorted(self._frames):
                writer.write(SAMPLE_START_NS + at_us * 1000, frame)


@dataclass(slots=True)
class _Tcp:
    """One TCP connection's sequence space; each call adds the segments of one exchange."""

    cap: _Capture
    client: str
    client_port: int
    server: str
    server_port: int
    client_seq: int
    server_seq: int
    rtt_us: int = 400

    def segment(self, at_us: int, from_client: bool, flags: str, payload: bytes = b"") -> None:
        if from_client:
            src, dst, sport, dport = self.client, self.server, self.client_port, self.server_port
            seq, ack = self.client_seq, self.server_seq
        else:
            src, dst, sport, dport = self.server, self.client, self.server_port, self.client_port
            seq, ack = self.server_seq, self.client_seq
        tcp = TCP(sport=sport, dport=dport, seq=seq, ack=ack if "A" in flags else 0, flags=flags,
                  window=64240 if from_client else 65160, options=_SYN_OPTIONS if "S" in flags else [])
        self.cap.add(at_us, src, dst, tcp / payload if payload else tcp)
        advance = len(payload) + (1 if "S" in flags or "F" in flags else 0)
        if from_client:
            self.client_seq = (self.client_seq + advance) & 0xFFFFFFFF
        else:
            self.server_seq = (self.server_seq + advance) & 0xFFFFFFFF

    def handshake(self, at_us: int) -> int:
        self.segment(at_us, True, "S")
        self.segment(at_us + self.rtt_us // 2, False, "SA")
        self.segment(at_us + self.rtt_us, True, "A")
        return at_us + self.rtt_us

    def send(self, at_us: int, from_client: bool, payload: bytes) -> int:
        """Data in one segment, then the peer's ACK half an RTT later."""
        self.segment(at_us, from_client, "PA", payload)
        self.segment(at_us + self.rtt_us // 2, not from_client, "A")
        return at_us + self.rtt_us // 2

    def close(self, at_us: int, by_client: bool = True) -> int:
        self.segment(at_us, by_client, "FA")
        self.segment(at_us + self.rtt_us // 2, not by_client, "FA")
        self.segment(at_us + self.rtt_us, by_client, "A")
        return at_us + self.rtt_us


def _http_request(method: str, path: str, host: str, body: bytes = b"") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: shop-frontend/2.3\r\nAccept: */*\r\n"
    if body:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return (head + "\r\n").encode() + body


def _http_response(status: int, reason: str, body: bytes, close: bool = False) -> bytes:
    head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"Date: Thu, 01 Jan 2026 00:00:00 GMT\r\n")
    if close:
        head += "Connection: close\r\n"
    return (head + "\r\n").encode() + body


def _dns(cap: _Capture, at_us: int, client: str, port: int, txid: int, qname: str, answer: str | None,
         rcode: int = 3, answered: bool = True) -> None:
    """A UDP query and its reply: one A record when ``answer`` is given, else an empty reply with ``rcode``."""
    query = DNS(id=txid, rd=1, qd=DNSQR(qname=qname, qtype="A"))
    cap.add(at_us, client, KUBE_DNS, UDP(sport=port, dport=53) / query)
    if not answered:
        return
    if answer is None:
        reply = DNS(id=txid, qr=1, aa=1, rd=1, ra=1, rcode=rcode, qd=DNSQR(qname=qname, qtype="A"))
    else:
        reply = DNS(id=txid, qr=1, aa=1, rd=1, ra=1, rcode=0, qd=DNSQR(qname=qname, qtype="A"),
                    an=DNSRR(rrname=qname, type="A", ttl=30, rdata=answer))
    cap.add(at_us + 350, KUBE_DNS, client, UDP(sport=53, dport=port) / reply)


def _tls_client_hello(sni: str) -> bytes:
    hello = TLSClientHello(
        version=0x0303, gmt_unix_time=SAMPLE_START_NS // 1_000_000_000, random_bytes=bytes(range(28)), sid=b"",
        ciphers=[0x1301, 0x1302, 0xC02F, 0xC030], comp=[0],
        ext=[TLS_Ext_ServerName(servernames=[ServerName(servername=sni.encode())]),
             TLS_Ext_ALPN(protocols=[ProtocolName(protocol=b"h2"), ProtocolName(protocol=b"http/1.1")])],
    )
    return bytes(TLS(version=0x0301, msg=[hello]))


def _tls_server_hello() -> bytes:
    hello = TLSServerHello(version=0x0303, gmt_unix_time=SAMPLE_START_NS // 1_000_000_000,
                           random_bytes=bytes(range(100, 128)), sid=b"", cipher=0xC02F, comp=0)
    return bytes(TLS(version=0x0303, msg=[hello]))


def _tls_record(content_type: int, fragment: bytes) -> bytes:
    return bytes([content_type, 3, 3]) + len(fragment).to_bytes(2, "big") + fragment


def _tls_handshake(msg_type: int, body: bytes) -> bytes:
    return _tls_record(22, bytes([msg_type]) + len(body).to_bytes(3, "big") + body)


def _tls_extension(ext_type: int, data: bytes) -> bytes:
    return ext_type.to_bytes(2, "big") + len(data).to_bytes(2, "big") + data


def _tls13_client_hello(sni: str) -> bytes:
    """A ClientHello offering TLS 1.3 and 1.2 through supported_versions (RFC 8446 4.2.1), a GREASE value first."""
    name = sni.encode()
    server_name = (len(name) + 3).to_bytes(2, "big") + b"\x00" + len(name).to_bytes(2, "big") + name
    alpn = b"\x00\x03\x02h2"
    versions = b"\x06\x0a\x0a\x03\x04\x03\x03"
    extensions = (_tls_extension(0, server_name) + _tls_extension(16, alpn) + _tls_extension(43, versions))
    body = (b"\x03\x03" + bytes(range(32, 64)) + b"\x00" + b"\x00\x04\x13\x01\x13\x02" + b"\x01\x00"
            + len(extensions).to_bytes(2, "big") + extensions)
    return _tls_handshake(1, body)


def _tls13_server_hello() -> bytes:
    """A ServerHello selecting TLS 1.3 and TLS_AES_128_GCM_SHA256, then one encrypted application_data record."""
    extensions = _tls_extension(43, b"\x03\x04")
    body = (b"\x03\x03" + bytes(range(64, 96)) + b"\x00" + b"\x13\x01" + b"\x00"
            + len(extensions).to_bytes(2, "big") + extensions)
    return _tls_handshake(2, body) + _tls_record(20, b"\x01") + _tls_record(23, bytes(range(48)))


TLS_FATAL_HANDSHAKE_FAILURE = _tls_record(21, b"\x02\x28")  # AlertLevel fatal(2), handshake_failure(40)


def _dns_tcp(cap: _Capture, at_us: int, client: str, port: int, txid: int, qname: str, answer: str) -> None:
    """An AAAA query over TCP (RFC 1035 4.2.2: each message behind a two-byte length), one AAAA answer."""
    query = bytes(DNS(id=txid, rd=1, qd=DNSQR(qname=qname, qtype="AAAA")))
    reply = bytes(DNS(id=txid, qr=1, aa=1, rd=1, ra=1, rcode=0, qd=DNSQR(qname=qname, qtype="AAAA"),
                      an=DNSRR(rrname=qname, type="AAAA", ttl=60, rdata=answer)))
    conn = _Tcp(cap, client, port, KUBE_DNS, 53, client_seq=16_000_000, server_seq=17_000_000, rtt_us=300)
    t = conn.handshake(at_us)
    t = conn.send(t + 100, True, len(query).to_bytes(2, "big") + query)
    t = conn.send(t + 400, False, len(reply).to_bytes(2, "big") + reply)
    conn.close(t + 1_000)


def write_sample_pcap(path: Path) -> None:
    """Write the sample capture (Ethernet, ns pcap, well under 100 KB) to ``path``."""
    cap = _Capture()
    backend_host = "backend.shop.svc.cluster.local"
    items = b'{"items":[{"sku":"A-100","qty":2},{"sku":"B-200","qty":1},{"sku":"C-300","qty":5}]}'

    _dns(cap, _us(0.2), FRONTEND, 53001, 0x1A2B, backend_host + ".", BACKEND_SVC)

    ok = _Tcp(cap, FRONTEND, 41000, BACKEND_SVC, 80, client_seq=1_000_000, server_seq=2_000_000)
    t = ok.handshake(_us(1.0))
    t = ok.send(t + 100, True, _http_request("GET", "/api/items", backend_host))
    t = ok.send(t + 12_000, False, _http_response(200, "OK", items))
    ok.close(t + 20_000)

    _dns(cap, _us(2.0), CHECKOUT, 53005, 0x1B2C, "inventory.shop.svc.cluster.local.", None, rcode=2)

    missing = _Tcp(cap, FRONTEND, 41002, BACKEND_SVC, 80, client_seq=1_100_000, server_seq=2_100_000)
    t = missing.handshake(_us(3.0))
    t = missing.send(t + 100, True, _http_request("GET", "/api/items/999", backend_host))
    t = missing.send(t + 3_000, False, _http_response(404, "Not Found", b'{"error":"not found"}'))
    missing.close(t + 10_000)

    _dns(cap, _us(4.0), FRONTEND, 53006, 0x2C3D, "example.com.", None, rcode=5)
    _dns(cap, _us(5.0), CHECKOUT, 53002, 0x3C4D, "legacy-db.shop.svc.cluster.local.", None)

    refused = _Tcp(cap, CHECKOUT, 42000, PAYMENTS, 9090, client_seq=3_000_000, server_seq=0)
    refused.segment(_us(6.0), True, "S")
    refused.segment(_us(6.0) + 150, False, "RA")

    _dns_tcp(cap, _us(7.0), CHECKOUT, 49000, 0x4D5E, "backend.shop.svc.cluster.local.", "fd00:10:96::c22")

    db = _Tcp(cap, CHECKOUT, 43000, DATABASE, 5432, client_seq=4_000_000, server_seq=5_000_000, rtt_us=200)
    t = db.handshake(_us(8.0))
    for at_s, rows in ((8.1, 3), (12.5, 12), (17.0, 1)):
        t = db.send(_us(at_s), True, b"QSELECT * FROM orders LIMIT %d;\x00" % rows)
        t = db.send(t + 1_500, False, b"T" + b"".join(f"row-{i:04d}|".encode() for i in range(rows)))
    db.close(_us(18.5))

    unanswered = _Tcp(cap, FRONTEND, 44000, PAYMENTS, 8443, client_seq=6_000_000, server_seq=0)
    for at_s in (14.0, 15.0, 17.0, 21.0):  # Linux SYN retransmission backoff, same ISN every time
        unanswered.client_seq = 6_000_000
        unanswered.segment(_us(at_s), True, "S")

    _dns(cap, _us(19.0), FRONTEND, 53007, 0x6E7F, "metrics.shop.svc.cluster.local.", None, answered=False)

    tls = _Tcp(cap, FRONTEND, 45000, API_SVC, 443, client_seq=7_000_000, server_seq=8_000_000)
    t = tls.handshake(_us(25.0))
    t = tls.send(t + 200, True, _tls_client_hello("payments.shop.svc.cluster.local"))
    t = tls.send(t + 2_000, False, _tls_server_hello())
    tls.close(t + 5_000)

    tls13 = _Tcp(cap, FRONTEND, 45002, API_SVC, 443, client_seq=7_100_000, server_seq=8_100_000)
    t = tls13.handshake(_us(26.5))
    t = tls13.send(t + 200, True, _tls13_client_hello("api.shop.svc.cluster.local"))
    t = tls13.send(t + 1_500, False, _tls13_server_hello())
    tls13.close(t + 5_000)

    refused_tls = _Tcp(cap, FRONTEND, 45004, API_SVC, 443, client_seq=7_200_000, server_seq=8_200_000)
    t = refused_tls.handshake(_us(28.0))
    t = refused_tls.send(t + 200, True, _tls_client_hello("legacy.shop.svc.cluster.local"))
    t = refused_tls.send(t + 800, False, TLS_FATAL_HANDSHAKE_FAILURE)
    refused_tls.close(t + 200, by_client=False)

    unavailable = _Tcp(cap, CHECKOUT, 46000, BACKEND_SVC, 80, client_seq=9_000_000, server_seq=9_500_000)
    t = unavailable.handshake(_us(30.0))
    order = b'{"order":"o-1001","amount":42.5}'
    t = unavailable.send(t + 100, True, _http_request("POST", "/api/checkout", backend_host, order))
    t = unavailable.send(t + 30_000, False, _http_response(503, "Service Unavailable", b'{"error":"upstream"}',
                                                            close=True))
    unavailable.close(t + 200, by_client=False)

    reset = _Tcp(cap, FRONTEND, 47000, DATABASE, 8080, client_seq=10_000_000, server_seq=11_000_000)
    t = reset.handshake(_us(35.0))
    t = reset.send(t + 100, True, _http_request("GET", "/api/stream", "10.244.2.20:8080"))
    partial = _http_response(200, "OK", b"x" * 400)[:-200]  # headers promise 400 bytes, 200 arrive
    t = reset.send(t + 5_000, False, partial)
    reset.segment(t + 50_000, False, "RA")

    _dns(cap, _us(40.0), CHECKOUT, 53003, 0x5E6F, "payments.shop.svc.cluster.local.", "10.96.77.7")

    keepalive = _Tcp(cap, CHECKOUT, 48000, BACKEND_SVC, 80, client_seq=12_000_000, server_seq=13_000_000)
    t = keepalive.handshake(_us(45.0))
    t = keepalive.send(t + 100, True, _http_request("GET", "/api/cart/17", backend_host))
    t = keepalive.send(t + 8_000, False, _http_response(200, "OK", b'{"cart":17,"lines":2}'))
    t = keepalive.send(_us(47.0), True, _http_request("GET", "/api/cart/17/total", backend_host))
    t = keepalive.send(t + 6_000, False, _http_response(200, "OK", b'{"total":84.0}'))
    keepalive.close(_us(52.0))

    pipelined = _Tcp(cap, CHECKOUT, 48002, BACKEND_SVC, 80, client_seq=18_000_000, server_seq=19_000_000)
    t = pipelined.handshake(_us(53.0))
    t = pipelined.send(t + 100, True, _http_request("GET", "/api/cart/18", backend_host)
                       + _http_request("GET", "/api/cart/19", backend_host))
    chunked = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"a\r\n{\"cart\":18\r\n1\r\n}\r\n0\r\n\r\n")
    t = pipelined.send(t + 7_000, False, chunked + _http_response(404, "Not Found", b'{"error":"no cart"}'))
    pipelined.close(t + 2_000)

    _dns(cap, _us(55.0), FRONTEND, 53004, 0x7A8B, backend_host + ".", BACKEND_SVC)
    last = _Tcp(cap, FRONTEND, 41004, BACKEND_SVC, 80, client_seq=14_000_000, server_seq=15_000_000)
    t = last.handshake(_us(56.0))
    t = last.send(t + 100, True, _http_request("GET", "/api/items", backend_host))
    t = last.send(t + 9_000, False, _http_response(200, "OK", items))
    last.close(t + 15_000)

    cap.write(path)
