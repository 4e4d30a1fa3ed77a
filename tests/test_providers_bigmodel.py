"""BigModel protocol: request bodies, paths, response parsing and business-code classification."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pytest_httpx import HTTPXMock

from batchvid.errors import JobFatalError, RunFatalError, TransientError
from batchvid.jobkey import job_key
from batchvid.jobs import Image, Job
from batchvid.providers import get_provider
from batchvid.providers.bigmodel import BigModelProvider

BASE = "https://open.bigmodel.cn/api/paas/v4"
CREATE_URL = f"{BASE}/videos/generations"
SECRET = "zhipu-secret-key.abc"
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 16


def make_job(image: Image | None = None, **params: Any) -> Job:
    params = {"model": "cogvideox-3", "prompt": "a fox at dawn", **params}
    key = job_key("bigmodel", params, image, 0)
    return Job(id="fox", key=key, index=0, provider="bigmodel", params=params, image=image)


def jpeg_image() -> Image:
    return Image(source="images/a.jpg", data=JPEG, media_type="image/jpeg", sha256="cd" * 32)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=BASE, headers={"Authorization": f"Bearer {SECRET}"}) as c:
        yield c


provider = BigModelProvider()


def poll_url(task_id: str = "task-9") -> str:
    return f"{BASE}/async-result/{task_id}"


def error_body(code: str | int, message: str = "refused") -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


# --- request building -------------------------------------------------------------------------


def test_body_maps_image_and_watermark_to_bigmodel_names() -> None:
    """The image goes as image_url (data URI) and watermark as watermark_enabled."""
    body = provider.build_body(make_job(image=jpeg_image(), watermark=True))
    assert body["image_url"] == jpeg_image().data_uri()
    assert body["image_url"].startswith("data:image/jpeg;base64,")
    assert body["watermark_enabled"] is True
    assert "image" not in body and "watermark" not in body


def test_body_sends_only_set_parameters_and_a_request_id() -> None:
    """Unset parameters are absent; there is no async flag and no user_id."""
    job = make_job(size="1920x1080", duration=10, fps=None)
    assert provider.build_body(job) == {
        "model": "cogvideox-3",
        "prompt": "a fox at dawn",
        "size": "1920x1080",
        "duration": 10,
        "request_id": "bv-" + job.key[:32],
    }


def test_request_id_is_derived_from_the_job_key() -> None:
    """The request_id is deterministic: the same job always sends the same one."""
    job = make_job()
    assert provider.build_body(job)["request_id"] == provider.build_body(make_job())["request_id"]
    assert BigModelProvider.request_id(job) == "bv-" + job.key[:32]


def test_request_id_generation_gives_a_distinct_id() -> None:
    """Generation n > 0 appends -n, so a deliberate resubmission is not refused as 1231."""
    job = make_job()
    assert BigModelProvider.request_id(job, 2) == "bv-" + job.key[:32] + "-2"


def test_body_uses_the_given_request_id() -> None:
    """build_body(request_id=...) sends that id instead of the default."""
    assert provider.build_body(make_job(), request_id="bv-abc-3")["request_id"] == "bv-abc-3"


def test_bigmodel_is_idempotent() -> None:
    """BigModel recognises a re-sent create by its request_id, so re-sending is safe."""
    assert provider.idempotent is True


def test_recorded_body_describes_image_url() -> None:
    """request.json gets image_url as the image's description, never its base64."""
    recorded = provider.recorded_body(make_job(image=jpeg_image()))
    assert recorded["image_url"] == {
        "sha256": "cd" * 32,
        "bytes": len(JPEG),
        "media_type": "image/jpeg",
    }


# --- create -----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_create_posts_body_and_reads_id(
    httpx_mock: HTTPXMock, client: httpx.AsyncClient
) -> None:
    """create POSTs the built body to videos/generations and returns the task by its `id`."""
    job = make_job(quality="speed")
    httpx_mock.add_response(
        method="POST",
        url=CREATE_URL,
        json={
            "id": "task-9",
            "request_id": "bv-x",
            "model": "cogvideox-3",
            "task_status": "PROCESSING",
        },
    )
    result = await provider.create(client, job)
    request = httpx_mock.get_request()
    assert request is not None
    assert json.loads(request.content) == provider.build_body(job)
    assert (result.task_id, result.status, result.provider_status) == (
        "task-9",
        "running",
        "PROCESSING",
    )


@pytest.mark.anyio
async def test_create_sends_the_given_request_id(
    httpx_mock: HTTPXMock, client: httpx.AsyncClient
) -> None:
    """create(request_id=...) sends that request_id (the runner's choice for a resubmission)."""
    job = make_job()
    httpx_mock.add_response(url=CREATE_URL, json={"id": "task-9", "task_status": "PROCESSING"})
    await provider.create(client, job, request_id=BigModelProvider.request_id(job, 1))
    request = httpx_mock.get_request()
    assert request is not None
    assert json.loads(request.content)["request_id"] == "bv-" + job.key[:32] + "-1"


@pytest.mark.anyio
async def test_create_without_id_fails_job_without_resubmit(
    httpx_mock: HTTPXMock, client: httpx.AsyncClient
) -> None:
    """A 2xx create answer without an id is job-fatal bad_response: a task may exist."""
    httpx_mock.add_response(url=CREATE_URL, json={"task_status": "PROCESSING"})
    with pytest.raises(JobFatalError) as info:
        await provider.create(client, make_job())
    assert info.value.kind == "bad_response"
    assert "may have been created" in info.value.message


@pytest.mark.anyio
async def test_create_2xx_carrying_a_known_error_code_is_classified(
    httpx_mock: HTTPXMock, client: httpx.AsyncClient
) -> None:
    """An error dressed as a 200 is classified by its business code."""
    httpx_mock.add_response(url=CREATE_URL, json=error_body("1301", "unsafe"))
    with pytest.raises(JobFatalError) as info:
        await provider.create(client, make_job())
    assert info.value.kind == "content_filter"


@pytest.mark.anyio
async def test_duplicate_request_id_is_its_own_kind(
    httpx_mock: HTTPXMock, client: httpx.AsyncClient
) -> None:
    """Code 1231 is job-fatal duplicate_request, naming the request_id and the lost task."""
    job = make_job()
    request_id = "bv-" + job.key[:32]
    httpx_mock.add_response(
        url=CREATE_URL,
        status_code=400,
        json=error_body("1231", f"you already have a request: {request_id}"),
    )
    with pytest.raises(JobFatalError) as info:
        await provider.create(client, job)
    assert (info.value.kind, info.value.code) == ("duplicate_request", "1231")
    assert request_id in info.value.message
    assert "not resubmitted" in info.value.message


# --- poll -------------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("word", "status"),
    [
        ("PROCESSING", "running"),
        ("SUBMITTED", "running"),
        ("SUCCESS", "succeeded"),
        ("FAIL", "failed"),
        ("QUEUED_SOMEWHERE", "running"),
    ],
)
async def test_poll_normalises_status_spellings(
    httpx_mock: HTTPXMock, client: httpx.AsyncClient, word: str, status: str
) -> None:
    """BigModel's status words map to their states; an unknown word counts as running."""
    httpx_mock.add_response(
        url=poll_url(),
        json={"task_status": word, "video_result": [{"url": "https://cdn.bigmodel.cn/v.mp4"}]},
    )
    result = await provider.poll(client, "task-9")
    assert (result.status, result.provider_status) == (status, word)


@pytest.mark.anyio
async def test_poll_keeps_the_polled_id(httpx_mock: HTTPXMock, client: httpx.AsyncClient) -> None:
    """The async-result answer has no id; the TaskResult keeps the one polled."""
    httpx_mock.add_response(url=poll_url(), json={"task_status": "PROCESSING", "request_id": "r"})
    assert (await provider.poll(client, "task-9")).task_id == "task-9"


@pytest.mark.anyio
async def test_poll_reads_video_and_cover(httpx_mock: HTTPXMock, client: httpx.AsyncClient) -> None:
    """A SUCCESS answer gives the video URL and the cover URL from the array."""
    httpx_mock.add_response(
        url=poll_url(),
        json={
            "task_status": "SUCCESS",
            "video_result": [
                {
                    "url": "https://cdn.bigmodel.cn/v.mp4",
                    "cover_image_url": "https://cdn.bigmodel.cn/c.png",
                }
            ],
        },
    )
    result = await provider.poll(client, "task-9")
    assert (result.video_url, result.cover_url) == (
        "https://cdn.bigmodel.cn/v.mp4",
        "https://cdn.bigmodel.cn/c.png",
    )


@pytest.mark.anyio
async def test_poll_reads_video_result_object(
    httpx_mock: HTTPXMock, client: httpx.AsyncClient
) -> None:
    """video_result given as an object is read like a one-entry array."""
    httpx_mock.add_response(
        url=poll_url(),
        json={"task_status": "SUCCESS", "video_result": {"url": "https://cdn.bigmodel.cn/v.mp4"}},
    )
    assert (await provider.poll(client, "task-9")).video_url == "https://cdn.bigmodel.cn/v.mp4"


@pytest.mark.anyio
async def test_poll_fail_message_summarises_payload(
    httpx_mock: HTTPXMock, client: httpx.AsyncClient
) -> None:
    """FAIL has no error field, so the message is a summary of the whole payload."""
    httpx_mock.add_response(
        url=poll_url(), json={"task_status": "FAIL", "model": "cogvideox-3", "request_id": "bv-1"}
    )
    result = await provider.poll(client, "task-9")
    assert result.status == "failed"
    assert result.message is not None
    assert '"request_id": "bv-1"' in result.message


@pytest.mark.anyio
async def test_poll_success_without_url_is_job_fatal(
    httpx_mock: HTTPXMock, client: httpx.AsyncClient
) -> None:
    """SUCCESS with an empty video_result fails the job as bad_response."""
    httpx_mock.add_response(url=poll_url(), json={"task_status": "SUCCESS", "video_result": []})
    with pytest.raises(JobFatalError) as info:
        await provider.poll(client, "task-9")
    assert info.value.kind == "bad_response"


@pytest.mark.anyio
async def test_poll_404_is_job_fatal(httpx_mock: HTTPXMock, client: httpx.AsyncClient) -> None:
    """An unknown task id fails the job: there is nothing to re-attach to."""
    httpx_mock.add_response(url=poll_url(), status_code=404, json=error_body("1222", "not found"))
    with pytest.raises(JobFatalError) as info:
        await provider.poll(client, "task-9")
    assert info.value.status == 404


@pytest.mark.anyio
async def test_poll_garbage_is_transient(httpx_mock: HTTPXMock, client: httpx.AsyncClient) -> None:
    """A 2xx poll answer that is not a task is transient bad_response."""
    httpx_mock.add_response(url=poll_url(), text="upstream hiccup")
    with pytest.raises(TransientError) as info:
        await provider.poll(client, "task-9")
    assert info.value.kind == "bad_response"


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("status", "code", "cls", "kind"),
    [
        (429, "1302", TransientError, "concurrency_limited"),
        (429, "1303", TransientError, "rate_limited"),
        (429, "1305", TransientError, "overloaded"),
        (429, "1113", RunFatalError, "insufficient_balance"),
        (429, "1304", RunFatalError, "daily_quota"),
        (429, "1308", RunFatalError, "quota"),
        (429, "1110", RunFatalError, "account"),
        (429, "1121", RunFatalError, "account"),
        (429, "9999", TransientError, "rate_limited"),
        (401, "1000", RunFatalError, "auth"),
        (401, "1002", RunFatalError, "auth"),
        (403, "1220", RunFatalError, "forbidden"),
        (400, "1221", RunFatalError, "forbidden"),
        (400, "1210", JobFatalError, "invalid_request"),
        (400, "1214", JobFatalError, "invalid_request"),
        (400, "1211", JobFatalError, "unknown_model"),
        (400, "1261", JobFatalError, "prompt_too_long"),
        (400, "1301", JobFatalError, "content_filter"),
        (400, "1300", JobFatalError, "content_filter"),
        (500, "1230", TransientError, "server_error"),
        (500, "1234", TransientError, "server_error"),
        (500, "1120", TransientError, "server_error"),
        (434, "4340", RunFatalError, "forbidden"),
        (503, "5030", TransientError, "server_error"),
    ],
)
async def test_business_code_decides_the_class(
    httpx_mock: HTTPXMock,
    client: httpx.AsyncClient,
    status: int,
    code: str,
    cls: type,
    kind: str,
) -> None:
    """A known business code decides the class and kind; an unknown one falls back to HTTP."""
    httpx_mock.add_response(url=CREATE_URL, status_code=status, json=error_body(code))
    with pytest.raises(cls) as info:
        await provider.create(client, make_job())
    assert (info.value.kind, info.value.status, info.value.code) == (kind, status, code)


@pytest.mark.anyio
async def test_integer_codes_are_normalised(
    httpx_mock: HTTPXMock, client: httpx.AsyncClient
) -> None:
    """A code sent as a JSON number is read like its string form."""
    httpx_mock.add_response(url=CREATE_URL, status_code=429, json=error_body(1113))
    with pytest.raises(RunFatalError) as info:
        await provider.create(client, make_job())
    assert (info.value.kind, info.value.code) == ("insufficient_balance", "1113")


@pytest.mark.anyio
async def test_error_str_names_status_and_code(
    httpx_mock: HTTPXMock, client: httpx.AsyncClient
) -> None:
    """str(error) reads "<kind>: BigModel: <provider message> (HTTP 429, code 1302)"."""
    httpx_mock.add_response(
        url=CREATE_URL, status_code=429, json=error_body("1302", "当前API请求过多，请稍后再试")
    )
    with pytest.raises(TransientError) as info:
        await provider.create(client, make_job())
    assert str(info.value) == (
        "concurrency_limited: BigModel: 当前API请求过多，请稍后再试 (HTTP 429, code 1302)"
    )


@pytest.mark.anyio
async def test_retry_after_on_429_is_kept(httpx_mock: HTTPXMock, client: httpx.AsyncClient) -> None:
    """A 429 with Retry-After carries the wait in retry_after."""
    httpx_mock.add_response(
        url=CREATE_URL, status_code=429, headers={"Retry-After": "30"}, json=error_body("1305")
    )
    with pytest.raises(TransientError) as info:
        await provider.create(client, make_job())
    assert info.value.retry_after == 30.0


@pytest.mark.anyio
async def test_poll_errors_use_the_code_table(
    httpx_mock: HTTPXMock, client: httpx.AsyncClient
) -> None:
    """A poll refused with 429/1113 stops the run like a create would."""
    httpx_mock.add_response(url=poll_url(), status_code=429, json=error_body("1113"))
    with pytest.raises(RunFatalError) as info:
        await provider.poll(client, "task-9")
    assert info.value.kind == "insufficient_balance"


@pytest.mark.anyio
async def test_transport_error_is_network(httpx_mock: HTTPXMock, client: httpx.AsyncClient) -> None:
    """A reset connection becomes TransientError kind network, without the key."""
    httpx_mock.add_exception(httpx.ReadError("connection reset by peer"), url=CREATE_URL)
    with pytest.raises(TransientError) as info:
        await provider.create(client, make_job())
    assert info.value.kind == "network"
    assert SECRET not in str(info.value)


def test_get_provider_returns_bigmodel_by_name() -> None:
    """get_provider("bigmodel") is the BigModel protocol with both key variables, in order."""
    found = get_provider("bigmodel")
    assert isinstance(found, BigModelProvider)
    assert found.default_base_url == BASE
    assert found.key_env_vars == ("ZHIPUAI_API_KEY", "BIGMODEL_API_KEY")
