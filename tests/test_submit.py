"""Sending a create: what is on disk before it leaves, and how its preparation fails."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import httpx
import pytest

from batchvid.offload import alongside
from batchvid.runner import Runner, Settings
from tests.helpers import make_job, make_manifest


def test_request_json_and_the_journal_line_are_on_disk_before_the_create_leaves(tmp_path: Path) -> None:
    """When the create request is sent, request.json holds its body and the journal already
    says the job is submitting (made together, both finished first)."""
    out = tmp_path / "out"
    seen: list[tuple[dict[str, object], bool]] = []

    def server(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            recorded = json.loads((out / "jobs" / "j1" / "request.json").read_text())
            journal = (out / ".batchvid" / "journal.jsonl").read_text()
            seen.append((recorded, '"event":"submitting"' in journal))
            return httpx.Response(200, json={"id": "t1", "request_id": "r", "model": "cogvideox-flash",
                                             "task_status": "PROCESSING"})
        return httpx.Response(200, json={"task_status": "FAIL", "model": "cogvideox-flash"})

    settings = Settings(out_dir=out, provider="bigmodel", base_url="http://sim/api/paas/v4",
                        api_key="test-secret-key-1234567890", rpm=None, poll_min=0.01, poll_max=0.05)
    runner = Runner(make_manifest([make_job("j1", provider="bigmodel")]), settings,
                    transport=httpx.MockTransport(server))
    anyio.run(runner.run)
    assert len(seen) == 1
    recorded, journaled = seen[0]
    assert recorded["prompt"] == "prompt of j1"
    assert journaled


def test_a_failed_turn_raises_its_own_error_after_the_request_write_ends() -> None:
    """The create's turn failing comes out as its own error (no exception group, not the
    write's), once the request.json write beside it has ended."""
    import time

    finished: list[str] = []

    async def fails() -> None:
        raise OSError("no space left")

    def slow_write() -> None:
        time.sleep(0.05)
        finished.append("written")
        raise ValueError("the write's error")

    with pytest.raises(OSError, match="no space left"):
        anyio.run(alongside, fails, slow_write)
    assert finished == ["written"]


def test_a_failed_request_write_raises_once_the_turn_is_done() -> None:
    """When only the write fails, its error comes out after the turn has ended."""
    turned: list[str] = []

    async def turn() -> None:
        await anyio.sleep(0.01)
        turned.append("turn")

    def fails() -> None:
        raise PermissionError("jobs/ is read-only")

    with pytest.raises(PermissionError, match="read-only"):
        anyio.run(alongside, turn, fails)
    assert turned == ["turn"]
