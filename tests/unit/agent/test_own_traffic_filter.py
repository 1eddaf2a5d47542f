"""The agent's default capture leaves out its own Kafka and S3 traffic: the exclusion built from the settings is
run by tcpdump (libpcap) over a crafted capture, which keeps exactly the other packets."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

from freezeframe.capture.bpf import DLT_EN10MB, capture_filter, compile_error, own_traffic_exclusion
from freezeframe.contracts.config import Settings

NODE = "10.0.1.17"
BROKERS = {"b-1.msk.example": ["10.0.2.11"], "b-2.msk.example": ["10.0.3.12"]}
SETTINGS = Settings(kafka_bootstrap="b-1.msk.example:9098,b-2.msk.example:9098",
                    own_traffic_nets=("52.216.0.0/15", "3.5.0.0/19"))


def resolve(host: str) -> list[str]:
    return BROKERS.get(host, [])


def test_exclusion_names_each_broker_and_the_s3_networks() -> None:
    assert own_traffic_exclusion(SETTINGS, resolve) == (
        "not ((host 10.0.2.11 and tcp port 9098) or (host 10.0.3.12 and tcp port 9098) or "
        "(net 52.216.0.0/15 and tcp port 443) or (net 3.5.0.0/19 and tcp port 443))")
    assert capture_filter("", SETTINGS.with_(exclude_own_traffic=False), resolve) == ""
    combined = capture_filter("tcp or udp", SETTINGS, resolve)
    assert combined.startswith("(tcp or udp) and not (") and compile_error(combined, DLT_EN10MB) is None
    local = Settings(kafka_bootstrap="127.0.0.1:9092", s3_endpoint="http://127.0.0.1:4566")
    assert own_traffic_exclusion(local, resolve) == ("not ((host 127.0.0.1 and tcp port 9092) or "
                                                     "(host 127.0.0.1 and tcp port 4566))")


def test_tcpdump_keeps_only_the_traffic_that_is_not_the_agents(tmp_path: Path) -> None:
    if shutil.which("tcpdump") is None:
        pytest.skip("tcpdump is the reference")
    flows = {  # (destination, port): kept?
        ("10.0.2.11", 9098): False,  # the agent's Kafka producer
        ("10.0.3.12", 9098): False,
        ("52.217.4.20", 443): False,  # S3 through the gateway endpoint
        ("3.5.1.9", 443): False,
        ("10.0.2.11", 8080): True,  # another service on a broker's host
        ("10.0.9.9", 9098): True,  # someone else's Kafka
        ("93.184.216.34", 443): True,  # HTTPS elsewhere
    }
    packets = [Ether() / IP(src=NODE, dst=dst) / TCP(sport=40000 + i, dport=port, flags="S")
               for i, (dst, port) in enumerate(flows)]
    packets += [Ether() / IP(src=dst, dst=NODE) / TCP(sport=port, dport=40000 + i, flags="SA")
                for i, (dst, port) in enumerate(flows)]
    source, kept = tmp_path / "all.pcap", tmp_path / "kept.pcap"
    wrpcap(str(source), packets)
    subprocess.run(["tcpdump", "-r", str(source), "-w", str(kept), capture_filter("", SETTINGS, resolve)],
                   check=True, capture_output=True)
    lines = subprocess.run(["tcpdump", "-nn", "-r", str(kept)], check=True, capture_output=True,
                           text=True).stdout.splitlines()
    expected = sum(2 for keep in flows.values() if keep)
    assert len(lines) == expected, lines
    assert not any("9098" in line and ("10.0.2.11" in line or "10.0.3.12" in line) for line in lines)
