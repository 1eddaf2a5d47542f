"""`freezeframe export-pcap`: an incident's locked segments, every node merged in time order, as one capture file.

The segments come from the incident's manifest and manifest parts (late segments) at their exact version ids, so a
newer version written under a segment key later is never read. Each node's segments are read one after the other
and the nodes are merged by timestamp (a k-way heap merge), streaming from S3 through zstd into the output: at any
time one segment per node is open and one packet per node is held, so memory does not grow with the incident.

Filters, applied in this order: `--node` (which segments are read at all), `--start/--end` (packet time),
`--namespace/--pod` (a packet is kept when its source or destination IP belonged to such a pod *at the packet's
time*, from the incident's preserved Kubernetes context; without `--node`, only the nodes those pods ran on are
read), then `--filter BPF`. BPF runs in tcpdump itself
(`tcpdump -r - -w - <expr>` per segment stream), so it has exactly libpcap's semantics and compiler (including its
link-type specific parts) with no Python binding to maintain; tcpdump is already a capture dependency.

Output: pcapng (default) holds one interface block per (node, link type), named after the node, so nodes that
captured on different link types merge into one file and Wireshark shows each packet's node as its interface.
Classic pcap holds one link type; a second one fails with an error naming both. The file is written beside its
final name and renamed into place only when the export succeeds, so a failed export leaves no partial file.

`verify=True` hashes every segment's stored bytes while they stream and fails on the first mismatch with the
manifest's sha256 (or size); it also refuses a manifest (or part) that has more than one version or whose root hash
does not recompute, and context snapshots whose hash does not match.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import logging
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any, BinaryIO, NamedTuple, cast

import zstandard

import freezeframe
from freezeframe.adapters import s3 as s3io
from freezeframe.adapters.s3 import ObjectStore
from freezeframe.capture.hashstream import CHUNK_BYTES, HashingStream
from freezeframe.capture.pcapio import (
    LINKTYPE_ETHERNET,
    LINKTYPE_IPV4,
    LINKTYPE_IPV6,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_RAW,
    PcapReader,
    encode_global_header,
    encode_record,
    open_capture,
)
from freezeframe.contracts.config import Settings
from freezeframe.contracts.errors import CaptureFormatError, FreezeframeError, SegmentCorruptError
from freezeframe.contracts.models import ManifestEntry, parse_iso, to_ns
from freezeframe.custody.incident import load_incident
from freezeframe.custody.verify import S3Store, document_checks, version_list_check
from freezeframe.dissect.enrich import IpTimeline
from freezeframe.freeze import k8s_context

logger = logging.getLogger(__name__)
FORMATS = ("pcapng", "pcap")
RUN_PACKETS = 256  # packets per node held between the reader and the merge
SNAPLEN = 262_144
PCAP_TIME_LIMIT_NS = (1 << 32) * 1_000_000_000  # pcap's seconds field is unsigned 32-bit
_VLAN_TPIDS = frozenset((0x8100, 0x88A8, 0x9100))


class ExportError(FreezeframeError):
    """The export cannot be written as asked (bad option, mixed link types in pcap, a failing BPF filter)."""


@dataclass(frozen=True, slots=True)
class ExportOptions:
    fmt: str = "pcapng"
    bpf: str | None = None
    start_ns: int | None = None
    end_ns: int | None = None
    namespaces: tuple[str, ...] = ()
    pods: tuple[str, ...] = ()
    nodes: tuple[str, ...] = ()
    verify: bool = False
    progress: bool | None = None  # None: a progress bar when stderr is a terminal

    def check(self) -> None:
        if self.fmt not in FORMATS:
            raise ExportError(f"format must be one of {', '.join(FORMATS)}, got {self.fmt!r}")
        if self.start_ns is not None and self.end_ns is not None and self.end_ns < self.start_ns:
            raise ExportError("--end is before --start")
        if self.bpf is not None and not self.bpf.strip():
            raise ExportError("--filter is empty")
        if self.bpf is not None and shutil.which("tcpdump") is None:
            raise ExportError("--filter needs tcpdump (libpcap's BPF compiler) on PATH")


@dataclass(slots=True)
class ExportResult:
    incident_id: str
    path: str
    fmt: str
    packets: int = 0
    segments: int = 0
    nodes: list[str] = field(default_factory=list)
    link_types: dict[str, list[int]] = field(default_factory=dict)  # node -> link types seen
    stored_bytes: int = 0
    verified_segments: int = 0
    filtered_out: int = 0  # by time or namespace/pod (BPF drops happen inside tcpdump and are not counted)
    problems: dict[str, int] = field(default_factory=dict)  # capture damage by kind (truncated, ...), read past

    def to_dict(self) -> dict[str, Any]:
        return {"incident_id": self.incident_id, "path": self.path, "format": self.fmt, "packets": self.packets,
                "segments": self.segments, "nodes": self.nodes, "link_types": self.link_types,
                "stored_bytes": self.stored_bytes, "verified_segments": self.verified_segments,
                "filtered_out": self.filtered_out, "problems": self.problems}


class Frame(NamedTuple):
    """One packet on its way through the merge; a tuple because one is built per packet."""

    ts_ns: int
    source: int  # the node's index: ties keep node order, and it names the output interface
    link_type: int
    orig_len: int
    data: bytes


# ---------------------------------------------------------------------------------------------------------- sources


@dataclass(frozen=True, slots=True)
class Evidence:
    """What an export reads: the segments (deduplicated over manifest and parts) and the Kubernetes context."""

    raw_bucket: str
    entries: tuple[tuple[str, ManifestEntry], ...]  # (bucket, entry)
    context: tuple[Mapping[str, Any], ...]


def load_evidence(settings: Settings, s3: ObjectStore, incident_id: str, *, verify: bool,
                  with_context: bool) -> Evidence:
    """The incident's manifest and parts at the versions its signed custody chain names (custody.pinned): a later
    version under the same key, or a part no link names, is never read."""
    pinned = load_incident(settings, s3, incident_id, record=False, statuses=False, summary=False).pinned
    store = S3Store(s3)
    documents = []
    for index, pinned_document in enumerate((pinned.manifest, *pinned.parts)):
        body = s3io.encode_json(pinned_document.document)
        checks, entries, _, _ = document_checks(pinned_document.key, body, incident_id, is_part=index > 0)
        if verify:  # another version over a signed document is tampering, even though it is never read
            versions = [v for v in store.versions(settings.evidence_bucket, pinned_document.key)
                        if v.key == pinned_document.key]
            checks.append(version_list_check(pinned_document.key, versions))
        failures = [c for c in checks if not c.ok]
        if failures and verify:
            raise SegmentCorruptError("; ".join(f"{c.subject}: {c.name}: {c.detail}" for c in failures)
                                      + " (run `freezeframe verify` for the full report)")
        for check in failures:
            logger.warning("evidence document check failed", extra={"incident_id": incident_id,
                                                                     "segment": pinned_document.key,
                                                                     "check": check.name, "detail": check.detail})
        documents.append((pinned_document.document, entries))
    manifest = documents[0][0]
    raw_bucket = str(manifest.get("raw_bucket") or settings.raw_bucket)
    unique: dict[tuple[str, str], tuple[str, ManifestEntry]] = {}
    for document, entries in documents:
        segment_bucket = str(document.get("raw_bucket") or raw_bucket)
        for entry in entries:
            unique.setdefault((entry.key, entry.version_id), (segment_bucket, entry))
    context = tuple(_context_records(s3, manifest, verify)) if with_context else ()
    return Evidence(raw_bucket, tuple(unique.values()), context)


def _context_records(s3: ObjectStore, manifest: Mapping[str, Any], verify: bool) -> Iterator[dict[str, Any]]:
    for raw in manifest.get("k8s_context") or []:
        body = s3io.get_bytes(s3, raw["bucket"], raw["key"], raw["version_id"])
        if verify and hashlib.sha256(body).hexdigest() != raw.get("sha256"):
            raise SegmentCorruptError(f"Kubernetes context snapshot {raw['key']} version {raw['version_id']}: sha256 "
                                      f"does not match the manifest's {raw.get('sha256')}")
        yield from (json.loads(line) for line in body.decode().splitlines() if line.strip())


def select(entries: Iterable[tuple[str, ManifestEntry]], options: ExportOptions
           ) -> dict[str, list[tuple[str, ManifestEntry]]]:
    """Pure: per node, in start order, the segments the options need (node list and time range)."""
    by_node: dict[str, list[tuple[str, ManifestEntry]]] = {}
    for bucket, entry in entries:
        if options.nodes and entry.node not in options.nodes:
            continue
        if options.start_ns is not None and entry.end_ns < options.start_ns:
            continue
        if options.end_ns is not None and entry.start_ns > options.end_ns:
            continue
        by_node.setdefault(entry.node, []).append((bucket, entry))
    return {node: sorted(items, key=lambda item: (item[1].start_ns, item[1].key))
            for node, items in sorted(by_node.items())}


# --------------------------------------------------------------------------------------------------- segment stream


Opener = Callable[[str, str, str], Any]  # (bucket, key, version_id) -> a readable body


def s3_opener(s3: ObjectStore) -> Opener:
    def open_version(bucket: str, key: str, version_id: str) -> Any:
        return s3io.open_version(s3, bucket, key, version_id)
    return open_version


def segment_frames(opener: Opener, bucket: str, entry: ManifestEntry, source: int, options: ExportOptions,
                   result: ExportResult, on_bytes: Callable[[int], None] | None = None) -> Iterator[Frame]:
    """The packets of one segment version, streamed; with `options.verify` the stored bytes' sha256 and size are
    checked against the manifest once the segment is read, before the next segment of the node starts."""
    stored = HashingStream(opener(bucket, entry.key, entry.version_id), on_bytes, hashing=options.verify)
    try:
        try:
            if options.bpf:
                capture = cast(BinaryIO, stored)
                if entry.key.endswith(".zst"):
                    capture = zstandard.ZstdDecompressor().stream_reader(capture, read_size=CHUNK_BYTES,
                                                                         read_across_frames=True, closefd=False)
                yield from _bpf_frames(capture, entry, source, options.bpf, result)
            else:
                # pcapio's dissection reader: zstd/pcap/pcapng by magic, bounded chunks, damage counted
                reader = open_capture(cast(BinaryIO, stored))
                for link, packets in reader.runs(RUN_PACKETS):
                    for packet in packets:
                        yield Frame(packet.ts_ns, source, link, packet.orig_len, packet.data)
                _count_damage(result, entry, ((kind, p.count) for kind, p in reader.problems.items()))
        except zstandard.ZstdError as exc:
            raise SegmentCorruptError(f"segment {entry.key} version {entry.version_id}: zstd stream is corrupt: "
                                      f"{exc}") from exc
        except CaptureFormatError as exc:
            raise SegmentCorruptError(f"segment {entry.key} version {entry.version_id}: {exc}") from exc
        stored.drain()
    finally:
        stored.close()
    _segment_read(entry, stored, options, result)


def _count_damage(result: ExportResult, entry: ManifestEntry, problems: Iterable[tuple[str, int]]) -> None:
    for kind, count in problems:
        result.problems[kind] = result.problems.get(kind, 0) + count
        logger.warning("segment damage", extra={"segment": entry.key, "node": entry.node, "problem": kind,
                                                "count": count})


def _segment_read(entry: ManifestEntry, stored: HashingStream, options: ExportOptions, result: ExportResult) -> None:
    """A segment read to its end: counted, and with `options.verify` its stored bytes checked."""
    result.segments += 1
    result.stored_bytes += stored.size
    if options.verify:
        actual = stored.sha256.hexdigest()
        if actual != entry.sha256 or stored.size != entry.size:
            raise SegmentCorruptError(
                f"segment {entry.key} version {entry.version_id} (node {entry.node}): stored bytes hash to {actual} "
                f"over {stored.size} bytes, the manifest records {entry.sha256} over {entry.size} bytes")
        result.verified_segments += 1


def _bpf_frames(capture: BinaryIO, entry: ManifestEntry, source: int, bpf: str, result: ExportResult
                ) -> Iterator[Frame]:
    """The segment's packets that libpcap's compiled `bpf` accepts, through tcpdump (nanosecond precision kept)."""
    proc = subprocess.Popen(["tcpdump", "--time-stamp-precision=nano", "-n", "-r", "-", "-w", "-", bpf],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    feed_error: list[BaseException] = []

    def feed(sink: IO[bytes]) -> None:
        try:
            while chunk := capture.read(CHUNK_BYTES):
                sink.write(chunk)
        except BrokenPipeError:
            pass  # tcpdump stopped early (a bad filter); its exit status tells why
        except BaseException as exc:  # noqa: BLE001 - handed to the reading thread, which raises it
            feed_error.append(exc)
        finally:
            try:
                sink.close()
            except BrokenPipeError:
                pass

    feeder = threading.Thread(target=feed, args=(proc.stdin,), name="export-bpf-feed", daemon=True)
    feeder.start()
    stderr_chunks: list[bytes] = []
    drainer = threading.Thread(target=lambda: stderr_chunks.append(proc.stderr.read()) if proc.stderr else None,
                               daemon=True)
    drainer.start()
    try:
        try:
            reader = PcapReader(cast(BinaryIO, proc.stdout))
        except CaptureFormatError:
            reader = None  # tcpdump wrote nothing: the filter failed to compile; reported below
        if reader is not None:
            link = reader.link_type
            yield from (Frame(p.ts_ns, source, link, p.orig_len, p.data) for p in reader)
            if reader.truncated:
                result.problems["truncated"] = result.problems.get("truncated", 0) + reader.truncated
    finally:
        proc.stdout.close()
        feeder.join()
        code = proc.wait()
        drainer.join()
    if feed_error:
        raise feed_error[0]
    if code != 0:
        message = b"".join(stderr_chunks).decode(errors="replace").strip().splitlines()
        detail = [line for line in message if not line.startswith("reading from file")]
        raise ExportError(f"BPF filter {bpf!r} failed on segment {entry.key}: {' '.join(detail) or f'exit {code}'}")


# ------------------------------------------------------------------------------------------------- pod IP filter


def packet_ips(link_type: int, data: bytes) -> tuple[bytes, bytes] | None:
    """Pure: the packed (source, destination) IP addresses of a frame, or None for a non-IP or truncated one."""
    offset = 0
    if link_type in (LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6):
        pass
    else:
        if link_type == LINKTYPE_ETHERNET:
            type_at, offset = 12, 14
        elif link_type == LINKTYPE_LINUX_SLL:
            type_at, offset = 14, 16
        elif link_type == LINKTYPE_LINUX_SLL2:
            type_at, offset = 0, 20
        else:
            return None
        if len(data) < offset:
            return None
        (ethertype,) = struct.unpack_from("!H", data, type_at)
        while ethertype in _VLAN_TPIDS and len(data) >= offset + 4:
            (ethertype,) = struct.unpack_from("!H", data, offset + 2)
            offset += 4
        if ethertype not in (0x0800, 0x86DD):
            return None
    if len(data) <= offset:
        return None
    version = data[offset] >> 4
    if version == 4 and len(data) >= offset + 20:
        return data[offset + 12:offset + 16], data[offset + 16:offset + 20]
    if version == 6 and len(data) >= offset + 40:
        return data[offset + 8:offset + 24], data[offset + 24:offset + 40]
    return None


class PodFilter:
    """Keeps a packet when its source or destination IP belonged, at the packet's time, to a pod of the wanted
    namespaces (and, when pods are named, one of those pods)."""

    def __init__(self, records: Iterable[Mapping[str, Any]], namespaces: Sequence[str], pods: Sequence[str]) -> None:
        self._timeline = IpTimeline.from_records(records)
        self._namespaces = frozenset(namespaces)
        self._pods = frozenset(pods)
        self._names: dict[bytes, str] = {}

    def _wanted(self, packed: bytes, ts_ns: int) -> bool:
        name = self._names.get(packed)
        if name is None:
            name = self._names[packed] = socket.inet_ntop(socket.AF_INET if len(packed) == 4 else socket.AF_INET6,
                                                          packed)
        found = self._timeline.lookup(name, ts_ns)
        return found is not None and (not self._namespaces or found.namespace in self._namespaces) and (
            not self._pods or found.pod in self._pods)

    def __call__(self, frame: Frame) -> bool:
        ips = packet_ips(frame.link_type, frame.data)
        return ips is not None and (self._wanted(ips[0], frame.ts_ns) or self._wanted(ips[1], frame.ts_ns))


# -------------------------------------------------------------------------------------------------------- writers


class PcapSink:
    """Classic nanosecond pcap: one link type per file."""

    def __init__(self, stream: BinaryIO, nodes: Sequence[str]) -> None:
        self._stream = stream
        self._nodes = nodes
        self._link: tuple[int, str] | None = None

    def write(self, frame: Frame) -> None:
        if self._link is None:
            self._stream.write(encode_global_header(frame.link_type, SNAPLEN))
            self._link = (frame.link_type, self._nodes[frame.source])
        elif frame.link_type != self._link[0]:
            raise ExportError(second_link_type(self._nodes[frame.source], frame.link_type, self._link[1],
                                               self._link[0]))
        if not 0 <= frame.ts_ns < PCAP_TIME_LIMIT_NS:
            raise ExportError(time_out_of_range(self._nodes[frame.source], frame.ts_ns))
        self._stream.write(encode_record(frame.ts_ns, frame.data, frame.orig_len))

    def finish(self) -> None:
        if self._link is None:  # no packet at all: still a valid, empty capture
            self._stream.write(encode_global_header(LINKTYPE_ETHERNET, SNAPLEN))


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def _block(block_type: int, body: bytes) -> bytes:
    length = 12 + len(body)
    return struct.pack("<II", block_type, length) + body + struct.pack("<I", length)


def section_header(comment: str) -> bytes:
    """The pcapng section header block an export starts with."""
    options = (_option(3, f"freezeframe {freezeframe.__version__}".encode())  # shb_userappl
               + _option(1, comment.encode()) + _option(0, b""))
    return _block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1) + options)


def second_link_type(node: str, link_type: int, first_node: str, first_link_type: int) -> str:
    return (f"node {node} captured link type {link_type} and node {first_node} link type {first_link_type}: a pcap "
            f"file holds one link type; use --format pcapng")


def time_out_of_range(node: str, ts_ns: int) -> str:
    return (f"node {node} has a packet at {ts_ns} ns, past what pcap's 32-bit seconds hold (2106); "
            f"use --format pcapng")


class PcapngSink:
    """pcapng (https://www.ietf.org/archive/id/draft-ietf-opsawg-pcapng-02.html): a section header, one interface
    description block per (node, link type) written just before its first packet, named after the node, with
    nanosecond timestamps (if_tsresol 9), and one enhanced packet block per packet."""

    def __init__(self, stream: BinaryIO, nodes: Sequence[str], comment: str) -> None:
        self._stream = stream
        self._nodes = nodes
        self._interfaces: dict[tuple[int, int], int] = {}
        stream.write(section_header(comment))

    def _interface(self, source: int, link_type: int) -> int:
        found = self._interfaces.get((source, link_type))
        if found is None:
            found = self._interfaces[(source, link_type)] = len(self._interfaces)
            options = _option(2, self._nodes[source].encode()) + _option(9, b"\x09") + _option(0, b"")
            self._stream.write(_block(0x00000001, struct.pack("<HHI", link_type, 0, SNAPLEN) + options))
        return found

    def write(self, frame: Frame) -> None:
        interface = self._interface(frame.source, frame.link_type)
        data = frame.data
        body = struct.pack("<IIIII", interface, frame.ts_ns >> 32, frame.ts_ns & 0xFFFFFFFF, len(data),
                           frame.orig_len) + data + b"\0" * (-len(data) % 4)
        self._stream.write(_block(0x00000006, body))

    def finish(self) -> None:
        pass


# --------------------------------------------------------------------------------------------------------- export


def merged(node_streams: Sequence[Iterable[Frame]]) -> Iterator[Frame]:
    """Pure: the nodes' packet streams (each in its own capture order) merged by timestamp; equal timestamps keep
    the node order, and one packet per node is held at a time."""
    return heapq.merge(*node_streams, key=lambda frame: frame.ts_ns)


def merge_engine() -> str:
    """'native' (the compiled core, freezeframe_native) or 'python', as FREEZEFRAME_DISSECT_ENGINE selects for
    dissection: by default the compiled core when the extension imports."""
    from freezeframe.dissect.choice import selected  # noqa: PLC0415 - pyarrow is imported only when an export runs

    return selected()


def _clamp_ns(value: int | None) -> int | None:
    return None if value is None else max(-(1 << 63), min(value, (1 << 63) - 1))


def native_merge(stream: BinaryIO, chosen: Mapping[str, Sequence[tuple[str, ManifestEntry]]], options: ExportOptions,
                 result: ExportResult, open_version: Opener, on_bytes: Callable[[int], None] | None,
                 comment: str) -> None:
    """`export_pcap`'s merge (no BPF, no pod filter) in the compiled core: the same segments opened, hashed, verified
    and counted at the same moments as `segment_frames`, the same bytes written
    (tests/unit/investigate/test_export_native.py)."""
    from freezeframe.dissect import native  # noqa: PLC0415

    module = native.extension()
    if module is None:
        raise ExportError("the freezeframe_native extension is not installed")
    nodes = list(chosen)
    pending = [iter(items) for items in chosen.values()]
    reading: list[tuple[ManifestEntry, HashingStream] | None] = [None] * len(nodes)

    def next_segment(source: int, finished: list[tuple[str, int, int, int, str]] | str | None) -> bytes | None:
        current = reading[source]
        if current is not None:
            reading[source] = None
            entry, stored = current
            if isinstance(finished, str):
                raise SegmentCorruptError(f"segment {entry.key} version {entry.version_id}: {finished}")
            _count_damage(result, entry, ((kind, count) for kind, count, *_ in finished or ()))
            _segment_read(entry, stored, options, result)
        following = next(pending[source], None)
        if following is None:
            return None
        bucket, entry = following
        stored = HashingStream(open_version(bucket, entry.key, entry.version_id), on_bytes, hashing=options.verify)
        try:
            data = stored.read()
            stored.drain()
        finally:
            stored.close()
        reading[source] = (entry, stored)
        return data

    packets, filtered_out, link_types, refusal = module.merge_segments(
        nodes, next_segment, stream.write, options.fmt,
        section_header(comment) if options.fmt == "pcapng" else None,
        _clamp_ns(options.start_ns), _clamp_ns(options.end_ns))
    for node, seen in zip(nodes, link_types, strict=True):
        if seen:
            result.link_types[node] = list(seen)
    result.packets += packets
    result.filtered_out += filtered_out
    if refusal is not None:
        kind, source, value, first_source, first_link = refusal
        if kind == "second_link_type":
            raise ExportError(second_link_type(nodes[source], value, nodes[first_source], first_link))
        raise ExportError(time_out_of_range(nodes[source], value))


def export_pcap(settings: Settings, s3: ObjectStore, incident_id: str, out: Path, options: ExportOptions,
                opener: Opener | None = None, evidence: Evidence | None = None) -> ExportResult:
    """`evidence` given (a recording job's segments, `job_recordings.job_entries`) replaces the incident's manifest;
    `incident_id` then only names the export."""
    options.check()
    if evidence is None:
        evidence = load_evidence(settings, s3, incident_id, verify=options.verify,
                                 with_context=bool(options.namespaces or options.pods))
    if not options.nodes and (options.namespaces or options.pods):
        # A pod's traffic passes its own node, so only the nodes its pods ran on are read (fewer segments, and no
        # second copy of the same packet from the peer's node); unknown pods leave every node in.
        ran_on = k8s_context.nodes_in(evidence.context, options.namespaces, options.pods)
        if ran_on:
            options = replace(options, nodes=tuple(sorted(ran_on)))
    chosen = select(evidence.entries, options)
    if options.nodes and not chosen:
        known = sorted({entry.node for _, entry in evidence.entries})
        raise ExportError(f"no segments of node(s) {', '.join(options.nodes)} in incident {incident_id}; "
                          f"its nodes are: {', '.join(known) or 'none'}")
    nodes = list(chosen)
    result = ExportResult(incident_id, str(out), options.fmt, nodes=nodes)
    pod_filter = PodFilter(evidence.context, options.namespaces, options.pods) if (
        options.namespaces or options.pods) else None
    if pod_filter is not None and not evidence.context:
        logger.warning("the incident has no Kubernetes context: no packet can match --namespace/--pod",
                       extra={"incident_id": incident_id})
    open_version = opener or s3_opener(s3)
    # The compiled core merges when it is selected (FREEZEFRAME_DISSECT_ENGINE) and no filter needs Python: BPF
    # runs in tcpdump, the pod filter on the Kubernetes context.
    use_native = merge_engine() == "native" and not options.bpf and pod_filter is None
    total = sum(entry.size for items in chosen.values() for _, entry in items)
    show = sys.stderr.isatty() if options.progress is None else options.progress
    if str(out) != "-":
        out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial-{os.getpid()}")
    from tqdm import tqdm  # imported here: only the CLI path needs it

    bar = tqdm(total=total, unit="B", unit_scale=True, desc=f"export {incident_id}", disable=not show,
               file=sys.stderr, leave=False)
    lock = threading.Lock()

    def advance(count: int) -> None:
        with lock:
            bar.update(count)

    def node_stream(source: int, items: list[tuple[str, ManifestEntry]]) -> Iterator[Frame]:
        seen: set[int] = set()
        for bucket, entry in items:
            for frame in segment_frames(open_version, bucket, entry, source, options, result, advance):
                if frame.link_type not in seen:
                    seen.add(frame.link_type)
                    result.link_types.setdefault(nodes[source], []).append(frame.link_type)
                yield frame

    def write(stream: BinaryIO) -> None:
        if use_native:
            native_merge(stream, chosen, options, result, open_version, advance,
                         f"freezeframe incident {incident_id}")
            return
        sink: PcapSink | PcapngSink = (
            PcapngSink(stream, nodes, f"freezeframe incident {incident_id}") if options.fmt == "pcapng"
            else PcapSink(stream, nodes))
        streams = [node_stream(index, items) for index, items in enumerate(chosen.values())]
        for frame in merged(streams):
            if (options.start_ns is not None and frame.ts_ns < options.start_ns) or (
                    options.end_ns is not None and frame.ts_ns > options.end_ns) or (
                    pod_filter is not None and not pod_filter(frame)):
                result.filtered_out += 1
                continue
            sink.write(frame)
            result.packets += 1
        sink.finish()

    try:
        if str(out) == "-":  # a pipe (`| wireshark -k -i -`): what was written stays written, errors still raise
            write(sys.stdout.buffer)
            sys.stdout.buffer.flush()
        else:
            try:
                with partial.open("wb", buffering=1 << 20) as stream:
                    write(stream)
                os.replace(partial, out)
            except BaseException:
                partial.unlink(missing_ok=True)
                raise
    finally:
        bar.close()
    logger.info("pcap exported", extra={"incident_id": incident_id, "packets": result.packets,
                                        "segments": result.segments, "verified": result.verified_segments})
    return result


def time_ns(value: str | None, name: str) -> int | None:
    """An option's RFC 3339 time (with a zone) in nanoseconds, or None when not given."""
    return None if value is None else to_ns(parse_iso(value, name))
