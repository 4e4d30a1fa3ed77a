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

import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from batchvid.export import COPY_CHUNK, HashingFile, Run, VerifiedReader, write_file

BLOCK = tarfile.BLOCKSIZE


def sample_key(job_id: str) -> str:
    return job_id.replace(".", "%2e")


def write_shards(
    run: Run, to: Path, name: str, max_samples: int | None, max_bytes: int | None
) -> dict[str, str]:
    """Write ``<name>-000000.tar``, … into ``to``; returns {file name: sha256}."""
    if max_samples is None and max_bytes is None:
        from batchvid.export import DEFAULT_SHARD_BYTES

        max_bytes = DEFAULT_SHARD_BYTES
    files: dict[str, str] = {}
    rows = sorted(run.rows, key=lambda r: sample_key(r["id"]))
    for number, shard in enumerate(_shards(run, rows, max_samples, max_bytes)):
        path = to / f"{name}-{number:06d}.tar"
        files[path.name] = _write_shard(run, path, shard)
    if run.failed:
        text = "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in run.failed)
        files["failed.jsonl"] = write_file(to / "failed.jsonl", text.encode("utf-8"))
    return files


def _shards(
    run: Run, rows: list[dict[str, Any]], max_samples: int | None, max_bytes: int | None
) -> Iterator[list[dict[str, Any]]]:
    """Consecutive groups of rows: at most ``max_samples`` each, or as many as fit in
    ``max_bytes`` of tar (a sample larger than that gets a shard of its own)."""
    shard: list[dict[str, Any]] = []
    size = 0
    for row in rows:
        grow = _sample_bytes(run, row) if max_bytes is not None else 0
        full = (max_samples is not None and len(shard) >= max_samples) or (
            max_bytes is not None and shard and size + grow > max_bytes
        )
        if full:
            yield shard
            shard, size = [], 0
        shard.append(row)
        size += grow
    if shard:
        yield shard


def _padded(size: int) -> int:
    return BLOCK + -(-size // BLOCK) * BLOCK


def _sample_bytes(run: Run, row: dict[str, Any]) -> int:
    sizes = [run.source(row).stat().st_size, len(_json(row)), len(_text(row))]
    poster = run.poster(row)
    if poster is not None:
        sizes.append(poster.stat().st_size)
    return sum(_padded(s) for s in sizes)


def _json(row: dict[str, Any]) -> bytes:
    return (json.dumps(row, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def _text(row: dict[str, Any]) -> bytes:
    return (row.get("prompt") or "").encode("utf-8")


def _info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info


def _write_shard(run: Run, path: Path, rows: list[dict[str, Any]]) -> str:
    out = HashingFile(path)
    try:
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT,  # type: ignore[call-overload]
                          encoding="utf-8", copybufsize=COPY_CHUNK) as tar:
            for row in rows:
                _add_sample(tar, run, row)
    except BaseException:
        out.abort()
        raise
    return out.commit()


def _add_sample(tar: tarfile.TarFile, run: Run, row: dict[str, Any]) -> None:
    key = sample_key(row["id"])
    poster = run.poster(row)
    if poster is not None:
        with open(poster, "rb") as fh:
            tar.addfile(_info(f"{key}.jpg", poster.stat().st_size), fh)
    data = _json(row)
    tar.addfile(_info(f"{key}.json", len(data)), io.BytesIO(data))
    video = VerifiedReader(run.source(row), row["sha256"])
    try:
        tar.addfile(_info(f"{key}.mp4", video.size), video)
    except BaseException:
        video.close(check=False)
        raise
    video.close()
    data = _text(row)
    tar.addfile(_info(f"{key}.txt", len(data)), io.BytesIO(data))
