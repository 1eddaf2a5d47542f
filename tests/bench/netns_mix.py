"""A large capture of real kernel traffic for the dissection benchmark (``make bench-native``), made in namespaces.

Topology (all made here, deleted afterwards; TEST-NET-2 addresses, nothing leaves the namespaces)::

    client ns  veth ==== veth  router ns  veth ==== veth  server ns
    198.51.100.1/25        (kernel forwarding,          198.51.100.129/25
                            nft random drop on part)

The router forwards in the kernel; an nftables rule drops about 1 % of the frames to and from the lossy ports
(``numgen random mod 100 < 1``: ``tc netem`` is not built into this kernel), so part of the traffic sees loss,
retransmissions, dup ACKs and out-of-order arrivals. Offloads are off on every veth end, so the frames are real
MTU-sized frames. tcpdump records the server's veth, rotated like the node agent's segments (``-C``).

Traffic (asyncio clients in several processes against one asyncio server, bounded in count and time), short
connections dominating: HTTP/1.1 one request per connection and keep-alive with several, some of it through the
lossy path; DNS over UDP (NOERROR, NXDOMAIN, SERVFAIL, unanswered) and over TCP (several queries per connection);
TLS 1.3 and 1.2 handshakes with SNI and ALPN, then one request; connects to closed ports; a few bulk transfers
through the lossy path.

``python netns_mix.py server|client <config.json>`` are the roles run inside the namespaces (standard library only).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import ssl
import struct
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CLIENT_IP = "198.51.100.1"
SERVER_IP = "198.51.100.129"
HTTP_PORT = 80
LOSSY_HTTP_PORT = 8080
TLS_PORT = 443
DNS_PORT = 53
BULK_PORT = 5002  # lossy too
CLOSED_PORT = 4242
LOSSY_PORTS = (LOSSY_HTTP_PORT, BULK_PORT)
LOSS_PERCENT = 1
# Rough packets per operation (offloads off, MTU frames), used to stop near the target; the real count is measured.
PACKETS = {"http": 10, "keepalive": 22, "lossy_http": 22, "dns_udp": 8, "dns_tcp": 16, "tls": 18, "closed": 2,
           "bulk": 900}
WEIGHTS = {"http": 30, "keepalive": 12, "lossy_http": 6, "dns_udp": 22, "dns_tcp": 6, "tls": 10, "closed": 3,
           "bulk": 0.15}
CONCURRENCY = 48
TIME_LIMIT_S = 600


# --- server ----------------------------------------------------------------------------------------------------------

def _dns_answer(query: bytes) -> bytes | None:
    """A response to a one-question query: the name's first label picks the outcome."""
    if len(query) < 12:
        return None
    offset = 12
    labels = []
    while offset < len(query) and query[offset]:
        labels.append(query[offset + 1:offset + 1 + query[offset]])
        offset += 1 + query[offset]
    question_end = offset + 5
    if question_end > len(query):
        return None
    first = labels[0] if labels else b""
    if first.startswith(b"drop"):
        return None
    rcode = 3 if first.startswith(b"nx") else 2 if first.startswith(b"fail") else 0
    answers = b""
    count = 0
    if rcode == 0:
        count = 2
        for last in (7, 8):
            answers += b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 300, 4) + bytes([203, 0, 113, last])
    header = query[:2] + struct.pack("!HHHHH", 0x8180 | rcode, 1, count, 0, 0)
    return header + query[12:question_end] + answers


class _Dns(asyncio.DatagramProtocol):
    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        answer = _dns_answer(data)
        if answer is not None:
            self.transport.sendto(answer, addr)


async def _dns_tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            size = struct.unpack("!H", await reader.readexactly(2))[0]
            answer = _dns_answer(await reader.readexactly(size))
            if answer is not None:
                writer.write(struct.pack("!H", len(answer)) + answer)
                await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def _http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            line = head.split(b"\r\n", 1)[0].split(b" ")
            path = line[1] if len(line) > 1 else b"/"
            status, reason = (404, b"Not Found") if b"missing" in path else (500, b"Internal Server Error") \
                if b"error" in path else (200, b"OK")
            size = 20_000 if b"big" in path else 120
            close = b"connection: close" in head.lower()
            body = b"x" * size
            writer.write(b"HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n%s\r\n" % (
                status, reason, len(body), b"Connection: close\r\n" if close else b"") + body)
            await writer.drain()
            if close:
                break
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        pass
    finally:
        writer.close()


async def _bulk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        size = struct.unpack("!I", await reader.readexactly(4))[0]
        chunk = b"b" * 65536
        while size > 0:
            writer.write(chunk[:min(size, len(chunk))])
            size -= len(chunk)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def _serve(config: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(_Dns, local_addr=(SERVER_IP, DNS_PORT))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(config["cert"], config["key"])
    context.set_alpn_protocols(["http/1.1"])
    servers = [await asyncio.start_server(_dns_tcp, SERVER_IP, DNS_PORT, backlog=1024),
               await asyncio.start_server(_http, SERVER_IP, HTTP_PORT, backlog=1024),
               await asyncio.start_server(_http, SERVER_IP, LOSSY_HTTP_PORT, backlog=1024),
               await asyncio.start_server(_http, SERVER_IP, TLS_PORT, ssl=context, backlog=1024),
               await asyncio.start_server(_bulk, SERVER_IP, BULK_PORT, backlog=64)]
    print("ready", flush=True)
    await asyncio.gather(*(server.serve_forever() for server in servers))


# --- client ----------------------------------------------------------------------------------------------------------

def _query(ident: int, name: str) -> bytes:
    labels = b"".join(bytes([len(part)]) + part.encode() for part in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + labels + struct.pack("!HH", 1, 1)


def _name(rng: random.Random) -> str:
    outcome = rng.choices(["ok", "nx", "fail", "drop"], [80, 12, 5, 3])[0]
    return f"{outcome}{rng.randrange(10_000)}.svc{rng.randrange(50)}.cluster.local"


async def _request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str, close: bool) -> None:
    writer.write(f"GET {path} HTTP/1.1\r\nHost: svc.cluster.local\r\nUser-Agent: ff-bench/1\r\n"
                 f"{'Connection: close' if close else 'Connection: keep-alive'}\r\n\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
    await reader.readexactly(length)


def _path(rng: random.Random) -> str:
    return rng.choices(["/api/items", "/missing", "/error", "/big"], [80, 8, 4, 8])[0] + f"?n={rng.randrange(999)}"


async def _operation(kind: str, rng: random.Random, tls: dict[str, ssl.SSLContext], udp: Any) -> None:
    if kind in ("http", "keepalive", "lossy_http"):
        port = LOSSY_HTTP_PORT if kind == "lossy_http" else HTTP_PORT
        reader, writer = await asyncio.open_connection(SERVER_IP, port)
        count = 1 if kind == "http" else rng.randint(2, 6)
        for index in range(count):
            await _request(reader, writer, _path(rng), close=index == count - 1 and rng.random() < 0.5)
        writer.close()
    elif kind == "dns_udp":
        for _ in range(4):
            udp.sendto(_query(rng.randrange(65536), _name(rng)))
            await asyncio.sleep(0.002)
    elif kind == "dns_tcp":
        reader, writer = await asyncio.open_connection(SERVER_IP, DNS_PORT)
        for _ in range(rng.randint(1, 3)):
            name = _name(rng).replace("drop", "ok")  # an unanswered query would stall the connection
            query = _query(rng.randrange(65536), name)
            writer.write(struct.pack("!H", len(query)) + query)
            await writer.drain()
            size = struct.unpack("!H", await reader.readexactly(2))[0]
            await reader.readexactly(size)
        writer.close()
    elif kind == "tls":
        version = rng.choice(["1.3", "1.3", "1.2"])
        reader, writer = await asyncio.open_connection(SERVER_IP, TLS_PORT, ssl=tls[version],
                                                       server_hostname=f"api{rng.randrange(20)}.example.test")
        await _request(reader, writer, "/api/items", close=True)
        writer.close()
    elif kind == "closed":
        try:
            _reader, writer = await asyncio.open_connection(SERVER_IP, CLOSED_PORT)
            writer.close()
        except ConnectionRefusedError:
            pass
    else:
        reader, writer = await asyncio.open_connection(SERVER_IP, BULK_PORT)
        size = rng.choice([500_000, 1_000_000])
        writer.write(struct.pack("!I", size))
        await writer.drain()
        received = 0
        while received < size:
            data = await reader.read(65536)
            if not data:
                break
            received += len(data)
        writer.close()


class _Udp(asyncio.DatagramProtocol):
    def datagram_received(self, data: bytes, addr: Any) -> None:
        pass


async def _client(config: dict[str, Any], worker: int) -> dict[str, int]:
    rng = random.Random(config["seed"] * 100 + worker)
    tls = {}
    for version in ("1.3", "1.2"):
        context = ssl.create_default_context(cafile=config["cert"])
        context.check_hostname = False
        context.set_alpn_protocols(["h2", "http/1.1"])
        if version == "1.2":
            context.maximum_version = ssl.TLSVersion.TLSv1_2
        tls[version] = context
    loop = asyncio.get_running_loop()
    udp, _ = await loop.create_datagram_endpoint(_Udp, remote_addr=(SERVER_IP, DNS_PORT))
    budget = config["packets"] / config["workers"]
    deadline = time.monotonic() + TIME_LIMIT_S
    done: dict[str, int] = {"estimated_packets": 0, "errors": 0}
    mix = config.get("weights") or WEIGHTS
    kinds, weights = list(mix), list(mix.values())

    async def one() -> None:
        while done["estimated_packets"] < budget and time.monotonic() < deadline:
            kind = rng.choices(kinds, weights)[0]
            done["estimated_packets"] += PACKETS[kind]
            try:
                await asyncio.wait_for(_operation(kind, rng, tls, udp), 20)
                done[kind] = done.get(kind, 0) + 1
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ssl.SSLError, ValueError, IndexError):
                done["errors"] += 1

    await asyncio.gather(*(one() for _ in range(CONCURRENCY)))
    udp.close()
    return done


def run_client(config: dict[str, Any]) -> None:
    worker = int(os.environ.get("FF_MIX_WORKER", "0"))
    print(json.dumps(asyncio.run(_client(config, worker))), flush=True)


def run_server(config: dict[str, Any]) -> None:
    asyncio.run(_serve(config))


# --- orchestration ---------------------------------------------------------------------------------------------------

def mix(weights: dict[str, float] | None = None) -> dict[str, float]:
    """`WEIGHTS` with ``weights`` over it; ValueError for an unknown kind, a negative weight, or nothing to send."""
    unknown = sorted(set(weights or {}) - set(WEIGHTS))
    if unknown:
        raise ValueError(f"unknown kind {unknown[0]!r}; known: {', '.join(WEIGHTS)}")
    chosen = {**WEIGHTS, **(weights or {})}
    if any(weight < 0 for weight in chosen.values()):
        raise ValueError("a weight is negative")
    if not sum(chosen.values()) > 0:
        raise ValueError("every kind of traffic has weight 0: nothing would be sent")
    return chosen


@dataclass(frozen=True)
class MixCapture:
    segments: list[Path]
    client: list[dict[str, int]]
    seconds: float


def build(directory: Path, packets: int = 1_100_000, workers: int = 2, segment_mb: int = 64,
          seed: int = 20261206, weights: dict[str, float] | None = None) -> MixCapture:
    """Namespaces, servers, clients and tcpdump; returns the capture's segments (in order). Deletes what it made.
    ``weights`` (by kind of operation, as `WEIGHTS`) changes the mix, for a capture of another shape (`mix`)."""
    chosen = mix(weights)
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.fixtures.netns_traffic import _ip, _offloads_off, _self_signed, _start, _stop  # noqa: PLC0415

    directory.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:6]
    client_ns, router_ns, server_ns = f"fbc-{tag}", f"fbr-{tag}", f"fbs-{tag}"
    client_dev, router_client_dev, router_server_dev, server_dev = (f"fb{tag}{end}" for end in "abcd")
    cert, key = _self_signed(directory)
    config = {"cert": str(cert), "key": str(key), "seed": seed, "packets": packets, "workers": workers,
              "weights": chosen}
    config_path = directory / "mix.json"
    config_path.write_text(json.dumps(config))
    python, me = sys.executable, str(Path(__file__).resolve())
    namespaces: list[str] = []
    processes: list[subprocess.Popen[str]] = []
    started = time.monotonic()
    try:
        for ns in (client_ns, router_ns, server_ns):
            _ip("netns", "add", ns)
            namespaces.append(ns)
        _ip("link", "add", client_dev, "type", "veth", "peer", "name", router_client_dev)
        _ip("link", "add", server_dev, "type", "veth", "peer", "name", router_server_dev)
        placement = ((client_ns, client_dev, f"{CLIENT_IP}/25"), (router_ns, router_client_dev, "198.51.100.126/25"),
                     (router_ns, router_server_dev, "198.51.100.254/25"), (server_ns, server_dev, f"{SERVER_IP}/25"))
        for ns, dev, _address in placement:
            _offloads_off(dev)
            _ip("link", "set", dev, "netns", ns)
        for ns in namespaces:
            subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
                            "net.ipv6.conf.default.disable_ipv6=1", "net.ipv4.tcp_tw_reuse=1",
                            "net.ipv4.ip_local_port_range=10000 65000"], check=True, capture_output=True, timeout=10)
            _ip("-n", ns, "link", "set", "lo", "up")
        for ns, dev, address in placement:
            _ip("-n", ns, "addr", "add", address, "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
        subprocess.run(["ip", "netns", "exec", router_ns, "sysctl", "-qw", "net.ipv4.ip_forward=1"], check=True,
                       capture_output=True, timeout=10)
        _ip("-n", client_ns, "route", "add", "default", "via", "198.51.100.126")
        _ip("-n", server_ns, "route", "add", "default", "via", "198.51.100.254")
        ports = ", ".join(str(port) for port in LOSSY_PORTS)
        drop = f"numgen random mod 100 < {LOSS_PERCENT} drop"
        rules = (f"table inet loss {{\n chain forward {{\n  type filter hook forward priority 0;\n"
                 f"  tcp dport {{ {ports} }} {drop}\n  tcp sport {{ {ports} }} {drop}\n }}\n}}\n")
        subprocess.run(["ip", "netns", "exec", router_ns, "nft", "-f", "-"], input=rules, text=True, check=True,
                       capture_output=True, timeout=10)
        processes.append(_start(server_ns, [python, me, "server", str(config_path)], "ready"))
        capture = directory / "segment.pcap"
        tcpdump = _start(server_ns, ["tcpdump", "-n", "-Z", "root", "-i", server_dev, "-s", "0", "-B", "65536", "-C",
                                     str(segment_mb), "-w", str(capture)], "listening on", stream="stderr")
        processes.append(tcpdump)
        clients = [subprocess.Popen(["ip", "netns", "exec", client_ns, python, me, "client", str(config_path)],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    env={**os.environ, "FF_MIX_WORKER": str(worker)}) for worker in range(workers)]
        reports = []
        for client in clients:
            out, err = client.communicate(timeout=TIME_LIMIT_S + 60)
            if client.returncode:
                raise RuntimeError(f"client failed: {err[-2000:]}")
            reports.append(json.loads(out.strip().splitlines()[-1]))
        time.sleep(1.0)
        report = _stop(tcpdump)
        if "dropped by kernel" in report and " 0 packets dropped by kernel" not in report:
            print(f"tcpdump: {report.strip()}", file=sys.stderr)
        segments = sorted(directory.glob("segment.pcap*"), key=lambda p: int(p.name[len("segment.pcap"):] or 0))
        return MixCapture(segments, reports, time.monotonic() - started)
    finally:
        for process in processes:
            _stop(process)
        for ns in namespaces:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


if __name__ == "__main__":
    role, config_file = sys.argv[1], sys.argv[2]
    {"server": run_server, "client": run_client}[role](json.loads(Path(config_file).read_text()))
