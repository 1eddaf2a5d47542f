"""Evidence bundles: an incident's signed chain with the documents it names, checkable with no AWS credentials.

    freezeframe bundle INCIDENT -o DIR [--segments]
    freezeframe verify --bundle DIR [--public-key PEM] [--tsa-ca PEM]

Layout (every path below is listed with its sha256 in bundle.json, which is canonical JSON):

    bundle.json                      schema, incident, the signing key's fingerprint, {path: sha256}
    public-key.pem                   the signing key's public half (pin it: compare its fingerprint, or pass your own)
    tsa-roots.pem                    the root(s) the time-stamping authority's certificate chains to
    chain/<seq>.link.json            a link's exact signed bytes
    chain/<seq>.sig                  its DER ECDSA P-256 signature (openssl dgst -sha256 -verify)
    chain/<seq>.tsr                  the RFC 3161 response over the .sig file (openssl ts -verify -data)
    documents/<seq>/<key>            the object version the link names (manifest, part, summary, report, ledger)
    objects/<key>                    the Kubernetes context snapshots the manifest lists
    segments/<key>                   with --segments: the frozen segment versions the manifest and parts list
    README.txt                       the openssl recipe
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from freezeframe.adapters import s3 as s3io
from freezeframe.adapters.s3 import ObjectStore
from freezeframe.contracts.config import Settings
from freezeframe.contracts.errors import CustodyError, PayloadError
from freezeframe.custody.chain import Envelope, Link, Trust, canonical, chain_prefix, check_links
from freezeframe.custody.manifest import entries_of
from freezeframe.custody.signatures import fingerprint, load_public_key, load_roots, public_key_pem, sha256_hex
from freezeframe.custody.verify import Check, document_checks
from freezeframe.freeze.k8s_context import ContextEntry, context_root_hash

BUNDLE_SCHEMA = "freezeframe.evidence-bundle/v1"
INDEX = "bundle.json"

RECIPE = """\
Evidence bundle of incident {incident}: checking it by hand with openssl
=====================================================================

1. Pin the signing key: its fingerprint must be the one your organisation published for the freezeframe key
   (KMS GetPublicKey), here {fingerprint}:
     openssl pkey -pubin -in public-key.pem -outform DER | sha256sum

2. Each link of the chain is signed (ECDSA P-256 over SHA-256) and time-stamped (RFC 3161, over the signature):
     for link in chain/*.link.json; do
       seq=${{link%.link.json}}
       openssl dgst -sha256 -verify public-key.pem -signature "$seq.sig" "$link"
       openssl ts -verify -data "$seq.sig" -in "$seq.tsr" -CAfile tsa-roots.pem
       openssl ts -reply -in "$seq.tsr" -text | grep 'Time stamp'
     done

3. Each link names the previous one: its "previous" holds the sha256 of the previous .link.json and .sig, e.g.
     sha256sum chain/00000000.link.json chain/00000000.sig
     python3 -m json.tool chain/00000001.link.json

4. Each link names one document version and its sha256:
     sha256sum documents/<seq>/<key>      # equals the link's object.sha256

5. The manifest (documents/<seq of the manifest link>/incidents/{incident}/manifest.json) lists every segment and
   Kubernetes context snapshot with its sha256: sha256sum segments/<key> objects/<key> compares with it.

`freezeframe verify --bundle .` runs all of this (and the root hashes) in one go, with no AWS credentials.
"""


@dataclass(frozen=True, slots=True)
class BundleResult:
    directory: Path
    links: int
    files: int
    segments: int


def write_bundle(settings: Settings, s3: ObjectStore, incident_id: str, out: Path, trust: Trust, *,
                 segments: bool = False) -> BundleResult:
    """Writes the bundle of an incident whose chain verifies against `trust` (a broken chain is refused: run
    `freezeframe verify` to see why)."""
    if out.exists() and any(out.iterdir()):
        raise PayloadError(f"{out} exists and is not empty; a bundle goes to a new directory")
    bucket = settings.evidence_bucket
    originals: dict[str, str] = {}
    for key, version_id, marker in s3io.list_all_versions(s3, bucket, chain_prefix(incident_id)):
        if not marker:
            originals[key] = version_id  # newest first: the last one is the original
    if not originals:
        raise CustodyError(f"incident {incident_id} has no signed custody chain to bundle")
    stored = [(key, s3io.get_bytes(s3, bucket, key, originals[key])) for key in sorted(originals)]
    results = check_links(incident_id, stored, trust)
    broken = [p for r in results for p in r.problems]
    if broken:
        raise CustodyError(f"refusing to bundle a broken chain: {broken[0].subject}: {broken[0].name}: "
                           f"{broken[0].detail} (run `freezeframe verify {incident_id}`)")
    if trust.public_key_der is None:
        raise CustodyError(f"no signing key to publish in the bundle ({trust.source})")
    files: dict[str, bytes] = {"public-key.pem": public_key_pem(trust.public_key_der),
                               "tsa-roots.pem": b"".join(_pem(root) for root in trust.tsa_roots)}
    manifest_docs: list[tuple[Link, dict[str, Any]]] = []
    for result in results:
        envelope = result.envelope
        assert envelope is not None  # a result without problems has its envelope
        link = envelope.link
        base = f"chain/{link.seq:08d}"
        files[f"{base}.link.json"] = envelope.link_bytes
        files[f"{base}.sig"] = envelope.signature
        files[f"{base}.tsr"] = envelope.timestamp or b""
        body = s3io.get_bytes(s3, link.object.bucket, link.object.key, link.object.version_id)
        files[_document_path(link)] = body
        if link.kind in ("manifest", "manifest-part"):
            manifest_docs.append((link, json.loads(body)))
    segment_count = 0
    for link, document in manifest_docs:
        if link.kind == "manifest":
            for raw in document.get("k8s_context") or []:
                files[f"objects/{raw['key']}"] = s3io.get_bytes(s3, raw["bucket"], raw["key"], raw["version_id"])
        if segments:
            raw_bucket = str(document.get("raw_bucket") or settings.raw_bucket)
            for entry in entries_of(document):
                files[f"segments/{entry.key}"] = s3io.get_bytes(s3, raw_bucket, entry.key, entry.version_id)
                segment_count += 1
    files["README.txt"] = RECIPE.format(incident=incident_id,
                                        fingerprint=fingerprint(trust.public_key_der)).encode()
    index = {"schema": BUNDLE_SCHEMA, "incident_id": incident_id,
             "public_key_sha256": fingerprint(trust.public_key_der), "segments_included": segments,
             "files": {path: sha256_hex(body) for path, body in sorted(files.items())}}
    out.mkdir(parents=True, exist_ok=True)
    for path, body in files.items():
        target = out / _safe(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(body)
    (out / INDEX).write_bytes(canonical(index))
    return BundleResult(out, len(results), len(files) + 1, segment_count)


def verify_bundle(directory: Path, public_key: bytes | None = None,
                  tsa_roots_pem: bytes | None = None) -> tuple[str, list[Check]]:
    """(incident id, checks) of a bundle, offline. `public_key`/`tsa_roots_pem` pin what to trust; without them
    the bundle's own files are used and the key's fingerprint is reported for the reader to compare."""
    checks: list[Check] = []
    raw_index = _read(directory / INDEX)
    try:
        index = json.loads(raw_index) if raw_index is not None else None
        if not isinstance(index, dict) or index.get("schema") != BUNDLE_SCHEMA:
            raise ValueError(f"schema must be {BUNDLE_SCHEMA!r}")
        incident_id, listed = str(index["incident_id"]), dict(index["files"])
    except (ValueError, KeyError, TypeError) as exc:
        return "?", [Check(INDEX, "readable", False, f"not a bundle index: {exc}")]
    if canonical(index) != raw_index:
        checks.append(Check(INDEX, "canonical", False, "not in canonical form: it was edited"))
    present = {str(PurePosixPath(p.relative_to(directory).as_posix())) for p in directory.rglob("*") if p.is_file()}
    present.discard(INDEX)
    for path in sorted(present | set(listed)):
        try:
            body = _read(directory / _safe(path))
        except CustodyError as exc:
            checks.append(Check(path, "path", False, str(exc)))
            continue
        if path not in listed:
            checks.append(Check(path, "listed", False, "a file the bundle index does not list"))
        elif body is None:
            checks.append(Check(path, "present", False, "listed in the bundle index, missing"))
        elif sha256_hex(body) != listed[path]:
            checks.append(Check(path, "sha256", False, f"hashes to {sha256_hex(body)}, the index lists "
                                                             f"{listed[path]}"))
    trust = _bundle_trust(directory, public_key, tsa_roots_pem, checks)
    if trust.public_key_der is not None and index.get("public_key_sha256") != fingerprint(trust.public_key_der):
        checks.append(Check(INDEX, "public_key_sha256", False, "names another key than the one checked"))
    stored = []
    for seq_path in sorted(p for p in listed if p.startswith("chain/") and p.endswith(".link.json")):
        base = seq_path[: -len(".link.json")]
        link_bytes, signature, token = (_read(directory / f"{base}{ext}") for ext in (".link.json", ".sig", ".tsr"))
        envelope = Envelope(link_bytes or b"", signature or b"", token or None)
        stored.append((f"{base}.json", envelope.to_bytes()))
    if not stored:
        checks.append(Check("chain/", "chain", False, "no links in the bundle"))
    documents: list[tuple[Link, bytes]] = []
    for result in check_links(incident_id, stored, trust):
        checks.extend(Check(p.subject, p.name, False, p.detail) for p in result.problems)
        if not result.ok or result.envelope is None:
            continue
        link = result.envelope.link
        stamped = result.stamped_at.isoformat() if result.stamped_at else "-"
        checks.append(Check(result.subject, "signature", True, f"{link.kind} signed by {trust.source}, "
                                                                      f"time-stamped {stamped}"))
        path = _document_path(link)
        body = _read(directory / _safe(path))
        if body is None or sha256_hex(body) != link.object.sha256 or len(body) != link.object.size:
            checks.append(Check(path, "signed", False, f"missing or not the {link.object.sha256} the link "
                                                             f"{link.seq} signed"))
        else:
            checks.append(Check(path, "signed", True, f"sha256 {link.object.sha256}"))
            documents.append((link, body))
    checks.extend(_document_checks(directory, incident_id, documents, bool(index.get("segments_included"))))
    return incident_id, checks


def _document_checks(directory: Path, incident_id: str, documents: Iterable[tuple[Link, bytes]],
                     segments_included: bool) -> list[Check]:
    checks: list[Check] = []
    kinds = [link.kind for link, _ in documents]
    if kinds.count("manifest") != 1:
        checks.append(Check("chain/", "manifest", False, f"the chain names {kinds.count('manifest')} manifests"))
    for link, body in documents:
        if link.kind not in ("manifest", "manifest-part"):
            continue
        path = _document_path(link)
        own, entries, _, _ = document_checks(path, body, incident_id, is_part=link.kind == "manifest-part")
        checks.extend(own)
        document = json.loads(body)
        if link.kind == "manifest" and document.get("k8s_context") is not None:
            context = [ContextEntry(**item) for item in document["k8s_context"]]
            ok = context_root_hash(context) == document.get("k8s_root_hash")
            checks.append(Check(path, "k8s_root_hash", ok, "recomputed" if ok else "does not recompute"))
            for snapshot in context:
                checks.append(_file_check(directory, f"objects/{snapshot.key}", snapshot.sha256, snapshot.size))
        if segments_included:
            for entry in entries:
                checks.append(_file_check(directory, f"segments/{entry.key}", entry.sha256, entry.size))
    return checks


def _file_check(directory: Path, path: str, sha256: str, size: int) -> Check:
    body = _read(directory / _safe(path))
    if body is None:
        return Check(path, "sha256", False, "listed by the manifest, missing from the bundle")
    if sha256_hex(body) != sha256 or len(body) != size:
        return Check(path, "sha256", False, f"hashes to {sha256_hex(body)} over {len(body)} bytes, the "
                                                  f"manifest records {sha256} over {size}")
    return Check(path, "sha256", True, f"sha256 {sha256} over {size} bytes")


def _bundle_trust(directory: Path, public_key: bytes | None, tsa_roots_pem: bytes | None,
                  checks: list[Check]) -> Trust:
    key_source = "the given public key"
    if public_key is None:
        public_key = _read(directory / "public-key.pem")
        key_source = "the bundle's public-key.pem"
    der: bytes | None = None
    try:
        der = load_public_key(public_key or b"")
    except CustodyError as exc:
        checks.append(Check("public-key.pem", "readable", False, str(exc)))
    if der is not None:
        key_source = f"{key_source} (sha256 {fingerprint(der)})"
    roots_pem = tsa_roots_pem if tsa_roots_pem is not None else _read(directory / "tsa-roots.pem")
    roots: tuple[Any, ...] = ()
    try:
        roots = load_roots(roots_pem or b"")
    except CustodyError as exc:
        checks.append(Check("tsa-roots.pem", "readable", False, str(exc)))
    return Trust(der, key_source, roots)


def _document_path(link: Link) -> str:
    return f"documents/{link.seq:08d}/{link.object.key}"


def _safe(path: str) -> str:
    """A bundle path as a relative path that cannot leave the bundle."""
    parts = PurePosixPath(path).parts
    if not parts or path.startswith("/") or any(part in ("..", "") for part in parts):
        raise CustodyError(f"unsafe path in bundle: {path!r}")
    return os.path.join(*parts)


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _pem(certificate: Any) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding

    return bytes(certificate.public_bytes(Encoding.PEM))
