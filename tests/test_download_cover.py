"""The cover is committed with the job's last files, and kept when the job fails after it
was downloaded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from batchvid import download, store
from batchvid.errors import JobFatalError
from batchvid.runner import Runner, Settings
from batchvid.simulator import BIGMODEL_PREFIX, Simulator, SimulatorConfig
from tests.helpers import make_job, make_manifest


def _run(out: Path, sim: Simulator, *, strict_media: bool) -> int:
    settings = Settings(
        out_dir=out, provider="bigmodel", base_url=f"http://sim{BIGMODEL_PREFIX}", api_key="k-123456789",
        max_in_flight=2, rpm=None, retries=0, timeout=60.0, poll_min=0.01, poll_max=0.05,
        strict_media=strict_media,
    )
    jobs = [make_job(f"job-{i}", i, "bigmodel") for i in range(2)]
    runner = Runner(make_manifest(jobs), settings, transport=httpx.ASGITransport(app=sim.app))
    return anyio.run(runner.run).exit_code


def test_a_succeeded_jobs_cover_is_in_place_with_its_hash(tmp_path: Path) -> None:
    """The journal's cover record names the file in the job's folder, with its size and the
    sha256 of its bytes; no temporary file is left."""
    out = tmp_path / "out"
    assert _run(out, Simulator(SimulatorConfig()), strict_media=False) == 0
    for record in store.read_records(out).values():
        cover = record.cover
        assert cover is not None
        assert store.sha256_file(out / cover["path"]) == (cover["sha256"], cover["bytes"])
        assert not [p for p in (out / "jobs" / record.id).iterdir() if p.name.startswith(".")]


def test_a_job_failing_its_media_check_keeps_its_cover(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A media check that fails the job (``--strict-media``, a video that does not decode)
    comes after the cover was downloaded: the cover is still renamed into the job's folder."""

    async def undecodable(*args: Any) -> None:
        raise JobFatalError("bad_media", "the video does not decode")

    monkeypatch.setattr(download, "check_media", undecodable)
    out = tmp_path / "out"
    assert _run(out, Simulator(SimulatorConfig()), strict_media=True) == 1
    for n in range(2):
        names = sorted(p.name for p in (out / "jobs" / f"job-{n}").iterdir())
        assert any(name.startswith("cover.") for name in names), names
        assert not [name for name in names if name.startswith(".")], names
    assert {r.error["kind"] for r in store.read_records(out).values() if r.error} == {"bad_media"}
