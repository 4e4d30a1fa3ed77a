"""What a run counts and holds back: --max-cost and free jobs, "generated" versus fetched again."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import anyio
import httpx

from batchvid.display import run_summary
from batchvid.journal import JobRecord
from batchvid.plan import decide
from batchvid.report import Outcome, RunInfo, write_outputs
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


NGINX_502 = (
    "server error 502: <html>\r\n<head><title>502 Bad Gateway</title>"
    "<style>body { width: 35em; }</style></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1>"
    "</center>\r\n<hr><center>nginx/1.18.0 (Ubuntu)</center>\r\n" + "<!-- padding -->\r\n" * 40
    + "<p>" + "x" * 300 + "</p></body>\r\n</html>\r\n"
)


def test_an_html_error_page_is_one_short_clean_line_in_report_md_and_junit(tmp_path: Path) -> None:
    """report.md and junit.xml carry the 5xx page as one tag-free line of at most ~200 chars;
    report.json keeps the whole message."""
    bad = Outcome(make_job("bad", 0), "failed", "submit",
                  error={"kind": "server_error", "message": NGINX_502})
    info = RunInfo("m.yaml", "demo", "geekai", 1, None, "2026-01-01T00:00:00+00:00",
                   "2026-01-01T00:00:00+00:00", 1.0, 0.0, "CNY")
    write_outputs(tmp_path, [bad], info)
    row = next(line for line in (tmp_path / "report.md").read_text().splitlines() if "`bad`" in line)
    message = row.split(" | ")[3].removesuffix(" |")
    assert message.startswith("server error 502: 502 Bad Gateway nginx/1.18.0 (Ubuntu) xxx")
    assert message.endswith("…") and len(message) <= 200
    assert "<" not in row and "&lt;" not in row and "width" not in row
    failure = ET.parse(tmp_path / "junit.xml").getroot().find("testcase/failure")
    assert failure is not None
    assert failure.get("message") == message
    assert failure.text == f"server_error: {message}"
    assert json.loads((tmp_path / "report.json").read_text())["jobs"][0]["error"]["message"] == NGINX_502


def test_plan_reason_of_a_timed_out_job_gives_its_advice_once(tmp_path: Path) -> None:
    """A failed job whose error already says what --retry-failed does is not told again."""
    job = make_job("slow", 0)
    message = "not finished within --timeout 5 s; --retry-failed polls the same task again"
    record = JobRecord(key=job.key, id=job.id, state="failed", task_id="t1",
                       error={"kind": "timeout", "message": message})
    step = decide(job, record, tmp_path)
    assert step.reason == f"failed earlier (timeout: {message})"
    assert step.reason.count("--retry-failed") == 1
    other = decide(job, JobRecord(key=job.key, id=job.id, state="failed", task_id="t1",
                                  error={"kind": "task_failed", "message": "FAIL"}), tmp_path)
    assert other.reason == "failed earlier (task_failed: FAIL); use --retry-failed"


def test_run_summary_gives_the_retry_advice_once() -> None:
    """When every failure's message already says what --retry-failed does, the summary does
    not add the same advice; otherwise it does."""
    def report(message: str) -> dict[str, Any]:
        job = {"id": "a", "status": "failed", "error": {"kind": "timeout", "message": message}}
        summary = {"total": 1, "succeeded": 0, "skipped": 0, "failed": 1, "pending": 0}
        return {"summary": summary, "jobs": [job], "stopped": None}

    advised = run_summary(report("not finished; --retry-failed polls the same task again"), "OUT")
    assert advised.count("--retry-failed") == 1
    plain = run_summary(report("FAIL"), "OUT")
    assert plain.splitlines()[-1] == "Rerun with --retry-failed to try the failed jobs again."
