"""A runner given no transport builds the one ``Settings.transport`` names and runs on it."""

from __future__ import annotations

from pathlib import Path

import anyio
import httpx
import pytest

import batchvid.transport
from batchvid.runner import Runner, Settings
from batchvid.simulator import GEEKAI_PREFIX, SimulatorConfig, running_simulator
from batchvid.transport import TRANSPORTS, TransportKind, transport_for
from tests.helpers import make_job, make_manifest


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_the_runner_uses_the_transport_its_settings_name(
    kind: TransportKind, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``transport=None`` the runner asks ``transport_for(settings.transport)`` once, shares
    it between its clients, and two jobs succeed over TCP against the simulator."""
    asked: list[str] = []
    built: list[httpx.AsyncBaseTransport | None] = []

    def recording(which: TransportKind) -> httpx.AsyncBaseTransport | None:
        asked.append(which)
        built.append(transport_for(which))
        return built[-1]

    monkeypatch.setattr(batchvid.transport, "transport_for", recording)
    jobs = [make_job(f"j{i}", i, prompt=f"a fox number {i}") for i in range(2)]
    with running_simulator(SimulatorConfig(latency=0.0, video_seconds=0.5, max_side=64)) as sim:
        settings = Settings(out_dir=tmp_path / "out", base_url=f"{sim.base_url}{GEEKAI_PREFIX}",
                            api_key="sk-test", poll_min=0.05, poll_max=0.1, rpm=None,
                            transport=kind)
        result = anyio.run(Runner(make_manifest(jobs), settings).run)
    assert asked == [kind]
    assert (built[0] is None) == (kind == "httpx")  # httpx's own: built by the client itself
    assert [o.status for o in result.outcomes] == ["succeeded", "succeeded"]
