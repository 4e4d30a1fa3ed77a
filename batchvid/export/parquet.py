"""``metadata.parquet``: every field of metadata.jsonl in a typed table (pyarrow).

Known fields have fixed types (``quality`` a struct of its signals); ``parameters`` and any
other field are typed from the values (a struct holding the union of the rows' keys), or kept
as JSON text if the rows disagree on a type. Videos are copied to ``videos/<id>.mp4`` and
``file_name`` points there (copies, not links: an export never shares an inode with the output
directory), or with ``embed_video`` their bytes go in a binary ``video`` column instead,
written in row groups of at most ``ROW_GROUP_BYTES`` so memory does not follow the dataset.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from batchvid.export import ExportError, HashingFile, Run, VerifiedReader, commit_file

ROW_GROUP_BYTES = 64 << 20


def _pyarrow() -> Any:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ExportError(
            "--format parquet needs pyarrow: pip install 'batchvid[dataset]'"
        ) from exc
    return pa, pq


def _known_types(pa: Any) -> dict[str, Any]:
    return {
        "file_name": pa.string(),
        "id": pa.string(),
        "key": pa.string(),
        "prompt": pa.string(),
        "sha256": pa.string(),
        "width": pa.int64(),
        "height": pa.int64(),
        "fps": pa.float64(),
        "duration": pa.float64(),
        "status": pa.string(),
        "error": pa.struct([("kind", pa.string()), ("message", pa.string())]),
        "quality": pa.struct([
            ("black_fraction", pa.float64()),
            ("frames_decoded", pa.int64()),
            ("frozen_fraction", pa.float64()),
            ("luma_mean", pa.float64()),
            ("motion", pa.float64()),
            ("samples", pa.int64()),
        ]),
    }


def _column(pa: Any, values: list[Any], known: Any) -> Any:
    if known is not None:
        return pa.array(values, type=known)
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if v is None else json.dumps(v, sort_keys=True) for v in values],
                        type=pa.string())


def metadata_table(rows: list[dict[str, Any]], lead: tuple[str, ...] = ("file_name", "id")) -> Any:
    """The rows as a pyarrow Table: the ``lead`` columns first, the rest sorted."""
    pa, _ = _pyarrow()
    known = _known_types(pa)
    rest = sorted({name for row in rows for name in row} - set(lead))
    return pa.table({n: _column(pa, [row.get(n) for row in rows], known.get(n))
                     for n in (*lead, *rest)})


def write_parquet(run: Run, to: Path, *, embed_video: bool) -> dict[str, str]:
    """Write metadata.parquet (and videos/ unless ``embed_video``); {file name: sha256}."""
    pa, pq = _pyarrow()
    files: dict[str, str] = {}
    rows = [dict(row) for row in run.rows]
    sources: list[Path | None] = [run.source(row) for row in run.rows]
    for row in rows:
        if embed_video:
            del row["file_name"]
        else:
            name = f"videos/{row['id']}.mp4"
            files[name] = _copy(run.source(row), to / name, row["sha256"])
            row["file_name"] = name
    if run.failed:
        statuses = {job["id"]: job["status"] for job in run.report["jobs"]}
        for row in rows:
            row["status"] = statuses.get(row["id"], "succeeded")
        rows += [dict(row) for row in run.failed]
        sources += [None] * len(run.failed)
    table = metadata_table(rows, ("id",) if embed_video else ("file_name", "id"))
    final = to / "metadata.parquet"
    tmp = final.with_name(f".{final.name}.part")
    try:
        if embed_video:
            schema = table.schema.insert(0, pa.field("video", pa.binary()))
            with pq.ParquetWriter(tmp, schema) as writer:
                _write_embedded(pa, writer, table, rows, sources)
        else:
            pq.write_table(table, tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    files["metadata.parquet"] = commit_file(tmp, final)
    return files


def _write_embedded(
    pa: Any, writer: Any, table: Any, rows: list[dict[str, Any]], sources: list[Path | None]
) -> None:
    """Row groups of about ``ROW_GROUP_BYTES`` of video each, so at most one is in memory."""
    start, batch, size = 0, list[bytes | None](), 0
    for index, (row, source) in enumerate(zip(rows, sources, strict=True)):
        data = _read(source, row["sha256"]) if source is not None else None
        batch.append(data)
        size += len(data or b"")
        if size >= ROW_GROUP_BYTES or index == len(rows) - 1:
            part = table.slice(start, len(batch))
            writer.write_table(part.add_column(0, "video", pa.array(batch, type=pa.binary())))
            start, batch, size = index + 1, [], 0


def _read(path: Path, sha256: str) -> bytes:
    reader = VerifiedReader(path, sha256)
    try:
        data = b"".join(reader.chunks())
    except BaseException:
        reader.close(check=False)
        raise
    reader.close()
    return data


def _copy(source: Path, target: Path, sha256: str) -> str:
    reader = VerifiedReader(source, sha256)
    out = HashingFile(target)
    try:
        for chunk in reader.chunks():
            out.write(chunk)
        reader.close()
    except BaseException:
        reader.close(check=False)
        out.abort()
        raise
    return out.commit()
