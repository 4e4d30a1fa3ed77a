"""The replay snapshot a run leaves as it closes (``snapshot.save_after_run``): written by a
child process under the directory's lock after a run that appended enough lines, it gives the
next run exactly the records a replay from the journal's start gives, whatever the runs were
(failures, --retry-failed, a budget stop, Ctrl-C, a crash, shards); a run cut short leaves
none of its own, and a small run starts no child."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from batchvid import journal as journal_module
from batchvid import snapshot, store
from batchvid.errors import OutputDirLocked
from batchvid.events import Collector, Event, JobSubmitted
from batchvid.journal import Journal, Submitted
from batchvid.runner import Runner
from batchvid.simulator import Simulator, SimulatorConfig
from batchvid.store import OutputDir
from tests.helpers import Recording, make_job, make_manifest
from tests.test_journal_snapshot import _image
from tests.test_runner import _jobs, _run, _settings

SAVE = 5
"""``SAVE_LINES`` in these tests: a run of two jobs or more (three lines a job) leaves one."""


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether each replay in this process since started from a snapshot."""
    seen: list[bool] = []
    load = snapshot._load

    def spy(path: Path, fh: Any) -> Any:
        start = load(path, fh)
        seen.append(start is not None)
        return start

    monkeypatch.setattr(snapshot, "_load", spy)
    return seen


def _covered(path: Path) -> int | None:
    """The lines the snapshot beside journal ``path`` covers; None without one."""
    saved = path.with_name(snapshot.SNAPSHOT_NAME)
    return snapshot.covered_lines(saved) if saved.exists() else None


class Crash(Exception):
    """A run's process dying mid-run (raised from a subscriber, inside the run)."""


def _run_with(sim: Simulator, jobs: list[Any], out: Path, after: int, action: str, **kw: Any) -> None:
    """A run that, at its ``after``-th submitted task, is interrupted (``Ctrl-C``: the CLI's
    ``Runner.interrupt``) or crashes (an exception out of the run)."""
    seen: list[Event] = []
    runner: Runner

    def watch(event: Event) -> None:
        if isinstance(event, JobSubmitted):
            seen.append(event)
            if len(seen) == after:
                if action == "crash":
                    raise Crash
                runner.interrupt("interrupted (Ctrl-C)")

    runner = Runner(make_manifest(jobs), _settings(out, **kw), subscribers=[watch, Collector()],
                    transport=Recording(httpx.ASGITransport(app=sim.app)))
    try:
        anyio.run(runner.run)
    except* Crash:
        assert action == "crash"


SCENARIOS = {
    "generate, rerun": [("run", {}), ("run", {})],
    "failures, then --retry-failed": [("run", {}), ("run", {"retry_failed": True}), ("run", {})],
    "a budget stop, then the rest": [("run", {"provider": "bigmodel", "max_cost": 1.0}),
                                     ("run", {"provider": "bigmodel"})],
    "Ctrl-C mid-run, then resumed": [("interrupt", {}), ("run", {}), ("run", {})],
    "a crash mid-run, then resumed": [("crash", {}), ("run", {}), ("run", {})],
    "shard 1/2, shard 2/2, then whole": [("run", {"shard": (1, 2)}), ("run", {"shard": (2, 2)}), ("run", {})],
}


@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("name", SCENARIOS)
def test_the_snapshot_a_run_leaves_gives_the_records_of_a_full_replay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loads: list[bool], name: str, seed: int
) -> None:
    """After every run of a scenario, the snapshot in place holds and with the lines after it
    gives the records, their order and every field's type and value, that a replay from the
    start gives. A run that finished having appended enough lines leaves one covering every
    whole chunk of its journal (when those are enough lines past the one it found: replay's
    rule); a crashed run, or one stopped by Ctrl-C, starts no child as it ends."""
    rng = random.Random(f"{name}/{seed}")
    chunk = rng.choice([1, 2, 3])
    monkeypatch.setattr(snapshot, "SAVE_LINES", SAVE)
    monkeypatch.setattr(journal_module, "CHUNK_LINES", chunk)
    closing: list[tuple[int, int]] = []  # (lines appended, lines the snapshot covered) at each close
    real_save = store.save_after_run

    def save_after_run(path: Path, appended: int, lock_fd: int | None = None) -> None:
        closing.append((appended, _covered(path) or 0))
        real_save(path, appended, lock_fd)

    monkeypatch.setattr(store, "save_after_run", save_after_run)
    provider = "bigmodel" if "budget" in name else "geekai"
    model = "cogvideox-2" if provider == "bigmodel" else "cogvideox-flash"
    jobs = [make_job(f"job-{i}", i, provider, model=model,
                     prompt=f"scene {i}" + rng.choice(["", "", " [fail]", " [unsafe]"]))
            for i in range(rng.randrange(4, 9))]
    sim = Simulator(SimulatorConfig(seed=seed))
    out = tmp_path / "out"
    path = out / ".batchvid" / "journal.jsonl"
    for step, kw in SCENARIOS[name]:
        closing.clear()
        settings = {k: v for k, v in kw.items() if k != "provider"}
        if step == "run":
            _run(sim, jobs, out, provider, **settings)
        else:
            _run_with(sim, jobs, out, 2, step, **settings)
        if step in ("crash", "interrupt"):  # cut short, or asked to end: no child to wait for
            assert closing == []
        else:
            (appended, start), = closing
            whole = path.read_bytes().count(b"\n") // chunk * chunk
            due = min(appended, whole - start) >= max(SAVE, start // 4)
            assert _covered(path) == (whole if due else start or None)
        loads.clear()
        assert _image(snapshot.replay(path)) == _image(Journal(path).replay())
        assert loads == [_covered(path) is not None]


def test_a_generating_run_s_first_rerun_loads_its_snapshot_and_decodes_nothing_before_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loads: list[bool]
) -> None:
    """The first rerun after a run that generated every job opens from the snapshot that run
    left (none was there when it opened), folding only the lines past its last whole chunk."""
    monkeypatch.setattr(snapshot, "SAVE_LINES", SAVE)
    monkeypatch.setattr(journal_module, "CHUNK_LINES", 4)
    sim, jobs, out = Simulator(SimulatorConfig()), _jobs(5), tmp_path / "out"
    _run(sim, jobs, out)
    assert loads == []  # the generating run found no journal
    path = out / ".batchvid" / "journal.jsonl"
    assert _covered(path) == 12  # of 15 lines: three whole chunks
    result, transport, _ = _run(sim, jobs, out)
    assert loads == [True] and transport.requests == []
    assert {o.status for o in result.outcomes} == {"skipped"}


def test_the_child_writes_the_snapshot_while_the_run_still_holds_the_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The snapshot is written by a child process, given the lock file's descriptor, while the
    directory is still locked: no other run can open it meanwhile."""
    monkeypatch.setattr(snapshot, "SAVE_LINES", SAVE)
    monkeypatch.setattr(journal_module, "CHUNK_LINES", 1)
    root = tmp_path / "out"
    real_popen = subprocess.Popen
    calls: list[dict[str, Any]] = []

    def popen(args: list[str], **kw: Any) -> Any:
        calls.append(kw)
        with pytest.raises(OutputDirLocked):
            OutputDir(root).open()
        return real_popen(args, **kw)

    monkeypatch.setattr(subprocess, "Popen", popen)
    with OutputDir(root) as out:
        out.open()
        for n in range(SAVE):
            out.journal.append(Submitted(f"k{n}", f"j{n}", f"t{n}"))
        lock_fd = out._lock_fd
    assert len(calls) == 1 and calls[0]["pass_fds"] == (lock_fd,)
    assert _covered(root / ".batchvid" / "journal.jsonl") == SAVE
    with OutputDir(root) as again:  # released once the child is done
        assert len(again.open()) == SAVE


@pytest.mark.parametrize("how", ["small run", "not clean", "few lines beside a big snapshot"])
def test_no_child_is_started_when_no_snapshot_is_due(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    """No child process starts (and nothing is paid) after a run that appended fewer than
    SAVE_LINES lines, after one cut short, or after one whose lines are under a quarter of what
    the snapshot in place covers."""
    root = tmp_path / "out"
    started: list[list[str]] = []
    real_popen = subprocess.Popen

    def popen(args: list[str], **kw: Any) -> Any:
        started.append(args)
        return real_popen(args, **kw)

    monkeypatch.setattr(subprocess, "Popen", popen)
    monkeypatch.setattr(snapshot, "SAVE_LINES", SAVE)
    monkeypatch.setattr(journal_module, "CHUNK_LINES", 1)
    appended = {"small run": SAVE - 1, "not clean": SAVE, "few lines beside a big snapshot": SAVE}[how]
    if how == "few lines beside a big snapshot":
        with OutputDir(root) as out:
            out.open()
            for n in range(4 * SAVE + 4):
                out.journal.append(Submitted(f"k{n}", f"j{n}", f"t{n}"))
        assert len(started) == 1
        started.clear()
    out = OutputDir(root)
    out.open()
    for n in range(appended):
        out.journal.append(Submitted(f"x{n}", f"y{n}", f"t{n}"))
    out.close(clean=how != "not clean")
    assert started == []


def test_a_run_whose_child_cannot_start_finishes_without_a_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A child that cannot be started (no interpreter there) is no error: the run finishes and
    the next replays its journal from the start, as without a snapshot."""
    monkeypatch.setattr(snapshot, "SAVE_LINES", SAVE)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python3"))  # no such file
    sim, jobs, out = Simulator(SimulatorConfig()), _jobs(3), tmp_path / "out"
    result, _, _ = _run(sim, jobs, out)
    assert result.exit_code == 0
    assert not (out / ".batchvid" / snapshot.SNAPSHOT_NAME).exists()


@pytest.mark.parametrize("name", ["uwsgi", "blender", ""])
def test_no_child_is_started_when_the_executable_is_no_python(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """Where Python is embedded, ``sys.executable`` can be the host program (or empty): it is
    not started with the child's arguments; the run leaves no snapshot, and its next run
    writes one as it replays."""
    monkeypatch.setattr(snapshot, "SAVE_LINES", SAVE)
    ran = tmp_path / "ran"
    host = tmp_path / name if name else None
    if host is not None:
        host.write_text(f'#!/bin/sh\necho "$@" >> {ran}\n')  # (the analysis workers start it too)
        host.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(host or ""))
    sim, jobs, out = Simulator(SimulatorConfig()), _jobs(3), tmp_path / "out"
    result, _, _ = _run(sim, jobs, out)
    assert result.exit_code == 0
    assert "batchvid.snapshot" not in (ran.read_text() if ran.exists() else "")
    assert not (out / ".batchvid" / snapshot.SNAPSHOT_NAME).exists()


def test_a_run_finding_the_directory_locked_by_the_child_names_the_child(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The child writes its own pid into the lock file: a run that finds the directory locked
    while the child works (its parent killed meanwhile, say) names a live process, not the
    run's; the lock file is emptied once the run closes cleanly."""
    monkeypatch.setattr(snapshot, "SAVE_LINES", SAVE)
    root = tmp_path / "out"
    real_popen = subprocess.Popen
    owners: list[str] = []

    def popen(args: list[str], **kw: Any) -> Any:
        done = real_popen(args, **kw)
        done.wait()
        owners.append((root / ".batchvid" / "lock").read_text().strip())
        with pytest.raises(OutputDirLocked, match=rf"\(pid {owners[-1]}\)"):
            OutputDir(root).open()
        return done

    monkeypatch.setattr(subprocess, "Popen", popen)
    with OutputDir(root) as out:
        out.open()
        for n in range(SAVE):
            out.journal.append(Submitted(f"k{n}", f"j{n}", f"t{n}"))
    assert len(owners) == 1 and owners[0].isdigit() and owners[0] != str(os.getpid())
    assert (root / ".batchvid" / "lock").read_text() == ""


def test_ctrl_c_while_the_child_works_stops_it_and_the_run_ends_as_it_would_have(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Ctrl-C (SIGINT to the run's main thread) while the run waits for its snapshot child
    kills the child and is no error: ``close`` returns, the lock is released and emptied (a
    clean close), and no snapshot is left (a cache: the next run replays, and writes one)."""
    monkeypatch.setattr(snapshot, "SAVE_LINES", SAVE)
    root = tmp_path / "out"
    pid_file = tmp_path / "child-pid"
    sleeper = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(600)"
    monkeypatch.setattr(snapshot, "child_command", lambda path, lock_fd=None: [sys.executable, "-c", sleeper])
    main_thread = threading.get_ident()

    def press_ctrl_c() -> None:
        while not pid_file.exists() or not pid_file.read_text():
            threading.Event().wait(0.02)
        signal.pthread_kill(main_thread, signal.SIGINT)

    out = OutputDir(root)
    out.open()
    for n in range(SAVE):
        out.journal.append(Submitted(f"k{n}", f"j{n}", f"t{n}"))
    presser = threading.Thread(target=press_ctrl_c)
    presser.start()
    out.close(clean=True)  # without the fix: KeyboardInterrupt out of here
    presser.join()
    child = int(pid_file.read_text())
    state = Path(f"/proc/{child}/stat")
    assert not state.exists() or state.read_text().split(") ")[1].startswith("Z"), "the child still runs"
    assert (root / ".batchvid" / "lock").read_text() == ""
    assert _covered(root / ".batchvid" / "journal.jsonl") is None
    with OutputDir(root) as again:
        assert len(again.open()) == SAVE
