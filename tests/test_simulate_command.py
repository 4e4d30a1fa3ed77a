"""`batchvid simulate`, the command: served on loopback, stopped with Ctrl-C, and `--state-dir`."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from batchvid.cli import main
from batchvid.simulator import BIGMODEL_PREFIX

AUTH = {"Authorization": "Bearer test-key"}
BODY = {"model": "cogvideox-2", "prompt": "a cat", "size": "720x480"}
TIMEOUT = 30
"""The URL is printed once the socket listens; the first request waits in its backlog until
uvicorn has started, which on a loaded machine can take longer than httpx's default 5 s."""


@contextmanager
def _simulate(*options: str) -> Iterator[str]:
    """``batchvid simulate --port 0`` in a child process; yields its base URL, then Ctrl-C."""
    child = subprocess.Popen(
        [sys.executable, "-m", "batchvid", "simulate", "--port", "0", *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line.startswith("batchvid simulator on http://127.0.0.1:"), line
        yield line.split()[3]
    finally:
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=30)
    assert child.returncode == 0, err
    assert "Traceback" not in err


def _create(base_url: str) -> str:
    reply = httpx.post(f"{base_url}{BIGMODEL_PREFIX}/videos/generations", json=BODY, headers=AUTH, timeout=TIMEOUT)
    assert reply.status_code == 200, reply.text
    task_id: str = reply.json()["id"]
    return task_id


def _task_status(base_url: str, task_id: str) -> int:
    return httpx.get(f"{base_url}{BIGMODEL_PREFIX}/async-result/{task_id}", headers=AUTH, timeout=TIMEOUT).status_code


def test_a_restarted_simulator_with_a_state_dir_knows_its_tasks(tmp_path: Path) -> None:
    """A task created before Ctrl-C is known to a new `simulate --state-dir` on the same DIR."""
    state = tmp_path / "state"
    with _simulate("--latency", "0.1", "--state-dir", str(state)) as url:
        task_id = _create(url)
    with _simulate("--latency", "0.1", "--state-dir", str(state)) as url:
        assert _task_status(url, task_id) == 200
    assert list((state / "tasks").iterdir())


def test_without_a_state_dir_a_restart_forgets_tasks(tmp_path: Path) -> None:
    """Without --state-dir, tasks live in memory only: a restarted simulator answers 404."""
    with _simulate("--latency", "0.1") as url:
        task_id = _create(url)
        assert _task_status(url, task_id) == 200
    with _simulate("--latency", "0.1") as url:
        assert _task_status(url, task_id) == 404


def test_a_state_dir_that_cannot_be_a_directory_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--state-dir naming a file exits 2 with a message naming it, before anything is served."""
    (tmp_path / "file").write_text("x")
    assert main(["simulate", "--port", "0", "--state-dir", str(tmp_path / "file")]) == 2
    assert f"--state-dir {tmp_path / 'file'}: cannot use it" in capsys.readouterr().err
