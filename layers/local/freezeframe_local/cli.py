"""The `freezeframe` command: local stack, demo, SQL, sample captures."""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from freezeframe.contracts.config import (
    forgo_numpy,
    interactive_s3,
    process_defaults,
    settings,
)
from freezeframe.contracts.errors import FreezeframeError
from freezeframe.contracts.logsetup import cli_logging
from freezeframe_local import custody_cli

if TYPE_CHECKING:
    from freezeframe.contracts.config import Settings
    from freezeframe.investigate.query import QueryResult


def _cmd_up(args: argparse.Namespace) -> int:
    import shlex

    from freezeframe_local.stack import exports, up

    state = up(settings(), trino=args.trino)
    env = {**exports(state), "FREEZEFRAME_STATE_DIR": str(settings().state_dir.resolve())}
    lines = " ".join(f"{name}={shlex.quote(value)}" for name, value in env.items())
    if args.env:  # for `eval "$(freezeframe up --env)"`: stdout carries only the exports
        print(f"export {lines}")
        return 0
    print(f"kafka     {state.kafka_bootstrap}\ns3        {state.s3_endpoint} (LocalStack, Object Lock enforced)\n"
          f"gateway   {state.gateway_url}\n"
          f"          POST /v1/alerts/alertmanager  bearer token in {state.token_file}\n"
          f"          POST /v1/alerts/pagerduty     v3 signing secret in {state.pagerduty_secret_file or '-'} "
          "(X-PagerDuty-Signature: v1=<HMAC-SHA256 of the body>, see examples/sign-pagerduty.sh)\n"
          f"          POST /v1/freeze, GET /v1/incidents/<id>  bearer token in {state.api_token_file or '-'}\n"
          f"signing   KMS key {state.signing_key_id} (LocalStack); RFC 3161 authority {state.tsa_url}, roots in "
          f"{state.tsa_ca_file}")
    if state.trino_url:
        print(f"trino     {state.trino_url}  (freezeframe query --engine trino)")
    print(f"logs      {state.workdir}")
    print("\n# to point the agent, the CLI and curl at it (or: eval \"$(freezeframe up --env)\"):")
    print(f"export {lines}")
    print("# (the gateway's Invoke API takes only SigV4 by the stack's key: <FREEZEFRAME_STATE_DIR>/invoke.key)")
    return 0


def _cmd_prepare(args: argparse.Namespace) -> int:
    from freezeframe_local.kafka import ensure_kafka_jars
    from freezeframe_local.s3 import ensure_localstack
    from freezeframe_local.trino import ensure_trino, trino_java

    print(f"kafka jars      {ensure_kafka_jars()}")
    print(f"localstack      {ensure_localstack()}")
    java = trino_java()  # fails clearly without a JDK >= 24
    print(f"trino           {ensure_trino()} (Java: {java})")
    return 0


def _cmd_topics(args: argparse.Namespace) -> int:
    from freezeframe.adapters.kafka_auth import client_options, describe
    from freezeframe.contracts.config import JOBS_TOPIC, K8S_TOPIC
    from freezeframe.contracts.errors import ConfigError
    from freezeframe_local.kafka import create_topics

    config = settings()
    if not config.kafka_bootstrap:
        raise ConfigError("no Kafka: set FREEZEFRAME_KAFKA_BOOTSTRAP (and the FREEZEFRAME_KAFKA_* security settings)")
    names = [config.segments_topic, K8S_TOPIC, JOBS_TOPIC]
    create_topics(config.kafka_bootstrap, names, args.partitions, timeout=args.timeout,
                  client_options=client_options(config), replication_factor=args.replication_factor)
    print(f"topics {', '.join(names)} exist on {config.kafka_bootstrap} ({describe(config)})")
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    from freezeframe_local.stack import down

    state = down(settings())
    print("stack stopped" if state else "no stack is running")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from freezeframe_local.demo import run_demo

    if args.json:
        # Progress goes to stderr so that stdout's last (only) output is the JSON object.
        result = run_demo(kafka=args.kafka, s3_endpoint=args.s3_endpoint, directory=args.dir,
                          say=lambda line: print(line, file=sys.stderr))
        print(json.dumps(result, default=str))
    else:
        result = run_demo(kafka=args.kafka, s3_endpoint=args.s3_endpoint, directory=args.dir)
        print(f"\ndone in {result['seconds']} s: incident {result['incident_id']}")
    return 0


def _query_sql(args: argparse.Namespace) -> str:
    """The Athena SQL of `freezeframe query`: the SQL given, a saved scenario, or a compiled filter."""
    from freezeframe.contracts.errors import ConfigError
    from freezeframe.investigate import kfl, scenarios
    from freezeframe.investigate.query import restrict_to_incident

    given = [name for name, value in (("SQL", args.sql), ("--scenario", args.scenario), ("--filter", args.filter))
             if value is not None]
    if len(given) != 1:
        raise ConfigError("give exactly one of SQL, --scenario NAME or --filter EXPR"
                          + (f" (got {', '.join(given)})" if given else ""))
    if args.scenario is not None:
        return scenarios.get(args.scenario).sql(args.incident)
    if args.filter is not None:
        return kfl.compile_filter(args.filter).select(incident_id=args.incident, limit=args.limit)
    return restrict_to_incident(args.sql, args.incident) if args.incident is not None else str(args.sql)


def _cmd_query(args: argparse.Namespace) -> int:
    from freezeframe.adapters.athena import athena_client
    from freezeframe.investigate.query import (
        QueryCancelledError,
        connect_local,
        format_bytes,
        render,
        run,
        run_athena,
    )
    from freezeframe_local.stack import apply_state, load_state

    output = "json" if args.json else args.format
    if args.demo is not None:
        # The demo's tables, copied into its directory; its incident unless another is named.
        from freezeframe_local.demo_store import DemoDirectory

        args.dir = args.demo
        args.incident = args.incident or DemoDirectory.load(args.demo).incident_id
    sql = _query_sql(args)
    config = settings()
    if args.athena and args.engine != "duckdb":
        from freezeframe.contracts.errors import ConfigError

        raise ConfigError("give either --athena or --engine trino, not both")
    if args.athena:
        from freezeframe.contracts.errors import ConfigError
        from freezeframe.investigate.glue import DEFAULT_DATABASE

        workgroup = args.workgroup or config.athena_workgroup
        if not workgroup:
            raise ConfigError("--athena needs a workgroup: pass --workgroup or set FREEZEFRAME_ATHENA_WORKGROUP "
                              "(the stack output AthenaWorkGroupName)")
        database = args.database or config.glue_database or DEFAULT_DATABASE
        try:
            result = run_athena(athena_client(config), sql, workgroup, database)
        except QueryCancelledError as exc:
            print(f"freezeframe: {exc}", file=sys.stderr)
            return 130
        if result.bytes_scanned is not None and output != "table":
            print(f"bytes scanned: {format_bytes(result.bytes_scanned)} ({result.bytes_scanned} B)", file=sys.stderr)
    elif args.engine == "trino":
        result = _run_trino(args, config, sql)
    elif args.dir is not None:
        result = run(None, sql, connect_local(args.dir))
    else:
        config = apply_state(config, load_state(config))
        if args.s3_endpoint:
            config = config.with_(s3_endpoint=args.s3_endpoint)
        result = run(config, sql)
    text = render(result, output)
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    if args.incident is not None and args.dir is None:
        custody_cli.record(config, args, args.incident, "query", {"sql": sql}, [text.encode()])
    return 0


def _run_trino(args: argparse.Namespace, config: Settings, sql: str) -> QueryResult:
    """The SQL verbatim on Trino, over --dir or the (stack's) evidence bucket."""
    from freezeframe.adapters import s3 as s3io
    from freezeframe.contracts.errors import ConfigError
    from freezeframe.investigate.trino_sql import DataLocation, TrinoEngine
    from freezeframe_local.stack import apply_state, load_state, trino_metastore

    state = load_state(config)
    config = apply_state(config, state)
    if args.s3_endpoint:
        config = config.with_(s3_endpoint=args.s3_endpoint)
    if not config.trino_url:
        raise ConfigError("--engine trino needs a running Trino: start one with `freezeframe up --trino`, or set "
                          "FREEZEFRAME_TRINO_URL to a Trino on this machine")
    if args.dir is not None:
        location = DataLocation.directory(args.dir)
    else:
        location = DataLocation.bucket(config.evidence_bucket, config.s3_endpoint, config.region,
                                       s3io.credentials(config) if config.s3_endpoint else None)
    engine = TrinoEngine(config.trino_url, trino_metastore(config, state))
    return engine.run(sql, engine.attach(location))


def _cmd_scenarios(args: argparse.Namespace) -> int:
    from freezeframe.investigate import scenarios

    if args.json:
        print(json.dumps([{"name": s.name, "title": s.title, "description": s.description, "sql": s.query}
                          for s in scenarios.SCENARIOS], indent=2))
    else:
        print(scenarios.listing(verbose=args.long))
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from freezeframe.adapters import s3 as s3io
    from freezeframe.investigate.report import render_incident_report, store_report
    from freezeframe_local.stack import apply_state, load_state

    if args.demo is not None:
        from freezeframe_local.demo_store import open_demo

        with open_demo(args.demo) as (config, s3, demo):
            incident_id = args.incident or demo.incident_id
            page = render_incident_report(config, s3, incident_id)
        output = args.output or Path(f"report-{incident_id}.html")
        output.write_text(page, encoding="utf-8")
        print(f"wrote {output} ({len(page.encode()):,} bytes) from the demo's evidence in {args.demo}")
        return 0  # the restored demo store is gone with its block: --store and the ledger have nowhere to go
    if not args.incident:
        from freezeframe.contracts.errors import ConfigError

        raise ConfigError("name the INCIDENT (or give --demo DIR)")
    config = apply_state(settings(), load_state(settings()))
    if args.s3_endpoint:
        config = config.with_(s3_endpoint=args.s3_endpoint)
    s3 = s3io.client(config)
    page = render_incident_report(config, s3, args.incident)
    output = args.output or Path(f"report-{args.incident}.html")
    output.write_text(page, encoding="utf-8")
    print(f"wrote {output} ({len(page.encode()):,} bytes)")
    if args.store:
        key = store_report(config, s3, args.incident, page)
        print(f"stored s3://{config.evidence_bucket}/{key}")
    custody_cli.record(config, args, args.incident, "report", {"output": str(output), "stored": bool(args.store)},
                       [page.encode()])
    return 0


def _cmd_release_hold(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from freezeframe.adapters import s3 as s3io
    from freezeframe.custody.incident import load_incident
    from freezeframe.custody.manifest import entries_of
    from freezeframe.freeze import legal_hold
    from freezeframe_local.stack import apply_state, load_state

    config = apply_state(settings(), load_state(settings()))
    s3 = s3io.client(config)
    incident = load_incident(config, s3, args.incident, record=False, statuses=False, summary=False)
    documents = [incident.manifest_document, *incident.part_documents]
    versions = [legal_hold.HeldVersion(str(doc.get("raw_bucket", config.raw_bucket)), e.key, e.version_id)
                for doc in documents for e in entries_of(doc)]
    still_held = legal_hold.release(config, s3, args.incident, versions, datetime.now(UTC))
    kept = sum(still_held.values())
    print(f"released {len(still_held)} version(s) of {args.incident}; {kept} still held by other incidents")
    custody_cli.record(config, args, args.incident, "release-hold", {"released": len(still_held), "still_held": kept})
    return 0


def _cmd_sample(args: argparse.Namespace) -> int:
    from freezeframe_local.samples import write_sample_pcap

    write_sample_pcap(args.out)
    print(f"wrote {args.out}")
    return 0


def _cmd_jobs(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from freezeframe.capture.bpf import link_type_for
    from freezeframe.contracts.errors import ConfigError
    from freezeframe_agent.jobs import describe_jobs, filter_errors, format_jobs, load_jobs

    path = args.file or settings().jobs_file
    if path is None:
        raise ConfigError("no jobs file: pass --file or set FREEZEFRAME_JOBS_FILE")
    if not path.exists():
        raise ConfigError(f"jobs file {path} does not exist")
    now = datetime.fromisoformat(args.at.replace("Z", "+00:00")) if args.at else datetime.now(UTC)
    if now.tzinfo is None:
        raise ConfigError(f"--at {args.at!r} needs a time zone (Z or an offset)")
    jobs = load_jobs(path)
    rows = describe_jobs(jobs, now, filter_errors(jobs, link_type_for(settings().interfaces)))
    print(json.dumps(rows, indent=2) if args.json else format_jobs(rows))
    return 1 if any(row["error"] for row in rows) else 0


def _cmd_export_pcap(args: argparse.Namespace) -> int:
    from freezeframe.adapters import s3 as s3io
    from freezeframe.investigate.export import ExportOptions, export_pcap, time_ns
    from freezeframe_local.stack import apply_state, load_state

    config = apply_state(settings(), load_state(settings()))
    if args.s3_endpoint:
        config = config.with_(s3_endpoint=args.s3_endpoint)
    options = ExportOptions(fmt=args.format, bpf=args.filter, start_ns=time_ns(args.start, "--start"),
                            end_ns=time_ns(args.end, "--end"), namespaces=tuple(args.namespace),
                            pods=tuple(args.pod), nodes=tuple(args.node), verify=args.verify)
    if args.demo is not None:
        from freezeframe_local.demo_store import open_demo

        with open_demo(args.demo) as (demo_config, demo_s3, demo):
            result = export_pcap(demo_config, demo_s3, args.incident or demo.incident_id, args.output, options)
        summary = sys.stderr if str(args.output) == "-" else sys.stdout
        print(json.dumps(result.to_dict()) if args.json else
              f"wrote {result.packets} packets from {result.segments} segments of {len(result.nodes)} node(s) to "
              f"{result.path} ({result.fmt}) from the demo's evidence in {args.demo}", file=summary)
        return 0
    s3 = s3io.client(config)
    if (args.incident is None) == (args.job is None):
        from freezeframe.contracts.errors import ConfigError

        raise ConfigError("give an INCIDENT or --job NAME (not both)")
    if args.job is not None:
        from freezeframe.investigate.export import Evidence
        from freezeframe.investigate.job_recordings import job_entries

        entries = job_entries(config, s3, args.job, start_ns=options.start_ns, end_ns=options.end_ns,
                              nodes=options.nodes)
        evidence = Evidence(config.raw_bucket, tuple(entries), ())
        result = export_pcap(config, s3, f"job {args.job}", args.output, options, evidence=evidence)
    else:
        result = export_pcap(config, s3, args.incident, args.output, options)
    summary = sys.stderr if str(args.output) == "-" else sys.stdout  # `-o -`: stdout carries the capture
    if args.json:
        print(json.dumps(result.to_dict()), file=summary)
    else:
        verified = f", {result.verified_segments} segment hashes verified" if args.verify else ""
        print(f"wrote {result.packets} packets from {result.segments} segments of {len(result.nodes)} node(s) to "
              f"{result.path} ({result.fmt}{verified})", file=summary)
    written = [Path(result.path)] if str(args.output) != "-" else []
    custody_cli.record(config, args, args.incident, "export-pcap", result.to_dict(), written)
    return 0


def _cmd_dissect(args: argparse.Namespace) -> int:
    config = settings()
    chunk_s = args.chunk_seconds if args.chunk_seconds is not None else (config.dissect_chunk_s or None)
    from freezeframe.dissect.choice import selected  # noqa: PLC0415 - decides without loading pyarrow

    # Local files without time chunks on the compiled core never use numpy: go without it, before pyarrow loads.
    if args.job is None and chunk_s is None and selected() == "native":
        forgo_numpy()
    from freezeframe.contracts.errors import ConfigError
    from freezeframe.dissect.files import dissect_files

    if bool(args.captures) == (args.job is not None):
        raise ConfigError("give capture files or --job NAME (not both)")
    if args.job is not None:
        from freezeframe.adapters import s3 as s3io
        from freezeframe.investigate.export import time_ns
        from freezeframe.investigate.job_recordings import dissect_job
        from freezeframe_local.stack import apply_state, load_state

        config = apply_state(settings(), load_state(settings()))
        if args.s3_endpoint:
            config = config.with_(s3_endpoint=args.s3_endpoint)
        summary = dissect_job(config, s3io.client(config), args.job, args.out, start_ns=time_ns(args.start, "--start"),
                              end_ns=time_ns(args.end, "--end"), nodes=tuple(args.job_node), progress=args.progress)
        if args.json:
            print(json.dumps(summary))
        else:
            print(f"dissected {summary['segments']} segments of job {args.job} from "
                  f"{len(summary['nodes'])} node(s) into {args.out}; query them with "
                  f"`freezeframe query --dir {args.out} SQL`")
            for node, node_result in summary["nodes"].items():
                counts = ", ".join(f"{name} {count}" for name, count in node_result["tables"].items())
                print(f"  {node}: {counts}")
        return 0
    started = time.perf_counter()
    result = dissect_files(args.captures, args.out, node=args.node, k8s=args.k8s, node_state=args.node_state,
                           progress=args.progress,
                           incident_id=args.incident, chunk_s=chunk_s, warmup_s=config.dissect_warmup_s,
                           workers=args.workers)
    elapsed = time.perf_counter() - started
    if args.json:
        print(json.dumps(result.to_dict()))
        return 0
    packets = result.stats.get("packets", 0)
    print(f"dissected {packets} packets from {len(result.inputs)} file(s) in {elapsed:.1f} s "
          f"({packets / elapsed / 1000 if elapsed else 0:.0f} k packets/s)")
    for name, rows in result.tables.items():
        print(f"  {name:<15} {rows:>9} rows  {result.files[name]}")
    problems = sum(value for key, value in result.stats.items() if key.startswith("errors_"))
    if problems:
        print(f"  {problems} problem(s) counted: see {result.files['dissect_errors']}")
    return 0


def _cmd_mcp(args: argparse.Namespace) -> int:
    from freezeframe_local.mcp_server import serve

    serve()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="freezeframe", description="network flight recorder for Kubernetes")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    up_parser = sub.add_parser("up", help="start Kafka, an Object-Lock-enforcing S3 (LocalStack) and the gateway")
    up_parser.add_argument("--env", action="store_true", help="print only the shell exports (for eval)")
    up_parser.add_argument("--trino", action="store_true",
                           help="also start Trino (Athena's engine) for `query --engine trino`; needs a JDK 24+")
    up_parser.set_defaults(func=_cmd_up)
    sub.add_parser("down", help="stop the local stack").set_defaults(func=_cmd_down)
    topics = sub.add_parser("topics", help="create the Kafka topics (segments, k8s, jobs) with the configured "
                            "security (TLS, SCRAM or MSK IAM); existing topics are kept")
    topics.add_argument("--partitions", type=int, default=6)
    topics.add_argument("--replication-factor", type=int, default=3, help="3 suits MSK; 1 for a single broker")
    topics.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the brokers")
    topics.set_defaults(func=_cmd_topics)
    sub.add_parser("prepare", help="download what `up` needs (Kafka jars, LocalStack venv) into the cache"
                   ).set_defaults(func=_cmd_prepare)
    demo = sub.add_parser("demo", help="run the whole story: replay, alert, freeze, dissect, SQL")
    demo.add_argument("--kafka", metavar="HOST:PORT", help="a real Kafka bootstrap server (default: file bus)")
    demo.add_argument("--s3-endpoint", metavar="URL", help="a real S3 endpoint (default: embedded moto)")
    demo.add_argument("--json", action="store_true", help="print one JSON object as the last output")
    demo.add_argument("--dir", type=Path, default=None,
                      help="where the embedded demo keeps its evidence (default ./freezeframe-demo; replaced)")
    demo.set_defaults(func=_cmd_demo)
    query = sub.add_parser("query", help="run Athena SQL, a saved scenario or a filter (locally or on Athena)",
                           description="Runs Athena SQL locally (DuckDB over the evidence bucket or a directory) or "
                           "on Athena. Give SQL, --scenario NAME (see `freezeframe scenarios`) or --filter EXPR "
                           "(e.g. 'http and status >= 500 and dst.namespace == \"production\"').")
    query.add_argument("sql", nargs="?", help="Athena SQL (tables: connections, dns, http, tls)")
    query.add_argument("--scenario", metavar="NAME", help="run a saved scenario")
    query.add_argument("--filter", metavar="EXPR", help="a KFL-style filter over one table")
    query.add_argument("--incident", metavar="ID", help="only this incident's rows")
    query.add_argument("--limit", type=int, default=None, help="at most this many rows (--filter)")
    query.add_argument("--format", choices=("table", "csv", "json"), default="table")
    query.add_argument("--json", action="store_true", help="same as --format json")
    query.add_argument("--dir", type=Path, default=None,
                       help="query a local copy of the bucket (its views/, else tables/) instead")
    query.add_argument("--demo", type=Path, metavar="DIR", default=None,
                       help="query the evidence `freezeframe demo` kept in DIR (its incident unless --incident)")
    query.add_argument("--s3-endpoint", metavar="URL")
    query.add_argument("--engine", choices=("duckdb", "trino"), default="duckdb",
                       help="local engine: duckdb (embedded; refuses SQL it cannot answer as Athena would) or trino "
                       "(the engine under Athena v3, started by `freezeframe up --trino`; the SQL runs verbatim)")
    query.add_argument("--athena", action="store_true", help="run on Amazon Athena instead of locally")
    query.add_argument("--workgroup", help="Athena workgroup (default FREEZEFRAME_ATHENA_WORKGROUP)")
    query.add_argument("--database", help="Glue database (default FREEZEFRAME_GLUE_DATABASE or freezeframe)")
    query.add_argument("--purpose", help="the purpose or ticket, recorded in the custody ledger")
    query.set_defaults(func=_cmd_query)
    scenarios = sub.add_parser("scenarios", help="list the saved incident scenarios (`query --scenario NAME`)")
    scenarios.add_argument("-l", "--long", action="store_true", help="with descriptions and SQL")
    scenarios.add_argument("--json", action="store_true")
    scenarios.set_defaults(func=_cmd_scenarios)
    custody_cli.add_commands(sub)  # verify, bundle, custody
    report = sub.add_parser("report", help="write an incident's self-contained HTML report")
    report.add_argument("incident", nargs="?")
    report.add_argument("--demo", type=Path, metavar="DIR", help="the evidence `freezeframe demo` kept in DIR")
    report.add_argument("-o", "--output", type=Path, help="the HTML file (default: report-INCIDENT.html)")
    report.add_argument("--store", action="store_true", help="also store it in the evidence bucket")
    report.add_argument("--s3-endpoint", metavar="URL")
    report.add_argument("--purpose", help="the purpose or ticket, recorded in the custody ledger")
    report.set_defaults(func=_cmd_report)
    release = sub.add_parser("release-hold", help="release an incident's legal holds (others' holds stay)")
    release.add_argument("incident")
    release.add_argument("--purpose", help="the purpose or ticket, recorded in the custody ledger")
    release.set_defaults(func=_cmd_release_hold)
    jobs = sub.add_parser("jobs", help="list the agent's recording jobs with their state and next window")
    jobs.add_argument("--file", type=Path, default=None, help="jobs file (default: FREEZEFRAME_JOBS_FILE)")
    jobs.add_argument("--at", metavar="TIME", help="evaluate at this RFC 3339 time instead of now")
    jobs.add_argument("--json", action="store_true")
    jobs.set_defaults(func=_cmd_jobs)
    export = sub.add_parser("export-pcap", help="merge an incident's locked segments of every node into one capture")
    export.add_argument("incident", nargs="?", help="the incident (or --job NAME)")
    export.add_argument("--job", metavar="NAME", help="a recording job's segments instead of an incident's")
    export.add_argument("--demo", type=Path, metavar="DIR", help="the evidence `freezeframe demo` kept in DIR")
    export.add_argument("-o", "--output", type=Path, required=True,
                        help="the capture file to write, or - for stdout (e.g. | wireshark -k -i -)")
    export.add_argument("--filter", metavar="BPF", help="a libpcap filter expression (applied by tcpdump)")
    export.add_argument("--start", metavar="TIME", help="only packets at or after this RFC 3339 time")
    export.add_argument("--end", metavar="TIME", help="only packets at or before this RFC 3339 time")
    export.add_argument("--namespace", action="append", default=[],
                        help="only packets to or from a pod of this namespace at the packet's time (repeatable)")
    export.add_argument("--pod", action="append", default=[], help="only packets to or from this pod (repeatable)")
    export.add_argument("--node", action="append", default=[], help="only this node's segments (repeatable)")
    export.add_argument("--format", choices=("pcapng", "pcap"), default="pcapng",
                        help="pcapng (default; one interface per node and link type) or pcap (one link type)")
    export.add_argument("--verify", action="store_true", help="check every segment's sha256 while reading it")
    export.add_argument("--json", action="store_true")
    export.add_argument("--s3-endpoint", metavar="URL")
    export.add_argument("--purpose", help="the purpose or ticket, recorded in the custody ledger")
    export.set_defaults(func=_cmd_export_pcap)
    dissect = sub.add_parser("dissect", help="dissect local capture files (one node's segments) into Parquet tables")
    dissect.add_argument("--job", metavar="NAME", help="dissect a recording job's segments from the raw bucket "
                         "(then: freezeframe query --dir OUT SQL)")
    dissect.add_argument("--start", metavar="TIME", help="--job: only segments at or after this RFC 3339 time")
    dissect.add_argument("--end", metavar="TIME", help="--job: only segments up to this RFC 3339 time")
    dissect.add_argument("--job-node", action="append", default=[], help="--job: only this node (repeatable)")
    dissect.add_argument("--s3-endpoint", metavar="URL")
    dissect.add_argument("captures", nargs="*", type=Path, metavar="PCAP",
                         help="pcap or pcapng files, zstd-compressed or not, taken in the order of their first packet")
    dissect.add_argument("--out", type=Path, required=True,
                         help="output directory, laid out like the evidence bucket: tables/<table>/dt=<day>/"
                         "incident_id=<id>/<node>.parquet, incidents/<id>/dissect/<node>.json, and the incident's "
                         "views over every node dissected into it (views/<table>/...)")
    dissect.add_argument("--node", default="local", help="the node name the rows carry (default: local)")
    dissect.add_argument("--incident", default="local",
                         help="the incident_id partition of the rows (default: local)")
    dissect.add_argument("--k8s", type=Path, help="freezeframe.k8s records (JSON lines) for pod/namespace columns")
    dissect.add_argument("--node-state", type=Path,
                         help="freezeframe.node-state documents (JSON lines) for the node_stats and node_config tables")
    dissect.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                         help="show a progress bar (default: when stderr is a terminal)")
    dissect.add_argument("--chunk-seconds", type=float, metavar="N",
                         help="cut the files into time chunks of N seconds dissected in parallel processes and merged "
                         "(default: FREEZEFRAME_DISSECT_CHUNK_SECONDS, else one pass)")
    dissect.add_argument("--workers", type=int, metavar="N", help="--chunk-seconds: processes (default: CPUs)")
    dissect.add_argument("--json", action="store_true", help="print the summary as JSON")
    dissect.set_defaults(func=_cmd_dissect)
    sub.add_parser("mcp", help="serve freezeframe's tools to an AI agent over MCP (stdio)").set_defaults(func=_cmd_mcp)
    sample = sub.add_parser("sample-pcap", help="write the bundled sample capture")
    sample.add_argument("out", type=Path)
    sample.set_defaults(func=_cmd_sample)
    _describe_subcommands(sub)
    return parser


def _describe_subcommands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`freezeframe COMMAND --help` opens with the one-line help of `freezeframe --help` when it has no longer
    description of its own."""
    for listed in sub._choices_actions:
        command = sub.choices[listed.dest]
        command.description = command.description or listed.help


def main(argv: list[str] | None = None) -> int:
    """The `freezeframe` command. An expected failure (bad input, no credentials, no such incident, an unreachable
    endpoint, a closed output pipe) is one line on stderr and exit status 2; -v adds its traceback."""
    process_defaults()
    interactive_s3()
    args = build_parser().parse_args(argv)
    cli_logging(args.verbose)
    try:
        status = int(args.func(args))
        sys.stdout.flush()  # a reader that went away (`| head -1`) shows here, not as a traceback at exit
        return status
    except BrokenPipeError:
        # Nothing more can reach the reader; stdout is pointed at /dev/null so the flush at exit stays quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return _fail("the output was closed before it was all written (broken pipe)", args.verbose)
    except Exception as exc:
        reason = expected_failure(exc)
        if reason is None:
            raise
        return _fail(reason, args.verbose)


def expected_failure(exc: BaseException) -> str | None:
    """The one-line reason of a failure that is the environment's or the input's, not freezeframe's; None for a
    bug, which keeps its traceback."""
    from botocore.exceptions import (
        ClientError,
        ConnectionClosedError,
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        NoRegionError,
        PartialCredentialsError,
        ReadTimeoutError,
    )

    if isinstance(exc, FreezeframeError):
        return str(exc)
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return f"no AWS credentials ({exc}): configure them (AWS_PROFILE, aws configure, an instance role) or " \
               "point the command at a local stack (freezeframe up, --s3-endpoint)"
    if isinstance(exc, NoRegionError):
        return f"{exc}: set AWS_REGION"
    if isinstance(exc, EndpointConnectionError | ConnectTimeoutError | ReadTimeoutError | ConnectionClosedError):
        return f"cannot reach the endpoint: {exc}"  # closed: a server or proxy that hangs up before it answers
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{exc.operation_name} refused: {error.get('Code', '?')}: {error.get('Message', exc)}"
    if isinstance(exc, OSError):  # a file that cannot be read or written, a refused or reset connection
        return str(exc) or type(exc).__name__
    return None


def _fail(reason: str, verbose: bool) -> int:
    if verbose:
        logging.getLogger(__name__).exception("freezeframe failed")
    print(f"freezeframe: error: {reason}", file=sys.stderr)
    return 2


def run() -> None:
    """The `freezeframe` console script (and `python -m freezeframe_local.cli`): `main`, then exit with its status.

    What the command built (a dissect's tables, pyarrow's modules) is freed by the process's exit anyway, so the
    interpreter's last collection does not walk it (`gc.freeze`): 20-40 ms of CPU after a large dissect. Exit handlers,
    threads and flushes run as in any exit. `main` itself leaves the collector alone, for callers in a process that
    goes on."""
    status = main()
    gc.freeze()
    raise SystemExit(status)


if __name__ == "__main__":
    run()
