"""The application rows merged a group of consecutive chunks at a time (dissect.chunks.merge_tables_grouped, the
fan-out's merge-apps tasks): the same tables as merging them all at once (``merge_tables``), on the edge-case,
lossy and sample captures of test_chunks_edges.py cut with and without warm-ups, and on DNS exchanges cut by the
chunk edges (a query before an edge, its answer after it: the later chunk's warm-up row completes the earlier
chunk's row, across a group boundary); every chunk its own group and groups of two and three chunks."""

from __future__ import annotations

import io
from pathlib import Path

from scapy.layers.dns import DNS, DNSQR, DNSRR

from freezeframe.capture.pcapio import LINKTYPE_ETHERNET, PcapWriter
from freezeframe.contracts.schemas import TABLES
from freezeframe.dissect.chunks import APP_TABLES, CHUNK_TABLES, merge_tables_grouped, sort_rows
from tests.unit.dissect.test_chunks import BASE_NS, SECOND, udp
from tests.unit.dissect.test_chunks_edges import captures, chunk_results, full_merge

CLIENT, SERVER = ("10.0.1.1", 5300), ("10.0.1.2", 53)


def dns_across_edges(path: Path) -> Path:
    """One DNS client socket for 40 s: an exchange at the start and in the middle of every 10 s, and one cut by
    every edge."""
    frames = []
    for number, (asked, answered) in enumerate([(t, t + 0.01) for t in (0.0, 5.0, 15.0, 25.0, 35.0)]
                                               + [(t - 0.1, t + 0.1) for t in (10.0, 20.0, 30.0)]):
        name = f"host{number}.example."
        query = DNS(id=100 + number, rd=1, qd=DNSQR(qname=name))
        answer = DNS(id=100 + number, qr=1, rd=1, ra=1, qd=DNSQR(qname=name),
                     an=DNSRR(rrname=name, ttl=30, rdata=f"192.0.2.{number + 1}"))
        frames += [(asked, udp(CLIENT, SERVER, bytes(query))), (answered, udp(SERVER, CLIENT, bytes(answer)))]
    buffer = io.BytesIO()
    writer = PcapWriter(buffer, LINKTYPE_ETHERNET)
    for t, frame in sorted(frames, key=lambda item: item[0]):
        writer.write(BASE_NS + round(t * SECOND), frame)
    path.write_bytes(buffer.getvalue())
    return path


def test_grouped_application_rows_equal_the_merge_of_every_chunk_at_once(tmp_path: Path) -> None:
    warm_rows_replaced = 0
    dns = dns_across_edges(tmp_path / "dns.pcap")
    for label, path, chunk_ns, warmup_ns in [*captures(tmp_path), ("dns, 10 s chunks, 5 s warm-up", dns, 10 * SECOND,
                                                                   5 * SECOND)]:
        chunks, results = chunk_results(path, chunk_ns, warmup_ns)
        expected = full_merge(chunks, results)
        for size in (1, 2, 3):
            groups = [list(range(start, min(start + size, len(chunks)))) for start in range(0, len(chunks), size)]
            merged = merge_tables_grouped("node-a", chunks, [r.tables for r in results], groups,
                                          [r.payload_segments for r in results], [r.extras for r in results])
            for name in CHUNK_TABLES:
                actual = sort_rows(name, merged.tables[name].cast(TABLES[name]))
                assert actual.to_pylist() == expected[name].to_pylist(), (label, size, name)
        if warmup_ns is not None:
            # Rows stamped in a warm-up that the merge kept: the case the groups' spans decide.
            warm_rows_replaced += sum(
                1 for name in APP_TABLES for result, chunk in zip(results, chunks, strict=True)
                if chunk.warmup_start_ns is not None
                for ts in result.tables[name].column("ts_ns").to_pylist() if ts < chunk.start_ns)
    assert warm_rows_replaced > 0
