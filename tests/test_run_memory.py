"""A run's memory stays bounded: jobs past their task do not pile up ahead of their downloads."""

from __future__ import annotations

from pathlib import Path

import anyio
import httpx
import pytest

import batchvid.admission
from batchvid.events import Event, JobFinished, JobSubmitted
from batchvid.runner import Runner, Settings
from batchvid.simulator import GEEKAI_PREFIX, Simulator, SimulatorConfig
from tests.helpers import make_job, make_manifest

KEY = "test-secret-key-1234567890"


class SlowFiles(httpx.AsyncBaseTransport):
    """The simulator, with every result file held back until all jobs were submitted or
    ``hold`` seconds have passed since the first was asked for (so a bounded run goes on)."""

    def __init__(self, sim: Simulator, jobs: int, hold: float) -> None:
        self.inner = httpx.ASGITransport(app=sim.app)
        self.jobs, self.hold = jobs, hold
        self.submitted = 0
        self.opened: anyio.Event | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/files/"):
            if self.opened is None:
                self.opened = anyio.Event()
            with anyio.move_on_after(self.hold):
                await self.opened.wait()
        return await self.inner.handle_async_request(request)

    def __call__(self, event: Event) -> None:
        if isinstance(event, JobSubmitted):
            self.submitted += 1
            if self.submitted == self.jobs and self.opened is not None:
                self.opened.set()


class Live:
    """Subscriber: how many jobs are past their create and not yet finished, at most."""

    def __init__(self) -> None:
        self.now = self.most = 0

    def __call__(self, event: Event) -> None:
        if isinstance(event, JobSubmitted):
            self.now += 1
            self.most = max(self.most, self.now)
        elif isinstance(event, JobFinished):
            self.now -= 1


def test_jobs_under_way_are_bounded_when_downloads_lag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With downloads slower than tasks, no more than max_in_flight + LIVE_AHEAD jobs are under way."""
    monkeypatch.setattr(batchvid.admission, "LIVE_AHEAD", 2)
    jobs = [make_job(f"job-{i}", i) for i in range(10)]
    transport = SlowFiles(Simulator(SimulatorConfig()), len(jobs), hold=0.3)
    live = Live()
    settings = Settings(out_dir=tmp_path / "out", provider="geekai", base_url=f"http://sim{GEEKAI_PREFIX}",
                        api_key=KEY, max_in_flight=1, rpm=None, retries=3, timeout=60.0,
                        poll_min=0.01, poll_max=0.05)
    runner = Runner(make_manifest(jobs), settings, transport=transport, subscribers=[transport, live])
    result = anyio.run(runner.run)
    assert result.exit_code == 0
    assert [o.status for o in result.outcomes] == ["succeeded"] * len(jobs)
    assert live.most <= 1 + 2  # without the bound, all 10 (tested: the files wait for them)
