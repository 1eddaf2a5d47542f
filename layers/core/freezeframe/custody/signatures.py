"""Pure checks of signatures and RFC 3161 tokens: no network, so a bundle verifies offline."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils
from rfc3161_client import VerificationError, VerifierBuilder, decode_timestamp_response

from freezeframe.contracts.errors import CustodyError


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_public_key(data: bytes) -> bytes:
    """A P-256 public key, PEM or DER SubjectPublicKeyInfo, as DER."""
    try:
        key = (serialization.load_pem_public_key(data) if data.lstrip().startswith(b"-----")
               else serialization.load_der_public_key(data))
    except ValueError as exc:
        raise CustodyError(f"not a public key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise CustodyError("the signing key must be an ECC NIST P-256 public key")
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def fingerprint(public_key_der: bytes) -> str:
    """sha256 of the DER SubjectPublicKeyInfo: `openssl pkey -pubin -outform DER | sha256sum` prints the same."""
    return sha256_hex(public_key_der)


def public_key_pem(public_key_der: bytes) -> bytes:
    key = serialization.load_der_public_key(public_key_der)
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def signature_ok(public_key_der: bytes, message: bytes, signature: bytes) -> bool:
    """ECDSA P-256 over sha256(message), DER signature: what KMS Sign (DIGEST, ECDSA_SHA_256) returns and what
    `openssl dgst -sha256 -verify` checks."""
    key = serialization.load_der_public_key(public_key_der)
    if not isinstance(key, ec.EllipticCurvePublicKey):
        return False
    try:
        key.verify(signature, hashlib.sha256(message).digest(), ec.ECDSA(utils.Prehashed(hashes.SHA256())))
    except (InvalidSignature, ValueError):
        return False
    return True


def load_roots(pem: bytes) -> tuple[x509.Certificate, ...]:
    try:
        return tuple(x509.load_pem_x509_certificates(pem))
    except ValueError as exc:
        raise CustodyError(f"unreadable time-stamping root certificate(s): {exc}") from exc


def timestamp_time(token: bytes, message: bytes, roots: Sequence[x509.Certificate]) -> datetime:
    """The genTime of an RFC 3161 response over sha256(message), once its signature, its TSA certificate (critical
    timeStamping EKU) and the chain to one of `roots` check. Raises CustodyError naming what failed."""
    if not roots:
        raise CustodyError("no time-stamping root configured to check the token against")
    try:
        response = decode_timestamp_response(token)
    except ValueError as exc:
        raise CustodyError(f"unreadable RFC 3161 response: {exc}") from exc
    verifier = VerifierBuilder()
    for root in roots:
        verifier = verifier.add_root_certificate(root)
    try:
        verifier.build().verify_message(response, message)
    except (VerificationError, ValueError) as exc:
        raise CustodyError(f"RFC 3161 token does not verify: {exc}") from exc
    return response.tst_info.gen_time
