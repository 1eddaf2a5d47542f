"""The `freezeframe` command: local stack, demo, SQL, sample captures."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from pathlib import Path

from freezeframe.config import settings
from freezeframe.errors import FreezeframeError


def _cmd_up(args: argparse.Namespace) -> int:
    from freezeframe.local.stack import up

    state = up(settings())
    print(f"kafka     {state.kafka_bootstrap}\ns3        {state.s3_endpoint} (LocalStack, Object Lock enforced)\n"
          f"gateway   {state.gateway_url}  (POST /v1/alerts/alertmanager, token in {state.token_file})\n"
          f"logs      {state.workdir}")
    print("\n# to point the agent and the CLI at it:")
    print(f"export FREEZEFRAME_S3_ENDPOINT={state.s3_endpoint} FREEZEFRAME_KAFKA_BOOTSTRAP={state.kafka_bootstrap} "
          f"FREEZEFRAME_LAMBDA_ENDPOINT={state.gateway_url}")
    return 0


def _cmd_prepare(args: argparse.Namespace) -> int:
    from freezeframe.local.kafka import ensure_kafka_jars
    from freezeframe.local.s3 import ensure_localstack

    print(f"kafka jars      {ensure_kafka_jars()}")
    print(f"localstack      {ensure_localstack()}")
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    from freezeframe.local.stack import down

    state = down(settings())
    print("stack stopped" if state else "no stack is running")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from freezeframe.demo import run_demo

    if args.json:
        # Progress goes to stderr so that stdout's last (only) output is the JSON object.
        result = run_demo(kafka=args.kafka, s3_endpoint=args.s3_endpoint,
                          say=lambda line: print(line, file=sys.stderr))
        print(json.dumps(result, default=str))
    else:
        result = run_demo(kafka=args.kafka, s3_endpoint=args.s3_endpoint)
        print(f"\ndone in {result['seconds']} s: incident {result['incident_id']}")
    return 0


def _cmd_query(args: argparse.Namespace) -> int:
    from freezeframe.local.stack import apply_state, load_state
    from freezeframe.query import format_table, run, to_json

    config = settings()
    config = apply_state(config, load_state(config))
    if args.s3_endpoint:
        config = config.with_(s3_endpoint=args.s3_endpoint)
    result = run(config, args.sql)
    print(to_json(result) if args.json else format_table(result))
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from freezeframe.adapters import s3 as s3io
    from freezeframe.local.stack import apply_state, load_state
    from freezeframe.verify import format_report, verify_incident

    config = apply_state(settings(), load_state(settings()))
    if args.s3_endpoint:
        config = config.with_(s3_endpoint=args.s3_endpoint)
    report = verify_incident(config, s3io.client(config), args.incident)
    print(json.dumps(report.to_dict(), indent=2) if args.json else format_report(report))
    return 0 if report.ok else 1


def _cmd_release_hold(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from freezeframe import legal_hold
    from freezeframe.adapters import s3 as s3io
    from freezeframe.holds import manifest_parts
    from freezeframe.keys import manifest_key
    from freezeframe.local.stack import apply_state, load_state
    from freezeframe.manifest import entries_of

    config = apply_state(settings(), load_state(settings()))
    s3 = s3io.client(config)
    manifest = s3io.get_json(s3, config.evidence_bucket, manifest_key(args.incident))
    documents = [manifest, *manifest_parts(config, s3, args.incident)]
    versions = [legal_hold.HeldVersion(str(doc.get("raw_bucket", config.raw_bucket)), e.key, e.version_id)
                for doc in documents for e in entries_of(doc)]
    still_held = legal_hold.release(config, s3, args.incident, versions, datetime.now(UTC))
    kept = sum(still_held.values())
    print(f"released {len(still_held)} version(s) of {args.incident}; {kept} still held by other incidents")
    return 0


def _cmd_sample(args: argparse.Namespace) -> int:
    from freezeframe.samples import write_sample_pcap

    write_sample_pcap(args.out)
    print(f"wrote {args.out}")
    return 0


def _cmd_jobs(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from freezeframe.errors import ConfigError
    from freezeframe_agent.jobs import describe_jobs, format_jobs, load_jobs

    path = args.file or settings().jobs_file
    if path is None:
        raise ConfigError("no jobs file: pass --file or set FREEZEFRAME_JOBS_FILE")
    if not path.exists():
        raise ConfigError(f"jobs file {path} does not exist")
    now = datetime.fromisoformat(args.at.replace("Z", "+00:00")) if args.at else datetime.now(UTC)
    if now.tzinfo is None:
        raise ConfigError(f"--at {args.at!r} needs a time zone (Z or an offset)")
    rows = describe_jobs(load_jobs(path), now)
    print(json.dumps(rows, indent=2) if args.json else format_jobs(rows))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="freezeframe", description="network flight recorder for Kubernetes")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start Kafka, an Object-Lock-enforcing S3 (LocalStack) and the gateway").set_defaults(
        func=_cmd_up)
    sub.add_parser("down", help="stop the local stack").set_defaults(func=_cmd_down)
    sub.add_parser("prepare", help="download what `up` needs (Kafka jars, LocalStack venv) into the cache"
                   ).set_defaults(func=_cmd_prepare)
    demo = sub.add_parser("demo", help="run the whole story: replay, alert, freeze, dissect, SQL")
    demo.add_argument("--kafka", metavar="HOST:PORT", help="a real Kafka bootstrap server (default: file bus)")
    demo.add_argument("--s3-endpoint", metavar="URL", help="a real S3 endpoint (default: embedded moto)")
    demo.add_argument("--json", action="store_true", help="print one JSON object as the last output")
    demo.set_defaults(func=_cmd_demo)
    query = sub.add_parser("query", help="run Athena SQL locally over the evidence tables")
    query.add_argument("sql")
    query.add_argument("--json", action="store_true")
    query.add_argument("--s3-endpoint", metavar="URL")
    query.set_defaults(func=_cmd_query)
    verify = sub.add_parser("verify", help="recompute every hash and check every lock of an incident")
    verify.add_argument("incident")
    verify.add_argument("--json", action="store_true")
    verify.add_argument("--s3-endpoint", metavar="URL")
    verify.set_defaults(func=_cmd_verify)
    release = sub.add_parser("release-hold", help="release an incident's legal holds (others' holds stay)")
    release.add_argument("incident")
    release.set_defaults(func=_cmd_release_hold)
    jobs = sub.add_parser("jobs", help="list the agent's recording jobs with their state and next window")
    jobs.add_argument("--file", type=Path, default=None, help="jobs file (default: FREEZEFRAME_JOBS_FILE)")
    jobs.add_argument("--at", metavar="TIME", help="evaluate at this RFC 3339 time instead of now")
    jobs.add_argument("--json", action="store_true")
    jobs.set_defaults(func=_cmd_jobs)
    sample = sub.add_parser("sample-pcap", help="write the bundled sample capture")
    sample.add_argument("out", type=Path)
    sample.set_defaults(func=_cmd_sample)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        return int(args.func(args))
    except FreezeframeError as exc:
        print(f"freezeframe: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        raise SystemExit(main())
