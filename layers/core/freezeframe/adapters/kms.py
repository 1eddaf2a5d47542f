"""KMS: the asymmetric key that signs evidence (ECC_NIST_P256, SIGN_VERIFY), behind a small typed adapter.

Only a digest leaves the process (Sign with MessageType=DIGEST, ECDSA_SHA_256); the signature is DER and verifies
offline against the key's public half with `cryptography` or `openssl dgst -sha256 -verify`.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Protocol

from freezeframe.adapters.s3 import LOCAL_CREDENTIALS
from freezeframe.contracts.config import Settings
from freezeframe.contracts.errors import ConfigError

SIGNING_ALGORITHM = "ECDSA_SHA_256"
KEY_SPEC = "ECC_NIST_P256"


class DigestSigner(Protocol):
    """What sealing needs from a signer: its key's id, its public key (DER SubjectPublicKeyInfo) and a signature
    over a SHA-256 digest."""

    @property
    def key_id(self) -> str: ...
    def public_key_der(self) -> bytes: ...
    def sign_digest(self, digest: bytes) -> bytes: ...


class KmsSigner:
    """DigestSigner on a KMS client and one key."""

    def __init__(self, kms: Any, key_id: str) -> None:
        self.kms = kms
        self._key_id = key_id
        self._public: bytes | None = None

    @property
    def key_id(self) -> str:
        return self._key_id

    def public_key_der(self) -> bytes:
        if self._public is None:
            reply = self.kms.get_public_key(KeyId=self._key_id)
            if reply.get("KeySpec") != KEY_SPEC or reply.get("KeyUsage") != "SIGN_VERIFY":
                raise ConfigError(f"KMS key {self._key_id} must be {KEY_SPEC} with SIGN_VERIFY usage, got "
                                  f"{reply.get('KeySpec')} / {reply.get('KeyUsage')}")
            self._public = bytes(reply["PublicKey"])
        return self._public

    def sign_digest(self, digest: bytes) -> bytes:
        if len(digest) != 32:
            raise ValueError(f"a SHA-256 digest has 32 bytes, got {len(digest)}")
        reply = self.kms.sign(KeyId=self._key_id, Message=digest, MessageType="DIGEST",
                              SigningAlgorithm=SIGNING_ALGORITHM)
        return bytes(reply["Signature"])


@lru_cache(maxsize=8)
def client(settings: Settings) -> Any:
    import boto3  # noqa: PLC0415 - lazy: boto3 takes 0.5 s to import
    from botocore.config import Config  # noqa: PLC0415 - lazy: boto3 takes 0.5 s to import
    kwargs: dict[str, Any] = {"region_name": settings.region, "config": Config(retries={"max_attempts": 8,
                                                                                         "mode": "adaptive"})}
    if settings.kms_endpoint:
        kwargs["endpoint_url"] = settings.kms_endpoint
        if boto3.session.Session().get_credentials() is None:
            kwargs.update(LOCAL_CREDENTIALS)
    return boto3.client("kms", **kwargs)


@lru_cache(maxsize=8)
def signer(settings: Settings) -> DigestSigner | None:
    """The configured signer: the KMS key, else a local key file (the embedded demo's), else None (unsigned)."""
    if settings.signing_key_id:
        return KmsSigner(client(settings), settings.signing_key_id)
    if settings.signing_key_file is not None:
        from freezeframe.adapters.local_signer import LocalKeySigner

        return LocalKeySigner.from_file(settings.signing_key_file)
    return None


def create_signing_key(kms: Any, alias: str, description: str) -> str:
    """Local stack only (AWS keys come from template.yaml): the key behind `alias`, created on first use."""
    name = alias if alias.startswith("alias/") else f"alias/{alias}"
    for page in kms.get_paginator("list_aliases").paginate():
        for item in page.get("Aliases", []):
            if item.get("AliasName") == name and item.get("TargetKeyId"):
                return str(item["TargetKeyId"])
    key_id = str(kms.create_key(KeySpec=KEY_SPEC, KeyUsage="SIGN_VERIFY", Description=description)
                 ["KeyMetadata"]["KeyId"])
    kms.create_alias(AliasName=name, TargetKeyId=key_id)
    return key_id


@lru_cache(maxsize=8)
def caller_arn(settings: Settings) -> str:
    """The IAM ARN of this process's credentials (the role session of a Lambda function), asked once."""
    import boto3  # noqa: PLC0415 - lazy: boto3 takes 0.5 s to import
    sts = boto3.client("sts", region_name=settings.region)
    return str(sts.get_caller_identity()["Arn"])
