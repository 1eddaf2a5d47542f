"""Link layer -> IP -> TCP/UDP header decoding with ``struct``, lean enough for the per-packet hot path.

Only the fields that connection tracking needs are read; deeper parsing (TCP options, DNS, HTTP, TLS)
belongs to per-protocol modules that run on the packets this one has already located.

References:
- Ethernet II / IEEE 802.3, 802.1Q VLAN tags and 802.1ad QinQ (TPIDs 0x8100, 0x88A8 and the legacy 0x9100).
- Linux cooked capture v1 and v2: https://www.tcpdump.org/linktypes/LINKTYPE_LINUX_SLL.html and
  https://www.tcpdump.org/linktypes/LINKTYPE_LINUX_SLL2.html.
- RFC 791 (IPv4, IHL and fragment offset), RFC 8200 (IPv6 and its extension headers), RFC 4302 (AH length
  in 32-bit words), RFC 2675 (jumbograms: payload length 0).
- RFC 9293 (TCP header: data offset, control bits), RFC 3168/RFC 9768 (the low bit of the offset byte,
  formerly NS, now AE), RFC 768 (UDP).

Malformed and truncated input is reported as a ``Skip`` value for the caller to count, never raised.
"""

from __future__ import annotations

import struct
from enum import IntEnum
from typing import NamedTuple

from freezeframe.capture.pcapio import (
    LINKTYPE_ETHERNET,
    LINKTYPE_IPV4,
    LINKTYPE_IPV6,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_RAW,
)

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD
VLAN_TPIDS = frozenset((0x8100, 0x88A8, 0x9100))

IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPV6_FRAGMENT = 44
IPV6_AH = 51
# Extension headers that share the "next header, length in 8-octet units" layout (RFC 8200 4.1, RFC 6564),
# plus the two with their own length rules (fragment, AH). ESP (50) cannot be walked: it is encrypted.
IPV6_EXTENSIONS = frozenset((0, 43, IPV6_FRAGMENT, IPV6_AH, 60, 135, 139, 140, 253, 254))

TH_FIN = 0x01
TH_SYN = 0x02
TH_RST = 0x04
TH_PUSH = 0x08
TH_ACK = 0x10
TH_URG = 0x20
TH_ECE = 0x40
TH_CWR = 0x80
TH_AE = 0x100

_u16 = struct.Struct("!H").unpack_from
_ipv4 = struct.Struct("!BxHxxHxB2x4s4s").unpack_from  # version/IHL, total length, flags/offset, protocol, src, dst
_ipv6 = struct.Struct("!B3xHB1x16s16s").unpack_from  # version, payload length, next header, src, dst
_tcp = struct.Struct("!HHIIBBH").unpack_from  # ports, seq, ack, data offset (+AE), control bits, window
_udp = struct.Struct("!HH").unpack_from
# The commonest frame, Ethernet II + IPv4 without options + TCP, in one unpack: ethertype, version/IHL, total length,
# flags/fragment offset, protocol, seq, ack, data offset, control bits, window. The addresses and ports (bytes 26-38)
# are sliced by the caller as one key. Callers check the fixed fields and fall back to ``decode`` for anything else,
# so both paths give the same result.
ETHERNET_IPV4_TCP = struct.Struct("!12xHBxHxxHxB14xIIBBH")
# The struct ends at the window field (50 bytes), but a frame must hold the whole 20-byte TCP header, as ``decode``
# requires: a snaplen cut inside the checksum or urgent pointer is a truncated packet on both paths.
ETHERNET_IPV4_TCP_LEN = 14 + 20 + 20


class Skip(IntEnum):
    """Why a packet produced no transport record. Values index a counter list on the hot path."""

    NON_IP = 0
    MALFORMED = 1
    TRUNCATED = 2
    FRAGMENT = 3  # a non-first IP fragment: counted, its bytes cannot be attributed without reassembly
    OTHER_TRANSPORT = 4  # IP, but neither TCP nor UDP (ICMP, ESP, SCTP, ...)
    UNSUPPORTED_LINK = 5


class Decoded(NamedTuple):
    """The transport header of one packet.

    A NamedTuple rather than a frozen dataclass: it is built once per packet, and a tuple is several times
    cheaper to construct and to unpack.
    """

    proto: int  # IP protocol number: 6 TCP, 17 UDP
    src: bytes  # packed address, 4 (IPv4) or 16 (IPv6) bytes
    dst: bytes
    sport: int
    dport: int
    flags: int  # TCP control bits incl. AE as 0x100; 0 for UDP
    seq: int  # TCP sequence number; 0 for UDP
    ack: int  # TCP acknowledgment number; 0 for UDP
    window: int  # TCP window field as sent (unscaled); 0 for UDP
    payload_len: int  # transport payload length taken from the IP length, so a snaplen cut does not shrink it
    payload_offset: int  # index of the first transport payload byte in the frame (may be past a snaplen cut)
    header_offset: int  # index of the transport header; TCP options lie between it + 20 and payload_offset


def decode(link_type: int, data: bytes) -> Decoded | Skip:
    """Locate the IP header for ``link_type`` and decode down to TCP/UDP."""
    size = len(data)
    if link_type == LINKTYPE_ETHERNET:
        if size < 14:
            return Skip.TRUNCATED
        (ethertype,) = _u16(data, 12)
        offset = 14
    elif link_type == LINKTYPE_LINUX_SLL2:
        if size < 20:
            return Skip.TRUNCATED
        (ethertype,) = _u16(data, 0)
        offset = 20
    elif link_type == LINKTYPE_LINUX_SLL:
        if size < 16:
            return Skip.TRUNCATED
        (ethertype,) = _u16(data, 14)
        offset = 16
    elif link_type in (LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6):
        if not size:
            return Skip.TRUNCATED
        version = data[0] >> 4
        if version == 4:
            return decode_ipv4(data, 0)
        if version == 6:
            return decode_ipv6(data, 0)
        return Skip.MALFORMED
    else:
        return Skip.UNSUPPORTED_LINK
    # Tags that the NIC or the kernel did not strip sit between the link header and IP, possibly stacked.
    while ethertype in VLAN_TPIDS:
        if size < offset + 4:
            return Skip.TRUNCATED
        (ethertype,) = _u16(data, offset + 2)
        offset += 4
    if ethertype == ETHERTYPE_IPV4:
        return decode_ipv4(data, offset)
    if ethertype == ETHERTYPE_IPV6:
        return decode_ipv6(data, offset)
    return Skip.NON_IP


def decode_ipv4(data: bytes, offset: int) -> Decoded | Skip:
    """RFC 791 header at ``offset``; non-first fragments are reported, not parsed."""
    size = len(data)
    if size < offset + 20:
        return Skip.TRUNCATED
    version_ihl, total_length, flags_offset, protocol, src, dst = _ipv4(data, offset)
    if version_ihl >> 4 != 4:
        return Skip.MALFORMED
    ihl = (version_ihl & 0x0F) * 4
    if ihl < 20:
        return Skip.MALFORMED
    if total_length == 0:
        # TSO/GSO on the capturing host hands libpcap super-frames whose length field is still zero.
        total_length = size - offset
    if total_length < ihl:
        return Skip.MALFORMED
    if flags_offset & 0x1FFF:
        return Skip.FRAGMENT
    return decode_transport(data, offset + ihl, total_length - ihl, protocol, src, dst)


def decode_ipv6(data: bytes, offset: int) -> Decoded | Skip:
    """RFC 8200 header at ``offset``, walking the common extension headers to the transport header."""
    size = len(data)
    if size < offset + 40:
        return Skip.TRUNCATED
    version, payload_length, next_header, src, dst = _ipv6(data, offset)
    if version >> 4 != 6:
        return Skip.MALFORMED
    position = offset + 40
    if payload_length == 0:
        # Jumbogram (RFC 2675) or a GSO super-frame: the real length is what was captured.
        payload_length = size - position
    end = position + payload_length
    while next_header in IPV6_EXTENSIONS:
        if size < position + 8:
            return Skip.TRUNCATED
        if next_header == IPV6_FRAGMENT:
            if _u16(data, position + 2)[0] & 0xFFF8:
                return Skip.FRAGMENT
            length = 8
        elif next_header == IPV6_AH:
            length = (data[position + 1] + 2) * 4
        else:
            length = (data[position + 1] + 1) * 8
        next_header = data[position]
        position += length
        if position > end:
            return Skip.MALFORMED
    return decode_transport(data, position, end - position, next_header, src, dst)


def decode_transport(data: bytes, offset: int, length: int, protocol: int, src: bytes, dst: bytes) -> Decoded | Skip:
    """TCP (RFC 9293) or UDP (RFC 768) header at ``offset``; ``length`` is the transport length per IP."""
    if protocol == IPPROTO_TCP:
        if len(data) < offset + 20:
            return Skip.TRUNCATED
        sport, dport, seq, ack, data_offset, flags, window = _tcp(data, offset)
        header_length = (data_offset >> 4) * 4
        if header_length < 20 or header_length > length:
            return Skip.MALFORMED
        return Decoded(IPPROTO_TCP, src, dst, sport, dport, flags | (data_offset & 1) << 8, seq, ack, window,
                       length - header_length, offset + header_length, offset)
    if protocol == IPPROTO_UDP:
        if len(data) < offset + 8:
            return Skip.TRUNCATED
        if length < 8:
            return Skip.MALFORMED
        sport, dport = _udp(data, offset)
        return Decoded(IPPROTO_UDP, src, dst, sport, dport, 0, 0, 0, 0, length - 8, offset + 8, offset)
    return Skip.OTHER_TRANSPORT
