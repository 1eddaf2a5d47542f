"""Scale proof of the dissection fan-out (issue 17), run by `make bench-scale`.

1. Measures real chunks locally: a capture of real traffic (the cached kernel-traffic capture of the dissection
   bench when present, else the bench capture built from the bundled sample and TCP fixtures, see bench_dissect)
   is cut into time chunks by the planner (dissect.plan) and each chunk is dissected with its warm-up by
   ``dissect_segments`` in its own child process, as one Lambda task runs it: CPU seconds, peak RSS. The merge of
   the chunks (``merge_chunk_results``) is timed too. From these: seconds per packet, MB per packet, base MB,
   connections rows per packet, merge seconds per row -- the planner's CostModel.
2. Builds the plan for a synthetic incident -- 20 nodes x 1 hour x 100 k packets/s, 10 s segments of 1 M packets --
   with the measured cost model and the dissect function's limits (900 s, 3008 MB), and prints the chunks, the
   largest task's predicted time and memory against half of the limits, and the predicted wall time and cost in
   AWS under the Distributed Map's concurrency (template.yaml: MaxConcurrency 500). Target: wall time under 15
   minutes, every task under half its time and memory limits. A Lambda vCPU is taken as fast as the local core
   (``--lambda-speed`` scales that).

Usage: .venv/bin/python -m tests.bench.bench_scale [--capture PCAP] [--chunks 4] [--concurrency 500]
       [--lambda-speed 1.0]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import resource
import sys
import time
from pathlib import Path
from typing import Any

from freezeframe.config import cache_dir
from freezeframe.dissect.chunks import Chunk
from freezeframe.dissect.files import time_span
from freezeframe.dissect.job import EngineResult, SegmentSource, dissect_segments, merge_chunk_results
from freezeframe.dissect.plan import (
    SECOND_NS,
    CostModel,
    Limits,
    Plan,
    SegmentSpan,
    plan_incident,
    plan_node,
    predict,
)
from freezeframe.dissect.problems import SegmentRef
from freezeframe.models import ManifestEntry

NODES = 20
HOUR_S = 3600
RATE_PPS = 100_000
SEGMENT_S = 10
TARGET_WALL_S = 15 * 60


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(args: tuple[str, int, int, int, int | None, tuple[int, int]]) -> tuple[float, float, float, EngineResult]:
    path, low, high, index, warm, span = args
    baseline = _rss_mb()
    start = resource.getrusage(resource.RUSAGE_SELF)
    source = SegmentSource(SegmentRef(path, None, span[0], span[1]), path=Path(path))  # the file's own span
    result = dissect_segments("bench", [source], Chunk(index, low, high, warm))
    end = resource.getrusage(resource.RUSAGE_SELF)
    cpu = end.ru_utime + end.ru_stime - start.ru_utime - start.ru_stime
    return cpu, baseline, _rss_mb(), result


def _run_child(args: tuple[str, int, int, int, int | None, tuple[int, int]]
               ) -> tuple[float, float, float, EngineResult]:
    with multiprocessing.get_context("spawn").Pool(1) as pool:  # a fresh process per chunk: its own peak RSS
        return pool.apply(_child, (args,))


def capture_path(given: Path | None) -> Path:
    if given is not None:
        return given
    kernel = sorted((cache_dir() / "bench").glob("dissect-kernel-v*.pcap"))
    if kernel:
        return kernel[-1]
    from tests.bench.bench_dissect import CAPTURE_VERSION, build_capture

    path = cache_dir() / "bench" / f"dissect-v{CAPTURE_VERSION}-300000.pcap"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        build_capture(path, 300_000)
    return path


def measure(path: Path, chunks: int, warmup_s: float) -> tuple[CostModel, list[dict[str, Any]]]:
    span = time_span(path)
    if span is None:
        raise SystemExit(f"{path}: no packets")
    low, high = span[0], span[1] + 1
    size = path.stat().st_size
    chunk_ns = -(-(high - low) // chunks)
    planned = plan_node("bench", [SegmentSpan(str(path), low, high - 1, size)], chunk_ns=chunk_ns,
                        warmup_ns=int(warmup_s * SECOND_NS))
    measured = []
    results = []
    planned_chunks = []
    for chunk in planned:
        warm = None if chunk.open_start else chunk.warmup_start_ns
        cpu, baseline, peak, result = _run_child((str(path), 0 if chunk.open_start else chunk.start_ns,
                                                  (1 << 63) - 1 if chunk.open_end else chunk.end_ns, chunk.index,
                                                  warm, (low, high)))
        packets = result.stats.get("packets", 0)
        measured.append({"chunk": chunk.index, "packets": packets, "cpu_s": round(cpu, 2),
                         "baseline_mb": round(baseline, 1), "peak_rss_mb": round(peak, 1),
                         "k_packets_per_cpu_s": round(packets / cpu / 1000, 1) if cpu else None,
                         "warmup_s": warmup_s if warm is not None else 0})
        print(f"  chunk {chunk.index}: {packets} packets in {cpu:.2f} CPU s "
              f"({packets / cpu / 1000 if cpu else 0:.0f} k/s), peak RSS {peak:.0f} MB (baseline {baseline:.0f} MB)",
              flush=True)
        results.append(result)
        planned_chunks.append(Chunk(chunk.index, chunk.start_ns, chunk.end_ns, warm))
    started = time.process_time()
    merged = merge_chunk_results("bench", planned_chunks, results)
    merge_cpu = time.process_time() - started
    table_mb = sum(t.nbytes for r in results for t in r.tables.values()) / 2**20
    rows = sum(r.tables["connections"].num_rows for r in results)
    packets = sum(m["packets"] for m in measured)
    # Per packet read: a chunk reads its warm-up too. The planner's estimate of each task's reads, from the
    # measured total spread over the capture's span, is the denominator.
    replanned = plan_node("bench", [SegmentSpan(str(path), low, high - 1, size, packets)], chunk_ns=chunk_ns,
                          warmup_ns=int(warmup_s * SECOND_NS))
    reads = {c.index: max(c.packets, 1) for c in replanned}
    cpu_total = sum(m["cpu_s"] for m in measured)
    baseline = max(m["baseline_mb"] for m in measured)
    growth = max((m["peak_rss_mb"] - m["baseline_mb"]) / reads[m["chunk"]] for m in measured)
    cost = CostModel(s_per_packet=cpu_total / sum(reads.values()), mb_per_packet=growth, base_mb=baseline,
                     bytes_per_packet=max(size // max(packets, 1), 1),
                     s_per_merged_row=merge_cpu / max(rows, 1), rows_per_packet=rows / max(packets, 1),
                     # the chunks' tables and the merged copy side by side
                     mb_per_merged_row=2 * table_mb / max(rows, 1))
    print(f"  merge: {rows} chunk rows -> {merged.tables['connections'].num_rows} connections in {merge_cpu:.2f} "
          f"CPU s", flush=True)
    # The chunks' merged rows against one sequential pass over the capture: every column of every connection.
    sequential = dissect_segments("bench", [SegmentSource(SegmentRef(str(path), None, low, high), path=path)])
    expected = {row["conn_id"]: row for row in sequential.tables["connections"].to_pylist()}
    actual = {row["conn_id"]: row for row in merged.tables["connections"].to_pylist()}
    differing = sum(1 for conn_id, row in expected.items() if actual.get(conn_id) != row)
    differing += len(set(actual) - set(expected))
    print(f"  chunked vs sequential: {len(actual)} vs {len(expected)} connections, {differing} differing in any column",
          flush=True)
    return cost, measured


def synthetic_entries() -> list[ManifestEntry]:
    base = 1_767_225_600 * SECOND_NS
    per_segment = RATE_PPS * SEGMENT_S
    entries = []
    for node in range(NODES):
        for index in range(HOUR_S // SEGMENT_S):
            start = base + index * SEGMENT_S * SECOND_NS
            entries.append(ManifestEntry(f"raw/c/n{node:02d}/{index:05d}.pcap.zst", "v", "0" * 64,
                                         per_segment * 150, f"node-{node:02d}", start,
                                         start + SEGMENT_S * SECOND_NS - 1, index, per_segment, "COMPLIANCE",
                                         "2030-01-01T00:00:00Z", False))
    return entries


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--capture", type=Path)
    parser.add_argument("--chunks", type=int, default=4)
    parser.add_argument("--warmup-s", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=500)
    parser.add_argument("--lambda-speed", type=float, default=1.0, help="a Lambda vCPU's speed over the local core")
    parser.add_argument("--json", action="store_true")
    options = parser.parse_args()
    path = capture_path(options.capture)
    print(f"measuring real chunks of {path} ({path.stat().st_size / 2**20:.0f} MB) in {options.chunks} chunks, "
          f"{options.warmup_s:g} s warm-up", flush=True)
    measured_cost, chunks = measure(path, options.chunks, options.warmup_s)
    cost = CostModel(s_per_packet=measured_cost.s_per_packet / options.lambda_speed,
                     mb_per_packet=measured_cost.mb_per_packet, base_mb=measured_cost.base_mb,
                     fixed_s=CostModel().fixed_s, bytes_per_packet=measured_cost.bytes_per_packet,
                     s_per_merged_row=measured_cost.s_per_merged_row / options.lambda_speed,
                     rows_per_packet=measured_cost.rows_per_packet,
                     mb_per_merged_row=measured_cost.mb_per_merged_row)
    limits = Limits()
    plan = plan_incident(synthetic_entries(), warmup_ns=int(options.warmup_s * SECOND_NS), cost=cost, limits=limits)
    prediction = predict(plan, options.concurrency)
    longest = max(plan.chunks, key=lambda c: c.seconds)
    largest = max(plan.chunks, key=lambda c: c.memory_mb)
    per_node = len(plan.of(plan.nodes()[0]))
    ok_time = longest.seconds <= limits.timeout_s / 2
    ok_memory = largest.memory_mb <= limits.memory_mb / 2
    ok_wall = prediction.wall_s <= TARGET_WALL_S
    ok_merge = prediction.merge_s <= limits.timeout_s / 2 and prediction.merge_mb <= limits.memory_mb / 2
    figures = {"capture": str(path), "measured_chunks": chunks, "cost_model": cost.to_dict(),
               "incident": {"nodes": NODES, "hours": HOUR_S / 3600, "packets_per_s": RATE_PPS,
                            "packets": NODES * HOUR_S * RATE_PPS},
               "plan": {"chunks": len(plan.chunks), "chunks_per_node": per_node,
                        "chunk_s": (longest.end_ns - longest.start_ns) / SECOND_NS,
                        "max_task_s": round(longest.seconds, 1), "max_task_mb": round(largest.memory_mb, 1),
                        "time_limit_s": limits.timeout_s, "memory_limit_mb": limits.memory_mb},
               "prediction": prediction.to_dict(),
               "target": {"wall_s_max": TARGET_WALL_S, "wall_ok": ok_wall, "task_time_under_half": ok_time,
                          "task_memory_under_half": ok_memory, "merge_under_half": ok_merge}}
    if options.json:
        print(json.dumps(figures, indent=2))
    else:
        print(f"cost model (measured): {cost.s_per_packet * 1e6:.2f} us/packet "
              f"({1 / cost.s_per_packet / 1000:.0f} k packets per CPU-s), {cost.mb_per_packet * 1e6:.0f} MB per "
              f"M packets, base {cost.base_mb:.0f} MB, {cost.rows_per_packet:.4f} rows/packet, merge "
              f"{cost.s_per_merged_row * 1e6:.1f} us/row")
        print(f"incident: {NODES} nodes x 1 h x {RATE_PPS // 1000} k packets/s = "
              f"{NODES * HOUR_S * RATE_PPS / 1e9:.1f} G packets")
        print(f"plan: {len(plan.chunks)} chunks ({per_node} per node, {figures['plan']['chunk_s']:.0f} s each); "
              f"largest task {longest.seconds:.0f} s of {limits.timeout_s:.0f} s "
              f"({longest.seconds / limits.timeout_s:.0%}), {largest.memory_mb:.0f} MB of {limits.memory_mb:.0f} MB "
              f"({largest.memory_mb / limits.memory_mb:.0%})")
        print(f"AWS, concurrency {options.concurrency}: {prediction.waves} wave(s) of chunks up to "
              f"{prediction.max_task_s:.0f} s + merge {prediction.merge_s:.0f} s + finalize 30 s = wall "
              f"{prediction.wall_s:.0f} s ({prediction.wall_s / 60:.1f} min, target < 15 min: "
              f"{'met' if ok_wall else 'NOT met'}); {prediction.lambda_gb_s:.0f} GB-s, "
              f"${prediction.cost_usd:.2f} per incident")
        print(f"every chunk task under half its limits: time {'yes' if ok_time else 'NO'}, memory "
              f"{'yes' if ok_memory else 'NO'}")
        print(f"merge task (largest node): {prediction.merge_s:.0f} s, {prediction.merge_mb:.0f} MB; under half its "
              f"limits: {'yes' if ok_merge else 'NO'}")
        # The merge step holds a node's connections rows: how many there are decides whether it fits. The capture's
        # density is printed above; this line shows the same plan at sparser traffic, for comparison only.
        for density in (0.01, 0.002):
            sparse = predict(Plan(plan.chunks, dataclasses.replace(cost, rows_per_packet=density), limits),
                             options.concurrency)
            print(f"  at {density} rows/packet instead: merge {sparse.merge_s:.0f} s, {sparse.merge_mb:.0f} MB, "
                  f"wall {sparse.wall_s / 60:.1f} min")
    return 0 if ok_wall and ok_time and ok_memory and ok_merge else 1


if __name__ == "__main__":
    sys.exit(main())
