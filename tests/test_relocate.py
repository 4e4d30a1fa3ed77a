"""Done jobs whose id changed: files staged aside, then moved to the new id, durably."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from batchvid.journal import JobRecord
from batchvid.relocate import Relocations
from batchvid.store import sha256_file
from tests.helpers import make_job


def _done(root: Path, old_id: str, key: str) -> JobRecord:
    video = root / "jobs" / old_id / "video.mp4"
    video.parent.mkdir(parents=True)
    video.write_bytes(b"frames")
    digest, size = sha256_file(video)
    entry = {"path": f"jobs/{old_id}/video.mp4", "sha256": digest, "bytes": size}
    return JobRecord(key, old_id, "succeeded", "t1", video=entry)


def test_swapped_ids_each_get_the_other_files(tmp_path: Path) -> None:
    """a <-> b: staging before any move keeps both videos."""
    job_a, job_b = make_job("a", 0), make_job("b", 1)
    rec_a = _done(tmp_path, "b", job_a.key)  # job a was done as "b"
    (tmp_path / "jobs" / "a").mkdir()
    (tmp_path / "jobs" / "a" / "video.mp4").write_bytes(b"other")
    digest, size = sha256_file(tmp_path / "jobs" / "a" / "video.mp4")
    rec_b = JobRecord(job_b.key, "a", "succeeded", "t2",
                      video={"path": "jobs/a/video.mp4", "sha256": digest, "bytes": size})
    moves = Relocations(tmp_path, tmp_path / ".batchvid")
    moves.stage([job_a, job_b], {job_a.key: rec_a, job_b.key: rec_b})
    assert moves.take(job_a, rec_a) is not None
    assert moves.take(job_b, rec_b) is not None
    assert (tmp_path / "jobs" / "a" / "video.mp4").read_bytes() == b"frames"
    assert (tmp_path / "jobs" / "b" / "video.mp4").read_bytes() == b"other"
    moves.cleanup()
    assert not (tmp_path / ".batchvid" / "relocate").exists()


def test_the_move_to_the_new_id_is_fsynced_before_it_is_journaled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the rename into jobs/, that directory is fsynced (the journal then calls it done)."""
    job = make_job("new", 0)
    record = _done(tmp_path, "old", job.key)
    moves = Relocations(tmp_path, tmp_path / ".batchvid")
    moves.stage([job], {job.key: record})
    calls: list[str] = []
    names: dict[int, str] = {}
    real_open, real_fsync, real_replace = os.open, os.fsync, os.replace

    def traced_open(path: str, flags: int, mode: int = 0o777) -> int:
        fd = real_open(path, flags, mode)
        names[fd] = str(path)
        return fd

    def traced_fsync(fd: int) -> None:
        calls.append("fsync " + os.path.basename(names.get(fd, "?")))
        real_fsync(fd)

    def traced_replace(src: str, dst: str) -> None:
        calls.append("rename " + os.path.basename(dst))
        real_replace(src, dst)

    monkeypatch.setattr(os, "open", traced_open)
    monkeypatch.setattr(os, "fsync", traced_fsync)
    monkeypatch.setattr(os, "replace", traced_replace)
    moved = moves.take(job, record)
    assert moved is not None and moved[0]["path"] == "jobs/new/video.mp4"
    assert calls == ["rename new", "fsync jobs"]
