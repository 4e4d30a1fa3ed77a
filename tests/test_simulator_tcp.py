"""The simulator over TCP (uvicorn on loopback): the official SDK, and faults on a real socket."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import httpx
import pytest
from zai import ZhipuAiClient

from batchvid.simulator import (
    BIGMODEL_PREFIX,
    RunningSimulator,
    Simulator,
    SimulatorConfig,
    running_simulator,
)

AUTH = {"Authorization": "Bearer test-key"}
BODY = {"model": "cogvideox-2", "prompt": "a cat", "size": "720x480"}


@pytest.fixture(scope="module")
def server() -> Iterator[RunningSimulator]:
    with running_simulator(SimulatorConfig()) as running:
        yield running


def _finished_url(client: httpx.Client) -> str:
    task_id = client.post(f"{BIGMODEL_PREFIX}/videos/generations", json=BODY, headers=AUTH).json()[
        "id"
    ]
    body = client.get(f"{BIGMODEL_PREFIX}/async-result/{task_id}", headers=AUTH).json()
    url: str = body["video_result"][0]["url"]
    return url


def test_official_sdk_creates_and_reads_a_task(server: RunningSimulator) -> None:
    """zai-sdk's ZhipuAiClient, unmodified, creates a task and reads its SUCCESS result."""
    client = ZhipuAiClient(api_key="test-key", base_url=f"{server.base_url}{BIGMODEL_PREFIX}")
    created = client.videos.generations(
        model="cogvideox-2", prompt="a cat", size="720x480", request_id="sdk-1", user_id="user-0001"
    )
    assert created.id is not None
    result = client.videos.retrieve_videos_result(id=created.id)
    assert created.task_status == "PROCESSING"
    assert created.request_id == "sdk-1"
    assert result.task_status == "SUCCESS"
    assert result.video_result[0].url.startswith(server.base_url)
    assert httpx.get(result.video_result[0].url).status_code == 200


def test_urls_use_the_loopback_host_and_port(server: RunningSimulator) -> None:
    """Result URLs over TCP are absolute URLs on the served address."""
    with httpx.Client(base_url=server.base_url) as client:
        assert _finished_url(client).startswith(f"{server.base_url}/files/")


def test_stats_are_served_over_tcp(server: RunningSimulator) -> None:
    """``GET /_simulator/stats`` answers JSON with the task counter."""
    with httpx.Client(base_url=server.base_url) as client:
        _finished_url(client)
        stats = client.get("/_simulator/stats").json()
    assert stats["tasks_created"] >= 1


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_truncated_download_breaks_the_connection() -> None:
    """Over TCP a truncated body ends the connection early: the client sees a protocol error."""
    sim = Simulator(SimulatorConfig(fault_rate=1.0, faults=frozenset({"truncated"})))
    with (
        running_simulator(simulator=sim) as running,
        httpx.Client(base_url=running.base_url) as client,
    ):
        url = _finished_url(client)
        with pytest.raises(httpx.RemoteProtocolError):
            client.get(url)


def test_injected_faults_are_not_logged_as_server_errors() -> None:
    """uvicorn does not log the connections the simulator drops on purpose."""
    records = _Records()
    logger = logging.getLogger("uvicorn.error")
    sim = Simulator(SimulatorConfig(fault_rate=1.0, faults=frozenset({"truncated", "reset"})))
    with (
        running_simulator(simulator=sim) as running,
        httpx.Client(base_url=running.base_url) as client,
    ):
        logger.addHandler(records)
        try:
            for _ in range(6):
                with pytest.raises(httpx.TransportError):
                    client.get(f"{BIGMODEL_PREFIX}/async-result/x", headers=AUTH)
        finally:
            logger.removeHandler(records)
    assert sim.stats()["faults"]["reset"] == 6
    assert [r.getMessage() for r in records.records if r.levelno >= logging.ERROR] == []


def test_reset_drops_the_connection() -> None:
    """Over TCP a reset closes the socket after the headers: a transport error, not a 500."""
    sim = Simulator(SimulatorConfig(fault_rate=1.0, faults=frozenset({"reset"})))
    with (
        running_simulator(simulator=sim) as running,
        httpx.Client(base_url=running.base_url) as client,
        pytest.raises(httpx.TransportError),
    ):
        client.post(f"{BIGMODEL_PREFIX}/videos/generations", json=BODY, headers=AUTH)
    assert sim.stats()["tasks_created"] == 0


def test_server_thread_cpu_time_is_measurable(server: RunningSimulator) -> None:
    """``cpu_seconds`` reads the serving thread's CPU clock."""
    assert server.cpu_seconds() > 0
