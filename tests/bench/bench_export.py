"""export-pcap's k-way merge: the compiled core against the Python path and Wireshark's mergecap.

The input is the bench capture of real kernel traffic (tests/bench/bench_native.py builds it once in network
namespaces and caches it in ~/.cache/freezeframe/bench-native), dealt out to --nodes nodes (packet i to node
i mod nodes, so every step of the merge switches nodes: the hard case) and cut into segments as the agent rotates
them (one per bench segment and node), written once to ~/.cache/freezeframe/bench-export as nanosecond pcap, or
zstd-compressed pcap with --zstd as the agent stores them. S3 is left out: the segments are read from local files.

Each measurement runs in its own process (CPU = user + system time of that process, from its rusage):

- native: ``export_pcap`` with FREEZEFRAME_DISSECT_ENGINE=native (freezeframe_native.merge_segments), pcapng out;
- python: the same with FREEZEFRAME_DISSECT_ENGINE=python (pcapio's reader, heapq.merge, PcapngSink);
- mergecap: ``mergecap -F pcapng -w OUT segments...`` (Wireshark), the reference tool.

Prints packets per CPU-second of each (the export's in-process CPU too, without interpreter start and imports), the
ratios, and checks that the native and Python outputs are byte-identical. Medians of --rounds rounds (the Python
path runs --python-rounds times: it is slow).

Usage: python -m tests.bench.bench_export [--nodes 4] [--rounds 3] [--python-rounds 1] [--zstd]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.bench.bench_native import _child_rusage, capture

CACHE = Path.home() / ".cache" / "freezeframe" / "bench-export" / "v1"


def segments(source: list[Path], nodes: int, compress: bool) -> dict[str, list[Path]]:
    """The bench segments dealt out to `nodes` nodes; built once, cached."""
    from freezeframe.capture.pcapio import PcapWriter, open_capture  # noqa: PLC0415

    folder = CACHE / f"{nodes}-nodes{'-zstd' if compress else ''}"
    listing = folder / "segments.json"
    if listing.exists():
        return {node: [Path(p) for p in paths] for node, paths in json.loads(listing.read_text()).items()}
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    import zstandard  # noqa: PLC0415

    out: dict[str, list[Path]] = {f"node-{n}": [] for n in range(nodes)}
    count = 0
    for index, path in enumerate(source):
        buffers = [io.BytesIO() for _ in range(nodes)]
        writers: list[PcapWriter | None] = [None] * nodes
        with path.open("rb") as stream:
            reader = open_capture(stream)
            for link, packets in reader.runs():
                for packet in packets:
                    n = count % nodes
                    count += 1
                    writer = writers[n]
                    if writer is None:
                        writer = writers[n] = PcapWriter(buffers[n], link)
                    writer.write(packet.ts_ns, packet.data, packet.orig_len)
        for n, buffer in enumerate(buffers):
            data = buffer.getvalue()
            name = folder / f"node-{n}-{index:03d}.pcap"
            if compress:
                data, name = zstandard.ZstdCompressor(level=3).compress(data), name.with_suffix(".pcap.zst")
            name.write_bytes(data)
            out[f"node-{n}"].append(name)
    listing.write_text(json.dumps({node: [str(p) for p in paths] for node, paths in out.items()}))
    return out


def child_export(listing: str, out: str) -> None:
    from freezeframe.contracts.models import ManifestEntry  # noqa: PLC0415
    from freezeframe.investigate.export import Evidence, ExportOptions, export_pcap  # noqa: PLC0415

    nodes = json.loads(listing)
    entries = []
    for node, paths in nodes.items():
        for index, path in enumerate(paths):
            size = Path(path).stat().st_size
            entries.append(("local", ManifestEntry(key=path, version_id="v", sha256="", size=size, node=node,
                                                   start_ns=index, end_ns=index + 1, seq=index, packets=None,
                                                   lock_mode="", retain_until="", legal_hold=False)))
    started = time.process_time()
    result = export_pcap(None, None, "bench", Path(out), ExportOptions(progress=False),  # type: ignore[arg-type]
                         opener=lambda bucket, key, version: Path(key).open("rb"),
                         evidence=Evidence("local", tuple(entries), ()))
    inner = time.process_time() - started
    print(json.dumps({"packets": result.packets, "cpu_inner": inner}))


def measure(kind: str, nodes: dict[str, list[Path]], out: Path) -> dict[str, Any]:
    if kind == "mergecap":
        mergecap = shutil.which("mergecap")
        assert mergecap is not None, "mergecap (wireshark-common) is not installed"
        found = _child_rusage([mergecap, "-F", "pcapng", "-w", str(out), *[str(p) for ps in nodes.values()
                                                                           for p in ps]])
        return {**found, "out": None}
    env = {**os.environ, "FREEZEFRAME_DISSECT_ENGINE": kind}
    listing = json.dumps({node: [str(p) for p in paths] for node, paths in nodes.items()})
    found = _child_rusage([sys.executable, "-m", "tests.bench.bench_export", "--child", listing, str(out)], env=env,
                          stdout=subprocess.PIPE)
    return {**found, **json.loads(found.pop("out").decode().strip().splitlines()[-1])}


def _digest(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            sha.update(chunk)
    return sha.hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--python-rounds", type=int, default=1)
    parser.add_argument("--zstd", action="store_true", help="zstd-compressed segments (mergecap then reads them too)")
    parser.add_argument("--packets", type=int, default=1_150_000, help="packets of the bench capture, if built")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_export(*args.child)
        return 0
    nodes = segments(capture(args.packets, rebuild=False), args.nodes, args.zstd)
    stored_mb = sum(p.stat().st_size for ps in nodes.values() for p in ps) / 1e6
    results: dict[str, list[dict[str, Any]]] = {"native": [], "python": [], "mergecap": []}
    digests: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="ff-bench-export-") as scratch:
        for round_ in range(args.rounds):
            for kind in ("native", "mergecap", "python"):
                if kind == "python" and round_ >= args.python_rounds:
                    continue
                out = Path(scratch) / f"{kind}.pcapng"
                results[kind].append(measure(kind, nodes, out))
                if kind != "mergecap":
                    digests[kind] = _digest(out)
                out.unlink()
                print(f"round {round_ + 1} {kind}: {results[kind][-1]['cpu']:.2f} CPU-s", file=sys.stderr)
    packets = results["native"][0]["packets"]
    assert all(r["packets"] == packets for r in results["native"] + results["python"])
    median = {kind: {key: statistics.median(r[key] for r in runs) for key in ("cpu", "rss_mb", "wall")}
              for kind, runs in results.items() if runs}
    rate = {kind: packets / values["cpu"] for kind, values in median.items()}
    inner = {kind: packets / statistics.median(r["cpu_inner"] for r in results[kind])
             for kind in ("native", "python") if results[kind]}
    segment_count = sum(len(ps) for ps in nodes.values())
    print(f"input: {packets:,} packets of real kernel traffic over {len(nodes)} nodes, {segment_count} segments, "
          f"{stored_mb:.0f} MB {'zstd' if args.zstd else 'pcap'}; medians of {args.rounds} rounds "
          f"(python: {args.python_rounds})")
    print(f"{'':9} {'packets/CPU-s':>14} {'export only':>12} {'CPU s':>7} {'wall s':>7} {'peak RSS MB':>12}")
    for kind in (k for k in ("native", "python", "mergecap") if k in median):
        print(f"{kind:9} {rate[kind]:>14,.0f} {inner.get(kind, 0):>12,.0f} {median[kind]['cpu']:>7.2f} "
              f"{median[kind]['wall']:>7.2f} {median[kind]['rss_mb']:>12.0f}")
    if "python" in rate:
        print(f"native / python: {rate['native'] / rate['python']:.1f}x by process CPU, "
              f"{inner['native'] / inner['python']:.1f}x by the export's own CPU")
    print(f"native / mergecap: {rate['native'] / rate['mergecap']:.2f}x by process CPU (the interpreter's start and "
          f"imports included), {inner['native'] / rate['mergecap']:.2f}x by the export's own CPU")
    identical = "python" not in digests or digests["native"] == digests["python"]
    if "python" in digests:
        print(f"native and python outputs byte-identical: {'yes' if identical else 'NO'}")
    met = "met" if inner["native"] >= 1_000_000 else "NOT met"
    print(f"target >= 1 M packets per CPU-second (native export, S3 excluded): {met}")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
