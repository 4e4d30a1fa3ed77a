"""A copied output directory's videos: hashed by its first rerun, remembered for the next
(``.batchvid/verified-videos``), never passed when changed; hashing in threads."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import anyio
import httpx
import pytest

from batchvid import videocheck
from batchvid.durable import file_stat
from batchvid.jobs import Job
from batchvid.plan import make_plan
from batchvid.runner import Runner
from batchvid.simulator import Simulator, SimulatorConfig
from batchvid.store import JobRecord, read_records, sha256_file, verify_file
from tests.helpers import Recording, make_job, make_manifest
from tests.test_runner import _settings

CACHE = Path(".batchvid") / videocheck.NAME
OLD_NS = 1_600_000_000_123_456_789
"""An mtime long before any test runs (what ``cp -p``, rsync or tar keep of a file's)."""


def _directory(root: Path, count: int, size: int = 64) -> tuple[list[Job], dict[str, JobRecord]]:
    """``count`` done jobs in ``root``, each video's stat journaled as a run journals it."""
    jobs = [make_job(f"j{n}", n) for n in range(count)]
    records = {}
    for number, job in enumerate(jobs):
        video = root / "jobs" / job.id / "video.mp4"
        video.parent.mkdir(parents=True, exist_ok=True)
        video.write_bytes(number.to_bytes(4, "big") * (size // 4))
        os.utime(video, ns=(OLD_NS, OLD_NS))
        digest, size_ = sha256_file(video)
        records[job.key] = JobRecord(job.key, job.id, "succeeded", f"t{number}", stat=file_stat(video),
                                     video={"path": f"jobs/{job.id}/video.mp4", "sha256": digest, "bytes": size_})
    (root / ".batchvid").mkdir(parents=True, exist_ok=True)
    return jobs, records


@pytest.fixture
def hashed() -> Iterator[list[str]]:
    """The paths hashed while the test runs."""
    paths: list[str] = []
    original = videocheck._hash

    def counting(path: str, buffer: bytearray) -> Any:
        paths.append(path)
        return original(path, buffer)

    with mock.patch.object(videocheck, "_hash", counting):
        yield paths


def _plan(jobs: list[Job], records: dict[str, JobRecord], root: Path, remember: bool = True) -> list[str]:
    return [step.action for step in make_plan(jobs, records, root, provider="geekai", remember=remember).steps]


def test_a_copied_directorys_videos_are_hashed_by_its_first_rerun_only(tmp_path: Path, hashed: list[str]) -> None:
    """A copy (new inodes) has every video hashed once: the next rerun of it reads none, and
    every job is skipped both times."""
    jobs, records = _directory(tmp_path / "a", 5)
    _plan(jobs, records, tmp_path / "a")
    assert hashed == []  # in place: the journaled stat vouches
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    assert _plan(jobs, records, tmp_path / "b") == ["skip"] * 5
    assert sorted(hashed) == sorted(f"{tmp_path / 'b'}/jobs/{job.id}/video.mp4" for job in jobs)
    hashed.clear()
    assert _plan(jobs, records, tmp_path / "b") == ["skip"] * 5
    assert hashed == []


def test_a_copy_of_a_copy_is_hashed_once_again(tmp_path: Path, hashed: list[str]) -> None:
    """The lines a copy's rerun recorded name its own files: copied again (new inodes), its
    videos are hashed once more, then not."""
    jobs, records = _directory(tmp_path / "a", 3)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    _plan(jobs, records, tmp_path / "b")
    shutil.copytree(tmp_path / "b", tmp_path / "c")
    hashed.clear()
    assert _plan(jobs, records, tmp_path / "c") == ["skip"] * 3
    assert len(hashed) == 3
    hashed.clear()
    _plan(jobs, records, tmp_path / "c")
    assert hashed == []


@pytest.mark.parametrize("how", ["rewritten", "replaced-same-mtime"])
def test_a_video_changed_after_it_was_recorded_is_hashed_and_fetched_again(
    tmp_path: Path, hashed: list[str], how: str
) -> None:
    """A recorded video rewritten in place (same size, new mtime) or replaced by another file
    with the same size and mtime (a new inode) is not taken as verified: it is hashed, and its
    job downloads again."""
    jobs, records = _directory(tmp_path / "a", 2)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    _plan(jobs, records, tmp_path / "b")
    video = tmp_path / "b" / "jobs" / "j1" / "video.mp4"
    st = os.stat(video)
    if how == "rewritten":
        video.write_bytes(b"\xff" * st.st_size)
        os.utime(video, ns=(st.st_mtime_ns + 1000, st.st_mtime_ns + 1000))
    else:
        other = video.with_name("other.mp4")
        other.write_bytes(b"\xff" * st.st_size)
        os.utime(other, ns=(st.st_mtime_ns, st.st_mtime_ns))
        os.replace(other, video)
    hashed.clear()
    assert _plan(jobs, records, tmp_path / "b") == ["skip", "download"]
    assert hashed == [str(video)]


def test_a_line_with_another_sha256_does_not_vouch(tmp_path: Path, hashed: list[str]) -> None:
    """A line naming the video's very identity but another sha256 than its journal record's
    (the file re-downloaded since, say) is not used: the video is hashed."""
    jobs, records = _directory(tmp_path / "a", 1)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    st = os.stat(tmp_path / "b" / "jobs" / "j0" / "video.mp4")
    (tmp_path / "b" / CACHE).write_text(
        f"batchvid verified videos 1\nj0 {st.st_size} {st.st_mtime_ns} {st.st_ino} {st.st_dev} {'0' * 64}\n")
    assert _plan(jobs, records, tmp_path / "b") == ["skip"]
    assert len(hashed) == 1


def test_a_rerun_interrupted_half_way_keeps_what_it_hashed(tmp_path: Path, hashed: list[str]) -> None:
    """A rerun stopped while it hashes keeps the lines of the videos it verified: the next one
    hashes only the others."""
    jobs, records = _directory(tmp_path / "a", 6)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    original = videocheck._hash
    calls = []

    def stopping(path: str, buffer: bytearray) -> Any:
        if len(calls) == 4:
            raise KeyboardInterrupt
        calls.append(path)
        return original(path, buffer)

    with mock.patch.object(videocheck, "_hash", stopping), pytest.raises(KeyboardInterrupt):
        _plan(jobs, records, tmp_path / "b")
    hashed.clear()
    assert _plan(jobs, records, tmp_path / "b") == ["skip"] * 6
    assert len(hashed) == 2


def test_a_torn_last_line_is_not_used_and_is_cut_before_appending(tmp_path: Path, hashed: list[str]) -> None:
    """A last line a kill cut short (no newline; zeros after it, as a power cut leaves a block)
    vouches for nothing, and the next run's lines start after the last whole one: every line
    of the file is whole again."""
    jobs, records = _directory(tmp_path / "a", 3)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    _plan(jobs, records, tmp_path / "b")
    cache = tmp_path / "b" / CACHE
    lines = cache.read_bytes().splitlines(keepends=True)
    cache.write_bytes(b"".join(lines[:-1]) + lines[-1][:-1] + b"\0" * 300)
    hashed.clear()
    assert _plan(jobs, records, tmp_path / "b") == ["skip"] * 3
    assert len(hashed) == 1
    assert cache.read_bytes().count(b"\n") == 4 and cache.read_bytes().endswith(b"\n")
    assert b"\0" not in cache.read_bytes()
    hashed.clear()
    _plan(jobs, records, tmp_path / "b")
    assert hashed == []


def test_plan_and_status_read_the_record_but_never_write_it(tmp_path: Path, hashed: list[str]) -> None:
    """A plan made without the directory's lock (``batchvid plan``, ``status``) hashes what no
    line vouches for and writes nothing; it uses the lines a run wrote."""
    jobs, records = _directory(tmp_path / "a", 2)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    assert _plan(jobs, records, tmp_path / "b", remember=False) == ["skip"] * 2
    assert len(hashed) == 2 and not (tmp_path / "b" / CACHE).exists()
    _plan(jobs, records, tmp_path / "b")
    hashed.clear()
    assert _plan(jobs, records, tmp_path / "b", remember=False) == ["skip"] * 2
    assert hashed == []


def test_a_video_modified_just_before_it_was_hashed_is_not_recorded(tmp_path: Path, hashed: list[str]) -> None:
    """A video whose mtime is within a clock tick or two of the moment it is hashed is not
    recorded (a write in the same tick would leave its identity as it was): it is hashed again."""
    jobs, records = _directory(tmp_path / "a", 2)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    now = time.time_ns()
    os.utime(tmp_path / "b" / "jobs" / "j1" / "video.mp4", ns=(now, now))
    _plan(jobs, records, tmp_path / "b")
    assert b" j1 " not in b" " + (tmp_path / "b" / CACHE).read_bytes()
    hashed.clear()
    assert _plan(jobs, records, tmp_path / "b") == ["skip"] * 2
    assert hashed == [f"{tmp_path / 'b'}/jobs/j1/video.mp4"]


def test_a_record_of_many_stale_lines_is_rewritten_with_each_videos_last(tmp_path: Path, hashed: list[str]) -> None:
    """A record with more than twice the lines it needs (a directory copied many times) is
    rewritten with each video's last line, which still vouch."""
    jobs, records = _directory(tmp_path / "a", 2)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    cache = tmp_path / "b" / CACHE
    cache.write_text("batchvid verified videos 1\n" + "".join(f"j0 64 {n} {n} 1 {'0' * 64}\n" for n in range(2000)))
    _plan(jobs, records, tmp_path / "b")
    assert cache.read_text().count("\n") == 3
    hashed.clear()
    _plan(jobs, records, tmp_path / "b")
    assert hashed == []


@pytest.mark.parametrize("threads", [1, 3])
def test_hashing_in_threads_gives_each_videos_verdict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      threads: int) -> None:
    """Large videos are hashed in threads; each verdict (verified, damaged, cut, missing) is the
    one ``store.verify_file`` gives, in the jobs' order."""
    monkeypatch.setattr(videocheck, "THREADS", threads)
    jobs, records = _directory(tmp_path / "a", 9, size=videocheck.THREADED_FROM + 4)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    paths = [tmp_path / "b" / "jobs" / job.id / "video.mp4" for job in jobs]
    paths[2].write_bytes(b"\0" * (videocheck.THREADED_FROM + 4))
    paths[4].write_bytes(b"cut")
    paths[7].unlink()
    videos = [(job.id, records[job.key].video or {}) for job in jobs]
    started = []
    real_thread = videocheck.threading.Thread
    monkeypatch.setattr(videocheck.threading, "Thread",
                        lambda *a, **kw: started.append(1) or real_thread(*a, **kw))  # type: ignore[func-returns-value]
    check = videocheck.VideoCheck(tmp_path / "b", remember=True)
    assert not check.unchanged("j0", videos[0][1], records[jobs[0].key].stat)
    problems = check.hash_videos(videos)
    check.close()
    assert problems == [verify_file(path, video) for path, (_, video) in zip(paths, videos, strict=True)]
    assert [p is None for p in problems] == [True, True, False, True, False, True, True, False, True]
    assert len(started) == (threads if threads > 1 else 0)


def test_a_rerun_of_a_copied_run_hashes_its_videos_once(tmp_path: Path, hashed: list[str]) -> None:
    """End to end: a run's directory copied (new inodes, the videos' mtimes of a while ago, as
    ``cp -a``, rsync or tar leave them); its first rerun hashes each video, the second none,
    both with zero requests."""
    sim = Simulator(SimulatorConfig())
    jobs = [make_job(f"job-{i}", i) for i in range(3)]

    def run(out: Path) -> tuple[list[str], int]:
        transport = Recording(httpx.ASGITransport(app=sim.app))
        result = anyio.run(Runner(make_manifest(jobs), _settings(out), transport=transport).run)
        return [o.status for o in result.outcomes], len(transport.requests)

    run(tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    for job in jobs:
        os.utime(tmp_path / "b" / "jobs" / job.id / "video.mp4", ns=(OLD_NS, OLD_NS))
    assert {r.id: r.stat for r in read_records(tmp_path / "b").values()} == {
        r.id: r.stat for r in read_records(tmp_path / "a").values()}
    hashed.clear()
    assert run(tmp_path / "b") == (["skipped"] * 3, 0)
    assert len(hashed) == 3
    hashed.clear()
    assert run(tmp_path / "b") == (["skipped"] * 3, 0)
    assert hashed == []
