"""`freezeframe demo`: the whole story on one machine.

Agent replay of the bundled capture -> segments in S3 + records on the bus -> an Alertmanager webhook through the
local Function URL -> freeze (in-place locks, locked manifest) -> dissection to Parquet -> SQL. By default on the
embedded stack (in-process moto S3, file-backed bus); with --kafka/--s3-endpoint on real services.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import shutil
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from freezeframe.adapters import s3 as s3io
from freezeframe.adapters.bus import open_bus
from freezeframe.adapters.s3 import ObjectStore
from freezeframe.contracts.config import Settings, env_overrides, export_env
from freezeframe.contracts.errors import FreezeframeError, NotFoundError
from freezeframe.contracts.keys import check_name, dissect_status_key, summary_key
from freezeframe.contracts.models import iso
from freezeframe.custody.incident import load_incident
from freezeframe.dissect.files import first_timestamp
from freezeframe.investigate.query import connect, run
from freezeframe_local import demo_store
from freezeframe_local.functions import functions_dir
from freezeframe_local.gateway import LocalGateway

DEMO_NODE = "node-a"
DEMO_SPEEDUP = 30.0


@dataclass(frozen=True, slots=True)
class DemoQuery:
    title: str
    sql: str


def demo_queries(incident_id: str) -> list[DemoQuery]:
    # check_name admits only [A-Za-z0-9._:-], so the id cannot break out of the quoted literal.
    where = f"incident_id = '{check_name('incident_id', incident_id)}'"
    return [
        DemoQuery("Conversations by protocol",
                  f"SELECT proto, count(*) AS connections, sum(packets_out + packets_in) AS packets, "  # noqa: S608
                  f"sum(bytes_out + bytes_in) AS bytes FROM freezeframe.connections WHERE {where} "
                  f"GROUP BY proto ORDER BY proto"),
        # A SYN answered by a bare RST is 33 (SYN|RST); answered by RST-ACK, as Linux does, it is 37 (SYN|ACK|RST).
        DemoQuery("Refused connections (SYN answered by RST: completeness 33 or 37)",
                  f"SELECT src_ip, dst_ip, dst_port, completeness FROM freezeframe.connections "  # noqa: S608
                  f"WHERE {where} AND proto = 'tcp' AND completeness IN (33, 37) ORDER BY first_ts_ns"),
        DemoQuery("HTTP errors, first one first",
                  f"SELECT ts, src_ip, dst_ip, method, host, path, status, latency_us FROM freezeframe.http "  # noqa: S608
                  f"WHERE {where} AND status >= 400 ORDER BY ts_ns"),
    ]


def sample_capture(config: Settings, workdir: Path) -> Path:
    bundled = functions_dir(config).parent / "tests" / "fixtures" / "sample.pcap"
    if bundled.is_file():
        return bundled
    from freezeframe_local.samples import write_sample_pcap  # scapy only when the bundled file is missing

    generated = workdir / "sample.pcap"
    write_sample_pcap(generated)
    return generated


def alertmanager_payload(starts_at: datetime, cluster: str) -> dict[str, Any]:
    return {
        "version": "4", "groupKey": '{}:{alertname="CheckoutErrorRate"}', "truncatedAlerts": 0, "status": "firing",
        "receiver": "freezeframe", "groupLabels": {"alertname": "CheckoutErrorRate"},
        "commonLabels": {"alertname": "CheckoutErrorRate", "severity": "critical", "cluster": cluster},
        "commonAnnotations": {"summary": "checkout 5xx rate above 5%"}, "externalURL": "http://alertmanager.local",
        "alerts": [{
            "status": "firing",
            "labels": {"alertname": "CheckoutErrorRate", "severity": "critical", "cluster": cluster,
                       "namespace": "shop"},
            "annotations": {"summary": "checkout 5xx rate above 5%"},
            "startsAt": iso(starts_at), "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus.local/graph", "fingerprint": secrets.token_hex(8),
        }],
    }


def post_json(url: str, document: dict[str, Any], token: str) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=json.dumps(document).encode(), method="POST",  # noqa: S310
                                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:  # noqa: S310 - a loopback URL we built
            return reply.status, json.loads(reply.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


DEFAULT_DIRECTORY = Path("freezeframe-demo")


def next_commands(directory: Path) -> list[str]:
    """What to try on the demo's evidence after it exits (the README shows the same lines)."""
    return [f"freezeframe query --demo {directory} --scenario listen-queue-overflow",
            f"freezeframe query --demo {directory} --scenario errors-while-endpoints-terminating",
            f"freezeframe report --demo {directory} -o {directory}/report-again.html",
            f"freezeframe export-pcap --demo {directory} -o {directory}/incident.pcapng",
            f"freezeframe verify --demo {directory}"]


def write_context(config: Settings, s3: ObjectStore, offset_ns: int) -> tuple[int, int]:
    """The sample's Kubernetes records and node-state documents (freezeframe_local.sample_context), retimed like the
    replay, written where the k8s indexer and the agent write them. Returns (records, documents)."""
    from freezeframe.contracts.keys import node_state_key
    from freezeframe.freeze import k8s_context
    from freezeframe_local import sample_context

    records = sample_context.k8s_records(config.cluster, offset_ns)
    k8s_context.write_batch(config, s3, [k8s_context.K8sRecord(0, index, record)
                                         for index, record in enumerate(records)])
    documents = sample_context.node_state_documents(config.cluster, offset_ns)
    for document in documents:
        body = document.encode()
        digest = hashlib.sha256(body).hexdigest()
        s3io.put_segment(s3, config.raw_bucket, node_state_key(config.cluster, document.node, document.start_ns,
                                                               document.end_ns),
                         body, digest, {"sha256": digest, "node": document.node, "schema": document.schema})
    return len(records), len(documents)


def run_demo(kafka: str | None = None, s3_endpoint: str | None = None, workdir: Path | None = None,
             say: Callable[[str], None] = print, directory: Path | None = None) -> dict[str, Any]:
    """The whole story; on the embedded S3, the evidence is kept in `directory` (default ./freezeframe-demo), signed
    with a demo key it generates, so `query`, `report`, `export-pcap` and `verify --demo DIR` work after it exits."""
    from freezeframe_agent.main import run_replay  # the agent package is installed beside the core

    started = time.monotonic()
    scratch = tempfile.TemporaryDirectory(prefix="freezeframe-demo-")
    workdir = workdir or Path(scratch.name)
    moto_server = None
    keep = s3_endpoint is None  # the embedded S3 goes away with the demo: its evidence is kept in `directory`
    directory = (directory or DEFAULT_DIRECTORY).resolve() if keep else None
    if directory is not None:
        demo_store.reset_directory(directory)
    if s3_endpoint is None:
        from freezeframe_local.s3 import start_moto

        moto_server, endpoint = start_moto()
        s3_endpoint = endpoint.url
        say(f"S3: embedded moto at {s3_endpoint} (Object Lock enforced on deletes; use `freezeframe up` for WORM)")
    else:
        say(f"S3: {s3_endpoint}")
    say(f"segment bus: {'Kafka at ' + kafka if kafka else 'embedded file bus in ' + str(workdir / 'bus')}")
    token = secrets.token_urlsafe(24)
    config = Settings(cluster="demo", node_name=DEMO_NODE, s3_endpoint=s3_endpoint, kafka_bootstrap=kafka,
                      bus_dir=None if kafka else workdir / "bus", spool_dir=workdir / "spool",
                      state_dir=workdir / "state", lock_retain_days=1, alertmanager_token_env=token,
                      raw_bucket="freezeframe-raw", evidence_bucket="freezeframe-evidence")
    tsa_server = None
    if keep:
        # The demo's own signing key and time-stamping authority (moto's KMS signatures do not verify): the
        # custody chain is then checkable offline against the public key and roots kept in `directory`.
        from freezeframe.adapters.local_signer import LocalKeySigner
        from freezeframe_local.tsa import ensure_authority, make_server

        private = workdir / "private"
        signer = LocalKeySigner.generate(private / "demo-signing-key.pem")
        authority = ensure_authority(private / "tsa")
        tsa_server = make_server(authority, 0)
        threading.Thread(target=tsa_server.serve_forever, name="demo-tsa", daemon=True).start()
        config = config.with_(signing_key_file=Path(signer.source),
                              tsa_url=f"http://127.0.0.1:{tsa_server.server_address[1]}/tsr",
                              tsa_ca_file=authority.ca_pem)
        say("custody: signing with a demo key generated for this run (ECDSA P-256) and a local time-stamping "
            "authority")
    gateway = LocalGateway(config)
    config = config.with_(lambda_endpoint=gateway.url)
    gateway.settings = config
    # The handlers read their settings from the environment, exactly as in Lambda.
    export_env(env_overrides(config), {"POWERTOOLS_TRACE_DISABLED": "true", "POWERTOOLS_SERVICE_NAME": "freezeframe",
                                       "POWERTOOLS_METRICS_NAMESPACE": "freezeframe", "POWERTOOLS_LOG_LEVEL": "WARNING",
                                       "POWERTOOLS_METRICS_DISABLED": "true"})  # EMF lines would clutter the console
    s3 = s3io.client(config)
    s3io.ensure_buckets(s3, config)
    if kafka:
        from freezeframe_local.kafka import create_topics

        create_topics(kafka, [config.segments_topic])
    gateway.start()
    try:
        capture = sample_capture(config, workdir)
        say(f"agent: replaying {capture.name} at {DEMO_SPEEDUP:g}x as node {DEMO_NODE}")
        first_ns = first_timestamp(capture) or 0
        offset_ns = time.time_ns() - first_ns  # what the replay adds to every timestamp (to within milliseconds)
        records = run_replay(config, capture, speedup=DEMO_SPEEDUP, s3=s3)
        k8s_records, documents = write_context(config, s3, offset_ns)
        say(f"context: {k8s_records} Kubernetes records (pods, Services, EndpointSlices, the node) and "
            f"{documents} node-state documents of {DEMO_NODE}")
        bus = open_bus(config)
        published = [r for r in bus.read(config.segments_topic, timeout_s=5.0)
                     if r.value.get("node") == DEMO_NODE and r.value.get("key") in {s.key for s in records}]
        bus.close()
        say(f"agent: {len(records)} segments uploaded, {len(published)} records on {config.segments_topic}")

        status, reply = post_json(f"{gateway.url}/v1/alerts/alertmanager",
                                  alertmanager_payload(datetime.now(UTC), config.cluster), token)
        if status != 202 or not reply.get("accepted"):
            raise FreezeframeError(f"webhook answered {status}: {reply}")
        incident_id = reply["accepted"][0]
        say(f"alert: Alertmanager webhook accepted (202) as incident {incident_id}")
        if not gateway.wait_idle(timeout_s=45):
            raise FreezeframeError("freeze/dissect did not finish within 45 s")
        failed = [i for i in gateway.invocations if i.state == "failed"]
        if failed:
            raise FreezeframeError(f"async invocations failed: {[(i.function, i.error) for i in failed]}")
        incident = load_incident(config, s3, incident_id, record=False)
        manifest = incident.manifest_document
        locked = [s for s in manifest["segments"] if s["lock_mode"] == manifest["request"]["lock"]["mode"]]
        delete_refused = _delete_refused(s3, config.raw_bucket, manifest["segments"][0]) if locked else False
        say(f"freeze: {len(locked)} of {len(manifest['segments'])} segment versions locked "
            f"{manifest['request']['lock']['mode']}; manifest root hash {manifest['root_hash'][:16]}…; "
            f"delete of a locked version refused: {delete_refused}")
        tables: dict[str, int] = {}
        for node in sorted({s["node"] for s in manifest["segments"]}):
            report = incident.statuses.get(node)
            if report is None:
                raise NotFoundError(f"no dissect status of node {node} at {dissect_status_key(incident_id, node)}")
            for table, rows in report.tables.items():
                tables[table] = tables.get(table, 0) + rows
        say(f"dissect: {tables}")
        con = connect(config)
        queries = []
        for query in demo_queries(incident_id):
            result = run(config, query.sql, con)
            say(f"\n{query.title}\n{query.sql}")
            from freezeframe.investigate.query import format_table

            say(format_table(result))
            queries.append({"sql": query.sql, "rows": result.records()})
        # The dissection's finalize step wrote the incident summary and, in it, where the report went.
        if incident.summary is None:
            raise NotFoundError(f"finalize wrote no summary at {summary_key(incident_id)}")
        report_key = incident.summary.report.get("key")
        if not report_key:
            raise FreezeframeError(f"finalize wrote no report: {dict(incident.summary.report)}")
        report_copy = (directory or workdir) / "report.html"  # the embedded S3 goes away with the demo
        report_copy.parent.mkdir(parents=True, exist_ok=True)
        report_copy.write_bytes(s3io.get_bytes(s3, config.evidence_bucket, report_key))
        say(f"\nreport: s3://{config.evidence_bucket}/{report_key}\n        copy at {report_copy}")
        outcome: dict[str, Any] = {
            "incident_id": incident_id, "segments": len(records), "published": len(published), "locked": len(locked),
            "delete_refused": delete_refused, "root_hash": manifest["root_hash"], "tables": tables,
            "queries": queries, "report": str(report_copy), "directory": None, "next": []}
        if directory is not None:
            demo_store.save(s3, config, directory, incident_id)
            (directory / demo_store.PUBLIC_KEY).write_bytes(signer.public_key_pem())
            shutil.copyfile(authority.ca_pem, directory / demo_store.TSA_ROOTS)
            outcome.update(directory=str(directory), next=next_commands(directory))
            say(f"\nevidence kept in {directory} (signed with a demo key; its public half is "
                f"{directory / demo_store.PUBLIC_KEY}). Next:")
            for command in next_commands(directory):
                say(f"  {command}")
        outcome["seconds"] = round(time.monotonic() - started, 2)
        return outcome
    finally:
        gateway.stop()
        if tsa_server is not None:
            tsa_server.shutdown()
            tsa_server.server_close()
        if moto_server is not None:
            moto_server.stop()
        scratch.cleanup()  # the demo key's private half goes with it


def _delete_refused(s3: ObjectStore, bucket: str, segment: dict[str, Any]) -> bool:
    return s3io.delete_refused(s3, bucket, segment["key"], segment["version_id"])
