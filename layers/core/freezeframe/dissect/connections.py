"""Connection tracking: one row per TCP or UDP conversation, matching Wireshark's conversations.

Conversation identity follows Wireshark's TCP dissector (epan/dissectors/packet-tcp.c, ``dissect_tcp``):

- TCP: a conversation is the 4-tuple until a pure SYN (SYN without ACK, RFC 9293 3.5) arrives on it
  whose sequence number differs from the base sequence number already seen from that sender, or after
  the conversation has seen a FIN or a RST. That SYN starts a new conversation (port reuse). A SYN
  retransmitted with the same ISN stays in the open conversation. TCP has no idle timeout, as in Wireshark.
- UDP (RFC 768): one conversation per 5-tuple; a gap of more than ``UDP_IDLE_TIMEOUT_NS`` (120 s, the
  order of conntrack's ``nf_conntrack_udp_timeout_stream``) starts a new one, so a port reused much
  later by an unrelated client is not glued to an old exchange. Wireshark never splits UDP; gaps that
  long within one incident window are rare.

The initiator (``src_*``) is the sender of the first pure SYN for TCP, the receiver of a SYN-ACK when
that is the first packet seen (the SYN was missed), and otherwise the sender of the first packet seen.

``completeness`` is Wireshark's ``tcp.completeness`` (packet-tcp.c, "initialize or move forward the
conversation completeness"), evaluated per packet:

- SYN (1): a pure SYN that opens a conversation (new 4-tuple, port reuse, or the first packet of that
  sender). A TFO SYN carrying payload also sets DATA.
- SYN-ACK (2): SYN and ACK both set.
- ACK (4) / DATA (8): SYN clear and ACK set: DATA when the segment carries payload, ACK otherwise. So an
  empty FIN-ACK or RST-ACK also sets ACK: a refused connection (SYN, RST-ACK) is 37, not 33.
- FIN (16): FIN and ACK both set.
- RST (32): RST set.

Every TCP conversation also carries a ``TcpAnalysis`` (dissect/tcp/analysis.py: Wireshark's sequence analysis, RTTs,
Zeek state and history) that sees each of its segments in capture order; it lives as long as the conversation, so the
TCP insight columns cover a connection across capture-segment boundaries.
"""

from __future__ import annotations

import gc
import hashlib
import socket
import struct
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import pyarrow as pa

from freezeframe.capture.pcapio import LINKTYPE_ETHERNET, Packet
from freezeframe.contracts.schemas import CONNECTIONS, TCP_INSIGHTS
from freezeframe.dissect.apps import IGNORED, AppTracker, FlowIdentity
from freezeframe.dissect.decode import (
    ETHERNET_IPV4_TCP,
    ETHERNET_IPV4_TCP_LEN,
    ETHERTYPE_IPV4,
    IPPROTO_TCP,
    IPPROTO_UDP,
    TH_ACK,
    TH_FIN,
    TH_RST,
    TH_SYN,
    Skip,
    decode,
)
from freezeframe.dissect.tcp.analysis import TcpAnalysis, window_scale_option

UDP_IDLE_TIMEOUT_NS = 120 * 1_000_000_000

COMPLETENESS_SYN = 0x01
COMPLETENESS_SYNACK = 0x02
COMPLETENESS_ACK = 0x04
COMPLETENESS_DATA = 0x08
COMPLETENESS_FIN = 0x10
COMPLETENESS_RST = 0x20

PROTO_NAMES = {IPPROTO_TCP: "tcp", IPPROTO_UDP: "udp"}

_SYN_ACK = TH_SYN | TH_ACK
_FIN_ACK = TH_FIN | TH_ACK
_SYN_FIN_RST = TH_SYN | TH_FIN | TH_RST
_CLOSED = COMPLETENESS_FIN | COMPLETENESS_RST
_ethernet_ipv4_tcp = ETHERNET_IPV4_TCP.unpack_from
_ports = struct.Struct("!HH").pack
_INSIGHT_NAMES = tuple(field.name for field in TCP_INSIGHTS)
# Column order of the row tuples ``finish`` builds; a test checks it is CONNECTIONS' order.
_ROW_NAMES = ("node", "conn_id", "proto", "src_ip", "src_port", "dst_ip", "dst_port", "ts", "ts_ns", "first_ts",
              "first_ts_ns", "last_ts", "last_ts_ns", "duration_us", "packets_out", "packets_in", "bytes_out",
              "bytes_in", "payload_bytes_out", "payload_bytes_in", "completeness", "isn_out", "isn_in",
              *_INSIGHT_NAMES, "src_namespace",
              "src_pod", "src_workload", "dst_namespace", "dst_pod", "dst_workload")
_NO_SEQ = -1  # sequence numbers are unsigned 32-bit, so -1 marks "no base sequence seen yet"


_unpack_ports = struct.Struct("!HH").unpack_from


def _reversed(key: bytes) -> bytes:
    """The live-table key of the opposite direction: addresses swapped, ports swapped."""
    size = (len(key) - 4) // 2
    return key[size:2 * size] + key[:size] + key[2 * size + 2:] + key[2 * size:2 * size + 2]


@dataclass(slots=True)
class DissectStats:
    """Counters over every packet fed; each packet lands in exactly one of decoded or a skip reason."""

    packets: int = 0
    decoded: int = 0  # TCP/UDP packets attributed to a conversation
    non_ip: int = 0
    malformed: int = 0
    truncated: int = 0
    fragments: int = 0  # non-first IP fragments (counted, not attributed)
    other_transport: int = 0  # IP that is neither TCP nor UDP
    unsupported_link: int = 0
    tcp_port_reuse: int = 0  # conversations started by a new SYN on a 4-tuple already seen
    udp_idle_splits: int = 0  # conversations started by a gap longer than UDP_IDLE_TIMEOUT_NS

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


_SKIP_FIELDS = {
    Skip.NON_IP: "non_ip",
    Skip.MALFORMED: "malformed",
    Skip.TRUNCATED: "truncated",
    Skip.FRAGMENT: "fragments",
    Skip.OTHER_TRANSPORT: "other_transport",
    Skip.UNSUPPORTED_LINK: "unsupported_link",
}


class _Flow:
    """Mutable per-conversation state (not a record: it changes with every packet)."""

    __slots__ = ("proto", "src", "sport", "dst", "dport", "first_ns", "last_ns", "packets_out", "packets_in",
                 "bytes_out", "bytes_in", "payload_out", "payload_in", "completeness", "base_seq_out",
                 "base_seq_in", "isn_out", "isn_in", "app", "tcp")

    def __init__(self, proto: int, src: bytes, sport: int, dst: bytes, dport: int, ts_ns: int) -> None:
        self.proto = proto
        self.src = src
        self.sport = sport
        self.dst = dst
        self.dport = dport
        self.first_ns = ts_ns
        self.last_ns = ts_ns
        self.packets_out = 0
        self.packets_in = 0
        self.bytes_out = 0
        self.bytes_in = 0
        self.payload_out = 0
        self.payload_in = 0
        self.completeness = 0
        self.base_seq_out = _NO_SEQ
        self.base_seq_in = _NO_SEQ
        self.isn_out: int | None = None  # raw sequence number of the initiator's SYN, when seen
        self.isn_in: int | None = None  # raw sequence number of the responder's SYN-ACK, when seen
        self.app: Any = None  # application-layer state, owned by AppTracker
        self.tcp: TcpAnalysis | None = TcpAnalysis() if proto == IPPROTO_TCP else None


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pauses Python's cyclic garbage collector around a bulk pass.

    Dissection allocates millions of small objects that form no reference cycles (per packet, per flow, per row);
    with the collector on, each allocation burst makes it rescan every live flow, which costs more than the
    dissection itself on large captures. Reference counting still frees everything as usual.
    """
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def connection_id(node: str, proto: str, src_ip: str, src_port: int | None, dst_ip: str, dst_port: int | None,
                  first_ts_ns: int) -> str:
    """Deterministic id of one connection, shared by every table that refers to it."""
    key = f"{node}|{proto}|{src_ip}|{src_port}|{dst_ip}|{dst_port}|{first_ts_ns}"
    return hashlib.blake2b(key.encode(), digest_size=8).hexdigest()


class ConnectionTracker:
    """Folds the packets of one node into conversations; flow state carries across ``feed`` calls."""

    def __init__(self, node: str, app: AppTracker | None = None) -> None:
        self.node = node
        self.stats = DissectStats()
        # Receives every TCP/UDP payload from this same decode pass (DNS, HTTP, TLS); None tracks connections only.
        self.app = app
        # Both directions of a live conversation map to it, per protocol; the flag says whether that direction is
        # the initiator's. The key is the packed source and destination addresses then ports, which for IPv4 is the
        # frame's own bytes 26-38 after an Ethernet header: the hot path needs one slice and one dict lookup.
        self._live: dict[int, dict[bytes, tuple[_Flow, bool]]] = {IPPROTO_TCP: {}, IPPROTO_UDP: {}}
        self._ended: list[_Flow] = []
        self._names: dict[bytes, str] = {}
        # identify() results; a flow's identity (its first_ns) changes only while feeding, which empties this.
        self._identities: dict[_Flow, FlowIdentity] = {}
        # Keys of the conversations whose acknowledgement tracking the batched path (dissect.tcp.batch) does for the
        # batch being fed: a conversation it opens starts with that tracking off (see ``acks_tracked_by_caller``).
        self._batch_keys: set[bytes] = set()

    def feed(self, link_type: int, packets: Iterable[Packet]) -> None:
        """Account one capture segment's packets, in capture order."""
        with collector_paused():
            self._feed(((link_type, packets),))

    def feed_runs(self, runs: Iterable[tuple[int, Iterable[Packet]]]) -> None:
        """``feed`` for each (link type, packets) run, e.g. a reader's ``runs()``, with the collector paused throughout.

        Prefer this to calling ``feed`` per run: with the collector back on between runs, the reader's allocations
        trigger full collections that rescan every live flow (measured: about 1 s per million packets).
        """
        with collector_paused():
            self._feed(runs)

    # -- The seam of the batched path (dissect.tcp.batch) and the chunk warm-up (dissect.warmup): everything they
    # need of the tracker beyond feed and tcp_segment; nothing outside this module touches its private members.

    @property
    def tcp_conversations(self) -> Mapping[bytes, tuple[_Flow, bool]]:
        """Live TCP conversations by directional key (as ``tcp_segment`` takes it) -> (flow, the key is the initiator's
        direction). Read-only: conversations open and end through ``feed`` and ``tcp_segment``."""
        return self._live[IPPROTO_TCP]

    @contextmanager
    def acks_tracked_by_caller(self, keys: set[bytes]) -> Iterator[None]:
        """Within the block, a TCP conversation opened with one of ``keys`` starts with acknowledgement tracking
        (``TcpAnalysis.track_acks``) off: the caller computes those lists and ack_rtt samples and hands them back."""
        self._batch_keys = keys
        try:
            yield
        finally:
            self._batch_keys = set()

    def forget_identities(self) -> None:
        """Drops the cached ``identify`` results; for a caller that changed a flow's first_ns outside ``feed``."""
        self._identities = {}

    def conversations(self) -> list[_Flow]:
        """Every conversation seen so far, ended ones first, then the live ones (each once)."""
        return self._ended + self.live_conversations()

    def live_conversations(self) -> list[_Flow]:
        """The conversations still open (each once), every protocol."""
        return [flow for live in self._live.values() for flow, outbound in live.values() if outbound]

    def forget_ended(self) -> None:
        """Drops the conversations that have ended (the live ones stay)."""
        self._ended = []

    def _feed(self, runs: Iterable[tuple[int, Iterable[Packet]]]) -> None:
        if self._identities:
            self._identities = {}
        live_udp = self._live[IPPROTO_UDP]
        skips = [0] * len(Skip)
        decoded = 0  # every packet is either decoded or counted in skips
        for link_type, packets in runs:
            ethernet = link_type == LINKTYPE_ETHERNET
            for ts_ns, orig_len, data in packets:
                # Fast path for Ethernet + IPv4 (no options, not a fragment) + TCP; everything else goes through decode.
                if ethernet and len(data) >= ETHERNET_IPV4_TCP_LEN:
                    (ethertype, version_ihl, total_length, fragment, proto, seq, ack, data_offset, flags,
                     window) = _ethernet_ipv4_tcp(data)
                    header_length = (data_offset >> 4) * 4
                    if (ethertype == ETHERTYPE_IPV4 and version_ihl == 0x45 and proto == IPPROTO_TCP
                            and not fragment & 0x1FFF and 20 <= header_length <= total_length - 20):
                        flags |= (data_offset & 1) << 8
                        payload_len = total_length - 20 - header_length
                        header_offset = 34
                        payload_offset = 34 + header_length
                        key = data[26:38]
                    else:
                        ethertype = -1
                else:
                    ethertype = -1
                if ethertype == -1:
                    result = decode(link_type, data)
                    if isinstance(result, Skip):
                        skips[result] += 1
                        continue
                    (proto, src, dst, sport, dport, flags, seq, ack, window, payload_len, payload_offset,
                     header_offset) = result
                    key = src + dst + _ports(sport, dport)
                decoded += 1
                if proto == IPPROTO_TCP:
                    self.tcp_segment(key, ts_ns, orig_len, data, flags, seq, ack, window, payload_len, header_offset,
                                     payload_offset)
                    continue
                entry = live_udp.get(key)
                if entry is None:
                    flow = self._open(proto, key, ts_ns)
                    outbound = True
                else:
                    flow, outbound = entry
                    if ts_ns - flow.last_ns > UDP_IDLE_TIMEOUT_NS:
                        self._ended.append(flow)
                        flow = self._open(proto, key, ts_ns)
                        outbound = True
                        self.stats.udp_idle_splits += 1
                self._account(flow, outbound, ts_ns, orig_len, payload_len, 0, data, payload_offset)
        stats = self.stats
        stats.packets += decoded + sum(skips)
        stats.decoded += decoded
        for reason, count in enumerate(skips):
            if count:
                field = _SKIP_FIELDS[Skip(reason)]
                setattr(stats, field, getattr(stats, field) + count)

    def tcp_segment(self, key: bytes, ts_ns: int, orig_len: int, data: bytes, flags: int, seq: int, ack: int,
                    window: int, payload_len: int, header_offset: int, payload_offset: int) -> None:
        """One decoded TCP segment (``key``: its source and destination addresses, then ports) of ``data``."""
        live_tcp = self._live[IPPROTO_TCP]
        entry = live_tcp.get(key)
        if entry is not None and not flags & _SYN_FIN_RST:
            # The common segment of a known conversation (what the general branch below does for it):
            # it opens nothing, and only the ACK or DATA completeness bit can be new.
            flow, outbound = entry
            if outbound:
                if flow.base_seq_out == _NO_SEQ:
                    flow.base_seq_out = (seq - 1) & 0xFFFFFFFF
            elif flow.base_seq_in == _NO_SEQ:
                flow.base_seq_in = (seq - 1) & 0xFFFFFFFF
            if flags & TH_ACK:
                flow.completeness |= COMPLETENESS_DATA if payload_len else COMPLETENESS_ACK
            tcp = flow.tcp
            assert tcp is not None
            tcp.segment(outbound, ts_ns, seq, ack, payload_len, flags, window)
        else:
            opens = False
            pure_syn = flags & _SYN_ACK == TH_SYN
            if entry is None:
                if flags & _SYN_ACK == _SYN_ACK:  # the SYN was missed: the receiver initiated
                    flow = self._open(IPPROTO_TCP, _reversed(key), ts_ns)
                    outbound = False
                else:
                    flow = self._open(IPPROTO_TCP, key, ts_ns)
                    outbound = True
                opens = True
            else:
                flow, outbound = entry
                if pure_syn:
                    base = flow.base_seq_out if outbound else flow.base_seq_in
                    if base == _NO_SEQ:
                        opens = True  # first packet of this sender: Wireshark still counts the SYN
                    elif seq != base or flow.completeness & _CLOSED:
                        self._ended.append(flow)
                        flow = self._open(IPPROTO_TCP, key, ts_ns)
                        outbound = True
                        opens = True
                        self.stats.tcp_port_reuse += 1
            if outbound:
                if flow.base_seq_out == _NO_SEQ:
                    flow.base_seq_out = seq if flags & TH_SYN else (seq - 1) & 0xFFFFFFFF
            elif flow.base_seq_in == _NO_SEQ:
                flow.base_seq_in = seq if flags & TH_SYN else (seq - 1) & 0xFFFFFFFF
            if flags & TH_SYN:
                if outbound:
                    if flow.isn_out is None:
                        flow.isn_out = seq
                elif flow.isn_in is None:
                    flow.isn_in = seq
            if flags & _SYN_FIN_RST:
                completeness = flow.completeness
                if pure_syn:
                    if opens:
                        completeness |= COMPLETENESS_SYN | (COMPLETENESS_DATA if payload_len else 0)
                elif flags & _SYN_ACK == _SYN_ACK:
                    completeness |= COMPLETENESS_SYNACK
                elif flags & TH_ACK:
                    completeness |= COMPLETENESS_DATA if payload_len else COMPLETENESS_ACK
                if flags & _FIN_ACK == _FIN_ACK:
                    completeness |= COMPLETENESS_FIN
                if flags & TH_RST:
                    completeness |= COMPLETENESS_RST
                flow.completeness = completeness
            elif flags & TH_ACK:  # the common segment: only the ACK or DATA bit can be new
                flow.completeness |= COMPLETENESS_DATA if payload_len else COMPLETENESS_ACK
            tcp = flow.tcp
            assert tcp is not None
            if flags & TH_SYN:
                tcp.segment(outbound, ts_ns, seq, ack, payload_len, flags, window,
                            window_scale_option(data, header_offset + 20, payload_offset))
            else:
                tcp.segment(outbound, ts_ns, seq, ack, payload_len, flags, window)
        self._account(flow, outbound, ts_ns, orig_len, payload_len, seq, data, payload_offset)

    def _account(self, flow: _Flow, outbound: bool, ts_ns: int, orig_len: int, payload_len: int, seq: int,
                 data: bytes, payload_offset: int) -> None:
        """Counts one packet of ``flow`` and hands its payload to the application tracker."""
        if outbound:
            flow.packets_out += 1
            flow.bytes_out += orig_len
            flow.payload_out += payload_len
        else:
            flow.packets_in += 1
            flow.bytes_in += orig_len
            flow.payload_in += payload_len
        if payload_len and self.app is not None and flow.app is not IGNORED:
            self.app.payload(flow, outbound, ts_ns, seq, data, payload_offset, payload_len)
        # Captures from several CPUs can be slightly out of order, hence both bounds.
        if ts_ns > flow.last_ns:
            flow.last_ns = ts_ns
        elif ts_ns < flow.first_ns:
            flow.first_ns = ts_ns

    def _open(self, proto: int, key: bytes, ts_ns: int) -> _Flow:
        """A new conversation whose initiator sends with ``key`` (source address, destination address, ports)."""
        size = (len(key) - 4) // 2
        sport, dport = _unpack_ports(key, 2 * size)
        flow = _Flow(proto, key[:size], sport, key[size:2 * size], dport, ts_ns)
        if self._batch_keys and key in self._batch_keys and flow.tcp is not None:
            flow.tcp.track_acks = False
        live = self._live[proto]
        # Reverse first: for a socket talking to itself both keys are equal and must mean "outbound".
        live[_reversed(key)] = (flow, False)
        live[key] = (flow, True)
        return flow

    def identify(self, flow: _Flow) -> FlowIdentity:
        """conn_id and the text endpoints of a flow, as its connections row has them."""
        identity = self._identities.get(flow)
        if identity is None:
            src_ip = self._ip_text(flow.src)
            dst_ip = self._ip_text(flow.dst)
            conn_id = connection_id(self.node, PROTO_NAMES[flow.proto], src_ip, flow.sport, dst_ip, flow.dport,
                                    flow.first_ns)
            identity = self._identities[flow] = (conn_id, src_ip, flow.sport, dst_ip, flow.dport)
        return identity

    def _ip_text(self, packed: bytes) -> str:
        text = self._names.get(packed)
        if text is None:
            family = socket.AF_INET if len(packed) == 4 else socket.AF_INET6
            text = self._names[packed] = socket.inet_ntop(family, packed)
        return text

    def payload_segments(self) -> dict[str, int]:
        """conn_id -> TCP segments with payload (the denominator of ``retransmission_rate``), for chunk merges."""
        flows = self._ended + [flow for flow, outbound in self._live[IPPROTO_TCP].values() if outbound]
        return {self.identify(flow)[0]: flow.tcp.payload_segments for flow in flows if flow.tcp is not None}

    def app_tables(self) -> dict[str, pa.Table]:
        """The dns, http and tls tables of the application tracker (empty dict without one)."""
        if self.app is None:
            return {}
        with collector_paused():
            return self.app.finish(self.identify)

    def close(self) -> None:
        """Drops every conversation once the tables are built (the tracker is empty afterwards).

        A flow and its application handler refer to each other, so without this the tracker's millions of objects
        wait for a cyclic collection, which costs about half a second per million packets when it comes; breaking
        the cycles here lets reference counting free them at once.
        """
        for flow in self._ended:
            flow.app = None
        for live in self._live.values():
            for flow, _outbound in live.values():
                flow.app = None
        self._ended = []
        self._live = {IPPROTO_TCP: {}, IPPROTO_UDP: {}}
        self._identities = {}
        if self.app is not None:
            self.app.close()

    def finish(self) -> pa.Table:
        """Every conversation seen so far (open ones included), sorted by first_ts_ns then conn_id."""
        with collector_paused():
            return self._finish()

    def _finish(self) -> pa.Table:
        flows = self.conversations()
        rows = []
        for flow in flows:
            conn_id, src_ip, _sport, dst_ip, _dport = self.identify(flow)
            rows.append((flow.first_ns, conn_id, PROTO_NAMES[flow.proto], src_ip, dst_ip, flow))
        rows.sort(key=lambda row: (row[0], row[1]))

        # One tuple per row in _ROW_NAMES order, transposed into columns at the end.
        node = self.node
        no_insights = (None,) * len(_INSIGHT_NAMES)
        no_kubernetes = (None,) * 6  # Kubernetes enrichment joins these in a later stage
        records = []
        for first_ns, conn_id, proto, src_ip, dst_ip, flow in rows:
            first_ms = first_ns // 1_000_000
            last_ns = flow.last_ns
            tcp = flow.tcp
            records.append((node, conn_id, proto, src_ip, flow.sport, dst_ip, flow.dport, first_ms, first_ns, first_ms,
                            first_ns, last_ns // 1_000_000, last_ns, (last_ns - first_ns) // 1000, flow.packets_out,
                            flow.packets_in, flow.bytes_out, flow.bytes_in, flow.payload_out, flow.payload_in,
                            flow.completeness if tcp is not None else None, flow.isn_out, flow.isn_in)
                           + (tuple(tcp.columns().values()) if tcp is not None else no_insights) + no_kubernetes)
        transposed = zip(*records, strict=True) if records else ([] for _name in _ROW_NAMES)
        columns = {name: list(column) for name, column in zip(_ROW_NAMES, transposed, strict=True)}
        arrays = [pa.array(columns[field.name], type=field.type) for field in CONNECTIONS]
        return pa.Table.from_arrays(arrays, schema=CONNECTIONS)
