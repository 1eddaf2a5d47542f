"""The compiled dissection core on >= 1 M packets of real kernel traffic, against tshark and a bare record walk.

``make bench-native`` builds (once, cached in ~/.cache/freezeframe/bench-native) a capture of real kernel traffic
in network namespaces (tests/bench/netns_mix.py: short HTTP/1.1 connections with and without keep-alive, DNS over
UDP and TCP with failures, TLS handshakes, some bulk, 1 % random drop on part of the path), rotated into segments
as the node agent does. Then, three rounds, each measurement in its own process (CPU = user + system time of that
process, peak RSS from its rusage):

- engine: ``engine.dissect_segments`` on the segments with the compiled core (reading them, every table as Arrow: what
  a dissection job does between fetching the segments and writing Parquet), in-process CPU and process CPU;
- native: the ``freezeframe dissect SEGMENT... --out DIR`` command itself, in its own process (the whole job:
  interpreter start, imports, reading and hashing the segments, every table, Parquet output, the views) with the
  compiled core (FREEZEFRAME_DISSECT_ENGINE=native);
- tshark: ``tshark -T fields`` with the fields equivalent to the tables (TCP expert analysis included);
- floor: a bare compiled walk over the records (freezeframe_native.walk);
- hash: the custody hash alone (SHA-256 of every segment, mapped, as the command computes it; a dissection job checks
  each segment against the manifest's sha256 the same way), to show its share: it costs per byte, where tshark's time
  goes per packet, so a capture with more bytes a packet leaves the command less room;
- python (first round only, unless --python-rounds): the reference engine, for context.

Prints packets per CPU-second, the ratio to tshark, the fraction of the floor and the peak RSS (with the bound
2 x largest segment + 200 MB); medians of the rounds. Exits non-zero if the capture is short of --min-packets.

The Python processes run from bytecode, as installed code does (pip writes it at install, a user's first run
writes __pycache__): before the rounds, a first run of each kind on the smallest segment writes the bytecode into a
cache beside the capture (PYTHONPYCACHEPREFIX), so that a machine with PYTHONDONTWRITEBYTECODE set does not make
every round compile every module again (0.15 CPU-s a run on this machine).

Usage: python -m tests.bench.bench_native [--packets 1150000] [--rounds 3] [--rebuild]
       python -m tests.bench.bench_native --seed 7 --weights dns_udp=40,tls=25   # another capture, another mix
       python -m tests.bench.bench_native --segments A.pcap B.pcap --min-packets 0  # any capture
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
PYCACHE = CACHE.parent / "pycache"
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


def capture(packets: int, rebuild: bool, seed: int | None = None,
            weights: dict[str, float] | None = None) -> list[Path]:
    """The cached capture (made once); with ``seed`` or ``weights``, another one of that mix, cached beside it."""
    directory = CACHE
    if seed is not None or weights:
        mix = ",".join(f"{kind}={weight:g}" for kind, weight in sorted((weights or {}).items()))
        directory = CACHE.parent / f"v1-seed{seed if seed is not None else 'default'}-{mix or 'default'}"
    manifest = directory / "capture.json"
    if manifest.exists() and not rebuild:
        return [Path(p) for p in json.loads(manifest.read_text())["segments"]]
    from tests.bench.netns_mix import build  # noqa: PLC0415 - needs root and namespaces

    if directory.exists():
        shutil.rmtree(directory)
    made = build(directory, packets=packets, **({"seed": seed} if seed is not None else {}), weights=weights)
    manifest.write_text(json.dumps({"segments": [str(p) for p in made.segments], "client": made.client,
                                    "seconds": made.seconds}))
    return made.segments


def parse_weights(text: str) -> dict[str, float]:
    """``kind=weight,...`` (the kinds of tests/bench/netns_mix.py's WEIGHTS, checked by its `mix`)."""
    from tests.bench.netns_mix import mix  # noqa: PLC0415 - the standard library only

    weights = {}
    for part in filter(None, text.split(",")):
        kind, _, value = part.partition("=")
        try:
            weights[kind.strip()] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not kind=weight: {part!r}") from None  # no '=' leaves value empty
    try:
        mix(weights)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return weights


def child_walk(paths: list[str]) -> None:
    import freezeframe_native  # noqa: PLC0415

    packets = 0
    started = time.process_time()
    for path in paths:
        packets += freezeframe_native.walk(Path(path).read_bytes())[0]
    print(json.dumps({"packets": packets, "cpu_inner": time.process_time() - started}))


def child_hash(paths: list[str]) -> None:
    """The custody hash alone, as the command takes it: SHA-256 of every segment, mapped (capture.mapped)."""
    from freezeframe.capture.mapped import MappedFile  # noqa: PLC0415

    started = time.process_time()
    for path in paths:
        with MappedFile(Path(path)) as mapped:
            mapped.sha256.hexdigest()
    print(json.dumps({"cpu_inner": time.process_time() - started}))


def child_engine(paths: list[str]) -> None:
    """The dissection engine alone, as a job runs it on its segments: read them, every table as Arrow. With the
    process settings a job runs with (the template's Globals, `config.PROCESS_DEFAULTS`), set before pyarrow and the
    core load."""
    from freezeframe.contracts.config import process_defaults  # noqa: PLC0415

    process_defaults()
    from freezeframe.dissect.engine import SegmentSource, dissect_segments  # noqa: PLC0415
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
    env = bytecode_env()
    if kind in ("native", "python"):  # the command, as a user types it
        env["FREEZEFRAME_DISSECT_ENGINE"] = kind
        with tempfile.TemporaryDirectory(prefix="ff-bench-native-") as out:
            found = _child_rusage([sys.executable, "-m", "freezeframe_local.cli", "dissect", *names, "--node", "bench",
                                   "--out", out, "--json"], env=env, stdout=subprocess.PIPE)
        summary = json.loads(found.pop("out").decode().strip().splitlines()[-1])
        return {**found, "packets": summary["stats"]["packets"], "tables": summary["tables"]}
    if kind == "engine":
        env["FREEZEFRAME_DISSECT_ENGINE"] = "native"
    found = _child_rusage([*me, "--child", "walk" if kind == "floor" else kind, *names], env=env,
                          stdout=subprocess.PIPE)
    return {**found, **json.loads(found.pop("out").decode().strip().splitlines()[-1])}


def bytecode_env() -> dict[str, str]:
    """The children's environment: bytecode from the cache `compile_sources` fills (see the module docstring)."""
    env = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    return env


def compile_sources(paths: list[Path]) -> None:
    """A first run of each kind of child on the smallest segment, which writes the bytecode of every module they
    import into `PYCACHE` (where alone Python looks for it once PYTHONPYCACHEPREFIX is set)."""
    smallest = [min(paths, key=lambda p: p.stat().st_size)]
    for kind in ("floor", "hash", "engine", "native", "python"):
        measure(kind, smallest)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--packets", type=int, default=1_150_000, help="packets the traffic aims at")
    parser.add_argument("--min-packets", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--python-rounds", type=int, default=1)
    parser.add_argument("--rebuild", action="store_true", help="make a new capture even if one is cached")
    parser.add_argument("--seed", type=int, help="make (and cache) a capture with another seed of the same mix")
    parser.add_argument("--weights", type=parse_weights, default={},
                        help="make (and cache) a capture of another mix: kind=weight,... over netns_mix.WEIGHTS, "
                             "e.g. dns_udp=40,tls=25,bulk=1")
    parser.add_argument("--segments", nargs="+", type=Path,
                        help="measure these capture files (pcap or pcapng, any mix) instead of making one")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        {"walk": child_walk, "engine": child_engine, "hash": child_hash}[args.child[0]](args.child[1:])
        return 0
    if args.segments and (args.seed is not None or args.weights or args.rebuild):
        parser.error("--segments measures the files given: --seed, --weights and --rebuild make a capture instead")
    if args.segments:
        missing = [str(p) for p in args.segments if not p.is_file()]
        if missing:
            parser.error(f"not a file: {', '.join(missing)}")
        paths = list(args.segments)
    else:
        paths = capture(args.packets, args.rebuild, args.seed, args.weights)
    compile_sources(paths)
    largest_mb = max(p.stat().st_size for p in paths) / 1e6
    total_mb = sum(p.stat().st_size for p in paths) / 1e6
    results: dict[str, list[dict[str, Any]]] = {"floor": [], "hash": [], "engine": [], "native": [], "tshark": [],
                                                "python": []}
    for round_ in range(args.rounds):
        for kind in ("floor", "hash", "engine", "native", "tshark", "python"):
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
    hashing = statistics.median(r["cpu_inner"] for r in results["hash"])
    bound = 2 * largest_mb + 200
    what = "the given capture" if args.segments else "real kernel traffic"
    print(f"capture: {packets:,} packets of {what} in {len(paths)} segments, {total_mb:.0f} MB "
          f"(largest {largest_mb:.0f} MB); medians of {args.rounds} rounds")
    print(f"{'':8} {'packets/CPU-s':>14} {'CPU s':>8} {'peak RSS MB':>12}")
    for kind in ("floor", "engine", "native", "tshark", "python"):
        if kind in median:
            print(f"{kind:8} {rate[kind]:>14,.0f} {median[kind]['cpu']:>8.2f} {median[kind]['rss_mb']:>12.0f}")
    print(f"native whole job (the freezeframe dissect command's process: interpreter start, imports, hashing, "
          f"every table, Parquet, views): {rate['native'] / rate['tshark']:.1f}x tshark, "
          f"{rate['native'] / rate['floor']:.2f} of the floor, {rate['native'] / 1e6:.2f} M packets/CPU-s "
          f"(the issue's absolute figure: about 1 M)")
    print(f"engine (dissect_segments: read the segments, every table as Arrow; in-process CPU): "
          f"{packets / inner:,.0f} packets/CPU-s, {packets / inner / rate['tshark']:.1f}x tshark; the engine process "
          f"incl. interpreter start and imports: {rate['engine'] / rate['tshark']:.1f}x")
    share = hashing / median["native"]["cpu"]
    print(f"custody hash (SHA-256 of the {total_mb:.0f} MB of inputs, {total_mb * 1e6 / packets:.0f} bytes a packet, "
          f"which the command and a dissection job must compute): {hashing:.2f} CPU-s in-process, "
          f"{total_mb / 1e3 / max(hashing, 1e-9):.2f} GB/s, {share:.0%} of the command's CPU; it grows with the bytes, "
          f"tshark's time with the packets")
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
