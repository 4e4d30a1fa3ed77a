"""Probing a downloaded video with PyAV: codec, size, frame rate, frames, duration, audio,
the quality signals of ``batchvid.quality``, and (``analyse``) the poster of
``batchvid.poster``, all in one pass."""

from __future__ import annotations

import atexit
import contextlib
import os
import pickle
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchvid.errors import BatchvidError
from batchvid.poster import FirstFrame, jpeg_of
from batchvid.quality import Quality, measure

if TYPE_CHECKING:
    import anyio
    from anyio.lowlevel import RunVar

# anyio is imported where the pool uses it, not with this module: an analysis worker
# (``batchvid.media_worker``) imports this module for ``analyse`` and needs none of it.


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
        signals = measure(container, video) if quality else None
        frames = int(video.frames or 0)
        if frames <= 0:
            # The signals' scan has read every packet already (and a second demux would find
            # none).
            frames = signals.frames_decoded if signals is not None else sum(
                1 for packet in container.demux(video) if packet.size
            )
        return _info(container, video, frames, signals)


def analyse(path: str | os.PathLike[str]) -> Analysis:
    """``probe(path)`` and the poster (``batchvid.poster.poster_jpeg``) in one pass: the
    container is opened once, its packets read once (the quality scan), and the poster's
    frame decoded from the first of them. Equal, field for field and byte for byte, to the two
    called apart (tests/test_analysis.py). Decoding runs on this thread alone: the parallelism is
    the pool's (``AnalysisPool``).

    An H.264 clip in MP4 is opened without FFmpeg's stream probing (``_opened(probed=False)``;
    probed where the application turned PyAV's logging of FFmpeg on),
    which opens a decoder and decodes the first frame only to learn the stream's pixel format:
    ~1 of a simulator clip's ~11 million instructions, 3-10 ms of a 720x480 to 1360x768 clip,
    whose poster decodes that frame again. What the analysis reads from the stream is then the
    container's alone (size, frame rate, duration, frames; the reorder depth MP4's demuxer
    guesses from the timestamps), where probing could have let a decoder fill in what the
    container lacks: so the container must give a frame rate and a duration, and the first
    frame must have its size. Any other clip, a failed check or an error: the clip is analysed
    again with probing, as before, so facts and errors are probing's
    (tests/test_analysis_fast.py, tests/benchmarks/ab_analysis.py).

    Raises ``MediaError`` when the file does not open as a video.
    """
    try:
        analysis = _analyse(path, probed=False)
    except MediaError:
        analysis = None  # the probed open says why, in the words a user always got
    if analysis is None:
        analysis = _analyse(path, probed=True)
        assert analysis is not None  # probed, it gives an analysis or raises
    return analysis


def _analyse(path: str | os.PathLike[str], *, probed: bool) -> Analysis | None:
    """``analyse``, with or without FFmpeg's stream probing; None (without) when the clip is not
    one whose facts the container alone gives as probing would."""
    with _opened(path, probed=probed) as (container, video):
        context = video.codec_context
        if not probed and not _unprobed_fits(video):
            return None
        context.thread_count = 1
        first = FirstFrame(video)
        signals = measure(container, video, first.feed)
        frame = first.finish()
        # Unprobed, the size is the container's alone; probing may take one from a decoder.
        if not probed and (frame is None or (frame.width, frame.height) != (context.width, context.height)):
            return None
        info = _info(container, video, int(video.frames or 0) or signals.frames_decoded, signals)
    return Analysis(info, jpeg_of(frame) if frame is not None else None)


def _unprobed_fits(video: Any) -> bool:
    """Whether an unprobed ``video`` stream has what ``_info`` and the analysis read as probing
    would set it: H.264 (whose reorder depth MP4's demuxer guesses from the timestamps, and
    whose size the first frame confirms), a frame rate and a duration from the container (else
    ``_info`` falls back on rates and durations that probing estimates from packets)."""
    return video.codec_context.name == "h264" and bool(video.average_rate) and video.duration is not None


@contextlib.contextmanager
def _opened(path: str | os.PathLike[str], *, probed: bool = True) -> Iterator[tuple[Any, Any]]:
    """The open container of ``path`` and its first video stream; PyAV's errors and a missing
    file or video stream as ``MediaError``. Not ``probed`` (an MP4 file only, while PyAV's
    logging of FFmpeg is off, as it is unless the application turned it on; others are
    probed): FFmpeg's ``avformat_find_stream_info`` opens no decoder (none is on the codec
    whitelist it gives them), so it decodes nothing; the streams' pixel formats stay unknown,
    and their decoders learn them from the bitstream."""
    import av  # here, not above: the process that only hands clips to workers never needs it

    form = _format_of(path)
    # With PyAV's logging on, FFmpeg's complaint about the whitelist would be an error record
    # for each clip: such an application's clips are probed (tests/test_analysis_fast.py).
    unprobed = form == "mp4" and not probed and av.logging.get_level() is None
    options = _UNPROBED if unprobed else None
    try:
        with av.open(os.fspath(path), format=form, container_options=options) as container:
            if not container.streams.video:
                raise MediaError(f"{os.fspath(path)}: no video stream")
            video = container.streams.video[0]
            if video.codec_context is None:  # no codec it names (its sample description cut short)
                raise MediaError(
                    f"{os.fspath(path)}: not a readable video (no decoder for its video stream); "
                    "the download may be truncated, so fetch it again"
                )
            yield container, video
    except FileNotFoundError as exc:
        raise MediaError(f"{os.fspath(path)}: no such file") from exc
    except av.FFmpegError as exc:
        raise MediaError(
            f"{os.fspath(path)}: not a readable video ({exc.strerror or exc}); "
            "the download may be truncated, so fetch it again"
        ) from exc


_UNPROBED = {"codec_whitelist": "none"}
"""Format options that leave FFmpeg's stream probing without a decoder: the whitelist applies to
the decoders it opens, not to PyAV's nor batchvid's. FFmpeg logs that it could not open one (an
error and a warning), which PyAV drops unless an application turned its logging on (``_opened``
then probes; batchvid never does; an application that gave FFmpeg back its own printing to
the terminal, ``av.logging.restore_default_callback``, would see the two lines)."""


def _format_of(path: str | os.PathLike[str]) -> str | None:
    """``"mp4"`` when ``path`` starts as an MP4 file does (an ``ftyp`` box), else None: FFmpeg
    then skips guessing the format, which asks every demuxer it has (~0.2 ms a clip); the one
    it would pick for such a file is MP4's, the same one. Unreadable: None, and FFmpeg says why."""
    try:
        fd = os.open(path, os.O_RDONLY)  # not open(): no buffered file object for 8 bytes
    except OSError:
        return None
    try:
        head = os.read(fd, 8)
    except OSError:
        return None
    finally:
        os.close(fd)
    return "mp4" if head[4:8] == b"ftyp" else None


def _info(container: Any, video: Any, frames: int, signals: Quality | None) -> MediaInfo:
    import av

    rate = video.average_rate or video.guessed_rate or video.base_rate
    fps = float(rate) if rate else 0.0
    length, unit = video.duration, video.time_base
    if length is not None and unit is not None:
        # float(length * unit) without the Fraction made between: one correctly rounded
        # division of the same ratio, so the same float.
        duration = length * unit.numerator / unit.denominator
    elif container.duration is not None:
        duration = container.duration / av.time_base
    else:
        duration = frames / fps if fps else 0.0
    audio = container.streams.audio[0] if container.streams.audio else None
    audio_codec = audio.codec_context if audio is not None else None  # None: it names no codec
    return MediaInfo(
        codec=video.codec_context.name,
        width=video.codec_context.width,
        height=video.codec_context.height,
        fps=fps,
        frame_count=frames,
        duration=duration,
        has_audio=audio is not None,
        audio_codec=audio_codec.name if audio_codec is not None else None,
        quality=signals,
    )


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
    on a thread; if one dies before its first answer, workers are not tried again.
    """

    def __init__(self, workers: int | None = None, *, after: int = POOL_AFTER) -> None:
        self._size = workers or os.cpu_count() or 1
        self._after = after
        self._idle: list[_Worker] = []
        self._started = 0
        self._answered = False
        """Whether a worker has answered once (then more may start)."""
        self._broken = False
        """A worker died before its first answer: workers cannot start here (a frozen
        application, say), so every clip is analysed on a thread."""
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
            return await anyio.to_thread.run_sync(analyse, path)
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
        return await anyio.to_thread.run_sync(analyse, path)

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
        """An idle worker, else a new one; None when none can be started."""
        with self._lock:
            if self._broken:
                return None
            if self._idle:
                return self._idle.pop()
            self._started += 1
        try:
            return _Worker()
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


_HEADER = struct.Struct("!Q")


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

    def __init__(self) -> None:
        self.answered = False
        self.last_cpu = 0.0
        """The CPU seconds the worker spent on each clip of the last request (the mean; its
        reply says)."""
        if not sys.executable:
            raise OSError("no Python executable to start an analysis worker with")
        self._process = subprocess.Popen(
            [sys.executable, "-P", "-c", "from batchvid.media_worker import serve; serve()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=worker_env(), start_new_session=True,
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
        while len(buffer) < _HEADER.size or len(buffer) < _HEADER.size + _HEADER.unpack_from(buffer)[0]:
            await anyio.wait_readable(self._replies)
            try:
                chunk = os.read(self._replies, 1 << 16)
            except BlockingIOError:
                continue
            if not chunk:
                raise EOFError("the analysis worker exited")
            buffer += chunk
        return bytes(buffer[_HEADER.size :])

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
    info = MediaInfo(codec, width, height, fps, frames, duration, audio, audio_codec, quality)
    return Analysis(info, poster)


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
