"""The custody commands of the CLI: `verify` (online or `--bundle`), `bundle` and `custody`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from freezeframe.contracts.config import Settings, settings
from freezeframe.contracts.errors import FreezeframeError, PayloadError


def add_commands(sub: Any) -> None:
    verify = sub.add_parser("verify", help="check an incident's signed chain, timestamps, hashes and locks "
                                           "(on S3, or an evidence bundle offline with --bundle)")
    verify.add_argument("incident", nargs="?", help="the incident (not with --bundle)")
    verify.add_argument("--bundle", type=Path, metavar="DIR", help="verify an evidence bundle, with no AWS access")
    verify.add_argument("--public-key", type=Path, metavar="PEM",
                        help="the signing key to trust (default: the KMS key; with --bundle: the bundle's own)")
    verify.add_argument("--tsa-ca", type=Path, metavar="PEM",
                        help="the time-stamping roots to trust (default: the configured file; with --bundle: the "
                             "bundle's own)")
    verify.add_argument("--purpose", help="the purpose or ticket, recorded in the custody ledger")
    verify.add_argument("--demo", type=Path, metavar="DIR",
                        help="verify the evidence `freezeframe demo` kept in DIR against the demo key kept there "
                             "(trust comes from the directory, not from an authority)")
    verify.add_argument("--json", action="store_true")
    verify.add_argument("--s3-endpoint", metavar="URL")
    verify.set_defaults(func=cmd_verify)
    bundle = sub.add_parser("bundle", help="write an incident's evidence bundle for offline verification")
    bundle.add_argument("incident")
    bundle.add_argument("-o", "--out", type=Path, required=True, metavar="DIR")
    bundle.add_argument("--segments", action="store_true", help="include the frozen segments themselves")
    bundle.add_argument("--purpose", help="the purpose or ticket, recorded in the custody ledger")
    bundle.set_defaults(func=cmd_bundle)
    custody = sub.add_parser("custody", help="print an incident's chain of custody")
    custody.add_argument("incident")
    custody.add_argument("--json", action="store_true")
    custody.set_defaults(func=cmd_custody)


def record(config: Settings, args: argparse.Namespace, incident_id: str | None, action: str, details: dict[str, Any],
           outputs: Sequence[bytes | Path] = ()) -> None:
    """The custody-ledger entry of one CLI access (see custody.ledger), with the command's --purpose. An access that
    names no incident (a recording job's export) has no incident ledger to go in."""
    from botocore.exceptions import ClientError  # the CLI loads botocore only where a command talks to AWS

    from freezeframe.adapters import s3 as s3io
    from freezeframe.custody.ledger import record_access

    if incident_id is None:
        return
    if getattr(args, "purpose", None):
        config = config.with_(custody_purpose=args.purpose)
    try:
        record_access(config, s3io.client(config), incident_id, action, details, outputs)
    except (ClientError, FreezeframeError) as exc:
        # The access already happened (its output is written): say loudly that it went unrecorded.
        print(f"freezeframe: warning: this {action} of {incident_id} is NOT in its custody ledger: {exc}",
              file=sys.stderr)


def _config(args: argparse.Namespace) -> Settings:
    from freezeframe_local.stack import apply_state, load_state

    config = apply_state(settings(), load_state(settings()))
    if getattr(args, "s3_endpoint", None):
        config = config.with_(s3_endpoint=args.s3_endpoint)
    if getattr(args, "purpose", None):
        config = config.with_(custody_purpose=args.purpose)
    return config


def _read_file(path: Path | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as exc:
        raise PayloadError(f"cannot read the {what} {path}: {exc}") from exc


def cmd_verify(args: argparse.Namespace) -> int:
    from freezeframe.custody.verify import VerifyReport, format_report

    public_key = _read_file(args.public_key, "public key")
    tsa_roots = _read_file(args.tsa_ca, "time-stamping roots")
    if args.demo is not None:
        return _verify_demo(args, public_key, tsa_roots)
    if args.bundle is not None:
        from freezeframe.custody.bundle import verify_bundle

        if args.incident:
            raise PayloadError("give an incident or --bundle DIR, not both")
        if not args.bundle.is_dir():
            raise PayloadError(f"{args.bundle} is not a directory")
        incident_id, checks = verify_bundle(args.bundle, public_key, tsa_roots)
        report = VerifyReport(incident_id, tuple(checks))
    else:
        if not args.incident:
            raise PayloadError("name the incident to verify, or give --bundle DIR")
        from freezeframe.adapters import s3 as s3io
        from freezeframe.custody.ledger import record_access
        from freezeframe.custody.pinned import online_trust
        from freezeframe.custody.verify import verify_incident

        config = _config(args)
        s3 = s3io.client(config)
        report = verify_incident(config, s3, args.incident, trust=online_trust(config, public_key, tsa_roots))
        output = json.dumps(report.to_dict(), indent=2)
        record_access(config, s3, args.incident, "verify", {"ok": report.ok, "checks": len(report.checks),
                                                            "failures": len(report.failures)}, [output.encode()])
    print(json.dumps(report.to_dict(), indent=2) if args.json else format_report(report))
    return 0 if report.ok else 1


DEMO_TRUST_NOTE = ("DEMO KEY: this evidence was signed with a key `freezeframe demo` generated for one run; its "
                   "public half and time-stamping root come from the directory itself, so this checks the directory's "
                   "internal consistency, not who produced it (trust comes from the directory, not from an "
                   "authority)")


def _verify_demo(args: argparse.Namespace, public_key: bytes | None, tsa_roots: bytes | None) -> int:
    """`verify --demo DIR`: the demo's restored store against the demo key and roots kept in DIR, and nothing else:
    never a configured KMS key or a running stack's key."""
    from freezeframe.custody.chain import Trust
    from freezeframe.custody.signatures import load_public_key, load_roots
    from freezeframe.custody.verify import format_report, verify_incident
    from freezeframe_local.demo_store import DemoDirectory, open_demo

    if args.bundle is not None or public_key is not None or tsa_roots is not None:
        raise PayloadError("--demo DIR brings its own key and roots: not with --bundle, --public-key or --tsa-ca")
    demo = DemoDirectory.load(args.demo)
    key = _read_file(demo.public_key, "demo public key")
    roots = _read_file(demo.tsa_roots, "demo time-stamping roots")
    assert key is not None and roots is not None
    trust = Trust(load_public_key(key), f"the demo key in {demo.public_key} (DEMO KEY, trusted because it is in the "
                  "directory)", load_roots(roots))
    with open_demo(args.demo) as (config, s3, _):
        report = verify_incident(config, s3, args.incident or demo.incident_id, trust=trust)
    print(json.dumps({**report.to_dict(), "demo_key": str(demo.public_key), "note": DEMO_TRUST_NOTE}, indent=2)
          if args.json else f"{DEMO_TRUST_NOTE}.\n{format_report(report)}")
    return 0 if report.ok else 1


def cmd_bundle(args: argparse.Namespace) -> int:
    from freezeframe.adapters import s3 as s3io
    from freezeframe.custody.bundle import write_bundle
    from freezeframe.custody.ledger import record_access
    from freezeframe.custody.pinned import online_trust

    config = _config(args)
    s3 = s3io.client(config)
    result = write_bundle(config, s3, args.incident, args.out, online_trust(config), segments=args.segments)
    record_access(config, s3, args.incident, "bundle", {"directory": str(result.directory), "links": result.links,
                                                        "segments": result.segments},
                  [(args.out / "bundle.json").read_bytes()])
    print(f"wrote {result.files} files ({result.links} signed links, {result.segments} segments) to {args.out}; "
          f"check it with: freezeframe verify --bundle {args.out}")
    return 0


def cmd_custody(args: argparse.Namespace) -> int:
    from freezeframe.adapters import s3 as s3io
    from freezeframe.custody.ledger import custody_trail, format_trail

    config = _config(args)
    trail = custody_trail(config, s3io.client(config), args.incident)
    print(json.dumps(trail, indent=2) if args.json else format_trail(args.incident, trail))
    return 0
