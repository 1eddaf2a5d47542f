"""The chain's pure checks with real cryptography and no network: links signed with a P-256 key (as KMS signs a
digest) and time-stamped by the openssl RFC 3161 authority in-process. Inserting, dropping, reordering, re-signing
or altering a link, its signature or its token fails, naming the link."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils
from freezeframe_local.tsa import Authority, LocalTimeStamper, ensure_authority

from freezeframe.contracts.errors import CustodyError
from freezeframe.custody.chain import Envelope, Link, ObjectRef, Trust, check_links, link_key, sign_link
from freezeframe.custody.signatures import fingerprint, load_roots

INCIDENT = "inc-chain"


class LocalSigner:
    """A DigestSigner on a local key: what KMS Sign(MessageType=DIGEST, ECDSA_SHA_256) does."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())

    @property
    def key_id(self) -> str:
        return "local-test-key"

    def public_key_der(self) -> bytes:
        return self.key.public_key().public_bytes(serialization.Encoding.DER,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo)

    def sign_digest(self, digest: bytes) -> bytes:
        return self.key.sign(digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    return ensure_authority(tmp_path_factory.mktemp("tsa"))


@pytest.fixture(scope="module")
def signer() -> LocalSigner:
    return LocalSigner()


def trust_of(signer: LocalSigner, authority: Authority) -> Trust:
    return Trust(signer.public_key_der(), "the test key", load_roots(authority.ca_pem.read_bytes()))


def make_chain(signer: LocalSigner, authority: Authority, count: int = 3) -> list[tuple[str, bytes]]:
    stamper = LocalTimeStamper(authority)
    stored: list[tuple[str, bytes]] = []
    previous: Envelope | None = None
    for seq in range(count):
        body = f"document {seq}".encode()
        ref = ObjectRef("evidence", f"incidents/{INCIDENT}/doc-{seq}.json", f"v{seq}",
                        hashlib.sha256(body).hexdigest(), len(body))
        link = Link(INCIDENT, seq, "manifest" if seq == 0 else "manifest-part", ref,
                    previous.previous_ref() if previous else None, signer.key_id,
                    fingerprint(signer.public_key_der()), "local:test", "2026-12-05T00:00:00.000Z")
        previous = sign_link(link, signer, stamper)
        stored.append((link_key(INCIDENT, seq), previous.to_bytes()))
    return stored


def problems(stored: list[tuple[str, bytes]], trust: Trust) -> set[tuple[str, str]]:
    return {(p.subject, p.name) for result in check_links(INCIDENT, stored, trust) for p in result.problems}


def test_a_sealed_chain_checks_and_carries_trusted_times(signer: LocalSigner, authority: Authority) -> None:
    results = check_links(INCIDENT, make_chain(signer, authority), trust_of(signer, authority))
    assert [r.ok for r in results] == [True, True, True]
    assert all(r.stamped_at is not None for r in results)


def test_dropping_a_link_fails_at_the_link_after_the_gap(signer: LocalSigner, authority: Authority) -> None:
    stored = make_chain(signer, authority)
    del stored[1]
    # The third link now sits where the second was: its key and seq, and its predecessor, do not fit.
    assert problems(stored, trust_of(signer, authority)) == {(link_key(INCIDENT, 2), "seq"),
                                                             (link_key(INCIDENT, 2), "previous")}


def test_reordering_links_fails(signer: LocalSigner, authority: Authority) -> None:
    stored = make_chain(signer, authority)
    (key1, body1), (key2, body2) = stored[1], stored[2]
    stored[1], stored[2] = (key1, body2), (key2, body1)  # each body under the other's key
    found = problems(stored, trust_of(signer, authority))
    assert {(key1, "seq"), (key1, "previous"), (key2, "seq"), (key2, "previous")} <= found


def test_inserting_a_link_signed_with_the_right_key_but_a_wrong_predecessor_fails(
        signer: LocalSigner, authority: Authority) -> None:
    stored = make_chain(signer, authority, 2)
    stray = make_chain(signer, authority, 3)[2]  # a valid link of another, same-shaped chain
    assert problems([*stored, stray], trust_of(signer, authority)) == {(link_key(INCIDENT, 2), "previous")}


@pytest.mark.parametrize("part", ["signature", "timestamp", "link"])
def test_one_flipped_byte_in_a_link_fails_it(signer: LocalSigner, authority: Authority, part: str) -> None:
    stored = make_chain(signer, authority)
    envelope = Envelope.from_bytes(stored[1][1])
    if part == "signature":
        changed = Envelope(envelope.link_bytes, _flip(envelope.signature), envelope.timestamp)
        expected = {"signature", "timestamp"}  # the token stamps the original signature
    elif part == "timestamp":
        assert envelope.timestamp is not None
        changed = Envelope(envelope.link_bytes, envelope.signature, _flip(envelope.timestamp))
        expected = {"timestamp"}
    else:
        edited = envelope.link_bytes.replace(b'"version_id":"v1"', b'"version_id":"v9"')
        changed = Envelope(edited, envelope.signature, envelope.timestamp)
        expected = {"signature"}
    stored[1] = (stored[1][0], changed.to_bytes())
    found = problems(stored, trust_of(signer, authority))
    assert {name for subject, name in found if subject == stored[1][0]} == expected
    # The next link names the original's digests, so a changed link also breaks its successor.
    if part != "timestamp":
        assert (stored[2][0], "previous") in found


def test_a_chain_signed_by_another_key_fails_every_link(signer: LocalSigner, authority: Authority) -> None:
    other = LocalSigner()
    stored = make_chain(other, authority)
    assert problems(stored, trust_of(signer, authority)) == {(key, "signature") for key, _ in stored}


def test_a_token_from_another_authority_fails(signer: LocalSigner, authority: Authority, tmp_path: Path) -> None:
    stored = make_chain(signer, ensure_authority(tmp_path / "rogue"))
    assert problems(stored, trust_of(signer, authority)) == {(key, "timestamp") for key, _ in stored}


def test_a_link_in_non_canonical_form_is_refused(signer: LocalSigner, authority: Authority) -> None:
    link_bytes = Envelope.from_bytes(make_chain(signer, authority, 1)[0][1]).link_bytes
    assert Link.from_bytes(link_bytes).seq == 0
    with pytest.raises(CustodyError, match="canonical"):
        Link.from_bytes(json.dumps(json.loads(link_bytes), indent=1).encode())


def _flip(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 1]) + data[middle + 1:]
