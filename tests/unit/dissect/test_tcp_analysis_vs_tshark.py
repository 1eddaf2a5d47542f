"""The connections table's TCP insights against tshark 4.0's TCP analysis on crafted captures.

tshark runs inside each test on the same file; its per-frame ``tcp.analysis.*`` flags are summed per
``tcp.stream`` and compared with the row of that connection. The captures are built deterministically
(tests/fixtures/tcp_captures.py): one conversation per Wireshark analysis case, plus seeded lossy and
reordering transfers where tshark alone decides which frame is what. The packets are fed to the tracker in
several chunks, so the analysis state has to carry across capture-segment boundaries.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from freezeframe.contracts.schemas import CONNECTIONS, TCP_INSIGHTS
from freezeframe.dissect.connections import _ROW_NAMES
from freezeframe.dissect.tcp import TcpAnalysis
from tests.fixtures.tcp_captures import (
    MSS,
    TSHARK,
    Capture,
    Conversation,
    StreamReference,
    actual_counts,
    dissect_connections,
    expected_counts,
    lossy_capture,
    tracker_streams,
    tshark_streams,
)

pytestmark = pytest.mark.skipif(TSHARK is None, reason="tshark is not installed (apt-get install tshark); it is the "
                                                       "reference these tests compare against")
SAMPLE = Path(__file__).resolve().parents[2] / "fixtures" / "sample.pcap"
SECOND_US = 1_000_000


def scenarios() -> tuple[Capture, dict[str, int]]:
    """One conversation per analysis case; returns the capture and the client port of each case."""
    capture = Capture()
    ports: dict[str, int] = {}

    def conversation(name: str, **kwargs: Any) -> Conversation:
        ports[name] = 41_000 + len(ports)
        capture.tick(10_000)
        return Conversation(capture, ports[name], **kwargs)

    clean = conversation("clean")
    clean.handshake(rtt_us=300, wscale=(7, 8))
    for _ in range(3):
        clean.data(True)
    clean.ack(False)
    clean.data(False, 500)
    clean.ack(True)
    clean.close()

    rto = conversation("rto")
    rto.handshake()
    first = rto.data(True)
    rto.data(True)
    capture.tick(200_000)
    rto.data(True, rel_seq=first)
    rto.ack(False)

    fast = conversation("fast")
    fast.handshake(rtt_us=1000)
    hole = fast.data(True)  # lost on the way: captured, never acknowledged
    for _ in range(3):
        fast.data(True)
        capture.tick(50)
        fast.ack(False, rel_ack=hole)
    capture.tick(2000)
    fast.data(True, rel_seq=hole)
    fast.ack(False)

    spurious = conversation("spurious")
    spurious.handshake()
    sent = spurious.data(True)
    capture.tick(100)
    spurious.ack(False)
    capture.tick(300_000)
    spurious.data(True, rel_seq=sent)

    ooo = conversation("out_of_order")
    ooo.handshake(rtt_us=2000)
    held = ooo.data(True, emit=False)
    ooo.data(True)
    capture.tick(100)
    ooo.data(True, rel_seq=held)
    ooo.ack(False)

    lost = conversation("lost")
    lost.handshake()
    lost.data(True, emit=False)  # missed by the capture
    lost.data(True)
    lost.ack(False)

    zero = conversation("zero_window")
    zero.handshake()
    zero.data(True)
    zero.ack(False, window=0)
    capture.tick(200_000)
    zero.data(True, 1)  # zero-window probe
    zero.ack(False, window=0, rel_ack=zero.client.next_seq - 1)
    capture.tick(400_000)
    zero.ack(False, window=30_000, rel_ack=zero.client.next_seq - 1)

    full = conversation("window_full")
    full.handshake()
    full.ack(False, window=2 * MSS)
    full.data(True, 2 * MSS)
    full.ack(False)

    keepalive = conversation("keep_alive")
    keepalive.handshake()
    keepalive.data(True)
    keepalive.ack(False)
    capture.tick(60 * SECOND_US)
    keepalive.ack(True, rel_seq=keepalive.client.next_seq - 1)
    keepalive.ack(False)

    reset = conversation("reset_after_data")
    reset.handshake()
    reset.data(True)
    reset.ack(False, flags="RA")

    refused = conversation("refused", server_port=9)
    refused.syn()
    capture.tick(40)
    refused.ack(False, rel_seq=0, rel_ack=1, flags="RA")

    unanswered = conversation("unanswered", server_port=10)
    unanswered.syn()
    capture.tick(SECOND_US)
    capture.segment(unanswered.client, unanswered.server, "S", 0)

    midstream = conversation("midstream")
    midstream.client.next_seq = midstream.server.next_seq = 50_001
    midstream.data(True)
    midstream.ack(False)
    return capture, ports


@pytest.fixture(scope="module")
def scenario_capture(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    capture, ports = scenarios()
    return capture.write(tmp_path_factory.mktemp("tcp") / "scenarios.pcap"), ports


@pytest.fixture(scope="module")
def scenario_rows(scenario_capture: tuple[Path, dict[str, int]]) -> dict[str, dict[str, Any]]:
    path, ports = scenario_capture
    by_port = {row["src_port"]: row for row in dissect_connections(path, chunks=5).to_pylist()}
    return {name: by_port[port] for name, port in ports.items()}


@pytest.fixture(scope="module")
def scenario_reference(scenario_capture: tuple[Path, dict[str, int]]) -> dict[str, StreamReference]:
    path, ports = scenario_capture
    by_port = {reference.first_src[1]: reference for reference in tshark_streams(path).values()}
    return {name: by_port[port] for name, port in ports.items()}


def assert_matches_tshark(row: dict[str, Any], reference: StreamReference) -> None:
    assert actual_counts(row) == expected_counts(reference)
    initial_rtt_us = reference.initial_rtt_ns / 1000 if reference.initial_rtt_ns is not None else None
    if initial_rtt_us is None:
        assert row["handshake_us"] is None
    else:
        assert row["handshake_us"] is not None and abs(row["handshake_us"] - initial_rtt_us) <= 1
    samples = reference.rtt_ns
    assert row["rtt_samples"] == len(samples)
    if samples:
        assert abs(row["rtt_min_us"] - min(samples) / 1000) <= 1
        assert abs(row["rtt_max_us"] - max(samples) / 1000) <= 1
        assert abs(row["rtt_avg_us"] - sum(samples) / len(samples) / 1000) <= 1
    assert row["bytes_total"] == reference.payload_bytes
    assert row["goodput_bytes"] == reference.payload_bytes - reference.retransmitted_bytes
    assert row["rst_count"] == reference.rst
    assert row["fin_count"] == reference.fin


@pytest.mark.parametrize(("case", "column"), [
    ("rto", "retransmissions"),
    ("fast", "fast_retransmissions"),
    ("spurious", "spurious_retransmissions"),
    ("out_of_order", "out_of_order"),
    ("fast", "dup_acks"),
    ("lost", "lost_segments"),
    ("zero_window", "zero_window_events"),
    ("window_full", "window_full_events"),
    ("keep_alive", "keepalives"),
    ("unanswered", "retransmissions"),
])
def test_each_analysis_case_matches_tshark(case: str, column: str, scenario_rows: dict[str, dict[str, Any]],
                                           scenario_reference: dict[str, StreamReference]) -> None:
    reference = scenario_reference[case]
    assert reference.counts.get(column, 0) >= 1, f"the {case} fixture no longer makes tshark report {column}"
    assert_matches_tshark(scenario_rows[case], reference)


def test_every_scenario_conversation_matches_tshark(scenario_rows: dict[str, dict[str, Any]],
                                                    scenario_reference: dict[str, StreamReference]) -> None:
    assert scenario_rows.keys() == scenario_reference.keys()
    for name, row in scenario_rows.items():
        assert_matches_tshark(row, scenario_reference[name])


@pytest.mark.parametrize(("seed", "ipv6"), [(1, False), (2, False), (3, True)])
def test_lossy_reordering_transfers_match_tshark(seed: int, ipv6: bool, tmp_path: Path) -> None:
    path = lossy_capture(seed, ipv6=ipv6).write(tmp_path / f"lossy-{seed}.pcap")
    reference = tshark_streams(path)
    rows = tracker_streams(dissect_connections(path, chunks=4))
    assert rows.keys() == reference.keys()
    totals: dict[str, int] = {}
    for key, stream in reference.items():
        assert_matches_tshark(rows[key], stream)
        for name, count in stream.counts.items():
            totals[name] = totals.get(name, 0) + count
    # The generator is only useful while it makes tshark see every kind of event.
    for name in ("retransmissions", "fast_retransmissions", "spurious_retransmissions", "out_of_order", "dup_acks",
                 "lost_segments", "zero_window_events", "window_full_events", "keepalives"):
        assert totals.get(name, 0) > 0, name


def test_sample_capture_matches_tshark() -> None:
    reference = tshark_streams(SAMPLE)
    rows = tracker_streams(dissect_connections(SAMPLE, chunks=3))
    assert rows.keys() >= reference.keys()
    for key, stream in reference.items():
        assert_matches_tshark(rows[key], stream)


def test_state_carries_across_segment_boundaries(tmp_path: Path) -> None:
    path = lossy_capture(7).write(tmp_path / "lossy.pcap")
    whole = dissect_connections(path, chunks=1)
    split = dissect_connections(path, chunks=97)
    assert split.equals(whole)


# Zeek's conn_state and history (base/protocols/conn/main.zeek), and close, as each conversation was built.
@pytest.mark.parametrize(("case", "conn_state", "history", "close"), [
    ("clean", "SF", "ShADadFf", "fin"),
    ("reset_after_data", "RSTR", "ShADr", "rst"),
    ("refused", "REJ", "Sr", "handshake_failed"),
    ("unanswered", "S0", "ST", "handshake_failed"),
    ("midstream", "OTH", "Da", "open"),
    ("zero_window", "S1", "ShADaw", "open"),
])
def test_zeek_state_history_and_close(case: str, conn_state: str, history: str, close: str,
                                      scenario_rows: dict[str, dict[str, Any]]) -> None:
    row = scenario_rows[case]
    assert (row["conn_state"], row["history"], row["close"]) == (conn_state, history, close)


def test_handshake_columns_and_window_scale(scenario_rows: dict[str, dict[str, Any]]) -> None:
    clean = scenario_rows["clean"]
    # Built with 150 us to the SYN-ACK, 300 us to the final ACK, and the first data right after the handshake.
    assert (clean["syn_to_synack_us"], clean["handshake_us"], clean["time_to_first_data_us"]) == (150, 300, 300)
    assert (clean["window_scale"], clean["window_scale_in"]) == (7, 8)
    assert scenario_rows["rto"]["window_scale"] is None
    refused = scenario_rows["refused"]
    assert refused["syn_to_synack_us"] is None
    assert refused["completeness"] == 37
    assert scenario_rows["midstream"]["handshake_us"] is None


def test_rates_and_udp_rows_are_consistent() -> None:
    table: pa.Table = dissect_connections(SAMPLE)
    for row in table.to_pylist():
        if row["proto"] != "tcp":
            assert row["retransmissions"] is None and row["conn_state"] is None
            continue
        assert row["retransmissions"] == row["retransmissions_out"] + row["retransmissions_in"]
        assert row["dup_acks"] == row["dup_acks_out"] + row["dup_acks_in"]
        if row["bytes_total"] == 0:  # no payload segment: no rate (NULL), whatever was retransmitted
            assert row["retransmission_rate"] is None
        else:
            assert 0.0 <= row["retransmission_rate"] <= row["retransmissions"]
        assert row["goodput_bytes"] <= row["bytes_total"] == row["payload_bytes_out"] + row["payload_bytes_in"]


def test_row_layouts_follow_the_schema() -> None:
    # finish() builds rows as tuples: their order must be the schema's, and the analysis' columns TCP_INSIGHTS'.
    assert _ROW_NAMES == tuple(CONNECTIONS.names)
    assert list(TcpAnalysis().columns()) == [field.name for field in TCP_INSIGHTS]


def test_timestamps_out_of_capture_order_match_tshark(tmp_path: Path) -> None:
    # Captures merged from several CPUs can step back in time; Wireshark's unsigned time differences then wrap.
    capture = lossy_capture(3)
    steps_back = [0, 0, 0, 200_000, 3_000_000]
    capture.frames = [(ts - steps_back[index % len(steps_back)], data)
                      for index, (ts, data) in enumerate(capture.frames)]
    assert any(later[0] < earlier[0] for earlier, later in zip(capture.frames, capture.frames[1:], strict=False))
    path = capture.write(tmp_path / "jittered.pcap")
    # Keyed by the endpoints alone: each conversation of the capture has its own client port.
    reference = {endpoints: stream for (endpoints, _first), stream in tshark_streams(path).items()}
    rows = {endpoints: row for (endpoints, _first), row in tracker_streams(dissect_connections(path, chunks=3)).items()}
    assert rows.keys() == reference.keys()
    for endpoints, stream in reference.items():
        assert_matches_tshark(rows[endpoints], stream)
