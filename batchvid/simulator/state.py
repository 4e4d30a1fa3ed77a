"""The simulator's tasks, and the optional directory that keeps them between runs.

With a state directory, every task is written there when it is created (and again when its
download URL changes), one small JSON file per task, atomically (a temporary file, then
``os.replace``). A new ``Simulator`` on the same directory loads them, so a run interrupted and
started again re-attaches to its tasks exactly as against a real server. Task times are kept by
wall clock: a task created an hour ago by the wall clock is done now, whatever the process.

Nothing secret is stored: the API key a task was created with is kept only as a short salted
digest (``account``), which is all the simulator needs (duplicate ``request_id`` detection and
the per-key concurrency limit).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from batchvid.simulator.video import VideoSpec

STATE_VERSION = 1
MAX_STORED_TASKS = 20_000
"""A state directory keeps at most this many tasks; the oldest are dropped when it loads."""


def account(key: str) -> str:
    """A short salted digest standing for an API key (the key itself is never stored)."""
    return hashlib.sha256(b"batchvid-simulator-account\0" + key.encode()).hexdigest()[:20]


@dataclass(slots=True, eq=False)
class Task:
    """One task; ``created``/``ends`` are on the simulator's clock, ``wall`` is wall-clock."""

    id: str
    provider: str
    model: str
    account: str
    request_id: str | None
    identity: tuple[str, str, str]
    """(provider, body hash, request id): with ``nth``, what the task's id derives from."""
    nth: int
    created: float
    ends: float
    wall: float
    fails: bool
    fail_message: str
    spec: VideoSpec
    tag: str
    """Hex content tag, unique per request and sample, written into the video's bytes."""
    token: str
    video_id: str
    expired: dict[str, int] = field(default_factory=dict)
    """Tokens that expired, with the status their URLs now answer."""
    prompt: str = ""
    """The prompt as sent: GeekAI's result carries it back as ``revised_prompt``."""

    def done(self, now: float) -> bool:
        return now >= self.ends

    def to_json(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "id": self.id,
            "provider": self.provider,
            "model": self.model,
            "account": self.account,
            "request_id": self.request_id,
            "identity": list(self.identity),
            "nth": self.nth,
            "wall": self.wall,
            "duration": self.ends - self.created,
            "fails": self.fails,
            "fail_message": self.fail_message,
            "spec": asdict(self.spec),
            "tag": self.tag,
            "token": self.token,
            "video_id": self.video_id,
            "expired": self.expired,
            "prompt": self.prompt,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], now: float, wall_now: float) -> Task:
        """A stored task placed on this process's clock: ``created`` is ``now`` minus the
        wall-clock time that has passed since it was created (never negative)."""
        created = now - max(0.0, wall_now - float(data["wall"]))
        provider, digest, request_id = data["identity"]
        return cls(
            id=data["id"],
            provider=data["provider"],
            model=data["model"],
            account=data["account"],
            request_id=data["request_id"],
            identity=(provider, digest, request_id),
            nth=int(data["nth"]),
            created=created,
            ends=created + float(data["duration"]),
            wall=float(data["wall"]),
            fails=bool(data["fails"]),
            fail_message=data["fail_message"],
            spec=VideoSpec(**data["spec"]),
            tag=data["tag"],
            token=data["token"],
            video_id=data["video_id"],
            expired={k: int(v) for k, v in data["expired"].items()},
            prompt=str(data.get("prompt", "")),
        )


@dataclass(slots=True)
class Stats:
    create_requests: int = 0
    chat_requests: int = 0
    by_body: Counter[str] = field(default_factory=Counter)
    by_request_id: Counter[str] = field(default_factory=Counter)
    tasks_created: int = 0
    tasks_by_body: Counter[str] = field(default_factory=Counter)
    peak_concurrent: int = 0
    peak_window: int = 0
    routes: dict[str, Counter[str]] = field(default_factory=dict)
    faults: Counter[str] = field(default_factory=Counter)
    bytes_served: int = 0


class TaskStore:
    """Tasks as JSON files under ``directory/tasks/`` (created at the first save), written
    atomically."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory / "tasks"

    def _path(self, task: Task) -> Path:
        return self.directory / f"{task.provider}.{task.id}.json"

    def save(self, task: Task) -> None:
        path = self._path(task)
        self.directory.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        data = json.dumps(task.to_json(), sort_keys=True, ensure_ascii=False) + "\n"
        temporary.write_text(data, encoding="utf-8")
        os.replace(temporary, path)

    def load(self, now: float, wall_now: float) -> list[Task]:
        """Every stored task, oldest first; unreadable files and leftovers are removed, and
        beyond ``MAX_STORED_TASKS`` the oldest tasks are forgotten."""
        tasks: list[Task] = []
        for path in self._files():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                if data.get("version") != STATE_VERSION:
                    raise ValueError("unknown state version")
                tasks.append(Task.from_json(data, now, wall_now))
            except (OSError, ValueError, KeyError, TypeError):
                with contextlib.suppress(OSError):
                    path.unlink()
        tasks.sort(key=lambda task: task.wall)
        for task in tasks[: max(0, len(tasks) - MAX_STORED_TASKS)]:
            with contextlib.suppress(OSError):
                self._path(task).unlink()
        return tasks[-MAX_STORED_TASKS:]

    def clear(self) -> None:
        for path in self._files():
            with contextlib.suppress(OSError):
                path.unlink()

    def _files(self) -> Iterator[Path]:
        if not self.directory.is_dir():
            return
        for path in list(self.directory.iterdir()):
            if path.name.endswith(".tmp"):
                with contextlib.suppress(OSError):
                    path.unlink()
            elif path.suffix == ".json":
                yield path
