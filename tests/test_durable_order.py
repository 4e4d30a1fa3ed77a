"""The order of a whole run's durable steps, traced syscall by syscall: what a crash at any
point leaves behind is named by the journal only once it is on disk."""

from __future__ import annotations

import os
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
