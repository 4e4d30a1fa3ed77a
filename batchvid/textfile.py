"""A text file written in pieces to a temporary name, then renamed over its final one
(``reportfiles``: report.json, report.md, junit.xml, metadata.jsonl and batchvid.lock;
``gallery``: report.html, hashed as written), its bytes hashed on the way when asked."""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path
from typing import BinaryIO

from batchvid.durable import create_temp


class TextFile:
    """A text file written in pieces (UTF-8) to a temporary name beside ``path``; ``commit``
    flushes and fsyncs it and renames it over ``path`` (``durable.write_atomic``'s steps, the
    directory's fsync left to the caller). Left without a commit, it is removed."""

    def __init__(self, path: Path, counted: bool = True, hashed: bool = False) -> None:
        self.path = path
        fd, self._tmp = create_temp(path, ".tmp")
        self._fh: BinaryIO = os.fdopen(fd, "wb")
        self._batch: list[str] = []
        self._size = 0
        self._done = False
        self.offset = 0
        """The bytes written so far (``counted``: else 0, and ``write`` returns 0)."""
        self._hash = hashlib.sha256() if hashed else None
        self.sha256: str | None = None
        """The sha256 of the bytes written, once committed (``hashed``: else None)."""
        if not counted:
            self.write = self._write_uncounted  # type: ignore[method-assign]

    def _write_uncounted(self, piece: str) -> int:
        self._batch.append(piece)
        self._size += len(piece)
        if self._size >= BATCH_CHARS:
            self._flush()
        return 0

    def write(self, piece: str) -> int:
        """Write ``piece``; returns its length in bytes."""
        self._batch.append(piece)
        size = len(piece)
        self._size += size
        if not piece.isascii():
            size = len(piece.encode("utf-8"))
        self.offset += size
        if self._size >= BATCH_CHARS:
            self._flush()
        return size

    def _flush(self) -> None:
        data = "".join(self._batch).encode("utf-8")
        if self._hash is not None:
            self._hash.update(data)
        self._fh.write(data)
        self._batch.clear()
        self._size = 0

    def commit(self) -> None:
        self._flush()
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        os.replace(self._tmp, self.path)
        self._done = True
        if self._hash is not None:
            self.sha256 = self._hash.hexdigest()

    def discard(self) -> None:
        if not self._done:
            self._done = True
            with contextlib.suppress(OSError):
                self._fh.close()
            with contextlib.suppress(OSError):
                os.unlink(self._tmp)

    def __enter__(self) -> TextFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()


BATCH_CHARS = 1 << 18
"""Pieces gathered per write: three files are open at once, so less than durable's 1 MiB."""
