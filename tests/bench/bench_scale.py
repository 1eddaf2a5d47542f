"""Scale proof of the dissection fan-out (issue 17), run by `make bench-scale`.

1. Measures real chunks locally: a capture of real traffic (the cached kernel-traffic capture of the dissection
   bench when present, else the bench capture built from the bundled sample and TCP fixtures, see bench_dissect)
   is cut into time chunks by the planner (dissect.plan) and each chunk is dissected with its warm-up by
   ``dissect_segments`` in its own child process and split into body and edge rows with both written as Parquet,
   as one Lambda task runs it: CPU seconds, peak RSS. The merge step runs as ``dissect.fanout.merge_node`` runs it,
   in its own child process: the chunk parts' endpoint columns read from Parquet and matched against the edges'
   endpoint pairs, the matching rows moved, the edge rows merged (``merge_tables``); CPU seconds and peak RSS. The
   result is compared with the full merge of every row (the merge before) and with one sequential pass. From these:
   seconds and MB per packet, base MB, rows per packet, edge rows (those open across an edge per packet/s of the
   node, and those that grow with a chunk's packets), merge seconds and MB per edge row, scan seconds per
   chunk-part row -- the planner's CostModel.
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
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from freezeframe.contracts.config import cache_dir
from freezeframe.contracts.models import ManifestEntry
from freezeframe.contracts.schemas import TABLES
from freezeframe.dissect.chunks import (
    CHUNK_TABLES,
    Chunk,
    edge_pairs,
    merge_ids,
    merge_tables,
    pair_keys,
    pull_pairs,
    shared_udp_pairs,
    sort_rows,
    split_chunk,
    udp_pairs,
    warm_rows_of,
    with_rows,
)
from freezeframe.dissect.fanout import PAIR_COLUMNS
from freezeframe.dissect.files import time_span
from freezeframe.dissect.job import EngineResult, SegmentSource, dissect_segments, parquet_bytes
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

NODES = 20
HOUR_S = 3600
RATE_PPS = 100_000
SEGMENT_S = 10
TARGET_WALL_S = 15 * 60


def _rss_mb() -> float:
    """This process's peak resident memory. VmHWM, not ru_maxrss: Linux keeps ru_maxrss across execve, so a spawned
    child would start from its parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


ChildArgs = tuple[str, int, int, int, int | None, tuple[int, int], bool, bool]


def _child(args: ChildArgs) -> tuple[float, float, float, EngineResult]:
    """One chunk task: dissect with the warm-up, split into body and edge, both written as Parquet (in memory)."""
    path, low, high, index, warm, span, first, last = args
    baseline = _rss_mb()
    start = _cpu()
    source = SegmentSource(SegmentRef(path, None, span[0], span[1]), path=Path(path))  # the file's own span
    chunk = Chunk(index, low, high, warm)
    result = dissect_segments("bench", [source], chunk)
    body, edge, warm = split_chunk(result.tables, chunk, first, last)
    udp_pairs(result.tables["connections"], chunk, first, last, 0)
    for table in [*body.values(), *edge.values(), *warm.values()]:
        parquet_bytes(table)
    return _cpu() - start, baseline, _rss_mb(), result


MergeArgs = tuple[list[Chunk], str, list[tuple[pa.Array, pa.Array]], int]
MergeOut = tuple[dict[str, float], float, float, dict[str, int], float, dict[str, Any]]


def _load(path: Path) -> pa.Table:
    return pq.read_table(path)


def _vm(field: str) -> float:
    """A /proc/self/status memory figure in MB (VmRSS, VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _reset_peak() -> float:
    """Resets this process's VmHWM to its current RSS (Linux: /proc/self/clear_refs); returns that RSS in MB."""
    Path("/proc/self/clear_refs").write_text("5")
    return _vm("VmRSS")


def _extras(path: Path) -> dict[str, tuple[int, int, int, int]]:
    return {key: (value[0], value[1], value[2], value[3]) for key, value in json.loads(path.read_text()).items()}


def _merge_child(args: MergeArgs) -> MergeOut:
    """The merge step (dissect.fanout.merge_node) on real chunks whose tables are files in ``folder`` (as the
    chunk tasks wrote them), in a fresh process for its own peak RSS: edge rows and UDP pairs read; the chunk parts'
    endpoint columns read and matched (scan); the parts holding rows of an edge's pair read whole and those rows
    taken (read); the warm-up rows of merged connections read; every edge row merged (merge)."""
    chunks, folder, udp, warmup_ns = args
    root = Path(folder)
    baseline = _rss_mb()
    cpu = {"scan": 0.0, "read": 0.0, "merge": 0.0}
    start = _cpu()
    edges = [{name: _load(root / f"{c.index}-edge-{name}.parquet") for name in CHUNK_TABLES} for c in chunks]
    extras = [_extras(root / f"{c.index}-extras-edge.json") for c in chunks]
    pairs = edge_pairs(edges, shared_udp_pairs(chunks, udp, warmup_ns))
    cpu["scan"] += _cpu() - start  # per chunk read: grows with the node's rows like the scan
    counts = {"pulled": 0, "read_rows": 0, "scanned_rows": 0, "warm_kept": 0, "largest_part_rows": 0}
    part_mb = 0.0
    for number, chunk in enumerate(chunks):
        start = _cpu()
        keys = pq.read_table(root / f"{chunk.index}-body-connections.parquet", columns=list(PAIR_COLUMNS))
        counts["scanned_rows"] += keys.num_rows
        hit = bool(keys.num_rows) and bool(pc.any(pc.is_in(pair_keys(keys), value_set=pairs)).as_py())
        cpu["scan"] += _cpu() - start
        if not hit:
            continue
        start = _cpu()
        before = _reset_peak()
        body = {name: _load(root / f"{chunk.index}-body-{name}.parquet") for name in CHUNK_TABLES}
        counts["largest_part_rows"] = max(counts["largest_part_rows"], body["connections"].num_rows)
        counts["read_rows"] += body["connections"].num_rows
        _left, moved = pull_pairs(body, pairs)
        counts["pulled"] += moved["connections"].num_rows
        extras[number].update(_extras(root / f"{chunk.index}-extras-body.json"))
        edges[number] = {name: with_rows(edges[number][name], moved[name]) for name in CHUNK_TABLES}
        cpu["read"] += _cpu() - start
        part_mb = max(part_mb, _vm("VmHWM") - before)  # one part read whole, its rows to move taken
        del body, _left
    start = _cpu()
    ids = merge_ids(edges)
    for number, chunk in enumerate(chunks):
        warm = {name: _load(root / f"{chunk.index}-warm-{name}.parquet") for name in CHUNK_TABLES
                if name != "connections"}
        kept = warm_rows_of(warm, ids)
        counts["warm_kept"] += sum(t.num_rows for t in kept.values())
        edges[number] = {name: with_rows(edges[number][name], kept[name]) if name in kept else edges[number][name]
                         for name in CHUNK_TABLES}
    cpu["scan"] += _cpu() - start
    counts["edge_rows"] = sum(e["connections"].num_rows for e in edges)
    edge_tables_mb = sum(t.nbytes for e in edges for t in e.values()) / 2**20
    merge_tables("bench", chunks[:1], edges[:1], None, extras[:1])  # one-time costs (lazy imports): not per row
    start = _cpu()
    before = _reset_peak()
    merged = merge_tables("bench", chunks, edges, None, extras)
    cpu["merge"] += _cpu() - start
    # What the edge rows take: their tables (held through the merge) and the merge's own peak growth.
    counts["edge_mb_x1000"] = round((edge_tables_mb + _vm("VmHWM") - before) * 1000)
    return cpu, baseline, _rss_mb(), counts, part_mb, {name: table for name, table in merged.tables.items()}


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


def _in_child(function: Any, args: Any) -> Any:
    with multiprocessing.get_context("spawn").Pool(1) as pool:  # a fresh process: its own peak RSS
        return pool.apply(function, (args,))


def _kinds(edge: pa.Table) -> dict[str, int]:
    """An edge's connections rows by why they are there (dissect.chunks.edge_mask)."""
    kinds = {"tcp_open_at_start": 0, "lone_syn": 0, "other": 0}
    for row in edge.select(["proto", "completeness"]).to_pylist():
        completeness = row["completeness"] or 0
        if row["proto"] == "tcp":
            kinds["lone_syn" if completeness == 1 else "tcp_open_at_start"] += 1
        else:
            kinds["other"] += 1
    return kinds


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
        cpu, baseline, peak, result = _in_child(_child, (str(path), 0 if chunk.open_start else chunk.start_ns,
                                                         (1 << 63) - 1 if chunk.open_end else chunk.end_ns,
                                                         chunk.index, warm, (low, high), chunk.open_start,
                                                         chunk.open_end))
        packets = result.stats.get("packets", 0)
        measured.append({"chunk": chunk.index, "packets": packets, "cpu_s": round(cpu, 2),
                         "baseline_mb": round(baseline, 1), "peak_rss_mb": round(peak, 1),
                         "k_packets_per_cpu_s": round(packets / cpu / 1000, 1) if cpu else None,
                         "warmup_s": warmup_s if warm is not None else 0})
        print(f"  chunk {chunk.index}: {packets} packets in {cpu:.2f} CPU s "
              f"({packets / cpu / 1000 if cpu else 0:.0f} k/s, split and parts written included), peak RSS "
              f"{peak:.0f} MB (baseline {baseline:.0f} MB)", flush=True)
        results.append(result)
        planned_chunks.append(Chunk(chunk.index, chunk.start_ns, chunk.end_ns, warm))
    rows = sum(r.tables["connections"].num_rows for r in results)
    packets = sum(m["packets"] for m in measured)
    capture_pps = packets / ((high - low) / SECOND_NS)
    # The chunk tasks' split, as each task made it, written as the tasks write it (here to files).
    folder = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    bodies, edges, crossing, other_edge, udp = [], [], [], 0, []
    warmup_ns = int(warmup_s * SECOND_NS)
    for chunk, result, m in zip(planned, results, measured, strict=True):
        split = Chunk(chunk.index, chunk.start_ns, chunk.end_ns)
        body, edge, warm = split_chunk(result.tables, split, chunk.open_start, chunk.open_end)
        bodies.append(body)
        edges.append(edge)
        for kind, tables in (("body", body), ("edge", edge), ("warm", warm)):
            for name, table in tables.items():
                (folder / f"{chunk.index}-{kind}-{name}.parquet").write_bytes(parquet_bytes(table))
        at_edge = set(edge["connections"].column("conn_id").to_pylist())
        for kind, wanted in (("edge", True), ("body", False)):
            (folder / f"{chunk.index}-extras-{kind}.json").write_text(json.dumps(
                {k: v for k, v in result.extras.items() if (k in at_edge) == wanted}))
        udp.append(udp_pairs(result.tables["connections"], split, chunk.open_start, chunk.open_end, warmup_ns))
        kinds = _kinds(edge["connections"])
        m.update({"rows": result.tables["connections"].num_rows, "edge_rows": edge["connections"].num_rows,
                  "edge_kinds": kinds, "udp_pairs_near_an_edge": len(pc.unique(pa.concat_arrays(list(udp[-1])))),
                  "warm_app_rows": sum(t.num_rows for t in warm.values())})
        if not chunk.open_start:
            crossing.append(kinds["tcp_open_at_start"])
        other_edge += edge["connections"].num_rows - (kinds["tcp_open_at_start"] if not chunk.open_start else 0)
        share = edge["connections"].num_rows / max(m["rows"], 1)
        print(f"  chunk {chunk.index}: {m['rows']} connections rows, {edge['connections'].num_rows} at an edge "
              f"({share:.1%}: {', '.join(f'{k} {v}' for k, v in kinds.items())}); UDP pairs near an edge "
              f"{m['udp_pairs_near_an_edge']} and warm-up app rows {m['warm_app_rows']} (read, not merged)",
              flush=True)
    # The full merge (the fan-out's merge before): every row of every chunk. The reference for the edge merge.
    started = time.process_time()
    full = merge_tables("bench", planned_chunks, [r.tables for r in results], None, [r.extras for r in results])
    full_cpu = time.process_time() - started
    cpu, merge_base, merge_peak, counts, part_mb, merged = _in_child(
        _merge_child, (planned_chunks, str(folder), udp, warmup_ns))
    edge_rows = counts["edge_rows"]
    print(f"  full merge (before): {rows} chunk rows in {full_cpu:.2f} CPU s ({full_cpu / rows * 1e6:.1f} us/row)",
          flush=True)
    print(f"  edge merge: {edge_rows} edge rows ({edge_rows / rows:.1%}; {counts['pulled']} of them moved from chunk "
          f"parts, plus {counts['warm_kept']} warm-up app rows) merged in {cpu['merge']:.2f} CPU s "
          f"({cpu['merge'] / max(edge_rows, 1) * 1e6:.0f} us/edge row); chunk parts scanned in {cpu['scan']:.2f} "
          f"CPU s ({cpu['scan'] / max(counts['scanned_rows'], 1) * 1e6:.2f} us/row); "
          f"{counts['read_rows']} rows of parts holding rows to move "
          f"({counts['read_rows'] / max(counts['scanned_rows'], 1):.0%}) read whole in {cpu['read']:.2f} CPU s "
          f"({cpu['read'] / max(counts['read_rows'], 1) * 1e6:.2f} us/row); peak RSS {merge_peak:.0f} MB "
          f"(baseline {merge_base:.0f} MB)", flush=True)
    # Equality: the edge merge plus what the merge left in the chunk parts, against the full merge and one
    # sequential pass.
    pairs = edge_pairs(edges, shared_udp_pairs(planned_chunks, udp, warmup_ns))
    left = [pull_pairs(body, pairs)[0] for body in bodies]  # the chunk parts without the node's moved rows
    combined = {}
    for name in CHUNK_TABLES:
        table = merged[name].cast(TABLES[name])
        for body in left:
            table = with_rows(table, body[name])
        combined[name] = sort_rows(name, table)
    shutil.rmtree(folder)
    same_as_full = all(combined[name].to_pylist() == sort_rows(name, full.tables[name].cast(TABLES[name])).to_pylist()
                       for name in CHUNK_TABLES)
    sequential = dissect_segments("bench", [SegmentSource(SegmentRef(str(path), None, low, high), path=path)])
    expected = {row["conn_id"]: row for row in sequential.tables["connections"].to_pylist()}
    actual = {row["conn_id"]: row for row in combined["connections"].to_pylist()}
    differing = sum(1 for conn_id, row in expected.items() if actual.get(conn_id) != row)
    differing += len(set(actual) - set(expected))
    print(f"  edge merge vs full merge: {'equal in every table' if same_as_full else 'DIFFERENT'}; vs sequential: "
          f"{len(actual)} vs {len(expected)} connections, {differing} differing in any column", flush=True)
    # Per packet read: a chunk reads its warm-up too. The planner's estimate of each task's reads, from the
    # measured total spread over the capture's span, is the denominator.
    replanned = plan_node("bench", [SegmentSpan(str(path), low, high - 1, size, packets)], chunk_ns=chunk_ns,
                          warmup_ns=int(warmup_s * SECOND_NS))
    reads = {c.index: max(c.packets, 1) for c in replanned}
    cpu_total = sum(m["cpu_s"] for m in measured)
    baseline = max(m["baseline_mb"] for m in measured)
    growth = max((m["peak_rss_mb"] - m["baseline_mb"]) / reads[m["chunk"]] for m in measured)
    # The merge's memory: one part at a time (its measured peak while read whole) plus what the edge rows take.
    part_row_mb = part_mb / max(counts["largest_part_rows"], 1)
    edge_mb = counts["edge_mb_x1000"] / 1000
    cost = CostModel(s_per_packet=cpu_total / sum(reads.values()), mb_per_packet=growth, base_mb=baseline,
                     bytes_per_packet=max(size // max(packets, 1), 1), rows_per_packet=rows / max(packets, 1),
                     # the rows the merge holds (edge rows and the rows of their pairs moved from the parts), per
                     # edge, per packet/s of the capture
                     crossing_rows_per_pps=(edge_rows - other_edge) / max(len(crossing), 1) / capture_pps,
                     edge_rows_per_packet=other_edge / max(packets, 1),
                     s_per_edge_row=cpu["merge"] / max(edge_rows, 1), mb_per_edge_row=edge_mb / max(edge_rows, 1),
                     s_per_scanned_row=cpu["scan"] / max(counts["scanned_rows"], 1),
                     read_share=counts["read_rows"] / max(counts["scanned_rows"], 1),
                     s_per_read_row=cpu["read"] / max(counts["read_rows"], 1),
                     mb_per_part_row=part_row_mb)
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
    speed = options.lambda_speed
    cost = dataclasses.replace(measured_cost, fixed_s=CostModel().fixed_s,
                               s_per_packet=measured_cost.s_per_packet / speed,
                               s_per_edge_row=measured_cost.s_per_edge_row / speed,
                               s_per_scanned_row=measured_cost.s_per_scanned_row / speed,
                               s_per_read_row=measured_cost.s_per_read_row / speed)
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
              f"M packets, base {cost.base_mb:.0f} MB, {cost.rows_per_packet:.4f} rows/packet; rows in the merge: "
              f"{cost.crossing_rows_per_pps:.4f} per packet/s per edge + {cost.edge_rows_per_packet:.5f} per packet; "
              f"merge {cost.s_per_edge_row * 1e6:.1f} us and {cost.mb_per_edge_row * 1e3:.2f} KB per edge row, "
              f"scan {cost.s_per_scanned_row * 1e6:.2f} us per chunk-part row, {cost.read_share:.0%} of the rows in "
              f"parts read whole at {cost.s_per_read_row * 1e6:.2f} us/row, {cost.mb_per_part_row * 1e3:.2f} KB per "
              f"row of the part in memory")
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
        print(f"merge task (largest node): {prediction.edge_rows:.0f} rows in the merge of {prediction.rows:.0f} rows "
              f"({prediction.edge_rows / max(prediction.rows, 1):.2%}), {prediction.merge_s:.0f} s of "
              f"{limits.timeout_s:.0f} s, {prediction.merge_mb:.0f} MB of {limits.memory_mb:.0f} MB; under half its "
              f"limits: {'yes' if ok_merge else 'NO'}")
        # How far the edge rows may grow before the merge leaves half its limits: more long-lived connections open
        # across every edge, or more UDP near every chunk start, than this capture has. For comparison only.
        for factor in (10, 100):
            more = predict(Plan(plan.chunks, dataclasses.replace(
                cost, crossing_rows_per_pps=cost.crossing_rows_per_pps * factor,
                edge_rows_per_packet=min(cost.edge_rows_per_packet * factor, cost.rows_per_packet)), limits),
                options.concurrency)
            print(f"  at {factor}x the rows in the merge: {more.edge_rows:.0f}, merge {more.merge_s:.0f} s, "
                  f"{more.merge_mb:.0f} MB, wall {more.wall_s / 60:.1f} min")
    return 0 if ok_wall and ok_time and ok_memory and ok_merge else 1


if __name__ == "__main__":
    sys.exit(main())
