"""Custody costs on the real local stack (LocalStack S3 + KMS, the openssl RFC 3161 authority): a freeze with its
sealed manifest, ledger entries (write, sign, time-stamp, append), a pinned read, verify, a bundle and its offline
verification.

    make bench-custody        (or: .venv/bin/python -m tests.bench.bench_custody)
"""

from __future__ import annotations

import statistics
import tempfile
import time
import uuid
from pathlib import Path

from freezeframe_local.stack import down, up

from freezeframe.adapters import s3 as s3io
from freezeframe.contracts.config import Settings
from freezeframe.custody.bundle import verify_bundle, write_bundle
from freezeframe.custody.ledger import record_access
from freezeframe.custody.pinned import online_trust, read_pinned
from freezeframe.custody.verify import verify_incident
from freezeframe.freeze.freeze import freeze
from freezeframe_agent.main import run_replay
from tests.fixtures.buses import MemoryBus
from tests.integration.test_verify import request_for

REPO = Path(__file__).resolve().parents[2]
ENTRIES = 20


def main() -> None:
    state = Path(tempfile.mkdtemp(prefix="freezeframe-bench-custody-"))
    stack_config = Settings(state_dir=state, functions_dir=REPO / "functions", lock_retain_days=1)
    stack = up(stack_config)
    try:
        suffix = uuid.uuid4().hex[:8]
        config = Settings(cluster=f"b-{suffix}", node_name="n1", s3_endpoint=stack.s3_endpoint,
                          raw_bucket=f"r-{suffix}", evidence_bucket=f"e-{suffix}", lock_retain_days=1,
                          signing_key_id=stack.signing_key_id, kms_endpoint=stack.s3_endpoint, tsa_url=stack.tsa_url,
                          tsa_ca_file=Path(stack.tsa_ca_file), spool_dir=state / "spool")
        s3 = s3io.client(config)
        s3io.ensure_buckets(s3, config)
        records = run_replay(config, REPO / "tests/fixtures/sample.pcap", speedup=1000.0, s3=s3, bus=MemoryBus())
        started = time.perf_counter()
        freeze(config, s3, request_for(config, records, "bench-1"))
        print(f"freeze of {len(records)} segments, manifest signed and time-stamped: "
              f"{time.perf_counter() - started:.3f} s")
        times = []
        for index in range(ENTRIES):
            started = time.perf_counter()
            record_access(config, s3, "bench-1", "query", {"i": index}, [b"x"])
            times.append(time.perf_counter() - started)
        print(f"ledger entry (write, sign, time-stamp, append) x{ENTRIES}: median "
              f"{statistics.median(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms")
        started = time.perf_counter()
        read_pinned(config, s3, "bench-1")
        print(f"pinned read over {ENTRIES + 1} links: {(time.perf_counter() - started) * 1000:.0f} ms")
        started = time.perf_counter()
        report = verify_incident(config, s3, "bench-1")
        print(f"verify: ok={report.ok}, {len(report.checks)} checks, {time.perf_counter() - started:.3f} s")
        out = state / "bundle"
        started = time.perf_counter()
        result = write_bundle(config, s3, "bench-1", out, online_trust(config), segments=True)
        print(f"bundle with segments: {result.files} files, {time.perf_counter() - started:.3f} s")
        started = time.perf_counter()
        _, checks = verify_bundle(out)
        print(f"offline bundle verify: ok={all(c.ok for c in checks)}, {len(checks)} checks, "
              f"{time.perf_counter() - started:.3f} s")
    finally:
        down(stack_config)


if __name__ == "__main__":
    main()
