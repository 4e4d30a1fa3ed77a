"""The simulator: one ASGI application speaking GeekAI's and BigModel's video and chat APIs.

Routes (see ``docs/api-notes.md``)::

    POST {GEEKAI_PREFIX}/videos/generations        GeekAI create (async defaults to false)
    GET  {GEEKAI_PREFIX}/video/{task_id}/result    GeekAI task
    GET  {GEEKAI_PREFIX}/videos/{task_id}          GeekAI task (alternative path)
    POST {GEEKAI_PREFIX}/chat/completions          GeekAI chat completion (OpenAI-compatible)
    POST {BIGMODEL_PREFIX}/videos/generations      BigModel create
    GET  {BIGMODEL_PREFIX}/async-result/{id}       BigModel task
    POST {BIGMODEL_PREFIX}/chat/completions        BigModel chat completion
    GET  /files/{token}/{task_id}.mp4 | .png       result files (HEAD and Range supported)
    GET  /_simulator/stats                         counters as JSON
    POST /_simulator/reset                         forget every task and counter

Tasks progress lazily: a task is terminal once ``clock() >= created + duration``. Choices where
the docs are silent: GeekAI HTTP errors are ``{"error": {"code": <HTTP status as int, or an
upstream code as str>, "message": ...}}``; a duplicate BigModel ``request_id`` is HTTP 400 code
``1231``; an unknown task id is HTTP 404 (BigModel code ``1214``); a 504 carries an HTML body as
a gateway would; 429 for ``rpm`` carries ``Retry-After``, 429 for concurrency does not.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import anyio
import httpx

from batchvid.simulator.chat import ChatRoutes
from batchvid.simulator.config import (
    BIGMODEL_PREFIX,
    CONTROL_PREFIX,
    FILES_PREFIX,
    GEEKAI_PREFIX,
    SimulatorConfig,
)
from batchvid.simulator.core import Core
from batchvid.simulator.files import FileRoutes
from batchvid.simulator.replies import (
    Receive,
    Reply,
    Scope,
    Send,
    json_reply,
    method_not_allowed,
)
from batchvid.simulator.videos import VideoRoutes, body_hash

__all__ = ["SimulatedConnectionReset", "Simulator", "body_hash"]


class SimulatedConnectionReset(httpx.ReadError):
    """Raised by the app to drop a connection.

    Through ``httpx.ASGITransport`` the client sees this ``httpx.ReadError``; over uvicorn the
    connection is closed after the response headers, so the client sees a protocol error.
    """

    def __init__(self, message: str = "simulated connection reset") -> None:
        super().__init__(message)


_TASK_PATHS = (
    (re.compile(re.escape(GEEKAI_PREFIX) + r"/video/([^/]+)/result"), "geekai.result"),
    (re.compile(re.escape(GEEKAI_PREFIX) + r"/videos/([^/]+)"), "geekai.task"),
    (re.compile(re.escape(BIGMODEL_PREFIX) + r"/async-result/([^/]+)"), "bigmodel.result"),
    (re.compile(re.escape(FILES_PREFIX) + r"/([0-9a-f]+)/([^/]+)\.(mp4|png)"), "files"),
)
_POSTS = {
    f"{GEEKAI_PREFIX}/videos/generations": ("geekai", "create"),
    f"{BIGMODEL_PREFIX}/videos/generations": ("bigmodel", "create"),
    f"{GEEKAI_PREFIX}/chat/completions": ("geekai", "chat"),
    f"{BIGMODEL_PREFIX}/chat/completions": ("bigmodel", "chat"),
}


class Simulator:
    """Both providers in one ASGI app (``.app``), with counters (``.stats()``).

    ``clock`` gives seconds (monotonic); ``sleep`` waits on it (GeekAI ``async: false`` blocks
    through it), so a test with a fake clock passes a ``sleep`` that advances that clock.
    With ``state_dir``, tasks are kept in that directory and a new simulator on it knows them
    (see ``batchvid.simulator.state``); ``wall_clock`` (seconds since the epoch) dates them.
    """

    def __init__(
        self,
        config: SimulatorConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        state_dir: Path | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._core = Core(config or SimulatorConfig(), clock, sleep, state_dir, wall_clock)
        self.media = self._core.media
        self._videos = VideoRoutes(self._core)
        self._files = FileRoutes(self._core)
        self._chat = ChatRoutes(self._core)

    @property
    def config(self) -> SimulatorConfig:
        """The settings; assigning new ones takes effect at the next request."""
        return self._core.config

    @config.setter
    def config(self, config: SimulatorConfig) -> None:
        self._core.config = config

    def stats(self) -> dict[str, Any]:
        """The counters, as served at ``GET /_simulator/stats``.

        ``create_requests`` counts every create received (whatever its answer);
        ``create_requests_by_body`` counts them by ``body_hash`` and
        ``create_requests_by_request_id`` by BigModel ``request_id``; ``tasks_created`` and
        ``tasks_by_body`` count tasks that really exist (created by this simulator, not loaded
        from ``state_dir``). ``chat_requests`` counts chat completion requests received.
        ``peak_concurrent_tasks`` is the most non-terminal tasks at once (all keys);
        ``peak_create_requests_per_60s`` the busiest sliding 60 s window of creates received. ``requests`` maps route -> status (or ``reset``) -> count;
        ``faults`` maps fault kind -> count (``lost_create`` included).
        """
        core = self._core
        with core.lock:
            s = core.stats
            return {
                "create_requests": s.create_requests,
                "create_requests_by_body": dict(sorted(s.by_body.items())),
                "create_requests_by_request_id": dict(sorted(s.by_request_id.items())),
                "chat_requests": s.chat_requests,
                "tasks_created": s.tasks_created,
                "tasks_by_body": dict(sorted(s.tasks_by_body.items())),
                "peak_concurrent_tasks": s.peak_concurrent,
                "peak_create_requests_per_60s": s.peak_window,
                "requests": {r: dict(sorted(c.items())) for r, c in sorted(s.routes.items())},
                "faults": dict(sorted(s.faults.items())),
                "bytes_served": s.bytes_served,
                "videos_rendered": core.media.renders,
            }

    def reset(self) -> None:
        """Forget every task and counter (the seeded generators start again), stored ones too."""
        core = self._core
        with core.lock:
            core.reset()
            if core.store is not None:
                core.store.clear()

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI 3 entry point."""
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        route, reply = await self._dispatch(scope, receive)
        label = "reset" if reply.drop == "reset" else str(reply.status)
        with self._core.lock:
            self._core.stats.routes.setdefault(route, Counter())[label] += 1
        await self._send(scope, send, reply)

    async def _dispatch(self, scope: Scope, receive: Receive) -> tuple[str, Reply]:
        method: str = scope["method"]
        path: str = scope["path"]
        if path in _POSTS:
            provider, kind = _POSTS[path]
            route = f"{provider}.{kind}"
            if method != "POST":
                return route, method_not_allowed()
            body, too_large, now = await self._core.read_json(provider, receive, kind)
            if too_large is not None:
                return route, too_large
            answer = self._chat.complete if kind == "chat" else self._videos.create
            return route, await answer(provider, scope, body, now)
        if path == f"{CONTROL_PREFIX}/stats":
            return "simulator.stats", json_reply(200, self.stats())
        if path == f"{CONTROL_PREFIX}/reset" and method == "POST":
            self.reset()
            return "simulator.reset", json_reply(200, {"reset": True})
        for pattern, route in _TASK_PATHS:
            match = pattern.fullmatch(path)
            if match is None:
                continue
            if route == "files":
                if method not in ("GET", "HEAD"):
                    return route, method_not_allowed()
                token, task_id, ext = match.groups()
                return f"files.{ext}", self._files.file(scope, token, task_id, ext)
            if method != "GET":
                return route, method_not_allowed()
            provider = route.split(".")[0]
            return route, self._videos.poll(provider, scope, match.group(1))
        return "unknown", json_reply(
            404, {"error": {"code": 404, "message": f"no route for {path}"}}
        )

    async def _send(self, scope: Scope, send: Send, reply: Reply) -> None:
        length = reply.length if reply.stream is not None else len(reply.body)
        assert length is not None
        headers = [*reply.headers, (b"content-length", str(length).encode())]
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        if reply.drop == "reset":
            raise SimulatedConnectionReset()
        if scope["method"] == "HEAD":
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        chunks: Iterable[bytes] = reply.stream if reply.stream is not None else (reply.body,)
        budget = length // 2 if reply.drop == "truncated" else length
        sent = 0
        try:
            for chunk in chunks:
                piece = chunk[: budget - sent]
                if piece:
                    await send({"type": "http.response.body", "body": piece, "more_body": True})
                    sent += len(piece)
                if sent >= budget:
                    break
            # A server that declared more than it sends: uvicorn refuses to end the message
            # and the connection is closed, which is how a client sees a truncated download.
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except Exception as exc:
            if reply.drop == "truncated":
                raise SimulatedConnectionReset("simulated truncated body") from exc
            raise
        finally:
            with self._core.lock:
                self._core.stats.bytes_served += sent
