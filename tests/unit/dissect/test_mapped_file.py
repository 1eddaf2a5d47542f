"""A capture file mapped read-only (freezeframe.capture.mapped), as `freezeframe dissect` reads its inputs: the same
bytes, hash and packets as reading the file, and the compiled core reads the map in place exactly as it reads bytes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from freezeframe.capture.mapped import MappedFile
from freezeframe.capture.pcapio import open_capture
from freezeframe.dissect import native

SAMPLE = Path(__file__).resolve().parents[2] / "fixtures" / "sample.pcap"


def _packets(stream: object) -> list[tuple[int, int, bytes]]:
    return [(p.ts_ns, p.orig_len, p.data) for _link, run in open_capture(stream).runs() for p in run]  # type: ignore[arg-type]


def test_reads_hashes_and_views_the_file_bytes() -> None:
    expected = SAMPLE.read_bytes()
    seen: list[int] = []
    with MappedFile(SAMPLE, seen.append) as mapped:
        assert mapped.sha256.hexdigest() == hashlib.sha256(expected).hexdigest()
        assert seen == [len(expected)] and mapped.size == len(expected)
        with mapped.view() as view:
            assert view.readonly and view.tobytes() == expected
        pieces = [mapped.read(1000)]
        buffer = bytearray(777)
        count = mapped.readinto(buffer)
        pieces.append(bytes(buffer[:count]))
        pieces.append(mapped.read())
        assert b"".join(pieces) == expected
        assert mapped.read() == b"" and mapped.read(10) == b""


def test_the_reference_reader_reads_the_same_packets() -> None:
    with SAMPLE.open("rb") as stream:
        expected = _packets(stream)
    with MappedFile(SAMPLE) as mapped:
        assert _packets(mapped) == expected
    assert expected


def test_an_empty_file_reads_as_empty(tmp_path: Path) -> None:
    empty = tmp_path / "empty.pcap"
    empty.write_bytes(b"")
    with MappedFile(empty) as mapped:
        assert mapped.read() == b"" and mapped.size == 0
        assert mapped.sha256.hexdigest() == hashlib.sha256(b"").hexdigest()
        with mapped.view() as view:
            assert len(view) == 0


@pytest.mark.skipif(native.extension() is None, reason="the freezeframe_native extension is not built")
def test_the_core_reads_a_mapped_file_as_it_reads_bytes() -> None:
    module = native.extension()
    assert module is not None
    from_bytes = module.Engine("n1")
    assert from_bytes.feed(SAMPLE.read_bytes()) == (None, [])
    from_map = module.Engine("n1")
    with MappedFile(SAMPLE) as mapped, mapped.view() as view:
        assert from_map.feed(view) == (None, [])
        assert module.walk(view) == module.walk(SAMPLE.read_bytes())
    assert from_map.stats() == from_bytes.stats()
    tables = {name: native.to_table(name, batch) for name, batch in from_bytes.finish().items()}
    assert {name: native.to_table(name, batch) for name, batch in from_map.finish().items()} == tables


@pytest.mark.skipif(native.extension() is None, reason="the freezeframe_native extension is not built")
def test_the_core_refuses_a_writable_buffer() -> None:
    module = native.extension()
    assert module is not None
    with pytest.raises(TypeError, match="read-only"):
        module.Engine("n1").feed(bytearray(SAMPLE.read_bytes()))
