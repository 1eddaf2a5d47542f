"""export-pcap's merge in the compiled core (freezeframe_native.merge_segments) against the Python path.

The Python path (`FREEZEFRAME_DISSECT_ENGINE=python`: pcapio's reader, `heapq.merge`, `PcapSink`/`PcapngSink`) is
the reference: for the same segments and options the compiled merge must write the same bytes and report the same
result (packets, segments, link types, damage counts, filtered packets), or fail with the same error and leave no
file. Inputs: the fixture capture in every format the reader knows, spread over several nodes and segments, ties
on timestamps, packets out of time order inside a node, mixed link types, damaged, empty and non-capture segments,
time windows, hash verification, and fuzzed segments (truncated, garbage, flipped bits). Independently of the
reference, the merged order is checked against a sort of the inputs and the pcapng output is read back by tshark.
"""

from __future__ import annotations

import hashlib
import io
import random
import shutil
import struct
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import zstandard

from freezeframe.capture.pcapio import PcapReader
from freezeframe.contracts.errors import SegmentCorruptError
from freezeframe.contracts.models import ManifestEntry
from freezeframe.dissect import native
from freezeframe.investigate import export
from freezeframe.investigate.export import Evidence, ExportOptions, export_pcap
from tests.fixtures.native_compare import fuzz_inputs
from tests.unit.dissect.test_native_engine import _block, _pcap, _pcapng, _sample_packets

pytestmark = pytest.mark.skipif(native.extension() is None, reason="the freezeframe_native extension is not built")

Packets = list[tuple[int, int, bytes]]


def _entries(nodes: dict[str, Sequence[bytes]]) -> tuple[Evidence, dict[str, bytes]]:
    store: dict[str, bytes] = {}
    entries = []
    for node, segments in nodes.items():
        for index, data in enumerate(segments):
            key = f"{node}/{index:04d}.pcap" + (".zst" if data[:4] == b"\x28\xb5\x2f\xfd" else "")
            store[key] = data
            entries.append(("raw", ManifestEntry(key=key, version_id="v1", sha256=hashlib.sha256(data).hexdigest(),
                                                 size=len(data), node=node, start_ns=index, end_ns=1 << 62,
                                                 seq=index, packets=None, lock_mode="COMPLIANCE", retain_until="",
                                                 legal_hold=False)))
    return Evidence("raw", tuple(entries), ()), store


def run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, engine: str, nodes: dict[str, Sequence[bytes]],
        **options: Any) -> tuple[Any, ...]:
    """One export with `engine`: ("ok", bytes written, result) or ("error", type, message, file left behind)."""
    monkeypatch.setenv("FREEZEFRAME_DISSECT_ENGINE", engine)
    evidence, store = _entries(nodes)
    out = tmp_path / engine / "out.cap"
    opener = lambda bucket, key, version: io.BytesIO(store[key])  # noqa: E731
    try:
        result = export_pcap(None, None, "incident-1", out, ExportOptions(progress=False, **options),  # type: ignore[arg-type]
                             opener=opener, evidence=evidence)
    except Exception as exc:  # noqa: BLE001 - the error is part of what is compared
        left = [p.name for p in out.parent.iterdir()] if out.parent.exists() else []
        return ("error", type(exc).__name__, str(exc), left)
    data = out.read_bytes()
    out.unlink()
    return ("ok", data, {**result.to_dict(), "path": out.name})


def same(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, nodes: dict[str, Sequence[bytes]],
         **options: Any) -> tuple[Any, ...]:
    """The reference's outcome, asserted equal to the compiled merge's."""
    calls = []
    module = native.extension()
    real = module.merge_segments  # type: ignore[union-attr]
    monkeypatch.setattr(module, "merge_segments", lambda *a, **k: calls.append(1) or real(*a, **k))
    reference = run(monkeypatch, tmp_path, "python", nodes, **options)
    assert not calls
    compiled = run(monkeypatch, tmp_path, "native", nodes, **options)
    assert calls, "the compiled merge did not run"
    if reference[0] == "ok" and compiled[0] == "ok" and reference[1] != compiled[1]:
        at = next(i for i, (a, b) in enumerate(zip(reference[1], compiled[1], strict=False)) if a != b)
        pytest.fail(f"outputs differ from byte {at} (lengths {len(reference[1])} and {len(compiled[1])})")
    assert compiled == reference
    return reference


def _split(packets: Packets, parts: int) -> list[Packets]:
    size = -(-len(packets) // parts)
    return [packets[i:i + size] for i in range(0, len(packets), size)]


def _formats(packets: Packets, index: int) -> bytes:
    """The packets in one of the reader's formats, chosen by `index`."""
    compress = zstandard.ZstdCompressor().compress
    forms = [lambda p: _pcap(p, "<", nanosecond=False), lambda p: _pcap(p, ">"), lambda p: _pcapng(p, "<"),
             lambda p: _pcapng(p, ">", tsresol=6, offset_s=1_000), lambda p: compress(_pcapng(p, "<")),
             lambda p: compress(_pcap(p, "<")), lambda p: _pcapng(p, "<", tsresol=3)]
    return forms[index % len(forms)](packets)


def _fixture_nodes(nodes: int, segments: int) -> dict[str, list[bytes]]:
    packets = _sample_packets()
    out: dict[str, list[bytes]] = {}
    for n in range(nodes):
        # each node sees the fixture shifted by a few µs, so nodes interleave (and tie where shifts collide)
        shifted = [(t + (n % 2) * 3_000, o, d) for t, o, d in packets]
        out[f"node-{n}"] = [_formats(part, n + i) for i, part in enumerate(_split(shifted, segments))]
    return out


def _order(data: bytes) -> list[tuple[int, bytes]]:
    with io.BytesIO(data) as stream:
        return [(p.ts_ns, p.data) for p in PcapReader(stream)]


@pytest.mark.parametrize("fmt", ["pcapng", "pcap"])
def test_fixture_over_nodes_and_formats(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fmt: str) -> None:
    reference = same(monkeypatch, tmp_path, _fixture_nodes(3, 4), fmt=fmt, verify=True)
    assert reference[0] == "ok" and reference[2]["segments"] == 12 and reference[2]["verified_segments"] == 12
    assert reference[2]["packets"] == 3 * len(_sample_packets())


def test_ties_and_disorder_keep_node_then_capture_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Equal times: the lower node first; a node's own packets out of time order stay in capture order."""
    def packets(node: int, times: list[int]) -> Packets:
        return [(t * 1000, 60, bytes([node, i]) + b"\0" * 58) for i, t in enumerate(times)]

    nodes = {"a": [_pcap(packets(0, [5, 5, 9, 2])), _pcap([]), _pcap(packets(0, [7]))],
             "b": [_pcap(packets(1, [1, 5, 9]))], "c": [_pcap(packets(2, [5, 10]), ">", nanosecond=False)]}
    reference = same(monkeypatch, tmp_path, nodes, fmt="pcap")
    merged = _order(reference[1])
    # heapq.merge semantics, computed here: repeatedly the smallest (time, node) among the nodes' next packets
    heads = {0: packets(0, [5, 5, 9, 2]) + packets(0, [7]), 1: packets(1, [1, 5, 9]), 2: packets(2, [5, 10])}
    expected = []
    while any(heads.values()):
        node = min((h[0][0], n) for n, h in heads.items() if h)[1]
        expected.append(heads[node].pop(0)[::2])
    assert merged == expected
    assert reference[2]["segments"] == 5


def _two_interfaces(order: str) -> bytes:
    """A pcapng segment with an Ethernet and a raw-IP interface, packets alternating between them."""
    packets = _sample_packets()[:20]
    out = bytearray(_block(order, 0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1)))
    tsresol = struct.pack(order + "HH", 9, 1) + bytes([9, 0, 0, 0]) + struct.pack(order + "HH", 0, 0)
    out += _block(order, 1, struct.pack(order + "HHI", 1, 0, 262144) + tsresol)
    out += _block(order, 1, struct.pack(order + "HHI", 101, 0, 262144) + tsresol)
    for i, (ts, orig, data) in enumerate(packets):
        body = data if i % 2 == 0 else data[14:]
        out += _block(order, 6, struct.pack(order + "IIIII", i % 2, ts >> 32, ts & 0xFFFFFFFF, len(body),
                                            orig - 14 * (i % 2)) + body)
    return bytes(out)


@pytest.mark.parametrize("fmt", ["pcapng", "pcap"])
def test_link_types(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fmt: str) -> None:
    packets = _sample_packets()
    nodes = {"eth": [_pcap(packets[:50])],
             "raw": [_pcap([(t, o - 14, d[14:]) for t, o, d in packets[:50]], link=101)],
             "sll2": [_pcap([(t, o + 6, d[12:14] + b"\0" * 18 + d[14:]) for t, o, d in packets[:50]], link=276)],
             "two": [_two_interfaces("<"), _two_interfaces(">")]}
    reference = same(monkeypatch, tmp_path, nodes, fmt=fmt)
    if fmt == "pcap":
        assert reference[:2] == ("error", "ExportError") and reference[3] == []
        assert "a pcap file holds one link type" in reference[2]
    else:
        assert reference[2]["link_types"] == {"eth": [1], "raw": [101], "sll2": [276], "two": [1, 101]}


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_tshark_reads_the_compiled_merge(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Independent of the reference: tshark reads every packet, on one interface per (node, link type), in order."""
    monkeypatch.setenv("FREEZEFRAME_DISSECT_ENGINE", "native")
    nodes = _fixture_nodes(2, 3)
    nodes["two"] = [_two_interfaces("<")]
    evidence, store = _entries(nodes)
    out = tmp_path / "out.pcapng"
    result = export_pcap(None, None, "incident-1", out, ExportOptions(progress=False),  # type: ignore[arg-type]
                         opener=lambda b, k, v: io.BytesIO(store[k]), evidence=evidence)
    fields = subprocess.run(["tshark", "-r", str(out), "-T", "fields", "-e", "frame.time_epoch", "-e",
                             "frame.interface_name"], capture_output=True, text=True, check=True).stdout.splitlines()
    assert len(fields) == result.packets == 2 * len(_sample_packets()) + 20
    times = [int(line.split("\t")[0].replace(".", "")) for line in fields]
    assert times == sorted(times)
    assert {line.split("\t")[1] for line in fields} == {"node-0", "node-1", "two"}


@pytest.mark.parametrize("damage", ["truncated", "garbage", "zstd-cut", "empty-capture", "bad-lengths"])
def test_damaged_segments(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, damage: str) -> None:
    nodes = _fixture_nodes(2, 3)
    clean = _pcap(_sample_packets())
    if damage == "truncated":
        bad = clean[:-37]
    elif damage == "garbage":
        bad = clean[:5000] + bytes(range(256)) * 3 + clean[5000:]
    elif damage == "zstd-cut":
        compress = zstandard.ZstdCompressor().compress
        bad = (compress(clean[:3000]) + compress(clean[3000:]))[:-50]  # the second frame cut short
    elif damage == "empty-capture":
        bad = _pcap([])
    else:
        bad = bytearray(clean)
        bad[24 + 8:24 + 12] = struct.pack("<I", 0xFFFFFFFF)  # the first record's captured length
        bad = bytes(bad)
    nodes["node-1"].insert(1, bad)
    reference = same(monkeypatch, tmp_path, nodes)
    assert reference[0] == "ok"
    assert reference[2]["problems"] or damage == "empty-capture"


@pytest.mark.parametrize("what", ["not-a-capture", "zero-bytes", "pcapng-no-magic"])
def test_a_segment_that_is_not_a_capture_fails_the_export(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                           what: str) -> None:
    bad = {"not-a-capture": b"this is not a capture at all", "zero-bytes": b"",
           "pcapng-no-magic": b"\x0a\x0d\x0d\x0a" + b"\0" * 40}[what]
    nodes = _fixture_nodes(2, 2)
    nodes["node-0"].append(bad)
    reference = same(monkeypatch, tmp_path, nodes)
    assert reference[:2] == ("error", "SegmentCorruptError") and reference[3] == []


def test_verify_and_time_window(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    nodes = _fixture_nodes(2, 3)
    times = sorted(t for t, _, _ in _sample_packets())
    reference = same(monkeypatch, tmp_path, nodes, start_ns=times[30], end_ns=times[100], fmt="pcap")
    kept = _order(reference[1])
    assert kept and all(times[30] <= t <= times[100] for t, _ in kept)
    assert reference[2]["filtered_out"] + reference[2]["packets"] == 2 * len(times)
    evidence, store = _entries(nodes)
    key = next(k for k in store if k.startswith("node-1/0001"))
    store[key] = store[key][:-1] + bytes([store[key][-1] ^ 1])  # still a capture, one bit changed
    for engine in ("python", "native"):
        monkeypatch.setenv("FREEZEFRAME_DISSECT_ENGINE", engine)
        with pytest.raises(SegmentCorruptError, match="stored bytes hash to"):
            export_pcap(None, None, "i", tmp_path / "v.pcap", ExportOptions(progress=False, verify=True),  # type: ignore[arg-type]
                        opener=lambda b, k, v: io.BytesIO(store[k]), evidence=evidence)
        assert not list(tmp_path.glob("*v.pcap*"))


def test_engine_selection_follows_the_dissection_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FREEZEFRAME_DISSECT_ENGINE", raising=False)
    assert export.merge_engine() == "native"
    monkeypatch.setenv("FREEZEFRAME_DISSECT_ENGINE", "python")
    assert export.merge_engine() == "python"


def test_fuzzed_segments_match_the_reference(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Mutated segments (truncation, garbage, flipped bits, hostile lengths) between clean ones, over two nodes."""
    clean = _pcap(_sample_packets()[:60])
    rng = random.Random(16)
    inputs = list(fuzz_inputs(seed=5, count=300))
    for start in range(0, len(inputs), 3):
        group = [data for _, data in inputs[start:start + 3]]
        nodes = {"a": [clean, group[0]], "b": group[1:] + [clean]}
        if rng.random() < 0.3:
            nodes["a"].reverse()
        same(monkeypatch, tmp_path, nodes, fmt=rng.choice(["pcap", "pcapng"]))


def test_merge_entry_survives_garbage() -> None:
    """No panic reaches Python: random bytes, truncations and nonsense callbacks give a result or a plain error."""
    module = native.extension()
    assert module is not None
    rng = random.Random(17)
    base = _pcapng(_sample_packets()[:30], "<")
    compressed = zstandard.ZstdCompressor().compress(base)
    for _ in range(2_000):
        pick = rng.random()
        if pick < 0.3:
            data = rng.randbytes(rng.randrange(64))
        elif pick < 0.6:
            data = rng.choice([base, compressed])[:rng.randrange(len(base))]
        else:
            data = bytearray(rng.choice([base, compressed]))
            for _ in range(rng.randint(1, 20)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            data = bytes(data)
        queue = [[data, base], [compressed]]
        out = io.BytesIO()

        def next_segment(node: int, finished: Any, queue: list[list[bytes]] = queue) -> bytes | None:
            if isinstance(finished, str):
                raise SegmentCorruptError(finished)
            return queue[node].pop(0) if queue[node] else None

        try:
            packets, _, _, refusal = module.merge_segments(["a", "b"], next_segment, out.write,
                                                           rng.choice(["pcap", "pcapng"]), b"\0" * 28, None, None)
            assert refusal is not None or packets >= 60
        except SegmentCorruptError:
            pass
    with pytest.raises(TypeError):
        module.merge_segments(["a"], lambda node, finished: 42, io.BytesIO().write, "pcap")
    with pytest.raises(ZeroDivisionError):
        module.merge_segments(["a"], lambda node, finished: 1 / 0, io.BytesIO().write, "pcap")
