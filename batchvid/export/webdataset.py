"""WebDataset tar shards, byte for byte reproducible, written with the standard library.

A sample is the members ``<key>.jpg`` (poster, when the job has one), ``<key>.json`` (its
metadata.jsonl row), ``<key>.mp4`` and ``<key>.txt`` (the prompt), consecutive in the tar as
WebDataset requires. The key is the job id with each ``.`` written ``%2e``, since a WebDataset
reader splits a member name at its first dot. Samples are sorted by key, members by extension,
and every header is fixed: POSIX pax format, mtime 0, mode 0644, uid and gid 0, empty user and
group names. So the same output directory always gives the same shards (the reproducible-builds
convention, ``tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner``).
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchvid.export import (
    COPY_CHUNK,
    DEFAULT_SHARD_BYTES,
    ExportError,
    HashingFile,
    Run,
    VerifiedReader,
    inside,
    write_file,
)

BLOCK = tarfile.BLOCKSIZE


def sample_key(job_id: str) -> str:
    return job_id.replace(".", "%2e")


def write_shards(
    run: Run, to: Path, name: str, max_samples: int | None, max_bytes: int | None
) -> dict[str, str]:
    """Write ``<name>-000000.tar``, … into ``to``; returns {file name: sha256}."""
    if max_samples is None and max_bytes is None:
        max_bytes = DEFAULT_SHARD_BYTES
    files: dict[str, str] = {}
    samples = sorted((_Sample.of(run, row) for row in run.rows), key=lambda s: s.key)
    for number, shard in enumerate(_shards(samples, max_samples, max_bytes)):
        path = to / f"{name}-{number:06d}.tar"
        files[path.name] = _write_shard(path, shard, run.root)
    if run.failed:
        text = "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in run.failed)
        files["failed.jsonl"] = write_file(to / "failed.jsonl", text.encode("utf-8"))
    return files


@dataclass(frozen=True, slots=True)
class _Sample:
    key: str
    json: bytes
    text: bytes
    video: str
    video_size: int
    sha256: str
    poster: str | None
    poster_size: int
    poster_sha256: str | None
    """The poster's sha256 in report.json, or None when it records none (an older run)."""

    @classmethod
    def of(cls, run: Run, row: dict[str, Any]) -> _Sample:
        video = os.path.join(run.root, row["file_name"])
        try:
            size = os.stat(video).st_size
        except FileNotFoundError as exc:
            raise ExportError(f"{video}: missing; `batchvid verify` the output directory") from exc
        recorded = run.job(row["id"]).get("poster") or {}
        relative = str(recorded.get("path") or f"jobs/{row['id']}/poster.jpg")
        if not inside(relative):
            raise ExportError(f"{run.root}/report.json: job {row['id']!r}: poster path "
                              f"{relative!r} is not a name inside the output directory")
        path = os.path.join(run.root, relative)
        poster: str | None = path
        try:
            poster_size = os.stat(path).st_size
        except FileNotFoundError as exc:
            if recorded:
                raise ExportError(
                    f"{path}: missing; `batchvid view {run.root}` makes it again"
                ) from exc
            poster, poster_size = None, 0
        if recorded and poster_size != recorded.get("bytes", poster_size):
            raise _damaged_poster(path, run.root)
        data = (json.dumps(row, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")
        text = (row.get("prompt") or "").encode("utf-8")
        return cls(sample_key(row["id"]), data, text, video, size, row["sha256"], poster,
                   poster_size, recorded.get("sha256"))

    def poster_bytes(self, root: Path) -> bytes:
        """The poster, checked against its recorded sha256."""
        assert self.poster is not None
        with open(self.poster, "rb") as fh:
            data = fh.read()
        if self.poster_sha256 is not None and hashlib.sha256(data).hexdigest() != self.poster_sha256:
            raise _damaged_poster(self.poster, root)
        return data

    def tar_bytes(self) -> int:
        sizes = [len(self.json), self.video_size, len(self.text)]
        if self.poster is not None:
            sizes.append(self.poster_size)
        return sum(BLOCK + _padded(s) for s in sizes)


def _damaged_poster(path: str, root: Path) -> ExportError:
    return ExportError(
        f"{path}: sha256 differs from report.json; remove it and `batchvid view {root}` "
        "makes it again"
    )


def _shards(
    samples: list[_Sample], max_samples: int | None, max_bytes: int | None
) -> Iterator[list[_Sample]]:
    """Consecutive groups of samples: at most ``max_samples`` each, or as many as fit in
    ``max_bytes`` of tar (a sample larger than that gets a shard of its own)."""
    shard: list[_Sample] = []
    size = 0
    for sample in samples:
        grow = sample.tar_bytes()
        full = (max_samples is not None and len(shard) >= max_samples) or (
            max_bytes is not None and shard and size + grow > max_bytes
        )
        if full:
            yield shard
            shard, size = [], 0
        shard.append(sample)
        size += grow
    if shard:
        yield shard


def _padded(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


def header(name: str, size: int) -> bytes:
    """The tar header of a regular file, exactly as ``tarfile`` writes it in pax format with
    the fixed fields above; built directly for a short ASCII name (five times faster than
    ``TarInfo.tobuf``, which it falls back to for other names and for sizes of 8 GiB or more)."""
    if len(name) > 100 or not name.isascii() or size >= _MAX_USTAR_SIZE:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode, info.uid, info.gid = size, 0, 0o644, 0, 0
        info.uname = info.gname = ""
        return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    encoded = name.encode("ascii")
    size_field = b"%011o\x00" % size
    buf = bytearray(_TEMPLATE)
    buf[0 : len(encoded)] = encoded
    buf[124:136] = size_field
    # the checksum is the sum of the header's bytes with its own field as spaces
    buf[148:156] = b"%06o\x00 " % (_TEMPLATE_SUM + sum(encoded) + sum(size_field))
    return bytes(buf)


def _template() -> bytes:
    buf = bytearray(BLOCK)
    buf[100:124] = b"0000644\x000000000\x000000000\x00"  # mode, uid, gid
    buf[136:156] = b"00000000000\x00        "  # mtime 0; checksum field blank while summing
    buf[156] = ord(tarfile.REGTYPE)
    buf[257:265] = tarfile.POSIX_MAGIC
    return bytes(buf)


_TEMPLATE = _template()
_TEMPLATE_SUM = sum(_TEMPLATE)
_MAX_USTAR_SIZE = 8**11


class _ShardWriter:
    """Buffers small members and streams videos into one shard file."""

    def __init__(self, out: HashingFile) -> None:
        self.out = out
        self.buffer = bytearray()

    def member(self, name: str, data: bytes) -> None:
        self.buffer += header(name, len(data))
        self.buffer += data
        self.buffer += bytes(_padded(len(data)) - len(data))
        if len(self.buffer) >= COPY_CHUNK:
            self.flush()

    def stream(self, name: str, path: str, size: int, sha256: str) -> None:
        self.buffer += header(name, size)
        video = VerifiedReader(path, sha256)
        try:
            copied = 0
            while copied < size:
                chunk = video.read(min(COPY_CHUNK, size - copied))
                if not chunk:
                    raise ExportError(f"{path}: shorter than when the export began")
                copied += len(chunk)
                if self.buffer:
                    self.buffer += chunk
                    self.flush()
                else:
                    self.out.write(chunk)
        except BaseException:
            video.close(check=False)
            raise
        video.close()
        self.buffer += bytes(_padded(size) - size)

    def flush(self) -> None:
        self.out.write(bytes(self.buffer))
        self.buffer.clear()

    def finish(self) -> None:
        """The end-of-archive blocks, padded to a whole tar record as ``tarfile`` does."""
        self.buffer += bytes(2 * BLOCK)
        total = self.out.size + len(self.buffer)
        self.buffer += bytes(-total % tarfile.RECORDSIZE)
        self.flush()


def _write_shard(path: Path, samples: list[_Sample], root: Path) -> str:
    out = HashingFile(path)
    try:
        writer = _ShardWriter(out)
        for sample in samples:
            if sample.poster is not None:
                writer.member(f"{sample.key}.jpg", sample.poster_bytes(root))
            writer.member(f"{sample.key}.json", sample.json)
            writer.stream(f"{sample.key}.mp4", sample.video, sample.video_size, sample.sha256)
            writer.member(f"{sample.key}.txt", sample.text)
        writer.finish()
    except BaseException:
        out.abort()
        raise
    return out.commit()
