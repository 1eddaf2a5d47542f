"""Name resolution: the addresses of a host, for the agent's own-traffic capture filter (freezeframe.capture.bpf)."""

from __future__ import annotations

import socket


def resolve_host(host: str) -> list[str]:
    """The host's TCP addresses, sorted; none when the name does not resolve (the filter then names no address)."""
    try:
        return sorted({str(info[4][0]) for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)})
    except socket.gaierror:
        return []
