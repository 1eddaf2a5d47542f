"""A capture file mapped read-only: its bytes without a copy, hashed (SHA-256) once when it is opened.

`freezeframe dissect` on local files used to read each segment into a fresh 64 MB bytes object: the kernel zeroed
and faulted in every page of it, then copied the page cache into it, for every segment (90 k of the process's 120 k
page faults on the kernel-traffic bench). A read-only map of the page cache costs neither: the compiled core reads
`view()` in place (`freezeframe.dissect.native`), the reference engine reads it as a stream through `read`, and the
hash is taken on the same bytes the engine reads. The inputs are closed capture files: a file cut short by another
process while it is mapped would stop this one with SIGBUS instead of reading as a short capture.
"""

from __future__ import annotations

import hashlib
import io
import mmap
from collections.abc import Callable
from pathlib import Path


class MappedFile(io.RawIOBase):
    """A read-only stream over a file mapped into memory; `view()` is its whole content, `sha256` its hash.

    Close it (or use it in a ``with`` block) once every view of it has been released."""

    def __init__(self, path: Path, on_bytes: Callable[[int], None] | None = None) -> None:
        super().__init__()
        self.sha256 = hashlib.sha256()
        self._position = 0
        with path.open("rb") as stream:
            self.size = stream.seek(0, io.SEEK_END)
            # A zero-length file cannot be mapped; it reads as empty. (Mapping every page up front, MAP_POPULATE,
            # measured the same: the kernel maps the page cache 16 pages per fault.)
            self._map: mmap.mmap | None = (mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ) if self.size
                                           else None)
        if self._map is not None:
            self.sha256.update(self._map)
        if on_bytes is not None:
            on_bytes(self.size)

    def view(self) -> memoryview:
        """The file's bytes, read-only and without a copy (release it before closing the file)."""
        return memoryview(self._map if self._map is not None else b"")

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if self._map is None:
            return b""
        end = self.size if size is None or size < 0 else min(self.size, self._position + size)
        data = self._map[self._position:end]
        self._position = max(self._position, end)
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]  # any writable buffer
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None
        super().close()
