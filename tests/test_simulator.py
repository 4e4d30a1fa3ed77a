"""Conformance of the simulator's routes, bodies and limits with docs/api-notes.md (in-process)."""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from batchvid.errors import UsageError
from batchvid.simulator import (
    BIGMODEL_PREFIX,
    GEEKAI_PREFIX,
    KEY_ARREARS,
    KEY_DAILY_QUOTA,
    Simulator,
    SimulatorConfig,
    body_hash,
    config_from_args,
)

pytestmark = pytest.mark.anyio

AUTH = {"Authorization": "Bearer test-key"}
G_CREATE = f"{GEEKAI_PREFIX}/videos/generations"
B_CREATE = f"{BIGMODEL_PREFIX}/videos/generations"


class FakeClock:
    """A clock tests move by hand; ``sleep`` advances it instead of waiting."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@asynccontextmanager
async def client_for(sim: Simulator) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=sim.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sim.test") as client:
        yield client


def simulator(clock: FakeClock | None = None, **knobs: Any) -> Simulator:
    clock = clock or FakeClock()
    return Simulator(SimulatorConfig(**knobs), clock=clock, sleep=clock.sleep)


def geekai(**extra: Any) -> dict[str, Any]:
    return {"model": "cogvideox-flash", "prompt": "a cat", "size": "1280x960", **extra}


def bigmodel(**extra: Any) -> dict[str, Any]:
    return {"model": "cogvideox-2", "prompt": "a cat", "size": "720x480", **extra}


# ---------------------------------------------------------------- GeekAI


async def test_geekai_sync_create_returns_finished_task() -> None:
    """Without ``async`` GeekAI answers with the finished task: succeed, progress 100, array."""
    async with client_for(simulator(latency=3.0)) as client:
        r = await client.post(G_CREATE, json=geekai(), headers=AUTH)
    body = r.json()
    assert r.status_code == 200
    assert body["task_status"] == "succeed"
    assert body["progress"] == 100
    assert body["model"] == "cogvideox-flash"
    assert isinstance(body["video_result"], list) and len(body["video_result"]) == 1
    assert set(body["video_result"][0]) == {"id", "url"}


async def test_geekai_sync_create_blocks_until_the_task_is_done() -> None:
    """``async: false`` holds the request for the task's whole duration."""
    clock = FakeClock()
    async with client_for(simulator(clock, latency=4.0)) as client:
        await client.post(G_CREATE, json=geekai(**{"async": False}), headers=AUTH)
    assert 2.0 <= sum(clock.slept) <= 6.0
    assert clock.now >= 1002.0


async def test_geekai_async_create_returns_pending_task_id() -> None:
    """``async: true`` answers at once with a task id, pending, and no result."""
    async with client_for(simulator(latency=3.0)) as client:
        r = await client.post(G_CREATE, json=geekai(**{"async": True}), headers=AUTH)
    body = r.json()
    assert r.status_code == 200
    assert body["task_status"] == "pending"
    assert body["task_id"]
    assert "video_result" not in body


async def test_geekai_task_goes_pending_running_succeed() -> None:
    """Polling shows running while time passes, then succeed with an array of results."""
    clock = FakeClock()
    async with client_for(simulator(clock, latency=10.0)) as client:
        created = await client.post(G_CREATE, json=geekai(**{"async": True}), headers=AUTH)
        task_id = created.json()["task_id"]
        clock.now += 4.0
        running = (await client.get(f"{GEEKAI_PREFIX}/video/{task_id}/result", headers=AUTH)).json()
        clock.now += 20.0
        done = (await client.get(f"{GEEKAI_PREFIX}/video/{task_id}/result", headers=AUTH)).json()
    assert running["task_status"] == "running"
    assert 0 < running["progress"] < 100
    assert done["task_status"] == "succeed"
    assert done["video_result"][0]["url"].endswith(".mp4")


async def test_geekai_both_poll_paths_answer_the_same() -> None:
    """``/video/{id}/result`` and ``/videos/{id}`` return the same task body."""
    async with client_for(simulator()) as client:
        created = await client.post(G_CREATE, json=geekai(**{"async": True}), headers=AUTH)
        task_id = created.json()["task_id"]
        first = await client.get(f"{GEEKAI_PREFIX}/video/{task_id}/result", headers=AUTH)
        second = await client.get(f"{GEEKAI_PREFIX}/videos/{task_id}", headers=AUTH)
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()


async def test_geekai_cover_is_optional_and_served_when_given() -> None:
    """With ``geekai_cover`` the result carries a cover URL that downloads as a PNG."""
    async with client_for(simulator(geekai_cover=True)) as client:
        body = (await client.post(G_CREATE, json=geekai(), headers=AUTH)).json()
        cover = await client.get(body["video_result"][0]["cover_image_url"])
    assert cover.status_code == 200
    assert cover.headers["content-type"] == "image/png"
    assert cover.content.startswith(b"\x89PNG\r\n\x1a\n")


async def test_geekai_details_add_duration_and_revised_prompt() -> None:
    """With ``geekai_details`` the result carries the video's length and the prompt as
    ``revised_prompt``, as GeekAI's API page example result does; without, neither."""
    async with client_for(simulator(geekai_details=True)) as client:
        body = (await client.post(G_CREATE, json=geekai(), headers=AUTH)).json()
    result = body["video_result"][0]
    assert result["revised_prompt"] == geekai()["prompt"]
    assert result["duration"] == 1.0


@pytest.mark.parametrize(
    "image",
    ["https://example.com/a.png", "data:image/png;base64,iVBORw0KGgo="],
)
@pytest.mark.parametrize("field", ["image", "image_url"])
async def test_geekai_accepts_image_as_url_or_data_uri(field: str, image: str) -> None:
    """``image`` (current) and ``image_url`` (legacy) take a URL or a data URI."""
    async with client_for(simulator()) as client:
        r = await client.post(G_CREATE, json=geekai(**{field: image}), headers=AUTH)
    assert r.status_code == 200


@pytest.mark.parametrize(
    "param",
    [
        ("negative_prompt", "ugly"),
        ("image_tail", "https://e.com/b.png"),
        ("resolution", "1080p"),
        ("aspect_ratio", "16:9"),
    ],
)
async def test_geekai_rejects_parameters_unsupported_for_cogvideox(param: tuple[str, str]) -> None:
    """GeekAI's CogVideoX page lists parameters it does not support: 400 with an error body."""
    async with client_for(simulator()) as client:
        r = await client.post(G_CREATE, json=geekai(**dict([param])), headers=AUTH)
    assert r.status_code == 400
    assert param[0] in r.json()["error"]["message"]


async def test_geekai_duration_only_on_cogvideox_3() -> None:
    """``duration`` is refused for cogvideox-flash and accepted (5) for cogvideox-3."""
    async with client_for(simulator()) as client:
        flash = await client.post(G_CREATE, json=geekai(duration=5), headers=AUTH)
        three = await client.post(
            G_CREATE, json=geekai(model="cogvideox-3", size="1280x720", duration=5), headers=AUTH
        )
    assert flash.status_code == 400
    assert three.status_code == 200


async def test_geekai_accepts_plain_cogvideox_model() -> None:
    """GeekAI still lists plain ``cogvideox``."""
    async with client_for(simulator()) as client:
        r = await client.post(G_CREATE, json=geekai(model="cogvideox"), headers=AUTH)
    assert r.status_code == 200


async def test_geekai_unknown_model_is_400() -> None:
    """A model GeekAI does not list is refused with 400 and an error object."""
    async with client_for(simulator()) as client:
        r = await client.post(G_CREATE, json=geekai(model="sora-9"), headers=AUTH)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == 400


async def test_geekai_missing_key_is_401() -> None:
    """Without a Bearer key GeekAI answers 401 with an error object."""
    async with client_for(simulator()) as client:
        r = await client.post(G_CREATE, json=geekai())
    assert r.status_code == 401
    assert r.json()["error"]["code"] == 401


async def test_geekai_insufficient_balance_is_402() -> None:
    """The arrears key gets GeekAI's 402."""
    async with client_for(simulator()) as client:
        r = await client.post(
            G_CREATE, json=geekai(), headers={"Authorization": f"Bearer {KEY_ARREARS}"}
        )
    assert r.status_code == 402


async def test_geekai_failed_task_has_error_object() -> None:
    """The fail marker ends a GeekAI task ``failed`` with ``error: {code, message}``."""
    async with client_for(simulator()) as client:
        r = await client.post(G_CREATE, json=geekai(prompt="a cat [fail]"), headers=AUTH)
    body = r.json()
    assert body["task_status"] == "failed"
    assert set(body["error"]) == {"code", "message"}
    assert "video_result" not in body


async def test_geekai_unknown_task_is_404() -> None:
    """Polling an id GeekAI never issued answers 404."""
    async with client_for(simulator()) as client:
        r = await client.get(f"{GEEKAI_PREFIX}/video/nope/result", headers=AUTH)
    assert r.status_code == 404


# ---------------------------------------------------------------- BigModel


async def test_bigmodel_create_returns_processing_with_echoed_request_id() -> None:
    """Create answers ``{id, request_id, model, task_status: PROCESSING}``, echoing request_id."""
    async with client_for(simulator()) as client:
        r = await client.post(B_CREATE, json=bigmodel(request_id="job-1"), headers=AUTH)
    body = r.json()
    assert r.status_code == 200
    assert set(body) == {"id", "request_id", "model", "task_status"}
    assert body["request_id"] == "job-1"
    assert body["task_status"] == "PROCESSING"


async def test_bigmodel_generates_request_id_when_absent() -> None:
    """Without a ``request_id`` the platform makes one up."""
    async with client_for(simulator()) as client:
        body = (await client.post(B_CREATE, json=bigmodel(), headers=AUTH)).json()
    assert isinstance(body["request_id"], str) and body["request_id"]


async def test_bigmodel_query_goes_processing_then_success() -> None:
    """async-result shows PROCESSING, then SUCCESS with ``[{url, cover_image_url}]`` and no id."""
    clock = FakeClock()
    async with client_for(simulator(clock, latency=5.0)) as client:
        task_id = (await client.post(B_CREATE, json=bigmodel(), headers=AUTH)).json()["id"]
        before = (
            await client.get(f"{BIGMODEL_PREFIX}/async-result/{task_id}", headers=AUTH)
        ).json()
        clock.now += 10.0
        after = (await client.get(f"{BIGMODEL_PREFIX}/async-result/{task_id}", headers=AUTH)).json()
    assert before["task_status"] == "PROCESSING"
    assert after["task_status"] == "SUCCESS"
    assert "id" not in after
    assert set(after) == {"model", "task_status", "video_result", "request_id"}
    assert set(after["video_result"][0]) == {"url", "cover_image_url"}


async def test_bigmodel_fail_marker_ends_in_fail() -> None:
    """The fail marker ends a BigModel task in ``FAIL`` with no result."""
    async with client_for(simulator()) as client:
        task_id = (
            await client.post(B_CREATE, json=bigmodel(prompt="x [fail]"), headers=AUTH)
        ).json()["id"]
        body = (await client.get(f"{BIGMODEL_PREFIX}/async-result/{task_id}", headers=AUTH)).json()
    assert body["task_status"] == "FAIL"
    assert "video_result" not in body


async def test_bigmodel_plain_cogvideox_is_1211() -> None:
    """Plain ``cogvideox`` is not a BigModel model: 400 with string code ``1211``."""
    async with client_for(simulator()) as client:
        r = await client.post(B_CREATE, json=bigmodel(model="cogvideox"), headers=AUTH)
    assert r.status_code == 400
    assert r.json() == {"error": {"code": "1211", "message": "model not found: cogvideox"}}


async def test_bigmodel_prompt_over_512_is_1261() -> None:
    """A 513-character prompt is refused with code ``1261``."""
    async with client_for(simulator()) as client:
        r = await client.post(B_CREATE, json=bigmodel(prompt="x" * 513), headers=AUTH)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "1261"


async def test_bigmodel_prompt_of_512_is_accepted() -> None:
    """Exactly 512 characters is within the limit."""
    async with client_for(simulator()) as client:
        r = await client.post(B_CREATE, json=bigmodel(prompt="x" * 512), headers=AUTH)
    assert r.status_code == 200


@pytest.mark.parametrize(
    ("model", "size", "status"),
    [
        ("cogvideox-2", "1280x720", 400),
        ("cogvideox-3", "1280x720", 200),
        ("cogvideox-3", "720x480", 400),
        ("cogvideox-flash", "720x720", 400),
    ],
)
async def test_bigmodel_size_must_be_listed_for_the_model(
    model: str, size: str, status: int
) -> None:
    """Each model has its own size list (api-notes section 1)."""
    async with client_for(simulator()) as client:
        r = await client.post(B_CREATE, json=bigmodel(model=model, size=size), headers=AUTH)
    assert r.status_code == status
    if status == 400:
        assert r.json()["error"]["code"] == "1214"


@pytest.mark.parametrize(
    "extra",
    [
        {"fps": 24},
        {"fps": "30"},
        {"duration": 5},
        {"quality": "best"},
        {"with_audio": "yes"},
        {"user_id": "abc"},
        {"negative_prompt": "ugly"},
        {"image_url": ["https://e.com/a.png", "https://e.com/b.png"]},
        {"image_url": "ftp://e.com/a.png"},
    ],
)
async def test_bigmodel_rejects_invalid_parameters(extra: dict[str, Any]) -> None:
    """What the cogvideox-2 schema does not allow is refused with 400 and a string code."""
    async with client_for(simulator()) as client:
        r = await client.post(B_CREATE, json=bigmodel(**extra), headers=AUTH)
    assert r.status_code == 400
    assert isinstance(r.json()["error"]["code"], str)


async def test_bigmodel_requires_prompt_or_image() -> None:
    """``prompt`` and ``image_url`` cannot both be empty."""
    async with client_for(simulator()) as client:
        r = await client.post(B_CREATE, json={"model": "cogvideox-2"}, headers=AUTH)
    assert r.status_code == 400
    assert "empty" in r.json()["error"]["message"]


async def test_bigmodel_accepts_first_and_last_frame_on_cogvideox_3() -> None:
    """cogvideox-3 takes a 2-element ``image_url`` array and ``duration: 10``."""
    body = bigmodel(model="cogvideox-3", size="1280x720", duration=10, prompt=None)
    body["image_url"] = ["https://e.com/a.png", "https://e.com/b.png"]
    async with client_for(simulator()) as client:
        r = await client.post(B_CREATE, json=body, headers=AUTH)
    assert r.status_code == 200


async def test_bigmodel_treats_null_as_absent() -> None:
    """zai-sdk sends unset parameters as ``null``; they are ignored, even ``duration``."""
    nulls = dict.fromkeys(
        [
            "image_url",
            "quality",
            "with_audio",
            "duration",
            "fps",
            "style",
            "aspect_ratio",
            "off_peak",
            "movement_amplitude",
            "request_id",
            "user_id",
        ]
    )
    async with client_for(simulator()) as client:
        r = await client.post(B_CREATE, json=bigmodel(**nulls), headers=AUTH)
    assert r.status_code == 200


async def test_bigmodel_duplicate_request_id_is_1231() -> None:
    """A second create with the same request_id is refused with 1231 and creates nothing."""
    sim = simulator()
    async with client_for(sim) as client:
        first = await client.post(B_CREATE, json=bigmodel(request_id="job-7"), headers=AUTH)
        second = await client.post(B_CREATE, json=bigmodel(request_id="job-7"), headers=AUTH)
    assert first.status_code == 200
    assert second.status_code == 400
    assert second.json()["error"] == {
        "code": "1231",
        "message": "you already have a request: job-7",
    }
    assert sim.stats()["tasks_created"] == 1


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "1001"),
        ({"Authorization": "Bearer "}, "1002"),
        ({"Authorization": "Basic abc"}, "1002"),
    ],
)
async def test_bigmodel_without_valid_key_is_401(headers: dict[str, str], code: str) -> None:
    """A missing or malformed Bearer key is 401 with a 100x string code, on create and query."""
    async with client_for(simulator()) as client:
        create = await client.post(B_CREATE, json=bigmodel(), headers=headers)
        query = await client.get(f"{BIGMODEL_PREFIX}/async-result/x", headers=headers)
    assert create.status_code == query.status_code == 401
    assert create.json()["error"]["code"] == query.json()["error"]["code"] == code


@pytest.mark.parametrize(("key", "code"), [(KEY_ARREARS, "1113"), (KEY_DAILY_QUOTA, "1304")])
async def test_bigmodel_account_refusals_are_429(key: str, code: str) -> None:
    """Arrears and the daily quota are 429 with their business codes."""
    async with client_for(simulator()) as client:
        r = await client.post(B_CREATE, json=bigmodel(), headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 429
    assert r.json()["error"]["code"] == code


@pytest.mark.parametrize(
    ("path", "body"),
    [(B_CREATE, bigmodel(prompt="[unsafe] x")), (G_CREATE, geekai(prompt="[unsafe] x"))],
)
async def test_unsafe_marker_is_refused_with_1301(path: str, body: dict[str, Any]) -> None:
    """The unsafe marker is refused at create: HTTP 400, code ``1301``, no task."""
    sim = simulator()
    async with client_for(sim) as client:
        r = await client.post(path, json=body, headers=AUTH)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "1301"
    assert sim.stats()["tasks_created"] == 0


async def test_bigmodel_unknown_task_is_404() -> None:
    """Querying an id never issued answers 404 with a string code."""
    async with client_for(simulator()) as client:
        r = await client.get(f"{BIGMODEL_PREFIX}/async-result/123-456", headers=AUTH)
    assert r.status_code == 404
    assert isinstance(r.json()["error"]["code"], str)


async def test_bigmodel_ids_are_not_geekai_ids() -> None:
    """A BigModel task is not visible on GeekAI's poll path."""
    async with client_for(simulator()) as client:
        task_id = (await client.post(B_CREATE, json=bigmodel(), headers=AUTH)).json()["id"]
        r = await client.get(f"{GEEKAI_PREFIX}/videos/{task_id}", headers=AUTH)
    assert r.status_code == 404


# ---------------------------------------------------------------- limits


@pytest.mark.parametrize(
    ("path", "body", "code"), [(B_CREATE, bigmodel(), "1303"), (G_CREATE, geekai(), 429)]
)
async def test_rpm_limit_is_429_with_retry_after(
    path: str, body: dict[str, Any], code: str | int
) -> None:
    """Beyond ``rpm`` creates in 60 s: 429, the provider's code, and Retry-After in seconds."""
    clock = FakeClock()
    async with client_for(simulator(clock, rpm=2)) as client:
        await client.post(path, json=body, headers=AUTH)
        clock.now += 10
        await client.post(path, json=body, headers=AUTH)
        refused = await client.post(path, json=body, headers=AUTH)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == code
    assert refused.headers["retry-after"] == "50"


async def test_rpm_window_slides() -> None:
    """Once the oldest create is 60 s old, a new one is admitted."""
    clock = FakeClock()
    async with client_for(simulator(clock, rpm=1)) as client:
        await client.post(B_CREATE, json=bigmodel(), headers=AUTH)
        clock.now += 60
        again = await client.post(B_CREATE, json=bigmodel(), headers=AUTH)
    assert again.status_code == 200


async def test_concurrency_limit_is_429_1302_until_a_task_ends() -> None:
    """More non-terminal tasks than ``max_concurrent`` is 429 code 1302; a finished task frees a slot."""
    clock = FakeClock()
    async with client_for(simulator(clock, latency=10.0, max_concurrent=2)) as client:
        for _ in range(2):
            assert (await client.post(B_CREATE, json=bigmodel(), headers=AUTH)).status_code == 200
        refused = await client.post(B_CREATE, json=bigmodel(), headers=AUTH)
        clock.now += 20
        admitted = await client.post(B_CREATE, json=bigmodel(), headers=AUTH)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "1302"
    assert "retry-after" not in refused.headers
    assert admitted.status_code == 200


async def test_concurrency_is_counted_per_key() -> None:
    """Another API key has its own concurrency budget."""
    async with client_for(simulator(latency=10.0, max_concurrent=1)) as client:
        await client.post(B_CREATE, json=bigmodel(), headers=AUTH)
        other = await client.post(
            B_CREATE, json=bigmodel(), headers={"Authorization": "Bearer other"}
        )
    assert other.status_code == 200


# ---------------------------------------------------------------- stats


async def test_stats_count_a_duplicate_body_twice() -> None:
    """The same job body sent twice (different request_id) counts 2 requests and 2 tasks."""
    sim = simulator()
    async with client_for(sim) as client:
        await client.post(B_CREATE, json=bigmodel(request_id="a"), headers=AUTH)
        await client.post(B_CREATE, json=bigmodel(request_id="b"), headers=AUTH)
    stats = sim.stats()
    digest = body_hash(bigmodel())
    assert stats["create_requests_by_body"] == {digest: 2}
    assert stats["tasks_by_body"] == {digest: 2}
    assert stats["create_requests_by_request_id"] == {"a": 1, "b": 1}


async def test_body_hash_ignores_async_ids_and_nulls() -> None:
    """``async``, ``request_id``, ``user_id`` and nulls do not change a body's hash."""
    plain = body_hash(geekai())
    assert (
        body_hash({**geekai(), "async": True, "request_id": "r", "user_id": "u" * 8, "fps": None})
        == plain
    )


async def test_stats_report_peak_concurrency() -> None:
    """The peak of non-terminal tasks is recorded, not the total created."""
    clock = FakeClock()
    sim = simulator(clock, latency=10.0)
    async with client_for(sim) as client:
        for _ in range(3):
            await client.post(B_CREATE, json=bigmodel(), headers=AUTH)
        clock.now += 30
        for _ in range(2):
            await client.post(B_CREATE, json=bigmodel(), headers=AUTH)
    assert sim.stats()["peak_concurrent_tasks"] == 3
    assert sim.stats()["tasks_created"] == 5


async def test_stats_report_peak_creates_per_window() -> None:
    """The busiest 60 s window of create requests is recorded."""
    clock = FakeClock()
    sim = simulator(clock)
    async with client_for(sim) as client:
        for step in (0, 1, 1, 70, 1):
            clock.now += step
            await client.post(B_CREATE, json=bigmodel(), headers=AUTH)
    assert sim.stats()["peak_create_requests_per_60s"] == 3


async def test_stats_count_requests_by_route_and_status() -> None:
    """Every request is counted under its route and status code."""
    sim = simulator()
    async with client_for(sim) as client:
        await client.post(B_CREATE, json=bigmodel(), headers=AUTH)
        await client.post(B_CREATE, json=bigmodel())
        await client.get(f"{BIGMODEL_PREFIX}/async-result/none", headers=AUTH)
    assert sim.stats()["requests"] == {
        "bigmodel.create": {"200": 1, "401": 1},
        "bigmodel.result": {"404": 1},
    }


async def test_stats_endpoint_serves_the_same_counters() -> None:
    """``GET /_simulator/stats`` returns ``Simulator.stats()`` as JSON."""
    sim = simulator()
    async with client_for(sim) as client:
        await client.post(B_CREATE, json=bigmodel(), headers=AUTH)
        served = (await client.get("/_simulator/stats")).json()
    assert served["tasks_created"] == 1
    assert served["create_requests_by_body"] == sim.stats()["create_requests_by_body"]


async def test_reset_forgets_tasks_and_counters() -> None:
    """``POST /_simulator/reset`` empties the task table and the counters."""
    sim = simulator()
    async with client_for(sim) as client:
        task_id = (await client.post(B_CREATE, json=bigmodel(), headers=AUTH)).json()["id"]
        await client.post("/_simulator/reset")
        r = await client.get(f"{BIGMODEL_PREFIX}/async-result/{task_id}", headers=AUTH)
    assert r.status_code == 404
    assert sim.stats()["tasks_created"] == 0


# ---------------------------------------------------------------- files


async def _finished_video_url(client: httpx.AsyncClient) -> str:
    task_id = (await client.post(B_CREATE, json=bigmodel(), headers=AUTH)).json()["id"]
    body = (await client.get(f"{BIGMODEL_PREFIX}/async-result/{task_id}", headers=AUTH)).json()
    url: str = body["video_result"][0]["url"]
    return url


async def test_result_urls_are_absolute_on_the_request_host() -> None:
    """Result URLs point back at the simulator, built from the Host header."""
    async with client_for(simulator()) as client:
        url = await _finished_video_url(client)
    assert url.startswith("http://sim.test/files/")


async def test_download_declares_content_length() -> None:
    """A download's Content-Length equals the bytes sent, and it advertises byte ranges."""
    async with client_for(simulator()) as client:
        r = await client.get(await _finished_video_url(client))
    assert r.status_code == 200
    assert int(r.headers["content-length"]) == len(r.content) > 0
    assert r.headers["accept-ranges"] == "bytes"


async def test_download_honours_range() -> None:
    """``Range: bytes=4-11`` answers 206 with those bytes and a Content-Range."""
    async with client_for(simulator()) as client:
        url = await _finished_video_url(client)
        whole = (await client.get(url)).content
        part = await client.get(url, headers={"Range": "bytes=4-11"})
    assert part.status_code == 206
    assert part.content == whole[4:12] == b"ftypisom"
    assert part.headers["content-range"] == f"bytes 4-11/{len(whole)}"


async def test_download_unsatisfiable_range_is_416() -> None:
    """A range past the end answers 416 with ``bytes */SIZE``."""
    async with client_for(simulator()) as client:
        url = await _finished_video_url(client)
        r = await client.get(url, headers={"Range": "bytes=99999999-"})
    assert r.status_code == 416
    assert r.headers["content-range"].startswith("bytes */")


async def test_head_gives_length_without_body() -> None:
    """HEAD on a file gives its Content-Length and no body."""
    async with client_for(simulator()) as client:
        url = await _finished_video_url(client)
        head = await client.head(url)
        size = len((await client.get(url)).content)
    assert head.status_code == 200
    assert int(head.headers["content-length"]) == size
    assert head.content == b""


async def test_files_of_unfinished_tasks_are_404() -> None:
    """Before a task finishes its file does not exist."""
    clock = FakeClock()
    async with client_for(simulator(clock, latency=5.0)) as client:
        task_id = (await client.post(B_CREATE, json=bigmodel(), headers=AUTH)).json()["id"]
        clock.now += 10
        url = (await client.get(f"{BIGMODEL_PREFIX}/async-result/{task_id}", headers=AUTH)).json()[
            "video_result"
        ][0]["url"]
        clock.now -= 10
        early = await client.get(url)
    assert early.status_code == 404


async def test_download_bytes_pads_the_served_size() -> None:
    """``download_bytes`` serves a body of exactly that size."""
    async with client_for(simulator(download_bytes=200_000)) as client:
        r = await client.get(await _finished_video_url(client))
    assert len(r.content) == int(r.headers["content-length"]) == 200_000


async def test_geekai_concurrency_limit_is_429() -> None:
    """GeekAI answers 429 with an error object when ``max_concurrent`` tasks are running."""
    async with client_for(simulator(latency=10.0, max_concurrent=1)) as client:
        await client.post(G_CREATE, json=geekai(**{"async": True}), headers=AUTH)
        refused = await client.post(G_CREATE, json=geekai(**{"async": True}), headers=AUTH)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == 429


# ---------------------------------------------------------------- config


def test_config_rejects_nonsense_with_usage_error() -> None:
    """Out-of-range knobs raise UsageError naming each problem."""
    with pytest.raises(
        UsageError, match=r"fault_rate must be between 0 and 1.*unknown fault kinds: boom"
    ):
        SimulatorConfig(fault_rate=2.0, faults=frozenset({"boom"}))


def test_config_from_args_keeps_defaults_for_missing_values() -> None:
    """``config_from_args`` copies given values and leaves None/absent ones at their defaults."""
    args = argparse.Namespace(latency=2.5, rpm=None, max_concurrent=4, fault_rate=0.1, seed=9)
    config = config_from_args(args)
    assert (config.latency, config.rpm, config.max_concurrent, config.fault_rate, config.seed) == (
        2.5,
        None,
        4,
        0.1,
        9,
    )
