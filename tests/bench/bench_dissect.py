"""Dissection benchmark, run by `make bench-dissect`: one capture of >= 1 M packets, file -> all Parquet tables.

The capture is built once and cached outside the repository (freezeframe.contracts.config.cache_dir()/bench): the
bundled
sample (DNS over UDP and TCP, HTTP 2xx/4xx/5xx, TLS 1.2/1.3 handshakes, resets), a clean 300 KB download and a
lossy, reordering transfer (tests/fixtures/tcp_captures.py: retransmissions, dup ACKs, zero windows, ...),
replicated with the addresses of each copy shifted so every copy's conversations are distinct, copies staggered
by 2 ms so tens of thousands of conversations are open at once.

Measured in the same run, each in its own child process (so peak RSS is that run's alone):
- freezeframe: open_capture(...).record_batches() (the dissection job's reader) -> batch.feed_batches into a
  ConnectionTracker + AppTracker (one pass, the batched hot path) -> connections, dns, http, tls -> zstd Parquet
  files, all with the cyclic garbage collector paused (connections.collector_paused) and the tracker closed at the
  end (ConnectionTracker.close), as a dissection job runs.
- tshark -T fields with the equivalent fields (5-tuple, tcp.analysis flags, tcp.completeness, DNS name and rcode,
  HTTP method and status, TLS SNI).
Both report packets/s over CPU time (user + system, the fair figure on a shared machine) and over wall time, and
peak RSS. freezeframe runs ``--repeats`` times (tshark between its first and second run); the ratio is the median
freezeframe rate over the median tshark rate.

Usage: .venv/bin/python -m tests.bench.bench_dissect [--packets 1000000] [--repeats 3] [--tshark-repeats 1]
       [--skip-tshark]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from freezeframe.capture.pcapio import PcapReader, PcapWriter, open_capture
from freezeframe.contracts.config import cache_dir
from freezeframe.dissect import AppTracker, ConnectionTracker
from freezeframe.dissect.connections import collector_paused
from freezeframe.dissect.tcp.batch import feed_batches

CAPTURE_VERSION = 2  # bump when the generator changes, so a stale cached capture is rebuilt
COPY_SPACING_NS = 2_000_000
TSHARK_FIELDS = [
    "frame.number", "ip.src", "ipv6.src", "ip.dst", "ipv6.dst", "ip.proto", "tcp.srcport", "tcp.dstport",
    "udp.srcport", "udp.dstport", "tcp.stream", "tcp.analysis.flags", "tcp.analysis.retransmission",
    "tcp.analysis.fast_retransmission", "tcp.analysis.spurious_retransmission", "tcp.analysis.out_of_order",
    "tcp.analysis.duplicate_ack", "tcp.analysis.lost_segment", "tcp.analysis.zero_window",
    "tcp.analysis.window_full", "tcp.analysis.keep_alive", "tcp.analysis.ack_rtt", "tcp.analysis.initial_rtt",
    "tcp.completeness", "dns.qry.name", "dns.flags.rcode", "http.request.method", "http.response.code",
    "tls.handshake.extensions_server_name",
]


def template() -> tuple[int, list[tuple[int, bytes]]]:
    """One copy's frames (relative ns, Ethernet frame): the sample, a clean download and a lossy transfer."""
    # Imported here: they pull in scapy, which the measured child process must not pay for.
    from freezeframe_local.samples import write_sample_pcap

    from tests.fixtures.tcp_captures import Capture, clean_download, lossy_capture

    with tempfile.TemporaryDirectory() as scratch:
        sample = Path(scratch) / "sample.pcap"
        write_sample_pcap(sample)
        with sample.open("rb") as stream:
            reader = PcapReader(stream)
            link_type = reader.link_type
            frames = [(packet.ts_ns, packet.data) for packet in reader]
    lossy = lossy_capture(11, conversations=1, steps=100).frames
    bulk = Capture()
    clean_download(bulk, 45_000, 150, client_ip="10.244.7.7", server_ip="10.244.8.8")
    start = min(frames[0][0], lossy[0][0], bulk.frames[0][0])
    merged = sorted([(ts - start, data) for ts, data in frames + lossy + bulk.frames], key=lambda frame: frame[0])
    return link_type, merged


def shifted(frame: bytes, copy: int) -> bytes:
    """The frame with octets 2 and 3 of both IPv4 addresses XORed with the copy number (Ethernet + IPv4 only)."""
    if frame[12:14] != b"\x08\x00":
        return frame
    hi, lo = (copy >> 8) & 0xFF, copy & 0xFF
    data = bytearray(frame)
    for offset in (26, 30):  # IPv4 source and destination inside an untagged Ethernet frame
        data[offset + 1] ^= hi
        data[offset + 2] ^= lo
    return bytes(data)


def build_capture(path: Path, packets: int) -> None:
    link_type, frames = template()
    copies = -(-packets // len(frames))
    print(f"building {path} ({copies} copies of {len(frames)} frames)", flush=True)
    all_frames = [(ts + copy * COPY_SPACING_NS, copy, index) for copy in range(copies)
                  for index, (ts, _data) in enumerate(frames)]
    all_frames.sort()
    base_ns = 1_767_225_600 * 1_000_000_000
    partial = path.with_suffix(".partial")
    with partial.open("wb") as stream:
        writer = PcapWriter(stream, link_type)
        for ts, copy, index in all_frames:
            writer.write(base_ns + ts, shifted(frames[index][1], copy))
    partial.rename(path)


def dissect_to_parquet(path: Path, out: Path) -> tuple[int, dict[str, int]]:
    """The whole engine in this process: returns packets read and rows per table."""
    node = "bench-node"
    tracker = ConnectionTracker(node, AppTracker(node))
    with path.open("rb") as stream:
        # open_capture and feed_batches are what the dissection job runs (format detection, bounded batches, damage
        # counted; the batched hot path).
        feed_batches(tracker, open_capture(stream).record_batches())
    tables = {"connections": tracker.finish(), **tracker.app_tables()}
    rows = {}
    for name, table in tables.items():
        pq.write_table(table, out / f"{name}.parquet", compression="zstd")
        rows[name] = table.num_rows
    packets = tracker.stats.packets
    tracker.close()
    return packets, rows


def measured(args: list[str], count_lines: bool) -> dict[str, float]:
    """Runs a child; its wall and CPU seconds, peak RSS in bytes, and its stdout (or its line count)."""
    started = time.perf_counter()
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert process.stdout is not None
    lines = 0
    output = b""
    if count_lines:
        for _line in process.stdout:
            lines += 1
    else:
        output = process.stdout.read()
    _pid, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise SystemExit(f"{args[:4]} failed with exit code {process.returncode}")
    result = {"wall": time.perf_counter() - started, "cpu": usage.ru_utime + usage.ru_stime,
              "rss": usage.ru_maxrss * 1024, "lines": lines}
    if output:
        result.update(json.loads(output))
    return result


def tshark_args(path: Path) -> list[str]:
    tshark = shutil.which("tshark")
    if tshark is None:
        raise SystemExit("tshark is not installed (apt-get install tshark): it is the reference of this benchmark")
    args = [tshark, "-n", "-r", str(path), "-T", "fields"]
    for name in TSHARK_FIELDS:
        args += ["-e", name]
    return args


def dissect_child(path: Path) -> int:
    """The freezeframe run, in a child process: prints packets and rows as JSON."""
    # One bulk pass with the cyclic collector paused, as the engine is meant to run (connections.collector_paused):
    # it is re-enabled only once the tracker is gone, so no collection rescans millions of live flow objects.
    with tempfile.TemporaryDirectory() as out, collector_paused():
        packets, rows = dissect_to_parquet(path, Path(out))
    print(json.dumps({"packets": packets, "rows": rows}))
    return 0


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--packets", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3, help="freezeframe runs (the median counts; default 3)")
    parser.add_argument("--tshark-repeats", type=int, default=1, help="tshark runs (the median counts; default 1)")
    parser.add_argument("--skip-tshark", action="store_true", help="measure freezeframe only")
    parser.add_argument("--dissect-only", type=Path, help=argparse.SUPPRESS)  # the measured child
    options = parser.parse_args()
    if options.dissect_only:
        return dissect_child(options.dissect_only)
    capture = cache_dir() / "bench" / f"dissect-v{CAPTURE_VERSION}-{options.packets}.pcap"
    capture.parent.mkdir(parents=True, exist_ok=True)
    if not capture.exists():
        build_capture(capture, options.packets)
    size = capture.stat().st_size
    print(f"capture: {capture} ({size / 1e6:.0f} MB); load average before: {os.getloadavg()[0]:.2f}")
    ours_args = [sys.executable, "-m", "tests.bench.bench_dissect", "--dissect-only", str(capture)]
    ours: list[dict[str, float]] = []
    theirs: list[dict[str, float]] = []
    # tshark runs after the first freezeframe run, the other freezeframe runs after it: both see the same stretch of
    # a shared machine's noise, and medians drop single outliers.
    plan = ["ours"] + ([] if options.skip_tshark else ["tshark"] * options.tshark_repeats) + \
        ["ours"] * (options.repeats - 1)
    for step in plan:
        if step == "ours":
            run = measured(ours_args, False)
            ours.append(run)
            packets = run["packets"]
            print(f"freezeframe run {len(ours)} (file -> 4 Parquet tables): {packets:.0f} packets; "
                  f"{packets / run['cpu'] / 1000:.0f} k packets/s CPU ({run['cpu']:.2f} s), "
                  f"{packets / run['wall'] / 1000:.0f} k packets/s wall ({run['wall']:.2f} s); "
                  f"peak RSS {run['rss'] / 1e6:.0f} MB; rows {run['rows']}", flush=True)
        else:
            run = measured(tshark_args(capture), True)
            theirs.append(run)
            print(f"tshark -T fields ({len(TSHARK_FIELDS)} fields) run {len(theirs)}: {run['lines']:.0f} packets; "
                  f"{run['lines'] / run['cpu'] / 1000:.1f} k packets/s CPU ({run['cpu']:.1f} s), "
                  f"{run['lines'] / run['wall'] / 1000:.1f} k packets/s wall ({run['wall']:.1f} s); "
                  f"peak RSS {run['rss'] / 1e6:.0f} MB", flush=True)
    packets = ours[0]["packets"]
    ours_cpu = median([packets / run["cpu"] for run in ours])
    ours_wall = median([packets / run["wall"] for run in ours])
    peak = max(run["rss"] for run in ours)
    print(f"freezeframe median of {len(ours)}: {ours_cpu / 1000:.0f} k packets/s CPU, {ours_wall / 1000:.0f} k "
          f"packets/s wall; peak RSS {peak / 1e6:.0f} MB")
    budget = 2 * size + 200e6
    print(f"memory budget (2 x capture + 200 MB): {budget / 1e6:.0f} MB -> {'holds' if peak <= budget else 'exceeded'}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if not theirs:
        return 0
    lines = theirs[0]["lines"]
    theirs_cpu = median([lines / run["cpu"] for run in theirs])
    theirs_wall = median([lines / run["wall"] for run in theirs])
    print(f"ratio freezeframe / tshark (medians): {ours_cpu / theirs_cpu:.1f}x by CPU time, "
          f"{ours_wall / theirs_wall:.1f}x by wall time (target >= 10x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
