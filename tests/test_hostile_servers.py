"""Hostile servers: every malformed, oversized, looping or stalling answer ends cleanly.

Each case runs one job against a server that misbehaves in one way (an ``httpx.MockTransport``,
or a raw socket server on 127.0.0.1 where real timeouts matter). The job must end as a clear
failure (status ``failed`` with a named ``error.kind``) or recover by retrying; never a hang
(every test is bounded by ``anyio.fail_after``), never a traceback, and never a corrupt or
partial file under its final name: a failed job has no ``video.mp4`` and no ``.part`` file
remains anywhere.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import httpx
import pytest

from batchvid.report import Outcome
from batchvid.runner import Runner, Settings
from batchvid.simulator.video import MediaCache, VideoSpec
from tests.helpers import make_job, make_manifest

KEY = "hostile-secret-key-5c1d9e"
HOST = "http://127.0.0.1:9"
"""Never contacted: MockTransport answers every request in process."""
BOUND = 20.0
"""Seconds any single hostile case may take before it counts as a hang."""

Handler = Callable[[httpx.Request], httpx.Response]
pytestmark = pytest.mark.anyio


@lru_cache(maxsize=1)
def mp4() -> bytes:
    return MediaCache().video(VideoSpec(64, 48, 30, 0.5, False, 3))


async def fast_sleep(seconds: float) -> None:
    """Retry back-off at a hundredth of its length: the policy is exercised, the test is quick."""
    await anyio.sleep(seconds / 100)


def settings(out: Path, provider: str = "geekai", **kw: Any) -> Settings:
    prefix = "/api/v1" if provider == "geekai" else "/api/paas/v4"
    base: dict[str, Any] = dict(
        out_dir=out, provider=provider, base_url=f"{HOST}{prefix}", api_key=KEY,
        max_in_flight=2, rpm=None, retries=2, timeout=5.0, poll_min=0.01, poll_max=0.02,
        http_timeout=2.0,
    )  # fmt: skip
    base.update(kw)
    return Settings(**base)


async def run_one(
    out: Path, transport: httpx.AsyncBaseTransport, provider: str = "geekai", **kw: Any
) -> Outcome:
    runner = Runner(
        make_manifest([make_job("victim", 0, provider, fps=30)]),
        settings(out, provider, **kw),
        transport=transport,
        sleep=fast_sleep,
    )
    with anyio.fail_after(BOUND):
        result = await runner.run()
    (outcome,) = result.outcomes
    return outcome


def geekai(
    *,
    create: Handler | None = None,
    poll: Handler | None = None,
    download: Handler | None = None,
    video_url: str = f"{HOST}/files/v.mp4",
) -> httpx.MockTransport:
    """A GeekAI server whose create, poll and download can each be replaced by a hostile one."""

    def handle(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "POST":
            if create is not None:
                return create(request)
            return httpx.Response(200, json={"task_id": "t1", "task_status": "pending"})
        if path.startswith("/api/v1/"):
            if poll is not None:
                return poll(request)
            return httpx.Response(
                200,
                json={"task_id": "t1", "task_status": "succeed", "video_result": [{"url": video_url}]},
            )
        if download is not None:
            return download(request)
        return httpx.Response(200, content=mp4())

    return httpx.MockTransport(handle)


def assert_clean_failure(out: Path, outcome: Outcome, kind: str) -> None:
    assert outcome.status == "failed", outcome
    assert outcome.error is not None and outcome.error["kind"] == kind, outcome.error
    assert not (out / "jobs" / "victim" / "video.mp4").exists()
    assert [p for p in out.rglob("*") if p.suffix in (".part", ".tmp")] == []
    report = json.loads((out / "report.json").read_text())
    assert report["jobs"][0]["error"]["kind"] == kind


# --- answers that are not what the protocol says ---------------------------------------------


async def test_create_answer_that_is_not_json(tmp_path: Path) -> None:
    """A 200 create answer of HTML fails the job as bad_response (not resubmitted: it may exist)."""
    out = tmp_path / "out"
    html = geekai(create=lambda r: httpx.Response(200, text="<html>welcome</html>"))
    assert_clean_failure(out, await run_one(out, html), "bad_response")


async def test_create_answer_of_the_wrong_shape(tmp_path: Path) -> None:
    """A 200 create answer that is a JSON list, not an object with a task id, is bad_response."""
    out = tmp_path / "out"
    shape = geekai(create=lambda r: httpx.Response(200, json=[{"task_id": "t1"}]))
    assert_clean_failure(out, await run_one(out, shape), "bad_response")


async def test_create_answer_nested_too_deeply(tmp_path: Path) -> None:
    """A JSON bomb of 100,000 nested arrays is refused as bad_response, not a RecursionError."""
    out = tmp_path / "out"
    bomb = geekai(create=lambda r: httpx.Response(200, content=b"[" * 100_000 + b"]" * 100_000))
    assert_clean_failure(out, await run_one(out, bomb), "bad_response")


async def test_huge_create_answer(tmp_path: Path) -> None:
    """A 64 MB create answer is not read to the end and fails the job as bad_response."""
    out = tmp_path / "out"
    filler = b'{"task_id": "t1", "pad": "' + b"x" * (64 << 20) + b'"}'
    huge = geekai(create=lambda r: httpx.Response(200, content=filler))
    assert_clean_failure(out, await run_one(out, huge), "bad_response")


async def test_poll_answer_of_the_wrong_shape_ends_in_timeout(tmp_path: Path) -> None:
    """Polls answered with JSON lacking task_status are retried until --timeout, then fail."""
    out = tmp_path / "out"
    shape = geekai(poll=lambda r: httpx.Response(200, json={"status": "ok", "data": None}))
    assert_clean_failure(out, await run_one(out, shape, timeout=1.0), "timeout")


async def test_task_status_never_seen_ends_in_timeout(tmp_path: Path) -> None:
    """An unknown task_status counts as running, bounded by --timeout: no hang."""
    out = tmp_path / "out"
    odd = geekai(poll=lambda r: httpx.Response(200, json={"task_id": "t1", "task_status": "LIMBO"}))
    assert_clean_failure(out, await run_one(out, odd, timeout=1.0), "timeout")


async def test_http_status_never_seen_fails_the_job(tmp_path: Path) -> None:
    """An unknown 4xx on create (HTTP 499) fails the job as invalid_request, without retry."""
    out = tmp_path / "out"
    calls: list[int] = []

    def odd(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(499, text="client closed request?")

    assert_clean_failure(out, await run_one(out, geekai(create=odd)), "invalid_request")
    assert len(calls) == 1


async def test_unknown_5xx_is_retried_then_fails(tmp_path: Path) -> None:
    """An unknown 5xx (HTTP 599) is transient: retried --retries times, then the job fails."""
    out = tmp_path / "out"
    calls: list[int] = []

    def odd(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(599, text="?")

    assert_clean_failure(out, await run_one(out, geekai(create=odd), retries=2), "server_error")
    assert len(calls) == 3


async def test_succeeded_task_with_wrong_result_shape(tmp_path: Path) -> None:
    """A succeeded task whose video_result is a string fails as bad_response."""
    out = tmp_path / "out"
    shape = geekai(
        poll=lambda r: httpx.Response(200, json={"task_id": "t1", "task_status": "succeed", "video_result": "v.mp4"})
    )
    assert_clean_failure(out, await run_one(out, shape), "bad_response")


# --- result URLs and downloads ---------------------------------------------------------------


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/v.mp4", "javascript:alert(1)"])
async def test_result_url_with_a_non_http_scheme(tmp_path: Path, url: str) -> None:
    """A result URL that is not http(s) is never fetched: bad_response."""
    out = tmp_path / "out"
    fetched: list[str] = []

    def download(request: httpx.Request) -> httpx.Response:
        fetched.append(str(request.url))
        return httpx.Response(200, content=mp4())

    assert_clean_failure(out, await run_one(out, geekai(video_url=url, download=download)), "bad_response")
    assert fetched == []


async def test_redirect_loop_on_download(tmp_path: Path) -> None:
    """A download redirecting to itself forever fails as download_failed after a few hops."""
    out = tmp_path / "out"
    hops: list[int] = []

    def loop(request: httpx.Request) -> httpx.Response:
        hops.append(1)
        return httpx.Response(302, headers={"location": str(request.url)})

    assert_clean_failure(out, await run_one(out, geekai(download=loop)), "download_failed")
    assert len(hops) <= 6


async def test_download_declared_larger_than_the_cap(tmp_path: Path) -> None:
    """A Content-Length over max_download_bytes is refused before a byte is written."""
    out = tmp_path / "out"
    big = geekai(download=lambda r: httpx.Response(200, content=b"\0" * 4096))
    assert_clean_failure(out, await run_one(out, big, max_download_bytes=1024), "download_too_large")


async def test_download_streaming_past_the_cap(tmp_path: Path) -> None:
    """A body without Content-Length that grows past the cap is cut off and discarded."""
    out = tmp_path / "out"

    async def endless() -> Any:
        for _ in range(64):
            yield b"\0" * 65536

    def stream(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=endless())

    outcome = await run_one(out, geekai(download=stream), max_download_bytes=1 << 20)
    assert_clean_failure(out, outcome, "download_too_large")


async def test_download_always_truncated(tmp_path: Path) -> None:
    """A body shorter than its Content-Length is retried, then the job fails download_failed."""
    out = tmp_path / "out"

    def short(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-length": "100000"}, content=mp4()[:1000])

    outcome = await run_one(out, geekai(download=short))
    assert_clean_failure(out, outcome, "download_failed")


async def test_download_that_is_not_a_video_succeeds_with_a_warning(tmp_path: Path) -> None:
    """Bytes that do not decode are kept (the hash is recorded) with a warning, not a crash."""
    out = tmp_path / "out"
    outcome = await run_one(out, geekai(download=lambda r: httpx.Response(200, content=b"<html>")))
    assert outcome.status == "succeeded"
    assert any("does not decode" in w for w in outcome.warnings)


# --- a server that stalls mid-body (a real socket, so real timeouts apply) --------------------


@asynccontextmanager
async def serve_stalling(stall_on: str, redirect: str | None = None) -> AsyncIterator[tuple[str, list[str]]]:
    """A tiny HTTP/1.1 server on 127.0.0.1 speaking GeekAI; requests whose path contains
    ``stall_on`` get headers and half a body, then silence; with ``redirect``, downloads are
    answered 302 to that URL. Returns its URL and a request log."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    base = f"http://127.0.0.1:{port}"
    seen: list[str] = []

    async def handle(stream: anyio.abc.SocketStream) -> None:
        # A client that gave up (its 0.2 s timeout, on a loaded machine even before this
        # server read the request) has hung up: that ends this connection, not the server.
        with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
            await answer(stream)

    async def answer(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            data = b""
            while b"\r\n\r\n" not in data:
                data += await stream.receive()
            head, _, body = data.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            length = next((int(v) for k, _, v in (h.partition(":") for h in lines[1:]) if k.lower() == "content-length"), 0)
            while len(body) < length:
                body += await stream.receive()
            seen.append(f"{method} {path}")
            if method == "POST":
                payload = json.dumps({"task_id": "t1", "task_status": "pending"}).encode()
            elif path.startswith("/api/v1/"):
                result = [{"url": f"{base}/files/v.mp4"}]
                payload = json.dumps({"task_id": "t1", "task_status": "succeed", "video_result": result}).encode()
            else:
                payload = mp4()
            stall = stall_on in path
            if redirect is not None and path.startswith("/files/"):
                await stream.send(f"HTTP/1.1 302 Found\r\nlocation: {redirect}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".encode())
                return
            head_out = f"HTTP/1.1 200 OK\r\ncontent-length: {len(payload)}\r\nconnection: close\r\n"
            head_out += "content-type: application/json\r\n\r\n"
            await stream.send(head_out.encode() + (payload[: len(payload) // 2] if stall else payload))
            if stall:
                await anyio.sleep_forever()

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        yield base, seen
        tg.cancel_scope.cancel()


async def test_download_that_stalls_mid_body(tmp_path: Path) -> None:
    """A download that stops sending is cut by the HTTP timeout, retried, then fails cleanly."""
    out = tmp_path / "out"
    async with serve_stalling("/files/") as (base, seen):
        outcome = await run_one(
            out, httpx.AsyncHTTPTransport(), base_url=f"{base}/api/v1", http_timeout=0.3, retries=1
        )
    assert_clean_failure(out, outcome, "download_failed")
    assert sum(s.startswith("GET /files/") for s in seen) >= 2


async def test_create_that_stalls_mid_body_is_not_resent_on_geekai(tmp_path: Path) -> None:
    """A create answer cut off mid-body may have created a task: GeekAI does not send it again."""
    out = tmp_path / "out"
    async with serve_stalling("/videos/generations") as (base, seen):
        outcome = await run_one(
            out, httpx.AsyncHTTPTransport(), base_url=f"{base}/api/v1", http_timeout=0.3
        )
    assert_clean_failure(out, outcome, "create_unconfirmed")
    assert [s for s in seen if s.startswith("POST")] == ["POST /api/v1/videos/generations"]


@pytest.mark.parametrize("target", ["file:///etc/passwd", "ftp://127.0.0.1/v.mp4"])
async def test_download_redirected_to_a_non_http_url(tmp_path: Path, target: str) -> None:
    """A download answered 302 to file:// or ftp:// is refused as bad_response, nothing written."""
    out = tmp_path / "out"
    async with serve_stalling("-", redirect=target) as (base, seen):
        outcome = await run_one(out, httpx.AsyncHTTPTransport(), base_url=f"{base}/api/v1")
    assert_clean_failure(out, outcome, "bad_response")
    assert sum(s.startswith("GET /files/") for s in seen) == 1


async def test_poll_that_stalls_mid_body_ends_in_timeout(tmp_path: Path) -> None:
    """Status queries that stall are retried (polling never pays) until --timeout."""
    out = tmp_path / "out"
    async with serve_stalling("/result") as (base, _):
        outcome = await run_one(
            out, httpx.AsyncHTTPTransport(), base_url=f"{base}/api/v1", http_timeout=0.2, timeout=1.5
        )
    assert_clean_failure(out, outcome, "timeout")


def hostile_cases() -> list[str]:
    """The names of the hostile-server cases in this module (for the README's count)."""
    return sorted(name for name in globals() if name.startswith("test_"))

