"""export-pcap on LocalStack S3 (Object Lock enforced): the bundled sample capture is split over three nodes into
zstd segments, frozen by the real freeze path (plus one late segment locked under the hold as a manifest part), and
exported. tshark and tcpdump, run on the segments themselves inside each test, are the reference for what the
merged file must hold."""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import zstandard
from freezeframe_local.cli import main as cli_main

from freezeframe.adapters import s3 as s3io
from freezeframe.capture.pcapio import LINKTYPE_ETHERNET, LINKTYPE_RAW, PcapReader, PcapWriter
from freezeframe.contracts.errors import SegmentCorruptError
from freezeframe.contracts.keys import manifest_key, raw_segment_key
from freezeframe.contracts.models import FreezeRequest, LockSpec, ManifestEntry, Scope, SegmentRecord, from_ns
from freezeframe.custody.manifest import build_manifest
from freezeframe.freeze.freeze import freeze
from freezeframe.freeze.holds import Hold, lock_late_segment
from freezeframe.freeze.k8s_context import K8sRecord, write_batch
from freezeframe.investigate.export import ExportError, ExportOptions, export_pcap
from tests.fixtures.custody import put_signed_manifest

pytestmark = pytest.mark.integration
SAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "sample.pcap"
SAMPLE_START_NS = 1_767_225_600 * 1_000_000_000  # 2026-01-01T00:00:00Z, the sample's epoch
SEGMENT_NS = 10_000_000_000
NODES = ("node-a", "node-b", "node-c")


@dataclass(frozen=True)
class Segment:
    node: str
    key: str
    version_id: str
    sha256: str
    path: Path  # the decompressed capture, for tshark/tcpdump to count
    packets: int


@dataclass(frozen=True)
class Incident:
    incident_id: str
    segments: list[Segment]
    request: FreezeRequest


def sample_packets() -> list[tuple[int, int, bytes]]:
    with SAMPLE.open("rb") as stream:
        return [(p.ts_ns, p.orig_len, p.data) for p in PcapReader(stream)]


def segment_bytes(link_type: int, packets: Iterable[tuple[int, int, bytes]]) -> bytes:
    buffer = io.BytesIO()
    writer = PcapWriter(buffer, link_type)
    for ts_ns, orig_len, data in packets:
        writer.write(ts_ns, data, orig_len)
    return buffer.getvalue()


def upload(config: Any, s3: Any, node: str, start_ns: int, pcap: bytes, seq: int, tmp: Path, packets: int
           ) -> tuple[Segment, SegmentRecord]:
    stored = zstandard.ZstdCompressor(level=3).compress(pcap)
    sha = hashlib.sha256(stored).hexdigest()
    key = raw_segment_key(config.cluster, node, start_ns, start_ns + SEGMENT_NS, "pcap.zst")
    version = s3io.put_segment(s3, config.raw_bucket, key, stored, sha,
                               {"sha256": sha, "seq": str(seq), "packets": str(packets)})
    path = tmp / f"{node}-{seq}.pcap"
    path.write_bytes(pcap)
    record = SegmentRecord(cluster=config.cluster, node=node, bucket=config.raw_bucket, key=key, version_id=version,
                           start_ns=start_ns, end_ns=start_ns + SEGMENT_NS, first_packet_ns=None,
                           last_packet_ns=None, packets=packets, bytes=len(pcap), stored_bytes=len(stored),
                           sha256=sha, compression="zstd", format="pcap", link_type=LINKTYPE_ETHERNET,
                           snaplen=262_144, kernel_drops=0, agent_drops=0, seq=seq, capture_filter="",
                           agent_version="test")
    return Segment(node, key, version, sha, path, packets), record


def round_robin(index: int, frame: bytes) -> str:
    return NODES[index % len(NODES)]


def by_ip_pair(index: int, frame: bytes) -> str:
    """Every conversation on one node (the sample is IPv4 over Ethernet): dissection pairs queries and answers."""
    return NODES[(sum(frame[26:30]) + sum(frame[30:34])) % len(NODES)]


def build_incident(config: Any, s3: Any, tmp: Path, incident_id: str, *, raw_ip_node: str | None = None,
                   late: bool = True, deal: Callable[[int, bytes], str] = round_robin,
                   freeze_now: bool = True) -> Incident:
    """The sample's packets dealt to three nodes (round-robin by default), cut into 10 s segments per node, frozen;
    with `late`, the last segment of node-c arrives after the freeze and is locked under the hold (a manifest
    part). Without `freeze_now` the segments are only uploaded, and `request` is the window a freeze needs."""
    by_node: dict[str, list[tuple[int, int, bytes]]] = {node: [] for node in NODES}
    for index, packet in enumerate(sample_packets()):
        by_node[deal(index, packet[2])].append(packet)
    uploads: list[tuple[str, int, bytes, int]] = []
    for node, packets in by_node.items():
        link = LINKTYPE_RAW if node == raw_ip_node else LINKTYPE_ETHERNET
        grid: dict[int, list[tuple[int, int, bytes]]] = {}
        for ts_ns, orig_len, data in packets:
            frame = data[14:] if link == LINKTYPE_RAW else data
            grid.setdefault((ts_ns - SAMPLE_START_NS) // SEGMENT_NS, []).append(
                (ts_ns, orig_len - (len(data) - len(frame)), frame))
        for slot, items in sorted(grid.items()):
            uploads.append((node, SAMPLE_START_NS + slot * SEGMENT_NS, segment_bytes(link, items), len(items)))
    held_back = uploads.pop() if late else None
    segments = []
    for seq, (node, start_ns, pcap, count) in enumerate(uploads):
        segments.append(upload(config, s3, node, start_ns, pcap, seq, tmp, count)[0])
    now = datetime.now(UTC)
    request = FreezeRequest(incident_id=incident_id, source="api", title="export", severity="critical",
                            window_start=from_ns(SAMPLE_START_NS - 1_000_000_000),
                            window_end=from_ns(SAMPLE_START_NS + 70 * 1_000_000_000), scope=Scope(config.cluster),
                            lock=LockSpec("COMPLIANCE", now + timedelta(days=1)))
    if not freeze_now:
        return Incident(incident_id, segments, request)
    assert freeze(config, s3, request).segments == len(segments)
    if held_back is not None:
        node, start_ns, pcap, count = held_back
        segment, record = upload(config, s3, node, start_ns, pcap, len(segments), tmp, count)
        hold = Hold(incident_id, config.cluster, (), request.window_start_ns, request.window_end_ns,
                    now + timedelta(hours=1), request.lock)
        lock_late_segment(config, s3, hold, record)
        segments.append(segment)
    return Incident(incident_id, segments, request)


def tshark(path: Path, *extra: str) -> list[str]:
    """tshark's per-packet lines; fails the test on any tshark error or warning about the file."""
    done = subprocess.run(["tshark", "-n", "-r", str(path), "-T", "fields", "-e", "frame.time_epoch", "-e",
                           "frame.len", "-e", "ip.src", "-e", "ip.dst", *extra],
                          capture_output=True, text=True, timeout=60)
    complaints = [line for line in done.stderr.splitlines() if "Running as user" not in line and line.strip()]
    assert done.returncode == 0 and not complaints, done.stderr
    return [line for line in done.stdout.splitlines() if line.strip()]


@functools.lru_cache(maxsize=4)
def sample_lines(*extra: str) -> tuple[str, ...]:
    """tshark on the original sample capture, once per module."""
    return tuple(tshark(SAMPLE, *extra))


def capinfos_counts(paths: Iterable[Path]) -> list[int]:
    """Packets per file, counted by Wireshark's capinfos (one process for all the segments)."""
    done = subprocess.run(["capinfos", "-c", "-T", "-r", *map(str, paths)], capture_output=True, text=True,
                          timeout=60, check=True)
    return [int(line.split("\t")[1]) for line in done.stdout.splitlines() if line.strip()]


def tcpdump_count(path: Path, bpf: str) -> int:
    done = subprocess.run(["tcpdump", "-n", "-r", str(path), bpf], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return len([line for line in done.stdout.splitlines() if line.strip()])


def epoch_order_key(line: str) -> float:
    return float(line.split("\t")[0])


@pytest.fixture
def incident(local: Any, tmp_path: Path) -> tuple[Any, Any, Incident]:
    config, s3, _ = local
    return config, s3, build_incident(config, s3, tmp_path, "it-export-1")


def test_the_merged_file_holds_every_node_s_packets_in_time_order(incident: Any, tmp_path: Path) -> None:
    config, s3, inc = incident
    out = tmp_path / "out.pcapng"
    result = export_pcap(config, s3, inc.incident_id, out, ExportOptions(verify=True, progress=False))

    exported = tshark(out)
    assert len(exported) == sum(capinfos_counts(s.path for s in inc.segments)) == 149
    assert [epoch_order_key(line) for line in exported] == sorted(epoch_order_key(line) for line in exported)
    # the segments were cut from the sample capture: the merge restores it (packets with equal times may swap)
    assert sorted(exported) == sorted(sample_lines())
    nodes = subprocess.run(["tshark", "-r", str(out), "-T", "fields", "-e", "frame.interface_name"],
                           capture_output=True, text=True, check=True).stdout.split()
    assert set(nodes) == set(NODES) and nodes[:3] == ["node-a", "node-b", "node-c"]
    assert result.packets == 149 and result.segments == len(inc.segments)
    assert result.verified_segments == len(inc.segments)
    assert any(s.key in {e["key"] for e in _part_entries(config, s3, inc.incident_id)} for s in inc.segments), \
        "one segment came from a manifest part"


def _part_entries(config: Any, s3: Any, incident_id: str) -> list[dict[str, Any]]:
    keys = s3io.list_keys(s3, config.evidence_bucket, f"incidents/{incident_id}/manifest-parts/")
    return [e for key in keys for e in s3io.get_json(s3, config.evidence_bucket, key)["segments"]]


def test_classic_pcap_output_and_the_cli(incident: Any, tmp_path: Path) -> None:
    config, s3, inc = incident
    out = tmp_path / "out.pcap"
    assert cli_main(["export-pcap", inc.incident_id, "-o", str(out), "--format", "pcap", "--verify",
                     "--node", "node-a", "--node", "node-b"]) == 0
    # build_incident dealt the sample's packets round-robin: node-a and node-b got those with index % 3 in (0, 1)
    expected = [line for index, line in enumerate(sample_lines()) if index % 3 != 2]
    exported = tshark(out)
    assert sorted(exported) == sorted(expected) and len(exported) == sum(
        capinfos_counts(s.path for s in inc.segments if s.node != "node-c"))
    assert [epoch_order_key(line) for line in exported] == sorted(epoch_order_key(line) for line in exported)
    assert out.read_bytes()[:4] == b"\x4d\x3c\xb2\xa1"  # nanosecond pcap magic, little-endian

    # `-o -` streams into a pipe; the summary goes to stderr, so tshark reads nothing but the capture
    exporter = subprocess.Popen([sys.executable, "-m", "freezeframe_local.cli", "export-pcap", inc.incident_id,
                                 "-o", "-",
                                 "--node", "node-c"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    reader = subprocess.run(["tshark", "-n", "-r", "-", "-T", "fields", "-e", "frame.time_epoch", "-e", "frame.len",
                             "-e", "ip.src", "-e", "ip.dst"], stdin=exporter.stdout, capture_output=True, text=True,
                            timeout=60)
    assert exporter.wait(timeout=60) == 0 and reader.returncode == 0, exporter.stderr.read() if exporter.stderr else ""
    assert sorted(reader.stdout.splitlines()) == sorted(
        line for index, line in enumerate(sample_lines()) if index % 3 == 2)


@pytest.mark.parametrize("bpf", ["tcp port 80", "udp", "host 10.244.2.20 and tcp[tcpflags] & tcp-syn != 0"])
def test_a_bpf_filter_keeps_what_tcpdump_keeps(incident: Any, tmp_path: Path, bpf: str) -> None:
    config, s3, inc = incident
    out = tmp_path / "filtered.pcapng"
    result = export_pcap(config, s3, inc.incident_id, out, ExportOptions(bpf=bpf, progress=False))
    expected = sum(tcpdump_count(s.path, bpf) for s in inc.segments)
    assert 0 < expected < 149
    assert len(tshark(out)) == result.packets == expected


def test_time_range_progress_and_a_bad_filter(incident: Any, tmp_path: Path, capsys: Any) -> None:
    config, s3, inc = incident
    start, end = SAMPLE_START_NS + 8 * 10**9, SAMPLE_START_NS + 30 * 10**9
    out = tmp_path / "range.pcapng"
    export_pcap(config, s3, inc.incident_id, out, ExportOptions(start_ns=start, end_ns=end, progress=True))
    assert f"export {inc.incident_id}" in capsys.readouterr().err  # the progress bar (forced on: no TTY here)
    expected = [line for line in sample_lines() if start / 1e9 <= epoch_order_key(line) <= end / 1e9]
    assert sorted(tshark(out)) == sorted(expected) and 0 < len(expected) < 149
    with pytest.raises(ExportError, match="syntax error"):
        export_pcap(config, s3, inc.incident_id, tmp_path / "bad.pcapng", ExportOptions(bpf="tcp port", progress=False))
    assert not (tmp_path / "bad.pcapng").exists()
    assert [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []


def test_mixed_link_types_merge_into_pcapng_and_fail_clearly_for_pcap(local: Any, tmp_path: Path) -> None:
    config, s3, _ = local
    inc = build_incident(config, s3, tmp_path, "it-export-mixed", raw_ip_node="node-c", late=False)
    out = tmp_path / "mixed.pcapng"
    result = export_pcap(config, s3, inc.incident_id, out, ExportOptions(progress=False))
    assert result.link_types == {"node-a": [LINKTYPE_ETHERNET], "node-b": [LINKTYPE_ETHERNET],
                                 "node-c": [LINKTYPE_RAW]}
    # frame.len differs for node-c (no Ethernet header); times and addresses are the sample's, in its order
    fields = [line.split("\t") for line in tshark(out)]
    assert [f[0] for f in fields] == sorted(f[0] for f in fields)
    assert sorted((f[0], f[2], f[3]) for f in fields) == sorted(tuple(line.split("\t")[i] for i in (0, 2, 3))
                                                                for line in sample_lines())
    with pytest.raises(ExportError, match="--format pcapng"):
        export_pcap(config, s3, inc.incident_id, tmp_path / "mixed.pcap", ExportOptions(fmt="pcap", progress=False))
    assert not (tmp_path / "mixed.pcap").exists()


def test_namespace_and_pod_resolve_ips_at_packet_time(local: Any, tmp_path: Path) -> None:
    config, s3, _ = local
    before = SAMPLE_START_NS - 60 * 10**9
    released = SAMPLE_START_NS + 30 * 10**9  # the checkout pod goes away: its IP means nothing after this

    def pod(at: int, name: str, namespace: str, ip: str, change: str = "ADDED") -> K8sRecord:
        node = {"frontend-1": "node-a", "checkout-1": "node-b", "payments-1": "node-c"}[name]
        return K8sRecord(0, at // 10**6, {
            "schema": "freezeframe.k8s-pod/v1", "cluster": config.cluster, "node": node, "observed_ns": at,
            "change": change, "namespace": namespace, "pod": name, "uid": f"uid-{name}", "pod_ips": [ip],
            "host_network": False, "workload_kind": "Deployment", "workload_name": name.rsplit("-", 1)[0]})

    write_batch(config, s3, [pod(before, "frontend-1", "shop", "10.244.1.10"),
                             pod(before + 1, "checkout-1", "shop", "10.244.1.11"),
                             pod(before + 2, "payments-1", "payments", "10.244.2.20"),
                             pod(released, "checkout-1", "shop", "10.244.1.11", "DELETED")])
    inc = build_incident(config, s3, tmp_path, "it-export-k8s", late=False)

    # (time, addresses, node) per sample packet: tshark's fields, and the node build_incident dealt it to; only the
    # nodes the selected pods ran on are read (a pod's traffic passes its own node)
    fields = (line.split("\t") for line in sample_lines())
    packets = [(int(t.replace(".", "")), {src, dst}, NODES[i % 3]) for i, (t, _, src, dst) in enumerate(fields)]
    shop = sum(1 for t, ips, node in packets if node in ("node-a", "node-b") and (
        "10.244.1.10" in ips or ("10.244.1.11" in ips and t < released)))
    payments = sum(1 for _, ips, node in packets if node == "node-c" and "10.244.2.20" in ips)
    checkout = sum(1 for t, ips, node in packets if node == "node-b" and "10.244.1.11" in ips and t < released)
    assert 0 < checkout < sum(1 for _, ips, node in packets if node == "node-b" and "10.244.1.11" in ips)
    assert 0 < payments
    for options, expected in ((ExportOptions(namespaces=("shop",)), shop),
                              (ExportOptions(namespaces=("payments",)), payments),
                              (ExportOptions(pods=("checkout-1",)), checkout),
                              (ExportOptions(namespaces=("shop",), pods=("payments-1",)), 0)):
        out = tmp_path / "k8s.pcapng"
        result = export_pcap(config, s3, inc.incident_id, out, options)
        assert len(tshark(out)) == result.packets == expected, options


def test_verify_reads_exact_versions_and_fails_loudly_on_a_wrong_hash(incident: Any, tmp_path: Path) -> None:
    config, s3, inc = incident
    target = inc.segments[1]
    # A new version under a frozen key: readers without a version id now see it, the export does not.
    forged = zstandard.ZstdCompressor().compress(segment_bytes(LINKTYPE_ETHERNET, []))
    s3.put_object(Bucket=config.raw_bucket, Key=target.key, Body=forged)
    out = tmp_path / "after-forgery.pcapng"
    result = export_pcap(config, s3, inc.incident_id, out, ExportOptions(verify=True, progress=False))
    assert result.packets == 149 and sorted(tshark(out)) == sorted(sample_lines())

    # A manifest (create-only, locked, correct root hash) whose entry records the wrong sha256 for a segment.
    entries = [ManifestEntry(key=s.key, version_id=s.version_id, node=s.node, size=_size(config, s3, s),
                             sha256=s.sha256 if s is not target else "0" * 64, start_ns=0, end_ns=0, seq=None,
                             packets=s.packets, lock_mode="COMPLIANCE", retain_until="", legal_hold=False)
               for s in inc.segments]
    wrong = FreezeRequest(incident_id="it-export-wrong-hash", source="api", title="t", severity="high",
                          window_start=inc.request.window_start, window_end=inc.request.window_end,
                          scope=inc.request.scope, lock=inc.request.lock)
    put_signed_manifest(config, s3, wrong.incident_id,
                        build_manifest(wrong, entries, datetime.now(UTC), config.raw_bucket),
                        lock=(wrong.lock.mode, wrong.lock.retain_until))
    bad = tmp_path / "wrong.pcapng"
    with pytest.raises(SegmentCorruptError, match=target.key) as raised:
        export_pcap(config, s3, wrong.incident_id, bad, ExportOptions(verify=True, progress=False))
    assert "0" * 64 in str(raised.value)
    assert not bad.exists() and [p for p in tmp_path.iterdir() if "partial" in p.name] == []
    # without --verify nothing is hashed, so the same export goes through
    assert export_pcap(config, s3, wrong.incident_id, bad, ExportOptions(progress=False)).packets == 149


def _size(config: Any, s3: Any, segment: Segment) -> int:
    return int(s3.head_object(Bucket=config.raw_bucket, Key=segment.key, VersionId=segment.version_id)["ContentLength"])


def test_an_altered_manifest_is_not_trusted(incident: Any, tmp_path: Path) -> None:
    config, s3, inc = incident
    key = manifest_key(inc.incident_id)
    manifest = s3io.get_json(s3, config.evidence_bucket, key)
    manifest["segments"] = manifest["segments"][2:]  # two segments quietly dropped, in a new version of the key
    s3.put_object(Bucket=config.evidence_bucket, Key=key, Body=json.dumps(manifest).encode())
    out = tmp_path / "altered.pcapng"
    # the original (locked) version is what the export reads
    assert export_pcap(config, s3, inc.incident_id, out, ExportOptions(progress=False)).packets == 149
    with pytest.raises(SegmentCorruptError, match="versions"):
        export_pcap(config, s3, inc.incident_id, out, ExportOptions(verify=True, progress=False))


def test_memory_stays_flat_on_a_bigger_incident(local: Any, tmp_path: Path) -> None:
    """About 18 MB of capture over 3 nodes x 6 segments. The export's Python heap peak must not grow with the part
    of the incident exported (the first two segments per node vs all six), and stays a small part of the input
    (the whole incident in RAM would be over 100%)."""
    config, s3, _ = local
    frame_len, per_segment, segments = 1000, 1000, 6
    total = 0
    for seq in range(segments):
        for n, node in enumerate(NODES):
            start = SAMPLE_START_NS + seq * SEGMENT_NS
            packets = [(start + i * 9_000_000 + n * 3_000_000, frame_len, b"\x00" * 12 + b"\x08\x00" + os.urandom(986))
                       for i in range(per_segment)]
            pcap = segment_bytes(LINKTYPE_ETHERNET, packets)
            total += len(pcap)
            stored = zstandard.ZstdCompressor(level=1).compress(pcap)
            sha = hashlib.sha256(stored).hexdigest()
            s3io.put_segment(s3, config.raw_bucket, raw_segment_key(config.cluster, node, start, start + SEGMENT_NS,
                                                                    "pcap.zst"), stored, sha, {"sha256": sha})
    request = FreezeRequest(incident_id="it-export-big", source="api", title="t", severity="high",
                            window_start=from_ns(SAMPLE_START_NS), window_end=from_ns(SAMPLE_START_NS + 90 * 10**9),
                            scope=Scope(config.cluster), lock=LockSpec("COMPLIANCE", datetime.now(UTC) + timedelta(1)))
    freeze(config, s3, request)

    def peak_of(options: ExportOptions) -> tuple[int, int]:
        tracemalloc.start()
        try:
            result = export_pcap(config, s3, request.incident_id, tmp_path / "big.pcapng", options)
            return result.packets, tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    part_packets, part_peak = peak_of(ExportOptions(end_ns=SAMPLE_START_NS + 2 * SEGMENT_NS - 1, progress=False))
    packets, peak = peak_of(ExportOptions(verify=True, progress=False))
    assert part_packets == 2 * 3 * per_segment and packets == segments * 3 * per_segment
    print(f"export of {total / 1e6:.1f} MB capture: Python heap peak {peak / 1e6:.2f} MB "
          f"({100 * peak / total:.1f}% of the input); a third of it: {part_peak / 1e6:.2f} MB")
    started = time.perf_counter()
    export_pcap(config, s3, request.incident_id, tmp_path / "timed.pcapng", ExportOptions(verify=True, progress=False))
    seconds = time.perf_counter() - started
    print(f"export --verify without tracemalloc: {packets} packets in {seconds:.2f} s "
          f"({packets / seconds:,.0f} packets/s, {total / 1e6 / seconds:.1f} MB/s)")
    assert peak < part_peak * 1.5 + 1_000_000, "memory grows with the incident"
    assert peak < total / 2, f"peak {peak} bytes for {total} bytes of capture"
