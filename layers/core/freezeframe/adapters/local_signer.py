"""A DigestSigner on a local ECDSA P-256 private key (PEM), beside the KMS one: the embedded demo signs its custody
chain with a key it generates, because moto's KMS signatures do not verify. The signatures are the same kind as
KMS's (ECDSA_SHA_256 over a SHA-256 digest, DER), so the custody chain and `freezeframe verify` treat them alike;
what differs is trust: a demo key is trusted because it sits in the demo's directory, not because an authority
holds it. Never configure one for real evidence.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from freezeframe.contracts.errors import ConfigError


@dataclass(frozen=True, slots=True)
class LocalKeySigner:
    private_key: ec.EllipticCurvePrivateKey
    source: str  # where the key came from, for the links' key id

    @classmethod
    def generate(cls, path: Path) -> LocalKeySigner:
        """A new P-256 key, written to `path` (owner-only) as unencrypted PKCS#8 PEM."""
        key = ec.generate_private_key(ec.SECP256R1())
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600, exist_ok=False)
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
        return cls(key, str(path))

    @classmethod
    def from_file(cls, path: Path) -> LocalKeySigner:
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise ConfigError(f"cannot load the signing key file {path}: {exc}") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise ConfigError(f"the signing key file {path} must hold an ECDSA P-256 private key")
        return cls(key, str(path))

    @property
    def key_id(self) -> str:
        return f"local-key:{Path(self.source).name}"

    def public_key_der(self) -> bytes:
        return self.private_key.public_key().public_bytes(serialization.Encoding.DER,
                                                          serialization.PublicFormat.SubjectPublicKeyInfo)

    def public_key_pem(self) -> bytes:
        return self.private_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                          serialization.PublicFormat.SubjectPublicKeyInfo)

    def sign_digest(self, digest: bytes) -> bytes:
        if len(digest) != 32:
            raise ValueError(f"a SHA-256 digest has 32 bytes, got {len(digest)}")
        return self.private_key.sign(digest, ec.ECDSA(Prehashed(hashes.SHA256())))
