"""What a run counts and holds back: --max-cost and free jobs, "generated" versus fetched again."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import httpx

from batchvid.display import run_summary
from batchvid.runner import Runner, Settings
from batchvid.simulator import BIGMODEL_PREFIX, GEEKAI_PREFIX, Simulator, SimulatorConfig
from tests.helpers import make_job, make_manifest


def _run(sim: Simulator, jobs: list[Any], out: Path, provider: str = "geekai", **kw: Any) -> Any:
    prefix = GEEKAI_PREFIX if provider == "geekai" else BIGMODEL_PREFIX
    settings = Settings(out_dir=out, provider=provider, base_url=f"http://sim{prefix}",
                        api_key="k" * 20, rpm=None, poll_min=0.01, poll_max=0.05, **kw)
    runner = Runner(make_manifest(jobs), settings, transport=httpx.ASGITransport(app=sim.app))
    return anyio.run(runner.run)


def test_budget_reached_does_not_hold_back_free_jobs(tmp_path: Path) -> None:
    """Once --max-cost is reached, priced jobs stay pending but free (price 0) jobs still run."""
    sim = Simulator(SimulatorConfig())
    jobs = [make_job(f"paid-{i}", i, "bigmodel", model="cogvideox-2") for i in range(3)]
    jobs += [make_job(f"free-{i}", 3 + i, "bigmodel", model="cogvideox-flash") for i in range(2)]
    result = _run(sim, jobs, tmp_path / "out", "bigmodel", max_cost=0.5)
    status = {o.job.id: o.status for o in result.outcomes}
    assert status == {"paid-0": "succeeded", "paid-1": "pending", "paid-2": "pending",
                      "free-0": "succeeded", "free-1": "succeeded"}
    assert result.stopped is not None and result.stopped["reason"] == "budget"
    assert result.report["cost"]["amount"] == 0.5
    assert result.exit_code == 3


def test_a_video_downloaded_again_is_not_counted_as_generated(tmp_path: Path) -> None:
    """A rerun that re-fetches a damaged video says "downloaded again", in the summary line and
    in report.md, and records each job's action in report.json."""
    sim = Simulator(SimulatorConfig())
    jobs = [make_job(f"j{i}", i) for i in range(3)]
    out = tmp_path / "out"
    first = _run(sim, jobs, out)
    assert run_summary(first.report, "OUT").startswith("3 jobs: 3 generated, 0 already done,")
    (out / "jobs" / "j1" / "video.mp4").write_bytes(b"damaged")
    again = _run(sim, jobs, out)
    line = run_summary(again.report, "OUT").splitlines()[0]
    assert line.startswith("3 jobs: 0 generated, 1 downloaded again, 2 already done, 0 failed")
    assert "**0 generated**, 1 downloaded again, 2 already done" in (out / "report.md").read_text()
    report = json.loads((out / "report.json").read_text())
    assert [j["action"] for j in report["jobs"]] == ["skip", "download", "skip"]
