"""Sending a create: what is on disk before it leaves, and how its preparation fails."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from batchvid.offload import alongside
from batchvid.runner import Runner, Settings
from tests.helpers import make_job, make_manifest


def _run_one_failing_task(out: Path, on_create: Callable[[], None] | None = None) -> None:
    """Run one BigModel job into ``out`` whose create is accepted and whose task then fails;
    ``on_create`` is called as the create request arrives."""

    def server(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            if on_create is not None:
                on_create()
            return httpx.Response(200, json={"id": "t1", "request_id": "r", "model": "cogvideox-flash",
                                             "task_status": "PROCESSING"})
        return httpx.Response(200, json={"task_status": "FAIL", "model": "cogvideox-flash"})

    settings = Settings(out_dir=out, provider="bigmodel", base_url="http://sim/api/paas/v4",
                        api_key="test-secret-key-1234567890", rpm=None, poll_min=0.01, poll_max=0.05)
    runner = Runner(make_manifest([make_job("j1", provider="bigmodel")]), settings,
                    transport=httpx.MockTransport(server))
    anyio.run(runner.run)


def test_request_json_and_the_journal_line_are_on_disk_before_the_create_leaves(tmp_path: Path) -> None:
    """When the create request is sent, request.json holds its body and the journal already
    says the job is submitting (made together, both finished first)."""
    out = tmp_path / "out"
    seen: list[tuple[dict[str, object], bool]] = []

    def on_create() -> None:
        recorded = json.loads((out / "jobs" / "j1" / "request.json").read_text())
        journal = (out / ".batchvid" / "journal.jsonl").read_text()
        seen.append((recorded, '"event":"submitting"' in journal))

    _run_one_failing_task(out, on_create)
    assert len(seen) == 1
    recorded, journaled = seen[0]
    assert recorded["prompt"] == "prompt of j1"
    assert journaled


def test_request_json_is_written_in_the_hop_that_fsyncs_its_submitting_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job's folder and request.json are made by the worker thread that next fsyncs the
    journal (for the job's ``submitting`` line), just before that fsync: no thread hop of
    their own."""
    import os
    import threading

    import batchvid.offload
    import batchvid.submit

    out = tmp_path / "out"
    journal = out / ".batchvid" / "journal.jsonl"
    done: list[tuple[str, int]] = []
    write_request, fsync = batchvid.submit._write_request, os.fsync

    def traced_write(*args: Any) -> None:
        write_request(*args)
        done.append(("request.json", threading.get_ident()))

    def traced_fsync(fd: int) -> None:
        fsync(fd)
        if journal.exists() and os.path.samestat(os.fstat(fd), os.stat(journal)):
            done.append(("journal", threading.get_ident()))

    monkeypatch.setattr(batchvid.submit, "_write_request", traced_write)
    monkeypatch.setattr(os, "fsync", traced_fsync)
    hand, hops = batchvid.offload._hand, []

    def traced_hand(item: Any) -> None:  # what each thread hop was given to run
        fn, args = item[2], item[3]
        riders = [rider.fn for rider in args[0]] if fn is batchvid.offload._carrying else []
        hops.append((args[1] if riders else fn, riders))
        hand(item)

    monkeypatch.setattr(batchvid.offload, "_hand", traced_hand)

    _run_one_failing_task(out)
    at = [what for what, _ in done].index("request.json")
    (_, writer), (after, syncer) = done[at], done[at + 1]
    assert after == "journal" and writer == syncer != threading.get_ident()
    assert [hop for hop in hops if traced_write in hop[1] or hop[0] is traced_write] == [(traced_fsync, [traced_write])]
    assert json.loads((out / "jobs" / "j1" / "request.json").read_text())["prompt"] == "prompt of j1"


def test_a_failed_turn_raises_its_own_error_after_the_request_write_ends() -> None:
    """The create's turn failing comes out as its own error (no exception group, not the
    write's), once the request.json write beside it has ended."""
    import time

    finished: list[str] = []

    async def fails() -> None:
        raise OSError("no space left")

    def slow_write() -> None:
        time.sleep(0.05)
        finished.append("written")
        raise ValueError("the write's error")

    with pytest.raises(OSError, match="no space left"):
        anyio.run(alongside, fails, slow_write)
    assert finished == ["written"]


def test_a_failed_request_write_raises_once_the_turn_is_done() -> None:
    """When only the write fails, its error comes out after the turn has ended."""
    turned: list[str] = []

    async def turn() -> None:
        await anyio.sleep(0.01)
        turned.append("turn")

    def fails() -> None:
        raise PermissionError("jobs/ is read-only")

    with pytest.raises(PermissionError, match="read-only"):
        anyio.run(alongside, turn, fails)
    assert turned == ["turn"]


def _held_first_task(
    tmp_path: Path, provider: str, running: str, ended: str, **settings: Any
) -> tuple[list[bool], list[int]]:
    """Three jobs at --max-in-flight 1; the first task keeps running until the journal holds
    the second job's ``submitting`` line (or 100 polls). Returns, per poll of the first task,
    whether it did, and the creates sent by then."""
    out = tmp_path / "out"
    creates: list[str] = []
    seen: list[bool] = []
    polls: list[int] = []

    def server(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            creates.append(json.loads(request.content)["prompt"])
            return httpx.Response(200, json={"id": f"t{len(creates)}", "task_id": f"t{len(creates)}",
                                             "request_id": "r", "model": "cogvideox-flash",
                                             "task_status": running})
        if "t1" in request.url.path.split("/") and not (seen and seen[-1]) and len(seen) < 100:
            journal = (out / ".batchvid" / "journal.jsonl").read_text()
            seen.append('"id":"j2"' in journal)
            polls.append(len(creates))
            return httpx.Response(200, json={"task_id": "t1", "task_status": running, "model": "cogvideox-flash"})
        return httpx.Response(200, json={"task_id": "t", "task_status": ended, "model": "cogvideox-flash"})

    base = {"bigmodel": "http://sim/api/paas/v4", "geekai": "http://sim/v1"}[provider]
    config = Settings(out_dir=out, provider=provider, base_url=base, api_key="test-secret-key-1234567890",
                        rpm=None, poll_min=0.01, poll_max=0.02, max_in_flight=1, **settings)
    jobs = [make_job(f"j{i}", i - 1, provider) for i in (1, 2, 3)]
    anyio.run(Runner(make_manifest(jobs), config, transport=httpx.MockTransport(server)).run)
    assert sorted(creates) == ["prompt of j1", "prompt of j2", "prompt of j3"]
    return seen, polls


def test_bigmodel_journals_the_next_create_while_it_waits_for_a_slot(tmp_path: Path) -> None:
    """On BigModel the next job's ``submitting`` line is on disk while the only slot is still
    held by the first task, and its create waits for the slot all the same."""
    seen, polls = _held_first_task(tmp_path, "bigmodel", "PROCESSING", "FAIL")
    assert seen[-1], "the second job's line was never journaled while the first task ran"
    assert set(polls) == {1}


def test_geekai_journals_no_create_before_its_slot(tmp_path: Path) -> None:
    """On GeekAI (no idempotency key) a job waiting for its slot has no ``submitting`` line: a
    crash then leaves no unanswered create for a request never sent."""
    seen, polls = _held_first_task(tmp_path, "geekai", "processing", "failed")
    assert len(seen) == 100 and not any(seen)
    assert set(polls) == {1}


def test_a_bigmodel_create_journaled_ahead_and_never_sent_is_sent_next_run_under_its_request_id(
    tmp_path: Path,
) -> None:
    """A run stopped while jobs waited ahead for a slot leaves their ``submitting`` lines with
    no create sent; the next run sends each once, under the journaled request id, and
    re-attaches the task that exists."""
    from batchvid.journal import read_entries

    out = tmp_path / "out"
    sent: list[list[str]] = [[], []]
    runs: list[Runner] = []

    def server(request: httpx.Request) -> httpx.Response:
        creates = sent[len(runs) - 1]
        if request.method == "POST":
            body = json.loads(request.content)
            creates.append(body["request_id"])
            return httpx.Response(200, json={"id": body["prompt"], "request_id": body["request_id"],
                                             "model": "cogvideox-flash", "task_status": "PROCESSING"})
        journal = (out / ".batchvid" / "journal.jsonl").read_text()
        if len(runs) == 1 and '"id":"j2"' in journal:
            runs[0].interrupt("stop")  # j2 (and maybe j3) journaled, their creates not sent
        status = "PROCESSING" if len(runs) == 1 else "FAIL"
        return httpx.Response(200, json={"task_status": status, "model": "cogvideox-flash"})

    settings = Settings(out_dir=out, provider="bigmodel", base_url="http://sim/api/paas/v4",
                        api_key="test-secret-key-1234567890", rpm=None, poll_min=0.01,
                        poll_max=0.02, max_in_flight=1)
    jobs = [make_job(f"j{i}", i - 1, "bigmodel") for i in (1, 2, 3)]
    for _ in range(2):
        runs.append(Runner(make_manifest(jobs), settings, transport=httpx.MockTransport(server)))
        result = anyio.run(runs[-1].run)
        if len(runs) == 1:
            assert result.exit_code == 3
    lines = [e for e in read_entries(out / ".batchvid" / "journal.jsonl") if e.EVENT == "submitting"]
    assert [e.id for e in lines].count("j2") == 2  # run 1 journaled it ahead; run 2 before sending
    journaled = {e.id: e.request_id for e in lines}
    first = f"bv-{jobs[0].key[:32]}"
    assert sent[0] == [first]
    assert sorted(sent[1]) == sorted([journaled["j2"], journaled["j3"]])
    assert journaled["j2"] == f"bv-{jobs[1].key[:32]}"
    assert [o.status for o in result.outcomes] == ["failed"] * 3  # each task ended FAIL, none twice
    assert result.outcomes[0].task_id == "prompt of j1"


def test_bigmodel_journals_no_create_before_its_slot_under_max_cost(tmp_path: Path) -> None:
    """Under --max-cost the budget admits BigModel jobs as they take their slots, as before: no
    ``submitting`` line is written while a job waits for one."""
    seen, polls = _held_first_task(tmp_path, "bigmodel", "PROCESSING", "FAIL", max_cost=10.0)
    assert len(seen) == 100 and not any(seen)
    assert set(polls) == {1}


def test_bigmodel_jobs_journaled_ahead_send_their_creates_in_manifest_order(tmp_path: Path) -> None:
    """Jobs that get ready while they wait for a slot still take the slots, and send their
    creates, in the order they were admitted (the manifest's)."""
    creates: list[str] = []

    def server(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            creates.append(json.loads(request.content)["prompt"])
            return httpx.Response(200, json={"id": f"t{len(creates)}", "request_id": "r",
                                             "model": "cogvideox-flash", "task_status": "PROCESSING"})
        return httpx.Response(200, json={"task_status": "FAIL", "model": "cogvideox-flash"})

    config = Settings(out_dir=tmp_path / "out", provider="bigmodel", base_url="http://sim/api/paas/v4",
                      api_key="test-secret-key-1234567890", rpm=None, poll_min=0.01, poll_max=0.02,
                      max_in_flight=2)
    jobs = [make_job(f"j{i}", i, "bigmodel") for i in range(12)]
    anyio.run(Runner(make_manifest(jobs), config, transport=httpx.MockTransport(server)).run)
    assert creates == [f"prompt of j{i}" for i in range(12)]


def test_a_create_journaled_ahead_and_never_sent_counts_no_attempt(tmp_path: Path) -> None:
    """report.json's attempts count the creates sent: a BigModel job stopped while it waited
    ahead for a slot, its ``submitting`` line journaled, has none."""
    out = tmp_path / "out"
    polls: list[int] = []
    runs: list[Runner] = []

    def server(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            body = json.loads(request.content)
            return httpx.Response(200, json={"id": "t1", "request_id": body["request_id"],
                                             "model": "cogvideox-flash", "task_status": "PROCESSING"})
        polls.append(1)
        if '"id":"j3"' in (out / ".batchvid" / "journal.jsonl").read_text() or len(polls) > 100:
            runs[0].interrupt("stop")
        return httpx.Response(200, json={"task_status": "PROCESSING", "model": "cogvideox-flash"})

    settings = Settings(out_dir=out, provider="bigmodel", base_url="http://sim/api/paas/v4",
                        api_key="test-secret-key-1234567890", rpm=None, poll_min=0.01,
                        poll_max=0.02, max_in_flight=1)
    jobs = [make_job(f"j{i}", i - 1, "bigmodel") for i in (1, 2, 3)]
    runs.append(Runner(make_manifest(jobs), settings, transport=httpx.MockTransport(server)))
    assert anyio.run(runs[0].run).exit_code == 3
    timing = json.loads((out / "report.json").read_text())["timing"]["jobs"]
    assert '"id":"j3"' in (out / ".batchvid" / "journal.jsonl").read_text()
    assert {job: timing[job]["attempts"] for job in timing} == {"j1": 1, "j2": 0, "j3": 0}


def test_an_enhanced_bigmodel_job_waiting_for_its_slot_asks_its_rewrite_within_timeout(tmp_path: Path) -> None:
    """A BigModel job whose prompt is rewritten asks for it after it has its slot, within
    --timeout: a chat answer that never comes ends the job as ``timeout``."""
    from batchvid.enhance.settings import EnhanceSettings

    async def server(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("chat/completions"):
            await anyio.sleep(20)
        return httpx.Response(500)

    settings = Settings(out_dir=tmp_path / "out", provider="bigmodel", base_url="http://sim/api/paas/v4",
                        api_key="test-secret-key-1234567890", rpm=None, poll_min=0.01,
                        poll_max=0.02, timeout=0.5, retries=0)
    job = dataclasses.replace(make_job("j1", 0, "bigmodel"), enhance=EnhanceSettings("glm-4-flash", "Rewrite it.", "inline"))
    result = anyio.run(Runner(make_manifest([job]), settings, transport=httpx.MockTransport(server)).run)
    assert [(o.status, (o.error or {}).get("kind")) for o in result.outcomes] == [("failed", "timeout")]


def test_a_tasks_age_counts_from_its_create_answer_not_from_its_journal_fsync(tmp_path: Path) -> None:
    """Submitter.create gives the clock time its create was answered: a slow fsync of the
    ``submitted`` line after it (5 s here) is not counted as the task's time by the polls."""
    from batchvid.events import Effects
    from batchvid.providers.base import TaskResult
    from batchvid.ratelimit import AdaptiveLimit, RateLimiter
    from batchvid.retry import RetryPolicy
    from batchvid.stopping import Stopper
    from batchvid.submit import Submitter

    now = [100.0]

    class Provider:
        name, idempotent = "bigmodel", True

        async def create(self, api: object, job: object, *, request_id: str | None) -> TaskResult:
            now[0] += 1.0  # the request's round trip
            return TaskResult("t1", "running", {})

        def request_id(self, job: object, generation: int) -> str:
            return "bv-1"

    class Life:
        job = make_job("j1", provider="bigmodel")

        def sending(self) -> None:
            pass

        async def submitted(self, task_id: str) -> None:
            now[0] += 5.0  # a slow fsync

    async def sleep(seconds: float) -> None:
        now[0] += seconds

    fx = Effects(lambda event: None, lambda text: text, lambda: now[0], sleep, None)  # type: ignore[arg-type]
    stopper = Stopper(lambda event: None, lambda text: text, 1.0)
    submitter = Submitter(Provider(), None, tmp_path, RateLimiter(None), AdaptiveLimit(1),  # type: ignore[arg-type]
                          RetryPolicy(0), stopper, fx)
    task, answered = anyio.run(lambda: submitter.create(Life(), None, journaled=True))  # type: ignore[arg-type]
    assert task.task_id == "t1"
    assert (answered, now[0]) == (101.0, 106.0)
