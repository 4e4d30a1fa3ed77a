"""The result files of both providers: videos and covers, with HEAD, Range and the download
faults (``truncated``, ``expired_url``)."""

from __future__ import annotations

from batchvid.simulator.core import Routes
from batchvid.simulator.replies import Reply, Scope, expired, header, not_found, parse_range
from batchvid.simulator.state import Task
from batchvid.simulator.video import iter_padded, padded_size, tagged


class FileRoutes(Routes):
    """``GET /files/{token}/{task_id}.mp4 | .png``; all state lives in ``core``."""

    def file(self, scope: Scope, token: str, task_id: str, ext: str) -> Reply:
        core = self.core
        task = core.tasks.get(("geekai", task_id)) or core.tasks.get(("bigmodel", task_id))
        if task is None or not task.done(core.clock()) or task.fails:
            return not_found()
        if token in task.expired:
            return expired(task.expired[token])
        if token != task.token:
            return not_found()
        kind = core.fault(
            ("status_500", "status_503", "status_504", "reset", "truncated", "expired_url")
        )
        if kind == "expired_url":
            if task.expired:
                kind = None  # a task's URL expires at most once
            else:
                with core.lock:
                    status = core.faults.choice((403, 404, 410))
                    task.expired[task.token] = status
                    task.token = f"{core.ids.getrandbits(64):016x}"
                    core.save(task)
                return expired(status)
        if kind in ("status_500", "status_503", "status_504", "reset"):
            return core.fault_reply("files", kind)
        return self._content(scope, task, ext, kind)

    def _content(self, scope: Scope, task: Task, ext: str, drop: str | None) -> Reply:
        spec = task.spec
        if ext == "png":
            colour = -1 if spec.look == "black" else spec.colour
            data = self.core.media.cover(spec.width, spec.height, colour)
            total = len(data)
            content_type = b"image/png"
        else:
            data = tagged(self.core.media.video(spec), task.tag)
            total = padded_size(data, self.core.config.download_bytes)
            content_type = b"video/mp4"
        headers = [(b"content-type", content_type), (b"accept-ranges", b"bytes")]
        status, start, stop = 200, 0, total
        range_header = header(scope, b"range")
        if range_header is not None:
            parsed = parse_range(range_header, total)
            if parsed is None:
                return Reply(416, b"", [(b"content-range", f"bytes */{total}".encode())])
            start, stop = parsed
            status = 206
            headers.append((b"content-range", f"bytes {start}-{stop - 1}/{total}".encode()))
        stream = iter_padded(data, total, start, stop)
        return Reply(status, headers=headers, stream=stream, length=stop - start, drop=drop)
