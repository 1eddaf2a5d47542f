"""Every service of a started local stack (Kafka, LocalStack, the gateway, and any process they spawn) listens on
loopback only: read from the kernel's own socket tables (/proc/net/tcp{,6}, /proc/net/udp{,6}), matched to the
stack's processes through their open file descriptors."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration
TCP_LISTEN = "0A"


def descendants(pids: set[int]) -> set[int]:
    """The processes and every process below them (LocalStack and the JVM may fork helpers), from each thread's
    /proc/<pid>/task/<tid>/children list."""
    found, pending = set(), list(pids)
    while pending:
        pid = pending.pop()
        if pid in found:
            continue
        found.add(pid)
        for children in Path(f"/proc/{pid}/task").glob("*/children"):
            try:
                pending.extend(int(child) for child in children.read_text().split())
            except OSError:
                continue  # the thread or the process ended meanwhile
    return found


def socket_inodes(pids: set[int]) -> set[int]:
    inodes = set()
    for pid in pids:
        try:
            names = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for name in names:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{name}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    return inodes


def decode_address(hex_address: str) -> tuple[str, int]:
    """/proc/net's `0100007F:1F90` (little-endian 32-bit words) -> ('127.0.0.1', 8080)."""
    host, port = hex_address.split(":")
    raw = bytes.fromhex(host)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(words)), int(port, 16)


def bound_sockets(tables: dict[str, str], inodes: set[int]) -> list[tuple[str, str, int]]:
    """(protocol, address, port) of the listening TCP and bound UDP sockets among `inodes`."""
    found = []
    for protocol, text in tables.items():
        for line in text.splitlines()[1:]:
            fields = line.split()
            if len(fields) < 10 or int(fields[9]) not in inodes:
                continue
            if protocol.startswith("tcp") and fields[3] != TCP_LISTEN:
                continue
            address, port = decode_address(fields[1])
            found.append((protocol, address, port))
    return found


def not_loopback(sockets: list[tuple[str, str, int]]) -> list[tuple[str, str, int]]:
    def loopback(address: str) -> bool:
        ip = ipaddress.ip_address(address)
        mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
        return ip.is_loopback or bool(mapped and mapped.is_loopback)

    return [entry for entry in sockets if not loopback(entry[1])]


def tables_of(pid: int) -> dict[str, str]:
    return {name: Path(f"/proc/{pid}/net/{name}").read_text() for name in ("tcp", "tcp6", "udp", "udp6")}


def test_every_stack_service_listens_on_loopback_only(stack: Any) -> None:
    pids = descendants({stack.kafka_pid, stack.s3_pid, stack.gateway_pid})
    sockets = bound_sockets(tables_of(stack.gateway_pid), socket_inodes(pids))
    ports = {port for _, _, port in sockets}
    expected = {int(stack.s3_endpoint.rsplit(":", 1)[1]), int(stack.gateway_url.rsplit(":", 1)[1]),
                int(stack.kafka_bootstrap.rsplit(":", 1)[1])}
    assert expected <= ports, f"the scan missed a known listener: {sorted(expected - ports)} not in {sockets}"
    assert not_loopback(sockets) == [], f"listening beyond loopback: {not_loopback(sockets)} (all: {sockets})"


def test_the_check_sees_a_socket_bound_to_every_interface() -> None:
    import socket

    # The same scan on a socket of our own bound to 0.0.0.0: it must be reported, so the check above can fail.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as wildcard, \
            socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as loop6:
        wildcard.bind(("0.0.0.0", 0))  # noqa: S104 - the point of the test
        wildcard.listen()
        loop6.bind(("::1", 0))
        loop6.listen()
        sockets = bound_sockets(tables_of(os.getpid()), socket_inodes({os.getpid()}))
        assert ("tcp", "0.0.0.0", wildcard.getsockname()[1]) in not_loopback(sockets)  # noqa: S104
        assert ("tcp6", "::1", loop6.getsockname()[1]) in sockets
        assert ("tcp6", "::1", loop6.getsockname()[1]) not in not_loopback(sockets)
