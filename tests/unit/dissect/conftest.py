"""Shared by the application-table tests: the sample dissected once, and tshark as the reference."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pytest

from freezeframe.capture.pcapio import Packet, PcapReader
from freezeframe.dissect import AppTracker, ConnectionTracker

SAMPLE = Path(__file__).resolve().parents[2] / "fixtures" / "sample.pcap"
TSHARK = shutil.which("tshark")

TsharkFields = Callable[..., list[list[str]]]


def dissect(link_type: int, chunks: list[list[Packet]], node: str = "node-a") -> dict[str, pa.Table]:
    """All tables from one pass: connections plus what AppTracker built from the same decode."""
    tracker = ConnectionTracker(node, AppTracker(node))
    for chunk in chunks:
        tracker.feed(link_type, chunk)
    return {"connections": tracker.finish(), **tracker.app_tables()}


@pytest.fixture(scope="session")
def sample_packets() -> tuple[int, list[Packet]]:
    with SAMPLE.open("rb") as stream:
        reader = PcapReader(stream)
        return reader.link_type, list(reader)


@pytest.fixture(scope="session")
def sample_tables(sample_packets: tuple[int, list[Packet]]) -> dict[str, pa.Table]:
    link_type, packets = sample_packets
    return dissect(link_type, [packets])


@pytest.fixture
def tshark_fields() -> TsharkFields:
    """``tshark_fields(filter, fields, *options)``: one list of values per displayed frame of the sample."""
    if TSHARK is None:
        pytest.skip("tshark is not installed (apt-get install tshark); it is the reference these tests compare against")

    def run(display_filter: str, fields: list[str], *options: str, path: Path = SAMPLE) -> list[list[str]]:
        args = [str(TSHARK), "-n", "-r", str(path), "-Y", display_filter, "-T", "fields", "-E", "separator=/t",
                "-E", "occurrence=a", "-E", "aggregator=,", *options]
        for field in fields:
            args += ["-e", field]
        out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
        return [line.split("\t") for line in out.splitlines() if line]

    return run
