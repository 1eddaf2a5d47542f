"""Two live agents on both ends of a lossy path, traffic through the look-ahead (issue 13 item 5 and Done when 1).

Topology (TEST-NET-3 addresses, only ever inside namespaces made here)::

    client ns  veth ==== veth  router ns  veth ==== veth  server ns
    203.0.113.1/30      (ip_forward; nftables drops 3 % at random)      203.0.113.6/30

An agent captures (tcpdump, libpcap) on the client's veth as node `node-client`, another on the server's as
`node-server`, on the real stack (LocalStack S3 with Object Lock, Kafka, the gateway). The client sends DNS queries
over UDP and HTTP requests (small and 64 KB responses, keep-alive) before and after the freeze; the incident's window
ends a few seconds after the freeze (its look-ahead), the segment indexer locks the late segments under the hold, and
the dissection follows it until the hold closes. The router drops packets the client's agent has already seen, so
the two views of a conversation disagree now and then.

Checked once the hold closed:
- the incident's rows per table from `freezeframe query` equal those of `freezeframe dissect` run on the incident's
  export (one `export-pcap` per node, dissected into one directory with `--node`, folded the same way);
- HTTP and DNS rows equal tshark's count of distinct requests and queries across both exports, identified as the
  product never does: HTTP by the request's TCP sequence number on its 4-tuple, DNS by 5-tuple and transaction id;
- TCP connections equal tshark's distinct (4-tuple, SYN sequence number) across both exports;
- a connection seen by both nodes is one row with both observers, and it says its views disagree exactly when
  tshark counts different packets for it on the two exports.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from freezeframe_local.functions import load_handler
from freezeframe_local.kafka import create_topics
from freezeframe_local.kafka_source import KafkaEventSource

from freezeframe.adapters import s3 as s3io
from freezeframe.adapters.bus import KafkaBus
from freezeframe.contracts.keys import incident_key
from freezeframe.contracts.models import FreezeRequest, LockSpec, Scope
from freezeframe.dissect.files import dissect_files
from freezeframe.dissect.finalize import summary_key
from freezeframe.investigate.export import ExportOptions, export_pcap
from freezeframe.investigate.query import connect_local, restrict_to_incident, run
from freezeframe_agent.main import run_capture
from tests.fixtures.waiting import until

pytestmark = pytest.mark.integration

CLIENT_IP, CLIENT_GW, SERVER_GW, SERVER_IP = "203.0.113.1", "203.0.113.2", "203.0.113.5", "203.0.113.6"
LOSS_PERCENT = 3
ITERATIONS = 40  # each: one DNS query and one HTTP request
PAUSE_S = 0.25
TRAFFIC_TIMEOUT_S = 40
TABLES = ("connections", "dns", "http", "tls")
NODES = ("node-client", "node-server")

SERVER = r'''
import http.server, socket, sys, threading

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = b"x" * int(self.path.rsplit("/", 1)[-1])
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

server = http.server.ThreadingHTTPServer((sys.argv[1], 8080), Handler)
threading.Thread(target=server.serve_forever, daemon=True).start()
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.bind((sys.argv[1], 53))
print("ready", flush=True)
while True:
    query, peer = udp.recvfrom(512)
    end = query.index(b"\0", 12) + 5  # the question: QNAME then QTYPE and QCLASS (RFC 1035 4.1.2)
    answer = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\xc0\x00\x02\x07"  # A 192.0.2.7, TTL 60
    udp.sendto(query[:2] + b"\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00" + query[12:end] + answer, peer)
'''

CLIENT = r'''
import http.client, random, socket, struct, sys, time

server, iterations, pause = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
rng = random.Random(7)
connection = None
for index in range(iterations):
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.settimeout(0.5)
    name = b"".join(bytes([len(p)]) + p for p in (b"svc%d" % index, b"example", b"test")) + b"\0"
    udp.sendto(struct.pack("!HHHHHH", rng.randrange(65536), 0x0100, 1, 0, 0, 0) + name + b"\x00\x01\x00\x01",
               (server, 53))
    try:
        udp.recvfrom(512)
    except OSError:
        pass  # lost on the way: the client's agent saw the query, the server's maybe not
    udp.close()
    if connection is None or index % 5 == 0:
        if connection is not None:
            connection.close()
        connection = http.client.HTTPConnection(server, 8080, timeout=15)
    try:
        connection.request("GET", "/bytes/%d" % (65536 if index % 3 == 0 else 100))
        connection.getresponse().read()
    except OSError:
        connection.close()
        connection = None
    time.sleep(pause)
if connection is not None:
    connection.close()
print("done", flush=True)
'''


@dataclass(frozen=True)
class LossyPath:
    client_ns: str
    client_dev: str
    server_ns: str
    server_dev: str


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def _in(ns: str, *args: str) -> None:
    subprocess.run(["ip", "netns", "exec", ns, *args], check=True, capture_output=True, timeout=10)


@pytest.fixture
def lossy_path() -> Iterator[LossyPath]:
    missing = [tool for tool in ("ip", "nft", "tcpdump", "tshark") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)}")
    tag = uuid.uuid4().hex[:6]
    client_ns, router_ns, server_ns = f"ff2c-{tag}", f"ff2r-{tag}", f"ff2s-{tag}"
    client_dev, router_client_dev, router_server_dev, server_dev = (f"ff2{tag}{end}" for end in "abcd")
    created: list[str] = []
    try:
        for ns in (client_ns, router_ns, server_ns):
            _ip("netns", "add", ns)
            created.append(ns)
        _ip("link", "add", client_dev, "type", "veth", "peer", "name", router_client_dev)
        _ip("link", "add", server_dev, "type", "veth", "peer", "name", router_server_dev)
        for ns, dev, address in ((client_ns, client_dev, CLIENT_IP), (router_ns, router_client_dev, CLIENT_GW),
                                 (router_ns, router_server_dev, SERVER_GW), (server_ns, server_dev, SERVER_IP)):
            _ip("link", "set", dev, "netns", ns)
            _ip("-n", ns, "addr", "add", f"{address}/30", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
        for ns in created:
            _ip("-n", ns, "link", "set", "lo", "up")
            _in(ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
        _ip("-n", client_ns, "route", "add", "default", "via", CLIENT_GW)
        _ip("-n", server_ns, "route", "add", "default", "via", SERVER_GW)
        _in(router_ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        # The loss: a share of the forwarded packets, at random, after the client's agent saw them.
        _in(router_ns, "nft", "add", "table", "inet", "fflossy")
        _in(router_ns, "nft", "add", "chain", "inet", "fflossy", "lossy",
            "{ type filter hook forward priority 0; }")
        _in(router_ns, "nft", "add", "rule", "inet", "fflossy", "lossy", "numgen", "random", "mod", "100", "<",
            str(LOSS_PERCENT), "drop")
        yield LossyPath(client_ns, client_dev, server_ns, server_dev)
    finally:
        for ns in created:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


def _tshark(path: Path, display_filter: str, *fields: str) -> list[list[str]]:
    args = ["tshark", "-n", "-r", str(path), "-Y", display_filter, "-T", "fields"]
    for name in fields:
        args += ["-e", name]
    out = subprocess.run(args, check=True, capture_output=True, text=True, timeout=120).stdout
    return [line.split("\t") for line in out.splitlines() if line.strip()]


def _count(config: Any, incident: str, table: str) -> int:
    sql = restrict_to_incident(f"SELECT count(*) AS n FROM {table}", incident)  # noqa: S608 - constant names
    return int(run(config, sql).rows[0][0])


def test_two_agents_on_a_lossy_path_count_conversations_once_through_the_look_ahead(
        lossy_path: LossyPath, local: Any, handler_env: Any, tmp_path: Path) -> None:
    config, s3, gateway = local
    config = config.with_(segments_topic=f"ff-two-{uuid.uuid4().hex[:8]}", hold_grace_s=3, dissect_refresh_s=2,
                          hold_settle_s=2, segment_seconds=1.0)
    handler_env(config)
    gateway.settings = config
    create_topics(config.kafka_bootstrap, [config.segments_topic])
    bus = KafkaBus(config.kafka_bootstrap)
    stop = threading.Event()
    results: dict[str, Any] = {}

    def agent(node: str, ns: str, dev: str) -> None:
        node_config = config.with_(node_name=node, spool_dir=tmp_path / f"spool-{node}")
        results[node] = run_capture(node_config, dev, None, "tcp or udp", command_prefix=("ip", "netns", "exec", ns),
                                    s3=s3, bus=bus, stop=stop)

    agents = [threading.Thread(target=agent, args=(NODES[0], lossy_path.client_ns, lossy_path.client_dev)),
              threading.Thread(target=agent, args=(NODES[1], lossy_path.server_ns, lossy_path.server_dev))]
    (tmp_path / "server.py").write_text(SERVER)
    (tmp_path / "client.py").write_text(CLIENT)
    server = subprocess.Popen(["ip", "netns", "exec", lossy_path.server_ns, sys.executable, str(tmp_path / "server.py"),
                               SERVER_IP], stdout=subprocess.PIPE, text=True)
    source: KafkaEventSource | None = None
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        window_start = datetime.now(UTC) - timedelta(seconds=1)
        for thread in agents:
            thread.start()
        time.sleep(2.0)  # both tcpdumps listening
        client = subprocess.Popen(["ip", "netns", "exec", lossy_path.client_ns, sys.executable,
                                   str(tmp_path / "client.py"), SERVER_IP, str(ITERATIONS), str(PAUSE_S)],
                                  stdout=subprocess.PIPE, text=True)
        time.sleep(4.0)  # a first part of the traffic before the freeze
        incident = f"it-two-{uuid.uuid4().hex[:6]}"
        # The look-ahead: the window ends after the traffic does, which goes on after the freeze.
        request = FreezeRequest(incident_id=incident, source="api", title="two agents", severity="high",
                                window_start=window_start, window_end=datetime.now(UTC) + timedelta(seconds=14),
                                scope=Scope(config.cluster),
                                lock=LockSpec("COMPLIANCE", datetime.now(UTC) + timedelta(days=1)))
        s3io.put_json(s3, config.evidence_bucket, incident_key(incident),
                      {"incident_id": incident, "state": "accepted", "request": request.to_dict()})
        gateway.invoke_async("freeze", {"request": request.to_dict()})
        until(lambda: s3io.exists(s3, config.evidence_bucket, summary_key(incident)), 60, "the first pass")
        source = KafkaEventSource(config.kafka_bootstrap, config.segments_topic, f"indexer-{uuid.uuid4().hex[:6]}",
                                  load_handler(config, "segment_indexer"), "freezeframe-segment-indexer",
                                  retry_backoff_s=0.5).start()
        out, _ = client.communicate(timeout=TRAFFIC_TIMEOUT_S)
        assert out.strip() == "done"
        traffic_end = datetime.now(UTC)
        assert traffic_end < request.window_end, "the traffic must end inside the window"
        until(lambda: datetime.now(UTC) > request.window_end + timedelta(seconds=1.5), 30, "the window's end")
        stop.set()
        for thread in agents:
            thread.join(60)
        until(lambda: (s3io.get_json(s3, config.evidence_bucket, summary_key(incident))["follow"]["again"]
                       is False), 60, "the last pass after the hold closed", poll_s=0.5)
    finally:
        stop.set()
        server.kill()
        server.wait(10)
        if source is not None:
            source.stop()
        bus.close()
    assert all(results.get(node) for node in NODES), "both agents uploaded segments"

    # The incident's rows as `freezeframe query` counts them.
    counts = {table: _count(config, incident, table) for table in TABLES}
    # `freezeframe dissect` of the incident's export, one export per node, folded the same way.
    offline = tmp_path / "offline"
    exports = {}
    for node in NODES:
        exports[node] = tmp_path / f"{node}.pcap"
        export_pcap(config, s3, incident, exports[node], ExportOptions(fmt="pcap", nodes=(node,), verify=True,
                                                                        progress=False))
        dissect_files([exports[node]], offline, node=node, incident_id=incident, progress=False)
    local_con = connect_local(offline)
    offline_counts = {table: int(run(None, f"SELECT count(*) FROM {table}", local_con).rows[0][0])  # noqa: S608
                      for table in TABLES}
    assert counts == offline_counts

    # tshark's distinct requests, queries and TCP connections across both exports.
    http = {tuple(f) for node in NODES for f in _tshark(exports[node], "http.request", "ip.src", "tcp.srcport",
                                                        "ip.dst", "tcp.dstport", "tcp.seq_raw")}
    dns = {tuple(f) for node in NODES for f in _tshark(exports[node], "dns.flags.response == 0", "ip.src",
                                                       "udp.srcport", "ip.dst", "udp.dstport", "dns.id")}
    syns = {tuple(f) for node in NODES for f in _tshark(exports[node], "tcp.flags.syn == 1 && tcp.flags.ack == 0",
                                                        "ip.src", "tcp.srcport", "ip.dst", "tcp.dstport",
                                                        "tcp.seq_raw")}
    per_node_http = {node: len(_tshark(exports[node], "http.request", "frame.number")) for node in NODES}
    assert counts["http"] == len(http) > 0
    assert counts["dns"] == len(dns) > 0
    assert max(per_node_http.values()) < sum(per_node_http.values()), "both nodes saw requests (else no dedup)"
    tcp_rows = run(config, restrict_to_incident(
        "SELECT src_ip, src_port, dst_ip, dst_port, isn_out, observers, views_disagree, disagreeing "
        "FROM connections WHERE proto = 'tcp'", incident)).records()
    assert {(r["src_ip"], str(r["src_port"]), r["dst_ip"], str(r["dst_port"]), str(r["isn_out"]))
            for r in tcp_rows if r["isn_out"] is not None} == syns

    # Views disagree exactly where tshark counts different packets per direction on the two nodes' exports.
    packets = {node: Counter(tuple(f) for f in _tshark(exports[node], "tcp", "ip.src", "tcp.srcport", "ip.dst",
                                                         "tcp.dstport")) for node in NODES}
    both = [r for r in tcp_rows if r["observers"] == list(NODES)]
    # Which conversations both agents saw depends on where each agent's segments start and end; the fold must have
    # had some to fold (one run saw 8 of 48, another 7), or this test would not exercise it.
    assert len(both) >= 2, f"only {len(both)} TCP conversation(s) were seen by both agents: the fold is not exercised"
    for row in both:
        out = (row["src_ip"], str(row["src_port"]), row["dst_ip"], str(row["dst_port"]))
        back = (out[2], out[3], out[0], out[1])
        differ = any(packets[NODES[0]][key] != packets[NODES[1]][key] for key in (out, back))
        assert row["views_disagree"] is differ, row
        assert bool(row["disagreeing"]) is differ
    assert any(r["views_disagree"] for r in both), f"{LOSS_PERCENT} % loss on 64 KB responses: some views differ"
    print(f"rows {counts}; tshark requests per node {per_node_http}; connections seen by both {len(both)}, "
          f"views disagree on {sum(r['views_disagree'] for r in both)}")
