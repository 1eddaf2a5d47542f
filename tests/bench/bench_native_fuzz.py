"""The compiled dissection core against the Python reference on >= 100,000 fuzzed captures (``make bench-native-fuzz``).

Inputs come from tests/fixtures/native_compare.fuzz_inputs (the bases and mutations of
tests/unit/dissect/test_fuzz_capture.py: bit flips, truncations, hostile length fields, spliced garbage, overwritten
ranges, sometimes two of them), each dissected by both engines; every table, dissect_errors row and counter must be
equal. Work is split over processes by seed. Then, when a nightly toolchain with cargo-fuzz is installed, the
coverage-guided fuzzers of the Rust side (layers/native/fuzz: the dissection path, and export-pcap's merge) run
for ``--cargo-fuzz-seconds`` each.

Exits non-zero on the first difference (printing the seed and input), or when a panic reaches Python.

Usage: python -m tests.bench.bench_native_fuzz [--inputs 100000] [--processes 2] [--cargo-fuzz-seconds 120]
       [--first-seed 1]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

CRATE = Path(__file__).resolve().parents[2] / "layers" / "native"


def run_seed(seed: int, count: int) -> tuple[int, list[str]]:
    logging.disable(logging.CRITICAL)
    from tests.fixtures.native_compare import differences, fuzz_inputs  # noqa: PLC0415

    failures = []
    for label, data in fuzz_inputs(seed, count, whole=seed % 2 == 0):
        found = differences([data])
        if found:
            failures.append(f"{label}: {found[:3]}")
            if len(failures) >= 5:
                break
    return count, failures


def cargo_fuzz(seconds: int) -> str:
    if shutil.which("cargo") is None:
        return "cargo-fuzz: skipped (no cargo)"
    probe = subprocess.run(["cargo", "+nightly", "fuzz", "--version"], capture_output=True, text=True, cwd=CRATE)
    if probe.returncode:
        return ("cargo-fuzz: skipped (needs a nightly toolchain and cargo-fuzz: rustup toolchain install nightly; "
                "cargo install cargo-fuzz)")
    # Build output outside the repository (sam build copies layers/native whole).
    env = {**os.environ, "CARGO_TARGET_DIR": str(Path.home() / ".cache" / "freezeframe" / "cargo-fuzz-target")}
    seeds = Path(__file__).resolve().parents[1] / "fixtures" / "sample.pcap"
    report = []
    # dissect: the whole per-packet path; merge: export-pcap's k-way merge (src/merge.rs)
    for target, corpus_name in (("dissect", "cargo-fuzz-corpus"), ("merge", "cargo-fuzz-corpus-merge")):
        corpus = Path.home() / ".cache" / "freezeframe" / corpus_name
        corpus.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["cargo", "+nightly", "fuzz", "run", target, str(corpus), str(seeds.parent), "--",
                               f"-max_total_time={seconds}", "-max_len=65536", f"-artifact_prefix={corpus}/"],
                              capture_output=True, text=True, cwd=CRATE, env=env)
        tail = (done.stderr or "").strip().splitlines()[-3:]
        if done.returncode:
            raise SystemExit(f"cargo-fuzz {target} found a crash: {' | '.join(tail)}")
        report.append(f"cargo-fuzz {target}: {seconds} s, no crash ({' | '.join(tail)})")
    return "\n".join(report)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", type=int, default=100_000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=20, help="seeds the inputs are spread over")
    parser.add_argument("--first-seed", type=int, default=1,
                        help="the first of the seeds (another first seed, other inputs than an earlier run's)")
    parser.add_argument("--cargo-fuzz-seconds", type=int, default=120)
    args = parser.parse_args()
    per_seed = -(-args.inputs // args.seeds)
    started = time.perf_counter()
    total = 0
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    with ProcessPoolExecutor(max_workers=args.processes) as pool:
        for count, failures in pool.map(run_seed, seeds, [per_seed] * args.seeds):
            total += count
            print(f"{total:,} inputs compared, {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
            if failures:
                print("\n".join(failures), file=sys.stderr)
                return 1
    elapsed = time.perf_counter() - started
    print(f"{total:,} fuzzed captures: the compiled core equals the reference on every one "
          f"({total / elapsed:,.0f} inputs/s over {args.processes} processes)")
    if args.cargo_fuzz_seconds:
        print(cargo_fuzz(args.cargo_fuzz_seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
