"""The order of a whole run's durable steps, traced syscall by syscall: what a crash at any
point leaves behind is named by the journal only once it is on disk."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from batchvid.jobs import Job
from batchvid.journal import Entry, Journal
from batchvid.runner import Runner, Settings
from batchvid.simulator import BIGMODEL_PREFIX, Simulator, SimulatorConfig
from tests.helpers import make_job, make_manifest


class Trace:
    """mkdir, rename and fsync calls (after they return) and journal lines (as written), in
    order, from every thread: ``(what, path)``, with ``("journal", "<event> <job id>")``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, str]] = []
        self._fds: dict[int, str] = {}
        self._lock = threading.Lock()
        real_open, real_fsync, real_replace, real_mkdir = os.open, os.fsync, os.replace, os.mkdir
        real_write = Journal._write

        def traced_open(path: Any, flags: int, mode: int = 0o777, **kw: Any) -> int:
            fd = real_open(path, flags, mode, **kw)
            self._fds[fd] = os.fspath(path)
            return fd

        def traced_fsync(fd: Any) -> None:
            number = fd if isinstance(fd, int) else fd.fileno()
            real_fsync(fd)
            self._add("fsync", self._fds.get(number, "?"))

        def traced_replace(src: Any, dst: Any, **kw: Any) -> None:
            real_replace(src, dst, **kw)
            self._add("rename", os.fspath(dst))

        def traced_mkdir(path: Any, *args: Any, **kw: Any) -> None:
            real_mkdir(path, *args, **kw)
            self._add("mkdir", os.fspath(path))

        def traced_write(journal: Journal, entry: Entry) -> int:
            self._add("journal", f"{entry.EVENT} {entry.id}")
            return real_write(journal, entry)

        monkeypatch.setattr(os, "open", traced_open)
        monkeypatch.setattr(os, "fsync", traced_fsync)
        monkeypatch.setattr(os, "replace", traced_replace)
        monkeypatch.setattr(os, "mkdir", traced_mkdir)
        monkeypatch.setattr(Journal, "_write", traced_write)

    def _add(self, what: str, path: str) -> None:
        with self._lock:
            self.calls.append((what, path))

    def index(self, call: tuple[str, str]) -> int:
        return self.calls.index(call)

    def indices(self, what: str, path: str) -> list[int]:
        return [n for n, call in enumerate(self.calls) if call == (what, path)]


def _run(out: Path, jobs: list[Job], **manifest: Any) -> int:
    sim = Simulator(SimulatorConfig())
    settings = Settings(
        out_dir=out, provider="bigmodel", base_url=f"http://sim{BIGMODEL_PREFIX}", api_key="k-123456789",
        max_in_flight=4, rpm=None, retries=3, timeout=60.0, poll_min=0.01, poll_max=0.05,
    )
    runner = Runner(make_manifest(jobs, **manifest), settings, transport=httpx.ASGITransport(app=sim.app))
    return anyio.run(runner.run).exit_code


def test_a_finished_jobs_files_share_one_directory_fsync_before_its_succeeded_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Video, cover and poster are each fsynced before their rename; after the last rename one
    fsync of the job's directory (and the fsync of jobs/ after the directory was made) comes
    before the journal's ``succeeded`` line, and the directory is fsynced once per job."""
    trace = Trace(monkeypatch)
    out = tmp_path / "out"
    assert _run(out, [make_job(f"job-{i}", i, "bigmodel") for i in range(3)]) == 0
    for n in range(3):
        job_dir = out / "jobs" / f"job-{n}"
        files = sorted(p.name for p in job_dir.iterdir())
        assert {"video.mp4", "poster.jpg"} <= set(files) and any(f.startswith("cover.") for f in files)
        succeeded = trace.index(("journal", f"succeeded job-{n}"))
        renames = [trace.index(("rename", str(job_dir / name))) for name in files if name != "request.json"]
        dir_syncs = trace.indices("fsync", str(job_dir))
        assert len(dir_syncs) == 1
        assert max(renames) < dir_syncs[0] < succeeded
        made = trace.index(("mkdir", str(job_dir)))
        assert any(made < sync < succeeded for sync in trace.indices("fsync", str(out / "jobs")))
        for name in ("video.mp4", "poster.jpg"):
            rename = trace.index(("rename", str(job_dir / name)))
            data_syncs = [n for n, (what, path) in enumerate(trace.calls[:rename])
                          if what == "fsync" and Path(path).name.startswith(f".{name}.")]
            assert data_syncs, f"{name} renamed without an fsync of its data"


def test_a_rejected_video_is_set_aside_and_its_directory_fsynced_before_its_failed_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A clip failing the ``qc:`` thresholds is renamed aside, then its directory fsynced once
    (after the cover's rename too), and jobs/ after the directory was made (its own entry),
    then journaled ``failed`` with the kept video's path."""
    trace = Trace(monkeypatch)
    out = tmp_path / "out"
    job = make_job("black", 0, "bigmodel", prompt="a [black] night")
    assert _run(out, [job], qc={"max_black_fraction": 0.5}) == 1
    job_dir = out / "jobs" / "black"
    kept = next(job_dir.glob("video.qc_failed-*.mp4"))
    cover = next(job_dir.glob("cover.*"))
    failed = trace.index(("journal", "failed black"))
    dir_syncs = trace.indices("fsync", str(job_dir))
    assert len(dir_syncs) == 1
    assert trace.index(("rename", str(cover))) < trace.index(("rename", str(kept))) < dir_syncs[0] < failed
    made = trace.index(("mkdir", str(job_dir)))
    assert any(made < sync < failed for sync in trace.indices("fsync", str(out / "jobs")))


def test_one_fsync_of_jobs_makes_the_folders_made_before_it_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``sync_entry`` of a folder this process made (``make_dir(own_entry=False)``) fsyncs
    jobs/ unless an fsync of it that began after the folder was made has ended: two folders
    made before one fsync share it; one made after gets its own; a folder this process did
    not make (an earlier run's) always gets one."""
    from batchvid import durable

    syncs: list[str] = []
    real = durable.fsync_dir
    monkeypatch.setattr(durable, "fsync_dir", lambda path: (syncs.append(path.name), real(path)))
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    durable.make_dir(jobs / "a", own_entry=False)
    durable.make_dir(jobs / "b", own_entry=False)
    durable.sync_entry(jobs / "a")
    assert syncs == ["jobs"]
    durable.sync_entry(jobs / "b")  # covered by a's
    assert syncs == ["jobs"]
    durable.make_dir(jobs / "c", own_entry=False)
    durable.sync_entry(jobs / "c")
    assert syncs == ["jobs"] * 2
    (jobs / "earlier").mkdir()
    durable.sync_entry(jobs / "earlier")
    durable.sync_entry(jobs / "earlier")
    assert syncs == ["jobs"] * 4


def test_a_folder_made_while_an_fsync_of_jobs_runs_is_not_covered_by_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An fsync of jobs/ that began before a folder was made does not count for it: the
    folder's ``sync_entry`` makes an fsync of its own."""
    from batchvid import durable

    jobs = tmp_path / "jobs"
    jobs.mkdir()
    syncs: list[str] = []
    real = durable.fsync_dir

    def fsync_dir(path: Path) -> None:
        if not syncs:  # during the first fsync, another thread makes "late"
            durable.make_dir(jobs / "late", own_entry=False)
        syncs.append(path.name)
        real(path)

    monkeypatch.setattr(durable, "fsync_dir", fsync_dir)
    durable.make_dir(jobs / "first", own_entry=False)
    durable.sync_entry(jobs / "first")
    durable.sync_entry(jobs / "late")
    assert syncs == ["jobs", "jobs"]


def test_a_runs_folders_share_fsyncs_of_jobs_each_begun_after_its_folder_was_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over a run of 12 jobs, jobs/ is fsynced fewer times than there are jobs, and before
    each ``succeeded`` line an fsync of jobs/ that began after the job's folder was made has
    ended."""
    from batchvid import durable

    trace = Trace(monkeypatch)
    real = durable.fsync_dir

    def fsync_dir(path: Path) -> None:
        trace._add("fsync begins", os.fspath(path))
        real(path)

    monkeypatch.setattr(durable, "fsync_dir", fsync_dir)
    out = tmp_path / "out"
    assert _run(out, [make_job(f"job-{i}", i, "bigmodel") for i in range(12)]) == 0
    jobs = str(out / "jobs")
    begins, ends = trace.indices("fsync begins", jobs), trace.indices("fsync", jobs)
    assert 1 <= len(ends) < 12
    for n in range(12):
        made = trace.index(("mkdir", str(out / "jobs" / f"job-{n}")))
        succeeded = trace.index(("journal", f"succeeded job-{n}"))
        assert any(made < begin and any(begin < end < succeeded for end in ends) for begin in begins)


def _counted_syncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The directories ``durable.fsync_dir`` is called on (each really fsynced), by name."""
    from batchvid import durable

    syncs: list[str] = []
    real = durable.fsync_dir
    monkeypatch.setattr(durable, "fsync_dir", lambda path: (syncs.append(path.name), real(path)))
    return syncs


def test_an_fsync_of_jobs_that_fails_covers_no_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An fsync of jobs/ that fails (EIO) counts for nothing: a folder made before it still
    gets an fsync of its own, not taken as covered."""
    import errno

    from batchvid import durable

    jobs = tmp_path / "jobs"
    jobs.mkdir()
    durable.make_dir(jobs / "a", own_entry=False)
    durable.make_dir(jobs / "b", own_entry=False)
    syncs: list[str] = []
    real = durable.fsync_dir

    def fsync_dir(path: Path) -> None:
        syncs.append(path.name)
        if len(syncs) == 1:
            raise OSError(errno.EIO, "Input/output error")
        real(path)

    monkeypatch.setattr(durable, "fsync_dir", fsync_dir)
    with pytest.raises(OSError, match="Input/output"):
        durable.sync_entry(jobs / "a")
    durable.sync_entry(jobs / "b")
    assert syncs == ["jobs", "jobs"]


def test_a_folder_made_after_the_table_overflows_is_not_taken_as_covered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past ``ENTRIES_KEPT`` folders the records are forgotten: the forgotten ones and one made
    after the last fsync of jobs/ each get an fsync of their own (the count of folders made
    goes on, so an earlier fsync never covers a later folder)."""
    from batchvid import durable

    monkeypatch.setattr(durable, "ENTRIES_KEPT", 3)
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    for name in "abc":
        durable.make_dir(jobs / name, own_entry=False)
    syncs = _counted_syncs(monkeypatch)
    durable.sync_entry(jobs / "a")  # covers b and c
    durable.make_dir(jobs / "d", own_entry=False)
    durable.make_dir(jobs / "e", own_entry=False)  # the table is full: b, c, d forgotten
    durable.sync_entry(jobs / "e")  # made after a's fsync began: its own
    assert syncs == ["jobs"] * 2
    durable.sync_entry(jobs / "b")  # forgotten: its own
    assert syncs == ["jobs"] * 3


def test_a_folder_removed_and_made_again_is_covered_only_by_an_fsync_begun_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder made, removed and made again (found already there by ``make_dir``, as on a
    --force regeneration) is covered only by an fsync of jobs/ begun after it was last found
    or made, not by one that covered its first making."""
    from batchvid import durable

    jobs = tmp_path / "jobs"
    jobs.mkdir()
    durable.make_dir(jobs / "a", own_entry=False)
    durable.make_dir(jobs / "b", own_entry=False)
    syncs = _counted_syncs(monkeypatch)
    durable.sync_entry(jobs / "b")  # covers a's first making
    (jobs / "a").rmdir()
    (jobs / "a").mkdir()  # made again by another way (no record)
    durable.make_dir(jobs / "a", own_entry=False)  # found there
    durable.sync_entry(jobs / "a")
    assert syncs == ["jobs"] * 2


def test_a_relative_jobs_folder_in_another_working_directory_is_another_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Records are kept by the directory's absolute path: ``out/jobs`` after a change of the
    working directory is another directory, whose folders an fsync of the first never covers."""
    from batchvid import durable

    for side in ("one", "two"):
        (tmp_path / side / "out" / "jobs" / "x").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "one")
    jobs = Path("out", "jobs")
    durable.make_dir(jobs / "x", own_entry=False)
    durable.make_dir(jobs / "y", own_entry=False)
    syncs = _counted_syncs(monkeypatch)
    durable.sync_entry(jobs / "y")  # covers one/out/jobs/x
    monkeypatch.chdir(tmp_path / "two")
    durable.sync_entry(jobs / "x")  # two/out/jobs/x: never covered
    assert syncs == ["jobs"] * 2


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no os.fork here")
def test_a_forked_child_does_not_wait_for_a_lock_a_parent_thread_held(tmp_path: Path) -> None:
    """A child made by ``os.fork`` while a thread of the parent held the records' lock (the
    thread does not exist in the child) makes its folders durable all the same: it starts with
    no records and fsyncs each itself."""
    from batchvid import durable

    jobs = tmp_path / "jobs"
    jobs.mkdir()
    durable.make_dir(jobs / "a", own_entry=False)
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        entries = durable._entries(str(jobs))
        with durable._directories_lock, entries.lock:
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(10)
    try:
        pid = os.fork()
        if pid == 0:  # the child: exit 0 once a's entry is made durable, killed by the alarm if it hangs
            code = 1
            try:
                signal.alarm(10)
                durable.make_dir(jobs / "b", own_entry=False)
                durable.sync_entry(jobs / "a")
                durable.sync_entry(jobs / "b")
                code = 0
            finally:
                os._exit(code)
    finally:
        release.set()
        holder.join()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
