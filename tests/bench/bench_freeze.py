"""Freeze benchmark on the Object-Lock-enforcing local endpoint (LocalStack), run by `make bench-freeze`.

1. Freeze throughput: N segments (100, 1,000, 10,000) are uploaded under the key layout, then frozen. The reference
   is the endpoint's raw PutObjectRetention rate, measured in the same run on as many other versions with the same
   number of client threads. Prints segments/s and the ratio (target >= 80%).
2. Latency from webhook received to first version locked: an Alertmanager webhook is posted to the local gateway
   (Function URL event -> webhook handler -> async invoke -> freeze) and the first segment of the window is polled
   until its lock shows. Prints p50/p99 over the trials (target p99 < 2 s).

Usage: .venv/bin/python tests/bench/bench_freeze.py [--sizes 100,1000,10000] [--trials 50]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import secrets
import signal
import statistics
import sys
import tempfile
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import zstandard
from freezeframe_local.gateway import LocalGateway
from freezeframe_local.s3 import ensure_localstack, start_localstack, stop_process

from freezeframe.adapters import s3 as s3io
from freezeframe.capture.pcapio import PcapWriter
from freezeframe.contracts.config import Settings, env_overrides, reset_settings_cache
from freezeframe.contracts.keys import raw_segment_key
from freezeframe.contracts.models import FreezeRequest, LockSpec, Scope, SegmentRecord, from_ns, iso, to_ns
from freezeframe.freeze import segment_index
from freezeframe.freeze.freeze import LOCK_WORKERS, freeze

S = 1_000_000_000
REPO = Path(__file__).resolve().parents[2]


def segment_body() -> bytes:
    """A real (tiny) segment, so the dissection that follows each freeze succeeds instead of retrying."""
    buffer = io.BytesIO()
    PcapWriter(buffer, 1).write(time.time_ns(), secrets.token_bytes(60))
    return zstandard.ZstdCompressor().compress(buffer.getvalue())


def upload(config: Settings, s3: Any, node: str, start_ns: int, count: int) -> list[tuple[str, str]]:
    """Segments as the agent uploads them, indexed as the segment indexer does for each Kafka batch of 100."""
    def put(seq: int) -> SegmentRecord:
        body = segment_body()
        digest = hashlib.sha256(body).hexdigest()
        start, end = start_ns + seq * 10 * S, start_ns + (seq + 1) * 10 * S
        key = raw_segment_key(config.cluster, node, start, end, "pcap.zst")
        version = s3io.put_segment(s3, config.raw_bucket, key, body, digest, {"sha256": digest, "seq": str(seq)})
        return SegmentRecord(cluster=config.cluster, node=node, bucket=config.raw_bucket, key=key, version_id=version,
                             start_ns=start, end_ns=end, first_packet_ns=start, last_packet_ns=end - 1, packets=1,
                             bytes=64, stored_bytes=len(body), sha256=digest, compression="zstd", format="pcap",
                             link_type=1, snaplen=262144, kernel_drops=0, agent_drops=0, seq=seq, capture_filter="",
                             agent_version="bench")

    with ThreadPoolExecutor(max_workers=16) as pool:
        records = list(pool.map(put, range(count)))
    for first in range(0, len(records), 100):
        segment_index.write_batch(config, s3, records[first:first + 100])
    return [(r.key, r.version_id) for r in records]


def raw_retention_rate(s3: Any, bucket: str, versions: list[tuple[str, str]]) -> float:
    until = datetime.now(UTC) + timedelta(days=1)
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=LOCK_WORKERS) as pool:
        list(pool.map(lambda kv: s3.put_object_retention(
            Bucket=bucket, Key=kv[0], VersionId=kv[1], Retention={"Mode": "COMPLIANCE", "RetainUntilDate": until}),
            versions))
    return len(versions) / (time.perf_counter() - started)


def bench_throughput(base: Settings, s3: Any, sizes: list[int]) -> list[dict[str, Any]]:
    """Each size is measured `repeats` times, reference and freeze back to back, alternating which goes first so a
    drifting endpoint favours neither, and the medians are reported: on a noisy 2-core machine one pair of runs can
    swing by a third.

    Every repeat gets fresh buckets, and the reference versions a bucket of their own: LocalStack lists a prefix by
    scanning every version in the bucket (an empty prefix costs about 5 ms more per 1,000 versions stored), while
    S3 lists from its key index. In one shared bucket each later repeat would list slower because of the earlier
    repeats' objects, which measures the emulator, not the freeze."""
    rows = []
    for size in sizes:
        repeats = 5 if size <= 1000 else 3
        freeze_rates, raw_rates, ratios = [], [], []
        for repeat in range(repeats):
            tag = f"{size}-{repeat}-{uuid.uuid4().hex[:6]}"
            config = base.with_(raw_bucket=f"bench-raw-{tag}", evidence_bucket=f"bench-ev-{tag}")
            s3io.ensure_buckets(s3, config)
            reference_bucket = f"bench-ref-{tag}"
            s3io.ensure_buckets(s3, config.with_(raw_bucket=reference_bucket))
            # Segments span size*10 s, a day back so the window is in the past (no hold).
            t0 = to_ns(datetime.now(UTC) - timedelta(days=1))
            node = f"bench-{size}-{repeat}"
            reference = upload(config.with_(raw_bucket=reference_bucket), s3, f"{node}-ref", t0, size)
            upload(config, s3, node, t0, size)
            if repeat % 2 == 0:
                raw_rate = raw_retention_rate(s3, reference_bucket, reference)
            request = FreezeRequest(
                incident_id=f"bench-{size}-{uuid.uuid4().hex[:6]}", source="api", title="bench", severity="info",
                window_start=from_ns(t0), window_end=from_ns(t0 + size * 10 * S),
                scope=Scope(config.cluster, nodes=(node,)),
                lock=LockSpec("COMPLIANCE", datetime.now(UTC) + timedelta(days=1)))
            started = time.perf_counter()
            result = freeze(config, s3, request)
            seconds = time.perf_counter() - started
            assert result.segments == size, (result.segments, size)
            if repeat % 2 == 1:
                raw_rate = raw_retention_rate(s3, reference_bucket, reference)
            freeze_rates.append(size / seconds)
            raw_rates.append(raw_rate)
            ratios.append(size / seconds / raw_rate)
        rate, raw_rate, ratio = (statistics.median(v) for v in (freeze_rates, raw_rates, ratios))
        rows.append({"segments": size, "repeats": repeats, "freeze_per_s": round(rate, 1),
                     "raw_put_retention_per_s": round(raw_rate, 1), "ratio": round(ratio, 3),
                     "ratios": [round(r, 3) for r in ratios]})
        print(f"freeze {size:>6} segments: {rate:8.1f} segments/s | raw PutObjectRetention {raw_rate:8.1f}/s | "
              f"ratio {ratio:.2f} (median of {repeats}: {', '.join(f'{r:.2f}' for r in ratios)}; target >= 0.80)",
              flush=True)
    return rows


def bench_latency(config: Settings, s3: Any, trials: int, token: str, gateway_url: str) -> dict[str, Any]:
    latencies: list[float] = []
    accepted_s: list[float] = []
    for trial in range(trials):
        node = f"lat-{trial}"
        now = datetime.now(UTC)
        t0 = to_ns(now - timedelta(minutes=2))
        [(first_key, first_version), *_] = upload(config, s3, node, t0, 10)
        alert = {"version": "4", "status": "firing", "truncatedAlerts": 0, "groupKey": "bench", "alerts": [{
            "status": "firing", "labels": {"alertname": "Bench", "severity": "critical", "cluster": config.cluster,
                                           "node": node},
            "annotations": {}, "startsAt": iso(now - timedelta(minutes=1)), "endsAt": "0001-01-01T00:00:00Z",
            "fingerprint": uuid.uuid4().hex[:16]}]}
        request = urllib.request.Request(f"{gateway_url}/v1/alerts/alertmanager", data=json.dumps(alert).encode(),
                                         method="POST", headers={"Authorization": f"Bearer {token}"})
        started = time.perf_counter()
        with urllib.request.urlopen(request, timeout=30) as reply:  # noqa: S310 - loopback gateway
            assert reply.status == 202
        accepted_s.append(time.perf_counter() - started)
        while True:
            head = s3.head_object(Bucket=config.raw_bucket, Key=first_key, VersionId=first_version)
            if head.get("ObjectLockMode"):
                break
            if time.perf_counter() - started > 30:
                raise TimeoutError("no lock within 30 s")
            time.sleep(0.005)
        latencies.append(time.perf_counter() - started)
    print("202 after ms:", [round(x * 1000) for x in accepted_s], flush=True)
    print("locked after ms:", [round(x * 1000) for x in latencies], flush=True)
    latencies.sort()
    p50 = statistics.median(latencies)
    p99 = latencies[min(len(latencies) - 1, int(round(0.99 * (len(latencies) - 1))))]
    print(f"webhook -> first version locked over {trials} trials: p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms "
          f"(target p99 < 2000 ms)", flush=True)
    return {"trials": trials, "p50_ms": round(p50 * 1000, 1), "p99_ms": round(p99 * 1000, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--trials", type=int, default=50)
    args = parser.parse_args(argv)
    # A SIGTERM (Ctrl-C's sibling from a job runner) unwinds through the finally below, so LocalStack stops too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workdir = Path(tempfile.mkdtemp(prefix="ff-bench-freeze-"))
    ensure_localstack()
    endpoint = start_localstack(workdir / "s3")
    token = secrets.token_urlsafe(16)
    config = Settings(cluster="bench", s3_endpoint=endpoint.url, raw_bucket="bench-raw", evidence_bucket="bench-ev",
                      state_dir=workdir / "state", functions_dir=REPO / "functions", alertmanager_token_env=token,
                      lookback_s=120, lookahead_s=0, hold_grace_s=0, lock_retain_days=1)
    gateway = LocalGateway(config)
    config = config.with_(lambda_endpoint=gateway.url)
    gateway.settings = config
    import os

    os.environ.update(env_overrides(config))
    os.environ.update(POWERTOOLS_TRACE_DISABLED="true", POWERTOOLS_METRICS_DISABLED="true",
                      POWERTOOLS_LOG_LEVEL="ERROR", POWERTOOLS_SERVICE_NAME="freezeframe",
                      POWERTOOLS_METRICS_NAMESPACE="freezeframe")
    reset_settings_cache()
    gateway.start()
    try:
        s3 = s3io.client(config)
        s3io.ensure_buckets(s3, config)
        rows = bench_throughput(config, s3, [int(n) for n in args.sizes.split(",")])
        latency = bench_latency(config, s3, args.trials, token, gateway.url)
        retried = [(i.function, i.attempts, i.error) for i in gateway.invocations if i.attempts > 1]
        print("retried invocations:", retried, flush=True)
        print(json.dumps({"throughput": rows, "latency": latency}))
    finally:
        gateway.stop()
        stop_process(int(endpoint.pid or 0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
