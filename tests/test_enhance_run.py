"""Prompt enhancement through the real runner and the in-process simulator: what is sent, what
is recorded, and that a recorded rewrite is never asked for again."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import jsonschema
import pytest

from batchvid.cli import main
from batchvid.display import JsonLog
from batchvid.errors import UsageError
from batchvid.jobs import Manifest
from batchvid.journal import Enhanced, read_entries
from batchvid.manifest import load_manifest
from batchvid.merge import merge_dirs
from batchvid.plantable import plan_to_json
from batchvid.runner import Runner, Settings, plan_for
from batchvid.simulator import (
    BIGMODEL_PREFIX,
    GEEKAI_PREFIX,
    Simulator,
    SimulatorConfig,
    running_simulator,
)
from batchvid.store import read_records
from tests import helpers
from tests.test_drill_crash import RUN_TIMEOUT, run_command
from tests.test_hostile_servers import HOST, fast_sleep
from tests.test_secrets import KEY as ECHO_KEY
from tests.test_secrets import Echo, leaks

ROOT = Path(__file__).resolve().parent.parent
KEY = "test-secret-key-1234567890"
REPORT_SCHEMA = json.loads((ROOT / "schemas" / "report.schema.json").read_text())
LIMIT = 512


class Recording(helpers.Recording):
    """Passes requests to another transport and keeps them; reads back the creates."""

    def creates(self) -> list[dict[str, Any]]:
        """The bodies of the video create requests sent."""
        return [
            json.loads(r.content)
            for r in self.requests
            if r.method == "POST" and not r.url.path.endswith("chat/completions")
        ]


def write_manifest(directory: Path, body: str, provider: str = "geekai") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "m.yaml"
    path.write_text(f"version: 1\nprovider: {provider}\n{body}", encoding="utf-8")
    return path


FOX = """\
defaults:
  model: cogvideox-flash
  enhance: {model: glm-4-flash}
jobs:
  - id: fox
    prompt: a fox in the snow
  - id: exact
    prompt: a red fox at dawn
    enhance: false
"""


def settings(out: Path, provider: str = "geekai", **kw: Any) -> Settings:
    prefix = GEEKAI_PREFIX if provider == "geekai" else BIGMODEL_PREFIX
    base: dict[str, Any] = dict(
        out_dir=out, provider=provider, base_url=f"http://sim{prefix}", api_key=KEY,
        max_in_flight=4, rpm=None, retries=3, timeout=60.0, poll_min=0.01, poll_max=0.05,
    )  # fmt: skip
    base.update(kw)
    return Settings(**base)


def run(sim: Simulator, manifest: Manifest, out: Path, **kw: Any) -> tuple[Any, Recording]:
    transport = Recording(httpx.ASGITransport(app=sim.app))
    runner = Runner(manifest, settings(out, manifest.provider, **kw), transport=transport)
    return anyio.run(runner.run), transport


def events(out: Path) -> list[tuple[str, str]]:
    return [(e.EVENT, e.id) for e in read_entries(out / ".batchvid" / "journal.jsonl")]


@pytest.mark.parametrize("provider", ["geekai", "bigmodel"])
def test_run_sends_the_rewrite_and_records_both_prompts(tmp_path: Path, provider: str) -> None:
    """The create and request.json carry the rewrite; metadata, report and lock keep both
    prompts for the enhanced job only; the rewrite is journaled before the create."""
    manifest = load_manifest(write_manifest(tmp_path, FOX, provider))
    sim, out = Simulator(SimulatorConfig()), tmp_path / "out"
    result, transport = run(sim, manifest, out)
    assert result.exit_code == 0 and sim.stats()["chat_requests"] == 1
    sent = {body["prompt"] for body in transport.creates()}
    (rewrite,) = sent - {"a red fox at dawn"}
    assert rewrite != "a fox in the snow" and rewrite.lower().startswith("a fox in the snow")
    assert json.loads((out / "jobs" / "fox" / "request.json").read_text())["prompt"] == rewrite
    report = json.loads((out / "report.json").read_text())
    jsonschema.Draft202012Validator(REPORT_SCHEMA).validate(report)
    fox, exact = report["jobs"]
    assert (fox["prompt"], fox["prompt_original"]) == (rewrite, "a fox in the snow")
    assert fox["enhance"]["status"] == "enhanced" and fox["enhance"]["requests"] == 1
    assert fox["parameters"]["prompt"] == "a fox in the snow"  # the key's request, as written
    assert not {"prompt", "prompt_original", "enhance"} & set(exact)
    assert report["enhance"]["jobs"] == 1 and report["enhance"]["requests"] == 1
    rows = {r["id"]: r for r in map(json.loads, (out / "metadata.jsonl").read_text().splitlines())}
    assert (rows["fox"]["prompt"], rows["fox"]["prompt_original"]) == (rewrite, "a fox in the snow")
    assert "prompt_original" not in rows["exact"]
    lock = json.loads((out / "batchvid.lock").read_text())["jobs"]
    assert (lock["fox"]["prompt"], lock["fox"]["prompt_original"]) == (rewrite, "a fox in the snow")
    assert set(lock["exact"]) == {"key", "task_id", "sha256", "poster"}
    fox_events = [event for event, job in events(out) if job == "fox"]
    assert fox_events.index("enhanced") < fox_events.index("submitting")
    assert "a fox in the snow" in (out / "report.md").read_text()


def test_rerun_makes_no_chat_request_and_keeps_both_prompts(tmp_path: Path) -> None:
    """A finished directory run again sends nothing, chat included, and reports the same."""
    manifest = load_manifest(write_manifest(tmp_path, FOX))
    sim, out = Simulator(SimulatorConfig()), tmp_path / "out"
    run(sim, manifest, out)
    first = json.loads((out / "report.json").read_text())
    lock = (out / "batchvid.lock").read_bytes()
    result, transport = run(sim, manifest, out)
    assert transport.requests == [] and sim.stats()["chat_requests"] == 1
    second = json.loads((out / "report.json").read_text())
    assert {o.status for o in result.outcomes} == {"skipped"}
    kept = ("prompt", "prompt_original", "enhance")
    assert [{k: j.get(k) for k in kept} for j in second["jobs"]] == [
        {k: j.get(k) for k in kept} for j in first["jobs"]
    ]
    assert second["enhance"] == first["enhance"]
    assert (out / "batchvid.lock").read_bytes() == lock


class Crash(BaseException):
    """Stands for the process dying at this point."""


class CrashOnCreate(httpx.AsyncBaseTransport):
    """The simulator, but the process dies as the first video create leaves."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and not request.url.path.endswith("chat/completions"):
            raise Crash
        return await self.inner.handle_async_request(request)


def test_resume_after_a_crash_before_the_create_asks_nothing_again(tmp_path: Path) -> None:
    """Killed between the journaled rewrite and the create's answer, the next run resends the
    create with the same rewrite and makes no chat request."""
    manifest = load_manifest(write_manifest(tmp_path, FOX, "bigmodel"))
    sim, out = Simulator(SimulatorConfig()), tmp_path / "out"
    runner = Runner(manifest, settings(out, "bigmodel", max_in_flight=1),
                    transport=CrashOnCreate(httpx.ASGITransport(app=sim.app)))  # fmt: skip
    with pytest.raises(BaseException) as crashed:
        anyio.run(runner.run)
    assert crashed.group_contains(Crash) if isinstance(crashed.value, BaseExceptionGroup) else crashed.type is Crash
    assert sim.stats()["chat_requests"] == 1 and sim.stats()["create_requests"] == 0
    records = read_records(out)
    stored = next(r for r in records.values() if r.id == "fox").enhanced
    assert stored is not None
    result, transport = run(sim, manifest, out)
    assert result.exit_code == 0 and sim.stats()["chat_requests"] == 1
    assert stored["prompt"] in {body["prompt"] for body in transport.creates()}


def test_interrupted_run_resumes_without_chat_requests(tmp_path: Path) -> None:
    """A run interrupted once every task is submitted resumes with zero chat requests."""
    body = FOX.replace("jobs:\n", "jobs:\n  - id: owl\n    prompt: an owl at night\n")
    manifest = load_manifest(write_manifest(tmp_path, body))
    sim, out = Simulator(SimulatorConfig(latency=1.0)), tmp_path / "out"
    runner: Runner

    def on_event(event: object) -> None:
        if type(event).__name__ == "JobSubmitted" and len(read_records(out)) == 3:
            runner.interrupt("test interrupt")

    runner = Runner(manifest, settings(out), transport=httpx.ASGITransport(app=sim.app),
                    subscribers=[on_event])  # fmt: skip
    first = anyio.run(runner.run)
    assert first.exit_code == 3 and sim.stats()["chat_requests"] == 2
    result, transport = run(sim, manifest, out, timeout=120.0)
    assert sim.stats()["chat_requests"] == 2
    assert not any(r.url.path.endswith("chat/completions") for r in transport.requests)
    assert result.exit_code == 0


INSTRUCTED = """\
defaults:
  model: cogvideox-flash
  enhance: {instructions: style.txt}
jobs:
  - id: a
    prompt: a fox in the snow
  - id: b
    prompt: an owl at night
  - id: c
    prompt: a cat on a roof
    enhance: {instructions: Describe it plainly.}
  - id: d
    prompt: a dog on a beach
    enhance: false
"""


def test_editing_the_instructions_reruns_only_the_jobs_they_cover(tmp_path: Path) -> None:
    """Editing the instructions file plans a submit (with a rewrite) for its jobs only; moving
    the file without changing it plans nothing."""
    (tmp_path / "style.txt").write_text("Be vivid.\n", encoding="utf-8")
    path = write_manifest(tmp_path, INSTRUCTED)
    sim, out = Simulator(SimulatorConfig()), tmp_path / "out"
    run(sim, load_manifest(path), out)
    (tmp_path / "style.txt").write_text("Be vivid and precise.\n", encoding="utf-8")
    manifest = load_manifest(path)
    plan = plan_for(manifest, settings(out), read_records(out))
    assert {s.job.id: (s.action, s.enhance) for s in plan.steps} == {
        "a": ("submit", True), "b": ("submit", True), "c": ("skip", False), "d": ("skip", False),
    }  # fmt: skip
    assert [j["id"] for j in plan_to_json(plan, 4, None)["jobs"] if j.get("enhance")] == ["a", "b"]
    result, _ = run(sim, manifest, out)
    assert [o.status for o in result.outcomes] == ["succeeded", "succeeded", "skipped", "skipped"]
    assert sim.stats()["chat_requests"] == 3 + 2
    (tmp_path / "style.txt").rename(tmp_path / "house.txt")
    path.write_text(path.read_text().replace("style.txt", "house.txt"), encoding="utf-8")
    moved = plan_for(load_manifest(path), settings(out), read_records(out))
    assert {s.action for s in moved.steps} == {"skip"}


def test_an_over_long_answer_never_makes_a_prompt_over_the_limit(tmp_path: Path) -> None:
    """An answer over 512 characters is asked again or cut: the create's prompt fits."""
    body = FOX.replace("a fox in the snow", "a fox in the snow [long]")
    manifest = load_manifest(write_manifest(tmp_path, body))
    sim, out = Simulator(SimulatorConfig()), tmp_path / "out"
    result, transport = run(sim, manifest, out)
    assert result.exit_code == 0
    assert all(len(b["prompt"]) <= LIMIT for b in transport.creates())
    fox = json.loads((out / "report.json").read_text())["jobs"][0]
    assert len(fox["prompt"]) <= LIMIT and fox["enhance"]["requests"] == 2
    assert fox["enhance"]["status"] in ("enhanced", "truncated")


def test_an_empty_answer_falls_back_with_a_warning(tmp_path: Path) -> None:
    """An empty answer sends the prompt as written, and the report says why."""
    body = FOX.replace("a fox in the snow", "a fox in the snow [empty]")
    manifest = load_manifest(write_manifest(tmp_path, body))
    sim, out = Simulator(SimulatorConfig()), tmp_path / "out"
    result, transport = run(sim, manifest, out)
    assert result.exit_code == 0
    assert "a fox in the snow [empty]" in {b["prompt"] for b in transport.creates()}
    report = json.loads((out / "report.json").read_text())
    fox = report["jobs"][0]
    assert fox["enhance"]["status"] == "fallback" and "empty" in fox["enhance"]["warning"]
    assert report["enhance"]["fallback"] == 1
    assert fox["enhance"]["warning"] in (out / "report.md").read_text()


def test_required_and_empty_fails_the_job_before_any_video_request(tmp_path: Path) -> None:
    """With required: true an empty answer fails the job enhance_failed; nothing is created."""
    body = FOX.replace("a fox in the snow", "a fox in the snow [empty]").replace(
        "{model: glm-4-flash}", "{model: glm-4-flash, required: true}"
    )
    body = body.split("  - id: exact")[0]
    manifest = load_manifest(write_manifest(tmp_path, body, "bigmodel"))
    sim, out = Simulator(SimulatorConfig()), tmp_path / "out"
    result, _ = run(sim, manifest, out)
    assert result.exit_code == 1
    assert sim.stats()["create_requests"] == 0 and sim.stats()["chat_requests"] == 1
    (job,) = json.loads((out / "report.json").read_text())["jobs"]
    assert job["status"] == "failed" and job["error"]["kind"] == "enhance_failed"
    assert [event for event, _ in events(out)] == ["failed"]


def test_re_enhance_asks_again_and_regenerates_under_a_new_request_id(tmp_path: Path) -> None:
    """--re-enhance asks the chat model again and creates the enhanced job anew (BigModel:
    a new request_id); the job without enhancement is kept."""
    manifest = load_manifest(write_manifest(tmp_path, FOX, "bigmodel"))
    sim, out = Simulator(SimulatorConfig()), tmp_path / "out"
    run(sim, manifest, out)
    result, transport = run(sim, manifest, out, re_enhance=True)
    assert result.exit_code == 0 and sim.stats()["chat_requests"] == 2
    assert [o.status for o in result.outcomes] == ["succeeded", "skipped"]
    assert len(sim.stats()["create_requests_by_request_id"]) == 3
    assert all(count == 1 for count in sim.stats()["create_requests_by_request_id"].values())
    assert len(transport.creates()) == 1


def test_max_cost_refuses_a_chat_model_without_a_price(tmp_path: Path) -> None:
    """--max-cost with a rewrite due by a chat model of unknown price is refused before
    anything is sent; the free glm-4-flash is accepted."""
    manifest = load_manifest(write_manifest(tmp_path, FOX.replace("glm-4-flash", "glm-4-plus")))
    sim, out = Simulator(SimulatorConfig()), tmp_path / "out"
    with pytest.raises(UsageError, match="glm-4-plus"):
        run(sim, manifest, out, max_cost=5.0)
    assert sim.stats()["chat_requests"] == 0
    result, _ = run(sim, load_manifest(write_manifest(tmp_path / "free", FOX)), tmp_path / "o2", max_cost=5.0)
    assert result.exit_code == 0


def test_enhance_only_journals_without_any_video_request(tmp_path: Path) -> None:
    """Runner.enhance_only asks and journals the rewrites; the run after it uses them and
    asks nothing."""
    manifest = load_manifest(write_manifest(tmp_path, FOX))
    sim, out = Simulator(SimulatorConfig()), tmp_path / "out"
    runner = Runner(manifest, settings(out), transport=httpx.ASGITransport(app=sim.app))
    (row,) = anyio.run(runner.enhance_only)
    assert row.asked and row.result is not None and row.job.id == "fox"
    assert sim.stats()["create_requests"] == 0 and sim.stats()["chat_requests"] == 1
    assert events(out) == [("enhanced", "fox")]
    result, transport = run(sim, manifest, out)
    assert result.exit_code == 0 and sim.stats()["chat_requests"] == 1
    assert row.result.prompt in {b["prompt"] for b in transport.creates()}


def test_enhance_command_prints_both_prompts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`batchvid enhance --simulate` prints each job's prompts, journals them, requests no
    video; run again it shows the journal's rewrite."""
    path = write_manifest(tmp_path, FOX)
    out = tmp_path / "out"
    assert main(["enhance", str(path), "--out", str(out), "--simulate"]) == 0
    text = capsys.readouterr().out
    assert "written: a fox in the snow" in text and "sent:    A fox in the snow" in text
    assert "1 rewritten now" in text and not (out / "jobs").exists()
    assert main(["enhance", str(path), "--out", str(out), "--simulate", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["id"] == "fox" and row["asked"] is False and row["prompt_original"] == "a fox in the snow"
    assert events(out) == [("enhanced", "fox")]


class ChatEcho:
    """Chat completions that put the caller's key in a retried error, then in the answer."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, request: httpx.Request) -> httpx.Response | None:
        if not request.url.path.endswith("chat/completions"):
            return None
        self.calls += 1
        auth = request.headers.get("authorization", "")
        if self.calls == 1:
            return httpx.Response(503, json={"error": {"message": f"busy for {auth}"}})
        content = f"A fox, key {auth.removeprefix('Bearer ')}."
        answer = {"message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        return httpx.Response(200, json={"choices": [answer], "usage": {"total_tokens": 9}})


@pytest.mark.parametrize("provider", ["geekai", "bigmodel"])
def test_key_echoed_by_the_chat_server_is_never_written(tmp_path: Path, provider: str) -> None:
    """A chat server echoing the key in an error and in its answer leaks it nowhere: the
    answer is not used, and the files and the log stay clean."""
    chat, echo = ChatEcho(), Echo(provider)

    def handler(request: httpx.Request) -> httpx.Response:
        return chat(request) or echo(request)

    manifest = load_manifest(write_manifest(tmp_path, FOX, provider))
    out, log = tmp_path / "out", io.StringIO()
    prefix = "/api/v1" if provider == "geekai" else "/api/paas/v4"
    runner = Runner(manifest, settings(out, provider, base_url=f"{HOST}{prefix}", api_key=ECHO_KEY,
                                       max_in_flight=1, timeout=10.0),
                    transport=httpx.MockTransport(handler), subscribers=[JsonLog(log)],
                    sleep=fast_sleep)  # fmt: skip
    anyio.run(runner.run)
    assert leaks(out, log.getvalue()) == []
    fox = json.loads((out / "report.json").read_text())["jobs"][0]
    assert fox["enhance"]["status"] == "fallback" and fox["enhance"]["requests"] == 2
    assert fox["prompt"] == "a fox in the snow"


@pytest.mark.slow
def test_resume_after_sigkill_makes_no_chat_request(tmp_path: Path) -> None:
    """`batchvid run` killed with SIGKILL once every rewrite is journaled resumes with the
    journaled rewrites and makes no chat request."""
    body = "defaults:\n  model: cogvideox-flash\n  enhance: true\njobs:\n" + "".join(
        f"  - id: job-{i}\n    prompt: a fox in the snow, take {i}\n" for i in range(4)
    )
    manifest = write_manifest(tmp_path, body, "bigmodel")
    out = tmp_path / "out"
    env = {**os.environ, "ZHIPUAI_API_KEY": KEY}
    with running_simulator(SimulatorConfig(latency=1.0)) as served:
        command = run_command(manifest, out, served.base_url, "bigmodel")
        process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            deadline = time.monotonic() + RUN_TIMEOUT
            while time.monotonic() < deadline and process.poll() is None:
                if sum(1 for event, _ in events(out) if event == "enhanced") == 4:
                    process.send_signal(signal.SIGKILL)
                    break
                time.sleep(0.001)
        finally:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=30)
        assert process.returncode == -signal.SIGKILL
        chats = served.simulator.stats()["chat_requests"]
        assert chats == 4
        journaled = {e.id: e.prompt for e in read_entries(out / ".batchvid" / "journal.jsonl")
                     if isinstance(e, Enhanced)}  # fmt: skip
        subprocess.run(command, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=RUN_TIMEOUT, check=False)  # fmt: skip
        assert served.simulator.stats()["chat_requests"] == chats
    report = json.loads((out / "report.json").read_text())
    # A create cut off before its answer was journaled is resent under its request_id and the
    # duplicate refused (1231): never paid twice, but that job is stranded (see test_drill_crash).
    for job in report["jobs"]:
        assert job["status"] == "succeeded" or job["error"]["kind"] == "duplicate_request", job["error"]
    assert {j["id"]: j["prompt"] for j in report["jobs"]} == journaled
    for job_id, prompt in journaled.items():
        assert json.loads((out / "jobs" / job_id / "request.json").read_text())["prompt"] == prompt


def test_plan_shows_where_a_rewrite_is_due(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`batchvid plan` marks the enhanced job's submit, not the other; after `enhance`, neither."""
    path = write_manifest(tmp_path, FOX)
    out = tmp_path / "out"
    assert main(["plan", str(path), "--out", str(out)]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line}
    assert "prompt rewritten first (glm-4-flash)" in lines["fox"]
    assert "rewritten" not in lines["exact"]
    assert main(["enhance", str(path), "--out", str(out), "--simulate"]) == 0
    capsys.readouterr()
    assert main(["plan", str(path), "--out", str(out), "--json"]) == 0
    jobs = json.loads(capsys.readouterr().out)["jobs"]
    assert [(j["id"], j["action"], "enhance" in j) for j in jobs] == [("fox", "submit", False), ("exact", "submit", False)]


def test_merged_shards_keep_both_prompts_and_the_totals(tmp_path: Path) -> None:
    """Shards merged into one directory keep each enhanced job's prompts, pins and totals."""
    body = FOX.replace("jobs:\n", "jobs:\n  - id: owl\n    prompt: an owl at night\n")
    manifest = load_manifest(write_manifest(tmp_path, body))
    sim = Simulator(SimulatorConfig())
    for index in (1, 2):
        run(sim, manifest, tmp_path / f"shard{index}", shard=(index, 2))
    merge_dirs([tmp_path / "shard1", tmp_path / "shard2"], tmp_path / "all")
    report = json.loads((tmp_path / "all" / "report.json").read_text())
    jsonschema.Draft202012Validator(REPORT_SCHEMA).validate(report)
    assert report["enhance"]["jobs"] == 2 and report["enhance"]["requests"] == 2
    lock = json.loads((tmp_path / "all" / "batchvid.lock").read_text())["jobs"]
    assert {k for k, pin in lock.items() if "prompt_original" in pin} == {"owl", "fox"}


def test_enhance_leaves_the_lock_as_it_found_it(tmp_path: Path) -> None:
    """`batchvid enhance` after a run that ended leaves the lock empty (`clean` still works);
    after a killed run (its pid in the lock) it leaves a pid there (`clean` still refuses)."""
    path = write_manifest(tmp_path, FOX)
    out = tmp_path / "out"
    lock = out / ".batchvid" / "lock"
    assert main(["run", str(path), "--out", str(out), "--simulate"]) == 0
    path.write_text(path.read_text().replace("a fox in the snow", "a fox in the rain"))
    assert main(["enhance", str(path), "--out", str(out), "--simulate"]) == 0
    assert lock.read_text() == ""
    assert main(["clean", str(out)]) == 0
    lock.write_text("999999\n")
    assert main(["enhance", str(path), "--out", str(out), "--simulate"]) == 0
    assert lock.read_text().strip() not in ("", "999999")
    assert main(["clean", str(out)]) == 2
