"""The simulator: one ASGI application speaking GeekAI's and BigModel's video APIs.

Routes (see ``docs/api-notes.md``)::

    POST {GEEKAI_PREFIX}/videos/generations        GeekAI create (async defaults to false)
    GET  {GEEKAI_PREFIX}/video/{task_id}/result    GeekAI task
    GET  {GEEKAI_PREFIX}/videos/{task_id}          GeekAI task (alternative path)
    POST {BIGMODEL_PREFIX}/videos/generations      BigModel create
    GET  {BIGMODEL_PREFIX}/async-result/{id}       BigModel task
    GET  /files/{token}/{task_id}.mp4 | .png       result files (HEAD and Range supported)
    GET  /_simulator/stats                         counters as JSON
    POST /_simulator/reset                         forget every task and counter

Tasks progress lazily: a task is terminal once ``clock() >= created + duration``. Choices where
the docs are silent: GeekAI HTTP errors are ``{"error": {"code": <HTTP status as int, or an
upstream code as str>, "message": ...}}``; a duplicate BigModel ``request_id`` is HTTP 400 code
``1231``; an unknown task id is HTTP 404 (BigModel code ``1214``); a 504 carries an HTML body as
a gateway would; 429 for ``rpm`` carries ``Retry-After``, 429 for concurrency does not.

Task ids (and file tokens) are a function of the seed, the provider, the ``body_hash``, the
BigModel ``request_id`` and how many tasks that body already has, so the same requests give the
same ids in any order, in any run: a sharded run, merged, and an unsharded run write the same
``batchvid.lock``.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import math
import random
import re
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx

from batchvid.simulator.config import (
    BIGMODEL_PREFIX,
    CONTROL_PREFIX,
    FILES_PREFIX,
    GEEKAI_PREFIX,
    KEY_ARREARS,
    KEY_DAILY_QUOTA,
    KEY_EXPIRED,
    KEY_INVALID,
    SimulatorConfig,
)
from batchvid.simulator.contract import Rejected, Request, check_bigmodel, check_geekai
from batchvid.simulator.video import MediaCache, VideoSpec, iter_padded, padded_size, scaled_size

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

WINDOW = 60.0
HASH_EXCLUDED = frozenset({"async", "request_id", "user_id"})


class SimulatedConnectionReset(httpx.ReadError):
    """Raised by the app to drop a connection.

    Through ``httpx.ASGITransport`` the client sees this ``httpx.ReadError``; over uvicorn the
    connection is closed after the response headers, so the client sees a protocol error.
    """

    def __init__(self, message: str = "simulated connection reset") -> None:
        super().__init__(message)


def body_hash(body: Mapping[str, Any]) -> str:
    """sha256 of a create body as canonical JSON, without ``async``, ``request_id``,
    ``user_id`` and ``null`` values: the same job submitted twice hashes the same."""
    kept = {k: v for k, v in body.items() if k not in HASH_EXCLUDED and v is not None}
    canonical = json.dumps(kept, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(slots=True)
class _Reply:
    status: int
    body: bytes = b""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    stream: Iterable[bytes] | None = None
    length: int | None = None
    drop: str | None = None
    """``reset``: close after the headers; ``truncated``: send half the declared body."""


def _json(status: int, payload: Any, headers: Iterable[tuple[bytes, bytes]] = ()) -> _Reply:
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return _Reply(status, body, [(b"content-type", b"application/json"), *headers])


@dataclass(slots=True, eq=False)
class _Task:
    id: str
    provider: str
    model: str
    key: str
    request_id: str | None
    created: float
    ends: float
    fails: bool
    fail_message: str
    spec: VideoSpec
    token: str
    video_id: str
    expired: dict[str, int] = field(default_factory=dict)
    """Tokens that expired, with the status their URLs now answer."""

    def done(self, now: float) -> bool:
        return now >= self.ends


@dataclass(slots=True)
class _Stats:
    create_requests: int = 0
    by_body: Counter[str] = field(default_factory=Counter)
    by_request_id: Counter[str] = field(default_factory=Counter)
    tasks_created: int = 0
    tasks_by_body: Counter[str] = field(default_factory=Counter)
    peak_concurrent: int = 0
    peak_window: int = 0
    routes: dict[str, Counter[str]] = field(default_factory=dict)
    faults: Counter[str] = field(default_factory=Counter)
    bytes_served: int = 0


_TASK_PATHS = (
    (re.compile(re.escape(GEEKAI_PREFIX) + r"/video/([^/]+)/result"), "geekai.result"),
    (re.compile(re.escape(GEEKAI_PREFIX) + r"/videos/([^/]+)"), "geekai.task"),
    (re.compile(re.escape(BIGMODEL_PREFIX) + r"/async-result/([^/]+)"), "bigmodel.result"),
    (re.compile(re.escape(FILES_PREFIX) + r"/([0-9a-f]+)/([^/]+)\.(mp4|png)"), "files"),
)


class Simulator:
    """Both providers in one ASGI app (``.app``), with counters (``.stats()``).

    ``clock`` gives seconds (monotonic); ``sleep`` waits on it (GeekAI ``async: false`` blocks
    through it), so a test with a fake clock passes a ``sleep`` that advances that clock.
    """

    def __init__(
        self,
        config: SimulatorConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        self.config = config or SimulatorConfig()
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self.media = MediaCache()
        self._reset()

    def _reset(self) -> None:
        seed = self.config.seed
        self._ids = random.Random(f"ids:{seed}")
        self._latency = random.Random(f"latency:{seed}")
        self._faults = random.Random(f"faults:{seed}")
        self._tasks: dict[tuple[str, str], _Task] = {}
        self._request_ids: dict[tuple[str, str], str] = {}
        self._created: Counter[tuple[str, str, str]] = Counter()
        self._active: dict[str, list[float]] = {}
        self._active_all: list[float] = []
        self._admitted: dict[str, deque[float]] = {}
        self._received: deque[float] = deque()
        self._stats = _Stats()

    # ------------------------------------------------------------------ public

    def stats(self) -> dict[str, Any]:
        """The counters, as served at ``GET /_simulator/stats``.

        ``create_requests`` counts every create received (whatever its answer);
        ``create_requests_by_body`` counts them by ``body_hash`` and
        ``create_requests_by_request_id`` by BigModel ``request_id``; ``tasks_created`` and
        ``tasks_by_body`` count tasks that really exist. ``peak_concurrent_tasks`` is the most
        non-terminal tasks at once (all keys); ``peak_create_requests_per_60s`` the busiest
        sliding 60 s window of creates received. ``requests`` maps route -> status (or
        ``reset``) -> count; ``faults`` maps fault kind -> count (``lost_create`` included).
        """
        with self._lock:
            s = self._stats
            return {
                "create_requests": s.create_requests,
                "create_requests_by_body": dict(sorted(s.by_body.items())),
                "create_requests_by_request_id": dict(sorted(s.by_request_id.items())),
                "tasks_created": s.tasks_created,
                "tasks_by_body": dict(sorted(s.tasks_by_body.items())),
                "peak_concurrent_tasks": s.peak_concurrent,
                "peak_create_requests_per_60s": s.peak_window,
                "requests": {r: dict(sorted(c.items())) for r, c in sorted(s.routes.items())},
                "faults": dict(sorted(s.faults.items())),
                "bytes_served": s.bytes_served,
                "videos_rendered": self.media.renders,
            }

    def reset(self) -> None:
        """Forget every task and counter (the seeded generators start again)."""
        with self._lock:
            self._reset()

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
        with self._lock:
            self._stats.routes.setdefault(route, Counter())[label] += 1
        await self._send(scope, send, reply)

    # ------------------------------------------------------------------ plumbing

    async def _dispatch(self, scope: Scope, receive: Receive) -> tuple[str, _Reply]:
        method: str = scope["method"]
        path: str = scope["path"]
        if path == f"{GEEKAI_PREFIX}/videos/generations":
            if method != "POST":
                return "geekai.create", _method_not_allowed()
            return "geekai.create", await self._create("geekai", scope, receive)
        if path == f"{BIGMODEL_PREFIX}/videos/generations":
            if method != "POST":
                return "bigmodel.create", _method_not_allowed()
            return "bigmodel.create", await self._create("bigmodel", scope, receive)
        if path == f"{CONTROL_PREFIX}/stats":
            return "simulator.stats", _json(200, self.stats())
        if path == f"{CONTROL_PREFIX}/reset" and method == "POST":
            self.reset()
            return "simulator.reset", _json(200, {"reset": True})
        for pattern, route in _TASK_PATHS:
            match = pattern.fullmatch(path)
            if match is None:
                continue
            if route == "files":
                if method not in ("GET", "HEAD"):
                    return route, _method_not_allowed()
                token, task_id, ext = match.groups()
                return f"files.{ext}", self._file(scope, token, task_id, ext)
            if method != "GET":
                return route, _method_not_allowed()
            provider = route.split(".")[0]
            return route, self._poll(provider, scope, match.group(1))
        return "unknown", _json(404, {"error": {"code": 404, "message": f"no route for {path}"}})

    async def _send(self, scope: Scope, send: Send, reply: _Reply) -> None:
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
            with self._lock:
                self._stats.bytes_served += sent

    def _fault(self, kinds: Iterable[str]) -> str | None:
        """Draw a fault among ``kinds`` (those enabled), with probability ``fault_rate``."""
        enabled = sorted(set(kinds) & self.config.faults)
        if not enabled or self.config.fault_rate <= 0:
            return None
        with self._lock:
            if self._faults.random() >= self.config.fault_rate:
                return None
            kind = self._faults.choice(enabled)
            self._stats.faults[kind] += 1
        return kind

    def _fault_reply(self, provider: str, kind: str) -> _Reply:
        if kind == "reset":
            return _Reply(200, b"{}", [(b"content-type", b"application/json")], drop="reset")
        if kind == "status_504":
            page = b"<html><head><title>504 Gateway Time-out</title></head><body>504 Gateway Time-out</body></html>"
            return _Reply(504, page, [(b"content-type", b"text/html")])
        if kind == "overloaded":
            if provider == "bigmodel":
                return _error(provider, 429, "1305", "too many requests: the model is overloaded")
            return _error(provider, 503, 503, "server busy")
        status = int(kind.removeprefix("status_"))
        code = {500: "1234", 503: "1230"}[status] if provider == "bigmodel" else status
        return _error(provider, status, code, "simulated server error")

    def _url(self, scope: Scope, task: _Task, ext: str) -> str:
        host = _header(scope, b"host")
        if host is None:
            server = scope.get("server") or ("localhost", None)
            host = server[0] if server[1] is None else f"{server[0]}:{server[1]}"
        return f"{scope.get('scheme', 'http')}://{host}{FILES_PREFIX}/{task.token}/{task.id}.{ext}"

    # ------------------------------------------------------------------ create

    async def _create(self, provider: str, scope: Scope, receive: Receive) -> _Reply:
        raw = await _read_body(receive, self.config.max_body_bytes)
        now = self._clock()
        with self._lock:
            self._stats.create_requests += 1
            self._received.append(now)
            while self._received and self._received[0] <= now - WINDOW:
                self._received.popleft()
            self._stats.peak_window = max(self._stats.peak_window, len(self._received))
        if raw is None:
            return _error(
                provider, 413, 413 if provider == "geekai" else "1210", "request body too large"
            )
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if isinstance(body, dict):
            with self._lock:
                self._stats.by_body[body_hash(body)] += 1
                if provider == "bigmodel" and isinstance(body.get("request_id"), str):
                    self._stats.by_request_id[body["request_id"]] += 1

        key, refusal = self._authenticate(provider, scope)
        if refusal is not None:
            return refusal
        assert key is not None
        if key == KEY_ARREARS:
            if provider == "bigmodel":
                return _error(provider, 429, "1113", "your account is in arrears; please top up")
            return _error(provider, 402, 402, "insufficient balance")
        if key == KEY_DAILY_QUOTA:
            code: str | int = "1304" if provider == "bigmodel" else 429
            return _error(provider, 429, code, "daily call quota reached")
        kind = self._fault(("status_500", "status_503", "status_504", "reset", "overloaded"))
        if kind is not None:
            return self._fault_reply(provider, kind)
        limited = self._rate_limit(provider, key, now)
        if limited is not None:
            return limited
        if not isinstance(body, dict):
            return _error(
                provider,
                400,
                400 if provider == "geekai" else "1210",
                "the body must be a JSON object",
            )
        try:
            request = check_geekai(body) if provider == "geekai" else check_bigmodel(body)
        except Rejected as rejected:
            return _rejection(provider, rejected)
        if self.config.unsafe_marker and self.config.unsafe_marker in request.prompt:
            return _error(
                provider, 400, "1301", "the input contains unsafe or sensitive content (simulated)"
            )
        return await self._admit(provider, scope, key, body, request, now)

    def _authenticate(self, provider: str, scope: Scope) -> tuple[str | None, _Reply | None]:
        header = _header(scope, b"authorization")
        if header is None:
            return None, _unauthorized(provider, "1001", "no Authorization header was received")
        scheme, _, key = header.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key or key == KEY_INVALID:
            return None, _unauthorized(provider, "1002", "invalid Authorization token")
        if key == KEY_EXPIRED:
            return None, _unauthorized(provider, "1003", "the Authorization token has expired")
        return key, None

    def _rate_limit(self, provider: str, key: str, now: float) -> _Reply | None:
        rpm = self.config.rpm
        if rpm is None:
            return None
        with self._lock:
            window = self._admitted.setdefault(key, deque())
            while window and window[0] <= now - WINDOW:
                window.popleft()
            if len(window) >= rpm:
                wait = max(1, math.ceil(window[0] + WINDOW - now))
                headers = [(b"retry-after", str(wait).encode())]
                code: str | int = "1303" if provider == "bigmodel" else 429
                message = f"rate limit reached: {rpm} requests per minute"
                return _error(provider, 429, code, message, headers)
            window.append(now)
        return None

    async def _admit(
        self,
        provider: str,
        scope: Scope,
        key: str,
        body: dict[str, Any],
        request: Request,
        now: float,
    ) -> _Reply:
        config = self.config
        digest = body_hash(body)
        with self._lock:
            if request.request_id is not None and (key, request.request_id) in self._request_ids:
                return _error(
                    provider, 400, "1231", f"you already have a request: {request.request_id}"
                )
            active = self._active.setdefault(key, [])
            while active and active[0] <= now:
                heapq.heappop(active)
            if config.max_concurrent is not None and len(active) >= config.max_concurrent:
                code: str | int = "1302" if provider == "bigmodel" else 429
                message = f"too many concurrent tasks: at most {config.max_concurrent}"
                return _error(provider, 429, code, message)
            task = self._new_task(provider, key, request, digest, now)
            self._tasks[(provider, task.id)] = task
            if task.request_id is not None and provider == "bigmodel":
                self._request_ids[(key, task.request_id)] = task.id
            heapq.heappush(active, task.ends)
            while self._active_all and self._active_all[0] <= now:
                heapq.heappop(self._active_all)
            heapq.heappush(self._active_all, task.ends)
            stats = self._stats
            stats.tasks_created += 1
            stats.tasks_by_body[digest] += 1
            stats.peak_concurrent = max(stats.peak_concurrent, len(self._active_all))
            lost = config.lost_create_rate > 0 and self._faults.random() < config.lost_create_rate
            if lost:
                stats.faults["lost_create"] += 1
        if lost:
            return _Reply(200, b"{}", [(b"content-type", b"application/json")], drop="reset")
        if provider == "bigmodel":
            return _json(
                200,
                {
                    "id": task.id,
                    "request_id": task.request_id,
                    "model": task.model,
                    "task_status": "PROCESSING",
                },
            )
        if request.wait:
            while (remaining := task.ends - self._clock()) > 0:
                await self._sleep(remaining)
            return _json(200, self._geekai_body(scope, task, self._clock()))
        return _json(200, self._geekai_body(scope, task, now))

    def _new_task(
        self, provider: str, key: str, request: Request, digest: str, now: float
    ) -> _Task:
        config = self.config
        # Identical requests get identical ids in every run and every simulator with this seed:
        # ids derive from the seed, the body (with BigModel's request_id) and how many tasks that
        # body already has here, not from creation order (which concurrency and --shard change).
        identity = (provider, digest, request.request_id or "")
        nth = self._created[identity]
        self._created[identity] += 1
        ids = random.Random(f"ids:{config.seed}:{':'.join(identity)}:{nth}")
        if provider == "bigmodel":
            task_id = f"{ids.randrange(10**15, 10**16)}-{ids.randrange(10**18, 10**19)}"
            request_id = request.request_id or str(uuid.UUID(int=ids.getrandbits(128), version=4))
        else:
            task_id = str(uuid.UUID(int=ids.getrandbits(128), version=4))
            request_id = None
        duration = config.latency * self._latency.uniform(0.5, 1.5) if config.latency > 0 else 0.0
        fails = bool(config.fail_marker) and config.fail_marker in request.prompt
        message = f"generation failed (simulated: the prompt contains {config.fail_marker})"
        draw = not fails and "task_fail" in config.faults and config.fault_rate > 0
        if draw and self._faults.random() < config.fault_rate:
            fails = True
            message = "generation failed (simulated fault)"
            self._stats.faults["task_fail"] += 1
        if config.full_size:
            width, height = request.width - request.width % 2, request.height - request.height % 2
        else:
            width, height = scaled_size(request.width, request.height, config.max_side)
        seconds = config.video_seconds
        if config.full_duration:
            seconds = float(request.duration or 5)
        colour = (int(digest[:8], 16) ^ config.seed) % 16
        spec = VideoSpec(width, height, request.fps, seconds, request.with_audio, colour)
        return _Task(
            id=task_id,
            provider=provider,
            model=request.model,
            key=key,
            request_id=request_id,
            created=now,
            ends=now + duration,
            fails=fails,
            fail_message=message,
            spec=spec,
            token=f"{ids.getrandbits(64):016x}",
            video_id=str(uuid.UUID(int=ids.getrandbits(128), version=4)),
        )

    # ------------------------------------------------------------------ poll

    def _poll(self, provider: str, scope: Scope, task_id: str) -> _Reply:
        _, refusal = self._authenticate(provider, scope)
        if refusal is not None:
            return refusal
        kind = self._fault(("status_500", "status_503", "status_504", "reset"))
        if kind is not None:
            return self._fault_reply(provider, kind)
        task = self._tasks.get((provider, task_id))
        if task is None:
            code: str | int = "1214" if provider == "bigmodel" else 404
            return _error(provider, 404, code, f"task not found: {task_id}")
        now = self._clock()
        if provider == "geekai":
            return _json(200, self._geekai_body(scope, task, now))
        body: dict[str, Any] = {"model": task.model, "task_status": "PROCESSING"}
        if task.done(now):
            body["task_status"] = "FAIL" if task.fails else "SUCCESS"
            if not task.fails:
                body["video_result"] = [
                    {
                        "url": self._url(scope, task, "mp4"),
                        "cover_image_url": self._url(scope, task, "png"),
                    }
                ]
        body["request_id"] = task.request_id
        return _json(200, body)

    def _geekai_body(self, scope: Scope, task: _Task, now: float) -> dict[str, Any]:
        body: dict[str, Any] = {"model": task.model, "task_id": task.id}
        total = task.ends - task.created
        if task.done(now) and task.fails:
            body.update(
                task_status="failed",
                progress=100,
                error={"code": "generation_failed", "message": task.fail_message},
            )
        elif task.done(now):
            result = {"id": task.video_id, "url": self._url(scope, task, "mp4")}
            if self.config.geekai_cover:
                result["cover_image_url"] = self._url(scope, task, "png")
            body.update(task_status="succeed", progress=100, video_result=[result])
        else:
            elapsed = now - task.created
            progress = min(99, int(100 * elapsed / total)) if total > 0 else 0
            started = elapsed > 0 and elapsed >= min(1.0, 0.2 * total)
            body.update(task_status="running" if started else "pending", progress=progress)
        return body

    # ------------------------------------------------------------------ files

    def _file(self, scope: Scope, token: str, task_id: str, ext: str) -> _Reply:
        task = self._tasks.get(("geekai", task_id)) or self._tasks.get(("bigmodel", task_id))
        now = self._clock()
        if task is None or not task.done(now) or task.fails:
            return _not_found()
        if token in task.expired:
            return _expired(task.expired[token])
        if token != task.token:
            return _not_found()
        kind = self._fault(
            ("status_500", "status_503", "status_504", "reset", "truncated", "expired_url")
        )
        if kind == "expired_url":
            if task.expired:
                kind = None  # a task's URL expires at most once
            else:
                with self._lock:
                    status = self._faults.choice((403, 404, 410))
                    task.expired[task.token] = status
                    task.token = f"{self._ids.getrandbits(64):016x}"
                return _expired(status)
        if kind in ("status_500", "status_503", "status_504", "reset"):
            return self._fault_reply("files", kind)
        spec = task.spec
        if ext == "png":
            data = self.media.cover(spec.width, spec.height, spec.colour)
            total = len(data)
            content_type = b"image/png"
        else:
            data = self.media.video(spec)
            total = padded_size(data, self.config.download_bytes)
            content_type = b"video/mp4"
        headers = [(b"content-type", content_type), (b"accept-ranges", b"bytes")]
        status, start, stop = 200, 0, total
        range_header = _header(scope, b"range")
        if range_header is not None:
            parsed = _parse_range(range_header, total)
            if parsed is None:
                return _Reply(416, b"", [(b"content-range", f"bytes */{total}".encode())])
            start, stop = parsed
            status = 206
            headers.append((b"content-range", f"bytes {start}-{stop - 1}/{total}".encode()))
        stream = iter_padded(data, total, start, stop)
        return _Reply(status, headers=headers, stream=stream, length=stop - start, drop=kind)


# ---------------------------------------------------------------------- helpers


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size <= limit:
            chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks) if size <= limit else None


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


def _error(
    provider: str,
    status: int,
    code: str | int,
    message: str,
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> _Reply:
    if provider == "bigmodel":
        code = str(code)
    return _json(status, {"error": {"code": code, "message": message}}, headers)


def _unauthorized(provider: str, code: str, message: str) -> _Reply:
    return _error(provider, 401, code if provider == "bigmodel" else 401, message)


def _rejection(provider: str, rejected: Rejected) -> _Reply:
    if provider == "bigmodel":
        code = {"model": "1211", "prompt": "1261"}.get(rejected.reason, "1214")
        return _error(provider, 400, code, rejected.message)
    return _error(provider, 400, 400, rejected.message)


def _method_not_allowed() -> _Reply:
    return _json(405, {"error": {"code": 405, "message": "method not allowed"}})


def _not_found() -> _Reply:
    return _Reply(404, b"Not Found", [(b"content-type", b"text/plain")])


def _expired(status: int) -> _Reply:
    page = b'<?xml version="1.0"?><Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>'
    return _Reply(status, page, [(b"content-type", b"application/xml")])


def _parse_range(header: str, total: int) -> tuple[int, int] | None:
    """``bytes=a-b``, ``bytes=a-`` or ``bytes=-n`` as a half-open range, or None."""
    match = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", header)
    if match is None or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if first == "":
        start, stop = max(0, total - int(last)), total
    else:
        start = int(first)
        stop = min(total, int(last) + 1) if last else total
    if start >= stop:
        return None
    return start, stop
