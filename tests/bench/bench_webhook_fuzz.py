"""Long fuzz run of the webhook function's four routes, run by `make bench-webhook-fuzz`.

The machinery of tests/fixtures/webhook_fuzz.py (the real handler of functions/webhook/app.py, the local gateway's
event shape, an in-memory S3; hostile structured, byte-level and whole-body inputs with the route's credentials)
for 100,000 inputs per route. For every input: no 5xx, an answer within the time limit, and nothing written (no
object, no freeze started) for any 4xx.

Prints, per route, the inputs, the status counts, the 5xx count, the time and the slowest input. Exits non-zero
with the first failing inputs.

Usage: .venv/bin/python -m tests.bench.bench_webhook_fuzz [--inputs 100000] [--seed 1] [--routes alertmanager,...]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from tests.fixtures.webhook_fuzz import HANG_S, ROUTES, WebhookTarget, run_route


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", type=int, default=100_000, help="inputs per route")
    parser.add_argument("--seed", type=int, default=1, help="RNG seed")
    parser.add_argument("--routes", default=",".join(ROUTES), help=f"comma-separated, of {', '.join(ROUTES)}")
    args = parser.parse_args()
    routes = [route.strip() for route in args.routes.split(",") if route.strip()]
    failed = False
    started = time.perf_counter()
    total = 0
    for route in routes:
        # A fresh store per route, so one route's accepted incidents do not make another's inputs duplicates.
        with tempfile.TemporaryDirectory(prefix="ff-webhook-fuzz-") as tmp, WebhookTarget(Path(tmp)) as target:
            stats = run_route(target, route, args.inputs, args.seed)
        total += stats.inputs
        print(stats.summary(), flush=True)
        for failure in stats.failures[:10]:
            print(f"    {failure}")
        failed |= bool(stats.failures)
    elapsed = time.perf_counter() - started
    print(f"all routes: {total:,} inputs in {elapsed:.1f} s ({total / elapsed:,.0f} inputs/s), seed {args.seed}, "
          f"time limit {HANG_S:.0f} s per input: {'FAILED' if failed else 'no 5xx, no hang, nothing written on a 4xx'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
