"""Fault drill: a few hundred jobs against the simulator over TCP, with faults everywhere.

The simulator injects transient faults into 20% of responses (5xx, connection resets, truncated
bodies, expired result URLs, tasks that end failed), enforces an ``rpm`` and a ``max_concurrent``
below the client's own settings, and a few prompts carry ``[fail]``. Afterwards every job must
have ended ``succeeded`` or ``failed`` with the kind its fault explains, no task may exist twice,
every video must match its recorded hash, and the client must never have sent more create
requests than its own ``--rpm`` in any 60 s window.

Time is warped: the runner and the simulator share a clock that runs ``WARP`` times faster than
the wall clock (and a sleep that waits ``1/WARP`` as long), so per-minute limits bind within a
few seconds of wall time. Both sides keep honest books in that virtual time.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from batchvid.display import JsonLog
from batchvid.jobs import Job
from batchvid.providers import get_provider
from batchvid.report import Outcome
from batchvid.runner import Runner, Settings
from batchvid.simulator import (
    BIGMODEL_PREFIX,
    DEFAULT_FAULTS,
    GEEKAI_PREFIX,
    Simulator,
    SimulatorConfig,
    body_hash,
    running_simulator,
)
from batchvid.store import sha256_file
from batchvid.transport import TransportKind, make_transport
from batchvid.verify import verify_dir
from tests.helpers import make_job, make_manifest

KEY = "drill-secret-key-7f3a9c1e5b"
WARP = 10.0
"""Virtual seconds per wall-clock second."""
CLIENT_RPM = 240.0
SERVER_RPM = 180
CLIENT_IN_FLIGHT = 8
SERVER_MAX_CONCURRENT = 4
FAULT_RATE = 0.2
RPM_SLACK = 1.0
"""Virtual seconds of scheduling jitter tolerated when re-checking the client's rpm from the
timestamps its transport saw (one wall-clock tenth of a second at ``WARP`` 10)."""

# The kinds a failed job may end with, and why: a [fail] prompt or a task_fail fault ends the
# task failed; on GeekAI a reset create is ambiguous and deliberately not resent.
EXPLAINED = {"geekai": {"task_failed", "create_unconfirmed"}, "bigmodel": {"task_failed"}}


class Warp:
    """A clock running ``factor`` times faster than ``time.monotonic`` and a matching sleep."""

    def __init__(self, factor: float) -> None:
        self.factor = factor
        self.origin = time.monotonic()

    def clock(self) -> float:
        return (time.monotonic() - self.origin) * self.factor

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(max(0.0, seconds) / self.factor)


class Recording(httpx.AsyncBaseTransport):
    """Records the (virtual) time of every create request on its way to another transport."""

    def __init__(self, inner: httpx.AsyncBaseTransport, clock: Warp) -> None:
        self.inner = inner
        self.clock = clock
        self.creates: list[float] = []
        self.requests = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        if request.method == "POST":
            self.creates.append(self.clock.clock())
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


@dataclass
class FaultDrill:
    """What one fault drill did and left behind."""

    provider: str
    out: Path
    jobs: list[Job]
    outcomes: list[Outcome]
    exit_code: int
    stats: dict[str, Any]
    creates: list[float]
    log: str
    wall_seconds: float
    client_rpm: float = CLIENT_RPM
    bodies: dict[str, str] = field(default_factory=dict)
    """job id -> simulator body hash of its create request."""

    def failed_kinds(self) -> dict[str, str]:
        return {o.job.id: (o.error or {}).get("kind", "") for o in self.outcomes if o.status == "failed"}

    def peak_creates_per_window(self, window: float = 60.0) -> int:
        """The most create requests the client sent in any ``window`` virtual seconds."""
        times = sorted(self.creates)
        peak, start = 0, 0
        for end, t in enumerate(times):
            while times[start] <= t - window:
                start += 1
            peak = max(peak, end - start + 1)
        return peak


def drill_jobs(provider: str, count: int) -> list[Job]:
    """``count`` distinct jobs, one in twenty marked ``[fail]``, mixed fps and audio."""
    jobs = []
    for i in range(count):
        prompt = f"drill {i}: a fox drives a small car at dawn"
        if i % 20 == 7:
            prompt += " [fail]"
        params: dict[str, Any] = {"prompt": prompt, "fps": 60 if i % 3 == 0 else 30}
        if i % 4 == 1:
            params["with_audio"] = True
        jobs.append(make_job(f"job-{i:04d}", i, provider, **params))
    return jobs


def run_fault_drill(
    out: Path,
    provider: str,
    *,
    count: int = 240,
    seed: int = 6,
    fault_rate: float = FAULT_RATE,
    warp: float = WARP,
    transport: TransportKind = "aiohttp",
) -> FaultDrill:
    """Run ``count`` jobs through the faulty simulator over TCP; return what happened."""
    clock = Warp(warp)
    config = SimulatorConfig(
        latency=2.0,
        rpm=SERVER_RPM,
        max_concurrent=SERVER_MAX_CONCURRENT,
        fault_rate=fault_rate,
        faults=DEFAULT_FAULTS,
        seed=seed,
        video_seconds=0.5,
        max_side=64,
    )
    simulator = Simulator(config, clock=clock.clock, sleep=clock.sleep)
    jobs = drill_jobs(provider, count)
    prefix = GEEKAI_PREFIX if provider == "geekai" else BIGMODEL_PREFIX
    stream = io.StringIO()
    started = time.monotonic()
    with running_simulator(simulator=simulator) as sim:
        settings = Settings(
            out_dir=out,
            provider=provider,
            base_url=f"{sim.base_url}{prefix}",
            api_key=KEY,
            max_in_flight=CLIENT_IN_FLIGHT,
            rpm=CLIENT_RPM,
            retries=12,
            timeout=120.0,
            poll_min=1.0,
            poll_max=3.0,
            http_timeout=20.0,
        )
        recording = Recording(make_transport(transport), clock)
        runner = Runner(
            make_manifest(jobs),
            settings,
            transport=recording,
            subscribers=[JsonLog(stream, clock=clock.clock)],
            clock=clock.clock,
            sleep=clock.sleep,
        )
        result = anyio.run(runner.run)
        stats = simulator.stats()
    api = get_provider(provider)
    return FaultDrill(
        provider=provider,
        out=out,
        jobs=jobs,
        outcomes=result.outcomes,
        exit_code=result.exit_code,
        stats=stats,
        creates=recording.creates,
        log=stream.getvalue(),
        wall_seconds=time.monotonic() - started,
        bodies={j.id: body_hash(api.build_body(j)) for j in jobs},
    )


def leftovers(out: Path) -> list[Path]:
    """Temporary files (``.part`` downloads, ``.tmp`` atomic writes) under ``out``."""
    return [p for p in out.rglob("*") if p.suffix in (".part", ".tmp")]


def files_with(out: Path, secret: str) -> list[Path]:
    """Files under ``out`` whose bytes contain ``secret``."""
    needle = secret.encode()
    return [p for p in out.rglob("*") if p.is_file() and needle in p.read_bytes()]


@pytest.fixture(scope="module", params=[("geekai", "aiohttp"), ("bigmodel", "httpx")], ids=str)
def drill(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultDrill]:
    """One drill per provider, each on one of the two transports (``batchvid.transport``)."""
    provider, transport = request.param
    out = tmp_path_factory.mktemp(f"drill-{provider}-{transport}") / "out"
    yield run_fault_drill(out, provider, transport=transport)


pytestmark = pytest.mark.slow


def test_every_job_ends_succeeded_or_failed(drill: FaultDrill) -> None:
    """No job is left pending: each succeeded or failed, and the run exits 1 (some failed)."""
    assert {o.status for o in drill.outcomes} <= {"succeeded", "failed"}
    assert drill.exit_code == (1 if drill.failed_kinds() else 0)
    assert sum(o.status == "succeeded" for o in drill.outcomes) > len(drill.jobs) // 2


def test_failures_have_the_kind_their_fault_explains(drill: FaultDrill) -> None:
    """Failed jobs are task_failed ([fail] or task_fail) or, on GeekAI, create_unconfirmed."""
    kinds = drill.failed_kinds()
    assert set(kinds.values()) <= EXPLAINED[drill.provider], kinds
    marked = {j.id for j in drill.jobs if "[fail]" in j.params["prompt"]}
    assert all(kinds.get(job_id) in ("task_failed", "create_unconfirmed") for job_id in marked)
    unmarked_task_failed = sum(1 for i, k in kinds.items() if k == "task_failed" and i not in marked)
    assert unmarked_task_failed == drill.stats["faults"].get("task_fail", 0)


def test_unconfirmed_creates_created_nothing(drill: FaultDrill) -> None:
    """A create_unconfirmed job (a reset create on GeekAI) has no task on the server: nothing paid."""
    tasks = drill.stats["tasks_by_body"]
    unconfirmed = [i for i, k in drill.failed_kinds().items() if k == "create_unconfirmed"]
    assert all(drill.bodies[i] not in tasks for i in unconfirmed)


def test_no_job_is_created_twice(drill: FaultDrill) -> None:
    """Every task the simulator created was created once per request body."""
    tasks = drill.stats["tasks_by_body"]
    assert tasks and set(tasks.values()) == {1}
    done = [o for o in drill.outcomes if o.status == "succeeded"]
    assert all(drill.bodies[o.job.id] in tasks for o in done)


def test_every_video_is_complete_and_matches_its_hash(drill: FaultDrill) -> None:
    """Each succeeded job's video re-hashes to what the report recorded; failed jobs have none."""
    for o in drill.outcomes:
        video = drill.out / "jobs" / o.job.id / "video.mp4"
        if o.status == "succeeded":
            assert o.video is not None
            assert sha256_file(video) == (o.video["sha256"], o.video["bytes"]), o.job.id
            assert o.media is not None and o.media["fps"] == float(o.job.params["fps"])
        else:
            assert not video.exists(), o.job.id


def test_report_agrees_with_the_files(drill: FaultDrill) -> None:
    """verify_dir finds report.json, batchvid.lock and the videos consistent."""
    problems, checked = verify_dir(drill.out)
    assert problems == []
    assert checked >= sum(o.status == "succeeded" for o in drill.outcomes)
    report = json.loads((drill.out / "report.json").read_text())
    assert [j["status"] for j in report["jobs"]] == [o.status for o in drill.outcomes]


def test_no_temporary_files_remain(drill: FaultDrill) -> None:
    """Truncated and interrupted downloads leave no .part or .tmp file behind."""
    assert leftovers(drill.out) == []


def test_client_never_exceeds_its_own_rpm(drill: FaultDrill) -> None:
    """In no 60 s window did the client send more creates than --rpm, by its transport or the server."""
    assert drill.peak_creates_per_window(60.0 - RPM_SLACK) <= drill.client_rpm
    assert drill.stats["peak_create_requests_per_60s"] <= drill.client_rpm + 1


def test_server_limits_and_faults_were_exercised(drill: FaultDrill) -> None:
    """The drill really hit every fault kind and both server limits (429s were answered)."""
    faults = drill.stats["faults"]
    assert set(faults) >= DEFAULT_FAULTS
    create_route = f"{drill.provider}.create"
    assert drill.stats["requests"][create_route].get("429", 0) > 0
    assert drill.stats["peak_concurrent_tasks"] <= SERVER_MAX_CONCURRENT


def test_the_key_is_never_written(drill: FaultDrill) -> None:
    """Neither the output directory nor the JSON log contains the API key."""
    assert files_with(drill.out, KEY) == []
    assert drill.log and KEY not in drill.log
