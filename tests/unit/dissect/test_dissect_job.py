"""The dissection engine without S3: segment verification, damaged segments counted in dissect_errors, and the
engine run over local files (pcap, pcapng, zstd) with problems attributed to the segment they were found in."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest
import zstandard

from freezeframe.capture.pcapio import PcapReader
from freezeframe.contracts.errors import SegmentCorruptError
from freezeframe.contracts.models import ManifestEntry
from freezeframe.contracts.schemas import DISSECT_ERRORS
from freezeframe.dissect.job import SegmentSource, dissect_segments, verify_segment
from freezeframe.dissect.problems import SegmentRef

SAMPLE = Path(__file__).resolve().parents[2] / "fixtures" / "sample.pcap"


def entry_for(stored: bytes, key: str = "raw/c/2026/11/21/12/n/1-2.pcap.zst") -> ManifestEntry:
    return ManifestEntry(key=key, version_id="v1", sha256=hashlib.sha256(stored).hexdigest(), size=len(stored),
                         node="n", start_ns=1, end_ns=2, seq=0, packets=1, lock_mode="COMPLIANCE",
                         retain_until="2026-12-21T00:00:00.000Z", legal_hold=False)


def test_matching_bytes_pass_verification() -> None:
    stored = zstandard.ZstdCompressor().compress(b"pcap bytes")
    verify_segment(stored, entry_for(stored))


def test_a_single_flipped_byte_fails_loudly_naming_the_segment() -> None:
    stored = zstandard.ZstdCompressor().compress(b"pcap bytes")
    entry = entry_for(stored)
    tampered = bytes([stored[0] ^ 1]) + stored[1:]
    with pytest.raises(SegmentCorruptError, match=entry.key):
        verify_segment(tampered, entry)


def sample_count() -> int:
    with SAMPLE.open("rb") as stream:
        return sum(1 for _ in PcapReader(stream))


def source(key: str, data: bytes, start_ns: int | None = None) -> SegmentSource:
    return SegmentSource(SegmentRef(key, None, start_ns), fetch=lambda: data)


def test_damaged_segments_are_counted_per_segment_and_the_rest_is_dissected() -> None:
    sample = SAMPLE.read_bytes()
    packets = sample_count()
    garbage_zstd = b"\x28\xb5\x2f\xfd" + b"\xff" * 40  # a zstd magic with a corrupt frame behind it
    result = dissect_segments("node-a", [
        source("seg/1-good.pcap", sample),
        source("seg/2-garbage.pcap", b"this is not a capture at all"),
        source("seg/3-truncated.pcap.zst", zstandard.ZstdCompressor().compress(sample[:-7])),
        source("seg/4-corrupt.zst", garbage_zstd),
    ])
    # The good segment and all but the cut record of the truncated one are dissected.
    assert result.stats["packets"] == 2 * packets - 1
    rows = result.problems.table()
    assert rows.schema == DISSECT_ERRORS
    found = {(r["segment"], r["stage"], r["kind"]): r for r in rows.to_pylist()}
    assert ("seg/1-good.pcap", "read", "truncated") not in found
    assert found[("seg/2-garbage.pcap", "read", "not_a_capture")]["count"] == 1
    truncated = found[("seg/3-truncated.pcap.zst", "read", "truncated")]
    assert truncated["count"] == 1 and truncated["first_packet"] == packets - 1
    assert found[("seg/4-corrupt.zst", "read", "not_a_capture")]["message"].startswith("zstd")
    assert result.problems.totals()["errors_read_truncated"] == 1


def test_a_segment_failing_verification_is_reported_not_dissected() -> None:
    sample = SAMPLE.read_bytes()

    def tampered() -> bytes:
        raise SegmentCorruptError("segment seg/x: sha256 mismatch")

    result = dissect_segments("node-a", [SegmentSource(SegmentRef("seg/x", "v1", 1), fetch=tampered),
                                         source("seg/y", sample)])
    assert [c["key"] for c in result.corrupt] == ["seg/x"]
    assert result.stats["packets"] == sample_count()


@pytest.mark.skipif(shutil.which("editcap") is None, reason="editcap (wireshark-common) converts the fixture")
def test_pcapng_and_zstd_segments_give_the_same_tables_as_pcap(tmp_path: Path) -> None:
    pcapng = tmp_path / "sample.pcapng"
    subprocess.run(["editcap", "-F", "pcapng", str(SAMPLE), str(pcapng)], check=True)
    plain = dissect_segments("node-a", [source("a.pcap", SAMPLE.read_bytes())])
    converted = dissect_segments("node-a", [
        source("a.pcapng.zst", zstandard.ZstdCompressor().compress(pcapng.read_bytes()))])
    for name, table in plain.tables.items():
        assert converted.tables[name].equals(table), name
