"""Simulator tasks kept in a state directory survive into a new simulator (resume offline)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from batchvid.simulator import BIGMODEL_PREFIX, GEEKAI_PREFIX, Simulator, SimulatorConfig

pytestmark = pytest.mark.anyio

KEY = "sk-state-test-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
B_CREATE = f"{BIGMODEL_PREFIX}/videos/generations"
G_CREATE = f"{GEEKAI_PREFIX}/videos/generations"
BODY = {"model": "cogvideox-2", "prompt": "a cat", "size": "720x480", "request_id": "job-1"}
BODY_G = {"model": "cogvideox-flash", "prompt": "a dog", "size": "1280x960"}


class Clocks:
    """A monotonic clock and a wall clock that tests move by hand."""

    def __init__(self, monotonic: float = 50.0, wall: float = 1_800_000_000.0) -> None:
        self.monotonic = monotonic
        self.wall = wall

    def simulator(self, state_dir: Path, **knobs: Any) -> Simulator:
        async def sleep(seconds: float) -> None:
            self.monotonic += seconds
            self.wall += seconds

        return Simulator(
            SimulatorConfig(**knobs),
            clock=lambda: self.monotonic,
            sleep=sleep,
            state_dir=state_dir,
            wall_clock=lambda: self.wall,
        )


@asynccontextmanager
async def client_for(sim: Simulator) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=sim.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sim.test") as client:
        yield client


async def test_a_new_simulator_on_the_state_dir_answers_polls_and_downloads(
    tmp_path: Path,
) -> None:
    """Tasks created before a restart are polled and downloaded, with the same bytes."""
    clocks = Clocks()
    async with client_for(clocks.simulator(tmp_path)) as client:
        task_id = (await client.post(B_CREATE, json=BODY, headers=AUTH)).json()["id"]
        result = await client.get(f"{BIGMODEL_PREFIX}/async-result/{task_id}", headers=AUTH)
        before = (await client.get(result.json()["video_result"][0]["url"])).content
    clocks.monotonic = 3.0  # a new process: its monotonic clock has nothing to do with the last
    async with client_for(clocks.simulator(tmp_path)) as client:
        polled = await client.get(f"{BIGMODEL_PREFIX}/async-result/{task_id}", headers=AUTH)
        assert polled.status_code == 200
        assert polled.json()["task_status"] == "SUCCESS"
        assert polled.json()["request_id"] == "job-1"
        after = await client.get(polled.json()["video_result"][0]["url"])
    assert after.status_code == 200
    assert after.content == before


async def test_a_stored_task_keeps_running_by_the_wall_clock(tmp_path: Path) -> None:
    """A task of 10 s is still running 4 s later in a new simulator, and done after 11 s."""
    clocks = Clocks()
    async with client_for(clocks.simulator(tmp_path, latency=10.0, seed=3)) as client:
        created = await client.post(G_CREATE, json={**BODY_G, "async": True}, headers=AUTH)
        task_id = created.json()["task_id"]
    poll = f"{GEEKAI_PREFIX}/video/{task_id}/result"
    for elapsed in (4.0, 16.0):
        later = Clocks(monotonic=7.0, wall=clocks.wall + elapsed)
        async with client_for(later.simulator(tmp_path, latency=10.0, seed=3)) as client:
            status = (await client.get(poll, headers=AUTH)).json()["task_status"]
        assert status == ("succeed" if elapsed == 16.0 else "running")


async def test_a_stored_request_id_is_still_a_duplicate(tmp_path: Path) -> None:
    """After a restart, creating again under a known BigModel request_id is refused (1231)."""
    clocks = Clocks()
    async with client_for(clocks.simulator(tmp_path)) as client:
        assert (await client.post(B_CREATE, json=BODY, headers=AUTH)).status_code == 200
    async with client_for(clocks.simulator(tmp_path)) as client:
        again = await client.post(B_CREATE, json=BODY, headers=AUTH)
    assert again.status_code == 400
    assert again.json()["error"]["code"] == "1231"


async def test_new_tasks_after_a_restart_get_new_ids(tmp_path: Path) -> None:
    """The same GeekAI body created before and after a restart gives two distinct tasks."""
    clocks = Clocks()
    ids = []
    for _ in range(2):
        async with client_for(clocks.simulator(tmp_path)) as client:
            created = await client.post(G_CREATE, json={**BODY_G, "async": True}, headers=AUTH)
            ids.append(created.json()["task_id"])
    assert ids[0] != ids[1]


async def test_without_a_state_dir_a_new_simulator_knows_no_task(tmp_path: Path) -> None:
    """Without ``state_dir`` nothing is kept: the task is unknown to the next simulator."""
    async with client_for(Simulator()) as client:
        task_id = (await client.post(B_CREATE, json=BODY, headers=AUTH)).json()["id"]
    async with client_for(Simulator()) as client:
        polled = await client.get(f"{BIGMODEL_PREFIX}/async-result/{task_id}", headers=AUTH)
    assert polled.status_code == 404


async def test_the_state_dir_never_holds_the_api_key(tmp_path: Path) -> None:
    """Stored tasks name the account by a digest, never by the API key."""
    clocks = Clocks()
    async with client_for(clocks.simulator(tmp_path)) as client:
        await client.post(B_CREATE, json=BODY, headers=AUTH)
        await client.post(G_CREATE, json={**BODY_G, "async": True}, headers=AUTH)
    files = list((tmp_path / "tasks").iterdir())
    assert len(files) == 2
    assert all(KEY not in path.read_text() for path in files)


async def test_a_damaged_state_file_is_dropped_not_fatal(tmp_path: Path) -> None:
    """An unreadable task file and a leftover temporary file are removed when loading."""
    clocks = Clocks()
    async with client_for(clocks.simulator(tmp_path)) as client:
        task_id = (await client.post(B_CREATE, json=BODY, headers=AUTH)).json()["id"]
    (tmp_path / "tasks" / "bigmodel.broken.json").write_text('{"version": 1, "id"')
    (tmp_path / "tasks" / ".bigmodel.x.json.123.tmp").write_text("{")
    async with client_for(clocks.simulator(tmp_path)) as client:
        polled = await client.get(f"{BIGMODEL_PREFIX}/async-result/{task_id}", headers=AUTH)
    assert polled.status_code == 200
    assert sorted(p.name for p in (tmp_path / "tasks").iterdir()) == [f"bigmodel.{task_id}.json"]


async def test_reset_forgets_stored_tasks(tmp_path: Path) -> None:
    """POST /_simulator/reset empties the state directory too."""
    clocks = Clocks()
    async with client_for(clocks.simulator(tmp_path)) as client:
        task_id = (await client.post(B_CREATE, json=BODY, headers=AUTH)).json()["id"]
        assert (await client.post("/_simulator/reset")).status_code == 200
    async with client_for(clocks.simulator(tmp_path)) as client:
        polled = await client.get(f"{BIGMODEL_PREFIX}/async-result/{task_id}", headers=AUTH)
    assert polled.status_code == 404


async def test_loading_keeps_at_most_the_newest_tasks(tmp_path: Path, monkeypatch: Any) -> None:
    """Beyond MAX_STORED_TASKS, the oldest stored tasks are forgotten and their files removed."""
    monkeypatch.setattr("batchvid.simulator.state.MAX_STORED_TASKS", 2)
    clocks = Clocks()
    ids = []
    async with client_for(clocks.simulator(tmp_path)) as client:
        for n in range(3):
            clocks.wall += 1
            body = {**BODY, "request_id": f"job-{n}"}
            ids.append((await client.post(B_CREATE, json=body, headers=AUTH)).json()["id"])
    clocks.simulator(tmp_path)
    kept = sorted(p.name for p in (tmp_path / "tasks").iterdir())
    assert kept == sorted(f"bigmodel.{task_id}.json" for task_id in ids[1:])
