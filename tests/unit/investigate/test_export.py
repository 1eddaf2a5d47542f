"""export-pcap's pure parts: the merge, the writers (read back by tshark), IP extraction, the pod filter, segment
streaming with hash checks on an in-memory opener."""

from __future__ import annotations

import hashlib
import io
import itertools
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard

from freezeframe.capture.pcapio import LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL2, LINKTYPE_RAW, PcapReader, PcapWriter
from freezeframe.contracts.errors import SegmentCorruptError
from freezeframe.contracts.models import ManifestEntry
from freezeframe.investigate.export import (
    ExportError,
    ExportOptions,
    ExportResult,
    Frame,
    HashingStream,
    PcapngSink,
    PcapSink,
    PodFilter,
    merged,
    packet_ips,
    segment_frames,
    select,
)

SAMPLE = Path(__file__).resolve().parents[2] / "fixtures" / "sample.pcap"
IPV4 = bytes.fromhex("4500001c0000000040110000") + bytes([10, 0, 0, 1]) + bytes([10, 0, 0, 2]) + b"\0" * 8
ETHER_IPV4 = b"\x02" * 12 + b"\x08\x00" + IPV4


def frames(source: int, times: list[int]) -> list[Frame]:
    return [Frame(t, source, LINKTYPE_ETHERNET, 10, b"x" * 10) for t in times]


def test_merge_orders_by_time_and_keeps_node_order_on_ties() -> None:
    out = list(merged([frames(0, [1, 5, 9]), frames(1, [2, 5, 6]), frames(2, [])]))
    assert [(f.ts_ns, f.source) for f in out] == [(1, 0), (2, 1), (5, 0), (5, 1), (6, 1), (9, 0)]


def test_merge_streams_holding_one_packet_per_node() -> None:
    pulled = [0, 0]

    def endless(source: int) -> Iterator[Frame]:
        for t in itertools.count(source, 2):
            pulled[source] += 1
            yield Frame(t, source, LINKTYPE_ETHERNET, 1, b"x")

    first = list(itertools.islice(merged([endless(0), endless(1)]), 100))
    assert [f.ts_ns for f in first] == list(range(100))
    assert all(50 <= n <= 51 for n in pulled)  # the 50 taken from each, plus at most the one held


def entry(node: str, start: int, end: int, key: str = "k", sha: str = "0" * 64, size: int = 0) -> ManifestEntry:
    return ManifestEntry(key=key, version_id="v1", sha256=sha, size=size, node=node, start_ns=start, end_ns=end,
                         seq=None, packets=None, lock_mode="COMPLIANCE", retain_until="", legal_hold=False)


def test_select_by_node_and_time_in_start_order() -> None:
    entries = [("b", entry("n1", 20, 30, "c")), ("b", entry("n1", 0, 10, "a")), ("b", entry("n2", 10, 20, "b")),
               ("b", entry("n3", 40, 50, "d"))]
    chosen = select(entries, ExportOptions(start_ns=15, end_ns=35, nodes=("n1", "n2")))
    assert {node: [e.key for _, e in items] for node, items in chosen.items()} == {"n1": ["c"], "n2": ["b"]}


@pytest.mark.parametrize(("options", "message"), [
    (ExportOptions(fmt="erf"), "format"), (ExportOptions(start_ns=5, end_ns=1), "before"),
    (ExportOptions(bpf="  "), "empty")])
def test_bad_options_are_refused(options: ExportOptions, message: str) -> None:
    with pytest.raises(ExportError, match=message):
        options.check()


def test_packet_ips_across_link_types() -> None:
    src, dst = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
    assert packet_ips(LINKTYPE_ETHERNET, ETHER_IPV4) == (src, dst)
    vlan = b"\x02" * 12 + b"\x81\x00\x00\x05\x08\x00" + IPV4
    assert packet_ips(LINKTYPE_ETHERNET, vlan) == (src, dst)
    assert packet_ips(LINKTYPE_RAW, IPV4) == (src, dst)
    sll2 = b"\x08\x00" + b"\0" * 18 + IPV4
    assert packet_ips(LINKTYPE_LINUX_SLL2, sll2) == (src, dst)
    ipv6 = bytes([0x60]) + b"\0" * 7 + bytes(range(16)) + bytes(range(16, 32))
    assert packet_ips(LINKTYPE_RAW, ipv6) == (bytes(range(16)), bytes(range(16, 32)))
    assert packet_ips(LINKTYPE_ETHERNET, b"\x02" * 12 + b"\x08\x06" + b"\0" * 28) is None  # ARP
    assert packet_ips(LINKTYPE_ETHERNET, ETHER_IPV4[:20]) is None  # truncated
    assert packet_ips(147, IPV4) is None  # a link type without IP


def test_pod_filter_resolves_ips_at_packet_time() -> None:
    records = [
        {"schema": "freezeframe.k8s-pod/v1", "observed_ns": 100, "change": "ADDED", "namespace": "shop",
         "pod": "checkout-1", "uid": "u1", "pod_ips": ["10.0.0.2"]},
        {"schema": "freezeframe.k8s-pod/v1", "observed_ns": 200, "change": "DELETED", "namespace": "shop",
         "pod": "checkout-1", "uid": "u1", "pod_ips": ["10.0.0.2"]},
        {"schema": "freezeframe.k8s-pod/v1", "observed_ns": 300, "change": "ADDED", "namespace": "payments",
         "pod": "ledger-1", "uid": "u2", "pod_ips": ["10.0.0.2"]},
    ]
    shop = PodFilter(records, ["shop"], [])
    ledger = PodFilter(records, [], ["ledger-1"])
    packet = [Frame(t, 0, LINKTYPE_ETHERNET, len(ETHER_IPV4), ETHER_IPV4) for t in (50, 150, 250, 350)]
    assert [shop(f) for f in packet] == [False, True, False, False]
    assert [ledger(f) for f in packet] == [False, False, False, True]


def sample_frames() -> list[Frame]:
    with SAMPLE.open("rb") as stream:
        return [Frame(p.ts_ns, i % 2, LINKTYPE_ETHERNET, p.orig_len, p.data) for i, p in enumerate(PcapReader(stream))]


@pytest.mark.skipif(shutil.which("tshark") is None, reason="needs tshark")
def test_pcapng_holds_one_interface_per_node_and_link_type(tmp_path: Path) -> None:
    packets = sample_frames()
    # node-b's packets without their Ethernet header, as a raw-IP capture would hold them
    mixed = [f if f.source == 0 else f._replace(link_type=LINKTYPE_RAW, data=f.data[14:], orig_len=f.orig_len - 14)
             for f in packets]
    path = tmp_path / "out.pcapng"
    with path.open("wb") as stream:
        sink = PcapngSink(stream, ["node-a", "node-b"], "unit")
        for frame in mixed:
            sink.write(frame)
    done = subprocess.run(["tshark", "-r", str(path), "-T", "fields", "-e", "frame.time_epoch", "-e",
                           "frame.interface_name", "-e", "ip.src", "-e", "frame.len"],
                          capture_output=True, text=True, check=True)
    assert "cut short" not in done.stderr and "isn't" not in done.stderr
    rows = [line.split("\t") for line in done.stdout.splitlines()]
    assert len(rows) == len(packets)
    assert [int(r[0].replace(".", "")) for r in rows] == [f.ts_ns for f in packets]  # nanoseconds kept
    assert [r[1] for r in rows] == [("node-a", "node-b")[f.source] for f in packets]
    assert [int(r[3]) for r in rows] == [f.orig_len for f in mixed]
    assert all(r[2].startswith("10.") for r in rows)


def test_pcap_refuses_a_second_link_type() -> None:
    stream = io.BytesIO()
    sink = PcapSink(stream, ["node-a", "node-b"])
    sink.write(Frame(1, 0, LINKTYPE_ETHERNET, 10, ETHER_IPV4))
    with pytest.raises(ExportError, match="node node-b captured link type 101 and node node-a link type 1"):
        sink.write(Frame(2, 1, LINKTYPE_RAW, 10, IPV4))


def test_an_empty_export_is_still_a_valid_pcap() -> None:
    stream = io.BytesIO()
    PcapSink(stream, []).finish()
    stream.seek(0)
    assert list(PcapReader(stream)) == []


def stored_segment() -> tuple[bytes, bytes]:
    pcap = io.BytesIO()
    writer = PcapWriter(pcap, LINKTYPE_ETHERNET)
    for t in (5, 6, 7):
        writer.write(t, ETHER_IPV4)
    return pcap.getvalue(), zstandard.ZstdCompressor().compress(pcap.getvalue())


def run_segment(stored: bytes, sha: str, size: int, verify: bool) -> tuple[list[Frame], ExportResult]:
    result = ExportResult("i", "out", "pcapng")
    got = list(segment_frames(lambda b, k, v: io.BytesIO(stored), "bucket", entry("n", 0, 10, "s.pcap.zst", sha, size),
                              3, ExportOptions(verify=verify), result))
    return got, result


def test_a_segment_streams_and_its_hash_is_checked() -> None:
    _, stored = stored_segment()
    got, result = run_segment(stored, hashlib.sha256(stored).hexdigest(), len(stored), verify=True)
    assert [(f.ts_ns, f.source, f.link_type) for f in got] == [(5, 3, 1), (6, 3, 1), (7, 3, 1)]
    assert result.verified_segments == 1 and result.stored_bytes == len(stored)


def test_a_wrong_hash_fails_only_with_verify() -> None:
    _, stored = stored_segment()
    with pytest.raises(SegmentCorruptError, match="s.pcap.zst version v1 \\(node n\\): stored bytes hash to"):
        run_segment(stored, "f" * 64, len(stored), verify=True)
    with pytest.raises(SegmentCorruptError, match="over 3 bytes"):
        run_segment(stored, hashlib.sha256(stored).hexdigest(), 3, verify=True)
    got, result = run_segment(stored, "f" * 64, len(stored), verify=False)
    assert len(got) == 3 and result.verified_segments == 0


def test_trailing_bytes_after_the_zstd_frame_are_hashed_too() -> None:
    _, stored = stored_segment()
    padded = stored + b"\0" * 4  # zstd skips nothing it does not read; the hash must still cover every byte
    with pytest.raises(SegmentCorruptError):
        run_segment(padded, hashlib.sha256(stored).hexdigest(), len(stored), verify=True)


def test_a_corrupt_zstd_stream_is_a_corrupt_segment() -> None:
    with pytest.raises(SegmentCorruptError, match="zstd|pcap"):
        run_segment(b"\x28\xb5\x2f\xfd" + b"\xff" * 40, "0" * 64, 44, verify=False)


def test_hashing_stream_counts_and_hashes() -> None:
    seen: list[int] = []
    stream = HashingStream(io.BytesIO(b"abcdef"), seen.append)
    assert stream.read(2) == b"ab"
    stream.drain()
    assert stream.size == 6 and sum(seen) == 6 and stream.sha256.hexdigest() == hashlib.sha256(b"abcdef").hexdigest()


def test_pcapng_segments_and_damage_are_read_through_pcapio() -> None:
    stream = io.BytesIO()
    sink = PcapngSink(stream, ["node-a"], "segment")
    for t in (10, 11, 12):
        sink.write(Frame(t, 0, LINKTYPE_RAW, len(IPV4), IPV4))
    stored = zstandard.ZstdCompressor().compress(stream.getvalue()[:-7])  # the last block cut short
    got, result = run_segment(stored, hashlib.sha256(stored).hexdigest(), len(stored), verify=True)
    assert [(f.ts_ns, f.link_type, f.data) for f in got] == [(10, LINKTYPE_RAW, IPV4), (11, LINKTYPE_RAW, IPV4)]
    assert result.problems.get("truncated") == 1 and result.verified_segments == 1


def test_without_the_compiled_core_the_python_merge_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The merge engine follows FREEZEFRAME_DISSECT_ENGINE as dissection does: auto falls back to the Python path
    when freezeframe_native is not installed, and native then fails with a clear error."""
    from freezeframe.contracts.errors import ConfigError
    from freezeframe.dissect import choice
    from freezeframe.investigate import export

    monkeypatch.setattr(choice, "extension", lambda: None)
    monkeypatch.delenv("FREEZEFRAME_DISSECT_ENGINE", raising=False)
    assert export.merge_engine() == "python"
    monkeypatch.setenv("FREEZEFRAME_DISSECT_ENGINE", "native")
    with pytest.raises(ConfigError, match="not installed"):
        export.merge_engine()
