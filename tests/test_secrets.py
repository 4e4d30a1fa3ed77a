"""The API key never reaches a file or a log line, even when a server echoes it back.

A hostile ``httpx.MockTransport`` copies the ``Authorization`` header into error bodies (retried
and fatal), into fields of successful answers (create, poll, the result URL's query, even the
status word and the task id) and into download errors. After each run no file under the output
directory and no line of the JSON log contains the key. The drills (fault and crash) check the
same after every run.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from batchvid.display import JsonLog
from batchvid.runner import Runner, Settings
from tests.helpers import make_job, make_manifest
from tests.test_hostile_servers import HOST, fast_sleep, mp4

KEY = "sk-echo-secret-9d2f7a41c3e8b6"
pytestmark = pytest.mark.anyio


class Echo:
    """A server of either provider that puts the caller's Authorization header everywhere."""

    def __init__(self, provider: str, *, status_word: bool = False, task_id: bool = False) -> None:
        self.provider = provider
        self.status_word = status_word
        self.task_id = task_id
        self.calls: dict[str, int] = {}

    def _count(self, what: str) -> int:
        self.calls[what] = self.calls.get(what, 0) + 1
        return self.calls[what]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        auth = request.headers.get("authorization", "")
        secret = auth.removeprefix("Bearer ")
        error = {"error": {"code": "1234", "message": f"upstream refused header {auth!r}"}}
        tid = f"task-{secret}" if self.task_id else "t1"
        if request.method == "POST":
            if self._count("create") == 1:
                return httpx.Response(503, json=error, headers={"x-echo": auth})
            if "bad" in request.content.decode():
                return httpx.Response(400, json={"error": {"code": "1214", "message": f"bad {auth}"}})
            body: dict[str, Any] = {"echo": auth, "debug": {"headers": dict(request.headers)}}
            if self.provider == "bigmodel":
                body.update(id=tid, task_status="PROCESSING")
            else:
                body.update(task_id=tid, task_status="pending")
            return httpx.Response(200, json=body)
        if "/files/" in request.url.path:
            if self._count("download") == 1:
                return httpx.Response(500, text=f"storage error for {auth}")
            return httpx.Response(200, content=mp4())
        polls = self._count("poll")
        if polls == 1:
            return httpx.Response(500, json=error)
        word = "succeed" if self.provider == "geekai" else "SUCCESS"
        if self.status_word and polls == 2:
            word = f"QUEUED-{secret}"
        url = f"{HOST}/files/v.mp4?token={secret}"
        body = {"task_status": word, "echo": auth, "video_result": [{"url": url, "cover_image_url": url}]}
        if self.provider == "geekai":
            body["task_id"] = tid
        return httpx.Response(200, json=body)


async def run_echo(out: Path, provider: str, echo: Echo, prompts: tuple[str, ...] = ("fine",)) -> str:
    """Run against ``echo``; returns the JSON log."""
    prefix = "/api/v1" if provider == "geekai" else "/api/paas/v4"
    jobs = [make_job(f"j{i}", i, provider, prompt=p) for i, p in enumerate(prompts)]
    settings = Settings(
        out_dir=out, provider=provider, base_url=f"{HOST}{prefix}", api_key=KEY, max_in_flight=1,
        rpm=None, retries=3, timeout=10.0, poll_min=0.01, poll_max=0.02,
    )  # fmt: skip
    log = io.StringIO()
    runner = Runner(make_manifest(jobs), settings, transport=httpx.MockTransport(echo),
                    subscribers=[JsonLog(log)], sleep=fast_sleep)  # fmt: skip
    with anyio.fail_after(20):
        await runner.run()
    return log.getvalue()


def leaks(out: Path, log: str) -> list[str]:
    """Every file under ``out`` and every log line that contains the key."""
    needle = KEY.encode()
    found = [str(p) for p in out.rglob("*") if p.is_file() and needle in p.read_bytes()]
    return found + [line for line in log.splitlines() if KEY in line]


@pytest.mark.parametrize("provider", ["geekai", "bigmodel"])
async def test_key_echoed_in_error_and_success_bodies_is_never_written(tmp_path: Path, provider: str) -> None:
    """Echoes in retried errors, a fatal error, success fields and the result URL leak nowhere."""
    out = tmp_path / "out"
    log = await run_echo(out, provider, Echo(provider), prompts=("fine", "bad request"))
    assert leaks(out, log) == []
    assert "[REDACTED]" in (out / "jobs" / "j0" / "response.json").read_text()
    assert (out / "jobs" / "j0" / "video.mp4").exists()


@pytest.mark.parametrize("provider", ["geekai", "bigmodel"])
async def test_key_echoed_as_the_status_word_is_never_logged(tmp_path: Path, provider: str) -> None:
    """A status word carrying the key is not copied into a log line or a file."""
    out = tmp_path / "out"
    log = await run_echo(out, provider, Echo(provider, status_word=True))
    assert leaks(out, log) == []


@pytest.mark.parametrize("provider", ["geekai", "bigmodel"])
async def test_key_echoed_as_the_task_id_is_never_written(tmp_path: Path, provider: str) -> None:
    """A task id carrying the key is refused before it reaches the journal, a report or the log."""
    out = tmp_path / "out"
    log = await run_echo(out, provider, Echo(provider, task_id=True))
    assert leaks(out, log) == []
