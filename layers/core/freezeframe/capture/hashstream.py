"""A read-only stream that hashes (SHA-256) and counts every byte read through it: how a segment's stored bytes are
checked while they are read (`freezeframe.investigate.export`). Kept apart from `export` so that code reading
segments does not import the export and custody machinery (`freezeframe dissect` maps its inputs instead:
`freezeframe.capture.mapped`)."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from typing import Any

CHUNK_BYTES = 1 << 16


class HashingStream(io.RawIOBase):
    """A read-only stream over a body that counts (and, with `hashing`, hashes) every byte read, and reports
    progress. Only `--verify` needs the hash; without it, hashing was a third of the compiled merge's time."""

    def __init__(self, body: Any, on_bytes: Callable[[int], None] | None = None, hashing: bool = True) -> None:
        super().__init__()
        self._body = body
        self._on_bytes = on_bytes
        self._hashing = hashing
        self.sha256 = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        data: bytes = self._body.read() if size is None or size < 0 else self._body.read(size)
        if data:
            if self._hashing:
                self.sha256.update(data)
            self.size += len(data)
            if self._on_bytes is not None:
                self._on_bytes(len(data))
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def drain(self) -> None:
        """Read (and hash) whatever the decompressor left unread, such as trailing bytes after the last frame."""
        while self.read(CHUNK_BYTES):
            pass

    def close(self) -> None:
        closer = getattr(self._body, "close", None)
        if closer is not None:
            closer()
        super().close()
