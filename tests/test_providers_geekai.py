"""GeekAI protocol: request bodies, paths, response parsing and error classification."""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pytest_httpx import HTTPXMock, IteratorStream

from batchvid.errors import JobFatalError, RunFatalError, TransientError, UsageError
from batchvid.jobkey import job_key
from batchvid.jobs import Image, Job
from batchvid.providers import PROVIDERS, get_provider
from batchvid.providers.base import MAX_RESPONSE_BYTES, MAX_RETRY_AFTER
from batchvid.providers.geekai import GeekAIProvider

BASE = "https://geekai.co/api/v1"
CREATE_URL = f"{BASE}/videos/generations"
SECRET = "sk-geekai-secret-000"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16


def make_job(image: Image | None = None, **params: Any) -> Job:
    params = {"model": "cogvideox-flash", "prompt": "a rabbit drives a car", **params}
    key = job_key("geekai", params, image, 0)
    return Job(id="rabbit", key=key, index=0, provider="geekai", params=params, image=image)


def png_image() -> Image:
    return Image(source="images/a.png", data=PNG, media_type="image/png", sha256="ab" * 32)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=BASE, headers={"Authorization": f"Bearer {SECRET}"}) as c:
        yield c


provider = GeekAIProvider()


def poll_url(task_id: str = "t-1") -> str:
    return f"{BASE}/video/{task_id}/result"


# --- request building -------------------------------------------------------------------------


def test_body_always_asks_for_async_mode() -> None:
    """The create body carries "async": true even when the manifest says nothing about it."""
    assert provider.build_body(make_job())["async"] is True


def test_body_sends_only_set_parameters_as_named() -> None:
    """Set parameters go under their own names; absent and None ones are left out."""
    body = provider.build_body(make_job(size="1280x960", fps=30, with_audio=True, quality=None))
    assert body == {
        "model": "cogvideox-flash",
        "prompt": "a rabbit drives a car",
        "size": "1280x960",
        "with_audio": True,
        "fps": 30,
        "async": True,
    }


def test_body_sends_watermark_as_is() -> None:
    """GeekAI's own parameter is `watermark`, passed through unchanged (also when false)."""
    body = provider.build_body(make_job(watermark=False))
    assert body["watermark"] is False
    assert "watermark_enabled" not in body


def test_body_sends_inline_image_as_data_uri() -> None:
    """An inline image goes under `image` as a base64 data URI."""
    body = provider.build_body(make_job(image=png_image()))
    assert body["image"] == png_image().data_uri()
    assert body["image"].startswith("data:image/png;base64,")


def test_body_sends_image_url_as_is() -> None:
    """An https image is passed as its URL."""
    image = Image(source="https://example.com/a.png", url="https://example.com/a.png")
    assert provider.build_body(make_job(image=image))["image"] == "https://example.com/a.png"


def test_recorded_body_describes_image_instead_of_bytes() -> None:
    """request.json gets the image's hash and size, never its base64."""
    recorded = provider.recorded_body(make_job(image=png_image()))
    assert recorded["image"] == {"sha256": "ab" * 32, "bytes": len(PNG), "media_type": "image/png"}


# --- create -----------------------------------------------------------------------------------


def test_geekai_is_not_idempotent() -> None:
    """GeekAI has no idempotency key: a create with a lost answer must not be re-sent blindly."""
    assert provider.idempotent is False


@pytest.mark.anyio
async def test_create_ignores_request_id(httpx_mock: HTTPXMock, client: httpx.AsyncClient) -> None:
    """GeekAI's body is the same whatever request_id the runner passes."""
    job = make_job()
    httpx_mock.add_response(url=CREATE_URL, json={"task_id": "t-1", "task_status": "pending"})
    await provider.create(client, job, request_id="bv-123")
    request = httpx_mock.get_request()
    assert request is not None
    assert json.loads(request.content) == provider.build_body(job)


@pytest.mark.anyio
async def test_create_posts_body_to_generations(
    httpx_mock: HTTPXMock, client: httpx.AsyncClient
) -> None:
    """create POSTs the built body as JSON to videos/generations under the base URL."""
    job = make_job(image=png_image(), fps=60)
    httpx_mock.add_response(
        method="POST", url=CREATE_URL, json={"task_id": "t-1", "task_status": "pending"}
    )
    await provider.create(client, job)
    request = httpx_mock.get_request()
    assert request is not None
    assert json.loads(request.content) == provider.build_body(job)


@pytest.mark.anyio
async def test_create_returns_running_task(
    httpx_mock: HTTPXMock, client: httpx.AsyncClient
) -> None:
    """A pending answer becomes a running TaskResult with GeekAI's task_id."""
    httpx_mock.add_response(url=CREATE_URL, json={"task_id": "t-1", "task_status": "pending"})
    result = await provider.create(client, make_job())
    assert (result.task_id, result.status, result.provider_status) == ("t-1", "running", "pending")


@pytest.mark.anyio
async def test_create_accepts_a_finished_synchronous_answer(
    httpx_mock: HTTPXMock, client: httpx.AsyncClient
) -> None:
    """If GeekAI answers with a finished video at once (sync mode), create reports success."""
    httpx_mock.add_response(
        url=CREATE_URL,
        json={
            "model": "cogvideox-flash",
            "task_id": "a83d58e1",
            "task_status": "succeed",
            "video_result": [{"id": "f87f", "url": "https://static.geekai.co/video/x.mp4"}],
        },
    )
    result = await provider.create(client, make_job())
    assert result.status == "succeeded"
    assert result.video_url == "https://static.geekai.co/video/x.mp4"


@pytest.mark.anyio
@pytest.mark.parametrize(
    "content",
    [b"<html>oops</html>", b"[1, 2]", b'{"task_status": "pending"}', b""],
    ids=["not-json", "not-object", "no-task-id", "empty"],
)
async def test_create_with_unreadable_2xx_fails_job_without_resubmit(
    httpx_mock: HTTPXMock, client: httpx.AsyncClient, content: bytes
) -> None:
    """A 2xx create answer without a usable task is job-fatal bad_response: a task may exist."""
    httpx_mock.add_response(url=CREATE_URL, content=content)
    with pytest.raises(JobFatalError) as info:
        await provider.create(client, make_job())
    assert info.value.kind == "bad_response"
    assert "may have been created" in info.value.message


@pytest.mark.anyio
async def test_create_with_huge_2xx_body_is_bad_response(
    httpx_mock: HTTPXMock, client: httpx.AsyncClient
) -> None:
    """A create answer over the size limit is refused as job-fatal bad_response."""
    httpx_mock.add_response(url=CREATE_URL, content=b" " * (MAX_RESPONSE_BYTES + 1))
    with pytest.raises(JobFatalError) as info:
        await provider.create(client, make_job())
    assert info.value.kind == "bad_response"
    assert "larger than" in info.value.message


@pytest.mark.anyio
async def test_create_stops_reading_an_endless_stream(
    httpx_mock: HTTPXMock, client: httpx.AsyncClient
) -> None:
    """A body without Content-Length is read only up to the limit, then refused."""
    chunk = b"[" * (1024 * 1024)
    httpx_mock.add_response(url=CREATE_URL, stream=IteratorStream([chunk] * 8))
    with pytest.raises(JobFatalError) as info:
        await provider.create(client, make_job())
    assert info.value.kind == "bad_response"
    assert "larger than" in info.value.message


@pytest.mark.anyio
async def test_create_survives_absurdly_nested_json(
    httpx_mock: HTTPXMock, client: httpx.AsyncClient
) -> None:
    """Deeply nested JSON is an unreadable answer, not a RecursionError."""
    httpx_mock.add_response(url=CREATE_URL, content=b"[" * 200_000 + b"]" * 200_000)
    with pytest.raises(JobFatalError) as info:
        await provider.create(client, make_job())
    assert info.value.kind == "bad_response"


# --- poll -------------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("word", "status"),
    [
        ("pending", "running"),
        ("running", "running"),
        ("success", "succeeded"),
        ("succeed", "succeeded"),
        ("SUCCEED", "succeeded"),
        ("Success", "succeeded"),
        ("failed", "failed"),
        ("fail", "failed"),
        ("warming_up", "running"),
    ],
)
async def test_poll_normalises_status_spellings(
    httpx_mock: HTTPXMock, client: httpx.AsyncClient, word: str, status: str
) -> None:
    """Every documented spelling maps to its state; an unknown word counts as running."""
    httpx_mock.add_response(
        url=poll_url(),
        json={
            "task_id": "t-1",
            "task_status": word,
            "video_result": [{"url": "https://static.geekai.co/v.mp4"}],
        },
    )
    result = await provider.poll(client, "t-1")
    assert result.status == status
    assert result.provider_status == word


@pytest.mark.anyio
async def test_poll_reads_video_result_array(
    httpx_mock: HTTPXMock, client: httpx.AsyncClient
) -> None:
    """video_result as an array gives the first entry's URL; the cover is optional."""
    httpx_mock.add_response(
        url=poll_url(),
        json={"task_status": "succeed", "video_result": [{"url": "https://s.geekai.co/v.mp4"}]},
    )
    result = await provider.poll(client, "t-1")
    assert (result.video_url, result.cover_url) == ("https://s.geekai.co/v.mp4", None)


@pytest.mark.anyio
async def test_poll_reads_video_result_object(
    httpx_mock: HTTPXMock, client: httpx.AsyncClient
) -> None:
    """video_result as a single object is read like a one-entry array, cover included."""
    httpx_mock.add_response(
        url=poll_url(),
        json={
            "task_status": "success",
            "video_result": {
                "url": "https://s.geekai.co/v.mp4",
                "cover_image_url": "https://s.geekai.co/c.jpg",
            },
        },
    )
    result = await provider.poll(client, "t-1")
    assert (result.video_url, result.cover_url) == (
        "https://s.geekai.co/v.mp4",
        "https://s.geekai.co/c.jpg",
    )


@pytest.mark.anyio
async def test_poll_keeps_raw_payload(httpx_mock: HTTPXMock, client: httpx.AsyncClient) -> None:
    """The TaskResult carries the answer as received."""
    payload = {"task_id": "t-1", "task_status": "running", "progress": 40}
    httpx_mock.add_response(url=poll_url(), json=payload)
    assert (await provider.poll(client, "t-1")).raw == payload


@pytest.mark.anyio
async def test_poll_failed_task_carries_error_message(
    httpx_mock: HTTPXMock, client: httpx.AsyncClient
) -> None:
    """A failed task's message comes from error.message (with its code)."""
    httpx_mock.add_response(
        url=poll_url(),
        json={"task_status": "failed", "error": {"code": 1301, "message": "unsafe content"}},
    )
    result = await provider.poll(client, "t-1")
    assert result.status == "failed"
    assert result.message == "GeekAI: unsafe content (code 1301)"


@pytest.mark.anyio
@pytest.mark.parametrize(
    "video_result",
    [None, [], [{"id": "x"}], [{"url": "ftp://h/v.mp4"}], {"url": "/relative/v.mp4"}],
    ids=["missing", "empty", "no-url", "ftp", "relative"],
)
async def test_poll_success_without_http_url_is_job_fatal(
    httpx_mock: HTTPXMock, client: httpx.AsyncClient, video_result: Any
) -> None:
    """A succeeded task without a usable http(s) URL fails the job as bad_response."""
    httpx_mock.add_response(
        url=poll_url(), json={"task_status": "succeed", "video_result": video_result}
    )
    with pytest.raises(JobFatalError) as info:
        await provider.poll(client, "t-1")
    assert info.value.kind == "bad_response"


@pytest.mark.anyio
async def test_poll_falls_back_to_plural_path_on_404(
    httpx_mock: HTTPXMock, client: httpx.AsyncClient
) -> None:
    """A 404 on video/{id}/result is retried once on videos/{id}."""
    httpx_mock.add_response(url=poll_url(), status_code=404)
    httpx_mock.add_response(url=f"{BASE}/videos/t-1", json={"task_status": "running"})
    result = await provider.poll(client, "t-1")
    assert (result.task_id, result.status) == ("t-1", "running")
    assert [r.url.path for r in httpx_mock.get_requests()] == [
        "/api/v1/video/t-1/result",
        "/api/v1/videos/t-1",
    ]


@pytest.mark.anyio
async def test_poll_404_on_both_paths_is_job_fatal(
    httpx_mock: HTTPXMock, client: httpx.AsyncClient
) -> None:
    """When neither polling path knows the task, the job fails (it cannot be re-attached)."""
    httpx_mock.add_response(url=poll_url(), status_code=404)
    httpx_mock.add_response(url=f"{BASE}/videos/t-1", status_code=404)
    with pytest.raises(JobFatalError) as info:
        await provider.poll(client, "t-1")
    assert (info.value.kind, info.value.status) == ("invalid_request", 404)


@pytest.mark.anyio
async def test_poll_quotes_task_id_in_path(
    httpx_mock: HTTPXMock, client: httpx.AsyncClient
) -> None:
    """A task id cannot escape its path segment."""
    httpx_mock.add_response(url=f"{BASE}/video/a%2F..%2Fb/result", json={"task_status": "running"})
    assert (await provider.poll(client, "a/../b")).task_id == "a/../b"


@pytest.mark.anyio
@pytest.mark.parametrize(
    "content",
    [b"<html>busy</html>", b'"text"', b'{"task_id": "t-1"}', b" " * (MAX_RESPONSE_BYTES + 1)],
    ids=["not-json", "not-object", "no-status", "huge"],
)
async def test_poll_unreadable_answer_is_transient(
    httpx_mock: HTTPXMock, client: httpx.AsyncClient, content: bytes
) -> None:
    """An unusable 2xx poll answer is transient bad_response: polling again is safe."""
    httpx_mock.add_response(url=poll_url(), content=content)
    with pytest.raises(TransientError) as info:
        await provider.poll(client, "t-1")
    assert info.value.kind == "bad_response"


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("status", "cls", "kind"),
    [
        (400, JobFatalError, "invalid_request"),
        (404, JobFatalError, "invalid_request"),
        (413, JobFatalError, "invalid_request"),
        (422, JobFatalError, "invalid_request"),
        (418, JobFatalError, "invalid_request"),
        (401, RunFatalError, "auth"),
        (402, RunFatalError, "insufficient_balance"),
        (403, RunFatalError, "forbidden"),
        (408, TransientError, "server_error"),
        (429, TransientError, "rate_limited"),
        (500, TransientError, "server_error"),
        (502, TransientError, "server_error"),
        (503, TransientError, "server_error"),
        (504, TransientError, "server_error"),
        (599, TransientError, "server_error"),
    ],
)
async def test_create_classifies_http_status(
    httpx_mock: HTTPXMock, client: httpx.AsyncClient, status: int, cls: type, kind: str
) -> None:
    """Each HTTP status maps to its error class and kind."""
    httpx_mock.add_response(url=CREATE_URL, status_code=status, json={"error": {"message": "nope"}})
    with pytest.raises(cls) as info:
        await provider.create(client, make_job())
    assert (info.value.kind, info.value.status) == (kind, status)


@pytest.mark.anyio
async def test_poll_classifies_http_status(
    httpx_mock: HTTPXMock, client: httpx.AsyncClient
) -> None:
    """Errors on the poll path are classified like create errors (here 401 → auth)."""
    httpx_mock.add_response(url=poll_url(), status_code=401, json={"error": {"message": "bad key"}})
    with pytest.raises(RunFatalError) as info:
        await provider.poll(client, "t-1")
    assert info.value.kind == "auth"


@pytest.mark.anyio
async def test_error_message_quotes_provider_and_names_key_variable(
    httpx_mock: HTTPXMock, client: httpx.AsyncClient
) -> None:
    """The message has the provider's words, a hint, and HTTP status via __str__."""
    httpx_mock.add_response(
        url=CREATE_URL, status_code=401, json={"error": {"code": 401, "message": "invalid token"}}
    )
    with pytest.raises(RunFatalError) as info:
        await provider.create(client, make_job())
    text = str(info.value)
    assert text.startswith("auth: GeekAI: invalid token")
    assert "GEEKAI_API_KEY" in text
    assert text.endswith("(HTTP 401, code 401)")


@pytest.mark.anyio
async def test_non_json_error_body_is_excerpted(
    httpx_mock: HTTPXMock, client: httpx.AsyncClient
) -> None:
    """A non-JSON error body appears in the message, trimmed to 500 characters."""
    httpx_mock.add_response(
        url=CREATE_URL, status_code=502, text="<h1>Bad gateway</h1>" + "x" * 2000
    )
    with pytest.raises(TransientError) as info:
        await provider.create(client, make_job())
    assert info.value.message.startswith("GeekAI: <h1>Bad gateway</h1>")
    assert len(info.value.message) <= len("GeekAI: ") + 500


@pytest.mark.anyio
async def test_huge_error_body_is_not_kept(
    httpx_mock: HTTPXMock, client: httpx.AsyncClient
) -> None:
    """An oversized error body still classifies by status, without its content in the message."""
    httpx_mock.add_response(
        url=CREATE_URL, status_code=503, content=b"y" * (MAX_RESPONSE_BYTES * 2)
    )
    with pytest.raises(TransientError) as info:
        await provider.create(client, make_job())
    assert info.value.kind == "server_error"
    assert len(info.value.message) < 200


@pytest.mark.anyio
async def test_retry_after_seconds_is_honoured(
    httpx_mock: HTTPXMock, client: httpx.AsyncClient
) -> None:
    """Retry-After in seconds lands in retry_after."""
    httpx_mock.add_response(url=CREATE_URL, status_code=429, headers={"Retry-After": "17"})
    with pytest.raises(TransientError) as info:
        await provider.create(client, make_job())
    assert info.value.retry_after == 17.0


@pytest.mark.anyio
async def test_retry_after_http_date_is_honoured(
    httpx_mock: HTTPXMock, client: httpx.AsyncClient
) -> None:
    """Retry-After as an HTTP-date becomes the seconds until that date."""
    when = email.utils.formatdate(time.time() + 120, usegmt=True)
    httpx_mock.add_response(url=CREATE_URL, status_code=503, headers={"Retry-After": when})
    with pytest.raises(TransientError) as info:
        await provider.create(client, make_job())
    assert info.value.retry_after is not None
    assert 115 <= info.value.retry_after <= 121


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("header", "expected"),
    [("86400", MAX_RETRY_AFTER), ("-5", 0.0), ("soon", None)],
    ids=["capped", "negative", "garbage"],
)
async def test_retry_after_is_capped_and_sanitised(
    httpx_mock: HTTPXMock, client: httpx.AsyncClient, header: str, expected: float | None
) -> None:
    """Retry-After is capped, floored at zero, and ignored when unreadable."""
    httpx_mock.add_response(url=CREATE_URL, status_code=429, headers={"Retry-After": header})
    with pytest.raises(TransientError) as info:
        await provider.create(client, make_job())
    assert info.value.retry_after == expected


@pytest.mark.anyio
@pytest.mark.parametrize(
    "exc",
    [
        httpx.ConnectError("connection refused"),
        httpx.ReadTimeout("timed out"),
        httpx.RemoteProtocolError("peer closed connection"),
    ],
    ids=["connect", "timeout", "reset"],
)
async def test_transport_errors_are_transient_network(
    httpx_mock: HTTPXMock, client: httpx.AsyncClient, exc: Exception
) -> None:
    """Connection failures and timeouts become TransientError kind network."""
    httpx_mock.add_exception(exc, url=CREATE_URL)
    with pytest.raises(TransientError) as info:
        await provider.create(client, make_job())
    assert info.value.kind == "network"
    assert type(exc).__name__ in info.value.message


@pytest.mark.anyio
async def test_transport_error_does_not_carry_the_request(
    httpx_mock: HTTPXMock, client: httpx.AsyncClient
) -> None:
    """The network error is chained from a request-free copy: same type, no headers reachable."""
    httpx_mock.add_exception(httpx.ReadTimeout("timed out"), url=poll_url())
    with pytest.raises(TransientError) as info:
        await provider.poll(client, "t-1")
    cause = info.value.__cause__
    assert isinstance(cause, httpx.ReadTimeout)
    with pytest.raises(RuntimeError):
        cause.request  # noqa: B018 - the copy has no request, so no Authorization header
    assert SECRET not in repr(vars(info.value)) + str(info.value) + repr(cause)


# --- registry ---------------------------------------------------------------------------------


def test_get_provider_returns_geekai_by_name() -> None:
    """get_provider("geekai") is the GeekAI protocol with its documented base URL and key."""
    found = get_provider("geekai")
    assert isinstance(found, GeekAIProvider)
    assert (found.default_base_url, found.key_env_vars) == (BASE, ("GEEKAI_API_KEY",))


def test_get_provider_rejects_unknown_names() -> None:
    """An unknown provider name is a UsageError that lists the known ones."""
    with pytest.raises(UsageError, match="geekai, bigmodel"):
        get_provider("openai")


def test_provider_names_put_geekai_first() -> None:
    """PROVIDERS lists both protocols, the default (geekai) first."""
    assert PROVIDERS == ("geekai", "bigmodel")
