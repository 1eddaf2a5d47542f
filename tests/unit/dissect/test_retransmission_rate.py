"""`retransmission_rate` is NULL, not 0.0, when a connection carried no payload (issue 13: the report showed
"0.00 %" beside 7 retransmissions of an unanswered SYN). tshark on the same capture is the reference for the
retransmission and payload counts."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from freezeframe.contracts.schemas import CONNECTIONS
from freezeframe.dissect.chunks import _SEGMENTS, merge_connections
from tests.fixtures.tcp_captures import (
    TSHARK,
    Capture,
    Conversation,
    dissect_connections,
    tracker_streams,
    tshark_streams,
)


def _unanswered_syns(path: Path, tries: int) -> Path:
    """A connect() that nobody answers: the SYN and its retransmissions (exponential backoff), no payload."""
    capture = Capture()
    conversation = Conversation(capture, 41_000, 8080)
    for attempt in range(tries):
        conversation.capture.segment(conversation.client, conversation.server, "S", 0,
                                     options=[("MSS", 1460)])
        capture.tick(1_000_000 * 2 ** attempt)
    return capture.write(path)


def _with_payload(path: Path) -> Path:
    capture = Capture()
    conversation = Conversation(capture, 41_001, 8080)
    conversation.handshake()
    conversation.data(True, 300)
    capture.tick(200)
    conversation.data(True, 300, rel_seq=1)  # the same bytes again: a retransmission
    capture.tick(200)
    conversation.ack(False)
    return capture.write(path)


@pytest.mark.skipif(TSHARK is None, reason="needs tshark")
def test_retransmitted_syns_without_payload_have_no_rate(tmp_path: Path) -> None:
    path = _unanswered_syns(tmp_path / "syns.pcap", tries=7)
    (reference,) = tshark_streams(path).values()
    assert reference.payload_bytes == 0 and reference.counts["retransmissions"] == 6
    for chunks in (1, 3):
        (row,) = tracker_streams(dissect_connections(path, chunks=chunks)).values()
        assert row["retransmissions"] == 6
        assert row["retransmission_rate"] is None, chunks


@pytest.mark.skipif(TSHARK is None, reason="needs tshark")
def test_a_connection_with_payload_keeps_its_rate(tmp_path: Path) -> None:
    path = _with_payload(tmp_path / "payload.pcap")
    (reference,) = tshark_streams(path).values()
    assert reference.counts["retransmissions"] == 1
    (row,) = tracker_streams(dissect_connections(path)).values()
    # two segments carried payload (the original and its retransmission): 1 / 2
    assert row["retransmissions"] == 1 and row["retransmission_rate"] == pytest.approx(0.5)


def test_merging_parts_without_payload_keeps_the_rate_null() -> None:
    base = {name: None for name in CONNECTIONS.names}
    rows = []
    for index, first in enumerate((1_000, 3_000)):
        rows.append({**base, "node": "n", "conn_id": f"c{index}", "proto": "tcp", "src_ip": "10.0.0.1",
                     "src_port": 1, "dst_ip": "10.0.0.2", "dst_port": 2, "first_ts_ns": first,
                     "last_ts_ns": first + 1_000, "retransmissions": 3, "retransmission_rate": None,
                     "packets_out": 3, "packets_in": 0, "bytes_out": 180, "bytes_in": 0, "history": "S",
                     "close": "handshake_failed"})
    parts = [pa.Table.from_pylist([row], schema=CONNECTIONS) for row in rows]
    merged = merge_connections("n", parts, [{"c0": 0}, {"c1": 0}])
    assert merged.merged_rows == 1 and _SEGMENTS not in merged.table.column_names
    assert [r["retransmission_rate"] for r in merged.table.to_pylist()] == [None] * merged.table.num_rows
