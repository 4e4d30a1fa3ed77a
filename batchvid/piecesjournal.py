"""Whether the journal still holds the records a report's pieces were made from
(``batchvid.reportpieces``): its state when the pieces were recorded (``journal_state``: its
identity and the sha256 of its bytes), and the keys of the lines appended since
(``changed_keys``), or None when it changed otherwise."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from batchvid.snapshot import hash_prefix
from batchvid.store import JOURNAL, STATE_DIR


def identity(st: os.stat_result) -> list[int]:
    """A file's size, mtime, inode and device: the same file, unchanged, while they are."""
    return [st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev]


_READ = 1 << 20


def journal_state(root: Path, known: list[Any] | None = None) -> list[Any] | None:
    """The journal's identity and the sha256 of its bytes (``changed_keys``), or None
    without one: ``known`` (the state the previous record holds) while the journal has its
    identity (as ``changed_keys`` trusts it), else read and hashed."""
    path = root / STATE_DIR / JOURNAL
    if known is not None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        if [st.st_mtime_ns, st.st_ino, st.st_dev, st.st_size] == known[:4]:
            return known
    try:
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            digest = hashlib.sha256()
            size = 0
            while chunk := fh.read(_READ):
                digest.update(chunk)
                size += len(chunk)
    except OSError:
        return None
    return [*identity(st)[1:], size, digest.hexdigest()]


def changed_keys(path: Path, recorded: Any) -> tuple[frozenset[str], list[Any]] | None:
    """The keys of the journal lines written after the ones ``recorded`` (``journal_state``:
    the journal as the record was made), and the journal's state now, as ``journal_state``
    gives it (its bytes hashed here: not again when the record is saved); or None unless the
    journal still begins with those very bytes and each line after them is whole and names its
    key. A journal as it was (same size, mtime, inode and device) has none; otherwise its
    recorded part is hashed again (the journal is only ever appended to: a rewritten one does
    not match; a copy of it, another inode, does)."""
    try:
        mtime_ns, ino, dev, size, digest = recorded
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            if [st.st_mtime_ns, st.st_ino, st.st_dev, st.st_size] == [mtime_ns, ino, dev, size]:
                return frozenset(), list(recorded)
            if type(size) is not int or st.st_size < size:
                return None
            hashed = hash_prefix(fh, size)
            if fh.tell() != size or hashed.hexdigest() != digest:
                return None
            tail = fh.read()
    except (OSError, ValueError, TypeError):
        return None
    if tail and not tail.endswith(b"\n"):
        return None  # a line being written, or torn
    keys = set()
    try:
        for line in tail.splitlines():
            if line.strip():
                key = json.loads(line)["key"]
                if type(key) is not str:
                    return None
                keys.add(key)
    except (ValueError, KeyError, TypeError):
        return None
    hashed.update(tail)  # (the size hashed, not the size stat'ed: the journal may have grown since)
    return frozenset(keys), [*identity(st)[1:], size + len(tail), hashed.hexdigest()]
