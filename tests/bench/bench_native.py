"""The compiled dissection core on >= 1 M packets of real kernel traffic, against tshark and a bare record walk.

``make bench-native`` builds (once, cached in ~/.cache/freezeframe/bench-native) a capture of real kernel traffic
in network namespaces (tests/bench/netns_mix.py: short HTTP/1.1 connections with and without keep-alive, DNS over
UDP and TCP with failures, TLS handshakes, some bulk, 1 % random drop on part of the path), rotated into segments
as the node agent does. Then, three rounds, each measurement in its own process (CPU = user + system time of that
process, peak RSS from its rusage):

- engine: ``job.dissect_segments`` on the segments with the compiled core (reading them, every table as Arrow: what
  a dissection job does between fetching the segments and writing Parquet), in-process CPU and process CPU;
- native: ``freezeframe dissect`` on the segments (the whole job: reading, every table, Parquet output) with the
  compiled core (FREEZEFRAME_DISSECT_ENGINE=native); also the in-process time of ``dissect_files`` alone;
- tshark: ``tshark -T fields`` with the fields equivalent to the tables (TCP expert analysis included);
- floor: a bare compiled walk over the records (freezeframe_native.walk);
- python (first round only, unless --python-rounds): the reference engine, for context.

Prints packets per CPU-second, the ratio to tshark, the fraction of the floor and the peak RSS (with the bound
2 x largest segment + 200 MB); medians of the rounds. Exits non-zero if the capture is short of --min-packets.

Usage: python -m tests.bench.bench_native [--packets 1150000] [--rounds 3] [--rebuild]
"""

from __future__ import annotations

import argparse
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

CACHE = Path.home() / ".cache" / "freezeframe" / "bench-native" / "v1"
TSHARK_FIELDS = [
    "frame.time_epoch", "frame.len", "ip.src", "ip.dst", "ipv6.src", "ipv6.dst", "tcp.srcport", "tcp.dstport",
    "udp.srcport", "udp.dstport", "tcp.stream", "tcp.flags", "tcp.completeness", "tcp.len",
    "tcp.analysis.retransmission", "tcp.analysis.fast_retransmission", "tcp.analysis.out_of_order",
    "tcp.analysis.duplicate_ack", "tcp.analysis.lost_segment", "tcp.analysis.zero_window",
    "tcp.analysis.window_full", "tcp.analysis.keep_alive", "tcp.analysis.ack_rtt", "tcp.analysis.initial_rtt",
    "dns.id", "dns.qry.name", "dns.qry.type", "dns.flags.rcode", "dns.a", "dns.resp.ttl", "dns.time",
    "http.request.method", "http.host", "http.request.uri", "http.response.code", "http.time", "http.user_agent",
    "http.content_type", "tls.handshake.type", "tls.handshake.extensions_server_name",
    "tls.handshake.extensions_alpn_str", "tls.handshake.ciphersuite", "tls.alert_message.desc",
]


def _child_rusage(args: list[str], env: dict[str, str] | None = None,
                  stdout: Any = subprocess.DEVNULL) -> dict[str, Any]:
    """Run ``args``; its CPU seconds (user + system), peak RSS (MB), wall seconds and stdout."""
    started = time.perf_counter()
    process = subprocess.Popen(args, stdout=stdout, stderr=subprocess.PIPE, env=env)
    out = b""
    if stdout == subprocess.PIPE:
        assert process.stdout is not None
        out = process.stdout.read()
    assert process.stderr is not None
    err = process.stderr.read()
    _pid, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise RuntimeError(f"{args[0]} failed ({process.returncode}): {err.decode(errors='replace')[-2000:]}")
    return {"cpu": usage.ru_utime + usage.ru_stime, "rss_mb": usage.ru_maxrss / 1024,
            "wall": time.perf_counter() - started, "out": out}


def capture(packets: int, rebuild: bool) -> list[Path]:
    manifest = CACHE / "capture.json"
    if manifest.exists() and not rebuild:
        return [Path(p) for p in json.loads(manifest.read_text())["segments"]]
    from tests.bench.netns_mix import build  # noqa: PLC0415 - needs root and namespaces

    if CACHE.exists():
        shutil.rmtree(CACHE)
    made = build(CACHE, packets=packets)
    manifest.write_text(json.dumps({"segments": [str(p) for p in made.segments], "client": made.client,
                                    "seconds": made.seconds}))
    return made.segments


def child_walk(paths: list[str]) -> None:
    import freezeframe_native  # noqa: PLC0415

    packets = 0
    started = time.process_time()
    for path in paths:
        packets += freezeframe_native.walk(Path(path).read_bytes())[0]
    print(json.dumps({"packets": packets, "cpu_inner": time.process_time() - started}))


def child_dissect(paths: list[str]) -> None:
    from freezeframe.dissect.files import dissect_files  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="ff-bench-native-") as out:
        started = time.process_time()
        result = dissect_files([Path(p) for p in paths], Path(out), node="bench", progress=False)
        inner = time.process_time() - started
    print(json.dumps({"packets": result.stats["packets"], "cpu_inner": inner, "tables": result.tables}))


def child_engine(paths: list[str]) -> None:
    """The dissection engine alone, as a job runs it on its segments: read them, every table as Arrow."""
    from freezeframe.dissect.job import SegmentSource, dissect_segments  # noqa: PLC0415
    from freezeframe.dissect.problems import SegmentRef  # noqa: PLC0415

    sources = [SegmentSource(SegmentRef(p, None, index, None), path=Path(p)) for index, p in enumerate(paths)]
    started = time.process_time()
    result = dissect_segments("bench", sources)
    inner = time.process_time() - started
    print(json.dumps({"packets": result.stats["packets"], "cpu_inner": inner,
                      "tables": {name: table.num_rows for name, table in result.tables.items()}}))


def measure(kind: str, paths: list[Path]) -> dict[str, Any]:
    me = [sys.executable, "-m", "tests.bench.bench_native"]
    names = [str(p) for p in paths]
    if kind == "tshark":
        tshark = shutil.which("tshark")
        assert tshark is not None
        cpu = rss = wall = 0.0
        for path in names:  # one process per segment, as a per-segment job would run it; CPU summed, RSS max
            fields = [arg for field in TSHARK_FIELDS for arg in ("-e", field)]
            found = _child_rusage([tshark, "-n", "-r", path, "-T", "fields", *fields])
            cpu, wall, rss = cpu + found["cpu"], wall + found["wall"], max(rss, found["rss_mb"])
        return {"cpu": cpu, "rss_mb": rss, "wall": wall}
    env = dict(os.environ)
    if kind in ("native", "python", "engine"):
        env["FREEZEFRAME_DISSECT_ENGINE"] = "native" if kind == "engine" else kind
        child = "engine" if kind == "engine" else "dissect"
        found = _child_rusage([*me, "--child", child, *names], env=env, stdout=subprocess.PIPE)
    else:
        found = _child_rusage([*me, "--child", "walk", *names], env=env, stdout=subprocess.PIPE)
    return {**found, **json.loads(found.pop("out").decode().strip().splitlines()[-1])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--packets", type=int, default=1_150_000, help="packets the traffic aims at")
    parser.add_argument("--min-packets", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--python-rounds", type=int, default=1)
    parser.add_argument("--rebuild", action="store_true", help="make a new capture even if one is cached")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        {"walk": child_walk, "dissect": child_dissect, "engine": child_engine}[args.child[0]](args.child[1:])
        return 0
    paths = capture(args.packets, args.rebuild)
    largest_mb = max(p.stat().st_size for p in paths) / 1e6
    total_mb = sum(p.stat().st_size for p in paths) / 1e6
    results: dict[str, list[dict[str, Any]]] = {"floor": [], "engine": [], "native": [], "tshark": [], "python": []}
    for round_ in range(args.rounds):
        for kind in ("floor", "engine", "native", "tshark", "python"):
            if kind == "python" and round_ >= args.python_rounds:
                continue
            results[kind].append(measure(kind, paths))
            print(f"round {round_ + 1} {kind}: {results[kind][-1]['cpu']:.2f} CPU-s", file=sys.stderr)
    packets = results["native"][0]["packets"]
    assert all(r["packets"] == packets for r in results["native"] + results["floor"] + results["python"]
               + results["engine"])
    median = {kind: {key: statistics.median(r[key] for r in runs) for key in ("cpu", "rss_mb", "wall")}
              for kind, runs in results.items() if runs}
    rate = {kind: packets / values["cpu"] for kind, values in median.items()}
    inner = statistics.median(r["cpu_inner"] for r in results["engine"])
    bound = 2 * largest_mb + 200
    print(f"capture: {packets:,} packets of real kernel traffic in {len(paths)} segments, {total_mb:.0f} MB "
          f"(largest {largest_mb:.0f} MB); medians of {args.rounds} rounds")
    print(f"{'':8} {'packets/CPU-s':>14} {'CPU s':>8} {'peak RSS MB':>12}")
    for kind in ("floor", "engine", "native", "tshark", "python"):
        if kind in median:
            print(f"{kind:8} {rate[kind]:>14,.0f} {median[kind]['cpu']:>8.2f} {median[kind]['rss_mb']:>12.0f}")
    print(f"native whole job (process incl. interpreter start, imports, Parquet): "
          f"{rate['native'] / rate['tshark']:.1f}x "
          f"tshark, {rate['native'] / rate['floor']:.2f} of the floor")
    print(f"engine (dissect_segments: read the segments, every table as Arrow; in-process CPU): "
          f"{packets / inner:,.0f} packets/CPU-s, {packets / inner / rate['tshark']:.1f}x tshark; the engine process "
          f"incl. interpreter start and imports: {rate['engine'] / rate['tshark']:.1f}x")
    if "python" in rate:
        print(f"python reference engine: {rate['python'] / rate['tshark']:.1f}x tshark; native is "
              f"{rate['native'] / rate['python']:.1f}x the reference")
    print(f"memory: native peak RSS {median['native']['rss_mb']:.0f} MB, bound 2 x largest segment + 200 MB = "
          f"{bound:.0f} MB: {'within' if median['native']['rss_mb'] <= bound else 'OVER'}")
    met = "met" if rate["native"] / rate["tshark"] >= 30 else "NOT met"
    print(f"target 30x tshark by CPU for the whole job: {met}")
    return 0 if packets >= args.min_packets else 1


if __name__ == "__main__":
    sys.exit(main())
