"""The output directory: an exclusive lock, a write-ahead journal, and atomic, hashed files.

Layout (see CONTRACT.md section 3)::

    OUT/
      .batchvid/lock           held (flock) by the one run writing here
      .batchvid/journal.jsonl  append-only, fsynced record of every create and outcome
      jobs/<id>/request.json, response.json, video.mp4, cover.<ext>
      report.json, report.md, junit.xml, metadata.jsonl, batchvid.lock

The journal is the source of truth for "what did we already pay for". A task id is appended and
fsynced before the runner waits on the task, so a run killed at any moment re-attaches to it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal

from batchvid.errors import OutputDirError, OutputDirLocked

STATE_DIR = ".batchvid"
JOURNAL = "journal.jsonl"
CHUNK = 1 << 16

RecordState = Literal["submitting", "refused", "submitted", "succeeded", "failed"]


def dumps(value: Any) -> str:
    """JSON as batchvid writes it: sorted keys, two-space indent, UTF-8 kept, trailing newline."""
    return json.dumps(value, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes | str, *, durable: bool = True) -> None:
    """Write ``data`` to a temporary file beside ``path``, flush, fsync, then rename over it."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    if not path.parent.is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON object file of an output directory (report.json, batchvid.lock), or a clear
    ``OutputDirError`` saying what is wrong with it."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise OutputDirError(
            f"{path} not found: is {path.parent} a batchvid output directory?"
        ) from None
    except (OSError, ValueError) as exc:
        raise OutputDirError(f"{path} cannot be read: {exc}") from exc
    if not isinstance(data, dict):
        raise OutputDirError(f"{path} is not a JSON object")
    return data


REPORT_KEYS = frozenset({"manifest", "summary", "jobs", "timing", "cost", "stopped"})


def read_report(root: Path) -> dict[str, Any]:
    """An output directory's report.json, checked to be one."""
    if root.is_file():
        raise OutputDirError(f"{root} is a file; give the output directory of a run")
    report = read_json_object(root / "report.json")
    if not report.keys() >= REPORT_KEYS or not isinstance(report["jobs"], list):
        raise OutputDirError(f"{root / 'report.json'} is not a batchvid report")
    return report


def sha256_file(path: Path) -> tuple[str, int]:
    """(sha256 hex, size in bytes) of a file, read in chunks."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


class HashingWriter:
    """A temporary file beside its final name that hashes what is written; ``commit`` renames it."""

    def __init__(self, final: Path) -> None:
        self.final = final
        if not final.parent.is_dir():
            final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".part", dir=final.parent)
        self.tmp = Path(tmp)
        self._fh: BinaryIO = os.fdopen(fd, "wb")
        self._digest = hashlib.sha256()
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self._fh.write(chunk)
        self._digest.update(chunk)
        self.size += len(chunk)

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

    def commit(self) -> None:
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        os.replace(self.tmp, self.final)

    def discard(self) -> None:
        if not self._fh.closed:
            self._fh.close()
        with contextlib.suppress(OSError):
            self.tmp.unlink()


@dataclass
class JobRecord:
    """What the journal says about one job key, folded from its entries."""

    key: str
    id: str
    state: RecordState
    task_id: str | None = None
    video: dict[str, Any] | None = None
    cover: dict[str, Any] | None = None
    media: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    creates: int = 0
    """How many create requests the journal shows for this key (a duplicate shows 2)."""
    extra: dict[str, Any] = field(default_factory=dict)


class Journal:
    """Append-only JSON lines, each fsynced before ``append`` returns."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: BinaryIO | None = None

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = self.path.open("ab")
        size = self._fh.tell()
        if size:
            end = self.path.read_bytes().rfind(b"\n") + 1
            if end != size:
                # The torn tail of a crash, which replay() ignored: drop it, or the next entry
                # would be glued onto it and lost.
                os.truncate(self.path, end)
                os.fsync(self._fh.fileno())

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def append(self, entry: dict[str, Any]) -> None:
        assert self._fh is not None, "journal is not open"
        line = json.dumps(entry, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        self._fh.write(line.encode("utf-8") + b"\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def replay(self) -> dict[str, JobRecord]:
        """Fold the journal into the latest record per key. A torn last line (crash mid-write)
        is ignored; a corrupt line elsewhere is an error naming its line number."""
        records: dict[str, JobRecord] = {}
        if not self.path.exists():
            return records
        lines = self.path.read_bytes().split(b"\n")
        for number, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            try:
                entry = json.loads(raw)
                if not isinstance(entry, dict):
                    raise ValueError("not an object")
                _fold(records, entry)
            except (ValueError, KeyError, TypeError) as exc:
                if number >= len(lines) - 1:  # the torn tail of a crash: the write never finished
                    break
                raise OutputDirError(
                    f"{self.path}:{number}: the journal is corrupt ({exc}); "
                    "move the output directory aside or repair that line"
                ) from exc
        return records


def _fold(records: dict[str, JobRecord], entry: dict[str, Any]) -> None:
    key = entry["key"]
    event = entry["event"]
    previous = records.get(key)
    creates = previous.creates if previous else 0
    if event == "submitting":
        records[key] = JobRecord(
            key,
            entry["id"],
            "submitting",
            creates=creates + 1,
            extra={"request_id": entry.get("request_id")},
        )
    elif event == "refused":  # the create was answered with an error: no task exists
        records[key] = JobRecord(key, entry["id"], "refused", creates=creates)
    elif event == "submitted":
        records[key] = JobRecord(key, entry["id"], "submitted", entry["task_id"], creates=creates)
    elif event == "succeeded":
        records[key] = JobRecord(
            key,
            entry["id"],
            "succeeded",
            entry.get("task_id"),
            video=entry["video"],
            cover=entry.get("cover"),
            media=entry.get("media"),
            creates=creates,
        )
    elif event == "failed":
        records[key] = JobRecord(
            key, entry["id"], "failed", entry.get("task_id"), error=entry["error"], creates=creates
        )
    else:
        raise ValueError(f"unknown journal event {event!r}")


class OutputDir:
    """An output directory opened for writing: holds the lock until ``close``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.state_dir = root / STATE_DIR
        self.journal = Journal(self.state_dir / JOURNAL)
        self._lock_fd: int | None = None

    def job_dir(self, job_id: str) -> Path:
        return self.root / "jobs" / job_id

    def open(self) -> dict[str, JobRecord]:
        """Take the exclusive lock, replay the journal and open it for appending."""
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputDirError(f"cannot create output directory {self.root}: {exc}") from exc
        fd = os.open(self.state_dir / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputDirLocked(
                f"{self.root} is in use by another batchvid run (pid {_lock_owner(self.state_dir)}); "
                "wait for it to finish or choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd
        self._sweep()
        records = self.journal.replay()
        self.journal.open()
        return records

    def _sweep(self) -> None:
        """Delete the temporary files a killed run left (half-written downloads and reports).
        Only a run holding the lock writes here, so every such file is an orphan."""
        for pattern in (".*.tmp", "jobs/*/.*.part", "jobs/*/.*.tmp"):
            for orphan in self.root.glob(pattern):
                with contextlib.suppress(OSError):
                    if orphan.is_file() and not orphan.is_symlink():
                        orphan.unlink()

    def close(self) -> None:
        self.journal.close()
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> OutputDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _lock_owner(state_dir: Path) -> str:
    try:
        return (state_dir / "lock").read_text().strip() or "unknown"
    except OSError:
        return "unknown"


def read_records(root: Path) -> dict[str, JobRecord]:
    """Replay an output directory's journal without taking its lock (for plan and status)."""
    return Journal(root / STATE_DIR / JOURNAL).replay()


def verify_file(path: Path, expected: dict[str, Any]) -> str | None:
    """None if ``path`` exists with the expected sha256 and size, else why not."""
    try:
        digest, size = sha256_file(path)
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
    if size != expected.get("bytes"):
        return f"size {size} differs from the recorded {expected.get('bytes')}"
    if digest != expected.get("sha256"):
        return "sha256 differs from the recorded one"
    return None


@contextlib.contextmanager
def hashing_writer(final: Path) -> Iterator[HashingWriter]:
    """A ``HashingWriter`` that is discarded unless the block commits it."""
    writer = HashingWriter(final)
    try:
        yield writer
    finally:
        writer.discard()
