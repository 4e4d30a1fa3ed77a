"""The video routes of both providers: create, poll, and the result files.

Task ids (and file tokens) are a function of the seed, the provider, the ``body_hash``, the
BigModel ``request_id`` and how many tasks that body already has, so the same requests give the
same ids in any order, in any run: a sharded run, merged, and an unsharded run write the same
``batchvid.lock``. A video's look and bytes derive from the same identity, so different
requests, and the samples of one request, get different files, the same in every run.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import random
import uuid
from collections.abc import Mapping
from typing import Any

from batchvid.simulator.config import FILES_PREFIX
from batchvid.simulator.contract import Rejected, Request, check_bigmodel, check_geekai
from batchvid.simulator.core import Routes
from batchvid.simulator.replies import (
    Reply,
    Scope,
    error,
    header,
    json_reply,
    rejection,
)
from batchvid.simulator.state import Task, account
from batchvid.simulator.video import (
    PATTERNS,
    VideoSpec,
    scaled_size,
)

HASH_EXCLUDED = frozenset({"async", "request_id", "user_id"})


def body_hash(body: Mapping[str, Any]) -> str:
    """sha256 of a create body as canonical JSON, without ``async``, ``request_id``,
    ``user_id`` and ``null`` values: the same job submitted twice hashes the same."""
    kept = {k: v for k, v in body.items() if k not in HASH_EXCLUDED and v is not None}
    canonical = json.dumps(kept, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class VideoRoutes(Routes):
    """Creates and polls; all state lives in ``core``."""

    # ------------------------------------------------------------------ create

    async def create(self, provider: str, scope: Scope, body: Any, now: float) -> Reply:
        """Answer a create request whose ``body`` (parsed JSON, or None) arrived at ``now``."""
        core = self.core
        if isinstance(body, dict):
            with core.lock:
                core.stats.by_body[body_hash(body)] += 1
                if provider == "bigmodel" and isinstance(body.get("request_id"), str):
                    core.stats.by_request_id[body["request_id"]] += 1
        key, refusal = core.admission(provider, scope, now)
        if refusal is not None:
            return refusal
        if not isinstance(body, dict):
            code: str | int = 400 if provider == "geekai" else "1210"
            return error(provider, 400, code, "the body must be a JSON object")
        try:
            request = check_geekai(body) if provider == "geekai" else check_bigmodel(body)
        except Rejected as rejected:
            return rejection(provider, rejected)
        if self.core.config.unsafe_marker and self.core.config.unsafe_marker in request.prompt:
            return error(
                provider, 400, "1301", "the input contains unsafe or sensitive content (simulated)"
            )
        return await self._admit(provider, scope, key, body, request, now)

    async def _admit(
        self,
        provider: str,
        scope: Scope,
        key: str,
        body: dict[str, Any],
        request: Request,
        now: float,
    ) -> Reply:
        core = self.core
        config = core.config
        digest = body_hash(body)
        owner = account(key)
        with core.lock:
            if request.request_id is not None and (owner, request.request_id) in core.request_ids:
                return error(
                    provider, 400, "1231", f"you already have a request: {request.request_id}"
                )
            active = core.active.setdefault(owner, [])
            while active and active[0] <= now:
                heapq.heappop(active)
            if config.max_concurrent is not None and len(active) >= config.max_concurrent:
                code: str | int = "1302" if provider == "bigmodel" else 429
                message = f"too many concurrent tasks: at most {config.max_concurrent}"
                return error(provider, 429, code, message)
            task = self._new_task(provider, owner, request, digest, now)
            while core.active_all and core.active_all[0] <= now:
                heapq.heappop(core.active_all)
            core.add(task)
            core.save(task)
            stats = core.stats
            stats.tasks_created += 1
            stats.tasks_by_body[digest] += 1
            stats.peak_concurrent = max(stats.peak_concurrent, len(core.active_all))
            lost = config.lost_create_rate > 0 and core.faults.random() < config.lost_create_rate
            if lost:
                stats.faults["lost_create"] += 1
        if lost:
            return Reply(200, b"{}", [(b"content-type", b"application/json")], drop="reset")
        if provider == "bigmodel":
            return json_reply(
                200,
                {
                    "id": task.id,
                    "request_id": task.request_id,
                    "model": task.model,
                    "task_status": "PROCESSING",
                },
            )
        if request.wait:
            while (remaining := task.ends - core.clock()) > 0:
                await core.sleep(remaining)
            return json_reply(200, self._geekai_body(scope, task, core.clock()))
        return json_reply(200, self._geekai_body(scope, task, now))

    def _new_task(
        self, provider: str, owner: str, request: Request, digest: str, now: float
    ) -> Task:
        core = self.core
        config = core.config
        # Identical requests get identical ids in every run and every simulator with this seed:
        # ids derive from the seed, the body (with BigModel's request_id) and how many tasks that
        # body already has here, not from creation order (which concurrency and --shard change).
        identity = (provider, digest, request.request_id or "")
        nth = core.created[identity]
        ids = random.Random(f"ids:{config.seed}:{':'.join(identity)}:{nth}")
        if provider == "bigmodel":
            task_id = f"{ids.randrange(10**15, 10**16)}-{ids.randrange(10**18, 10**19)}"
            request_id = request.request_id or str(uuid.UUID(int=ids.getrandbits(128), version=4))
        else:
            task_id = str(uuid.UUID(int=ids.getrandbits(128), version=4))
            request_id = None
        duration = config.latency * core.latency.uniform(0.5, 1.5) if config.latency > 0 else 0.0
        fails = bool(config.fail_marker) and config.fail_marker in request.prompt
        message = f"generation failed (simulated: the prompt contains {config.fail_marker})"
        draw = not fails and "task_fail" in config.faults and config.fault_rate > 0
        if draw and core.faults.random() < config.fault_rate:
            fails = True
            message = "generation failed (simulated fault)"
            core.stats.faults["task_fail"] += 1
        content = f"content:{config.seed}:{':'.join(identity)}:{nth}"
        tag = hashlib.sha256(content.encode("utf-8")).hexdigest()[:32]
        return Task(
            id=task_id,
            provider=provider,
            model=request.model,
            account=owner,
            request_id=request_id,
            identity=identity,
            nth=nth,
            created=now,
            ends=now + duration,
            wall=core.wall_clock(),
            fails=fails,
            fail_message=message,
            spec=self._spec(request, int(tag[:8], 16)),
            tag=tag,
            token=f"{ids.getrandbits(64):016x}",
            video_id=str(uuid.UUID(int=ids.getrandbits(128), version=4)),
            prompt=request.prompt,
        )

    def _spec(self, request: Request, content: int) -> VideoSpec:
        """What the video looks like: sized per the settings, coloured and patterned by
        ``content``, black or frozen when the prompt carries that marker."""
        config = self.core.config
        if config.full_size:
            width, height = request.width - request.width % 2, request.height - request.height % 2
        else:
            width, height = scaled_size(request.width, request.height, config.max_side)
        seconds = float(request.duration or 5) if config.full_duration else config.video_seconds
        look = "moving"
        if config.black_marker and config.black_marker in request.prompt:
            look = "black"
        elif config.frozen_marker and config.frozen_marker in request.prompt:
            look = "frozen"
        colour, pattern = content % 16, content // 16 % PATTERNS
        return VideoSpec(
            width, height, request.fps, seconds, request.with_audio, colour, pattern, look
        )

    # ------------------------------------------------------------------ poll

    def poll(self, provider: str, scope: Scope, task_id: str) -> Reply:
        core = self.core
        _, refusal = core.authenticate(provider, scope)
        if refusal is not None:
            return refusal
        kind = core.fault(("status_500", "status_503", "status_504", "reset"))
        if kind is not None:
            return core.fault_reply(provider, kind)
        task = core.tasks.get((provider, task_id))
        if task is None:
            code: str | int = "1214" if provider == "bigmodel" else 404
            return error(provider, 404, code, f"task not found: {task_id}")
        now = core.clock()
        if provider == "geekai":
            return json_reply(200, self._geekai_body(scope, task, now))
        body: dict[str, Any] = {"model": task.model, "task_status": "PROCESSING"}
        if task.done(now):
            body["task_status"] = "FAIL" if task.fails else "SUCCESS"
            if not task.fails:
                body["video_result"] = [
                    {"url": _url(scope, task, "mp4"), "cover_image_url": _url(scope, task, "png")}
                ]
        body["request_id"] = task.request_id
        return json_reply(200, body)

    def _geekai_body(self, scope: Scope, task: Task, now: float) -> dict[str, Any]:
        body: dict[str, Any] = {"model": task.model, "task_id": task.id}
        total = task.ends - task.created
        if task.done(now) and task.fails:
            body.update(
                task_status="failed",
                progress=100,
                error={"code": "generation_failed", "message": task.fail_message},
            )
        elif task.done(now):
            result: dict[str, Any] = {"id": task.video_id, "url": _url(scope, task, "mp4")}
            if self.core.config.geekai_cover:
                result["cover_image_url"] = _url(scope, task, "png")
            if self.core.config.geekai_details:
                # What GeekAI rewrites is not documented: the prompt comes back as it was sent.
                result.update(duration=task.spec.seconds, revised_prompt=task.prompt)
            body.update(task_status="succeed", progress=100, video_result=[result])
        else:
            elapsed = now - task.created
            progress = min(99, int(100 * elapsed / total)) if total > 0 else 0
            started = elapsed > 0 and elapsed >= min(1.0, 0.2 * total)
            body.update(task_status="running" if started else "pending", progress=progress)
        return body


def _url(scope: Scope, task: Task, ext: str) -> str:
    host = header(scope, b"host")
    if host is None:
        server = scope.get("server") or ("localhost", None)
        host = server[0] if server[1] is None else f"{server[0]}:{server[1]}"
    return f"{scope.get('scheme', 'http')}://{host}{FILES_PREFIX}/{task.token}/{task.id}.{ext}"
