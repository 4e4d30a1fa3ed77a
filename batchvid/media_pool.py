"""Analysis off the event loop: ``batchvid.media.analyse`` in worker processes
(``AnalysisPool``; each runs ``batchvid.media_worker``), or on threads where none can start.

A run hands each downloaded clip to this process's pool (``analyse_off_loop``) and gets its
``Analysis`` back, the same as ``analyse`` gives; the run's process never loads PyAV or numpy.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pickle
import struct
import subprocess
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchvid.interpreter import python_command
from batchvid.quality import Quality

if TYPE_CHECKING:
    import anyio
    from anyio.lowlevel import RunVar

    from batchvid.media import Analysis

# anyio is imported where the pool uses it: an analysis worker (``batchvid.media_worker``)
# imports this module for ``HEADER`` and needs none of it. batchvid.media is imported at the
# end (it names this module's entry points, and imports it as it ends).


POOL_AFTER = 8
"""Clips a process analyses on worker threads before it starts worker processes, unless told
to start one at once (``AnalysisPool.start``): one costs ~0.35 s of CPU to start (its
interpreter, PyAV, numpy), a simulator's clip ~5 ms. A run with work always starts one at once
(``start_pool``), so this threshold serves only callers of ``analyse_off_loop`` that do not."""


WORKER_START_SECONDS = 0.5
"""About how long a worker takes to start (0.3-0.5 s on a 2-core machine, more under load)."""


class AnalysisPool:
    """``analyse`` in worker processes, off the interpreter the event loop runs on.

    Decoding, scaling and the signals' numpy work hold the GIL for much of a clip's ~5 ms; on a
    worker thread they delay the event loop's polls and creates, in a worker process they
    cannot. The first ``after`` clips are analysed on threads, unless ``start`` was called;
    then one worker process starts, and more (up to ``workers``, default ``os.cpu_count()``)
    only while clips queue for longer than a worker takes to start: the queue's clips times
    the CPU time the last clips took in their worker (its mean), per worker, against
    ``WORKER_START_SECONDS``. CPU time, not the time from request to reply: on a busy machine
    that is mostly a wait for a core, which a second worker would wait for too (at latency 0 a
    run's worker took ~43 ms a simulator clip for ~5 ms of CPU, and a second one started for
    nothing: ~0.4 s of CPU and ~60 MB). A simulator's clips never queue that long; a long
    video's do. A clip's path goes in, its
    ``Analysis`` (a few KB) comes out, so results are the same either way
    (tests/test_analysis.py). Clips that queue while a worker is busy go to it in one request
    (``BATCH_SECONDS``), and come back in one reply: one wake of each process for several
    clips (a simulator clip's hand-over in this process ~0.55 -> ~0.1 ms of CPU at 8 at once).
    The event loop writes the request and waits for the reply on the pipe itself: no thread in
    between.

    Workers are plain subprocesses (``python -P -c``), not ``multiprocessing``'s: those import
    the parent's main script again, which would run again the top-level code of a script that
    calls batchvid without an ``if __name__ == "__main__":`` guard (``-P``: this process's
    batchvid, not one in the working directory). They run in a session of
    their own, so a Ctrl-C at the terminal does not reach them (the first one lets downloads
    under way finish, analysis included); they exit when their input closes: on ``close``, at
    this process's exit, or when it dies. A worker that dies is replaced, and its clip analysed
    on a thread; if one dies before its first answer, workers are not tried again. Where this
    process has no interpreter to start (``batchvid.interpreter``: Python embedded in uwsgi or
    another host program, a frozen application), none is started: every clip is analysed on a
    thread.
    """

    def __init__(self, workers: int | None = None, *, after: int = POOL_AFTER) -> None:
        self._size = workers or os.cpu_count() or 1
        self._after = after
        self._idle: list[_Worker] = []
        self._started = 0
        self._answered = False
        """Whether a worker has answered once (then more may start)."""
        self._broken = False
        """Workers cannot start here (no interpreter to start them with, or one died before its
        first answer), so every clip is analysed on a thread."""
        self._clip_seconds = 0.0
        """A moving mean of the CPU seconds a worker spends on a clip."""
        self._lock = threading.Lock()
        self._gate: RunVar[tuple[anyio.CapacityLimiter, list[_Clip]]] | None = None

    def start(self) -> None:
        """Start a worker now, before any clip is there (a run with videos to fetch calls it as
        it starts), and send every clip to workers from the first: the worker's start (~0.35 s
        of CPU) overlaps the first tasks instead of delaying the first clips, and this process
        does not load PyAV and numpy. Does nothing once a worker has started."""
        with self._lock:
            self._after = 0
            if self._broken or self._started:
                return
        worker = self._take()
        if worker is not None:
            with self._lock:
                self._idle.append(worker)

    async def analyse(self, path: Path) -> Analysis:
        """``analyse(path)``, in a worker process once the pool is worth starting."""
        with self._lock:
            self._after -= 1
            pooled = self._after < 0 and not self._broken
        import anyio

        if not pooled:
            return await anyio.to_thread.run_sync(media.analyse, path)
        limiter, queue = self._loop_state()
        self._grow(limiter, len(queue) + 1)
        clip = _Clip(path)
        queue.append(clip)
        try:
            async with limiter:
                if clip.reply is None and clip.sent is None:  # else a batch before took it
                    await self._send(queue, clip)
            if clip.sent is not None:  # in a batch another task sent: its reply, not a second request
                await clip.sent.wait()
        finally:
            if clip.reply is None and clip in queue:  # cancelled, or no worker to take it
                queue.remove(clip)
        if clip.reply is not None and clip.reply is not _ON_THREAD:
            ok, value, _ = clip.reply
            if not ok:
                raise value
            return _unpacked(value)
        return await anyio.to_thread.run_sync(media.analyse, path)

    async def _send(self, queue: list[_Clip], clip: _Clip) -> None:
        """``clip`` and the clips queued behind it, as many as a worker does in about
        ``BATCH_SECONDS`` of CPU, to one worker in one request; their replies (``_ON_THREAD``
        when the worker died) set on them. Nothing when no worker can be had."""
        import anyio

        worker = self._take()
        if worker is None:
            return
        count = int(BATCH_SECONDS / self._clip_seconds) if self._clip_seconds else 1
        batch = [clip, *[other for other in queue if other is not clip][: max(0, count - 1)]]
        taken = {id(one) for one in batch}
        queue[:] = [other for other in queue if id(other) not in taken]
        sent = anyio.Event()
        for one in batch:
            one.sent = sent
        try:
            # Shielded: replies left unread would be taken for the next clips'.
            with anyio.CancelScope(shield=True):
                replies = await worker.call([os.fspath(one.path) for one in batch])
            self._returned(worker, alive=replies is not None)
            for one, reply in zip(batch, replies or [_ON_THREAD] * len(batch), strict=True):
                one.reply = reply
        finally:
            sent.set()  # the clips' tasks read their replies (none: analysed on a thread)

    def close(self) -> None:
        """End the idle workers, all at once (a busy one ends when its clip is done; one still
        starting is killed: it holds nothing); the next ``analyse`` starts new ones."""
        with self._lock:
            idle, self._idle = self._idle, []
            self._started -= len(idle)
        for worker in idle:
            worker.stop(kill=not worker.answered)
        for worker in idle:
            worker.wait()

    def _loop_state(self) -> tuple[anyio.CapacityLimiter, list[_Clip]]:
        """This event loop's limit on requests to workers at once (as many as workers may
        run), and its clips not yet sent to one, in order."""
        import anyio
        from anyio.lowlevel import RunVar

        with self._lock:
            if self._gate is None:
                self._gate = RunVar(f"batchvid-analysis-{id(self)}")
            gate = self._gate
        try:
            return gate.get()
        except LookupError:
            limiter = anyio.CapacityLimiter(max(1, self._started) if self._answered else 1)
            state: tuple[anyio.CapacityLimiter, list[_Clip]] = (limiter, [])
            gate.set(state)
            return state

    def _grow(self, limiter: anyio.CapacityLimiter, waiting: int) -> None:
        """Let one more worker start when the ``waiting`` clips would wait longer for the
        running ones than a new one takes to start (its ``_take`` starts it)."""
        with self._lock:
            if not self._answered or self._broken or limiter.total_tokens >= self._size:
                return
            if waiting * self._clip_seconds > WORKER_START_SECONDS * limiter.total_tokens:
                limiter.total_tokens += 1

    def _take(self) -> _Worker | None:
        """An idle worker, else a new one; None when none can be started (and never will be,
        when this process has no interpreter to start)."""
        with self._lock:
            if self._broken:
                return None
            if self._idle:
                return self._idle.pop()
            command = python_command("-c", "from batchvid.media_worker import serve; serve()")
            if command is None:
                self._broken = True
                return None
            self._started += 1
        try:
            return _Worker(command)
        except OSError:
            with self._lock:
                self._started -= 1
            return None

    def _returned(self, worker: _Worker, *, alive: bool) -> None:
        """``worker`` has answered, or died (then it is ended and forgotten)."""
        first = not worker.answered
        worker.answered = True
        if not alive:
            worker.close(kill=True)
        with self._lock:
            if alive:
                self._idle.append(worker)
                if not first:  # a first answer's time includes the worker's start
                    self._clip_seconds = 0.8 * self._clip_seconds + 0.2 * worker.last_cpu
            else:
                self._started -= 1
            if first:
                self._broken = self._broken or not alive
                self._answered = self._answered or alive


BATCH_SECONDS = 0.03
"""About how much of a worker's CPU time the clips sent in one request may take (at least one
clip): a simulator's clips queued behind one go together, one request and one reply for
several (fewer wakes of both processes); a long video's go one by one, as before."""

_ON_THREAD = (False, None, 0.0)
"""A clip's reply when its worker died: it is analysed on a thread instead."""


class _Clip:
    """A clip for a worker, and its reply once there is one."""

    __slots__ = ("path", "reply", "sent")

    def __init__(self, path: Path) -> None:
        self.path = path
        self.reply: tuple[bool, Any, float] | None = None
        self.sent: anyio.Event | None = None
        """Set once the request that took the clip has its reply (or failed)."""


HEADER = struct.Struct("!Q")


def worker_env() -> dict[str, str]:
    """A worker's environment: this process's with this package importable, and without the
    providers' API keys (a worker reads video files and nothing else)."""
    from batchvid.providers import KEY_ENV_VARS

    env = {name: value for name, value in os.environ.items() if name not in KEY_ENV_VARS}
    package_root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    # numpy's OpenBLAS would start a thread per core at import, for linear algebra that a
    # worker never does: ~50 ms of a worker's start.
    env["OPENBLAS_NUM_THREADS"] = "1"
    if not any(name in env for name in _MALLOC_TUNED):
        env.update(_MALLOC_KEEP)
    return env


_MALLOC_TUNED = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")
_MALLOC_KEEP = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(64 << 20)}
"""glibc's malloc, told to keep what it frees up to these sizes (other C libraries ignore the
variables; a user's own tuning is left alone). A clip's decoders, scalers and encoder allocate
and free the same blocks for every clip; by default glibc hands the larger ones back to the
kernel and faults them in again for the next clip: ~240 page faults and ~1.3 ms of kernel CPU
per simulator clip, ~1,600 faults per 10 s 1080p clip; kept, a few in all."""


class _Worker:
    """One worker process: pickled lists of paths (as strings: ~10 us less a clip than
    ``Path`` objects) in on its stdin; out on its stdout, for each
    list, its length and the pickled list of ``(ok, result as _packed or error, CPU seconds it
    took)``, one for each path."""

    def __init__(self, command: list[str]) -> None:
        self.answered = False
        self.last_cpu = 0.0
        """The CPU seconds the worker spent on each clip of the last request (the mean; its
        reply says)."""
        self._process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=worker_env(), start_new_session=True,
        )
        assert self._process.stdin is not None and self._process.stdout is not None
        self._requests = self._process.stdin
        self._replies = self._process.stdout.fileno()
        os.set_blocking(self._replies, False)

    async def call(self, paths: list[str]) -> list[tuple[bool, Any, float]] | None:
        """The replies to ``paths``; None when the worker has died."""
        try:
            self._requests.write(pickle.dumps(paths, pickle.HIGHEST_PROTOCOL))
            self._requests.flush()
            data = await self._receive()
            replies = pickle.loads(data)
        except (OSError, EOFError, pickle.UnpicklingError):
            return None
        assert isinstance(replies, list) and len(replies) == len(paths)
        self.last_cpu = sum(reply[2] for reply in replies) / len(replies)
        return replies

    async def _receive(self) -> bytes:
        import anyio

        buffer = bytearray()
        while len(buffer) < HEADER.size or len(buffer) < HEADER.size + HEADER.unpack_from(buffer)[0]:
            await anyio.wait_readable(self._replies)
            try:
                chunk = os.read(self._replies, 1 << 16)
            except BlockingIOError:
                continue
            if not chunk:
                raise EOFError("the analysis worker exited")
            buffer += chunk
        return bytes(buffer[HEADER.size :])

    def close(self, *, kill: bool = False) -> None:
        """``stop`` it and wait for it."""
        self.stop(kill=kill)
        self.wait()

    def stop(self, *, kill: bool = False) -> None:
        """Close its input (it exits at once when idle), or ``kill`` it."""
        if kill:
            self._process.kill()
        with contextlib.suppress(OSError):
            self._requests.close()

    def wait(self) -> None:
        """Wait for it to exit (after ``stop``)."""
        self._process.wait()
        assert self._process.stdout is not None
        self._process.stdout.close()


def _unpacked(values: Any) -> Analysis:
    """The ``Analysis`` that ``batchvid.media_worker._packed`` gave ``values`` of."""
    poster, signals, codec, width, height, fps, frames, duration, audio, audio_codec = values
    quality = None if signals is None else Quality(*signals)
    info = media.MediaInfo(codec, width, height, fps, frames, duration, audio, audio_codec, quality)
    return media.Analysis(info, poster)


_pool = AnalysisPool()
atexit.register(_pool.close)


async def analyse_off_loop(path: Path) -> Analysis:
    """``analyse(path)`` through this process's shared ``AnalysisPool``."""
    return await _pool.analyse(path)


def start_pool() -> None:
    """Start this process's first analysis worker now (``AnalysisPool.start``): a run that has
    videos to fetch calls it as it starts, so the worker is ready for the first clip."""
    _pool.start()


def shutdown_pool() -> None:
    """End this process's idle analysis workers (a run may call it when it ends)."""
    _pool.close()


# Last: batchvid.media imports this module as it ends, for the names above.
from batchvid import media  # noqa: E402
