import hashlib
import io
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import zstandard

from freezeframe.capture.pcapio import PcapReader
from freezeframe.contracts.keys import parse_raw_segment_key
from freezeframe_agent.segmenter import Segmenter, pending

SAMPLE = Path(__file__).resolve().parents[2] / "fixtures" / "sample.pcap"
S = 1_000_000_000


def segment_sample(spool: Path, period_s: float = 10.0) -> tuple[list, list]:
    with open(SAMPLE, "rb") as handle:
        reader = PcapReader(handle)
        packets = list(reader)
        segmenter = Segmenter(cluster="c", node="n1", spool_dir=spool, link_type=reader.link_type,
                              snaplen=reader.header.snaplen, period_s=period_s, capture_filter="",
                              agent_version="t")
    closed = []
    for p in packets:
        closed += segmenter.add(p.ts_ns, p.data, p.orig_len)
    closed += segmenter.flush()
    return packets, closed


def tshark_count(path: Path) -> int:
    out = subprocess.run(["tshark", "-r", str(path), "-T", "fields", "-e", "frame.number"], check=True,
                         capture_output=True, text=True).stdout
    return len(out.split())


def test_segments_partition_the_capture_on_a_time_grid(tmp_path: Path) -> None:
    packets, closed = segment_sample(tmp_path / "spool")
    assert sum(s.meta["packets"] for s in closed) == len(packets)
    rebuilt = []
    for seg in closed:
        meta = seg.meta
        assert meta["start_ns"] % (10 * S) == 0
        assert meta["end_ns"] - meta["start_ns"] <= 10 * S
        stored = seg.path.read_bytes()
        assert hashlib.sha256(stored).hexdigest() == meta["sha256"] and len(stored) == meta["stored_bytes"]
        part = list(PcapReader(io.BytesIO(zstandard.ZstdDecompressor().decompress(stored))))
        assert all(meta["start_ns"] <= p.ts_ns < meta["end_ns"] for p in part)
        assert (part[0].ts_ns, part[-1].ts_ns) == (meta["first_packet_ns"], meta["last_packet_ns"])
        parsed = parse_raw_segment_key(meta["key"])
        assert parsed is not None and (parsed.start_ns, parsed.end_ns) == (meta["start_ns"], meta["end_ns"])
        rebuilt += part
    assert [(p.ts_ns, p.data) for p in rebuilt] == [(p.ts_ns, p.data) for p in packets]
    assert [s.meta["seq"] for s in closed] == list(range(len(closed)))


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
def test_tshark_reads_every_segment_and_counts_the_same_packets(tmp_path: Path) -> None:
    _, closed = segment_sample(tmp_path / "spool")
    total = 0
    for seg in closed:
        plain = tmp_path / (seg.path.stem + ".pcap")
        plain.write_bytes(zstandard.ZstdDecompressor().decompress(seg.path.read_bytes()))
        assert tshark_count(plain) == seg.meta["packets"]
        total += seg.meta["packets"]
    assert total == tshark_count(SAMPLE)


def test_spool_is_atomic_and_seq_survives_a_restart(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    _, first = segment_sample(spool)
    assert not list(spool.glob("*.tmp"))
    assert [s.meta["seq"] for s in pending(spool)] == [s.meta["seq"] for s in first]
    # A crash that left a segment without its sidecar must not be picked up as a segment to upload.
    (spool / "999999999999.pcap.zst").write_bytes(b"half")
    assert len(pending(spool)) == len(first)
    _, second = segment_sample(spool)  # a restarted agent continues the per-node sequence
    assert second[0].meta["seq"] == first[-1].meta["seq"] + 1
    assert json.loads((spool / "state.json").read_text())["next_seq"] == second[-1].meta["seq"] + 1
