"""A copied output directory's videos: hashed by its first rerun, remembered for the next
(``.batchvid/verified-videos``), never passed when changed; hashing in threads."""

from __future__ import annotations

import os
import shutil
import threading
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


def _copy(source: Path, target: Path) -> None:
    """``cp -a``: new inodes, the mtimes kept; then past the moment its files' ctimes (now) are
    too recent to be recorded (``videocheck.racy_ns``), as a rerun started by hand would be."""
    shutil.copytree(source, target)
    _settle()


def _settle() -> None:
    """Wait until the files changed so far are older than the racy window."""
    time.sleep(videocheck.racy_ns(1) / 1e9 + 0.02)


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
    _copy(tmp_path / "a", tmp_path / "b")
    assert _plan(jobs, records, tmp_path / "b") == ["skip"] * 5
    assert sorted(hashed) == sorted(f"{tmp_path / 'b'}/jobs/{job.id}/video.mp4" for job in jobs)
    hashed.clear()
    assert _plan(jobs, records, tmp_path / "b") == ["skip"] * 5
    assert hashed == []


def test_a_copy_of_a_copy_is_hashed_once_again(tmp_path: Path, hashed: list[str]) -> None:
    """The lines a copy's rerun recorded name its own files: copied again (new inodes), its
    videos are hashed once more, then not."""
    jobs, records = _directory(tmp_path / "a", 3)
    _copy(tmp_path / "a", tmp_path / "b")
    _plan(jobs, records, tmp_path / "b")
    _copy(tmp_path / "b", tmp_path / "c")
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
    _copy(tmp_path / "a", tmp_path / "b")
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
    _copy(tmp_path / "a", tmp_path / "b")
    st = os.stat(tmp_path / "b" / "jobs" / "j0" / "video.mp4")
    (tmp_path / "b" / CACHE).write_text(
        f"batchvid verified videos 1\nj0 {st.st_size} {st.st_mtime_ns} {st.st_ctime_ns} {st.st_ino} {st.st_dev} {'0' * 64}\n")
    assert _plan(jobs, records, tmp_path / "b") == ["skip"]
    assert len(hashed) == 1
    hashed.clear()
    assert _plan(jobs, records, tmp_path / "b") == ["skip"]
    assert hashed == []  # (the line the rerun wrote, with the right sha256, vouches)


def test_a_line_with_another_ctime_does_not_vouch(tmp_path: Path, hashed: list[str]) -> None:
    """A line naming the video's size, mtime, inode and device and the sha256 its record names,
    but another ctime (the line of a deleted file whose inode number the video recycled:
    ``rm -r`` then ``cp -a`` on ext4), is not used: the video is hashed."""
    jobs, records = _directory(tmp_path / "a", 1)
    _copy(tmp_path / "a", tmp_path / "b")
    st = os.stat(tmp_path / "b" / "jobs" / "j0" / "video.mp4")
    sha256 = (records[jobs[0].key].video or {})["sha256"]
    (tmp_path / "b" / CACHE).write_text(f"batchvid verified videos 1\nj0 {st.st_size} {st.st_mtime_ns} "
                                        f"{st.st_ctime_ns - 1} {st.st_ino} {st.st_dev} {sha256}\n")
    assert _plan(jobs, records, tmp_path / "b") == ["skip"]
    assert len(hashed) == 1


def test_a_video_rewritten_in_place_with_its_mtime_put_back_is_hashed(tmp_path: Path, hashed: list[str]) -> None:
    """A recorded video rewritten in place (same inode, same size) and given back its mtime
    (``touch -r``, ``rsync --inplace``, a tool that keeps times) is not taken as verified: its
    ctime moved, so it is hashed and its job downloads again."""
    jobs, records = _directory(tmp_path / "a", 2)
    _copy(tmp_path / "a", tmp_path / "b")
    _plan(jobs, records, tmp_path / "b")
    video = tmp_path / "b" / "jobs" / "j1" / "video.mp4"
    before = os.stat(video)
    with video.open("r+b") as fh:
        fh.write(b"\xff" * before.st_size)
    os.utime(video, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(video)
    assert (after.st_size, after.st_mtime_ns, after.st_ino, after.st_dev) == (
        before.st_size, before.st_mtime_ns, before.st_ino, before.st_dev)
    hashed.clear()
    assert _plan(jobs, records, tmp_path / "b") == ["skip", "download"]
    assert hashed == [str(video)]


def test_a_rerun_interrupted_half_way_keeps_what_it_hashed(tmp_path: Path, hashed: list[str]) -> None:
    """A rerun stopped while it hashes keeps the lines of the videos it verified: the next one
    hashes only the others."""
    jobs, records = _directory(tmp_path / "a", 6)
    _copy(tmp_path / "a", tmp_path / "b")
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
    _copy(tmp_path / "a", tmp_path / "b")
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
    _copy(tmp_path / "a", tmp_path / "b")
    assert _plan(jobs, records, tmp_path / "b", remember=False) == ["skip"] * 2
    assert len(hashed) == 2 and not (tmp_path / "b" / CACHE).exists()
    _plan(jobs, records, tmp_path / "b")
    hashed.clear()
    assert _plan(jobs, records, tmp_path / "b", remember=False) == ["skip"] * 2
    assert hashed == []


@pytest.mark.parametrize("recent", ["mtime", "ctime", "whole-second mtime"])
def test_a_video_modified_just_before_it_was_hashed_is_not_recorded(
    tmp_path: Path, hashed: list[str], monkeypatch: pytest.MonkeyPatch, recent: str
) -> None:
    """A video whose mtime or ctime is within a clock tick or two of the moment it is hashed
    (0.1 s; 2 s for a time in whole seconds, as a coarse file system keeps it) is not recorded (a
    change in the same tick would leave its identity as it was): it is hashed again."""
    jobs, records = _directory(tmp_path / "a", 2)
    _copy(tmp_path / "a", tmp_path / "b")
    video = tmp_path / "b" / "jobs" / "j1" / "video.mp4"
    now = time.time_ns()
    if recent == "mtime":  # (ahead of the clock, so that the ctime can age while the mtime stays recent)
        os.utime(video, ns=(now + 10**9, now + 10**9))
        _settle()
    elif recent == "ctime":  # the mtime of long ago, the ctime of now
        # (for a time from now on, a window of 10 s, not 0.1 s: a loaded machine may take longer
        # than that to hash it; the other video's, older, as they are)
        racy_ns, since = videocheck.racy_ns, now - 50_000_000
        monkeypatch.setattr(videocheck, "racy_ns", lambda time_ns: 10 * 10**9 if time_ns >= since else racy_ns(time_ns))
        os.utime(video, ns=(OLD_NS, OLD_NS))
    else:  # a whole second, up to 1 s ago (more than 0.1 s once settled)
        whole = now // 10**9 * 10**9
        os.utime(video, ns=(whole, whole))
        _settle()
    _plan(jobs, records, tmp_path / "b")
    recorded = [line.split(b" ")[0] for line in (tmp_path / "b" / CACHE).read_bytes().splitlines()[1:]]
    assert recorded == [b"j0"]
    hashed.clear()
    assert _plan(jobs, records, tmp_path / "b") == ["skip"] * 2
    assert hashed == [f"{tmp_path / 'b'}/jobs/j1/video.mp4"]


def test_a_record_of_many_stale_lines_is_rewritten_with_each_videos_last(tmp_path: Path, hashed: list[str]) -> None:
    """A record with more than twice the lines it needs (a directory copied many times) is
    rewritten with each video's last line, which still vouch."""
    jobs, records = _directory(tmp_path / "a", 2)
    _copy(tmp_path / "a", tmp_path / "b")
    cache = tmp_path / "b" / CACHE
    cache.write_text("batchvid verified videos 1\n" + "".join(f"j0 64 {n} {n} {n} 1 {'0' * 64}\n" for n in range(2000)))
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
    _copy(tmp_path / "a", tmp_path / "b")
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
    _copy(tmp_path / "a", tmp_path / "b")
    for job in jobs:
        os.utime(tmp_path / "b" / "jobs" / job.id / "video.mp4", ns=(OLD_NS, OLD_NS))
    _settle()
    assert {r.id: r.stat for r in read_records(tmp_path / "b").values()} == {
        r.id: r.stat for r in read_records(tmp_path / "a").values()}
    hashed.clear()
    assert run(tmp_path / "b") == (["skipped"] * 3, 0)
    assert len(hashed) == 3
    hashed.clear()
    assert run(tmp_path / "b") == (["skipped"] * 3, 0)
    assert hashed == []


def _threaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, count: int) -> list[tuple[str, dict[str, Any]]]:
    """``count`` large videos of a copy (hashed in 2 threads), as ``hash_videos`` takes them."""
    monkeypatch.setattr(videocheck, "THREADS", 2)
    jobs, records = _directory(tmp_path / "a", count, size=videocheck.THREADED_FROM + 4)
    _copy(tmp_path / "a", tmp_path / "b")
    return [(job.id, dict(records[job.key].video or {})) for job in jobs]


def _hashers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("batchvid-hash-")]


def test_ctrl_c_while_threads_hash_stops_them_and_keeps_what_verified(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while the threads hash (in the caller's thread, waiting on them) stops each one
    after its current video, before ``hash_videos`` raises it: the process does not go on
    reading every other video; the ones verified so far are recorded."""
    videos = _threaded(tmp_path, monkeypatch, 40)
    calls: list[str] = []
    original = videocheck._hash

    def slow(path: str, buffer: bytearray) -> Any:
        calls.append(path)
        time.sleep(0.01)
        return original(path, buffer)

    real_thread = threading.Thread
    interrupted: list[bool] = []

    class Interrupted(real_thread):  # type: ignore[misc,valid-type]
        def join(self, timeout: float | None = None) -> None:
            if not interrupted:  # the first wait: Ctrl-C once a few videos are hashed
                while len(calls) < 4:
                    time.sleep(0.001)
                interrupted.append(True)
                raise KeyboardInterrupt
            super().join(timeout)

    monkeypatch.setattr(videocheck, "_hash", slow)
    monkeypatch.setattr(videocheck.threading, "Thread", Interrupted)
    check = videocheck.VideoCheck(tmp_path / "b", remember=True)
    with pytest.raises(KeyboardInterrupt):
        check.hash_videos(videos)
    assert _hashers() == []
    assert len(calls) < len(videos) // 2
    check.close()
    recorded = (tmp_path / "b" / CACHE).read_text().splitlines()[1:]
    assert len(recorded) >= 4 and {line.split(" ")[0] for line in recorded} <= {job_id for job_id, _ in videos}


def test_an_error_in_one_hashing_thread_stops_the_others_and_is_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error a thread meets (MemoryError, say) stops the other threads at their next video
    and is raised in the caller's."""
    videos = _threaded(tmp_path, monkeypatch, 40)
    calls: list[str] = []
    original = videocheck._hash

    def failing(path: str, buffer: bytearray) -> Any:
        calls.append(path)
        if len(calls) == 3:
            raise MemoryError
        time.sleep(0.01)
        return original(path, buffer)

    monkeypatch.setattr(videocheck, "_hash", failing)
    check = videocheck.VideoCheck(tmp_path / "b", remember=True)
    with pytest.raises(MemoryError):
        check.hash_videos(videos)
    check.close()
    assert _hashers() == []
    assert len(calls) < len(videos) // 2


def test_hash_videos_records_without_a_video_looked_up_first(tmp_path: Path) -> None:
    """``hash_videos`` reads the record itself when no ``unchanged`` came first (every video
    missing when the plan looked, there when hashed): it records what verifies, and keeps the
    lines already there."""
    jobs, records = _directory(tmp_path / "a", 2)
    _copy(tmp_path / "a", tmp_path / "b")
    check = videocheck.VideoCheck(tmp_path / "b", remember=True)
    assert check.hash_videos([(jobs[0].id, records[jobs[0].key].video or {})]) == [None]
    check.close()
    check = videocheck.VideoCheck(tmp_path / "b", remember=True)
    assert check.hash_videos([(jobs[1].id, records[jobs[1].key].video or {})]) == [None]
    check.close()
    check = videocheck.VideoCheck(tmp_path / "b")
    assert all(check.unchanged(job.id, records[job.key].video or {}, None) for job in jobs)


def test_a_line_vouches_only_for_a_record_of_its_size(tmp_path: Path, hashed: list[str]) -> None:
    """A recorded video whose journal record names the same sha256 but another size is not
    taken as verified by its line: it is hashed, and fetched again."""
    jobs, records = _directory(tmp_path / "a", 1)
    _copy(tmp_path / "a", tmp_path / "b")
    _plan(jobs, records, tmp_path / "b")
    record = records[jobs[0].key]
    other = {jobs[0].key: JobRecord(record.key, record.id, "succeeded", record.task_id, stat=record.stat,
                                    video={**(record.video or {}), "bytes": 65})}
    hashed.clear()
    assert _plan(jobs, other, tmp_path / "b") == ["download"]
    assert len(hashed) == 1


def test_a_record_that_cannot_be_written_changes_nothing_but_time(
    tmp_path: Path, hashed: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run whose record cannot be written (a read-only directory, a full disk) plans as ever,
    every video verified; the next rerun hashes them again."""
    jobs, records = _directory(tmp_path / "a", 3)
    _copy(tmp_path / "a", tmp_path / "b")

    def refused(*args: Any, **kwargs: Any) -> None:
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(videocheck, "write_atomic", refused)
    assert _plan(jobs, records, tmp_path / "b") == ["skip"] * 3
    assert not (tmp_path / "b" / CACHE).exists()
    hashed.clear()
    assert _plan(jobs, records, tmp_path / "b") == ["skip"] * 3
    assert len(hashed) == 3


@pytest.mark.parametrize(
    "change",
    [None, {"mtime_ns": 1}, {"bytes": 11}, {"ino": 0}, {"extra": 1}, {"mtime_ns": None}, "drop mtime_ns",
     "record's bytes", "missing file"],
)
def test_a_journaled_stat_vouches_only_when_it_is_the_files_whole_stat(tmp_path: Path, change: object) -> None:
    """A done video whose journaled stat (size, mtime_ns, inode) is the file's, and whose size is
    its record's, is taken as verified unread (a wrong sha256 goes unseen); a stat with a field
    changed, missing or added, another size in the record, or a file gone, is not."""
    video = tmp_path / "jobs" / "j0" / "video.mp4"
    video.parent.mkdir(parents=True)
    video.write_bytes(b"0123456789")
    journaled: dict[str, Any] = dict(file_stat(video) or {})
    record = {"sha256": "0" * 64, "bytes": 10}  # what a read refutes
    if change == "drop mtime_ns":
        del journaled["mtime_ns"]
    elif change == "missing file":
        video.unlink()
    elif change == "record's bytes":
        record["bytes"] = 11
    elif isinstance(change, dict):
        journaled.update(change)
    assert videocheck.VideoCheck(tmp_path).unchanged("j0", record, journaled) is (change is None)
