"""``batchvid export``: an output directory as a dataset (WebDataset shards or Parquet) with a card.

The output directory is only read. An export is written into a hidden directory inside
``--to`` (``.export-…``) and its files are renamed into ``--to`` once every one is whole, the
card and ``SHA256SUMS`` last: an export that fails (a changed video, a full disk, Ctrl-C, even
while its files move) leaves ``--to`` as it found it. Killed outright, it may leave the hidden
directory and some files: without ``SHA256SUMS`` an export directory is not whole. The same output directory gives the same bytes (members sorted, times,
owners and modes fixed), so an export's ``SHA256SUMS`` can be committed.

Layout of an export directory::

    README.md            the dataset card (YAML front matter for the Hub, body from the run)
    SHA256SUMS           sha256 of every other file, as ``sha256sum -c`` reads it
    <name>-000000.tar …  --format webdataset: one sample per job, keyed by job id
    failed.jsonl         --format webdataset --include-failed: failed and pending jobs
    metadata.parquet     --format parquet: one row per job
    videos/<id>.mp4      --format parquet without --embed-video: copies of the videos
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from batchvid.errors import BatchvidError, OutputDirError, UsageError
from batchvid.store import JOURNAL, STATE_DIR, read_json_lines, read_report

__all__ = ["ExportError", "ExportOptions", "Run", "export", "load_run", "parse_shard_size"]

Format = Literal["webdataset", "parquet"]
DEFAULT_SHARD_BYTES = 1 << 30
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)\s*$", re.IGNORECASE)
_UNITS = {"k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")
COPY_CHUNK = 1 << 20
STAGE_PREFIX = ".export-"
"""The hidden directory inside ``--to`` an export is written into before its files move out."""
LAST = ("README.md", "SHA256SUMS")
"""Moved into ``--to`` after every other file: a directory with SHA256SUMS is a whole export."""


class ExportError(BatchvidError):
    """The output directory cannot be exported as it is (missing or damaged files)."""


@dataclass(frozen=True)
class ExportOptions:
    format: Format
    to: Path
    name: str | None = None
    """Shard name prefix (webdataset); the manifest name when None."""
    shard_samples: int | None = None
    shard_bytes: int | None = None
    embed_video: bool = False
    include_failed: bool = False
    license: str | None = None


@dataclass
class Run:
    """What an output directory holds, as the export reads it."""

    root: Path
    report: dict[str, Any]
    rows: list[dict[str, Any]]
    """metadata.jsonl rows of finished jobs (each with ``quality``), in manifest order."""
    jobs: dict[str, dict[str, Any]]
    """report.json's job entries by id."""
    failed: list[dict[str, Any]] = field(default_factory=list)
    """Failed and pending jobs as rows without media, with ``status`` and ``error``."""

    def source(self, row: dict[str, Any]) -> Path:
        return self.root / str(row["file_name"])

    def job(self, job_id: str) -> dict[str, Any]:
        """The job's entry in report.json (empty when it has none)."""
        return self.jobs.get(job_id, {})


def parse_shard_size(text: str) -> tuple[int | None, int | None]:
    """``--shard-size``: a count of samples ("1000") or a size ("500MB", "1GiB") per shard."""
    if text.strip().isdigit():
        count = int(text)
        if count < 1:
            raise UsageError("--shard-size: a shard holds at least 1 sample")
        return count, None
    match = _SIZE.match(text)
    if match is None:
        raise UsageError(
            f"--shard-size: {text!r} is neither a number of samples (1000) nor a size (500MB, 1GiB)"
        )
    number, unit = float(match[1]), match[2].lower()
    scale = 1 if unit == "b" else _UNITS[unit[0]] if "i" not in unit else 1 << (
        10 * "kmgt".index(unit[0]) + 10
    )
    size = int(number * scale)
    if size < 1:
        raise UsageError("--shard-size: a shard size must be positive")
    return None, size


def shard_name(text: str) -> str:
    """``--name``: the shards' file name prefix, a plain name (never a path: a ``/`` or a
    leading ``.`` would put the shards outside ``--to``, even into the output directory)."""
    if not _NAME.match(text):
        raise UsageError(
            f"--name {text!r}: a shard name prefix is letters, digits, '.', '_' and '-', "
            "not starting with '.' or '-' (the shards are written into --to)"
        )
    return text


def unfinished(root: Path) -> str | None:
    """Why ``root`` has no report.json although a run has journaled in it, or None."""
    if (root / "report.json").exists() or not (root / STATE_DIR / JOURNAL).exists():
        return None
    return ("a run is writing this directory, or was killed before its report: wait for it to "
            "end, or run the same command again to finish it")


def load_run(root: Path, *, include_failed: bool = False) -> Run:
    """Read report.json and metadata.jsonl of the output directory ``root``."""
    try:
        report = read_report(root)
        metadata = read_json_lines(root / "metadata.jsonl")
    except OutputDirError as exc:
        why = unfinished(root)
        text = f"{root} has no report.json yet: {why}" if why else (
            f"{exc}; export takes the directory of a finished `batchvid run`")
        raise OutputDirError(text) from exc
    jobs = {job["id"]: job for job in report["jobs"]}
    rows = _checked_rows(root, jobs, metadata)
    failed = []
    if include_failed:
        for job in report.get("jobs", []):
            if job["status"] in ("failed", "pending"):
                params = job["parameters"]
                failed.append({"id": job["id"], "key": job["key"], "prompt": params.get("prompt"),
                               "parameters": params, "status": job["status"],
                               "error": job.get("error")})
    return Run(root, report, rows, jobs, failed)


def _checked_rows(
    root: Path, jobs: dict[str, dict[str, Any]], metadata: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """metadata.jsonl's rows (each given its ``quality``), checked against report.json: the
    same finished jobs with the same videos, each a file inside ``root`` (a directory received
    from elsewhere could name ``../`` paths, and the ids become file names in the export)."""
    where = root / "metadata.jsonl"
    rows = []
    for number, row in enumerate(metadata, 1):
        job_id, name = str(row.get("id")), str(row.get("file_name"))
        if not inside(job_id) or "/" in job_id or not inside(name):
            raise ExportError(f"{where}:{number}: id {job_id!r} or file_name {name!r} is not a "
                              "name inside the output directory; it is not exported")
        job = jobs.get(job_id) or {}
        video = job.get("video") or {}
        if job.get("status") not in _DONE or video.get("sha256") != row.get("sha256"):
            raise ExportError(f"{where}:{number}: job {job_id!r} is not the finished video "
                              "report.json records; `batchvid verify` the output directory")
        row.setdefault("quality", (job.get("media") or {}).get("quality"))
        rows.append(row)
    listed = {str(row["id"]) for row in rows}
    missing = [i for i, job in jobs.items() if job["status"] in _DONE and i not in listed]
    if missing:
        raise ExportError(f"{where}: lacks {len(missing)} finished job(s) of report.json "
                          f"({missing[0]}, …); `batchvid verify` the output directory")
    return rows


_DONE = ("succeeded", "skipped")


def inside(name: str) -> bool:
    """A relative path with no ``..`` and no leading ``.`` in any part."""
    parts = name.replace("\\", "/").split("/")
    return bool(name) and not name.startswith("/") and all(p and not p.startswith(".") for p in parts)


def export(out: Path, options: ExportOptions) -> dict[str, Any]:
    """Export the output directory ``out`` into ``options.to``; returns a summary
    ``{"files": {name: sha256}, "samples": n, "failed": n}``. Nothing is left in ``options.to``
    when it fails: ``ExportError`` names the file (a source or a target) and why."""
    to = options.to
    name = shard_name(options.name) if options.name is not None else None
    _check_target(out, to)
    run = load_run(out, include_failed=options.include_failed)
    name = name or _slug(run.report["manifest"]["name"])
    created = not to.exists()
    try:
        to.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=STAGE_PREFIX, dir=to))
    except OSError as exc:
        raise ExportError(f"--to {to}: cannot write there ({exc.strerror or exc})") from exc
    try:
        files = _write_export(run, stage, name, options)
        _move_into_place(stage, to)
    except BaseException as exc:
        shutil.rmtree(stage, ignore_errors=True)
        if created:
            with contextlib.suppress(OSError):
                to.rmdir()
        if isinstance(exc, OSError):
            where = str(exc.filename or to).replace(str(stage), str(to))
            raise ExportError(
                f"{where}: {exc.strerror or exc}; nothing was exported (--to {to} is as it was)"
            ) from exc
        raise
    return {"files": files, "samples": len(run.rows), "failed": len(run.failed)}


def _write_export(run: Run, stage: Path, name: str, options: ExportOptions) -> dict[str, str]:
    """Every file of the export, written into ``stage``; {file name: sha256}."""
    if options.format == "webdataset":
        from batchvid.export.webdataset import write_shards

        files = write_shards(run, stage, name, options.shard_samples, options.shard_bytes)
    else:
        from batchvid.export.parquet import write_parquet

        files = write_parquet(run, stage, embed_video=options.embed_video)
    from batchvid.export.card import render_card

    license_ = options.license or run.report["manifest"].get("license")
    card = render_card(run, options.format, files, license_)
    files["README.md"] = write_file(stage / "README.md", card.encode("utf-8"))
    sums = "".join(f"{digest}  {path}\n" for path, digest in sorted(files.items()))
    write_file(stage / "SHA256SUMS", sums.encode("utf-8"))
    return files


def _move_into_place(stage: Path, to: Path) -> None:
    """Rename what ``stage`` holds into ``to`` (the card and SHA256SUMS last), then remove it.
    When a rename fails (or Ctrl-C comes between two), those done are renamed back into
    ``stage``, so ``to`` holds none of the export; only what this export moved is touched."""
    names = os.listdir(stage)
    moved: list[str] = []
    try:
        for entry in [*sorted(n for n in names if n not in LAST), *(n for n in LAST if n in names)]:
            target = to / entry
            if os.path.lexists(target):  # --to was empty when the export began
                raise ExportError(f"{target}: appeared during the export; nothing was exported")
            os.replace(stage / entry, target)
            moved.append(entry)
    except BaseException:
        for entry in reversed(moved):
            with contextlib.suppress(OSError):
                os.replace(to / entry, stage / entry)
        raise
    with contextlib.suppress(OSError):  # the export is whole in ``to`` by now
        stage.rmdir()


def _check_target(out: Path, to: Path) -> None:
    if not out.is_dir():
        raise OutputDirError(f"{out}: no such output directory")
    source, target = out.resolve(), to.resolve()
    if target == source or source in target.parents:
        raise UsageError(f"--to {to}: an export never writes into the output directory {out}")
    if to.exists() and not to.is_dir():
        raise UsageError(f"--to {to}: not a directory; choose a new one")
    if to.is_dir() and any(to.iterdir()):
        stale = [p.name for p in to.iterdir() if p.name.startswith(STAGE_PREFIX)]
        hint = f" (it holds {stale[0]}, left by an export that was killed)" if stale else ""
        raise UsageError(f"--to {to}: not an empty directory{hint}; choose a new one or remove it")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-") or "dataset"


# --- files written atomically while hashing --------------------------------------------------


class HashingFile:
    """A temporary file beside ``final`` that hashes what is written; ``commit`` renames it."""

    def __init__(self, final: Path) -> None:
        final.parent.mkdir(parents=True, exist_ok=True)
        self.final = final
        self.tmp = final.with_name(f".{final.name}.part")
        self._fh = open(self.tmp, "wb")  # noqa: SIM115 -- closed by commit/abort
        self._digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self._digest.update(data)
        self.size += len(data)
        try:
            return self._fh.write(data)
        except OSError as exc:  # a full disk: name the file (the OSError of a write does not)
            raise OSError(exc.errno, exc.strerror, str(self.final)) from exc

    def commit(self) -> str:
        try:
            self._fh.close()
            os.replace(self.tmp, self.final)
        except OSError as exc:
            self.abort()
            raise OSError(exc.errno, exc.strerror, str(self.final)) from exc
        return self._digest.hexdigest()

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self._fh.close()
        self.tmp.unlink(missing_ok=True)


def commit_file(tmp: Path, final: Path) -> str:
    """Rename the finished ``tmp`` over ``final``; the file's sha256."""
    digest = hashlib.sha256()
    with open(tmp, "rb") as fh:
        while chunk := fh.read(COPY_CHUNK):
            digest.update(chunk)
    os.replace(tmp, final)
    return digest.hexdigest()


def write_file(path: Path, data: bytes) -> str:
    """Write ``data`` to ``path`` atomically; its sha256."""
    out = HashingFile(path)
    try:
        out.write(data)
    except BaseException:
        out.abort()
        raise
    return out.commit()


class VerifiedReader:
    """Reads a source video while hashing it; ``check`` compares with the recorded sha256."""

    def __init__(self, path: str | os.PathLike[str], expected: str) -> None:
        self.path, self.expected = path, expected
        try:
            self._fh: IO[bytes] = open(path, "rb")  # noqa: SIM115 -- closed by close()
        except FileNotFoundError as exc:
            raise ExportError(f"{path}: missing; `batchvid verify` the output directory") from exc
        self._digest = hashlib.sha256()
        self.size = os.fstat(self._fh.fileno()).st_size

    def read(self, n: int = -1) -> bytes:
        data = self._fh.read(n)
        self._digest.update(data)
        return data

    def chunks(self) -> Iterator[bytes]:
        while data := self.read(COPY_CHUNK):
            yield data

    def close(self, *, check: bool = True) -> None:
        """Close the file; with ``check``, raise ExportError if what was read is not the
        video the report recorded."""
        self._fh.close()
        if check and self._digest.hexdigest() != self.expected:
            raise ExportError(
                f"{self.path}: sha256 differs from report.json; the file changed after the run "
                "(`batchvid verify` the output directory, then `batchvid run` to fetch it again)"
            )
