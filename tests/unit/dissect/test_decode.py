"""Link layer -> IP -> TCP/UDP decoding on packets built with scapy; bad input is counted, never raised."""

from __future__ import annotations

import random

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_RR
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop, IPv6ExtHdrRouting
from scapy.layers.l2 import ARP, CookedLinux, CookedLinuxV2, Dot1AD, Dot1Q, Ether
from scapy.packet import Packet as ScapyPacket

from freezeframe.capture.pcapio import (
    LINKTYPE_ETHERNET,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_RAW,
    Packet,
)
from freezeframe.dissect import ConnectionTracker, Decoded, Skip, decode
from freezeframe.dissect.decode import LINKTYPE_IPV4, LINKTYPE_IPV6, TH_ACK, TH_AE, TH_PUSH, TH_SYN

V4_SRC, V4_DST = "10.244.1.10", "10.96.12.34"
V6_SRC, V6_DST = "fd00:10:244:1::a", "fd00:10:96::22"
PAYLOAD = b"GET / HTTP/1.1\r\nHost: backend\r\n\r\n"
ALL_LINK_TYPES = (LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2, LINKTYPE_RAW, LINKTYPE_IPV4,
                  LINKTYPE_IPV6)


def v4_tcp() -> ScapyPacket:
    tcp = TCP(sport=41000, dport=80, seq=1001, ack=2002, flags="PA", window=4321)
    return IP(src=V4_SRC, dst=V4_DST) / tcp / PAYLOAD


def v6_udp() -> ScapyPacket:
    return IPv6(src=V6_SRC, dst=V6_DST) / UDP(sport=53001, dport=53) / b"\x12\x34query"


def packed(address: str) -> bytes:
    import ipaddress

    return ipaddress.ip_address(address).packed


def assert_v4_tcp(result: Decoded | Skip) -> None:
    assert isinstance(result, Decoded)
    assert result[:10] == (6, packed(V4_SRC), packed(V4_DST), 41000, 80, TH_PUSH | TH_ACK, 1001, 2002, 4321,
                           len(PAYLOAD))


def assert_v6_udp(result: Decoded | Skip) -> None:
    assert isinstance(result, Decoded)
    assert result[:10] == (17, packed(V6_SRC), packed(V6_DST), 53001, 53, 0, 0, 0, 0, len(b"\x12\x34query"))


# --- link layers ------------------------------------------------------------------------------------------


def test_ethernet_ipv4_tcp() -> None:
    assert_v4_tcp(decode(LINKTYPE_ETHERNET, bytes(Ether() / v4_tcp())))


def test_ethernet_ipv6_udp() -> None:
    assert_v6_udp(decode(LINKTYPE_ETHERNET, bytes(Ether() / v6_udp())))


def test_802_1q_vlan_tag() -> None:
    assert_v4_tcp(decode(LINKTYPE_ETHERNET, bytes(Ether() / Dot1Q(vlan=42) / v4_tcp())))


def test_qinq_stacked_tags() -> None:
    frame = Ether() / Dot1AD(vlan=100) / Dot1Q(vlan=42) / v6_udp()
    assert_v6_udp(decode(LINKTYPE_ETHERNET, bytes(frame)))


def test_linux_cooked_sll() -> None:
    assert_v4_tcp(decode(LINKTYPE_LINUX_SLL, bytes(CookedLinux(pkttype=4, proto=0x0800) / v4_tcp())))


def test_linux_cooked_sll_with_an_unstripped_vlan_tag() -> None:
    frame = CookedLinux(proto=0x8100) / Dot1Q(vlan=7) / v6_udp()
    assert_v6_udp(decode(LINKTYPE_LINUX_SLL, bytes(frame)))


def test_linux_cooked_sll2() -> None:
    assert_v6_udp(decode(LINKTYPE_LINUX_SLL2, bytes(CookedLinuxV2(proto=0x86DD, ifindex=3) / v6_udp())))
    assert_v4_tcp(decode(LINKTYPE_LINUX_SLL2, bytes(CookedLinuxV2(proto=0x0800) / v4_tcp())))


@pytest.mark.parametrize("link_type", [LINKTYPE_RAW, LINKTYPE_IPV4])
def test_raw_ipv4(link_type: int) -> None:
    assert_v4_tcp(decode(link_type, bytes(v4_tcp())))


@pytest.mark.parametrize("link_type", [LINKTYPE_RAW, LINKTYPE_IPV6])
def test_raw_ipv6(link_type: int) -> None:
    assert_v6_udp(decode(link_type, bytes(v6_udp())))


def test_non_ip_ethertype_is_reported() -> None:
    assert decode(LINKTYPE_ETHERNET, bytes(Ether() / ARP(psrc=V4_SRC, pdst=V4_DST))) is Skip.NON_IP


def test_unknown_link_type_is_reported() -> None:
    assert decode(147, bytes(v4_tcp())) is Skip.UNSUPPORTED_LINK


# --- IP ---------------------------------------------------------------------------------------------------


def test_ipv4_options_move_the_transport_header() -> None:
    datagram = IP(src=V4_SRC, dst=V4_DST, options=[IPOption_RR(routers=["10.0.0.1"])]) / v4_tcp()[TCP]
    raw = bytes(datagram)
    assert raw[0] & 0x0F > 5
    assert_v4_tcp(decode(LINKTYPE_RAW, raw))


def test_ipv4_first_fragment_is_decoded_and_later_fragments_are_reported() -> None:
    first = IP(src=V4_SRC, dst=V4_DST, flags="MF", frag=0) / v4_tcp()[TCP]
    later = IP(src=V4_SRC, dst=V4_DST, proto=6, frag=185) / (b"x" * 64)

    assert isinstance(decode(LINKTYPE_RAW, bytes(first)), Decoded)
    assert decode(LINKTYPE_RAW, bytes(later)) is Skip.FRAGMENT


def test_ipv6_extension_headers_are_skipped() -> None:
    datagram = (IPv6(src=V6_SRC, dst=V6_DST) / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt()
                / IPv6ExtHdrRouting(addresses=["fd00::99"]) / IPv6ExtHdrFragment(offset=0, m=0)
                / v6_udp()[UDP])
    assert_v6_udp(decode(LINKTYPE_ETHERNET, bytes(Ether() / datagram)))


def test_ipv6_later_fragment_is_reported() -> None:
    datagram = IPv6(src=V6_SRC, dst=V6_DST) / IPv6ExtHdrFragment(offset=100, m=1, nh=17) / (b"y" * 48)
    assert decode(LINKTYPE_RAW, bytes(datagram)) is Skip.FRAGMENT


def test_other_transports_are_reported() -> None:
    assert decode(LINKTYPE_RAW, bytes(IP(src=V4_SRC, dst=V4_DST) / ICMP())) is Skip.OTHER_TRANSPORT


# --- TCP / UDP --------------------------------------------------------------------------------------------


def test_tcp_flags_including_ae_and_header_with_options() -> None:
    segment = TCP(sport=1, dport=2, flags="SAE", options=[("MSS", 1460), ("WScale", 7)])
    raw = bytearray(bytes(IP(src=V4_SRC, dst=V4_DST) / segment))
    raw[20 + 12] |= 0x01  # AE (formerly NS) lives in the low bit of the data offset byte

    result = decode(LINKTYPE_RAW, bytes(raw))

    assert isinstance(result, Decoded)
    assert result.flags & (TH_SYN | TH_ACK | TH_AE) == TH_SYN | TH_ACK | TH_AE
    assert result.payload_len == 0


def test_payload_length_comes_from_ip_so_a_snaplen_cut_does_not_shrink_it() -> None:
    frame = bytes(Ether() / v4_tcp())
    headers = 14 + 20 + 20
    assert_v4_tcp(decode(LINKTYPE_ETHERNET, frame[: headers + 3]))


def test_ethernet_padding_is_not_payload() -> None:
    frame = bytes(Ether() / IP(src=V4_SRC, dst=V4_DST) / UDP(sport=9, dport=9) / b"ab")
    padded = frame + b"\x00" * (60 - len(frame))

    result = decode(LINKTYPE_ETHERNET, padded)

    assert isinstance(result, Decoded)
    assert result.payload_len == 2


def test_zero_ip_total_length_from_segmentation_offload_uses_the_captured_length() -> None:
    raw = bytearray(bytes(v4_tcp()))
    raw[2:4] = b"\x00\x00"
    assert_v4_tcp(decode(LINKTYPE_RAW, bytes(raw)))


# --- malformed and truncated input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "headers_end"),
    [
        (bytes(Ether() / v4_tcp()), 14 + 20 + 20),
        (bytes(Ether() / Dot1Q() / v6_udp()), 14 + 4 + 40 + 8),
        (bytes(CookedLinuxV2(proto=0x86DD) / v6_udp()), 20 + 40 + 8),
    ],
)
def test_every_cut_inside_the_headers_is_truncated(frame: bytes, headers_end: int) -> None:
    link_type = LINKTYPE_LINUX_SLL2 if frame[:2] == b"\x86\xdd" else LINKTYPE_ETHERNET
    for cut in range(headers_end):
        assert decode(link_type, frame[:cut]) is Skip.TRUNCATED, cut
    assert isinstance(decode(link_type, frame[:headers_end]), Decoded)


def mutate(raw: bytes, offset: int, value: int) -> bytes:
    changed = bytearray(raw)
    changed[offset] = value
    return bytes(changed)


@pytest.mark.parametrize(
    ("link_type", "raw"),
    [
        (LINKTYPE_RAW, mutate(bytes(v4_tcp()), 0, 0x43)),  # IHL 3 (< 5 words)
        (LINKTYPE_RAW, mutate(bytes(v4_tcp()), 0, 0x55)),  # version 5
        (LINKTYPE_ETHERNET, mutate(bytes(Ether() / v4_tcp()), 14, 0x65)),  # IPv6 version behind an IPv4 type
        (LINKTYPE_RAW, mutate(mutate(bytes(v4_tcp()), 2, 0), 3, 12)),  # total length shorter than IHL
        (LINKTYPE_RAW, mutate(bytes(v4_tcp()), 20 + 12, 0x20)),  # TCP data offset 2 (< 5 words)
        (LINKTYPE_RAW, mutate(bytes(v4_tcp()), 20 + 12, 0xF0)),  # TCP header longer than the segment
        (LINKTYPE_RAW, mutate(mutate(bytes(IP() / UDP()), 2, 0), 3, 24)),  # UDP shorter than its header
    ],
)
def test_impossible_header_values_are_malformed(link_type: int, raw: bytes) -> None:
    assert decode(link_type, raw) is Skip.MALFORMED


def test_garbage_never_raises_on_any_link_type() -> None:
    rng = random.Random(20260101)
    samples = [bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 120))) for _ in range(3000)]
    valid = bytes(Ether() / Dot1Q() / v4_tcp())
    samples += [valid[:cut] for cut in range(len(valid))]
    for link_type in ALL_LINK_TYPES:
        for sample in samples:
            assert isinstance(decode(link_type, sample), Decoded | Skip)


def test_tracker_counts_every_packet_once_and_never_raises() -> None:
    good = bytes(Ether() / v4_tcp())
    packets = [
        good,
        good[:20],  # truncated inside IPv4
        mutate(good, 14, 0x43),  # malformed IHL
        bytes(Ether() / ARP()),  # non-IP
        bytes(Ether() / IP(src=V4_SRC, dst=V4_DST, proto=17, frag=10) / (b"z" * 8)),  # later fragment
        bytes(Ether() / IP(src=V4_SRC, dst=V4_DST) / ICMP()),  # other transport
        b"",  # empty record
    ]
    tracker = ConnectionTracker("node-a")
    tracker.feed(LINKTYPE_ETHERNET, [Packet(1_000 + i, len(data), data) for i, data in enumerate(packets)])
    tracker.feed(999, [Packet(9_000, len(good), good)])

    assert tracker.stats.as_dict() == {
        "packets": 8, "decoded": 1, "non_ip": 1, "malformed": 1, "truncated": 2, "fragments": 1,
        "other_transport": 1, "unsupported_link": 1, "tcp_port_reuse": 0, "udp_idle_splits": 0,
    }
    assert tracker.finish().num_rows == 1


def test_payload_offset_points_at_the_first_payload_byte() -> None:
    frame = bytes(Ether() / Dot1Q(vlan=42) / v4_tcp())
    result = decode(LINKTYPE_ETHERNET, frame)
    assert isinstance(result, Decoded)
    assert frame[result.payload_offset:result.payload_offset + result.payload_len] == PAYLOAD
    datagram = bytes(v6_udp())
    result = decode(LINKTYPE_RAW, datagram)
    assert isinstance(result, Decoded)
    assert datagram[result.payload_offset:] == b"\x12\x34query"


@pytest.mark.parametrize("size", [50, 52, 53])
def test_a_frame_cut_inside_the_tcp_header_is_truncated_on_every_path(size: int) -> None:
    """The tracker's Ethernet/IPv4/TCP fast path and ``decode`` agree: the whole 20-byte TCP header must be there.

    (The fast path once accepted frames from 50 bytes, the end of the window field; the fuzz test comparing the
    batched and the per-packet paths found it.)
    """
    frame = bytes(Ether() / v4_tcp())[:size]
    assert decode(LINKTYPE_ETHERNET, frame) == Skip.TRUNCATED
    tracker = ConnectionTracker("node-a")
    tracker.feed(LINKTYPE_ETHERNET, [Packet(1_000, len(frame), frame)])
    assert tracker.stats.truncated == 1 and tracker.stats.decoded == 0
