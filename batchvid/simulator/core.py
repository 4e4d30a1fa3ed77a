"""What every simulated route shares: settings, clocks, tasks, counters, authentication, the
rate limit and fault injection."""

from __future__ import annotations

import heapq
import json
import math
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

from batchvid.simulator.config import (
    KEY_ARREARS,
    KEY_DAILY_QUOTA,
    KEY_EXPIRED,
    KEY_INVALID,
    SimulatorConfig,
)
from batchvid.simulator.replies import Receive, Reply, Scope, error, header, read_body, unauthorized
from batchvid.simulator.state import Stats, Task, TaskStore
from batchvid.simulator.video import MediaCache

WINDOW = 60.0

_GATEWAY_TIMEOUT = (
    b"<html><head><title>504 Gateway Time-out</title></head>"
    b"<body>504 Gateway Time-out</body></html>"
)


class Core:
    """The simulator's shared state; routes hold one and take ``lock`` to change it."""

    def __init__(
        self,
        config: SimulatorConfig,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
        state_dir: Path | None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.clock = clock
        self.sleep = sleep
        self.wall_clock = wall_clock
        self.lock = threading.Lock()
        self.media = MediaCache()
        self.store = TaskStore(state_dir) if state_dir is not None else None
        self.reset()
        if self.store is not None:
            for task in self.store.load(clock(), wall_clock()):
                self.add(task)

    def reset(self) -> None:
        """Forget every task and counter (the seeded generators start again). Call under
        ``lock`` once the simulator is serving."""
        seed = self.config.seed
        self.ids = random.Random(f"ids:{seed}")
        self.latency = random.Random(f"latency:{seed}")
        self.faults = random.Random(f"faults:{seed}")
        self.tasks: dict[tuple[str, str], Task] = {}
        self.request_ids: dict[tuple[str, str], str] = {}
        self.created: Counter[tuple[str, str, str]] = Counter()
        self.active: dict[str, list[float]] = {}
        self.active_all: list[float] = []
        self.admitted: dict[str, deque[float]] = {}
        self.received: deque[float] = deque()
        self.chats: Counter[str] = Counter()
        self.stats = Stats()

    def add(self, task: Task) -> None:
        """Register ``task`` (new or loaded): its id, request id, and its slot while running."""
        self.tasks[(task.provider, task.id)] = task
        if task.request_id is not None and task.provider == "bigmodel":
            self.request_ids[(task.account, task.request_id)] = task.id
        self.created[task.identity] = max(self.created[task.identity], task.nth + 1)
        heapq.heappush(self.active.setdefault(task.account, []), task.ends)
        heapq.heappush(self.active_all, task.ends)

    def save(self, task: Task) -> None:
        if self.store is not None:
            self.store.save(task)

    def count_request(self, now: float) -> None:
        """Track the busiest sliding 60 s window of requests received (call under ``lock``)."""
        self.received.append(now)
        while self.received and self.received[0] <= now - WINDOW:
            self.received.popleft()
        self.stats.peak_window = max(self.stats.peak_window, len(self.received))

    # ------------------------------------------------------------------ admission

    async def read_json(
        self, provider: str, receive: Receive, kind: str
    ) -> tuple[Any, Reply | None, float]:
        """Read a request body, count it (``kind``: ``create`` or ``chat``) and parse it as JSON
        (None when it is not JSON). Returns the body, a 413 refusal if it is too large, and
        the time it arrived."""
        raw = await read_body(receive, self.config.max_body_bytes)
        now = self.clock()
        with self.lock:
            if kind == "chat":
                self.stats.chat_requests += 1
            else:
                self.stats.create_requests += 1
                self.count_request(now)
        if raw is None:
            code: str | int = 413 if provider == "geekai" else "1210"
            return None, error(provider, 413, code, "request body too large"), now
        try:
            return json.loads(raw), None, now
        except ValueError:
            return None, None, now

    def authenticate(self, provider: str, scope: Scope) -> tuple[str | None, Reply | None]:
        value = header(scope, b"authorization")
        if value is None:
            return None, unauthorized(provider, "1001", "no Authorization header was received")
        scheme, _, key = value.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key or key == KEY_INVALID:
            return None, unauthorized(provider, "1002", "invalid Authorization token")
        if key == KEY_EXPIRED:
            return None, unauthorized(provider, "1003", "the Authorization token has expired")
        return key, None

    def admission(self, provider: str, scope: Scope, now: float) -> tuple[str, Reply | None]:
        """What a paid request (create or chat) meets before its body is looked at: the key,
        the account's standing, injected faults and the rate limit. Returns the key and the
        refusal, if any."""
        key, refusal = self.authenticate(provider, scope)
        if key is None or refusal is not None:
            return "", refusal
        if key == KEY_ARREARS:
            if provider == "bigmodel":
                return key, error(
                    provider, 429, "1113", "your account is in arrears; please top up"
                )
            return key, error(provider, 402, 402, "insufficient balance")
        if key == KEY_DAILY_QUOTA:
            code: str | int = "1304" if provider == "bigmodel" else 429
            return key, error(provider, 429, code, "daily call quota reached")
        kind = self.fault(("status_500", "status_503", "status_504", "reset", "overloaded"))
        if kind is not None:
            return key, self.fault_reply(provider, kind)
        return key, self.rate_limit(provider, key, now)

    def rate_limit(self, provider: str, key: str, now: float) -> Reply | None:
        rpm = self.config.rpm
        if rpm is None:
            return None
        with self.lock:
            window = self.admitted.setdefault(key, deque())
            while window and window[0] <= now - WINDOW:
                window.popleft()
            if len(window) >= rpm:
                wait = max(1, math.ceil(window[0] + WINDOW - now))
                headers = [(b"retry-after", str(wait).encode())]
                code: str | int = "1303" if provider == "bigmodel" else 429
                message = f"rate limit reached: {rpm} requests per minute"
                return error(provider, 429, code, message, headers)
            window.append(now)
        return None

    # ------------------------------------------------------------------ faults

    def fault(self, kinds: Iterable[str]) -> str | None:
        """Draw a fault among ``kinds`` (those enabled), with probability ``fault_rate``."""
        enabled = sorted(set(kinds) & self.config.faults)
        if not enabled or self.config.fault_rate <= 0:
            return None
        with self.lock:
            if self.faults.random() >= self.config.fault_rate:
                return None
            kind = self.faults.choice(enabled)
            self.stats.faults[kind] += 1
        return kind

    def fault_reply(self, provider: str, kind: str) -> Reply:
        if kind == "reset":
            return Reply(200, b"{}", [(b"content-type", b"application/json")], drop="reset")
        if kind == "status_504":
            return Reply(504, _GATEWAY_TIMEOUT, [(b"content-type", b"text/html")])
        if kind == "overloaded":
            if provider == "bigmodel":
                return error(provider, 429, "1305", "too many requests: the model is overloaded")
            return error(provider, 503, 503, "server busy")
        status = int(kind.removeprefix("status_"))
        code = {500: "1234", 503: "1230"}[status] if provider == "bigmodel" else status
        return error(provider, status, code, "simulated server error")


class Routes:
    """A group of routes sharing the simulator's ``core``."""

    def __init__(self, core: Core) -> None:
        self.core = core
