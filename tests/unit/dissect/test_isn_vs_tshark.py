"""isn_out / isn_in (the identity of a TCP connection across nodes) are the raw sequence numbers tshark reports for
the SYN and the SYN-ACK of each connection (tshark 4.0, `tcp.seq_raw`), on the sample capture and on a capture
where the SYN was missed (the responder's SYN-ACK opens the connection)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from freezeframe.capture.pcapio import PcapReader, PcapWriter, open_capture
from freezeframe.dissect import native
from freezeframe.dissect.connections import ConnectionTracker
from freezeframe.dissect.job import dissect_segments
from tests.fixtures.native_compare import sources

SAMPLE = Path(__file__).resolve().parents[2] / "fixtures" / "sample.pcap"
pytestmark = pytest.mark.skipif(shutil.which("tshark") is None, reason="needs tshark")


def _ours(path: Path, engine: str = "python") -> set[tuple[str, int, str, int, int | None, int | None]]:
    if engine == "native":  # the compiled core, through the job's engine switch
        rows = dissect_segments("n", sources([path.read_bytes()]), engine="native").tables["connections"].to_pylist()
    else:
        tracker = ConnectionTracker("n")
        with path.open("rb") as stream:
            tracker.feed_runs(open_capture(stream).runs())
        rows = tracker.finish().to_pylist()
    return {(r["src_ip"], r["src_port"], r["dst_ip"], r["dst_port"], r["isn_out"], r["isn_in"])
            for r in rows
            if r["proto"] == "tcp" and (r["isn_out"], r["isn_in"]) != (None, None)}


def _tshark(path: Path, initiators: dict[tuple[str, int, str, int], bool] | None = None
            ) -> set[tuple[str, int, str, int, int | None, int | None]]:
    out = subprocess.run(["tshark", "-n", "-r", str(path), "-Y", "tcp.flags.syn == 1", "-T", "fields", "-e", "ip.src",
                          "-e", "tcp.srcport", "-e", "ip.dst", "-e", "tcp.dstport", "-e", "tcp.flags.ack", "-e",
                          "tcp.seq_raw"], check=True, capture_output=True, text=True).stdout
    syn: dict[tuple[str, int, str, int], int] = {}
    synack: dict[tuple[str, int, str, int], int] = {}
    for line in out.splitlines():
        src, sport, dst, dport, ack, seq = line.split("\t")
        if ack in ("0", "False"):
            syn.setdefault((src, int(sport), dst, int(dport)), int(seq))
        else:  # keyed by the initiator's side: the SYN-ACK's receiver
            synack.setdefault((dst, int(dport), src, int(sport)), int(seq))
    return {(*key, syn.get(key), synack.get(key)) for key in set(syn) | set(synack)}


ENGINES = ["python", pytest.param("native", marks=pytest.mark.skipif(
    native.extension() is None, reason="the freezeframe_native extension is not built"))]


@pytest.mark.parametrize("engine", ENGINES)
def test_isns_are_the_syn_and_syn_ack_sequence_numbers(engine: str) -> None:
    expected = _tshark(SAMPLE)
    assert expected and _ours(SAMPLE, engine) == expected


@pytest.mark.parametrize("engine", ENGINES)
def test_a_missed_syn_leaves_isn_out_null(tmp_path: Path, engine: str) -> None:
    without_syns = tmp_path / "no-syn.pcap"
    with SAMPLE.open("rb") as source, without_syns.open("wb") as sink:
        reader = PcapReader(source)
        writer = PcapWriter(sink, reader.link_type)
        for packet in reader:
            flags = packet.data[14 + 20 + 13] if len(packet.data) > 14 + 20 + 13 and packet.data[23] == 6 else 0
            if flags & 0x12 != 0x02:  # every pure SYN left out
                writer.write(packet.ts_ns, packet.data, packet.orig_len)
    ours = _ours(without_syns, engine)  # connections with a SYN-ACK seen; the others have no ISN at all
    assert ours == _tshark(without_syns)
    assert ours and all(row[4] is None and row[5] is not None for row in ours)
