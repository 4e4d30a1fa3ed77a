"""Downloading a finished task's files: the video (streamed, hashed, capped), the cover, and a
check that the video decodes and matches the request, the manifest's ``qc:`` thresholds on its
quality signals, and its poster.

An expired result URL (403, 404, 410) is refreshed by polling the task again, up to
``REFRESHES`` times; a transient failure is retried with backoff. The latest task answer is
written to ``response.json`` whether the download succeeds or gives up.
"""

from __future__ import annotations

import asyncio
import functools
import math
import os
from collections.abc import Mapping
from concurrent import futures
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import anyio
import httpx

from batchvid.durable import (
    HashingWriter,
    dumps,
    file_stat,
    fsync_dir,
    sync_entry,
    write_atomic,
)
from batchvid.errors import BatchvidError, JobFatalError, ProviderError, TransientError
from batchvid.events import Effects, JobRetrying
from batchvid.jobs import Job
from batchvid.journal import JobRecord
from batchvid.offload import off_loop
from batchvid.polling import Poller
from batchvid.providers.answers import parse_url
from batchvid.providers.base import TaskResult, video_results
from batchvid.retry import RetryPolicy

if TYPE_CHECKING:
    from batchvid.media import Analysis

EXPIRED_URL_STATUSES = (403, 404, 410)
REFRESHES = 3
WRITE_BATCH = 2 << 20


@dataclass
class Files:
    """What a finished job has in its directory (paths relative to the output directory)."""

    task: TaskResult
    video: dict[str, Any]
    cover: dict[str, Any] | None
    media: dict[str, Any] | None
    poster: dict[str, Any] | None = None
    provided: dict[str, Any] = field(default_factory=dict)
    """``revised_prompt`` and ``provider_duration``, when the provider returned them."""
    rejected: str | None = None
    """Why the video breaks the manifest's ``qc:`` thresholds; ``video`` is then the rejected
    file, set aside as ``video.qc_failed-<sha256 prefix>.mp4``."""
    stat: dict[str, int] | None = None
    """The kept video's ``file_stat``, taken in the worker thread (the journal records it)."""


Held = tuple[HashingWriter, dict[str, Any]]
"""A downloaded file not yet committed, and its record (``sha256`` filled in by the commit)."""


@dataclass
class Downloader:
    client: httpx.AsyncClient
    root: Path
    poller: Poller
    policy: RetryPolicy
    fx: Effects
    _: KW_ONLY
    max_bytes: int
    retries: int
    strict_media: bool
    qc: Mapping[str, Any] = field(default_factory=dict)
    """The manifest's ``qc:`` thresholds (none: the signals are information only)."""

    def job_dir(self, job: Job) -> Path:
        return self.root / "jobs" / job.id

    def write_response(self, job: Job, task: TaskResult) -> None:
        """The task's latest answer as ``response.json``, secrets scrubbed."""
        write_atomic(self.job_dir(job) / "response.json", self.fx.scrub(dumps(task.raw)), durable=False)

    async def fetch_all(
        self, job: Job, task: TaskResult, warnings: list[str], resumed: JobRecord | None = None
    ) -> Files:
        """The video, the cover (a failure is a warning), the media check, the ``qc:`` check
        and the poster (the last three from one pass over the video, off the event loop).
        ``resumed``: the journal's record of a job an earlier run submitted (its request.json
        is made again when missing or damaged: ``requestrecord``)."""
        # Imported here: a run with nothing to download (a rerun) never loads numpy or PyAV.
        from batchvid.quality import check_quality

        later: list[Held] = []  # the cover, committed by _finish
        try:
            task, video = await self._video(job, task)
            cover = await self._cover(job, task.cover_url, warnings, later) if task.cover_url else None
            path = self.job_dir(job) / "video.mp4"
            analysis = await check_media(job, path, self.strict_media, warnings)
            media = analysis.info.to_dict() if analysis is not None else None
            files = Files(task, video, cover, media, provided=provided(task))
            files.rejected = check_quality((media or {}).get("quality"), self.qc)
            poster = analysis.poster if analysis is not None and files.rejected is None else None
            await off_loop(self._finish, job, files, poster, later, resumed)
        finally:
            if later:  # the job failed or stopped first: the cover is kept all the same
                await off_loop(_commit_held, later)
        return files

    def _finish(
        self, job: Job, files: Files, poster: bytes | None, later: list[Held], resumed: JobRecord | None = None
    ) -> None:
        """In one worker thread: the files ``fetch`` left to commit (the cover), then
        ``response.json``, then a rejected video set aside or the poster written, then the one
        fsync of the job's directory that makes the renames of all its files durable before the
        journal names them (setting aside and the poster's durable write end with it; without
        either, it is made here), and the directory's own entry in jobs/ made durable
        (``submit._write_request`` made it without: ``durable.sync_entry``, one fsync of jobs/
        for the folders of the jobs made before it). A ``resumed`` job's request.json, written
        by an earlier run without an fsync, is made again from the journal when a power cut lost
        it (``requestrecord.mend_request``)."""
        from batchvid.poster import write_poster

        _commit_held(later)
        self.write_response(job, files.task)
        if resumed is not None:
            from batchvid.requestrecord import mend_request

            mend_request(self.root, job, resumed)
        path = self.job_dir(job) / "video.mp4"
        if files.rejected is not None:
            files.video = self._set_aside(path, files.video)
            sync_entry(path.parent)
            return
        files.poster = write_poster(self.root, path, poster) if poster is not None else None
        if files.poster is None:
            fsync_dir(path.parent)
        sync_entry(path.parent)  # jobs/ (shared with the other jobs' folders: durable.sync_entry)
        files.stat = file_stat(path)

    def _set_aside(self, path: Path, video: dict[str, Any]) -> dict[str, Any]:
        """Keep a rejected video (it was paid for) under a name no later download takes."""
        kept = path.with_name(f"video.qc_failed-{video['sha256'][:12]}.mp4")
        os.replace(path, kept)
        fsync_dir(kept.parent)
        return dict(video, path=kept.relative_to(self.root).as_posix())

    async def _video(self, job: Job, task: TaskResult) -> tuple[TaskResult, dict[str, Any]]:
        """Fetch the video, refreshing an expired URL by polling the task again."""
        refreshes = failures = 0
        try:
            while True:
                try:
                    if not task.video_url:
                        raise JobFatalError("bad_response", "the task succeeded without a video URL")
                    video = await self.fetch(task.video_url, self.job_dir(job) / "video.mp4", sync_dir=False)
                    return task, video
                except Expired as exc:
                    if refreshes >= REFRESHES:
                        raise JobFatalError(
                            "download_failed",
                            f"result URL keeps failing ({exc}); --retry-failed tries again",
                        ) from exc
                    refreshes += 1
                    task = await self.poller.poll(job.id, task.task_id)
                    if task.status != "succeeded":
                        raise JobFatalError(
                            "download_failed", f"task is {task.status} when refreshing its URL"
                        ) from exc
                except TransientError as exc:
                    failures += 1
                    delay = self.policy.delay(failures, exc)
                    if delay is None or failures > max(self.retries, 3):
                        raise JobFatalError(
                            "download_failed",
                            f"{exc}; --retry-failed downloads it again without regenerating",
                        ) from exc
                    self.fx.emit(JobRetrying(job.id, "download", failures, delay, str(exc)))
                    await self.fx.sleep(delay)
        except ProviderError:
            self.write_response(job, task)
            raise

    async def fetch(
        self, url: str, final: Path, *, sync_dir: bool = True, later: list[Held] | None = None
    ) -> dict[str, Any]:
        """Stream ``url`` to ``final`` through a temporary file, hashing as it goes.
        ``sync_dir=False``: the caller fsyncs ``final``'s directory before journaling it
        (``HashingWriter.commit``). ``later``: the writer is not committed here but appended to
        it with the returned record, whose ``sha256`` the caller fills in once it has committed
        it (or discards it): one thread hop fewer."""
        parsed = parse_url(url)  # parsed once (when the answer was read): the client takes it as it is
        if parsed.scheme not in ("http", "https"):
            raise JobFatalError(
                "bad_response", f"result URL has scheme {parsed.scheme!r}; only http(s) is fetched"
            )
        cap = self.max_bytes
        try:
            async with self.client.stream("GET", parsed) as response:
                expected = _expected_size(response, cap)
                writer, handed = HashingWriter(final), False
                try:
                    await _stream_into(response, writer, cap)
                    if expected is not None and writer.size != expected:
                        raise TransientError(
                            "truncated_download", f"received {writer.size} of {expected} bytes"
                        )
                    if writer.size == 0:
                        raise TransientError("truncated_download", "received an empty body")
                    if later is not None:
                        record = self._record(final, None, writer.size)
                        later.append((writer, record))
                        handed = True
                        return record
                    # fsync, rename (and the directory's fsync, unless the caller makes it) off
                    # the event loop; not cancellable: the file is in place, or still the
                    # temporary one.
                    await off_loop(functools.partial(writer.commit, sync_dir=sync_dir))
                    digest, size = writer.sha256, writer.size
                finally:
                    if not handed:
                        writer.discard()  # nothing left once committed
        except httpx.TooManyRedirects as exc:
            raise JobFatalError("download_failed", f"too many redirects: {exc}") from exc
        except httpx.UnsupportedProtocol as exc:
            raise JobFatalError("bad_response", f"redirected to an unsupported URL: {exc}") from exc
        except httpx.TransportError as exc:
            raise TransientError("network", f"download interrupted: {type(exc).__name__}: {exc}") from exc
        return self._record(final, digest, size)

    def _record(self, final: Path, digest: str | None, size: int) -> dict[str, Any]:
        return {"path": final.relative_to(self.root).as_posix(), "sha256": digest, "bytes": size}

    async def _cover(self, job: Job, url: str, warnings: list[str], later: list[Held]) -> dict[str, Any] | None:
        suffix = PurePosixPath(unquote(urlsplit(url).path)).suffix.lower()  # as httpx.URL's path
        ext = suffix if suffix in (".jpg", ".jpeg", ".png", ".webp") else ".jpg"
        for attempt in range(1, 4):
            try:
                return await self.fetch(url, self.job_dir(job) / f"cover{ext}", later=later)
            except (TransientError, Expired) as exc:
                if attempt == 3:
                    warnings.append(f"cover image not downloaded: {self.fx.scrub(str(exc))}")
                    return None
                await self.fx.sleep(min(2.0**attempt, 10.0) * self.fx.rng.uniform(0.5, 1.0))
            except JobFatalError as exc:
                warnings.append(f"cover image not downloaded: {self.fx.scrub(str(exc))}")
                return None
        return None


def _expected_size(response: httpx.Response, cap: int) -> int | None:
    """The declared size of a download answer, after refusing the statuses that carry no video."""
    status = response.status_code
    if status in EXPIRED_URL_STATUSES:
        raise Expired(f"HTTP {status}")
    if status == 429 or status >= 500:
        raise TransientError("download_error", f"download answered HTTP {status}", status=status)
    if not 200 <= status < 300:
        raise JobFatalError("download_failed", f"download answered HTTP {status}", status=status)
    declared = response.headers.get("content-length")
    expected = int(declared) if declared and declared.isdigit() else None
    if expected is not None and expected > cap:
        raise JobFatalError("download_too_large", f"video is {expected} bytes; the cap is {cap}")
    return expected


async def check_media(
    job: Job, path: Path, strict: bool, warnings: list[str]
) -> Analysis | None:
    """Analyse the video (``batchvid.media.analyse``: probe, quality signals, poster): a video
    that does not decode, or whose fps or audio differ from the request, is a warning (with
    ``strict``, the job fails). Returns the analysis, None when the video does not decode."""
    from batchvid.media import MediaError, analyse_off_loop

    try:
        analysis = await analyse_off_loop(path)
    except MediaError as exc:
        problem = f"video does not decode: {exc}"
        if strict:
            raise JobFatalError("bad_media", problem) from exc
        warnings.append(problem)
        return None
    info = analysis.info
    problems = []
    want_fps = job.params.get("fps")
    if want_fps is not None and not math.isclose(info.fps, float(want_fps), rel_tol=0.02):
        problems.append(f"fps is {info.fps:g}, {want_fps} was requested")
    if info.has_audio != bool(job.params.get("with_audio", False)):
        problems.append(
            "has an audio track, none was requested"
            if info.has_audio
            else "has no audio track, with_audio was requested"
        )
    for problem in problems:
        if strict:
            raise JobFatalError("media_mismatch", f"video {problem}")
        warnings.append(f"video {problem}")
    return analysis


def provided(task: TaskResult) -> dict[str, Any]:
    """What the provider says about the video beside its URL (GeekAI's ``video_result`` has
    ``revised_prompt`` and ``duration``; docs/api-notes.md), when present and well typed."""
    out: dict[str, Any] = {}
    for item in video_results(task.raw.get("video_result")):
        if isinstance(item.get("revised_prompt"), str) and item["revised_prompt"]:
            out["revised_prompt"] = item["revised_prompt"]
        duration = item.get("duration")
        if isinstance(duration, int | float) and not isinstance(duration, bool) \
                and math.isfinite(duration) and duration > 0:
            out["provider_duration"] = duration
        break
    return out


def _commit_held(held: list[Held]) -> None:
    """Commit (fsync, rename; the caller fsyncs the directory) the files ``fetch`` handed over,
    filling in their records' ``sha256``; ``held`` is emptied first, and what is not committed
    is discarded."""
    taken, held[:] = list(held), []
    try:
        for writer, record in taken:
            writer.commit(sync_dir=False)
            record["sha256"] = writer.sha256
    finally:
        for writer, _ in taken:
            writer.discard()  # nothing left once committed


async def _stream_into(response: httpx.Response, writer: HashingWriter, cap: int) -> None:
    """Copy the body into ``writer``. Past the first ``WRITE_BATCH`` bytes, a worker thread
    hashes and writes each batch of chunks (as they came: no joined copy) while the event loop
    reads the next one (hashlib and file writes release the GIL). The last batch (all of a small
    body) is held for the commit, which writes it in its worker thread: the event loop neither
    makes the file nor writes to it. At most two batches are held: the one being written and
    the one being read."""
    batch: list[bytes] = []
    size = received = 0
    executor: ThreadPoolExecutor | None = None
    pending: Future[None] | None = None
    try:
        async for chunk in response.aiter_bytes():
            received += len(chunk)
            if received > cap:
                raise JobFatalError("download_too_large", f"video exceeds the cap of {cap} bytes")
            batch.append(chunk)
            size += len(chunk)
            if size >= WRITE_BATCH:
                if executor is None:
                    executor = ThreadPoolExecutor(1, thread_name_prefix="batchvid-write")
                if pending is not None:
                    await asyncio.wrap_future(pending)  # no worker thread to wait in
                pending = executor.submit(writer.write_all, batch)
                batch, size = [], 0
        if pending is not None:
            await asyncio.wrap_future(pending)
        writer.hold(batch)  # written by the commit, off the event loop
    finally:
        if pending is not None and not pending.done():  # after an error or a cancel
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(futures.wait, [pending])
        if executor is not None:
            executor.shutdown()


class Expired(BatchvidError):
    """The result URL answered 403/404/410: poll the task again for a fresh one."""
