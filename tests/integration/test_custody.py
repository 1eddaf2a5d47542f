"""Custody on the real local stack (LocalStack S3 with Object Lock, LocalStack KMS, the openssl RFC 3161 authority):
the three forged manifest parts of issue 14, a replaced manifest, forged or tampered chain links and ledger entries
each make verify fail naming the object, and the readers never take them; a bundle verifies offline, by this code
and by openssl, and a one-byte change to any of its files fails it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from freezeframe.adapters import s3 as s3io
from freezeframe.contracts.keys import incident_key, manifest_key, manifest_parts_prefix, raw_segment_key
from freezeframe.contracts.models import ManifestEntry
from freezeframe.custody.bundle import verify_bundle, write_bundle
from freezeframe.custody.chain import Envelope, chain_prefix, link_key, public_key_key
from freezeframe.custody.ledger import custody_trail, ledger_prefix, record_access
from freezeframe.custody.manifest import MANIFEST_SCHEMA, root_hash
from freezeframe.custody.pinned import online_trust, read_pinned
from freezeframe.custody.verify import VerifyReport, format_report, verify_incident
from freezeframe.freeze.freeze import freeze
from freezeframe.intake.accept import incident_status
from freezeframe.investigate.export import load_evidence
from freezeframe_agent.main import run_replay
from tests.fixtures.buses import MemoryBus
from tests.integration.test_verify import request_for

pytestmark = pytest.mark.integration
SAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "sample.pcap"
INCIDENT = "it-custody-1"


@pytest.fixture
def frozen(local: Any) -> tuple[Any, Any, list[Any], Any]:
    config, s3, _ = local
    records = run_replay(config, SAMPLE, speedup=1000.0, s3=s3, bus=MemoryBus())
    request = request_for(config, records, INCIDENT)
    assert freeze(config, s3, request).created
    s3io.put_json(s3, config.evidence_bucket, incident_key(INCIDENT),
                  {"request": request.to_dict(), "created_at": "2026-01-01T00:00:00.000Z"})
    return config, s3, records, request


def failed(report: VerifyReport) -> set[tuple[str, str]]:
    return {(check.subject, check.name) for check in report.failures}


def plant_segment(config: Any, s3: Any, records: list[Any], mode: str, until: datetime) -> ManifestEntry:
    """A segment the attacker uploads and locks, as a frozen segment would be."""
    start_ns = max(r.end_ns for r in records) + 5_000_000_000
    key = raw_segment_key(config.cluster, config.node_name, start_ns, start_ns + 1_000_000_000, "pcap")
    body = b"planted capture bytes"
    version_id = s3.put_object(Bucket=config.raw_bucket, Key=key, Body=body, ObjectLockMode=mode,
                               ObjectLockRetainUntilDate=until)["VersionId"]
    return ManifestEntry(key=key, version_id=version_id, sha256=hashlib.sha256(body).hexdigest(), size=len(body),
                         node=config.node_name, start_ns=start_ns, end_ns=start_ns + 1_000_000_000, seq=999,
                         packets=1, lock_mode=mode, retain_until=until.isoformat(), legal_hold=False)


def forged_part(entry: ManifestEntry, lock: dict[str, Any] | None = None) -> dict[str, Any]:
    part: dict[str, Any] = {"schema": MANIFEST_SCHEMA, "incident_id": INCIDENT, "part_of": INCIDENT,
                            "segments": [entry.to_dict()], "root_hash": root_hash([entry]),
                            "created_at": "2026-12-05T00:00:00.000Z"}
    if lock is not None:
        part["request"] = {"lock": lock}
    return part


def test_a_frozen_incident_is_signed_time_stamped_and_verifies(frozen: Any) -> None:
    config, s3, records, _ = frozen
    report = verify_incident(config, s3, INCIDENT)
    assert report.ok, format_report(report)
    signed = [c for c in report.checks if c.name == "signature"]
    assert [c.subject for c in signed] == [link_key(INCIDENT, 0)]
    assert "time-stamped 20" in signed[0].detail
    # The link names the manifest version the freeze wrote, with the sha256 of its stored bytes.
    envelope = Envelope.from_bytes(s3io.get_bytes(s3, config.evidence_bucket, link_key(INCIDENT, 0)))
    head = s3.head_object(Bucket=config.evidence_bucket, Key=manifest_key(INCIDENT))
    body = s3io.get_bytes(s3, config.evidence_bucket, manifest_key(INCIDENT), head["VersionId"])
    assert (envelope.link.object.version_id, envelope.link.object.sha256) == (
        head["VersionId"], hashlib.sha256(body).hexdigest())
    # The KMS key's own Verify agrees with the signature over the link's digest.
    from freezeframe.adapters import kms as kmsio
    answer = kmsio.client(config).verify(KeyId=config.signing_key_id, Message=hashlib.sha256(
        envelope.link_bytes).digest(), MessageType="DIGEST", Signature=envelope.signature,
        SigningAlgorithm="ECDSA_SHA_256")
    assert answer["SignatureValid"] is True


@pytest.mark.parametrize("forgery", ["part without .json", "locked COMPLIANCE part", "part with a weaker lock"])
def test_each_forged_part_of_issue_14_fails_verify_by_name_and_no_reader_takes_it(frozen: Any, forgery: str) -> None:
    config, s3, records, request = frozen
    until = datetime.now(UTC) + timedelta(hours=2)
    prefix = manifest_parts_prefix(INCIDENT)
    if forgery == "part without .json":
        entry = plant_segment(config, s3, records, "COMPLIANCE", until)
        key, part, lock = f"{prefix}{config.node_name}-000000000999", forged_part(entry), ("COMPLIANCE", until)
    elif forgery == "locked COMPLIANCE part":
        entry = plant_segment(config, s3, records, "COMPLIANCE", until)
        key, part, lock = f"{prefix}{config.node_name}-000000000999.json", forged_part(entry), ("COMPLIANCE", until)
    else:
        entry = plant_segment(config, s3, records, "GOVERNANCE", until)
        weaker = {"mode": "GOVERNANCE", "retain_until": until.isoformat().replace("+00:00", "Z")}
        key, part, lock = (f"{prefix}{config.node_name}-000000000999.json", forged_part(entry, weaker),
                           ("GOVERNANCE", until))
    assert s3io.put_json(s3, config.evidence_bucket, key, part, create_only=True, lock=lock)

    report = verify_incident(config, s3, INCIDENT)
    assert (key, "chain") in failed(report), format_report(report)
    assert key in format_report(report)
    # The planted segment is not counted as evidence: verify never checked it as a claim.
    assert not [c for c in report.checks if c.subject.startswith(entry.key)]
    # Readers take only what the chain names: dissection, reports and export see no planted segment.
    pinned = read_pinned(config, s3, INCIDENT)
    assert pinned.parts == ()
    evidence = load_evidence(config, s3, INCIDENT, verify=True, with_context=False)
    assert {e.key for _, e in evidence.entries} == {r.key for r in records}


def test_a_new_manifest_version_fails_verify_and_is_never_served(frozen: Any) -> None:
    config, s3, records, _ = frozen
    key = manifest_key(INCIDENT)
    manifest = s3io.get_json(s3, config.evidence_bucket, key)
    manifest["segments"] = manifest["segments"][:1]
    manifest["root_hash"] = root_hash([ManifestEntry.from_dict(manifest["segments"][0])])
    altered = s3.put_object(Bucket=config.evidence_bucket, Key=key, Body=json.dumps(manifest).encode())["VersionId"]
    report = verify_incident(config, s3, INCIDENT)
    assert (key, "versions") in failed(report)
    assert altered in next(c.detail for c in report.failures if c.name == "versions")
    status = incident_status(config, s3, INCIDENT)
    assert status["frozen_segments"] == len(records)  # the signed version, not the latest
    assert status["custody"]["manifest_version"] != altered
    assert len(read_pinned(config, s3, INCIDENT).manifest.document["segments"]) == len(records)


def test_forged_and_tampered_chain_links_fail_verify_by_name(frozen: Any) -> None:
    config, s3, _, _ = frozen
    bucket = config.evidence_bucket
    first = link_key(INCIDENT, 0)
    original = Envelope.from_bytes(s3io.get_bytes(s3, bucket, first))
    # A link appended by someone without the key: a copy of the first, signed with the attacker's own key and
    # carrying the first link's (valid, but not matching) RFC 3161 token.
    attacker = ec.generate_private_key(ec.SECP256R1())
    link_bytes = original.link_bytes.replace(b'"seq":0', b'"seq":1')
    forged = Envelope(link_bytes, attacker.sign(link_bytes, ec.ECDSA(hashes.SHA256())), original.timestamp)
    s3io.put_bytes(s3, bucket, link_key(INCIDENT, 1), forged.to_bytes(), content_type="application/json",
                   create_only=True)
    report = verify_incident(config, s3, INCIDENT)
    assert {(link_key(INCIDENT, 1), "signature"), (link_key(INCIDENT, 1), "previous"),
            (link_key(INCIDENT, 1), "timestamp")} <= failed(report)
    assert "Mismatch" in next(c.detail for c in report.failures if c.name == "timestamp")
    # A new version over the locked first link with a flipped signature byte: the key has two versions.
    tampered = Envelope(original.link_bytes, original.signature[:-1] + bytes([original.signature[-1] ^ 1]),
                        original.timestamp)
    s3.put_object(Bucket=bucket, Key=first, Body=tampered.to_bytes())
    report = verify_incident(config, s3, INCIDENT)
    assert (first, "versions") in failed(report)
    # The attacker's key published over the real one: a second version, and the chain still checks only under KMS's.
    attacker_pem = attacker.public_key().public_bytes(serialization.Encoding.PEM,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo)
    s3.put_object(Bucket=bucket, Key=public_key_key(INCIDENT), Body=attacker_pem)
    report = verify_incident(config, s3, INCIDENT)
    assert (public_key_key(INCIDENT), "versions") in failed(report)


def test_a_signed_incident_without_its_chain_is_refused_by_readers(local: Any) -> None:
    config, s3, _ = local
    records = run_replay(config, SAMPLE, speedup=1000.0, s3=s3, bus=MemoryBus())
    unsigned = config.with_(signing_key_id=None)
    assert freeze(unsigned, s3, request_for(config, records, "it-custody-unsigned")).created
    report = verify_incident(config, s3, "it-custody-unsigned")
    assert (chain_prefix("it-custody-unsigned"), "chain") in failed(report)
    from freezeframe.contracts.errors import CustodyError
    with pytest.raises(CustodyError, match="no signed custody chain"):
        read_pinned(config, s3, "it-custody-unsigned")


def test_the_custody_ledger_records_signed_accesses_and_a_forged_entry_fails(frozen: Any) -> None:
    config, s3, _, _ = frozen
    output = b"the exported capture"
    key = record_access(config.with_(custody_purpose="TICKET-42"), s3, INCIDENT, "export-pcap", {"out": "x.pcap"},
                        [output])
    assert key is not None and key.startswith(ledger_prefix(INCIDENT))
    trail = custody_trail(config, s3, INCIDENT)
    assert [item["kind"] for item in trail] == ["manifest", "custody"]
    entry = trail[1]["entry"]
    assert (entry["action"], entry["purpose"]) == ("export-pcap", "TICKET-42")
    assert entry["outputs"] == [{"sha256": hashlib.sha256(output).hexdigest(), "size": len(output)}]
    assert entry["at"].endswith("Z") and entry["who"].startswith("local:")
    assert verify_incident(config, s3, INCIDENT).ok
    forged = f"{ledger_prefix(INCIDENT)}20261205T000000000000Z-forged.json"
    s3io.put_json(s3, config.evidence_bucket, forged, {**entry, "who": "someone else"}, create_only=True)
    report = verify_incident(config, s3, INCIDENT)
    assert {c.subject.split("@")[0] for c in report.failures} == {forged}


def _offline_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FREEZEFRAME_"))} | {
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent", "AWS_CONFIG_FILE": "/nonexistent"}


def test_a_bundle_verifies_offline_and_by_openssl_and_any_one_byte_change_fails(frozen: Any, tmp_path: Path) -> None:
    config, s3, records, _ = frozen
    record_access(config, s3, INCIDENT, "report", {"key": "r"}, [b"page"])
    out = tmp_path / "bundle"
    result = write_bundle(config, s3, INCIDENT, out, online_trust(config), segments=True)
    assert result.segments == len(records) and result.links == 2
    # Offline, with no AWS credentials or endpoints at all: the CLI in a clean environment.
    offline = subprocess.run([sys.executable, "-m", "freezeframe_local.cli", "verify", "--bundle", str(out)],
                             capture_output=True, text=True, env=_offline_env(), timeout=120, check=False)
    assert offline.returncode == 0, offline.stdout + offline.stderr
    assert "OK" in offline.stdout

    # By hand with openssl, following the bundle's README recipe.
    for seq in ("00000000", "00000001"):
        link, sig, tsr = (str(out / "chain" / f"{seq}{ext}") for ext in (".link.json", ".sig", ".tsr"))
        dgst = subprocess.run(["openssl", "dgst", "-sha256", "-verify", str(out / "public-key.pem"), "-signature",
                               sig, link], capture_output=True, text=True, check=False)
        assert dgst.returncode == 0 and "Verified OK" in dgst.stdout, dgst.stderr
        ts = subprocess.run(["openssl", "ts", "-verify", "-data", sig, "-in", tsr, "-CAfile",
                             str(out / "tsa-roots.pem")], capture_output=True, text=True, check=False)
        assert ts.returncode == 0 and "Verification: OK" in ts.stdout, ts.stderr
    link0 = json.loads((out / "chain" / "00000000.link.json").read_bytes())
    manifest_copy = out / "documents" / "00000000" / manifest_key(INCIDENT)
    assert hashlib.sha256(manifest_copy.read_bytes()).hexdigest() == link0["object"]["sha256"]
    for record in records:  # the agent's own hashes of the segments it uploaded
        assert hashlib.sha256((out / "segments" / record.key).read_bytes()).hexdigest() == record.sha256

    files = sorted(p for p in out.rglob("*") if p.is_file())
    assert len(files) == result.files
    for path in files:
        body = path.read_bytes()
        broken = bytearray(body)
        broken[len(body) // 2] ^= 0x01
        path.write_bytes(bytes(broken))
        try:
            _, checks = verify_bundle(out)
            failures = [c for c in checks if not c.ok]
            assert failures, f"a one-byte change to {path.relative_to(out)} was not detected"
        finally:
            path.write_bytes(body)
    _, checks = verify_bundle(out)
    assert all(c.ok for c in checks)
    shutil.rmtree(out)


def test_cli_and_mcp_accesses_are_in_the_printed_chain_of_custody(frozen: Any, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from freezeframe_local import mcp_server
    from freezeframe_local.cli import main

    config, s3, _, _ = frozen
    assert main(["verify", INCIDENT, "--purpose", "TICKET-7"]) == 0
    verified = capsys.readouterr().out
    assert main(["bundle", INCIDENT, "-o", str(tmp_path / "b")]) == 0
    mcp_server.incident_status(INCIDENT)
    capsys.readouterr()
    assert main(["custody", INCIDENT]) == 0
    printed = capsys.readouterr().out
    trail = custody_trail(config, s3, INCIDENT)
    actions = [(item["entry"]["action"], item["entry"]["purpose"], item["entry"]["details"].get("tool"))
               for item in trail if item["kind"] == "custody"]
    assert actions == [("verify", "TICKET-7", None), ("bundle", None, None), ("mcp-read", None, "incident_status")]
    # The verify entry holds the sha256 of the report verify produced (its JSON form, as --json prints it).
    assert trail[1]["entry"]["outputs"][0]["size"] > 0 and "OK" in verified
    assert "verify" in printed and "TICKET-7" in printed and "mcp-read" in printed
    assert verify_incident(config, s3, INCIDENT).ok


def test_a_freeze_that_could_not_reach_the_time_stamping_authority_is_sealed_by_its_retry(local: Any) -> None:
    from freezeframe_local.stack import free_port

    from freezeframe.contracts.errors import CustodyError

    config, s3, _ = local
    records = run_replay(config, SAMPLE, speedup=1000.0, s3=s3, bus=MemoryBus())
    request = request_for(config, records, "it-custody-retry")
    outage = config.with_(tsa_url=f"http://127.0.0.1:{free_port()}/tsr")  # nothing listens there
    with pytest.raises(CustodyError, match="unreachable"):
        freeze(outage, s3, request)
    assert not s3io.exists(s3, config.evidence_bucket, link_key(request.incident_id, 0))
    assert not verify_incident(config, s3, request.incident_id).ok  # written but not yet sealed
    retried = freeze(config, s3, request)  # Lambda's retry of the async invocation
    assert not retried.created
    assert verify_incident(config, s3, request.incident_id).ok
