"""Crash drill: ``batchvid run`` killed with SIGKILL five times, rerun each time, then finished.

The run is a real subprocess (``python -m batchvid run``) against a simulator served over TCP by
this test process, so the simulator's counters survive every kill. The kill moments are chosen
(seeded) among: a random instant, just after a create was journaled, while a download is being
written (a ``.part`` file exists) and while the report files are being written. After the last
rerun the directory must look as if the run had never been interrupted: every job done, each
task created once, ``verify_dir`` clean, no temporary file left, and the lock and metadata equal
to those of an uninterrupted run.

One window cannot be closed by any client: a kill after a create request left and before its
answer was journaled. The next run cannot know whether the server created the task. BigModel
resends under the same ``request_id`` and the server refuses the duplicate (1231,
``duplicate_request``); GeekAI has no idempotency key, so the job is marked ``create_unconfirmed``
rather than sent again. Either way nothing is paid twice; such jobs are counted as ``stranded``.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from batchvid.jobs import Job
from batchvid.journal import Entry, Submitted, Submitting, read_entries
from batchvid.manifest import load_manifest
from batchvid.providers import get_provider
from batchvid.runner import Runner, Settings
from batchvid.simulator import (
    BIGMODEL_PREFIX,
    GEEKAI_PREFIX,
    Simulator,
    SimulatorConfig,
    body_hash,
    running_simulator,
)
from batchvid.store import STATE_DIR, OutputDir
from batchvid.verify import verify_dir
from tests.helpers import make_job, make_manifest

KEY = "crash-secret-key-2b8d4e6f0a"
ENV_KEY = {"geekai": "GEEKAI_API_KEY", "bigmodel": "ZHIPUAI_API_KEY"}
MOMENTS = ("random", "after-create", "mid-download", "random", "mid-report")
"""The kill schedule, in order (mid-report comes last: it needs every job finished)."""
STRANDED_KINDS = {"geekai": "create_unconfirmed", "bigmodel": "duplicate_request"}
RUN_TIMEOUT = 90.0


def sim_config(*, faults: bool, download_bytes: int, seed: int) -> SimulatorConfig:
    return SimulatorConfig(
        latency=0.4,
        fault_rate=0.1 if faults else 0.0,
        faults=frozenset({"status_500", "status_503", "truncated", "expired_url"}),
        seed=seed,
        video_seconds=0.5,
        max_side=64,
        download_bytes=download_bytes,
    )


def write_manifest(directory: Path, provider: str, count: int) -> Path:
    lines = ["version: 1", "name: crash-drill", f"provider: {provider}", "jobs:"]
    for i in range(count):
        lines += [f"  - id: job-{i:03d}", f"    prompt: crash drill {i}, a rabbit drives a car"]
        lines.append(f"    fps: {60 if i % 3 == 0 else 30}")
    path = directory / "crash.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run_command(manifest: Path, out: Path, base_url: str, provider: str) -> list[str]:
    prefix = GEEKAI_PREFIX if provider == "geekai" else BIGMODEL_PREFIX
    return [
        sys.executable, "-m", "batchvid", "run", str(manifest), "--out", str(out),
        "--base-url", f"{base_url}{prefix}", "--provider", provider,
        "--log-format", "json", "--no-progress", "--poll-interval", "0.05:0.2",
        "--max-in-flight", "6", "--rpm", "6000", "--retries", "8", "--timeout", "60",
    ]  # fmt: skip


def journal_lines(out: Path) -> list[Entry]:
    """The journal's entries as the next run will read them (a torn tail left out)."""
    return list(read_entries(out / STATE_DIR / "journal.jsonl"))


def temp_files(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if p.suffix in (".part", ".tmp")]


def unanswered_creates(out: Path) -> set[str]:
    """Keys whose last journal entry is ``submitting``: a create cut off before its answer."""
    last: dict[str, str] = {}
    for entry in journal_lines(out):
        last[entry.key] = entry.EVENT
    return {key for key, event in last.items() if event == "submitting"}


def _trigger(moment: str, out: Path, rng: random.Random, started: float) -> Callable[[], bool]:
    """A predicate that says when to kill for ``moment``."""
    if moment == "random":
        when = started + rng.uniform(0.6, 1.6)
        return lambda: time.monotonic() >= when
    if moment == "after-create":
        before = sum(isinstance(e, Submitted) for e in journal_lines(out))
        return lambda: sum(isinstance(e, Submitted) for e in journal_lines(out)) > before
    if moment == "mid-download":
        stale = set(temp_files(out))  # the next run sweeps these; wait for a new one
        return lambda: any(p.suffix == ".part" and p not in stale for p in temp_files(out))
    if moment == "mid-report":
        report = out / "report.json"
        mtime = report.stat().st_mtime_ns if report.exists() else 0

        def reporting() -> bool:
            if any(out.glob(".*.tmp")):
                return True
            return report.exists() and report.stat().st_mtime_ns != mtime

        return reporting
    raise ValueError(moment)


def mid_report(out: Path) -> bool:
    """Whether the report files are half written: a temporary one exists, or report.json was
    replaced and batchvid.lock (written last) not yet."""
    if any(out.glob(".*.tmp")):
        return True
    report, lock = out / "report.json", out / "batchvid.lock"
    if not report.exists():
        return False
    return not lock.exists() or lock.stat().st_mtime_ns < report.stat().st_mtime_ns


@dataclass
class Kill:
    moment: str
    killed: bool
    """False when the run finished before the moment came."""
    seconds: float
    new_part_files: int
    """Half-written downloads this run left behind."""
    new_unanswered: int
    """Creates this run journaled and never saw answered."""
    mid_report: bool


@dataclass
class CrashDrill:
    provider: str
    out: Path
    manifest: Path
    kills: list[Kill]
    final_exit: int
    final_stderr: str
    stats: dict[str, Any]
    report: dict[str, Any]
    reference: dict[str, Any] = field(default_factory=dict)
    logs: list[str] = field(default_factory=list)

    @property
    def crashes(self) -> int:
        return sum(k.killed for k in self.kills)

    def statuses(self) -> dict[str, str]:
        return {j["id"]: j["status"] for j in self.report["jobs"]}

    def stranded(self) -> dict[str, str]:
        return {
            j["id"]: j["error"]["kind"] for j in self.report["jobs"] if j["status"] == "failed"
        }

    def regenerated(self) -> set[str]:
        """Jobs submitted again under a new BigModel request id after a create was refused: a
        new generation, so their video is another sample than the uninterrupted run's."""
        request_ids: dict[str, set[str | None]] = {}
        for entry in read_entries(self.out / STATE_DIR / "journal.jsonl"):
            if isinstance(entry, Submitting):
                request_ids.setdefault(entry.id, set()).add(entry.request_id)
        return {job_id for job_id, ids in request_ids.items() if len(ids) > 1}

    def duplicates(self) -> int:
        return sum(n - 1 for n in self.stats["tasks_by_body"].values())

    def stranded_with_task(self) -> int:
        """Stranded jobs whose create did reach the server (a resend would have paid twice)."""
        api = get_provider(self.provider)
        jobs = {j.id: j for j in load_manifest(self.manifest).jobs}
        tasks = self.stats["tasks_by_body"]
        return sum(body_hash(api.build_body(jobs[i])) in tasks for i in self.stranded())


def _start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as stderr:
        return subprocess.Popen(
            command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr
        )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
    process.wait(timeout=30)


def reference_run(tmp: Path, manifest: Path, provider: str, config: SimulatorConfig) -> Path:
    """The same manifest run once, uninterrupted and without faults, in process."""
    out = tmp / "reference"
    prefix = GEEKAI_PREFIX if provider == "geekai" else BIGMODEL_PREFIX
    settings = Settings(
        out_dir=out, provider=provider, base_url=f"http://sim{prefix}", api_key=KEY,
        max_in_flight=6, rpm=None, retries=3, timeout=60.0, poll_min=0.05, poll_max=0.2,
    )  # fmt: skip
    simulator = Simulator(config)
    runner = Runner(load_manifest(manifest), settings, transport=httpx.ASGITransport(app=simulator.app))
    result = anyio.run(runner.run)
    assert result.exit_code == 0
    return out


def run_crash_drill(
    tmp: Path,
    provider: str,
    *,
    count: int = 30,
    moments: tuple[str, ...] = MOMENTS,
    seed: int = 4,
    download_bytes: int = 3 << 20,
    faults: bool = True,
) -> CrashDrill:
    """Kill a subprocess run at each of ``moments``, rerunning each time; then finish it."""
    rng = random.Random(seed)
    manifest = write_manifest(tmp, provider, count)
    out = tmp / "out"
    log = tmp / "stderr.jsonl"
    env = dict(os.environ)
    for name in ("GEEKAI_API_KEY", "ZHIPUAI_API_KEY", "BIGMODEL_API_KEY", "BATCHVID_BASE_URL"):
        env.pop(name, None)
    env[ENV_KEY[provider]] = KEY
    config = sim_config(faults=faults, download_bytes=download_bytes, seed=seed)
    kills: list[Kill] = []
    with running_simulator(config) as sim:
        command = run_command(manifest, out, sim.base_url, provider)
        for moment in moments:
            stale, unanswered = set(temp_files(out)), unanswered_creates(out)
            started = time.monotonic()
            process = _start(command, env, log)
            try:
                due = _trigger(moment, out, rng, started)
                while process.poll() is None and time.monotonic() - started < RUN_TIMEOUT:
                    if due():
                        # Stopped first, then looked at again: a download that ended (its .part
                        # renamed) while the output was walked is not a mid-download kill.
                        process.send_signal(signal.SIGSTOP)
                        if due():
                            process.send_signal(signal.SIGKILL)
                            break
                        process.send_signal(signal.SIGCONT)
                    time.sleep(0.001)
                process.wait(timeout=30)
            finally:
                _stop(process)
            killed = process.returncode == -signal.SIGKILL
            kills.append(
                Kill(
                    moment=moment,
                    killed=killed,
                    seconds=round(time.monotonic() - started, 3),
                    new_part_files=sum(p.suffix == ".part" for p in set(temp_files(out)) - stale),
                    new_unanswered=len(unanswered_creates(out) - unanswered),
                    mid_report=mid_report(out),
                )
            )
        process = _start(command, env, log)
        try:
            final_exit = process.wait(timeout=RUN_TIMEOUT)
        finally:
            _stop(process)
        stats = sim.simulator.stats()
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    reference = reference_run(tmp, manifest, provider, sim_config(faults=False, download_bytes=download_bytes, seed=seed))
    return CrashDrill(
        provider=provider,
        out=out,
        manifest=manifest,
        kills=kills,
        final_exit=final_exit,
        final_stderr=log.read_text(encoding="utf-8", errors="replace"),
        stats=stats,
        report=report,
        reference={
            "lock": json.loads((reference / "batchvid.lock").read_text()),
            "metadata": (reference / "metadata.jsonl").read_text(),
        },
    )


@pytest.fixture(scope="module", params=["geekai", "bigmodel"])
def crash(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CrashDrill]:
    provider = request.param
    yield run_crash_drill(tmp_path_factory.mktemp(f"crash-{provider}"), provider)


# --- the drill ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_every_run_was_killed(crash: CrashDrill) -> None:
    """Each of the five runs was killed by SIGKILL before it finished."""
    assert [k.killed for k in crash.kills] == [True] * len(MOMENTS), crash.kills


@pytest.mark.slow
def test_kills_hit_the_named_phases(crash: CrashDrill) -> None:
    """The mid-download kill left a .part file; the mid-report kill left the reports half written."""
    by_moment = {k.moment: k for k in crash.kills}
    assert by_moment["mid-download"].new_part_files >= 1
    assert by_moment["mid-report"].mid_report


@pytest.mark.slow
def test_final_run_finishes_every_job(crash: CrashDrill) -> None:
    """After the last rerun every job is done, except creates cut off by a kill (never resent)."""
    statuses = crash.statuses()
    stranded = crash.stranded()
    assert set(stranded.values()) <= {STRANDED_KINDS[crash.provider]}
    assert len(stranded) <= sum(k.new_unanswered for k in crash.kills)
    assert {s for i, s in statuses.items() if i not in stranded} <= {"succeeded", "skipped"}
    assert crash.final_exit == (1 if stranded else 0)


@pytest.mark.slow
def test_no_task_is_created_twice(crash: CrashDrill) -> None:
    """Across six runs and five kills, the simulator created each job's task once."""
    assert set(crash.stats["tasks_by_body"].values()) == {1}


@pytest.mark.slow
def test_output_verifies_clean(crash: CrashDrill) -> None:
    """verify_dir finds the report, the lock and every video consistent."""
    problems, checked = verify_dir(crash.out)
    assert problems == [] and checked > 0


@pytest.mark.slow
def test_no_temporary_file_survives(crash: CrashDrill) -> None:
    """Half-written downloads and report files of killed runs are gone after the rerun."""
    assert temp_files(crash.out) == []


@pytest.mark.slow
def test_lock_and_metadata_equal_an_uninterrupted_run(crash: CrashDrill) -> None:
    """batchvid.lock (minus task ids) and metadata.jsonl match a run that was never killed;
    a job regenerated under a new request id keeps its key and differs only in its video."""
    stranded = crash.stranded()
    regenerated = crash.regenerated()
    lock = json.loads((crash.out / "batchvid.lock").read_text())

    def pins(data: dict[str, Any]) -> dict[str, tuple[str, str | None]]:
        return {
            i: (p["key"], None if i in regenerated else p["sha256"])
            for i, p in data["jobs"].items()
            if i not in stranded
        }

    assert pins(lock) == pins(crash.reference["lock"])
    video_fields = {"sha256", "quality"}  # what is measured on the video differs with it

    def comparable(row: dict[str, Any]) -> dict[str, Any]:
        if row["id"] not in regenerated:
            return row
        return {k: v for k, v in row.items() if k not in video_fields}

    rows = [json.loads(r) for r in (crash.out / "metadata.jsonl").read_text().splitlines()]
    expected = [json.loads(r) for r in crash.reference["metadata"].splitlines()]
    assert [comparable(r) for r in rows] == [
        comparable(r) for r in expected if r["id"] not in stranded
    ]


@pytest.mark.slow
def test_the_key_never_reaches_a_file_or_the_log(crash: CrashDrill) -> None:
    """No file under the output directory and no JSON log line of any run holds the key."""
    needle = KEY.encode()
    assert [p for p in crash.out.rglob("*") if p.is_file() and needle in p.read_bytes()] == []
    assert crash.final_stderr and KEY not in crash.final_stderr


# --- the window no client can close: a create cut off before its answer was journaled ----------


def _cut_off_create(out: Path, job: Job, request_id: str | None = None) -> None:
    """Leave the journal as a SIGKILL between sending a create and journaling its answer does."""
    with OutputDir(out) as directory:
        directory.open()
        directory.journal.append(Submitting(job.key, job.id, request_id))


def _run_in_process(out: Path, job: Job, simulator: Simulator, **kw: Any) -> Any:
    prefix = GEEKAI_PREFIX if job.provider == "geekai" else BIGMODEL_PREFIX
    settings = Settings(
        out_dir=out, provider=job.provider, base_url=f"http://sim{prefix}", api_key=KEY,
        rpm=None, poll_min=0.01, poll_max=0.05, **kw,
    )  # fmt: skip
    runner = Runner(make_manifest([job]), settings, transport=httpx.ASGITransport(app=simulator.app))
    return anyio.run(runner.run)


def test_geekai_create_cut_off_by_a_crash_is_not_resent(tmp_path: Path) -> None:
    """On GeekAI a create with no journaled answer fails create_unconfirmed; nothing is sent."""
    job = make_job("cut", 0, "geekai")
    _cut_off_create(tmp_path, job)
    simulator = Simulator()
    result = _run_in_process(tmp_path, job, simulator)
    assert result.exit_code == 1
    assert result.outcomes[0].error["kind"] == "create_unconfirmed"
    assert simulator.stats()["create_requests"] == 0


def test_retry_failed_resends_a_create_cut_off_by_a_crash(tmp_path: Path) -> None:
    """--retry-failed is the explicit way to send such a create again."""
    job = make_job("cut", 0, "geekai")
    _cut_off_create(tmp_path, job)
    simulator = Simulator()
    result = _run_in_process(tmp_path, job, simulator, retry_failed=True)
    assert result.exit_code == 0
    assert simulator.stats()["tasks_created"] == 1


def test_bigmodel_create_cut_off_after_the_task_exists_is_refused_as_a_duplicate(tmp_path: Path) -> None:
    """On BigModel the resend reuses the request_id: the server refuses it (1231), no second task."""
    job = make_job("cut", 0, "bigmodel")
    simulator = Simulator()
    request_id = f"bv-{job.key[:32]}"
    body = get_provider("bigmodel").build_body(job, request_id=request_id)  # type: ignore[call-arg]

    async def create_directly() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=simulator.app)) as client:
            answer = await client.post(f"http://sim{BIGMODEL_PREFIX}/videos/generations", json=body,
                                       headers={"Authorization": f"Bearer {KEY}"})  # fmt: skip
            assert answer.status_code == 200

    anyio.run(create_directly)
    _cut_off_create(tmp_path, job, request_id)
    result = _run_in_process(tmp_path, job, simulator)
    assert result.outcomes[0].error["kind"] == "duplicate_request"
    assert simulator.stats()["tasks_created"] == 1
