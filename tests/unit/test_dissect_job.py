import hashlib

import pytest
import zstandard

from freezeframe.dissect.job import verified_segment_bytes
from freezeframe.errors import SegmentCorruptError
from freezeframe.models import ManifestEntry


def entry_for(stored: bytes, key: str = "raw/c/2026/11/21/12/n/1-2.pcap.zst") -> ManifestEntry:
    return ManifestEntry(key=key, version_id="v1", sha256=hashlib.sha256(stored).hexdigest(), size=len(stored),
                         node="n", start_ns=1, end_ns=2, seq=0, packets=1, lock_mode="COMPLIANCE",
                         retain_until="2026-12-21T00:00:00.000Z", legal_hold=False)


def test_matching_bytes_are_decompressed() -> None:
    stored = zstandard.ZstdCompressor().compress(b"pcap bytes")
    assert verified_segment_bytes(stored, entry_for(stored)) == b"pcap bytes"


def test_a_single_flipped_byte_fails_loudly_naming_the_segment() -> None:
    stored = zstandard.ZstdCompressor().compress(b"pcap bytes")
    entry = entry_for(stored)
    tampered = bytes([stored[0] ^ 1]) + stored[1:]
    with pytest.raises(SegmentCorruptError, match=entry.key):
        verified_segment_bytes(tampered, entry)


def test_a_hash_that_matches_corrupt_zstd_is_still_refused() -> None:
    garbage = b"\x28\xb5\x2f\xfd" + b"\xff" * 20
    with pytest.raises(SegmentCorruptError, match="zstd"):
        verified_segment_bytes(garbage, entry_for(garbage))
