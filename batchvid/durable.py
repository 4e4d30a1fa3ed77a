"""Files that survive a crash or a power cut: atomic, durable writes and hashed downloads.

Every output file is written to a temporary name beside its final one (``.NAME.<random>.tmp``
or ``.part``; the next run holding the lock sweeps orphans), flushed, fsynced, renamed over the
final name, and then its directory is fsynced: without that last step a power cut can forget
the rename although the journal already calls the file done (leveldb's ``SyncDirIfManifest``).
Temporary files are created 0666 minus the umask, so outputs get the mode any file the user
creates gets (0644 under umask 022).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import random
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from batchvid import jsontext


def dumps(value: Any) -> str:
    """JSON as batchvid writes it: sorted keys, two-space indent, UTF-8 kept, trailing newline
    (``json.dumps``'s text, written faster by ``batchvid.jsontext``)."""
    return jsontext.indented(value) + "\n"


def write_json(path: Path, value: Any, *, durable: bool = True) -> None:
    """``write_atomic(path, dumps(value))`` without the whole text in memory at once."""
    try:
        write_atomic(path, itertools.chain(jsontext.pieces(value), ("\n",)), durable=durable)
    except jsontext.NotPlain:
        write_atomic(path, dumps(value), durable=durable)


def fsync_dir(path: Path) -> None:
    """Make the entries of directory ``path`` durable: after a rename into it, a power cut can
    otherwise forget the rename although the file's data was synced (leveldb's
    ``SyncDirIfManifest``)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dir(path: Path, *, durable: bool = True, own_entry: bool = True) -> None:
    """Create ``path`` and any missing parents; with ``durable``, fsync the parent of each
    directory created so the new entries survive a power cut. ``own_entry=False``: not
    ``path``'s own entry (its parent's fsync), which the caller makes durable later
    (``sync_entry``: recorded by ``made_entry``, whether made here or found)."""
    try:
        os.mkdir(path)  # a new job folder: its parent, jobs/, exists (no stat to ask first)
        missing = [path]
    except FileExistsError:
        if os.path.isdir(path):
            if not own_entry:  # (a --force regeneration): a record of an earlier making replaced
                made_entry(path)
            return
        raise
    except FileNotFoundError:
        # The missing ones are those below the nearest existing ancestor (whose own
        # ancestors exist): not one stat per level up to the root.
        missing = [path]
        for parent in path.parents:
            if os.path.isdir(parent):
                break
            missing.append(parent)
        path.mkdir(parents=True, exist_ok=True)
    if durable:
        for created in reversed(missing):
            if own_entry or created is not path:
                fsync_dir(created.parent)
    if not own_entry:
        made_entry(path)


ENTRIES_KEPT = 1024
"""The most entries ``made_entry`` remembers per directory (``sync_entry``): past it, they are
forgotten and each gets an fsync of its own, which is always safe."""

DIRECTORIES_KEPT = 16
"""The most directories whose entries are remembered (the oldest forgotten first)."""


class _Entries:
    """Entries of one directory made by this process and not yet made durable: each with the
    count of entries made when it was, and the count an ended fsync of the directory covers."""

    __slots__ = ("lock", "made", "count", "synced")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.made: dict[str, int] = {}
        self.count = 0
        self.synced = 0


_directories: dict[str, _Entries] = {}
_directories_lock = threading.Lock()


def _entries(directory: str) -> _Entries:
    """The entries of ``directory`` (by its absolute path: a relative one names another
    directory after a change of the working directory)."""
    directory = os.path.abspath(directory)
    with _directories_lock:
        entries = _directories.get(directory)
        if entries is None:
            if len(_directories) >= DIRECTORIES_KEPT:
                del _directories[next(iter(_directories))]
            entries = _directories[directory] = _Entries()
        return entries


def made_entry(path: Path) -> None:
    """``path`` was just created (or found) by this process and its entry in its parent may
    not be durable yet (``make_dir(own_entry=False)``): ``sync_entry`` makes it durable later.
    A record of an earlier making of the same name is replaced: only fsyncs begun after this
    call cover the entry as it is now (it may have been removed and made again meanwhile)."""
    entries = _entries(os.fspath(path.parent))
    with entries.lock:
        if len(entries.made) >= ENTRIES_KEPT:
            entries.made.clear()
        entries.count += 1
        entries.made[path.name] = entries.count


def sync_entry(path: Path) -> None:
    """Make ``path``'s entry in its parent durable, as ``fsync_dir(path.parent)`` does: a group
    commit of the parent's new entries. An fsync of a directory makes durable every entry
    made before it began, so one made by this process is covered by any such fsync that began
    after it was made (``made_entry``) and has ended: no fsync then. Any other entry (one
    ``make_dir`` did not make or find, or forgotten) gets its own, which covers every entry
    made before it."""
    parent = os.fspath(path.parent)
    entries = _entries(parent)
    with entries.lock:
        made = entries.made.pop(path.name, None)
        if made is not None and made <= entries.synced:
            return
        covers = entries.count
    fsync_dir(path.parent)  # an fsync that fails (raises) covers nothing
    with entries.lock:
        entries.synced = max(entries.synced, covers)


def _forget_entries() -> None:
    """In a child made by ``os.fork``: a lock a thread of the parent held at the fork would
    never be released there, so the child starts with no records (each entry gets an fsync of
    its own, which is always safe)."""
    global _directories_lock
    _directories.clear()
    _directories_lock = threading.Lock()


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_forget_entries)


def create_temp(final: Path, suffix: str, *, durable: bool = True) -> tuple[int, Path]:
    """A new, empty temporary file beside ``final`` (``.NAME.<random><suffix>``), opened for
    writing, its directory made first when missing (``make_dir``, ``durable`` as given). Unlike
    ``tempfile.mkstemp`` (always 0600) its mode is what the umask gives, so the renamed output
    file gets the same mode as any file the user creates (0644 under umask 022)."""
    made = False
    while True:
        tmp = final.with_name(f".{final.name}.{_names.getrandbits(32):08x}{suffix}")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue
        except FileNotFoundError:
            # The directory is missing (it nearly always exists: no stat to ask first).
            if made:
                raise
            make_dir(final.parent, durable=durable)
            made = True


_names = random.Random()
"""Temporary names' random parts: unique enough to rarely collide (``O_EXCL`` retries when
they do), without a ``getrandom`` system call per file (``secrets``); seeded from the OS."""


def write_atomic(path: Path, data: bytes | str | Iterable[str], *, durable: bool = True) -> None:
    """Write ``data`` (or its pieces, UTF-8 encoded as they come) to a temporary file beside
    ``path``, flush, then rename over it. With ``durable`` (files the journal or a reader relies
    on), fsync the file before the rename and its directory after it."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    fd, tmp = create_temp(path, ".tmp", durable=durable)
    try:
        if isinstance(data, bytes):
            # Straight to the descriptor: a buffered file object costs three more system
            # calls (fstat, isatty's ioctl, lseek) and its setup, for one write.
            try:
                _write_all(fd, (data,))
                if durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
        else:
            with os.fdopen(fd, "wb") as fh:
                _write_pieces(fh, data)
                fh.flush()
                if durable:
                    os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        fsync_dir(path.parent)


def _write_pieces(fh: BinaryIO, pieces: Iterable[str]) -> None:
    """Text pieces to ``fh`` in writes of about ``_PIECES_BYTES``."""
    batch: list[str] = []
    size = 0
    for piece in pieces:
        batch.append(piece)
        size += len(piece)
        if size >= _PIECES_BYTES:
            fh.write("".join(batch).encode("utf-8"))
            batch.clear()
            size = 0
    fh.write("".join(batch).encode("utf-8"))


_PIECES_BYTES = 1 << 20


def file_stat(path: str | Path) -> dict[str, int] | None:
    """What says a file is unchanged without reading it: size, mtime_ns and inode (None when
    it cannot be stat'ed)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return {"bytes": st.st_size, "ino": st.st_ino, "mtime_ns": st.st_mtime_ns}


def sha256_file(path: Path) -> tuple[str, int]:
    """(sha256 hex, size in bytes) of a file, read in chunks."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def content_mismatch(digest: str, size: int, expected: Mapping[str, Any]) -> str | None:
    """Why a file hashed to ``digest`` and ``size`` is not the one ``expected`` records (its
    ``bytes`` and ``sha256``), or None when it is."""
    if size != expected.get("bytes"):
        return f"size {size} differs from the recorded {expected.get('bytes')}"
    if digest != expected.get("sha256"):
        return "sha256 differs from the recorded one"
    return None


SYNC_EVERY = 32 << 20
"""A ``HashingWriter`` starts a background ``fdatasync`` each time this many bytes were written
since the last one began (when it has finished), so the fsync of ``commit`` finds little left."""
IOV_MAX = 1024
"""Buffers per ``os.writev`` call (Linux's ``IOV_MAX``; POSIX guarantees at least 16, and the
BSDs and macOS have 1024 too)."""


class HashingWriter:
    """A temporary file beside its final name that hashes what is written; ``commit`` renames it.

    Large files are synced as they grow: past every ``SYNC_EVERY`` bytes a background thread
    runs ``fdatasync`` while writing goes on, so the disk works during the download rather than
    after it. The durability rule is unchanged: ``commit`` fsyncs the whole file before the
    rename, and an error of a background sync (which the kernel reports only once) fails it.
    """

    def __init__(self, final: Path) -> None:
        self.final = final
        self._fd = -1
        self.tmp: Path | None = None
        """The temporary file, made by the first write (``commit``'s, for a held body)."""
        self._open = False
        self._held: Sequence[bytes] = ()
        self._digest = hashlib.sha256()
        self.size = 0
        self._synced = 0
        """``size`` when the last background sync started."""
        self._lock = threading.Lock()
        self._syncing: threading.Thread | None = None
        self._sync_error: OSError | None = None
        self._discarded = False
        self._committed = False

    def write(self, chunk: bytes) -> None:
        self.write_all((chunk,))

    def write_all(self, chunks: Sequence[bytes]) -> None:
        """Hash and append ``chunks`` in order, without joining them (``os.writev``)."""
        self._append(chunks)
        self.size += sum(len(chunk) for chunk in chunks)
        if self.size - self._synced < SYNC_EVERY:
            return
        with self._lock:
            if self._syncing is None:
                self._synced = self.size
                self._syncing = threading.Thread(target=self._sync, name="batchvid-sync", daemon=True)
                self._syncing.start()

    def hold(self, chunks: Sequence[bytes]) -> None:
        """The last ``chunks``, counted in ``size`` now and written by ``commit`` (in its
        thread): a body that fits in one batch makes and writes its file there, not on the
        event loop. Nothing may be written after them."""
        self._held = chunks
        self.size += sum(len(chunk) for chunk in chunks)

    def _append(self, chunks: Sequence[bytes]) -> None:
        if not self._open:
            self._fd, self.tmp = create_temp(self.final, ".part")
            self._open = True
        for chunk in chunks:
            self._digest.update(chunk)  # releases the GIL for all but tiny chunks
        for start in range(0, len(chunks), IOV_MAX):
            _write_all(self._fd, chunks[start : start + IOV_MAX])

    @property
    def sha256(self) -> str:
        """The hash of what was written (held chunks count once ``commit`` wrote them)."""
        return self._digest.hexdigest()

    def commit(self, *, sync_dir: bool = True) -> None:
        """Make the file durable under its final name: fsync, rename, fsync the directory (the
        journal is about to call it done). ``sync_dir=False`` leaves the directory's fsync to
        the caller, who makes one for all the files it commits there before journaling them."""
        with self._lock:
            running = self._syncing
        if running is not None:
            running.join()
        if self._sync_error is not None:
            raise self._sync_error
        held, self._held = self._held, ()
        self._append(held)  # makes the (empty) file if nothing was written yet
        os.fsync(self._fd)
        self._close()
        assert self.tmp is not None
        os.replace(self.tmp, self.final)
        self._committed = True
        if sync_dir:
            fsync_dir(self.final.parent)

    def discard(self) -> None:
        """Delete the temporary file, without waiting: under a running background sync, the
        descriptor stays open (its number could be reused) and that thread removes the file.
        After ``commit`` there is nothing to delete."""
        if self._committed:
            return
        with self._lock:
            self._discarded = True
            if self._syncing is not None:
                return
        self._remove()

    def _sync(self) -> None:
        try:
            _fdatasync(self._fd)
        except OSError as exc:
            self._sync_error = exc
        with self._lock:
            self._syncing = None
            discarded = self._discarded
        if discarded:
            self._remove()

    def _remove(self) -> None:
        self._close()
        if self.tmp is not None:
            with contextlib.suppress(OSError):
                self.tmp.unlink()

    def _close(self) -> None:
        if self._open:
            self._open = False
            os.close(self._fd)


_fdatasync = getattr(os, "fdatasync", os.fsync)
"""macOS has no ``fdatasync``."""


def _write_all(fd: int, chunks: Sequence[bytes]) -> None:
    """Write all of ``chunks`` (at most ``IOV_MAX``) to ``fd`` in one ``writev`` where there is
    one (not on Windows), finishing a short write."""
    if not chunks:
        return
    written = os.writev(fd, chunks) if hasattr(os, "writev") else 0
    if written == sum(len(chunk) for chunk in chunks):
        return
    rest = memoryview(b"".join(chunks))[written:]  # a short write: rare (a signal, a full disk)
    while rest:
        rest = rest[os.write(fd, rest) :]


@contextlib.contextmanager
def hashing_writer(final: Path) -> Iterator[HashingWriter]:
    """A ``HashingWriter`` that is discarded unless the block commits it."""
    writer = HashingWriter(final)
    try:
        yield writer
    finally:
        writer.discard()
