"""Scale proof of the dissection fan-out (issue 17), run by `make bench-scale`.

1. Measures real chunks locally: the kernel-traffic capture (tests/bench/netns_mix.py, 1 M packets in 32 MB
   segments, built once as root and cached; ``--capture`` for another file, else the bench capture of
   bench_dissect) is cut into time chunks by the planner (dissect.plan), and each chunk is dissected with its warm-up
   by ``dissect_segments`` in its own child process, reading only its segments (each fetched whole, as the chunk
   task fetches it), and split into body and edge rows with both written as Parquet, as one Lambda task runs it:
   CPU seconds, peak RSS. The merge runs as dissect.fanout's three steps run it, in its own child process:
   merge-connections (the chunk parts' endpoint columns scanned, the connections parts holding rows of an edge's
   pair read whole, the connections rows merged), merge-apps a group of chunks at a time (each chunk its own group
   here), then the node's part (the groups' files concatenated); CPU seconds and peak memory growth of each. The
   result is compared with the full merge of every row, with the application rows merged a chunk at a time
   (``merge_tables_grouped``), and with one sequential pass. Finalize's fold (``observers.combine``, as the views are
   built) runs on the node's tables seen by two nodes. From these: the planner's CostModel and the per-row and
   per-packet figures of the merge steps and of the fold.
2. Builds the plan for a synthetic incident -- 20 nodes x 1 hour x 100 k packets/s, 10 s segments of 1 M packets --
   with the measured cost model and the dissect function's limits (900 s, 3008 MB), and prints the chunks, every
   step's largest task against half of its limits, and the predicted wall time and cost in AWS under the Maps'
   concurrency (template.yaml: chunks 500, groups 25 per node). Target: wall time under 15 minutes, every task
   under half its time and memory limits. A Lambda vCPU is taken as fast as the local core (``--lambda-speed``).

Usage: .venv/bin/python -m tests.bench.bench_scale [--capture PCAP] [--chunks 4] [--concurrency 500]
       [--lambda-speed 1.0]
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import math
import multiprocessing
import os
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
from freezeframe.contracts.schemas import TABLES, VIEWS
from freezeframe.dissect.chunks import (
    APP_TABLES,
    CHUNK_TABLES,
    Chunk,
    edge_pairs,
    group_context,
    group_span,
    merge_app_rows,
    merge_connections,
    merge_ids,
    merge_tables,
    merge_tables_grouped,
    pair_keys,
    pull_pairs,
    shared_udp_pairs,
    sort_rows,
    split_chunk,
    udp_pairs,
    warm_rows_of,
    with_rows,
)
from freezeframe.dissect.compact import TARGET_BYTES, split_parquet, stream_parquet
from freezeframe.dissect.fanout import GROUP_ROWS, PAIR_COLUMNS
from freezeframe.dissect.files import time_span
from freezeframe.dissect.foldshard import (
    READERS,
    ROUTED,
    buckets_of,
    encode_routed,
    fold_bucket,
    fold_buckets,
    read_routed,
)
from freezeframe.dissect.job import EngineResult, SegmentSource, dissect_segments, parquet_bytes
from freezeframe.dissect.observers import combine
from freezeframe.dissect.plan import (
    LAMBDA_USD_PER_GB_S,
    SECOND_NS,
    STATES_USD_PER_TRANSITION,
    TRANSITIONS_PER_CHUNK,
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
MAP_GROUPS = 25  # template.yaml MergeApplicationRows MaxConcurrency
MAP_FOLD = 500  # template.yaml RouteSources, FoldBuckets and FoldServiceFlows MaxConcurrency
# S3 figures the model takes (not measured here): a ranged GET's time to its first byte from a Lambda in the
# bucket's region, and the request prices (us-east-1, S3 Standard).
GET_S = 0.030
S3_USD_PER_GET = 0.0004 / 1000
S3_USD_PER_PUT = 0.005 / 1000
KERNEL_VERSION = 2  # bump when the capture's recipe changes
KERNEL_PACKETS = 1_000_000
KERNEL_SEGMENT_MB = 32  # rotated like the agent's segments: a chunk reads only the segments of its time


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


ChildArgs = tuple[list[tuple[str, int, int]], int, int, int, int | None, bool, bool]


def _sources(segments: list[tuple[str, int, int]]) -> list[SegmentSource]:
    """The segments as a chunk task gets them: each segment's bytes fetched whole when its turn comes."""
    return [SegmentSource(SegmentRef(path, None, low, high), fetch=(lambda path=path: Path(path).read_bytes()))
            for path, low, high in segments]


def _child(args: ChildArgs) -> tuple[float, float, float, EngineResult]:
    """One chunk task: dissect with the warm-up, split into body and edge, both written as Parquet (in memory)."""
    segments, low, high, index, warm, first, last = args
    baseline = _rss_mb()
    start = _cpu()
    chunk = Chunk(index, low, high, warm)
    result = dissect_segments("bench", _sources(segments), chunk)
    body, edge, warm = split_chunk(result.tables, chunk, first, last)
    udp_pairs(result.tables["connections"], chunk, first, last, 0)
    for table in [*body.values(), *edge.values(), *warm.values()]:
        parquet_bytes(table)
    return _cpu() - start, baseline, _rss_mb(), result


MergeArgs = tuple[list[Chunk], str, list[tuple[pa.Array, pa.Array]], int, list[list[int]]]
MergeOut = tuple[dict[str, float], float, dict[str, float], dict[str, int], list[dict[str, float]],
                 dict[str, pa.Table]]


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
    """The merge steps of dissect.fanout on real chunks whose tables are files in ``folder`` (as the chunk tasks
    wrote them), in a fresh process, each step's CPU seconds and peak memory growth (reset high-water marks):

    - merge-connections: edge connections rows, UDP pairs and extras read; the chunk parts' endpoint columns read and
      matched (scan); the connections parts holding rows of an edge's pair read whole and those rows taken (read);
      every connections row of the merge merged (merge);
    - merge-apps, one group of chunks at a time: the dns/http/tls rows at the edges, of the moved rows, and of the
      warm-ups of merged connections read, re-pointed and completed from the warm-up (``merge_app_rows``), written;
    - merge (finish): the groups' files concatenated into the node's part, one file in memory at a time."""
    chunks, folder, udp, warmup_ns, groups = args
    root = Path(folder)
    baseline = _rss_mb()
    cpu = {"scan": 0.0, "read": 0.0, "merge": 0.0, "finish": 0.0}
    peaks: dict[str, float] = {}
    counts = {"pulled": 0, "read_rows": 0, "scanned_rows": 0, "largest_part_rows": 0, "warm_read": 0}
    before = _reset_peak()
    start = _cpu()
    conns = [_load(root / f"{c.index}-edge-connections.parquet") for c in chunks]
    extras = [_extras(root / f"{c.index}-extras-edge.json") for c in chunks]
    pairs = edge_pairs([{"connections": t} for t in conns], shared_udp_pairs(chunks, udp, warmup_ns))
    cpu["scan"] += _cpu() - start
    moved_ids: list[pa.Array] = []
    part_mb = 0.0
    for number, chunk in enumerate(chunks):
        start = _cpu()
        path = root / f"{chunk.index}-body-connections.parquet"
        keys = pq.read_table(path, columns=list(PAIR_COLUMNS))
        counts["scanned_rows"] += keys.num_rows
        mask = pc.is_in(pair_keys(keys), value_set=pairs) if keys.num_rows else pa.array([], pa.bool_())
        hit = bool(keys.num_rows) and bool(pc.any(mask).as_py())
        cpu["scan"] += _cpu() - start
        if not hit:
            moved_ids.append(pa.array([], pa.string()))
            continue
        start = _cpu()
        part_before = _vm("VmRSS")
        body = pq.read_table(path)
        counts["largest_part_rows"] = max(counts["largest_part_rows"], body.num_rows)
        counts["read_rows"] += body.num_rows
        moved = body.filter(mask)
        part_mb = max(part_mb, _vm("VmHWM") - part_before)
        del body
        ids = moved.column("conn_id").combine_chunks()
        moved_ids.append(ids)
        counts["pulled"] += moved.num_rows
        wanted = set(ids.to_pylist())
        extras[number].update({k: v for k, v in _extras(root / f"{chunk.index}-extras-body.json").items()
                               if k in wanted})
        conns[number] = with_rows(conns[number], moved)
        cpu["read"] += _cpu() - start
    counts["edge_rows"] = sum(t.num_rows for t in conns)
    peaks["connections"] = _vm("VmHWM") - before  # reading: one connections part at a time, the pairs
    merge_connections("bench", conns[:1], None, extras[:1])  # one-time costs (lazy imports): not per row
    # What the merge's rows take: their tables (held through the merge) and the merge's own peak growth.
    rows_mb = sum(t.nbytes for t in conns) / 2**20
    before = _reset_peak()
    start = _cpu()
    merged = merge_connections("bench", conns, None, extras)
    cpu["merge"] += _cpu() - start
    counts["connections_mb_x1000"] = round((rows_mb + _vm("VmHWM") - before) * 1000)
    ids = merge_ids({"connections": t} for t in conns)
    tables: dict[str, pa.Table] = {"connections": merged.table}
    group_stats = []
    written: dict[str, list[bytes]] = {name: [] for name in APP_TABLES}
    for members in groups:
        before = _reset_peak()
        start = _cpu()
        chosen = sorted(members) + group_context(chunks, members)
        per_name: dict[str, list[pa.Table]] = {name: [] for name in APP_TABLES}
        rows_in = 0
        for number in chosen:
            chunk = chunks[number]
            warm = {}
            if chunk.warmup_start_ns is not None and len(ids):
                read = {name: _load(root / f"{chunk.index}-warm-{name}.parquet") for name in APP_TABLES}
                counts["warm_read"] += sum(t.num_rows for t in read.values())
                warm = warm_rows_of(read, ids)
            for name in APP_TABLES:
                table = _load(root / f"{chunk.index}-edge-{name}.parquet")
                if number in members and len(moved_ids[number]):
                    body = _load(root / f"{chunk.index}-body-{name}.parquet")
                    table = with_rows(table, body.filter(pc.fill_null(pc.is_in(
                        body.column("conn_id"), value_set=moved_ids[number]), False)))
                if name in warm:
                    table = with_rows(table, warm[name])
                rows_in += table.num_rows
                per_name[name].append(table)
        rows_out = 0
        for name in APP_TABLES:
            out = merge_app_rows([chunks[n] for n in chosen], per_name[name], group_span(chunks, members),
                                 merged.conn_ids, TABLES[name])
            rows_out += out.num_rows
            written[name].append(parquet_bytes(out))
        group_stats.append({"chunks": len(members), "cpu": _cpu() - start, "mb": _vm("VmHWM") - before,
                            "rows_in": rows_in, "rows_out": rows_out})
        del per_name
    before = _reset_peak()
    start = _cpu()
    finish_bytes = 0
    for name in APP_TABLES:
        sink = io.BytesIO()
        with pq.ParquetWriter(sink, TABLES[name], compression="zstd", use_dictionary=False) as writer:
            for body_bytes in written[name]:
                writer.write_table(pq.read_table(io.BytesIO(body_bytes)).cast(TABLES[name]))
        finish_bytes += len(sink.getvalue())
        tables[name] = pq.read_table(io.BytesIO(sink.getvalue()))
    cpu["finish"] = _cpu() - start
    peaks["finish"] = _vm("VmHWM") - before
    peaks["part"] = part_mb
    counts["finish_bytes"] = finish_bytes
    return cpu, baseline, peaks, counts, group_stats, tables


def kernel_capture() -> list[Path]:
    """The kernel-traffic capture's segments (tests/bench/netns_mix.py, rotated like an agent's segments), built once
    (as root, in network namespaces, a few minutes) and cached; its segments joined into one file too, the capture
    ``make bench-scale-test`` (tests/bench/test_chunk_edges_kernel.py) reads."""
    folder = cache_dir() / "bench" / f"scale-kernel-v{KERNEL_VERSION}-{KERNEL_PACKETS}"
    manifest = folder / "capture.json"
    if manifest.exists():
        return [Path(p) for p in json.loads(manifest.read_text())["segments"]]
    from tests.bench.netns_mix import build  # noqa: PLC0415 - needs root and namespaces

    if folder.exists():
        shutil.rmtree(folder)
    print(f"building the kernel-traffic capture ({KERNEL_PACKETS:,} packets, tests/bench/netns_mix.py) in {folder}",
          flush=True)
    made = build(folder, packets=KERNEL_PACKETS, segment_mb=KERNEL_SEGMENT_MB)
    joined = cache_dir() / "bench" / f"dissect-kernel-v{KERNEL_VERSION}-mix-{KERNEL_PACKETS}.pcap"
    with joined.open("wb") as out:  # tcpdump's rotated files share one pcap header: keep the first
        for number, segment in enumerate(made.segments):
            with segment.open("rb") as source:
                if number:
                    source.seek(24)
                shutil.copyfileobj(source, out)
    manifest.write_text(json.dumps({"segments": [str(p) for p in made.segments], "joined": str(joined),
                                    "client": made.client, "seconds": made.seconds}))
    return made.segments


def capture_path(given: Path | None) -> list[Path]:
    """The capture's segments: ``--capture`` (one file), else the kernel-traffic capture (built when missing and
    running as root), else the bench capture of bench_dissect."""
    if given is not None:
        return [given]
    if (cache_dir() / "bench" / f"scale-kernel-v{KERNEL_VERSION}-{KERNEL_PACKETS}" / "capture.json").exists() or \
            os.geteuid() == 0:
        return kernel_capture()
    from tests.bench.bench_dissect import CAPTURE_VERSION, build_capture

    path = cache_dir() / "bench" / f"dissect-v{CAPTURE_VERSION}-300000.pcap"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        build_capture(path, 300_000)
    return [path]


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


def measure(paths: list[Path], chunks: int, warmup_s: float
            ) -> tuple[CostModel, list[dict[str, Any]], dict[str, Any]]:
    spans = {}
    for path in paths:
        span = time_span(path)
        if span is not None:
            spans[str(path)] = span
    if not spans:
        raise SystemExit(f"{paths}: no packets")
    low, high = min(s[0] for s in spans.values()), max(s[1] for s in spans.values()) + 1
    size = sum(Path(p).stat().st_size for p in spans)
    largest_mb = max(Path(p).stat().st_size for p in spans) / 2**20
    segments = [SegmentSpan(p, s[0], s[1], Path(p).stat().st_size) for p, s in spans.items()]
    chunk_ns = -(-(high - low) // chunks)
    planned = plan_node("bench", segments, chunk_ns=chunk_ns, warmup_ns=int(warmup_s * SECOND_NS))
    measured = []
    results = []
    planned_chunks = []
    for chunk in planned:
        warm = None if chunk.open_start else chunk.warmup_start_ns
        read = [(key, *spans[key]) for key in chunk.segments]  # the segments its warm-up and its time overlap
        cpu, baseline, peak, result = _in_child(_child, (read, 0 if chunk.open_start else chunk.start_ns,
                                                         (1 << 63) - 1 if chunk.open_end else chunk.end_ns,
                                                         chunk.index, warm, chunk.open_start, chunk.open_end))
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
    groups = [[number] for number in range(len(planned_chunks))]  # every chunk its own group: every boundary
    grouped = merge_tables_grouped("bench", planned_chunks, [r.tables for r in results], groups, None,
                                   [r.extras for r in results])
    same_grouped = all(sort_rows(name, grouped.tables[name].cast(TABLES[name])).to_pylist()
                       == sort_rows(name, full.tables[name].cast(TABLES[name])).to_pylist() for name in CHUNK_TABLES)
    cpu, merge_base, peaks, counts, group_stats, merged = _in_child(
        _merge_child, (planned_chunks, str(folder), udp, warmup_ns, groups))
    edge_rows = counts["edge_rows"]
    print(f"  full merge (before): {rows} chunk rows in {full_cpu:.2f} CPU s ({full_cpu / rows * 1e6:.1f} us/row); "
          f"its application rows merged a chunk at a time (merge_tables_grouped): "
          f"{'equal in every table' if same_grouped else 'DIFFERENT'}", flush=True)
    print(f"  merge-connections: {edge_rows} connections rows ({edge_rows / rows:.1%}; {counts['pulled']} of them "
          f"moved from chunk parts) merged in {cpu['merge']:.2f} CPU s "
          f"({cpu['merge'] / max(edge_rows, 1) * 1e6:.0f} us/row); chunk parts scanned in {cpu['scan']:.2f} "
          f"CPU s ({cpu['scan'] / max(counts['scanned_rows'], 1) * 1e6:.2f} us/row); "
          f"{counts['read_rows']} rows of connections parts holding rows to move "
          f"({counts['read_rows'] / max(counts['scanned_rows'], 1):.0%}) read whole in {cpu['read']:.2f} CPU s "
          f"({cpu['read'] / max(counts['read_rows'], 1) * 1e6:.2f} us/row); peak growth reading "
          f"{peaks['connections']:.0f} MB (one part whole at most {peaks['part']:.0f} MB), merging "
          f"{counts['connections_mb_x1000'] / 1000:.1f} MB (baseline {merge_base:.0f} MB)", flush=True)
    for number, group in enumerate(group_stats):
        print(f"  merge-apps group {number} (1 chunk): {group['rows_in']:.0f} dns/http/tls rows in (edge, moved, "
              f"warm-up of merged connections), {group['rows_out']:.0f} out, {group['cpu']:.2f} CPU s, peak growth "
              f"{group['mb']:.0f} MB", flush=True)
    app_out = sum(g["rows_out"] for g in group_stats)
    print(f"  merge (node's part): {app_out:.0f} application rows from the groups' files in {cpu['finish']:.2f} CPU s, "
          f"{counts['finish_bytes'] / 2**20:.1f} MB of Parquet, peak growth {peaks['finish']:.0f} MB", flush=True)
    # Equality: the split merge plus what the merge left in the chunk parts, against the full merge and one
    # sequential pass.
    pairs = edge_pairs(edges, shared_udp_pairs(planned_chunks, udp, warmup_ns))
    left = [pull_pairs(body, pairs)[0] for body in bodies]  # the chunk parts without the node's moved rows
    combined = {}
    for name in CHUNK_TABLES:
        table = merged[name].cast(TABLES[name])
        for body in left:
            table = with_rows(table, body[name])
        combined[name] = sort_rows(name, table)
    same_as_full = all(combined[name].to_pylist() == sort_rows(name, full.tables[name].cast(TABLES[name])).to_pylist()
                       for name in CHUNK_TABLES)
    sequential = dissect_segments("bench", _sources([(key, *span) for key, span in spans.items()]))
    expected = {row["conn_id"]: row for row in sequential.tables["connections"].to_pylist()}
    actual = {row["conn_id"]: row for row in combined["connections"].to_pylist()}
    differing = sum(1 for conn_id, row in expected.items() if actual.get(conn_id) != row)
    differing += len(set(actual) - set(expected))
    print(f"  split merge vs full merge: {'equal in every table' if same_as_full else 'DIFFERENT'}; vs sequential: "
          f"{len(actual)} vs {len(expected)} connections, {differing} differing in any column", flush=True)
    # Finalize's fold (observers.combine, as dissect.views builds the views), on the node's tables seen by two nodes
    # (the same traffic on both: every row folds with another), in a fresh process.
    for name in CHUNK_TABLES:
        (folder / f"seq-{name}.parquet").write_bytes(parquet_bytes(sequential.tables[name]))
    # The synthetic incident's fold: its buckets (FOLD_ROWS input rows each) and a node's sources (its merge groups
    # and its part), from this capture's rows per packet.
    node_packets = HOUR_S * RATE_PPS
    table_rows = sum(sequential.tables[name].num_rows for name in CHUNK_TABLES) / max(packets, 1)
    buckets = fold_buckets(round(NODES * node_packets * table_rows))
    all_rows = sum(t.num_rows for r in results for t in r.tables.values())
    sources = math.ceil(node_packets / (GROUP_ROWS / (all_rows / max(packets, 1)))) + 1
    route = _in_child(_route_child, (str(folder), sources, buckets))
    fold = _in_child(_fold_child, (str(folder), sources, buckets))
    compaction = _in_child(_compact_child, (str(folder), sources, buckets))
    shutil.rmtree(folder)
    print(f"  route (a source's parts read, each row's bucket, one object for {buckets} buckets): {route['rows']} rows "
          f"in {route['cpu']:.2f} CPU s ({route['cpu'] / route['rows'] * 1e6:.2f} us/row), "
          f"{route['bytes'] / 2**20:.1f} MB routed, peak growth {route['mb']:.0f} MB", flush=True)
    print(f"  fold task (2 observers of the same {fold['rows'] // 2} rows, {sources} sources per node decoded, "
          f"fold_bucket in pieces, views written): {fold['cpu']:.2f} CPU s "
          f"({fold['cpu'] / fold['rows'] * 1e6:.1f} us per input row), peak growth {fold['mb']:.0f} MB "
          f"({fold['mb'] * 1e6 / fold['rows']:.0f} MB per M input rows)",
          flush=True)
    print(f"  compaction task (the fold task's {compaction['bytes'] / 2**20:.1f} MB of view files read, joined per "
          f"table, written): {compaction['cpu']:.2f} CPU s, peak growth {compaction['mb']:.0f} MB", flush=True)
    # Per packet read: a chunk reads its warm-up too. The planner's estimate of each task's reads, from the
    # measured total spread over the capture's span, is the denominator.
    per_byte = packets / size  # the measured packets spread over the segments by their sizes
    replanned = plan_node("bench", [dataclasses.replace(s, packets=round(s.size * per_byte)) for s in segments],
                          chunk_ns=chunk_ns, warmup_ns=int(warmup_s * SECOND_NS))
    reads = {c.index: max(c.packets, 1) for c in replanned}
    owned = {c.index: max(c.own_packets, 1) for c in replanned}
    cpu_total = sum(m["cpu_s"] for m in measured)
    baseline = max(m["baseline_mb"] for m in measured)
    # The planner adds the largest segment (held whole while it is dissected) to the growth per packet read.
    growth = max((m["peak_rss_mb"] - m["baseline_mb"] - largest_mb) / reads[m["chunk"]] for m in measured)
    # merge-connections' memory: one part at a time (its measured peak while read whole) plus its rows.
    part_row_mb = peaks["part"] / max(counts["largest_part_rows"], 1)
    conn_mb = counts["connections_mb_x1000"] / 1000
    cost = CostModel(s_per_packet=cpu_total / sum(reads.values()), mb_per_packet=growth, base_mb=baseline,
                     bytes_per_packet=max(size // max(packets, 1), 1), rows_per_packet=rows / max(packets, 1),
                     # the connections rows merge-connections holds (edge rows and the rows of their pairs moved
                     # from the parts), per edge, per packet/s of the capture
                     crossing_rows_per_pps=(edge_rows - other_edge) / max(len(crossing), 1) / capture_pps,
                     edge_rows_per_packet=other_edge / max(packets, 1),
                     s_per_edge_row=cpu["merge"] / max(edge_rows, 1), mb_per_edge_row=conn_mb / max(edge_rows, 1),
                     s_per_scanned_row=cpu["scan"] / max(counts["scanned_rows"], 1),
                     read_share=counts["read_rows"] / max(counts["scanned_rows"], 1),
                     s_per_read_row=cpu["read"] / max(counts["read_rows"], 1),
                     mb_per_part_row=part_row_mb)
    split = {
        # merge-apps: per packet owned by the group's chunks (their edges, moved rows and warm-ups scale with it)
        "apps_s_per_packet": max(g["cpu"] / owned[c.index] for g, c in zip(group_stats, planned, strict=True)),
        "apps_mb_per_packet": max(g["mb"] / owned[c.index] for g, c in zip(group_stats, planned, strict=True)),
        "group_rows_per_packet": all_rows / max(packets, 1),  # what fanout.GROUP_ROWS counts, per packet
        # merge (node's part): application rows out of the groups, per packet of the node, and their cost
        "app_rows_per_packet": app_out / max(packets, 1),
        "finish_s_per_row": cpu["finish"] / max(app_out, 1),
        "finish_bytes_per_row": counts["finish_bytes"] / max(app_out, 1),
        # finalize's fold, per input row (every table's rows of every node)
        "fold_s_per_row": fold["cpu"] / fold["rows"], "fold_mb_per_row": fold["mb"] / fold["rows"],
        # compaction: the views' bytes per input row of the fold, its CPU and memory growth per MB it reads
        "view_bytes_per_row": fold["view_bytes"] / fold["rows"],
        "compact_s_per_mb": compaction["cpu"] / (compaction["bytes"] / 2**20),
        "compact_mb_per_mb": max(compaction["mb"], 0) / (compaction["bytes"] / 2**20),
        # a route task, per row of its source, and its routed object's bytes per row
        "route_s_per_row": route["cpu"] / route["rows"], "route_mb_per_row": route["mb"] / route["rows"],
        "routed_bytes_per_row": route["bytes"] / route["rows"],
        "table_rows_per_packet": sum(sequential.tables[name].num_rows for name in CHUNK_TABLES) / max(packets, 1),
        "exact": same_as_full and same_grouped and not differing,
    }
    return cost, measured, split


def _two_nodes(folder: str) -> dict[str, dict[str, pa.Table]]:
    """The node's tables (written by ``measure``) as seen by two nodes: the same rows under a second node's name."""
    root = Path(folder)
    tables = {name: pq.read_table(root / f"seq-{name}.parquet") for name in CHUNK_TABLES}
    other = {name: table.set_column(table.schema.get_field_index("node"), "node",
                                    pa.array(["bench-b"] * table.num_rows, pa.string()))
             for name, table in tables.items()}
    return {"bench": tables, "bench-b": other}


FoldArgs = tuple[str, int, int]


def _fold_child(args: FoldArgs) -> dict[str, float]:
    """One fold task (dissect.foldshard.fold_step, phase 1, without S3): a bucket's rows from ``sources`` routed
    objects per node decoded, ``foldshard.fold_bucket`` (combine in pieces of FOLD_PIECE_ROWS), the views written as
    Parquet. Here the bucket holds every row of
    two nodes' copies of the node's tables (about FOLD_ROWS), spread over the sources as a node's groups spread
    them."""
    folder, sources, buckets = args
    per_node = _two_nodes(folder)
    rows = sum(t.num_rows for tables in per_node.values() for t in tables.values())
    blobs = []
    for node, tables in per_node.items():
        for number in range(sources):
            piece = {name: table.slice(number * table.num_rows // sources,
                                       (number + 1) * table.num_rows // sources - number * table.num_rows // sources)
                     for name, table in tables.items()}
            blobs.append((node, encode_routed(piece, {name: pa.array([0] * t.num_rows, pa.int32())
                                                      for name, t in piece.items()}, 1)))
    combine({n: {k: v.slice(0, 10) for k, v in t.items()} for n, t in per_node.items()})  # imports, first calls
    del per_node
    before = _reset_peak()
    start = _cpu()
    gathered: dict[str, dict[str, list[pa.Table]]] = {}
    for node, blob in blobs:
        for name, table in read_routed(blob, 0).items():
            gathered.setdefault(node, {}).setdefault(name, []).append(table)
    views = fold_bucket({node: {name: sort_rows(name, pa.concat_tables(pieces)) for name, pieces in tables.items()}
                         for node, tables in gathered.items()}, buckets).tables
    written = {name: split_parquet(table) for name, table in views.items()}
    cpu, mb = _cpu() - start, _vm("VmHWM") - before
    for name, files in written.items():  # for the compaction child
        for number, body in enumerate(files):
            (Path(folder) / f"view-{name}-{number:05d}.parquet").write_bytes(body)
    return {"cpu": cpu, "mb": mb, "rows": rows,
            "view_bytes": sum(len(body) for files in written.values() for body in files)}


def _compact_child(args: FoldArgs) -> dict[str, float]:
    """One compaction task (dissect.foldshard.compact_step, without S3) on the fold task's view files: per table
    its files read one at a time and streamed into files of about 128 MB (compact.stream_parquet); in a fresh
    process, so its memory is its own."""
    folder = Path(args[0])
    paths = sorted(folder.glob("view-*.parquet"))
    split_parquet(pq.read_table(paths[0]).slice(0, 10))  # imports, first calls
    by_table: dict[str, list[Path]] = {}
    for path in paths:
        by_table.setdefault(path.name.split("-")[1], []).append(path)
    before = _reset_peak()
    start = _cpu()
    written = []
    for name, files in by_table.items():
        stream_parquet((pq.read_table(io.BytesIO(path.read_bytes())) for path in files), VIEWS[name],
                       lambda _number, body: written.append(len(body)))
    return {"cpu": _cpu() - start, "mb": _vm("VmHWM") - before, "bytes": sum(p.stat().st_size for p in paths)}


def _route_child(args: FoldArgs) -> dict[str, float]:
    """One route task (dissect.foldshard.route_step, without S3): a source's parts read from Parquet, each row's
    bucket, the routed object encoded, for ``buckets`` buckets (the incident's)."""
    folder, _sources, buckets = args
    root = Path(folder)
    before = _reset_peak()
    start = _cpu()
    tables = {name: pq.read_table(root / f"seq-{name}.parquet") for name in CHUNK_TABLES}
    body = encode_routed(tables, {name: buckets_of(table, buckets) for name, table in tables.items()}, buckets)
    return {"cpu": _cpu() - start, "mb": _vm("VmHWM") - before, "rows": sum(t.num_rows for t in tables.values()),
            "bytes": len(body)}


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
    paths = capture_path(options.capture)
    print(f"measuring real chunks of {paths[0].parent} ({len(paths)} segments, "
          f"{sum(p.stat().st_size for p in paths) / 2**20:.0f} MB, largest "
          f"{max(p.stat().st_size for p in paths) / 2**20:.0f} MB) in {options.chunks} chunks, "
          f"{options.warmup_s:g} s warm-up", flush=True)
    measured_cost, chunks, split = measure(paths, options.chunks, options.warmup_s)
    speed = options.lambda_speed
    cost = dataclasses.replace(measured_cost, fixed_s=CostModel().fixed_s,
                               s_per_packet=measured_cost.s_per_packet / speed,
                               s_per_edge_row=measured_cost.s_per_edge_row / speed,
                               s_per_scanned_row=measured_cost.s_per_scanned_row / speed,
                               s_per_read_row=measured_cost.s_per_read_row / speed)
    limits = Limits()
    plan = plan_incident(synthetic_entries(), warmup_ns=int(options.warmup_s * SECOND_NS), cost=cost, limits=limits)
    # predict(): the chunk waves and merge-connections (its merge_s, merge_mb), with a flat finalize replaced below.
    prediction = predict(plan, options.concurrency, finalize_s=0.0)
    longest = max(plan.chunks, key=lambda c: c.seconds)
    largest = max(plan.chunks, key=lambda c: c.memory_mb)
    per_node = len(plan.of(plan.nodes()[0]))
    node_packets = HOUR_S * RATE_PPS
    # merge-apps: groups of fanout.GROUP_ROWS rows of chunk parts, up to MAP_GROUPS at a time per node.
    group_packets = GROUP_ROWS / split["group_rows_per_packet"]
    groups = math.ceil(node_packets / group_packets)
    apps_s = cost.fixed_s + group_packets * split["apps_s_per_packet"] / speed
    apps_mb = cost.base_mb + group_packets * split["apps_mb_per_packet"]
    apps_wall = math.ceil(groups / MAP_GROUPS) * apps_s
    # merge (node's part): the groups' application rows concatenated, compressed in memory; the merged connections.
    app_rows = node_packets * split["app_rows_per_packet"]
    finish_s = cost.fixed_s + app_rows * split["finish_s_per_row"] / speed
    finish_mb = cost.base_mb + app_rows * split["finish_bytes_per_row"] / 2**20 + \
        prediction.edge_rows * cost.mb_per_edge_row
    # The views' fold (dissect.foldshard): a Map routes every source (a node's merge groups and its part), a Map
    # folds every bucket (FOLD_ROWS input rows each), then finalize reads the buckets' results.
    fold_rows = NODES * node_packets * split["table_rows_per_packet"]
    buckets = fold_buckets(round(fold_rows))
    sources = NODES * (groups + 1)
    bucket_rows = fold_rows / buckets
    # A group's source: its chunks' parts (4 tables) and its 3 merged application files, read one after another.
    group_rows = fold_rows / NODES / groups
    group_reads = math.ceil(per_node / groups) * len(CHUNK_TABLES) + 3
    route_s = cost.fixed_s + group_rows * split["route_s_per_row"] / speed + group_reads * GET_S
    route_mb = cost.base_mb + group_rows * split["route_mb_per_row"]
    route_wall = math.ceil(sources / MAP_FOLD) * route_s
    # A fold task: two ranged GETs per source (its offsets, its bytes), READERS at a time.
    fold_gets = 2 * sources
    fold_s = cost.fixed_s + bucket_rows * split["fold_s_per_row"] / speed + math.ceil(fold_gets / READERS) * GET_S
    fold_mb = cost.base_mb + bucket_rows * (split["fold_mb_per_row"] + split["routed_bytes_per_row"] / 2**20)
    fold_wall = math.ceil(buckets / MAP_FOLD) * fold_s
    # service_flows (none in this capture: no Kubernetes, but a cluster's incident has them, so the phase is counted,
    # at its most: one flow per connection): T flow tasks of FOLD_ROWS flows, each reading its part of every bucket's
    # phase-1 flows object, 2 B GETs a task.
    flow_tasks = min(buckets, fold_buckets(round(NODES * node_packets * cost.rows_per_packet)))
    flows_s = cost.fixed_s + math.ceil(2 * buckets / READERS) * GET_S
    flows_wall = math.ceil(flow_tasks / MAP_FOLD) * flows_s
    # Compaction: plan-compact reads the B + T results; each task joins about TARGET_BYTES of the views' files (a
    # run of buckets of one table: each bucket's result and file read), and finalize empties every joined file.
    view_mb = fold_rows * split["view_bytes_per_row"] / 2**20
    target_mb = TARGET_BYTES / 2**20
    compact_groups = math.ceil(view_mb / target_mb) + len(ROUTED)  # a run ends at each table's last bucket
    units_per_group = math.ceil(buckets * len(ROUTED) / compact_groups)
    plan_compact_s = cost.fixed_s + math.ceil((buckets + flow_tasks) / READERS) * GET_S
    # The longest task: a run of every bucket of a table whose files are small (its B results and B files read).
    compact_s = cost.fixed_s + min(target_mb, view_mb) * split["compact_s_per_mb"] / speed + \
        math.ceil(2 * buckets / READERS) * GET_S
    compact_mb = cost.base_mb + min(target_mb, view_mb) * split["compact_mb_per_mb"]
    compact_wall = plan_compact_s + math.ceil(compact_groups / MAP_FOLD) * compact_s
    # finalize: one result per bucket and compaction group read, every joined bucket file emptied, the small
    # tables' views, the summary (the report is not modelled).
    finalize_s = cost.fixed_s + math.ceil((buckets + flow_tasks + compact_groups) / READERS) * GET_S + \
        math.ceil(buckets * len(ROUTED) / READERS) * GET_S
    finalize_mb = cost.base_mb
    chunk_wall = prediction.wall_s - prediction.merge_s
    wall_s = chunk_wall + prediction.merge_s + apps_wall + finish_s + route_wall + fold_wall + flows_wall + \
        compact_wall + finalize_s
    gb = limits.memory_mb / 1024
    fold_lambda_s = sources * route_s + buckets * fold_s + flow_tasks * flows_s + plan_compact_s + \
        compact_groups * compact_s
    lambda_s = NODES * (groups * apps_s + finish_s) + fold_lambda_s + finalize_s
    # GETs: route reads, fold phase 1, phase 2, finalize's results; PUTs: routed objects, views and results of
    # phase 1, its flows objects, phase 2's views and results.
    gets = sources * group_reads + buckets * fold_gets + flow_tasks * 2 * buckets + buckets + flow_tasks + \
        2 * (buckets + flow_tasks) + compact_groups * 2 * units_per_group + compact_groups
    puts = sources + buckets * (len(CHUNK_TABLES) + 1) + buckets + flow_tasks * 2 + \
        compact_groups * 2 + buckets * len(ROUTED)
    fold_usd = fold_lambda_s * gb * LAMBDA_USD_PER_GB_S + \
        (sources + buckets + flow_tasks + compact_groups) * TRANSITIONS_PER_CHUNK * STATES_USD_PER_TRANSITION + \
        gets * S3_USD_PER_GET + puts * S3_USD_PER_PUT
    usd = prediction.cost_usd + (lambda_s - fold_lambda_s) * gb * LAMBDA_USD_PER_GB_S + fold_usd
    half_s, half_mb = limits.timeout_s / 2, limits.memory_mb / 2
    ok_time = longest.seconds <= half_s
    ok_memory = largest.memory_mb <= half_mb
    ok_wall = wall_s <= TARGET_WALL_S
    ok_merge = prediction.merge_s <= half_s and prediction.merge_mb <= half_mb
    ok_apps = apps_s <= half_s and apps_mb <= half_mb
    ok_finish = finish_s <= half_s and finish_mb <= half_mb
    ok_route = route_s <= half_s and route_mb <= half_mb
    ok_fold = fold_s <= half_s and fold_mb <= half_mb and flows_s <= half_s
    ok_compact = compact_s <= half_s and compact_mb <= half_mb and plan_compact_s <= half_s
    ok_finalize = finalize_s <= half_s and finalize_mb <= half_mb
    figures = {"capture": [str(p) for p in paths], "measured_chunks": chunks, "cost_model": cost.to_dict(),
               "split_merge_and_finalize": split,
               "incident": {"nodes": NODES, "hours": HOUR_S / 3600, "packets_per_s": RATE_PPS,
                            "packets": NODES * HOUR_S * RATE_PPS},
               "plan": {"chunks": len(plan.chunks), "chunks_per_node": per_node,
                        "chunk_s": (longest.end_ns - longest.start_ns) / SECOND_NS,
                        "max_task_s": round(longest.seconds, 1), "max_task_mb": round(largest.memory_mb, 1),
                        "time_limit_s": limits.timeout_s, "memory_limit_mb": limits.memory_mb},
               "prediction": {**prediction.to_dict(), "apps_groups_per_node": groups, "apps_s": round(apps_s, 1),
                              "apps_mb": round(apps_mb, 1), "finish_s": round(finish_s, 1),
                              "finish_mb": round(finish_mb, 1), "fold_buckets": buckets, "fold_sources": sources,
                              "route_s": round(route_s, 1), "route_mb": round(route_mb, 1),
                              "fold_s": round(fold_s, 1), "fold_mb": round(fold_mb, 1),
                              "flows_s": round(flows_s, 1), "flow_tasks": flow_tasks,
                              "finalize_s": round(finalize_s, 1),
                              "finalize_mb": round(finalize_mb, 1), "wall_s": round(wall_s, 1),
                              "fold_cost_usd": round(fold_usd, 2), "cost_usd": round(usd, 2)},
               "target": {"wall_s_max": TARGET_WALL_S, "wall_ok": ok_wall, "task_time_under_half": ok_time,
                          "task_memory_under_half": ok_memory, "merge_connections_under_half": ok_merge,
                          "merge_apps_under_half": ok_apps, "merge_under_half": ok_finish,
                          "route_under_half": ok_route, "fold_under_half": ok_fold,
                          "compact_under_half": ok_compact,
                          "finalize_under_half": ok_finalize}}
    if options.json:
        print(json.dumps(figures, indent=2))
    else:
        print(f"cost model (measured): {cost.s_per_packet * 1e6:.2f} us/packet "
              f"({1 / cost.s_per_packet / 1000:.0f} k packets per CPU-s), {cost.mb_per_packet * 1e6:.0f} MB per "
              f"M packets (plus the largest segment), base {cost.base_mb:.0f} MB, {cost.rows_per_packet:.4f} "
              f"connections rows/packet; merge-connections: {cost.crossing_rows_per_pps:.4f} rows per packet/s per "
              f"edge + {cost.edge_rows_per_packet:.5f} per packet, {cost.s_per_edge_row * 1e6:.1f} us and "
              f"{cost.mb_per_edge_row * 1e3:.2f} KB per row, scan {cost.s_per_scanned_row * 1e6:.2f} us per "
              f"chunk-part row, {cost.read_share:.0%} of the rows in parts read whole at "
              f"{cost.s_per_read_row * 1e6:.2f} us/row, {cost.mb_per_part_row * 1e3:.2f} KB per row of the part")
        print(f"  merge-apps {split['apps_s_per_packet'] * 1e6:.2f} us and {split['apps_mb_per_packet'] * 1e6:.0f} MB "
              f"per M packets of its chunks; node's part {split['app_rows_per_packet']:.4f} application rows per "
              f"packet at {split['finish_s_per_row'] * 1e6:.2f} us and {split['finish_bytes_per_row']:.0f} bytes "
              f"each; finalize's fold {split['fold_s_per_row'] * 1e6:.1f} us and "
              f"{split['fold_mb_per_row'] * 1e6:.0f} MB per M rows, {split['table_rows_per_packet']:.4f} rows per "
              f"packet; exact (split merge = full merge, grouped = full, sequential): "
              f"{'yes' if split['exact'] else 'NO'}")
        print(f"incident: {NODES} nodes x 1 h x {RATE_PPS // 1000} k packets/s = "
              f"{NODES * HOUR_S * RATE_PPS / 1e9:.1f} G packets")
        print(f"plan: {len(plan.chunks)} chunks ({per_node} per node, {figures['plan']['chunk_s']:.0f} s each); "
              f"largest task {longest.seconds:.0f} s of {limits.timeout_s:.0f} s "
              f"({longest.seconds / limits.timeout_s:.0%}), {largest.memory_mb:.0f} MB of {limits.memory_mb:.0f} MB "
              f"({largest.memory_mb / limits.memory_mb:.0%})")
        print(f"AWS, concurrency {options.concurrency}: {prediction.waves} wave(s) of chunks up to "
              f"{prediction.max_task_s:.0f} s ({chunk_wall:.0f} s) + merge-connections {prediction.merge_s:.0f} s + "
              f"merge-apps {math.ceil(groups / MAP_GROUPS)} wave(s) of {apps_s:.0f} s + node's part {finish_s:.0f} s "
              f"+ route {math.ceil(sources / MAP_FOLD)} wave(s) of {route_s:.0f} s + fold "
              f"{math.ceil(buckets / MAP_FOLD)} wave(s) of {fold_s:.0f} s + service_flows phase "
              f"{math.ceil(flow_tasks / MAP_FOLD)} wave(s) of {flows_s:.0f} s + compaction {plan_compact_s:.0f} s "
              f"and {math.ceil(compact_groups / MAP_FOLD)} wave(s) of {compact_s:.0f} s + finalize {finalize_s:.0f} s "
              f"= wall "
              f"{wall_s:.0f} s ({wall_s / 60:.1f} min, target < 15 min: {'met' if ok_wall else 'NOT met'}); "
              f"${usd:.2f} per incident (the fold ${fold_usd:.2f}: {gets / 1e6:.1f} M GETs, {puts / 1e3:.0f} k PUTs)")
        print(f"every chunk task under half its limits: time {'yes' if ok_time else 'NO'}, memory "
              f"{'yes' if ok_memory else 'NO'}")
        print(f"merge-connections (largest node): {prediction.edge_rows:.0f} rows in the merge of "
              f"{prediction.rows:.0f} rows ({prediction.edge_rows / max(prediction.rows, 1):.2%}), "
              f"{prediction.merge_s:.0f} s of {limits.timeout_s:.0f} s, {prediction.merge_mb:.0f} MB of "
              f"{limits.memory_mb:.0f} MB; under half its limits: {'yes' if ok_merge else 'NO'}")
        print(f"merge-apps: {groups} groups per node of {group_packets / 1e6:.1f} M packets, each {apps_s:.0f} s and "
              f"{apps_mb:.0f} MB; under half its limits: {'yes' if ok_apps else 'NO'}")
        print(f"merge (node's part): {app_rows / 1e6:.1f} M application rows, {finish_s:.0f} s and {finish_mb:.0f} MB; "
              f"under half its limits: {'yes' if ok_finish else 'NO'}")
        print(f"route: {sources} sources ({groups + 1} per node), each about {group_rows / 1e6:.2f} M rows read from "
              f"{group_reads} parts, {route_s:.0f} s and {route_mb:.0f} MB; under half its limits: "
              f"{'yes' if ok_route else 'NO'}")
        print(f"fold: {fold_rows / 1e6:.0f} M rows in {buckets} buckets of {bucket_rows / 1e3:.0f} k rows, each task "
              f"{fold_gets} ranged GETs ({READERS} at a time, {GET_S * 1000:.0f} ms each) and {fold_s:.0f} s, "
              f"{fold_mb:.0f} MB; under half its limits: {'yes' if ok_fold else 'NO'}; the service_flows phase "
              f"(at most one flow per connection) {flow_tasks} tasks of {2 * buckets} ranged GETs, {flows_s:.0f} s")
        print(f"compaction: {view_mb / 2**10:.0f} GB of view files, {compact_groups} runs of about {target_mb:.0f} MB "
              f"({units_per_group} buckets' files each on average, up to {buckets}), each task up to {compact_s:.0f} s "
              f"and {compact_mb:.0f} MB; "
              f"under half its limits: {'yes' if ok_compact else 'NO'}")
        print(f"finalize: {buckets + flow_tasks + compact_groups} results read, {buckets * len(ROUTED)} joined files "
              f"emptied, {finalize_s:.0f} s; under half its limits: "
              f"{'yes' if ok_finalize else 'NO'} (the incident report's queries are not in this figure)")
        for factor in (10, 100):
            more = predict(Plan(plan.chunks, dataclasses.replace(
                cost, crossing_rows_per_pps=cost.crossing_rows_per_pps * factor,
                edge_rows_per_packet=min(cost.edge_rows_per_packet * factor, cost.rows_per_packet)), limits),
                options.concurrency, finalize_s=0.0)
            print(f"  at {factor}x the connections rows in the merge: {more.edge_rows:.0f}, merge-connections "
                  f"{more.merge_s:.0f} s, {more.merge_mb:.0f} MB")
    return 0 if ok_wall and ok_time and ok_memory and ok_merge and ok_apps and ok_finish and ok_route and ok_fold \
        and ok_compact and ok_finalize else 1


if __name__ == "__main__":
    sys.exit(main())
