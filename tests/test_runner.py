"""The runner end to end against the in-process simulator: outputs, resume, never paying twice."""

from __future__ import annotations

import gc
import json
import os
from pathlib import Path
from typing import Any

import anyio
import httpx
import jsonschema
import pytest

from batchvid.events import Collector, JobSubmitted
from batchvid.runner import Runner, Settings
from batchvid.simulator import (
    BIGMODEL_PREFIX,
    GEEKAI_PREFIX,
    KEY_ARREARS,
    Simulator,
    SimulatorConfig,
)
from batchvid.store import sha256_file
from tests.helpers import Recording, make_job, make_manifest

KEY = "test-secret-key-1234567890"
REPORT_SCHEMA = json.loads((Path(__file__).parent.parent / "schemas" / "report.schema.json").read_text())




def _settings(out: Path, provider: str = "geekai", **kw: Any) -> Settings:
    prefix = GEEKAI_PREFIX if provider == "geekai" else BIGMODEL_PREFIX
    base = dict(
        out_dir=out, provider=provider, base_url=f"http://sim{prefix}", api_key=KEY,
        max_in_flight=4, rpm=None, retries=3, timeout=60.0, poll_min=0.01, poll_max=0.05,
    )
    base.update(kw)
    return Settings(**base)  # type: ignore[arg-type]


def _run(sim: Simulator, jobs: list[Any], out: Path, provider: str = "geekai", **kw: Any):  # type: ignore[no-untyped-def]
    transport = Recording(httpx.ASGITransport(app=sim.app))
    collector = Collector()
    runner = Runner(make_manifest(jobs), _settings(out, provider, **kw), transport=transport,
                    subscribers=[collector])
    result = anyio.run(runner.run)
    return result, transport, collector


def _jobs(n: int = 4, provider: str = "geekai", **params: Any) -> list[Any]:
    return [make_job(f"job-{i}", i, provider, **params) for i in range(n)]


def test_run_writes_the_contract_layout(tmp_path: Path) -> None:
    """A run leaves request, response and video per job and every report file, all consistent."""
    sim = Simulator(SimulatorConfig())
    result, _, _ = _run(sim, _jobs(3, fps=30), tmp_path / "out")
    out = tmp_path / "out"
    assert result.exit_code == 0
    report = json.loads((out / "report.json").read_text())
    jsonschema.Draft202012Validator(REPORT_SCHEMA).validate(report)
    assert [j["status"] for j in report["jobs"]] == ["succeeded"] * 3
    for job in report["jobs"]:
        job_dir = out / "jobs" / job["id"]
        assert json.loads((job_dir / "request.json").read_text())["async"] is True
        assert json.loads((job_dir / "response.json").read_text())["task_status"] == "succeed"
        assert sha256_file(job_dir / "video.mp4") == (job["video"]["sha256"], job["video"]["bytes"])
        assert job["media"]["fps"] == 30.0
    for name in ("report.md", "junit.xml", "metadata.jsonl", "batchvid.lock"):
        assert (out / name).is_file(), name


def test_rerun_makes_zero_requests(tmp_path: Path) -> None:
    """Running a finished directory again verifies, skips every job and sends nothing."""
    sim = Simulator(SimulatorConfig())
    jobs = _jobs(3)
    _run(sim, jobs, tmp_path / "out")
    result, transport, _ = _run(sim, jobs, tmp_path / "out")
    assert result.exit_code == 0
    assert transport.requests == []
    assert {o.status for o in result.outcomes} == {"skipped"}


@pytest.mark.parametrize(("owns_process", "freeze_from", "frozen_expected"),
                         [(False, 1, False), (True, 1, True), (True, 3, False)])
def test_only_a_large_run_that_owns_its_process_freezes_what_it_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, owns_process: bool, freeze_from: int, frozen_expected: bool
) -> None:
    """A run, and a rerun that skips every job, leave the collector on with nothing frozen;
    while it runs (from ``RunStarted`` on), what it built is frozen only in the CLI's process
    (``owns_process``, not in one that has other work's garbage to collect) and only for
    ``FREEZE_FROM`` jobs or more; only such a run keeps what it built until the process exits
    (``keep_until_exit``: here recorded, not kept, so the test session frees it); a smaller one
    in the CLI's process only skips the collector's passes at exit (``freeze_at_exit``, here
    recorded, not registered)."""
    from batchvid import runner as runner_module
    from batchvid.events import RunStarted

    monkeypatch.setattr(runner_module, "FREEZE_FROM", freeze_from)
    kept: list[tuple[object, ...]] = []
    monkeypatch.setattr(runner_module, "keep_until_exit", lambda *objects: kept.append(objects))
    exits: list[bool] = []
    monkeypatch.setattr(runner_module, "freeze_at_exit", lambda: exits.append(True))

    sim = Simulator(SimulatorConfig())
    jobs = _jobs(2)
    frozen: list[int] = []

    def seen(event: object) -> None:
        if isinstance(event, RunStarted):
            frozen.append(gc.get_freeze_count())

    for _ in range(2):
        gc.collect()  # (what earlier work left is not frozen with the run's objects)
        runner = Runner(make_manifest(jobs), _settings(tmp_path / "out"), subscribers=[seen],
                        transport=httpx.ASGITransport(app=sim.app), owns_process=owns_process)
        result = anyio.run(runner.run)
        assert result.exit_code == 0
        assert (frozen[-1] > 0) is frozen_expected
        assert gc.isenabled() and gc.get_freeze_count() == 0
        assert len(kept) == (2 if frozen_expected else 0)  # what it built, then its report
        assert len(exits) == (1 if owns_process and not frozen_expected else 0)
        kept.clear()
        exits.clear()
    gc.collect()  # what was handed back, collected here rather than at the session's end


class _Steps(list):  # type: ignore[type-arg]
    """A plan's steps that a weak reference can watch (a tuple cannot be one's target)."""


@pytest.mark.parametrize("owns_process", [True, False])
def test_a_run_frees_its_plan_before_its_report_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, owns_process: bool
) -> None:
    """The plan's steps (one object per job) are freed before the report files are made, even
    in a large run of the CLI's process, which keeps the rest of what it built until exit
    (``keep_until_exit``: the plan not among it); only that run, when it sent jobs, trims the
    C heap first."""
    import dataclasses
    import weakref

    from batchvid import runner as runner_module
    from batchvid.plan import Plan

    monkeypatch.setattr(runner_module, "FREEZE_FROM", 1)
    kept: list[tuple[object, ...]] = []
    monkeypatch.setattr(runner_module, "keep_until_exit", lambda *objects: kept.append(objects))
    monkeypatch.setattr(runner_module, "freeze_at_exit", lambda: None)
    trims: list[bool] = []
    monkeypatch.setattr(runner_module, "trim_heap", lambda: trims.append(True) or True)
    watched: list[weakref.ref[_Steps]] = []

    def plan_for(*args: Any, **kwargs: Any) -> Plan:
        plan = dataclasses.replace(original_plan_for(*args, **kwargs), steps=_Steps())
        plan.steps.extend(original_plan_for(*args, **kwargs).steps)  # type: ignore[attr-defined]
        watched.append(weakref.ref(plan.steps))  # type: ignore[arg-type]
        return plan

    original_plan_for = runner_module.plan_for
    monkeypatch.setattr(runner_module, "plan_for", plan_for)
    alive: list[bool] = []
    original_report = Runner._report

    def report(self: Runner, *args: Any) -> dict[str, Any]:
        alive.append(watched[-1]() is not None)
        return original_report(self, *args)

    monkeypatch.setattr(Runner, "_report", report)
    sim = Simulator(SimulatorConfig())
    gc.collect()
    runner = Runner(make_manifest(_jobs(2)), _settings(tmp_path / "out"),
                    transport=httpx.ASGITransport(app=sim.app), owns_process=owns_process)
    result = anyio.run(runner.run)
    assert result.exit_code == 0 and len(result.outcomes) == 2
    assert alive == [False]
    assert not any(isinstance(o, Plan | _Steps) for objects in kept for o in objects)
    assert len(kept) == (2 if owns_process else 0) and trims == ([True] if owns_process else [])
    trims.clear()
    again = Runner(make_manifest(_jobs(2)), _settings(tmp_path / "out"),
                   transport=httpx.ASGITransport(app=sim.app), owns_process=owns_process)
    assert anyio.run(again.run).exit_code == 0
    assert alive == [False, False] and trims == []  # a rerun that sent nothing: no trim
    gc.collect()


def test_editing_one_job_reruns_only_that_job(tmp_path: Path) -> None:
    """A changed prompt changes one key: only that job is created again."""
    sim = Simulator(SimulatorConfig())
    jobs = _jobs(3)
    _run(sim, jobs, tmp_path / "out")
    jobs[1] = make_job("job-1", 1, prompt="a different prompt")
    result, transport, _ = _run(sim, jobs, tmp_path / "out")
    creates = [r for r in transport.requests if r.method == "POST"]
    assert len(creates) == 1
    assert [o.status for o in result.outcomes] == ["skipped", "succeeded", "skipped"]


def test_bigmodel_run_succeeds_and_sends_request_id(tmp_path: Path) -> None:
    """BigModel jobs carry a request_id derived from the key and end succeeded with a cover."""
    sim = Simulator(SimulatorConfig())
    jobs = _jobs(2, "bigmodel", model="cogvideox-3", duration=5)
    result, transport, _ = _run(sim, jobs, tmp_path / "out", "bigmodel")
    assert result.exit_code == 0
    bodies = [json.loads(r.content) for r in transport.requests if r.method == "POST"]
    assert sorted(b["request_id"] for b in bodies) == sorted(f"bv-{j.key[:32]}" for j in jobs)
    assert all(o.cover is not None for o in result.outcomes)


def test_content_filter_fails_the_job_without_retry(tmp_path: Path) -> None:
    """A 1301 rejection fails that job with kind content_filter; the others succeed; exit 1."""
    sim = Simulator(SimulatorConfig())
    jobs = [make_job("ok", 0, "bigmodel"), make_job("bad", 1, "bigmodel", prompt="x [unsafe]")]
    result, transport, _ = _run(sim, jobs, tmp_path / "out", "bigmodel")
    assert result.exit_code == 1
    bad = result.outcomes[1]
    assert bad.status == "failed" and bad.error is not None
    assert bad.error["kind"] == "content_filter"
    assert sim.stats()["create_requests"] == 2


def test_failed_jobs_stay_failed_until_retry_failed(tmp_path: Path) -> None:
    """A failed task is kept on rerun (no request) and resubmitted only with --retry-failed."""
    sim = Simulator(SimulatorConfig())
    jobs = [make_job("doomed", 0, prompt="this will [fail]")]
    first, _, _ = _run(sim, jobs, tmp_path / "out")
    assert first.outcomes[0].error == {"kind": "task_failed", "message": first.outcomes[0].error["message"]}  # type: ignore[index]
    again, transport, _ = _run(sim, jobs, tmp_path / "out")
    assert transport.requests == [] and again.exit_code == 1
    retried, transport, _ = _run(sim, jobs, tmp_path / "out", retry_failed=True)
    assert [r.method for r in transport.requests].count("POST") == 1


def test_out_of_balance_stops_the_run_with_exit_3(tmp_path: Path) -> None:
    """Arrears (1113) stops submitting at once; jobs stay pending; exit code 3."""
    sim = Simulator(SimulatorConfig())
    result, _, _ = _run(sim, _jobs(5, "bigmodel"), tmp_path / "out", "bigmodel",
                        api_key=KEY_ARREARS, max_in_flight=1)
    assert result.exit_code == 3
    assert result.stopped is not None and result.stopped["reason"] == "insufficient_balance"
    assert {o.status for o in result.outcomes} == {"pending"}
    assert sim.stats()["create_requests"] == 1


def test_interrupted_run_reattaches_without_creating_again(tmp_path: Path) -> None:
    """Tasks submitted before a stop are polled on the next run, never created twice."""
    sim = Simulator(SimulatorConfig(latency=0.5))
    jobs = _jobs(4, "bigmodel")
    transport = httpx.ASGITransport(app=sim.app)
    runner = Runner(make_manifest(jobs), _settings(tmp_path / "out", "bigmodel"), transport=transport)

    async def run_briefly() -> None:
        with anyio.move_on_after(0.2):
            await runner.run()

    anyio.run(run_briefly)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert {j["status"] for j in report["jobs"]} == {"pending"}
    assert sim.stats()["tasks_created"] == 4
    result, _, _ = _run(sim, jobs, tmp_path / "out", "bigmodel")
    assert result.exit_code == 0
    assert {o.action for o in result.outcomes} == {"reattach"}
    assert set(sim.stats()["create_requests_by_body"].values()) == {1}


def test_budget_stops_submitting(tmp_path: Path) -> None:
    """--max-cost submits only what fits and leaves the rest pending; exit code 3."""
    sim = Simulator(SimulatorConfig())
    jobs = _jobs(4, "bigmodel", model="cogvideox-2")
    result, _, _ = _run(sim, jobs, tmp_path / "out", "bigmodel", max_cost=1.0)
    assert result.exit_code == 3
    assert [o.status for o in result.outcomes].count("succeeded") == 2
    assert result.stopped is not None and result.stopped["reason"] == "budget"
    assert result.report["cost"]["amount"] == 1.0


def test_expired_and_truncated_downloads_recover_without_regenerating(tmp_path: Path) -> None:
    """Expired URLs are refreshed by polling, truncated bodies retried; each task created once."""
    sim = Simulator(SimulatorConfig(fault_rate=0.5, faults=frozenset({"expired_url", "truncated"}), seed=3))
    result, _, _ = _run(sim, _jobs(6), tmp_path / "out")
    assert result.exit_code == 0, [o.error for o in result.outcomes]
    stats = sim.stats()
    assert stats["faults"], "the simulator injected no fault"
    assert set(stats["create_requests_by_body"].values()) == {1}
    for o in result.outcomes:
        assert o.video is not None
        assert sha256_file(tmp_path / "out" / o.video["path"])[0] == o.video["sha256"]


def test_api_key_echoed_by_the_server_is_redacted(tmp_path: Path) -> None:
    """A server that echoes the key in an error body never gets it written anywhere."""

    def echo(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"error": {"code": "1214",
                                                  "message": f"bad header {request.headers['authorization']}"}})

    runner = Runner(make_manifest(_jobs(1, "bigmodel")), _settings(tmp_path / "out", "bigmodel"),
                    transport=httpx.MockTransport(echo), subscribers=[collector := Collector()])
    result = anyio.run(runner.run)
    assert result.exit_code == 1
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file():
            assert KEY not in path.read_text(errors="replace"), path
    assert KEY not in repr([e.to_dict() for e in collector.events])
    assert "[REDACTED]" in (result.outcomes[0].error or {})["message"]


def test_submitted_events_precede_completion(tmp_path: Path) -> None:
    """Each job emits JobSubmitted with the task id the report records."""
    sim = Simulator(SimulatorConfig())
    result, _, collector = _run(sim, _jobs(2), tmp_path / "out")
    submitted = {e.job_id: e.task_id for e in collector.events if isinstance(e, JobSubmitted)}
    assert submitted == {o.job.id: o.task_id for o in result.outcomes}


@pytest.mark.parametrize("provider", ["geekai", "bigmodel"])
def test_same_results_give_identical_files(tmp_path: Path, provider: str) -> None:
    """Two runs with identical results write byte-identical request, lock and metadata files."""
    jobs = _jobs(3, provider)
    for name in ("a", "b"):
        _run(Simulator(SimulatorConfig(seed=7)), jobs, tmp_path / name, provider, max_in_flight=1)
    for rel in ("batchvid.lock", "metadata.jsonl", "jobs/job-0/request.json"):
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel


def test_large_download_is_written_whole_through_the_writer_thread(tmp_path: Path) -> None:
    """A video larger than one write batch arrives complete, with the hash of its bytes."""
    size = (9 << 20) + 123
    sim = Simulator(SimulatorConfig(download_bytes=size))
    result, _, _ = _run(sim, _jobs(1), tmp_path / "out")
    video = result.outcomes[0].video
    assert result.exit_code == 0 and video is not None
    assert sha256_file(tmp_path / "out" / video["path"]) == (video["sha256"], size)


def test_budget_with_unknown_prices_is_refused_before_sending(tmp_path: Path) -> None:
    """--max-cost with a model of unknown price is a usage error and nothing is sent."""
    from batchvid.errors import UsageError

    sim = Simulator(SimulatorConfig())
    with pytest.raises(UsageError, match="needs a price for cogvideox-2"):
        _run(sim, _jobs(2, model="cogvideox-2"), tmp_path / "out", max_cost=1.0)
    assert sim.stats()["create_requests"] == 0


def test_a_create_in_flight_outlives_the_job_timeout(tmp_path: Path) -> None:
    """A job timeout never cuts off a create request: the task id it returns is recorded."""

    async def slow_create(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            await anyio.sleep(0.5)
            return httpx.Response(200, json={"id": "task-42", "request_id": "r",
                                             "model": "cogvideox-flash", "task_status": "PROCESSING"})
        return httpx.Response(200, json={"task_status": "PROCESSING", "model": "cogvideox-flash"})

    runner = Runner(make_manifest(_jobs(1, "bigmodel")),
                    _settings(tmp_path / "out", "bigmodel", timeout=0.1),
                    transport=httpx.MockTransport(slow_create))
    result = anyio.run(runner.run)
    outcome = result.outcomes[0]
    assert outcome.error is not None and outcome.error["kind"] == "timeout"
    assert outcome.task_id == "task-42"
    journal = (tmp_path / "out" / ".batchvid" / "journal.jsonl").read_text()
    assert '"task_id":"task-42"' in journal and '"event":"submitted"' in journal


@pytest.mark.parametrize("provider", ["geekai", "bigmodel"])
def test_after_an_account_stop_the_rerun_submits_the_refused_jobs(tmp_path: Path, provider: str) -> None:
    """Creates refused for arrears created nothing: once topped up, the rerun submits them."""
    sim = Simulator(SimulatorConfig())
    jobs = _jobs(3, provider)
    stopped, _, _ = _run(sim, jobs, tmp_path / "out", provider, api_key=KEY_ARREARS, max_in_flight=1)
    assert stopped.exit_code == 3
    resumed, _, _ = _run(sim, jobs, tmp_path / "out", provider)
    assert resumed.exit_code == 0, [o.error for o in resumed.outcomes]
    assert {o.status for o in resumed.outcomes} == {"succeeded"}


def test_a_gateway_timeout_on_a_geekai_create_is_not_resent(tmp_path: Path) -> None:
    """A 504 may hide a created task: on GeekAI (no idempotency key) the job is create_unconfirmed."""
    calls: list[str] = []

    def gateway(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        return httpx.Response(504, text="<html>504 Gateway Time-out</html>")

    runner = Runner(make_manifest(_jobs(1)), _settings(tmp_path / "out"), transport=httpx.MockTransport(gateway))
    result = anyio.run(runner.run)
    assert calls == ["POST"]
    assert (result.outcomes[0].error or {})["kind"] == "create_unconfirmed"


def test_a_refused_create_is_retried_but_a_gateway_timeout_on_bigmodel_keeps_its_request_id(
    tmp_path: Path,
) -> None:
    """On BigModel a 504 is asked again under the same request_id, which makes it safe."""
    bodies: list[dict[str, Any]] = []

    def flaky(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            bodies.append(json.loads(request.content))
            if len(bodies) == 1:
                return httpx.Response(504, text="gateway")
            return httpx.Response(200, json={"id": "t1", "request_id": bodies[-1]["request_id"],
                                             "model": "cogvideox-flash", "task_status": "PROCESSING"})
        return httpx.Response(200, json={"task_status": "FAIL", "model": "cogvideox-flash"})

    runner = Runner(make_manifest(_jobs(1, "bigmodel")), _settings(tmp_path / "out", "bigmodel"),
                    transport=httpx.MockTransport(flaky), sleep=_no_sleep)
    result = anyio.run(runner.run)
    assert len(bodies) == 2 and bodies[0]["request_id"] == bodies[1]["request_id"]
    assert (result.outcomes[0].error or {})["kind"] == "task_failed"


async def _no_sleep(seconds: float) -> None:
    await anyio.lowlevel.checkpoint()


def test_an_interrupt_does_not_wait_on_the_rate_limiter(tmp_path: Path) -> None:
    """Jobs queued behind the create-rate limit stop at once on interrupt, not after the grace."""
    import time

    sim = Simulator(SimulatorConfig(latency=30.0))
    collector = Collector()
    runner = Runner(make_manifest(_jobs(3)), _settings(tmp_path / "out", rpm=1, grace=30.0),
                    transport=httpx.ASGITransport(app=sim.app), subscribers=[collector])

    async def main() -> float:
        async with anyio.create_task_group() as tg:
            tg.start_soon(runner.run)
            while not any(isinstance(e, JobSubmitted) for e in collector.events):
                await anyio.sleep(0.01)
            started = time.monotonic()
            runner.interrupt("test")
        return time.monotonic() - started

    assert anyio.run(main) < 5.0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["summary"]["pending"] == 3


def test_report_cost_counts_the_tasks_created(tmp_path: Path) -> None:
    """report.json's cost is the price of the tasks this run created, with or without a budget."""
    sim = Simulator(SimulatorConfig())
    jobs = [make_job("a", 0, "bigmodel", model="cogvideox-3"),
            make_job("b", 1, "bigmodel", model="cogvideox-2"),
            make_job("c", 2, "bigmodel", model="cogvideox-2", prompt="no [unsafe]")]
    result, _, _ = _run(sim, jobs, tmp_path / "out", "bigmodel")
    assert result.report["cost"] == {"amount": 1.5, "currency": "CNY"}
    again, _, _ = _run(sim, jobs, tmp_path / "out", "bigmodel")
    assert again.report["cost"]["amount"] == 0.0


def test_swapping_two_job_ids_keeps_both_videos_without_requests(tmp_path: Path) -> None:
    """Renaming a <-> b moves each done video to its new id locally; nothing is lost or fetched."""
    sim = Simulator(SimulatorConfig())
    fox, whale = make_job("a", 0, prompt="a red fox"), make_job("b", 1, prompt="a blue whale")
    first, _, _ = _run(sim, [fox, whale], tmp_path / "out")
    sha = {o.job.key: o.video["sha256"] for o in first.outcomes if o.video}
    swapped = [make_job("b", 0, prompt="a red fox"), make_job("a", 1, prompt="a blue whale")]
    result, transport, _ = _run(sim, swapped, tmp_path / "out")
    assert result.exit_code == 0 and transport.requests == []
    for o in result.outcomes:
        assert sha256_file(tmp_path / "out" / "jobs" / o.job.id / "video.mp4")[0] == sha[o.job.key]
    assert not (tmp_path / "out" / ".batchvid" / "relocate").exists()
    assert _run(sim, swapped, tmp_path / "out")[0].exit_code == 0


def test_only_keeps_other_done_jobs_in_lock_and_index(tmp_path: Path) -> None:
    """A run with --only still pins and indexes the manifest's other done videos."""
    sim = Simulator(SimulatorConfig())
    jobs = _jobs(4)
    _run(sim, jobs, tmp_path / "out")
    result, transport, _ = _run(sim, jobs, tmp_path / "out", only=("job-1",), force=True)
    assert [r.method for r in transport.requests].count("POST") == 1
    assert [o.status for o in result.outcomes] == ["skipped", "succeeded", "skipped", "skipped"]
    lock = json.loads((tmp_path / "out" / "batchvid.lock").read_text())
    assert sorted(lock["jobs"]) == [j.id for j in jobs]
    rows = (tmp_path / "out" / "metadata.jsonl").read_text().splitlines()
    assert len(rows) == 4
    from batchvid.verify import verify_dir

    assert verify_dir(tmp_path / "out")[0] == []


def _journal_states(out: Path) -> dict[str, str]:
    from batchvid.store import read_records

    return {r.id: r.state for r in read_records(out).values()}


def test_a_maybe_created_bigmodel_task_is_never_marked_refused(tmp_path: Path) -> None:
    """After a 504 (maybe created), a later clear refusal does not let the next run pay again."""
    answers = iter([httpx.Response(504, text="gateway"),
                    httpx.Response(429, json={"error": {"code": "1113", "message": "arrears"}})])

    def server(request: httpx.Request) -> httpx.Response:
        return next(answers)

    runner = Runner(make_manifest(_jobs(1, "bigmodel")), _settings(tmp_path / "out", "bigmodel"),
                    transport=httpx.MockTransport(server), sleep=_no_sleep)
    assert anyio.run(runner.run).exit_code == 3
    assert _journal_states(tmp_path / "out") == {"job-0": "submitting"}


def test_a_connection_that_never_opened_created_nothing(tmp_path: Path) -> None:
    """A connect error is journaled as refused, so after a stop the job is submitted again."""

    async def server(request: httpx.Request) -> httpx.Response:
        if json.loads(request.content)["prompt"] == "prompt of job-0":
            raise httpx.ConnectError("connection refused")
        await anyio.sleep(0.05)
        return httpx.Response(402, json={"error": {"code": 402, "message": "top up"}})

    async def short_sleep(seconds: float) -> None:
        await anyio.sleep(0.2)

    runner = Runner(make_manifest(_jobs(2)), _settings(tmp_path / "out"),
                    transport=httpx.MockTransport(server), sleep=short_sleep)
    assert anyio.run(runner.run).exit_code == 3
    assert _journal_states(tmp_path / "out")["job-0"] == "refused"


def test_the_budget_counts_a_create_that_may_have_been_billed(tmp_path: Path) -> None:
    """A create_unconfirmed job keeps its share of --max-cost: no extra creates are sent."""
    posts: list[str] = []

    def server(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            posts.append(request.url.path)
            if len(posts) == 1:
                return httpx.Response(504, text="gateway")
            return httpx.Response(200, json={"task_id": f"t{len(posts)}", "task_status": "failed"})
        return httpx.Response(200, json={"task_id": "x", "task_status": "failed"})

    manifest = make_manifest(_jobs(4), pricing={"cogvideox-flash": 1.0})
    runner = Runner(manifest, _settings(tmp_path / "out", max_cost=2.0, max_in_flight=1),
                    transport=httpx.MockTransport(server))
    anyio.run(runner.run)
    assert len(posts) == 2


def test_only_never_overwrites_a_renamed_jobs_video(tmp_path: Path) -> None:
    """A new job taking a renamed job's old id under --only leaves the old video to be moved."""
    sim = Simulator(SimulatorConfig())
    _run(sim, [make_job("intro", 0, prompt="a fox")], tmp_path / "out")
    renamed = [make_job("intro-fox", 0, prompt="a fox"), make_job("intro", 1, prompt="a whale")]
    _run(sim, renamed, tmp_path / "out", only=("intro",))
    result, transport, _ = _run(sim, renamed, tmp_path / "out")
    assert result.exit_code == 0 and transport.requests == []
    assert [o.status for o in result.outcomes] == ["succeeded", "skipped"]


def test_an_unanswered_create_from_an_earlier_run_is_never_marked_refused(tmp_path: Path) -> None:
    """A refusal after a crash mid-create keeps the old request id, so BigModel cannot bill twice."""
    job = _jobs(1, "bigmodel")[0]
    journal = tmp_path / "out" / ".batchvid" / "journal.jsonl"
    journal.parent.mkdir(parents=True)
    journal.write_text(json.dumps({"event": "submitting", "key": job.key, "id": job.id,
                                   "request_id": f"bv-{job.key[:32]}"}) + "\n")
    sent: list[str] = []

    def server(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content)["request_id"])
        return httpx.Response(429, json={"error": {"code": "1113", "message": "arrears"}})

    for _ in range(2):
        runner = Runner(make_manifest([job]), _settings(tmp_path / "out", "bigmodel"),
                        transport=httpx.MockTransport(server))
        assert anyio.run(runner.run).exit_code == 3
    assert sent == [f"bv-{job.key[:32]}"] * 2
    assert _journal_states(tmp_path / "out") == {"job-0": "submitting"}


def test_rerun_trusts_an_unchanged_video_and_rehashes_a_changed_one(tmp_path: Path) -> None:
    """A succeeded job journals its video's size, mtime_ns and inode; a rerun skips an unchanged
    video without reading it, and one rewritten at the same size is hashed and fetched again."""
    from unittest import mock

    from batchvid import store, videocheck
    from batchvid.durable import file_stat

    sim = Simulator(SimulatorConfig())
    jobs = _jobs(2)
    out = tmp_path / "out"
    _run(sim, jobs, out)
    records = {r.id: r for r in store.read_records(out).values()}
    video = out / "jobs" / "job-1" / "video.mp4"
    assert records["job-1"].stat == file_stat(video)
    data = video.read_bytes()
    video.write_bytes(bytes([data[0] ^ 1]) + data[1:])  # same size, same inode
    if file_stat(video) == records["job-1"].stat:  # within the clock's tick: as a later edit would be
        mtime = os.stat(video).st_mtime_ns + 1_000_000
        os.utime(video, ns=(mtime, mtime))
    with mock.patch.object(videocheck, "_hash", wraps=videocheck._hash) as hashed:
        result, transport, _ = _run(sim, jobs, out)
    assert [Path(call.args[0]) for call in hashed.call_args_list] == [video]
    assert [o.status for o in result.outcomes] == ["skipped", "succeeded"]
    assert len(transport.requests) > 0 and video.read_bytes() == data


def test_run_result_repr_stays_short_however_many_jobs() -> None:
    """repr(RunResult) does not list the outcomes: asyncio formats it when the run ends."""
    from batchvid.report import Outcome
    from batchvid.runner import RunResult

    outcomes = [Outcome(make_job(f"job-{i}", i), "skipped", "skip") for i in range(2000)]
    text = repr(RunResult(0, outcomes, {"jobs": []}, None))
    assert text == "RunResult(exit_code=0, jobs=2000, stopped=None)"


def test_a_rerun_with_nothing_to_send_never_imports_the_http_stack(tmp_path: Path) -> None:
    """Running a finished directory again (every job skipped) loads neither httpx nor the
    providers, the job-driving modules or the prompt rewrites (checked in a fresh interpreter)."""
    import subprocess
    import sys

    from batchvid.manifest import load_manifest
    from batchvid.simulator import GEEKAI_PREFIX, SimulatorConfig, running_simulator

    out, path = tmp_path / "out", tmp_path / "m.yaml"
    path.write_text("version: 1\nname: t\nprovider: geekai\ndefaults:\n  model: cogvideox-flash\n"
                    "jobs:\n  - id: a\n    prompt: a fox\n")
    with running_simulator(SimulatorConfig(latency=0.0, video_seconds=0.5, max_side=64)) as sim:
        settings = Settings(out_dir=out, base_url=sim.base_url + GEEKAI_PREFIX, api_key="sk-test",
                            poll_min=0.05, poll_max=0.1, rpm=None, transport="httpx")
        assert anyio.run(Runner(load_manifest(path), settings).run).exit_code == 0
    code = f"""
import sys, anyio
from pathlib import Path
from batchvid.manifest import load_manifest
from batchvid.runner import Runner, Settings
manifest = load_manifest(Path({str(path)!r}))
result = anyio.run(Runner(manifest, Settings(out_dir=Path({str(out)!r}), api_key="sk-test")).run)
assert [o.status for o in result.outcomes] == ["skipped"], result.outcomes
print([m for m in ("httpx", "batchvid.providers", "batchvid.drive", "batchvid.enhancing") if m in sys.modules])
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).parent.parent)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "[]"


def test_the_run_imports_httpx_without_its_command_line_tool() -> None:
    """``_import_httpx`` leaves out httpx's CLI (click, rich, pygments), and ``httpx._main``
    can still be imported afterwards."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from batchvid.runner import _import_httpx\n"
        "_import_httpx()\n"
        "print(sorted(m for m in ('click', 'rich', 'pygments', 'httpx._main') if m in sys.modules))\n"
        "import httpx._main\n"
        "print(httpx._main.__name__)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines() == ["[]", "httpx._main"]


def test_a_run_that_owns_its_process_ends_its_analysis_workers_with_the_report(tmp_path: Path) -> None:
    """With ``owns_process`` (the CLI), the analysis workers have exited when ``run`` returns,
    their clips analysed; without it they stay for the process's next run."""
    from batchvid import media_pool

    sim = Simulator(SimulatorConfig())
    for owns, workers_left in ((False, True), (True, False)):
        runner = Runner(make_manifest(_jobs(2)), _settings(tmp_path / f"out-{owns}"),
                        transport=httpx.ASGITransport(app=sim.app), owns_process=owns)
        result = anyio.run(runner.run)
        assert result.exit_code == 0 and all(o.media for o in result.outcomes)
        idle = list(media_pool._pool._idle)
        assert bool(idle) is workers_left
        assert all(worker._process.poll() is None for worker in idle)


def test_a_run_without_enhanced_jobs_leaves_the_rewrite_modules_unloaded(tmp_path: Path) -> None:
    """The prompt-rewrite modules (``batchvid.enhancing``, ``batchvid.enhance``: ~10 regexes
    compiled at import) are loaded only by a run that has an enhanced job."""
    import subprocess
    import sys

    code = (
        "import sys, anyio, httpx\n"
        "from pathlib import Path\n"
        "from batchvid.runner import Runner, Settings\n"
        "from tests.helpers import make_job, make_manifest\n"
        "def server(request):\n"
        "    if request.method == 'POST':\n"
        "        return httpx.Response(200, json={'id': 't1', 'request_id': 'r', 'task_status': 'PROCESSING'})\n"
        "    return httpx.Response(200, json={'task_status': 'FAIL'})\n"
        f"settings = Settings(out_dir=Path({str(tmp_path / 'out')!r}), provider='bigmodel', "
        "base_url='http://sim/api/paas/v4', api_key='test-secret-key-1234567890', rpm=None, "
        "poll_min=0.01, poll_max=0.02)\n"
        "runner = Runner(make_manifest([make_job('j1', provider='bigmodel')]), settings, "
        "transport=httpx.MockTransport(server))\n"
        "assert anyio.run(runner.run).outcomes[0].error['kind'] == 'task_failed'\n"
        "print(sorted(m for m in sys.modules if m.startswith('batchvid.enhanc')))\n"
    )
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["[]"]
