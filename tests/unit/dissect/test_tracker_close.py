"""ConnectionTracker.close leaves nothing for the cyclic garbage collector: reference counting frees every flow."""

from __future__ import annotations

import gc

from freezeframe.capture.pcapio import Packet
from freezeframe.dissect import AppTracker, ConnectionTracker
from freezeframe.dissect.connections import _Flow, collector_paused


def live_flows() -> int:
    return sum(1 for obj in gc.get_objects() if isinstance(obj, _Flow))


def test_close_frees_every_flow_without_a_collection(sample_packets: tuple[int, list[Packet]]) -> None:
    link_type, packets = sample_packets
    gc.collect()
    before = live_flows()
    with collector_paused():
        tracker = ConnectionTracker("node", AppTracker("node"))
        tracker.feed(link_type, packets)
        tables = {"connections": tracker.finish(), **tracker.app_tables()}
        assert all(table.num_rows for table in tables.values())  # DNS, HTTP and TLS flows all took part
        assert live_flows() > before
        tracker.close()
        del tracker
        assert live_flows() == before  # without close, flows and their app handlers form cycles and stay
        assert tables["connections"].num_rows  # the tables are independent of the tracker
