"""Probing a downloaded video with PyAV: codec, size, frame rate, frames, duration, audio,
the quality signals of ``batchvid.quality``, and (``analyse``) the poster of
``batchvid.poster``, all in one pass. A run analyses its clips off the event loop, through
``batchvid.media_pool`` (whose entry points are named here too)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from batchvid.errors import BatchvidError
from batchvid.poster import FirstFrame, jpeg_of
from batchvid.quality import Quality, measure


class MediaError(BatchvidError):
    """A file is not a video PyAV can read (truncated, garbage, or without a video stream)."""


class _UnprobedError(MediaError):
    """A ``MediaError`` of a clip opened without probing (``_opened``): ``analyse`` opens it
    again with probing, whose error is the one a user gets."""


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
    with _opened(path) as (container, video, _):
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
    frame must have its size. An MP4 clip that is not H.264, fails a check or gives an error
    is analysed again with probing, so facts and errors are probing's
    (tests/test_analysis_fast.py, tests/benchmarks/ab_analysis.py); a clip that is not MP4 is
    opened probed from the first, once.

    Raises ``MediaError`` when the file does not open as a video.
    """
    try:
        analysis = _analyse(path, probed=False)
    except _UnprobedError:
        analysis = None  # the probed open says why, in the words a user always got
    if analysis is None:
        analysis = _analyse(path, probed=True)
        assert analysis is not None  # probed, it gives an analysis or raises
    return analysis


def _analyse(path: str | os.PathLike[str], *, probed: bool) -> Analysis | None:
    """``analyse``, with or without FFmpeg's stream probing (``_opened`` probes a clip it cannot
    open without); None when it was opened without and is not a clip whose facts the container
    alone gives as probing would."""
    with _opened(path, probed=probed) as (container, video, unprobed):
        context = video.codec_context
        if unprobed and not _unprobed_fits(video):
            return None
        context.thread_count = 1
        first = FirstFrame(video)
        signals = measure(container, video, first.feed)
        frame = first.finish()
        # Unprobed, the size is the container's alone; probing may take one from a decoder.
        if unprobed and (frame is None or (frame.width, frame.height) != (context.width, context.height)):
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
def _opened(path: str | os.PathLike[str], *, probed: bool = True) -> Iterator[tuple[Any, Any, bool]]:
    """The open container of ``path``, its first video stream, and whether it was opened
    without probing; PyAV's errors and a missing file or video stream as ``MediaError``
    (``_UnprobedError`` when opened without). Not ``probed`` (an MP4 file only, while PyAV's
    logging of FFmpeg is off, as it is unless the application turned it on; others are
    probed all the same): FFmpeg's ``avformat_find_stream_info`` opens no decoder (none is on
    the codec whitelist it gives them), so it decodes nothing; the streams' pixel formats stay
    unknown, and their decoders learn them from the bitstream."""
    import av  # here, not above: the process that only hands clips to workers never needs it

    form = _format_of(path)
    # With PyAV's logging on, FFmpeg's complaint about the whitelist would be an error record
    # for each clip: such an application's clips are probed (tests/test_analysis_fast.py).
    unprobed = form == "mp4" and not probed and av.logging.get_level() is None
    options, error = (_UNPROBED, _UnprobedError) if unprobed else (None, MediaError)
    try:
        with av.open(os.fspath(path), format=form, container_options=options) as container:
            if not container.streams.video:
                raise error(f"{os.fspath(path)}: no video stream")
            video = container.streams.video[0]
            if video.codec_context is None:  # no codec it names (its sample description cut short)
                raise error(
                    f"{os.fspath(path)}: not a readable video (no decoder for its video stream); "
                    "the download may be truncated, so fetch it again"
                )
            yield container, video, unprobed
    except FileNotFoundError as exc:
        raise error(f"{os.fspath(path)}: no such file") from exc
    except av.FFmpegError as exc:
        raise error(
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


# The pool's entry points, where callers have always found them. Each of the two modules
# imports the other as its last line, once all its own names are defined, so either may be
# imported first (tests/test_analysis.py).
from batchvid.media_pool import AnalysisPool, analyse_off_loop, shutdown_pool, start_pool  # noqa: E402

__all__ = [
    "Analysis", "AnalysisPool", "MediaError", "MediaInfo", "analyse", "analyse_off_loop", "probe", "shutdown_pool",
    "start_pool",
]
