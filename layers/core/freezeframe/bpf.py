"""Check a BPF capture filter with libpcap's own compiler, without capturing: `pcap_open_dead` + `pcap_compile`
through ctypes (the same code tcpdump runs before it opens an interface), so a filter is judged exactly as the
capture engine will judge it, and its error message is libpcap's.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from functools import lru_cache

from freezeframe.errors import ConfigError

DLT_EN10MB = 1  # Ethernet: a named interface
DLT_LINUX_SLL2 = 276  # Linux cooked capture v2: what `tcpdump -i any` records with libpcap >= 1.10
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
