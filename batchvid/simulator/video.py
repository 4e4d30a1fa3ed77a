"""Real, tiny MP4 files and cover images for the simulator, rendered with PyAV and cached.

Every video is H.264 (``libx264``, preset ``ultrafast``, one thread, so the bytes are
deterministic) at the requested frame rate, with an AAC track when audio is asked for. Frames
are a solid colour from a 16-colour palette with a bright bar sweeping across one of two ways
(``pattern``), or a still frame (``look="frozen"``), or black
(``look="black"``). The cache key is the whole ``VideoSpec``, so only distinct looks are
encoded; what makes every task's file unique is a small tag box appended after encoding
(``tagged``), which costs no encoding.
"""

from __future__ import annotations

import array
import functools
import io
import math
import struct
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

import av

PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (220, 190, 255),
    (170, 110, 40),
    (128, 0, 0),
    (0, 0, 128),
    (128, 128, 128),
)
"""The colours a video can have; ``colour`` indexes this tuple."""

AUDIO_RATE = 48_000


@dataclass(frozen=True, slots=True)
class VideoSpec:
    """What to render: the cache key of one encoded file."""

    width: int
    height: int
    fps: int
    seconds: float
    with_audio: bool
    colour: int
    pattern: int = 0
    """How the bar moves: 0 (the original sweep) or 1 (see ``_bar``)."""
    look: str = "moving"
    """``moving`` (the bar sweeps), ``frozen`` (every frame the same) or ``black``."""


LOOKS = ("moving", "frozen", "black")
PATTERNS = 2


def scaled_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """``width`` x ``height`` shrunk so its longer side is at most ``max_side``, both even."""
    if max_side is not None and max(width, height) > max_side:
        factor = max_side / max(width, height)
        width, height = round(width * factor), round(height * factor)
    return max(2, width - width % 2), max(2, height - height % 2)


def _yuv(colour: tuple[int, int, int]) -> tuple[int, int, int]:
    r, g, b = colour
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    u = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    v = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
    return round(y), round(u), round(v)


def _bar(spec: VideoSpec, index: int) -> tuple[int, int]:
    """Where the bar is in frame ``index``: (first column, width). Pattern 0 is the original
    sweep, left to right; pattern 1 starts mid-picture and sweeps right to left, twice as fast."""
    pattern = spec.pattern % PATTERNS
    width = max(2, spec.width // 8)
    speed = max(1, spec.width // 16) * (1 + pattern)
    step = 0 if spec.look == "frozen" else index
    x = (step * speed + pattern * spec.width // 2) % spec.width
    if pattern:
        x = spec.width - 1 - x
    return x, width


def _video_frames(spec: VideoSpec, count: int) -> Iterator[av.VideoFrame]:
    black = spec.look == "black"
    y, u, v = (16, 128, 128) if black else _yuv(PALETTE[spec.colour % len(PALETTE)])
    planes: list[bytes] = []
    template = av.VideoFrame(spec.width, spec.height, "yuv420p")
    chroma_rows = (spec.height + 1) // 2
    u_plane = bytes([u]) * (template.planes[1].line_size * chroma_rows)
    v_plane = bytes([v]) * (template.planes[2].line_size * chroma_rows)
    luma_stride = template.planes[0].line_size
    for index in range(count):
        row = bytearray([y]) * luma_stride
        if not black:
            x, bar = _bar(spec, index)
            row[x : min(spec.width, x + bar)] = bytes([235]) * (min(spec.width, x + bar) - x)
        planes = [bytes(row) * spec.height, u_plane, v_plane]
        frame = av.VideoFrame(spec.width, spec.height, "yuv420p")
        for plane, data in zip(frame.planes, planes, strict=True):
            plane.update(data)
        frame.pts = index
        frame.time_base = Fraction(1, spec.fps)
        yield frame


@functools.lru_cache(maxsize=64)
def _tone(samples: int, colour: int) -> bytes:
    """``samples`` of a quiet sine (pitch by colour) as native float32, cached."""
    pitch = 220.0 * (1 + colour % len(PALETTE) / 8)
    step = 2 * math.pi * pitch / AUDIO_RATE
    return array.array("f", (0.2 * math.sin(step * i) for i in range(samples))).tobytes()


def _audio_frames(seconds: float, colour: int) -> Iterator[av.AudioFrame]:
    samples_total = max(1024, round(seconds * AUDIO_RATE))
    pcm = _tone(samples_total, colour)
    step = 1024
    for start in range(0, samples_total, step):
        n = min(step, samples_total - start)
        frame = av.AudioFrame(format="fltp", layout="mono", samples=n)
        data = pcm[4 * start : 4 * (start + n)]
        frame.planes[0].update(data.ljust(frame.planes[0].buffer_size, b"\0"))
        frame.sample_rate = AUDIO_RATE
        frame.pts = start
        frame.time_base = Fraction(1, AUDIO_RATE)
        yield frame


@functools.lru_cache(maxsize=64)
def _audio_track(seconds: float, colour: int) -> bytes:
    """An audio-only MP4 of ``seconds`` of tone, encoded once and remuxed into every video
    that needs it (AAC encoding costs more than encoding a small video)."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        audio = container.add_stream("aac", rate=AUDIO_RATE, layout="mono")
        audio.codec_context.thread_count = 1
        for aframe in _audio_frames(seconds, colour):
            container.mux(audio.encode(aframe))
        container.mux(audio.encode(None))
    return buffer.getvalue()


def _mux_audio(container: av.container.OutputContainer, track: bytes) -> None:
    with av.open(io.BytesIO(track), mode="r") as source:
        template = source.streams.audio[0]
        audio = container.add_stream_from_template(template)
        for packet in source.demux(template):
            if packet.dts is None:
                continue
            packet.stream = audio
            container.mux(packet)


def render_video(spec: VideoSpec) -> bytes:
    """Encode ``spec`` as an MP4 file and return its bytes (no caching of the video)."""
    buffer = io.BytesIO()
    count = max(1, round(spec.seconds * spec.fps))
    with av.open(buffer, mode="w", format="mp4") as container:
        video = container.add_stream("libx264", rate=spec.fps)
        video.width = spec.width
        video.height = spec.height
        video.pix_fmt = "yuv420p"
        video.codec_context.thread_count = 1
        # A still picture is encoded losslessly: lossy P-frames would keep refining it, and its
        # decoded frames would not be identical.
        quality = ("crf", "35") if spec.look == "moving" else ("qp", "0")
        video.options = {"preset": "ultrafast", quality[0]: quality[1]}
        if spec.with_audio:
            _mux_audio(container, _audio_track(count / spec.fps, spec.colour % len(PALETTE)))
        for frame in _video_frames(spec, count):
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
    return buffer.getvalue()


def render_png(width: int, height: int, colour: int) -> bytes:
    """A solid-colour RGB PNG, written by hand (zlib), for cover images; black when
    ``colour`` is negative."""
    r, g, b = (0, 0, 0) if colour < 0 else PALETTE[colour % len(PALETTE)]
    row = b"\0" + bytes([r, g, b]) * width
    raw = zlib.compress(row * height, 9)

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


class MediaCache:
    """Encoded videos and covers by spec; thread-safe, renders each spec once."""

    def __init__(self) -> None:
        self._videos: dict[VideoSpec, bytes] = {}
        self._covers: dict[tuple[int, int, int], bytes] = {}
        self._lock = threading.Lock()
        self.renders = 0

    def video(self, spec: VideoSpec) -> bytes:
        with self._lock:
            data = self._videos.get(spec)
            if data is None:
                data = render_video(spec)
                self._videos[spec] = data
                self.renders += 1
            return data

    def cover(self, width: int, height: int, colour: int) -> bytes:
        key = (width, height, -1 if colour < 0 else colour % len(PALETTE))
        with self._lock:
            data = self._covers.get(key)
            if data is None:
                data = self._covers[key] = render_png(*key)
            return data


def tagged(video: bytes, tag: str) -> bytes:
    """``video`` followed by a top-level MP4 ``free`` box holding ``tag``: every reader skips
    it, so the file plays the same, but its bytes (and sha256) are the task's own."""
    payload = b"batchvid-simulator " + tag.encode("ascii")
    return video + struct.pack(">I4s", 8 + len(payload), b"free") + payload


def padded_size(video: bytes, total: int | None) -> int:
    """The size served for ``video`` padded to ``total`` bytes (unchanged if it cannot pad)."""
    if total is None or total < len(video) + 8:
        return len(video)
    return total


def iter_padded(
    video: bytes, total: int, start: int, stop: int, chunk: int = 1 << 20
) -> Iterator[bytes]:
    """Bytes ``start:stop`` of ``video`` followed by an MP4 ``free`` box filling it to ``total``.

    The padding is a top-level ``free`` box, which every MP4 reader skips, so the padded file is
    still a valid MP4. Nothing of the padding is held in memory beyond one ``chunk``.
    """
    pad = total - len(video)
    if pad >= 16:
        prefix = video + struct.pack(">I4sQ", 1, b"free", pad)
    elif pad >= 8:
        prefix = video + struct.pack(">I4s", pad, b"free")
    else:
        prefix = video
    position = start
    if position < len(prefix):
        end = min(stop, len(prefix))
        for offset in range(position, end, chunk):
            yield prefix[offset : min(end, offset + chunk)]
        position = end
    zeros = bytes(min(chunk, max(0, stop - position)))
    while position < stop:
        n = min(chunk, stop - position)
        yield zeros if n == len(zeros) else zeros[:n]
        position += n
