"""The output directory: lock, journal, atomic writes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from batchvid.errors import OutputDirError, OutputDirLocked
from batchvid.journal import Failed, Submitted, Submitting
from batchvid.store import (
    Journal,
    OutputDir,
    hashing_writer,
    make_dir,
    sha256_file,
    verify_file,
    write_atomic,
)


def test_write_atomic_leaves_no_temporary_files(tmp_path: Path) -> None:
    """An atomic write leaves only the final file, with the content written."""
    target = tmp_path / "a" / "report.json"
    write_atomic(target, "hello\n")
    assert target.read_text() == "hello\n"
    assert os.listdir(target.parent) == ["report.json"]


def test_hashing_writer_discards_unless_committed(tmp_path: Path) -> None:
    """A download that fails before commit leaves neither the final nor a temporary file."""
    final = tmp_path / "video.mp4"
    with pytest.raises(RuntimeError), hashing_writer(final) as writer:
        writer.write(b"partial")
        raise RuntimeError("connection dropped")
    assert not final.exists()
    assert list(tmp_path.iterdir()) == []


def test_hashing_writer_hash_matches_file(tmp_path: Path) -> None:
    """The sha256 computed while streaming equals the hash of the committed file."""
    final = tmp_path / "video.mp4"
    with hashing_writer(final) as writer:
        writer.write(b"abc" * 1000)
        writer.write(b"def")
        writer.commit()
    assert sha256_file(final) == (writer.sha256, 3003)


def test_second_open_of_a_directory_is_refused(tmp_path: Path) -> None:
    """Two runs never write into one output directory at once."""
    first = OutputDir(tmp_path / "out")
    first.open()
    try:
        with pytest.raises(OutputDirLocked, match="in use by another batchvid run"):
            OutputDir(tmp_path / "out").open()
    finally:
        first.close()
    second = OutputDir(tmp_path / "out")
    second.open()
    second.close()


def test_journal_replay_folds_latest_state_per_key(tmp_path: Path) -> None:
    """Replay gives the last state of each key and counts its create requests."""
    journal = Journal(tmp_path / "journal.jsonl")
    journal.open()
    journal.append(Submitting("k1", "a", "r1"))
    journal.append(Submitted("k1", "a", "t1"))
    journal.append(Submitting("k2", "b", "r2"))
    journal.append(Failed("k2", "b", None, {"kind": "content_filter", "message": "no"}))
    journal.close()
    records = journal.replay()
    assert records["k1"].state == "submitted" and records["k1"].task_id == "t1"
    assert records["k1"].creates == 1
    assert records["k2"].state == "failed" and records["k2"].error == {"kind": "content_filter", "message": "no"}


def test_journal_ignores_a_torn_last_line(tmp_path: Path) -> None:
    """A crash in the middle of an append loses only that line."""
    path = tmp_path / "journal.jsonl"
    path.write_bytes(
        b'{"event":"submitting","id":"a","key":"k1","request_id":"r"}\n{"event":"subm'
    )
    records = Journal(path).replay()
    assert records["k1"].state == "submitting"


def test_journal_corruption_in_the_middle_names_the_line(tmp_path: Path) -> None:
    """A corrupt line that is not the tail is an error naming its line number."""
    path = tmp_path / "journal.jsonl"
    path.write_bytes(
        b'garbage\n{"event":"submitting","id":"a","key":"k1","request_id":"r"}\n'
    )
    with pytest.raises(OutputDirError, match=r"journal.jsonl:1: the journal is corrupt"):
        Journal(path).replay()


def test_verify_file_reports_missing_truncated_and_altered(tmp_path: Path) -> None:
    """verify_file names each kind of damage."""
    path = tmp_path / "v.mp4"
    path.write_bytes(b"0123456789")
    digest, size = sha256_file(path)
    expected = {"sha256": digest, "bytes": size}
    assert verify_file(path, expected) is None
    path.write_bytes(b"01234")
    assert "size 5 differs" in (verify_file(path, expected) or "")
    path.write_bytes(b"0123456788")
    assert verify_file(path, expected) == "sha256 differs from the recorded one"
    path.unlink()
    assert verify_file(path, expected) == "missing"


def test_opening_sweeps_temporary_files_of_a_killed_run(tmp_path: Path) -> None:
    """Half-written downloads and reports left by a SIGKILL are deleted when the lock is taken."""
    job_dir = tmp_path / "jobs" / "a"
    job_dir.mkdir(parents=True)
    orphans = [job_dir / ".video.mp4.x1.part", job_dir / ".response.json.x2.tmp", tmp_path / ".report.json.x3.tmp"]
    for orphan in orphans:
        orphan.write_bytes(b"half")
    (job_dir / "video.mp4").write_bytes(b"kept")
    with OutputDir(tmp_path) as out:
        out.open()
    assert [p for p in orphans if p.exists()] == []
    assert (job_dir / "video.mp4").read_bytes() == b"kept"


def test_appending_after_a_torn_tail_drops_the_tail_first(tmp_path: Path) -> None:
    """The next entry is not glued onto a crash's half line, so later runs still read the journal."""
    path = tmp_path / "journal.jsonl"
    path.write_bytes(b'{"event":"submitting","id":"a","key":"k1","request_id":"r"}\n{"event":"subm')
    journal = Journal(path)
    journal.open()
    journal.append(Submitted("k1", "a", "t1"))
    journal.append(Submitting("k2", "b", "r2"))
    journal.close()
    records = Journal(path).replay()
    assert records["k1"].task_id == "t1" and records["k2"].state == "submitting"


def _trace_syscalls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Record fsync (of a file or a directory) and rename calls, in order, by path name."""
    calls: list[tuple[str, str]] = []
    fds: dict[int, str] = {}
    real_open, real_fsync, real_replace = os.open, os.fsync, os.replace

    def traced_open(path: os.PathLike[str] | str, flags: int, mode: int = 0o777) -> int:
        fd = real_open(path, flags, mode)
        fds[fd] = str(path)
        return fd

    def traced_fsync(fd: int) -> None:
        target = fds.get(fd, "?")
        kind = "dir" if os.path.isdir(target) else "file"
        calls.append((f"fsync-{kind}", os.path.basename(target)))
        real_fsync(fd)

    def traced_replace(src: os.PathLike[str] | str, dst: os.PathLike[str] | str) -> None:
        calls.append(("rename", os.path.basename(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "open", traced_open)
    monkeypatch.setattr(os, "fsync", traced_fsync)
    monkeypatch.setattr(os, "replace", traced_replace)
    return calls


def test_durable_write_fsyncs_file_then_renames_then_fsyncs_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A durable atomic write syncs the data, renames, then syncs the directory holding it."""
    (tmp_path / "out").mkdir()
    calls = _trace_syscalls(monkeypatch)
    write_atomic(tmp_path / "out" / "report.json", "{}\n")
    assert calls[-3:] == [("fsync-file", calls[-3][1]), ("rename", "report.json"), ("fsync-dir", "out")]
    assert calls[-3][1].startswith(".report.json.")


def test_committed_video_is_renamed_then_its_directory_fsynced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A downloaded video's rename is made durable before the journal can call it done."""
    job_dir = tmp_path / "jobs" / "a"
    job_dir.mkdir(parents=True)
    calls = _trace_syscalls(monkeypatch)
    with hashing_writer(job_dir / "video.mp4") as writer:
        writer.write(b"frames")
        writer.commit()
    kinds = [kind for kind, _ in calls]
    assert kinds == ["fsync-file", "rename", "fsync-dir"]
    assert calls[1:] == [("rename", "video.mp4"), ("fsync-dir", "a")]


def test_a_commit_without_the_directory_sync_leaves_it_to_the_caller_and_nothing_to_delete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``commit(sync_dir=False)``: the data is fsynced before the rename, the directory is not
    (the job's one directory fsync comes later), and the writer's exit unlinks nothing."""
    job_dir = tmp_path / "jobs" / "a"
    job_dir.mkdir(parents=True)
    calls = _trace_syscalls(monkeypatch)
    unlinked: list[str] = []
    real_unlink = os.unlink
    monkeypatch.setattr(os, "unlink", lambda path, *a, **k: (unlinked.append(str(path)), real_unlink(path, *a, **k)))
    with hashing_writer(job_dir / "cover.png") as writer:
        writer.write(b"png")
        writer.commit(sync_dir=False)
    assert [kind for kind, _ in calls] == ["fsync-file", "rename"]
    assert unlinked == [] and (job_dir / "cover.png").read_bytes() == b"png"


def test_new_directories_are_fsynced_into_their_parents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Creating jobs/<id>/ for a durable file syncs each parent that gained an entry."""
    calls = _trace_syscalls(monkeypatch)
    write_atomic(tmp_path / "jobs" / "a" / "x.json", "{}\n")
    dirs = [name for kind, name in calls if kind == "fsync-dir"]
    assert dirs == [tmp_path.name, "jobs", "a"]


def test_a_download_into_a_missing_folder_makes_it_durably_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A video whose jobs/<id>/ is gone gets the folder back, synced into its parents, before
    its own fsync and rename."""
    calls = _trace_syscalls(monkeypatch)
    with hashing_writer(tmp_path / "jobs" / "a" / "video.mp4") as writer:
        writer.write(b"mp4")
        writer.commit()
    kinds = [kind if kind != "fsync-file" else f"{kind} {name.startswith('.video.mp4.')}" for kind, name in calls]
    assert kinds == ["fsync-dir", "fsync-dir", "fsync-file True", "rename", "fsync-dir"]
    assert [name for kind, name in calls if kind != "fsync-file"] == [tmp_path.name, "jobs", "video.mp4", "a"]
    assert (tmp_path / "jobs" / "a" / "video.mp4").read_bytes() == b"mp4"


def test_making_an_existing_folder_syncs_nothing_and_a_file_in_the_way_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``make_dir`` leaves an existing folder alone and refuses to replace a file."""
    (tmp_path / "jobs" / "a").mkdir(parents=True)
    (tmp_path / "jobs" / "f").write_text("x")
    calls = _trace_syscalls(monkeypatch)
    make_dir(tmp_path / "jobs" / "a")
    make_dir(tmp_path / "jobs" / "b")
    assert calls == [("fsync-dir", "jobs")]
    with pytest.raises(FileExistsError):
        make_dir(tmp_path / "jobs" / "f")


def test_a_non_durable_write_into_a_missing_folder_makes_it_without_syncs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``request.json``-like writes (``durable=False``) create a missing folder, syncing nothing."""
    calls = _trace_syscalls(monkeypatch)
    write_atomic(tmp_path / "jobs" / "b" / "request.json", "{}\n", durable=False)
    assert calls == [("rename", "request.json")]
    assert (tmp_path / "jobs" / "b" / "request.json").read_text() == "{}\n"


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_output_files_get_the_mode_the_umask_gives(tmp_path: Path, umask: int) -> None:
    """Reports and videos are created 0666 minus the umask (0644 under 022), not 0600."""
    old = os.umask(umask)
    try:
        write_atomic(tmp_path / "report.json", "{}\n")
        write_atomic(tmp_path / "response.json", "{}\n", durable=False)
        with hashing_writer(tmp_path / "video.mp4") as writer:
            writer.write(b"frames")
            writer.commit()
    finally:
        os.umask(old)
    for name in ("report.json", "response.json", "video.mp4"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


def test_a_run_makes_each_job_folder_durable_before_the_journal_calls_it_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through a real run: the output directory is fsynced after jobs/ appears in it (before
    any video is renamed into place), and for each job an fsync of jobs/ begins after its
    folder appears and before that job's ``succeeded`` line (else a power cut could lose a
    folder whose video the journal already calls done); one such fsync may cover several
    folders (``durable.sync_entry``)."""
    import anyio
    import httpx

    from batchvid.journal import Entry, Journal
    from batchvid.runner import Runner, Settings
    from batchvid.simulator import GEEKAI_PREFIX, Simulator
    from tests.helpers import make_job, make_manifest

    manifest = make_manifest([make_job("one", prompt="a lake"), make_job("two", prompt="a hill")])
    out = tmp_path / "out"
    settings = Settings(out_dir=out, api_key="k" * 8, base_url=f"http://sim{GEEKAI_PREFIX}",
                        rpm=None, poll_min=0.01, poll_max=0.05)
    runner = Runner(manifest, settings, transport=httpx.ASGITransport(app=Simulator().app))
    calls = _trace_syscalls(monkeypatch)
    write, mkdir = Journal._write, os.mkdir

    def traced_write(self: Journal, entry: Entry) -> int:
        calls.append(("journal", f"{entry.EVENT} {entry.id}"))
        return write(self, entry)

    def traced_mkdir(path: os.PathLike[str] | str, *args: Any, **kw: Any) -> None:
        mkdir(path, *args, **kw)
        calls.append(("mkdir", os.path.basename(path)))

    monkeypatch.setattr(Journal, "_write", traced_write)
    monkeypatch.setattr(os, "mkdir", traced_mkdir)
    assert anyio.run(runner.run).exit_code == 0
    renames = [i for i, c in enumerate(calls) if c == ("rename", "video.mp4")]
    folder_syncs = [i for i, c in enumerate(calls) if c == ("fsync-dir", "jobs")]  # as each begins
    assert len(renames) == 2 and folder_syncs
    for job in ("one", "two"):
        made, line = calls.index(("mkdir", job)), calls.index(("journal", f"succeeded {job}"))
        assert any(made < i < line for i in folder_syncs)
    assert ("fsync-dir", "out") in calls[: renames[0]]  # jobs/ itself is durable in out/


def test_after_a_clean_close_jobs_are_not_searched_but_after_a_kill_they_are(tmp_path: Path) -> None:
    """A holder that closes cleanly empties the lock file, and the next open does not list jobs/;
    one that did not (killed: its pid still there) has its orphans swept."""
    job_dir = tmp_path / "jobs" / "a"
    job_dir.mkdir(parents=True)
    out = OutputDir(tmp_path)
    out.open()
    out.close(clean=True)
    assert (tmp_path / ".batchvid" / "lock").read_bytes() == b""
    orphan = job_dir / ".video.mp4.x1.part"
    orphan.write_bytes(b"half")  # not one a batchvid run could leave after a clean close
    out.open()
    assert orphan.exists()
    assert (tmp_path / ".batchvid" / "lock").read_text() == f"{os.getpid()}\n"
    out.close()  # as if killed: the pid stays
    assert (tmp_path / ".batchvid" / "lock").read_text() == f"{os.getpid()}\n"
    out.open()
    out.close(clean=True)
    assert not orphan.exists()


def test_a_status_glance_at_the_lock_does_not_make_a_starting_run_refuse(tmp_path: Path) -> None:
    """The shared lock `status` or `merge` takes for a moment to see whether a run is writing
    (`clean.writer_running`) does not make a run starting then say the directory is in use:
    the run tries again for a few hundredths of a second."""
    import fcntl
    import threading

    (tmp_path / ".batchvid").mkdir()
    fd = os.open(tmp_path / ".batchvid" / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    release = threading.Timer(0.015, os.close, (fd,))
    release.start()
    try:
        with OutputDir(tmp_path) as out:
            out.open()
    finally:
        release.join()


def test_a_directory_in_place_of_the_lock_file_is_an_output_dir_error(tmp_path: Path) -> None:
    """``.batchvid/lock`` being a directory: opening raises ``OutputDirError`` naming the lock
    file and saying it is a directory (not a bare ``IsADirectoryError``), and leaves it there."""
    (tmp_path / ".batchvid" / "lock").mkdir(parents=True)
    with pytest.raises(OutputDirError, match=r"cannot open the lock file .*/\.batchvid/lock: it is a directory") as e:
        OutputDir(tmp_path).open()
    assert type(e.value) is OutputDirError and isinstance(e.value.__cause__, IsADirectoryError)
    assert (tmp_path / ".batchvid" / "lock").is_dir()


def test_a_lock_file_without_permission_is_an_output_dir_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lock file the process may not open (EACCES; forced, as root may open anything):
    ``OutputDirError`` naming the file and the reason, not a bare ``PermissionError``."""
    import batchvid.store as store

    lock = tmp_path / ".batchvid" / "lock"
    real_open = os.open

    def refusing(path: Any, flags: int, mode: int = 0o777) -> int:
        if Path(path) == lock:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, mode)

    monkeypatch.setattr(store.os, "open", refusing)
    with pytest.raises(OutputDirError, match=r"cannot open the lock file .*/\.batchvid/lock: Permission denied; fix"):
        OutputDir(tmp_path).open()
