"""The journal's lines one at a time, and its last line as the journal opens for appending.

``decode_line`` is ``json.loads`` of one compact journal line. ``settle_tail`` looks at the last
line before anything is appended after it: a whole entry is kept (given back its newline if it
lost only that); anything else (the torn tail of a crash, or a damaged line that still ends in
a newline, which replay ignored) is moved aside into ``DAMAGED_LINES``, or the next line would
follow it and make it a corrupt line in the middle. A whole last entry of an event this
batchvid does not know stops the run instead, the journal unchanged.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from batchvid.durable import fsync_dir
from batchvid.entries import ENTRY_TYPES, check
from batchvid.errors import OutputDirError

SCAN = json.JSONDecoder().scan_once  # type: ignore[attr-defined]
"""``json.loads``'s own scanner: ``SCAN(text, index)`` is (value, end), StopIteration when
nothing decodes at ``index``."""


def decode_line(line: str) -> Any:
    """``json.loads(line)``: the scanner straight on a compact line and its newline, json.loads
    for anything else (other whitespace, errors and their messages)."""
    try:
        value, end = SCAN(line, 0)
    except StopIteration:
        pass
    else:
        if end == len(line) or line[end:] == "\n":
            return value
    return json.loads(line)


def _after_last_newline(path: Path, size: int) -> int:
    """The offset just after the last newline of a file of ``size`` bytes (0 without one),
    read from its end backwards."""
    with path.open("rb") as fh:
        end = size
        while end > 0:
            start = max(0, end - (1 << 16))
            fh.seek(start)
            found = fh.read(end - start).rfind(b"\n")
            if found >= 0:
                return start + found + 1
            end = start
    return 0


def _read_from(path: Path, offset: int) -> bytes:
    """The file's bytes from ``offset`` on (its last line)."""
    with path.open("rb") as fh:
        fh.seek(offset)
        return fh.read()


def _is_entry(tail: bytes) -> bool:
    """Whether ``tail`` (the journal's last line) is one journal entry (``_check``), or
    nothing but whitespace (a blank line, which replay() skips)."""
    if tail.isspace():
        return True
    try:
        check(decode_line(tail.decode("utf-8")))
    except (ValueError, KeyError, TypeError):
        return False
    return True


def _refuse_unknown_event(path: Path, tail: bytes) -> None:
    """An ``OutputDirError`` if ``tail``, the last line of the journal at ``path``, is a whole
    JSON object (a torn line is not) naming an event this batchvid does not know: a newer
    batchvid's entry, which may record a paid task, is not moved aside and forgotten but stops
    the run, as it would anywhere else in the journal."""
    try:
        data = json.loads(tail)
    except ValueError:
        return
    event = data.get("event") if isinstance(data, dict) else None
    if isinstance(event, str) and event not in ENTRY_TYPES:
        raise OutputDirError(
            f"{path}: its last line records the event {event!r}, which this batchvid does not know "
            "(written by a newer version?); the journal is unchanged: run a batchvid that knows it"
        )


DAMAGED_LINES = "journal-damaged-lines.txt"
"""Where ``Journal.open`` moves a damaged last line, beside the journal: appended, never
overwritten, each line as it was (a newline added to a torn one)."""


@dataclass(frozen=True, slots=True)
class SetAside:
    """A damaged last line ``Journal.open`` moved out of the journal: where to (``path``),
    from which byte offset of the journal, and how many bytes."""

    path: Path
    offset: int
    bytes: int


def _move_aside(path: Path, start: int, line: bytes) -> SetAside:
    """Move the journal's damaged last line, ``line`` from byte ``start``, to the end of
    ``DAMAGED_LINES`` (fsynced, a new file's directory too), then cut it off the journal:
    a crash in between leaves the line in both, never in neither."""
    aside = path.with_name(DAMAGED_LINES)
    size = start + len(line)
    try:
        existed = aside.exists()
        with aside.open("ab") as out:
            out.write(line if line.endswith(b"\n") else line + b"\n")
            out.flush()
            os.fsync(out.fileno())
        if not existed:
            fsync_dir(path.parent)
    except OSError as exc:  # a full disk, say: the journal is left as it is
        raise OutputDirError(
            f"{path}: its last line ({size - start} bytes at offset {start}) is not a whole entry and "
            f"cannot be moved aside into {aside} ({exc}); the journal is unchanged: free space or "
            "fix that file's permissions and run again"
        ) from exc
    try:
        os.truncate(path, start)
    except OSError as exc:
        raise OutputDirError(f"{path} cannot be cut after its damaged last line was copied into {aside}: {exc}") from exc
    return SetAside(aside, start, size - start)


def settle_tail(path: Path, fh: BinaryIO) -> SetAside | None:
    """Make the journal at ``path``, open for appending as ``fh``, end in a whole entry (or
    nothing) before the next line is appended: returns the damaged last line it moved aside,
    if it moved one (module doc)."""
    size = fh.tell()
    if not size:
        return None
    end = _after_last_newline(path, size)
    whole = end == size
    if whole:  # the last line ends in its newline: its start
        end = _after_last_newline(path, size - 1)
    line = _read_from(path, end)
    if _is_entry(line):
        if not whole:  # a whole line that lost only its newline, which replay() read: keep it
            fh.write(b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        return None
    _refuse_unknown_event(path, line)
    aside = _move_aside(path, end, line)
    os.fsync(fh.fileno())
    return aside
