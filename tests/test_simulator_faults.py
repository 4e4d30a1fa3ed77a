"""Injected faults: each kind, where it strikes, and that none creates or loses a task."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import httpx
import pytest

from batchvid.simulator import (
    BIGMODEL_PREFIX,
    GEEKAI_PREFIX,
    SimulatedConnectionReset,
    Simulator,
    SimulatorConfig,
)

pytestmark = pytest.mark.anyio

AUTH = {"Authorization": "Bearer test-key"}
B_CREATE = f"{BIGMODEL_PREFIX}/videos/generations"
G_CREATE = f"{GEEKAI_PREFIX}/videos/generations"
BODY = {"model": "cogvideox-2", "prompt": "a cat", "size": "720x480"}


@asynccontextmanager
async def client_for(sim: Simulator) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=sim.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sim.test") as client:
        yield client


def faulty(*kinds: str, rate: float = 1.0, **knobs: Any) -> Simulator:
    return Simulator(SimulatorConfig(fault_rate=rate, faults=frozenset(kinds), **knobs))


async def _video_url(client: httpx.AsyncClient) -> tuple[str, str]:
    task_id = (await client.post(B_CREATE, json=BODY, headers=AUTH)).json()["id"]
    body = (await client.get(f"{BIGMODEL_PREFIX}/async-result/{task_id}", headers=AUTH)).json()
    return task_id, body["video_result"][0]["url"]


@pytest.mark.parametrize(
    ("kind", "status", "code"), [("status_500", 500, "1234"), ("status_503", 503, "1230")]
)
async def test_create_server_error_creates_no_task(kind: str, status: int, code: str) -> None:
    """A 5xx on create comes before the task exists; the body has a string code."""
    sim = faulty(kind)
    async with client_for(sim) as client:
        r = await client.post(B_CREATE, json=BODY, headers=AUTH)
    assert r.status_code == status
    assert r.json()["error"]["code"] == code
    assert sim.stats()["tasks_created"] == 0
    assert sim.stats()["faults"] == {kind: 1}


async def test_gateway_timeout_has_an_html_body() -> None:
    """A 504 answers HTML, as a gateway in front of the API would."""
    async with client_for(faulty("status_504")) as client:
        r = await client.post(
            G_CREATE, json={"model": "cogvideox-flash", "prompt": "x"}, headers=AUTH
        )
    assert r.status_code == 504
    assert r.headers["content-type"] == "text/html"


async def test_create_reset_raises_a_transport_error_and_creates_no_task() -> None:
    """A reset on create surfaces as ``httpx.ReadError`` in process, and no task exists."""
    sim = faulty("reset")
    async with client_for(sim) as client:
        with pytest.raises(httpx.ReadError):
            await client.post(B_CREATE, json=BODY, headers=AUTH)
    assert sim.stats()["tasks_created"] == 0
    assert sim.stats()["create_requests"] == 1


async def test_lost_create_keeps_the_task_and_a_retry_gets_1231() -> None:
    """A lost create response leaves the task created; resubmitting its request_id gets 1231."""
    sim = Simulator(SimulatorConfig(lost_create_rate=1.0))
    body = {**BODY, "request_id": "job-1"}
    async with client_for(sim) as client:
        with pytest.raises(SimulatedConnectionReset):
            await client.post(B_CREATE, json=body, headers=AUTH)
        retry = await client.post(B_CREATE, json=body, headers=AUTH)
    assert retry.json()["error"]["code"] == "1231"
    assert sim.stats()["tasks_created"] == 1
    assert sim.stats()["create_requests_by_request_id"] == {"job-1": 2}
    assert sim.stats()["faults"] == {"lost_create": 1}


async def test_overloaded_is_opt_in_1305() -> None:
    """The opt-in ``overloaded`` fault answers BigModel 429 code 1305."""
    async with client_for(faulty("overloaded")) as client:
        r = await client.post(B_CREATE, json=BODY, headers=AUTH)
    assert r.status_code == 429
    assert r.json()["error"]["code"] == "1305"


async def test_poll_server_error_leaves_the_task_intact() -> None:
    """A 503 on poll is transient: the same task answers normally when faults stop."""
    sim = faulty("status_503", rate=0.0)
    async with client_for(sim) as client:
        task_id = (await client.post(B_CREATE, json=BODY, headers=AUTH)).json()["id"]
        sim.config = replace(sim.config, fault_rate=1.0)
        failed = await client.get(f"{BIGMODEL_PREFIX}/async-result/{task_id}", headers=AUTH)
        sim.config = replace(sim.config, fault_rate=0.0)
        ok = await client.get(f"{BIGMODEL_PREFIX}/async-result/{task_id}", headers=AUTH)
    assert failed.status_code == 503
    assert ok.json()["task_status"] == "SUCCESS"


async def test_truncated_download_declares_more_than_it_sends() -> None:
    """A truncated download's Content-Length is larger than the bytes received."""
    sim = faulty("truncated", rate=0.0)
    async with client_for(sim) as client:
        _, url = await _video_url(client)
        sim.config = replace(sim.config, fault_rate=1.0)
        r = await client.get(url)
    assert r.status_code == 200
    assert int(r.headers["content-length"]) > len(r.content) > 0


async def test_expired_url_fails_once_then_polling_refreshes_it() -> None:
    """The first fetch of a result URL is 403/404/410; polling again gives a fresh URL that works."""
    sim = faulty("expired_url")
    async with client_for(sim) as client:
        task_id, url = await _video_url(client)
        expired = await client.get(url)
        body = (await client.get(f"{BIGMODEL_PREFIX}/async-result/{task_id}", headers=AUTH)).json()
        fresh_url = body["video_result"][0]["url"]
        fresh = await client.get(fresh_url)
        again = await client.get(url)
    assert expired.status_code in (403, 404, 410)
    assert fresh_url != url
    assert fresh.status_code == 200 and fresh.content.startswith(b"\x00\x00\x00")
    assert again.status_code == expired.status_code


async def test_task_fail_fault_ends_the_task_failed() -> None:
    """The ``task_fail`` fault makes an ordinary task end in FAIL, and is counted."""
    sim = faulty("task_fail")
    async with client_for(sim) as client:
        task_id = (await client.post(B_CREATE, json=BODY, headers=AUTH)).json()["id"]
        body = (await client.get(f"{BIGMODEL_PREFIX}/async-result/{task_id}", headers=AUTH)).json()
    assert body["task_status"] == "FAIL"
    assert sim.stats()["faults"] == {"task_fail": 1}


async def test_no_faults_by_default() -> None:
    """With the default config nothing is injected."""
    sim = Simulator()
    async with client_for(sim) as client:
        for _ in range(20):
            await _video_url(client)
    assert sim.stats()["faults"] == {}


async def test_faults_are_reproducible_for_a_seed() -> None:
    """The same seed and the same request sequence give the same statuses."""

    async def statuses() -> list[int]:
        sim = Simulator(SimulatorConfig(fault_rate=0.5, faults=frozenset({"status_503"}), seed=7))
        async with client_for(sim) as client:
            return [
                (await client.post(B_CREATE, json=BODY, headers=AUTH)).status_code
                for _ in range(20)
            ]

    first = await statuses()
    assert first == await statuses()
    assert set(first) == {200, 503}


async def test_mixed_faults_never_duplicate_or_lose_tasks() -> None:
    """Under the full default fault mix, each accepted create is exactly one task."""
    sim = Simulator(SimulatorConfig(fault_rate=0.3, seed=3))
    accepted = 0
    async with client_for(sim) as client:
        for _ in range(60):
            try:
                r = await client.post(B_CREATE, json=BODY, headers=AUTH)
            except httpx.ReadError:
                continue
            accepted += r.status_code == 200
    assert sim.stats()["tasks_created"] == accepted
