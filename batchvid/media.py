"""Probing a downloaded video with PyAV: codec, size, frame rate, frames, duration, audio,
and the quality signals of ``batchvid.quality``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import av

from batchvid.errors import BatchvidError
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


def probe(path: str | os.PathLike[str], *, quality: bool = True) -> MediaInfo:
    """Read the container of ``path`` (frames are demuxed only if it gives no count) and, with
    ``quality``, measure its signals on a bounded sample of frames (``batchvid.quality``).

    Raises ``MediaError`` when the file does not open as a video.
    """
    try:
        with av.open(os.fspath(path)) as container:
            if not container.streams.video:
                raise MediaError(f"{os.fspath(path)}: no video stream")
            video = container.streams.video[0]
            rate = video.average_rate or video.guessed_rate or video.base_rate
            fps = float(rate) if rate else 0.0
            frames = int(video.frames or 0)
            if frames <= 0:
                frames = sum(1 for packet in container.demux(video) if packet.size)
            if video.duration is not None and video.time_base is not None:
                duration = float(video.duration * video.time_base)
            elif container.duration is not None:
                duration = container.duration / av.time_base
            else:
                duration = frames / fps if fps else 0.0
            audio = container.streams.audio[0] if container.streams.audio else None
            signals = measure(container, video) if quality else None
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
    except FileNotFoundError as exc:
        raise MediaError(f"{os.fspath(path)}: no such file") from exc
    except av.FFmpegError as exc:
        raise MediaError(
            f"{os.fspath(path)}: not a readable video ({exc.strerror or exc}); "
            "the download may be truncated, so fetch it again"
        ) from exc
