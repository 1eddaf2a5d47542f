"""Long fuzz run of the dissection input, run by `make bench-fuzz`.

The machinery of tests/unit/dissect/test_fuzz_capture.py (pcap and pcapng bases, bit flips, truncations, corrupted
length fields, spliced garbage, overwritten ranges; an alarm per input; the packets before the first mutated byte
must be read back unchanged), here with every table built for every input and the whole fixture among the bases,
for many more inputs and several seeds.

Prints inputs/s and packets/s, and the ratio to the reference measured in the same run: the same bases unmutated
through the same checks. Exits non-zero with the seed, mutation and base of the first failing input.

Usage: .venv/bin/python -m tests.bench.bench_fuzz [--inputs 100000] [--seeds 1,2,3]
"""

from __future__ import annotations

import argparse
import sys
import time

from tests.unit.dissect.test_fuzz_capture import bases, check, run


def reference_rate(rounds: int) -> tuple[float, float]:
    """(inputs/s, packets/s) of the unmutated bases through the same check."""
    clean = bases(whole=True)
    started = time.perf_counter()
    packets = 0
    for _ in range(rounds):
        for base in clean:
            packets += check(base, base.data, len(base.data)).packets
    elapsed = time.perf_counter() - started
    return rounds * len(clean) / elapsed, packets / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", type=int, default=100_000, help="mutated inputs per seed")
    parser.add_argument("--seeds", default="1,2,3", help="comma-separated RNG seeds")
    args = parser.parse_args()
    seeds = [int(seed) for seed in args.seeds.split(",")]
    ref_inputs, ref_packets = reference_rate(rounds=50)
    print(f"reference (unmutated bases): {ref_inputs:,.0f} inputs/s, {ref_packets:,.0f} packets/s")
    failed = False
    for seed in seeds:
        started = time.perf_counter()
        try:
            totals = run(args.inputs, seed, whole=True, tables_every=1)
        except AssertionError as exc:
            print(f"seed {seed}: FAILED: {exc}")
            failed = True
            continue
        elapsed = time.perf_counter() - started
        rate = totals["inputs"] / elapsed
        print(f"seed {seed}: {totals['inputs']:,} inputs in {elapsed:.1f} s = {rate:,.0f} inputs/s "
              f"({rate / ref_inputs:.2f}x the reference), {totals['packets'] / elapsed:,.0f} packets/s; "
              f"{totals['with_problems']:,} with counted problems, {totals['rejected']:,} rejected as not a capture, "
              "no exception, no hang")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
