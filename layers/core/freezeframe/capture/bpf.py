"""Check a BPF capture filter with libpcap's own compiler, without capturing: `pcap_open_dead` + `pcap_compile`
through ctypes (the same code tcpdump runs before it opens an interface), so a filter is judged exactly as the
capture engine will judge it, and its error message is libpcap's.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import ipaddress
import threading
from collections.abc import Callable
from functools import lru_cache
from urllib.parse import urlsplit

from freezeframe.adapters.dns import resolve_host
from freezeframe.capture.pcapio import LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL2
from freezeframe.contracts.config import ENV_OWN_TRAFFIC_NETS, Settings
from freezeframe.contracts.errors import ConfigError

DLT_EN10MB = LINKTYPE_ETHERNET  # Ethernet: a named interface
DLT_LINUX_SLL2 = LINKTYPE_LINUX_SLL2  # Linux cooked capture v2: what `tcpdump -i any` records with libpcap >= 1.10
PCAP_NETMASK_UNKNOWN = 0xFFFFFFFF
_LOCK = threading.Lock()  # pcap_compile is not thread-safe before libpcap 1.8


class _BpfProgram(ctypes.Structure):
    _fields_ = [("bf_len", ctypes.c_uint), ("bf_insns", ctypes.c_void_p)]


class FilterError(ConfigError):
    """A capture filter that libpcap does not compile."""


@lru_cache(maxsize=1)
def _libpcap() -> ctypes.CDLL:
    name = ctypes.util.find_library("pcap")
    if name is None:
        raise ConfigError("libpcap is not installed: cannot check capture filters (apt-get install libpcap0.8)")
    lib = ctypes.CDLL(name)
    lib.pcap_open_dead.restype = ctypes.c_void_p
    lib.pcap_open_dead.argtypes = [ctypes.c_int, ctypes.c_int]
    lib.pcap_compile.restype = ctypes.c_int
    lib.pcap_compile.argtypes = [ctypes.c_void_p, ctypes.POINTER(_BpfProgram), ctypes.c_char_p, ctypes.c_int,
                                 ctypes.c_uint32]
    lib.pcap_geterr.restype = ctypes.c_char_p
    lib.pcap_geterr.argtypes = [ctypes.c_void_p]
    lib.pcap_freecode.argtypes = [ctypes.POINTER(_BpfProgram)]
    lib.pcap_close.argtypes = [ctypes.c_void_p]
    return lib


def link_type_for(interfaces: tuple[str, ...]) -> int:
    """The link type the capture will have: Linux cooked v2 for `any` (and lists), Ethernet for one interface."""
    return DLT_LINUX_SLL2 if len(interfaces) != 1 or interfaces[0] == "any" else DLT_EN10MB


def compile_error(expression: str, link_type: int = DLT_EN10MB, snaplen: int = 262_144) -> str | None:
    """libpcap's reason when `expression` does not compile for `link_type`, else None (empty means everything)."""
    if not expression.strip():
        return None
    lib = _libpcap()
    with _LOCK:
        handle = lib.pcap_open_dead(link_type, snaplen)
        if not handle:
            raise ConfigError(f"libpcap cannot open a dead handle for link type {link_type}")
        program = _BpfProgram()
        try:
            if lib.pcap_compile(handle, ctypes.byref(program), expression.encode(), 1, PCAP_NETMASK_UNKNOWN) != 0:
                return (lib.pcap_geterr(handle) or b"does not compile").decode(errors="replace")
            lib.pcap_freecode(ctypes.byref(program))
            return None
        finally:
            lib.pcap_close(handle)


def check_filter(expression: str, link_type: int = DLT_EN10MB, what: str = "capture filter") -> None:
    """Raise FilterError with libpcap's reason when the filter does not compile."""
    error = compile_error(expression, link_type)
    if error is not None:
        raise FilterError(f"{what} {expression!r} is not valid BPF: {error}")


Resolver = Callable[[str], list[str]]


def own_traffic_exclusion(settings: Settings, resolve: Resolver = resolve_host) -> str:
    """A BPF `not (...)` for the agent's own connections, or "" when there is nothing to leave out:

    - each Kafka bootstrap broker, by address and port (MSK's broker addresses are stable);
    - a custom S3 endpoint (FREEZEFRAME_S3_ENDPOINT), by address and port;
    - FREEZEFRAME_OWN_TRAFFIC_NETS on port 443: AWS's S3 addresses rotate, so name the region's S3 prefix list
      (`aws ec2 get-managed-prefix-list-entries`), which is where the agent's uploads go through the VPC endpoint.

    Names are resolved once, when the capture starts (tcpdump does the same with names in a filter)."""
    terms: list[str] = []
    endpoints: list[tuple[str, int]] = []
    for server in (settings.kafka_bootstrap or "").split(","):
        host, _, port_text = server.strip().rpartition(":")
        if host and port_text.isdigit():
            endpoints.append((host.strip("[]"), int(port_text)))
    if settings.s3_endpoint:
        url = urlsplit(settings.s3_endpoint)
        if url.hostname:
            endpoints.append((url.hostname, url.port or (443 if url.scheme == "https" else 80)))
    for host, port in endpoints:
        addresses = [host] if _is_address(host) else resolve(host)
        terms += [f"(host {address} and tcp port {port})" for address in addresses]
    for net in settings.own_traffic_nets:
        try:
            network = ipaddress.ip_network(net, strict=False)
        except ValueError as exc:
            raise ConfigError(f"{ENV_OWN_TRAFFIC_NETS}: {net!r} is not a network (CIDR)") from exc
        terms.append(f"(net {network} and tcp port 443)")
    return f"not ({' or '.join(dict.fromkeys(terms))})" if terms else ""


def capture_filter(user_filter: str, settings: Settings, resolve: Resolver = resolve_host) -> str:
    """The filter the capture runs: the user's, minus the agent's own traffic (FREEZEFRAME_EXCLUDE_OWN_TRAFFIC)."""
    exclusion = own_traffic_exclusion(settings, resolve) if settings.exclude_own_traffic else ""
    if not exclusion:
        return user_filter
    return f"({user_filter}) and {exclusion}" if user_filter.strip() else exclusion


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
