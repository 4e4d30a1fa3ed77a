"""Probing a downloaded video with PyAV: codec, size, frame rate, frames, duration, audio,
the quality signals of ``batchvid.quality``, and (``analyse``) the poster of
``batchvid.poster``, all in one pass."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import av

from batchvid.errors import BatchvidError
from batchvid.poster import FirstFrame, jpeg_of
from batchvid.quality import Quality, measure


class MediaError(BatchvidError):
    """A file is not a video PyAV can read (truncated, garbage, or without a video stream)."""


@dataclass(frozen=True, slots=True)
class MediaInfo:
    """What a video file contains, as its container reports it."""

    codec: str
    width: int
    height: int
    fps: float
    frame_count: int
    duration: float
    """Seconds."""
    has_audio: bool
    audio_codec: str | None = None
    quality: Quality | None = None
    """Signals from sampled frames; None when not asked for."""

    def to_dict(self) -> dict[str, Any]:
        """A plain dict with floats rounded to 3 decimals, so output is deterministic."""
        return {
            "audio_codec": self.audio_codec,
            "codec": self.codec,
            "duration": round(self.duration, 3),
            "fps": round(self.fps, 3),
            "frame_count": self.frame_count,
            "has_audio": self.has_audio,
            "height": self.height,
            "quality": self.quality.to_dict() if self.quality is not None else None,
            "width": self.width,
        }


@dataclass(frozen=True, slots=True)
class Analysis:
    """What one pass over a video gives: its facts and signals, and its poster."""

    info: MediaInfo
    poster: bytes | None
    """The first frame as JPEG (``batchvid.poster``); None when no frame decodes."""


def probe(path: str | os.PathLike[str], *, quality: bool = True) -> MediaInfo:
    """Read the container of ``path`` (frames are demuxed only if it gives no count) and, with
    ``quality``, measure its signals on a bounded sample of frames (``batchvid.quality``).

    Raises ``MediaError`` when the file does not open as a video.
    """
    with _opened(path) as (container, video):
        frames = int(video.frames or 0)
        if frames <= 0:
            frames = sum(1 for packet in container.demux(video) if packet.size)
        signals = measure(container, video) if quality else None
        return _info(container, video, frames, signals)


def analyse(path: str | os.PathLike[str]) -> Analysis:
    """``probe(path)`` and the poster (``batchvid.poster.poster_jpeg``) in one pass: the
    container is opened once, its packets read once (the quality scan), and the poster's
    frame decoded from the first of them. Equal, field for field and byte for byte, to the two
    called apart (tests/test_media.py). Decoding runs on this thread alone: the parallelism is
    the pool's (``AnalysisPool``).

    Raises ``MediaError`` when the file does not open as a video.
    """
    with _opened(path) as (container, video):
        video.codec_context.thread_count = 1
        first = FirstFrame(video)
        signals = measure(container, video, first.feed)
        frame = first.finish()
        info = _info(container, video, int(video.frames or 0) or signals.frames_decoded, signals)
    return Analysis(info, jpeg_of(frame) if frame is not None else None)


@contextlib.contextmanager
def _opened(path: str | os.PathLike[str]) -> Iterator[tuple[Any, Any]]:
    """The open container of ``path`` and its first video stream; PyAV's errors and a missing
    file or video stream as ``MediaError``."""
    try:
        with av.open(os.fspath(path)) as container:
            if not container.streams.video:
                raise MediaError(f"{os.fspath(path)}: no video stream")
            yield container, container.streams.video[0]
    except FileNotFoundError as exc:
        raise MediaError(f"{os.fspath(path)}: no such file") from exc
    except av.FFmpegError as exc:
        raise MediaError(
            f"{os.fspath(path)}: not a readable video ({exc.strerror or exc}); "
            "the download may be truncated, so fetch it again"
        ) from exc


def _info(container: Any, video: Any, frames: int, signals: Quality | None) -> MediaInfo:
    rate = video.average_rate or video.guessed_rate or video.base_rate
    fps = float(rate) if rate else 0.0
    if video.duration is not None and video.time_base is not None:
        duration = float(video.duration * video.time_base)
    elif container.duration is not None:
        duration = container.duration / av.time_base
    else:
        duration = frames / fps if fps else 0.0
    audio = container.streams.audio[0] if container.streams.audio else None
    return MediaInfo(
        codec=video.codec_context.name,
        width=video.codec_context.width,
        height=video.codec_context.height,
        fps=fps,
        frame_count=frames,
        duration=duration,
        has_audio=audio is not None,
        audio_codec=audio.codec_context.name if audio is not None else None,
        quality=signals,
    )


POOL_AFTER = 8
"""Clips a process analyses on worker threads before it starts its process pool: a worker
process costs ~0.5 s of CPU to start (its interpreter, PyAV, numpy), a clip of the simulator's
~5 ms, so a run of a few videos never starts one."""


class AnalysisPool:
    """``analyse`` in worker processes, off the interpreter the event loop runs on.

    Decoding, scaling and the signals' numpy work hold the GIL for much of a clip's ~5 ms; on a
    worker thread they delay the event loop's polls and creates. In a worker process they
    cannot. The pool starts on the ``after``-th clip + 1 (the first ones run on worker threads),
    with at most ``workers`` processes (default ``os.cpu_count()``), started as work arrives;
    only a path goes in and an ``Analysis`` (a few KB) comes out. Results are the same either
    way (tests/test_media.py). Workers ignore SIGINT (a first Ctrl-C lets downloads under way
    finish, their analysis included; ``close`` ends them), and exit if this process dies.
    A pool that breaks (a worker killed) is dropped, and the clip analysed on a thread.
    """

    def __init__(self, workers: int | None = None, *, after: int = POOL_AFTER) -> None:
        self._workers = workers or os.cpu_count() or 1
        self._after = after
        self._executor: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    async def analyse(self, path: Path) -> Analysis:
        """``analyse(path)``, in a worker process once the pool is worth starting."""
        with self._lock:
            self._after -= 1
            executor = self._executor_for_now() if self._after < 0 else None
        if executor is None:
            return await anyio.to_thread.run_sync(analyse, path)
        try:
            future = _submit(executor, path)
            return await asyncio.wrap_future(future)
        except BrokenProcessPool:
            with self._lock:
                if self._executor is executor:
                    self._executor = None
            executor.shutdown(wait=False)
            return await anyio.to_thread.run_sync(analyse, path)

    def close(self) -> None:
        """Stop the workers (work not started is dropped); the next ``analyse`` starts anew."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    def _executor_for_now(self) -> ProcessPoolExecutor:
        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                self._workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_worker_started,
                initargs=(os.getpid(),),
            )
        return self._executor


def _submit(executor: ProcessPoolExecutor, path: Path) -> Future[Analysis]:
    """Submit with SIGINT blocked on this thread, so a worker started here (it inherits the
    mask) cannot be interrupted before ``_worker_started`` ignores SIGINT. A SIGINT meanwhile
    goes to another thread or waits: none is lost."""
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        return executor.submit(analyse, path)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def _worker_started(parent: int) -> None:
    """In a new worker: ignore SIGINT (the parent decides when workers stop), and exit when
    the parent is gone (a killed parent cannot shut its pool down)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="batchvid-parent-watch", daemon=True).start()


_pool = AnalysisPool()


async def analyse_off_loop(path: Path) -> Analysis:
    """``analyse(path)`` through this process's shared ``AnalysisPool``."""
    return await _pool.analyse(path)


def shutdown_pool() -> None:
    """Stop this process's analysis workers (a run calls it when it ends)."""
    _pool.close()
