"""A property drill: random provider answers, connection failures and kills, then reruns.

For each seed, a chaos transport in front of the in-process simulator drops connections before
a request leaves, loses answers after the provider acted on them, swaps answers for gateway
errors (the gateway answered after the provider acted), answers with refusals, and kills the run at a random request (the process "dies" there: no more I/O) or
cancels it at a random moment. The run is then started again on the same directory until one
finishes. Whatever happened, no job has two tasks on the provider, every finished video
verifies, and no job is left pending.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from batchvid.events import Collector, JobFinished
from batchvid.runner import Runner, Settings
from batchvid.simulator import BIGMODEL_PREFIX, GEEKAI_PREFIX, Simulator, SimulatorConfig
from batchvid.verify import verify_dir
from tests.helpers import make_job, make_manifest

KEY = "property-secret-key-5f1e9a"
SEEDS = range(30)
JOBS = 5
MAX_RUNS = 8

STRANDED = {"create_unconfirmed", "duplicate_request", "bad_response"}
"""How a job ends when a create may have made a task whose id was lost: never resent."""
EXPECTED_FAILURES = STRANDED | {"task_failed", "download_failed", "timeout"}


class Killed(BaseException):
    """The process died at this request (a BaseException, like the KeyboardInterrupt of a kill)."""


class Chaos(httpx.AsyncBaseTransport):
    """Random failures in front of another transport; ``kill_at`` kills at the n-th request."""

    def __init__(self, inner: httpx.AsyncBaseTransport, rng: random.Random, kill_at: int | None) -> None:
        self.inner = inner
        self.rng = rng
        self.kill_at = kill_at
        self.requests = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        create = request.method == "POST"
        if self.kill_at is not None and self.requests >= self.kill_at:
            if create and self.rng.random() < 0.5:
                await self.inner.handle_async_request(request)  # it reached the provider
            raise Killed
        draw = self.rng.random()
        if draw < 0.08:
            raise httpx.ConnectError("connection refused", request=request)
        if draw > 0.95:  # the provider itself refuses: it did nothing
            return httpx.Response(503, json={"error": {"message": "busy"}}, request=request)
        response = await self.inner.handle_async_request(request)
        if create and draw < 0.16:
            await response.aclose()
            raise httpx.ReadError("connection reset after the request was sent", request=request)
        if create and draw < 0.2:
            await response.aclose()
            return httpx.Response(502, text="<html>bad gateway</html>", request=request)
        return response


def _settings(out: Path, provider: str) -> Settings:
    prefix = GEEKAI_PREFIX if provider == "geekai" else BIGMODEL_PREFIX
    return Settings(
        out_dir=out, provider=provider, base_url=f"http://sim{prefix}", api_key=KEY,
        max_in_flight=3, rpm=None, retries=4, timeout=30.0, poll_min=0.01, poll_max=0.03,
        grace=0.0,
    )  # fmt: skip


async def _quick_sleep(seconds: float) -> None:
    """Retry and poll waits at a tenth of their length: the same decisions, sooner."""
    await anyio.sleep(seconds / 10)


async def _one_run(runner: Runner, cancel_after: float | None) -> bool:
    """Run once; False when the run was killed or cancelled before it finished."""
    try:
        with anyio.move_on_after(cancel_after if cancel_after is not None else 120.0) as scope:
            await runner.run()
    except Killed:
        return False
    except BaseExceptionGroup as group:
        if not group.subgroup(Killed):
            raise
        return False
    return not scope.cancelled_caught


@pytest.mark.parametrize("seed", SEEDS)
def test_random_failures_and_kills_never_create_a_job_twice(tmp_path: Path, seed: int) -> None:
    """Under random failures, kills and reruns, no job gets two tasks and done videos verify."""
    rng = random.Random(seed)
    provider = ("geekai", "bigmodel")[seed % 2]
    simulator = Simulator(
        SimulatorConfig(
            latency=0.05, fault_rate=0.1, lost_create_rate=0.05, seed=seed,
            video_seconds=0.2, max_side=32,
        )
    )  # fmt: skip
    jobs = [make_job(f"job-{i}", i, provider, prompt=f"seed {seed} job {i}") for i in range(JOBS)]
    out = tmp_path / "out"
    finished = None
    for attempt in range(MAX_RUNS):
        last = attempt == MAX_RUNS - 1
        kill_at = None if last or rng.random() < 0.4 else rng.randint(1, 25)
        cancel_after = None if last or kill_at is not None else rng.uniform(0.0, 0.4)
        transport = Chaos(httpx.ASGITransport(app=simulator.app), rng, kill_at)
        collector = Collector()
        runner = Runner(make_manifest(jobs), _settings(out, provider), transport=transport,
                        subscribers=[collector], rng=random.Random(seed * 1000 + attempt),
                        sleep=_quick_sleep)
        if anyio.run(_one_run, runner, cancel_after):
            finished = collector
            break
    assert finished is not None, "no run finished"
    stats = simulator.stats()
    twice = {body: n for body, n in stats["tasks_by_body"].items() if n > 1}
    assert twice == {}, f"jobs created twice: {twice}"
    problems, _ = verify_dir(out)
    assert problems == []
    ends: dict[str, Any] = {e.job_id: e for e in finished.events if isinstance(e, JobFinished)}
    report_jobs = {j["id"]: j for j in _report(out)["jobs"]}
    assert set(report_jobs) == {job.id for job in jobs}
    for job_id, entry in report_jobs.items():
        assert entry["status"] in ("succeeded", "skipped", "failed"), (job_id, entry)
        if entry["status"] == "failed":
            assert entry["error"]["kind"] in EXPECTED_FAILURES, (job_id, entry["error"])
    assert [p for p in out.rglob("*") if p.suffix in (".part", ".tmp")] == []
    assert all(e.status != "pending" for e in ends.values())


def _report(out: Path) -> dict[str, Any]:
    import json

    return json.loads((out / "report.json").read_text())  # type: ignore[no-any-return]
