"""Quality signals of a clip, from a bounded sample of small grey frames (PyAV and numpy).

What is measured, all on a 0-1 luma scale (full range, black is 0):

- ``motion``: mean absolute difference between consecutive samples, averaged over the pairs;
- ``black_fraction``: samples whose mean luma is below ``BLACK_LUMA``;
- ``frozen_fraction``: consecutive pairs that differ by less than ``FROZEN_DIFF``;
- ``luma_mean``: mean luma over the samples;
- ``frames_decoded``: frames the stream actually holds, counted by reading every video packet
  (a cut-off or damaged download has fewer than the container's ``frame_count``). Packets are
  read, not decoded: decoding every frame would cost the full decode the sampling avoids.
- ``samples``: how many frames the signals were computed on (at most ``MAX_SAMPLES``).

Which frames are sampled, so the cost does not follow the clip's length:

- a clip with at least ``MIN_KEYFRAMES`` keyframes: up to ``MAX_SAMPLES`` keyframes evenly
  spread over the clip, each reached by a seek and decoded alone (``skip_frame = NONKEY``), so
  the decoder touches 32 frames whatever the length;
- a clip with fewer keyframes (one group of pictures, as short generated clips usually are):
  no frame decodes without the ones before it, so the clip is decoded in one pass up to its
  last sample, which is the first decoded frame at or after each of 32 evenly spread times.
  Frames nothing refers to (most B-frames) and the loop filter are skipped, which saves little
  (measured: 0.9-1.0 of a full decode in CPU time, tests/benchmarks/README.md). An MP4 clip
  of up to ``KEEP_BYTES`` is decoded from the packets the scan kept, not read a second time,
  by the decoder this thread kept from its last clip when that clip had the same parameter sets
  (small H.264 clips without reordering: ``batchvid.poster.keep_decoder``).

``check_quality`` compares the signals with a manifest's ``qc:`` thresholds.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Grey = npt.NDArray[np.uint8]

# numpy and PyAV are imported where frames are measured, not with this module: the process
# that runs the event loop uses ``Quality`` and ``check_quality`` and leaves the measuring to
# the analysis workers (``batchvid.media_pool.AnalysisPool``), so it need not load them.

MAX_SAMPLES = 32
MAX_SIDE = 64
BLACK_LUMA = 0.06
FROZEN_DIFF = 0.004
"""Mean absolute difference (about one grey level in 255) below which two samples are the
same picture."""
MIN_KEYFRAMES = 8
KEEP_BYTES = 16 << 20
"""Packets of a clip that the scan keeps, in bytes, so that the sequential sampling decodes
them without reading the clip again (a seek and a second demux: ~0.4 ms of a simulator clip's
~5); a larger clip (a generated clip is a few MB) is read again."""


@dataclass(frozen=True, slots=True)
class Quality:
    """Signals of one clip; see the module docstring for their meaning."""

    motion: float
    black_fraction: float
    frozen_fraction: float
    luma_mean: float
    frames_decoded: int
    samples: int

    def to_dict(self) -> dict[str, Any]:
        """Sorted keys, floats rounded to 4 decimals, so output is deterministic."""
        return {
            "black_fraction": round(self.black_fraction, 4),
            "frames_decoded": self.frames_decoded,
            "frozen_fraction": round(self.frozen_fraction, 4),
            "luma_mean": round(self.luma_mean, 4),
            "motion": round(self.motion, 4),
            "samples": self.samples,
        }


def measure(container: Any, stream: Any, on_packet: Callable[[Any], Any] | None = None) -> Quality:
    """The signals of ``stream`` (the video stream of an open PyAV ``container``).

    ``on_packet`` sees every packet with data as the stream is scanned, until it returns true
    (the poster's decoder takes its first frame from them: ``batchvid.media.analyse``). PyAV's
    errors propagate; ``batchvid.media.probe`` turns them into ``MediaError``.
    """
    kept: list[Any] | None = [] if _rereads_alike(container) else None
    times, keyframes = _scan(container, stream, on_packet, kept)
    if len(keyframes) >= MIN_KEYFRAMES:
        kept = None  # not needed: each sample is reached by a seek
        frames = _keyframe_samples(container, stream, keyframes)
    else:
        frames = _sequential_samples(container, stream, times, kept)
    return signals(_shrinker().stack(frames), len(times))


def signals(samples: list[Grey] | Grey, frames_decoded: int) -> Quality:
    """The signals of grey ``samples`` (2-D arrays of grey levels, 0-255, of one size, or
    one 3-D array of them) in clip order. Computed on all samples at once: the same float32
    arithmetic as sample by sample, equal to the last bit (tests/test_quality.py), without
    numpy's cost per call."""
    if not len(samples):
        return Quality(0.0, 0.0, 0.0, 0.0, frames_decoded, 0)
    means, diffs = _means_and_diffs(samples)
    return Quality(
        motion=sum(diffs) / len(diffs) if diffs else 0.0,
        black_fraction=sum(m < BLACK_LUMA for m in means) / len(means),
        frozen_fraction=sum(d < FROZEN_DIFF for d in diffs) / len(diffs) if diffs else 0.0,
        luma_mean=sum(means) / len(means),
        frames_decoded=frames_decoded,
        samples=len(samples),
    )


def _means_and_diffs(samples: list[Grey] | Grey) -> tuple[list[float], list[float]]:
    """Each sample's mean luma (0-1) and the mean absolute difference of each consecutive
    pair, all samples at once (numpy's ValueError if their sizes differ)."""
    import numpy as np

    stack = (np.stack(samples) if isinstance(samples, list) else samples).astype(np.float32)
    stack /= np.float32(255.0)
    means: list[float] = stack.mean(axis=(1, 2)).tolist()
    steps = np.subtract(stack[1:], stack[:-1])
    np.abs(steps, out=steps)
    diffs: list[float] = steps.mean(axis=(1, 2)).tolist()
    return means, diffs


def _scan(
    container: Any,
    stream: Any,
    on_packet: Callable[[Any], Any] | None = None,
    kept: list[Any] | None = None,
) -> tuple[list[int], list[int]]:
    """Presentation times of the frames with data, and of the keyframes, sorted; from the
    packets alone (none is decoded here). Every packet read goes into ``kept`` too (given),
    while they hold at most ``KEEP_BYTES``; past that ``kept`` is emptied and left so."""
    times: list[int] = []
    keyframes: list[int] = []
    held = 0
    for packet in container.demux(stream):
        size = packet.size
        if kept is not None and held <= KEEP_BYTES:
            kept.append(packet)
            held += size
            if held > KEEP_BYTES:
                kept.clear()
        if not size:
            continue
        if on_packet is not None and on_packet(packet):
            on_packet = None  # it has what it wanted
        times.append(packet.pts if packet.pts is not None else len(times))
        if packet.is_keyframe and packet.pts is not None:
            keyframes.append(packet.pts)
    times.sort()
    keyframes.sort()
    if kept and not kept[0].is_keyframe:
        kept.clear()
    return times, keyframes


def _spread(count: int, total: int) -> list[int]:
    """``count`` indices evenly spread over ``range(total)``, first and last included."""
    if count <= 1:
        return [0][:count]
    return sorted({round(i * (total - 1) / (count - 1)) for i in range(count)})


class _Shrinker:
    """Frames to small grey pictures. One reformatter serves every frame of a thread's clips: it
    keeps its scaler while the size and format stay the same, which ``frame.to_ndarray(width=…)``
    would build again for each frame (about 30 times slower on small clips), and a new
    reformatter for each clip once per clip (most of the cost of a clip of 16 small frames).
    It scales on this thread alone (``threads=1``): swscale's own threads, woken for every
    64-pixel frame, cost more than the scaling (~60 against ~17 us a frame of a simulator's
    clip). The pictures are kept as the plane's bytes, rows padded as they are, and made
    one array at the end: numpy's calls per frame (a view, a reshape, a slice, then a stack of
    them) cost more than the copy."""

    def __init__(self) -> None:
        from av.video.format import VideoFormat
        from av.video.reformatter import Interpolation, VideoReformatter

        self._reformatter = VideoReformatter()
        # The scaling as a number and the format as a PyAV object: given names, PyAV looks
        # them up on each call.
        self._area = Interpolation.AREA.value
        self._gray: Any = VideoFormat("gray8")  # which PyAV takes, though its stubs say a name

    def stack(self, frames: Iterable[Any]) -> Grey | list[Grey]:
        """``frames`` as one array of small grey pictures (sample, row, column) when they
        are of one size, else as a list of 2-D arrays (which ``signals`` rejects as
        ``numpy.stack`` does)."""
        import numpy as np

        planes: list[bytes] = []
        shapes: list[tuple[int, int, int]] = []
        reformat, area, gray, last = self._reformatter.reformat, self._area, self._gray, (0, 0)
        width = height = 0
        for frame in frames:
            if (frame.width, frame.height) != last:
                last = (frame.width, frame.height)
                width, height = _small_size(*last)
            # Positional where PyAV's order has always been this one: fewer keywords to parse.
            small = reformat(frame, width, height, gray, None, None, area, threads=1)
            plane = small.planes[0]
            planes.append(bytes(plane))
            shapes.append((width, height, plane.line_size))
        if len(set(shapes)) == 1:
            width, height, line = shapes[0]
            rows = np.frombuffer(b"".join(planes), dtype=np.uint8).reshape(len(planes), -1, line)
            return rows[:, :height, :width]
        return [
            np.frombuffer(plane, dtype=np.uint8).reshape(-1, line)[:height, :width]
            for plane, (width, height, line) in zip(planes, shapes, strict=True)
        ]



def _small_size(width: int, height: int) -> tuple[int, int]:
    """The grey sample's size for a frame of ``width`` x ``height``: at most ``MAX_SIDE`` on
    its longer side, aspect kept."""
    scale = MAX_SIDE / max(width, height, 1)
    return max(1, min(width, round(width * scale))), max(1, min(height, round(height * scale)))


_local = threading.local()


def _shrinker() -> _Shrinker:
    """This thread's ``_Shrinker`` (a reformatter is not safe to share between threads)."""
    shrinker: _Shrinker | None = getattr(_local, "shrinker", None)
    if shrinker is None:
        shrinker = _local.shrinker = _Shrinker()
    return shrinker


def _keyframe_samples(container: Any, stream: Any, keyframes: list[int]) -> Iterator[Any]:
    stream.codec_context.skip_frame = "NONKEY"
    for index in _spread(min(MAX_SAMPLES, len(keyframes)), len(keyframes)):
        container.seek(keyframes[index], stream=stream, backward=True, any_frame=False)
        for frame in container.decode(stream):
            yield frame
            break


def _sequential_samples(
    container: Any, stream: Any, times: list[int], kept: list[Any] | None = None
) -> Iterator[Any]:
    """The first decoded frame at or after each of up to ``MAX_SAMPLES`` evenly spread
    presentation times. Frames no other frame refers to are not decoded (``skip_frame =
    NONREF``: most B-frames), nor is the loop filter run; decoding stops after the last sample.
    The packets are ``kept`` ones when there are (``_scan``), else read again from the start."""
    wanted = [times[i] for i in _spread(min(MAX_SAMPLES, len(times)), len(times))]
    if not wanted:
        return
    if not kept:
        container.seek(0, stream=stream, backward=True, any_frame=False)
    codec, fits = _sampling_decoder(stream.codec_context) if kept else (stream.codec_context, None)
    if fits is None:
        codec.skip_frame = "NONREF"
        codec.options = {"skip_loop_filter": "all"}
    decoded = _decoded(codec, kept) if kept else container.decode(stream)
    targets = iter(wanted)
    target: int | None = next(targets)
    for index, frame in enumerate(decoded):
        pts = frame.pts if frame.pts is not None else index
        if target is None or pts < target:
            continue
        yield frame
        while target is not None and target <= pts:
            target = next(targets, None)
        if target is None:
            break
    if fits is not None and not codec.has_b_frames:  # else it guessed a reorder depth
        from batchvid.poster import KEEP_PIXELS, keep_decoder, sets_in_band

        # One too large to be kept (``keep_decoder``) leaves the packets unscanned.
        if codec.width * codec.height <= KEEP_PIXELS and not sets_in_band(kept or (), fits[1]):
            keep_decoder("sampler", fits, codec)


def _sampling_decoder(source: Any) -> tuple[Any, tuple[Any, ...] | None]:
    """The decoder for a clip's kept packets, and what it fits (``batchvid.poster.keep_decoder``):
    for an H.264 stream without reordering, this thread's kept decoder when it fits, else a new
    one set up as the stream's own is (extradata, size, colour fields, no reorder depth); for
    others, the stream's own (None: not to be kept)."""
    from batchvid.poster import COLOUR_FIELDS, kept_decoder, new_decoder

    if source.name != "h264" or not source.extradata or source.has_b_frames:
        return source, None
    fields = ("width", "height", *COLOUR_FIELDS)
    fits = (source.name, source.extradata, *(getattr(source, name) for name in fields))
    decoder = kept_decoder("sampler", fits)
    if decoder is None:
        decoder = new_decoder(source, fields)
        decoder.skip_frame = "NONREF"
        decoder.options = {"skip_loop_filter": "all"}
    return decoder, fits


def _decoded(codec: Any, packets: list[Any]) -> Iterator[Any]:
    """The frames of ``packets`` through ``codec``, as ``container.decode`` gives them when it
    reads the same packets (each decoded as it comes, the empty one at the end draining)."""
    for packet in packets:
        yield from codec.decode(packet)


def _rereads_alike(container: Any) -> bool:
    """Whether ``container``'s demuxer gives, after a seek to the start, the packets it gave
    first: MP4's (the mov demuxer) reads its samples from the index, timestamps included. Other
    demuxers may make timestamps up as they read, so their clips are read again instead."""
    return "mp4" in container.format.name.split(",")


QC_KEYS = ("max_black_fraction", "min_motion", "max_frozen_fraction")


def check_quality(quality: Mapping[str, Any] | None, thresholds: Mapping[str, Any]) -> str | None:
    """Why a clip breaks the manifest's ``qc:`` ``thresholds``, or None when it passes.

    ``quality`` is ``Quality.to_dict()`` (as recorded under ``media.quality``); a clip without
    signals (its video did not decode) passes, since ``--strict-media`` is what rejects those.
    Thresholds left out are not checked.
    """
    if not quality or not thresholds:
        return None
    problems = []
    limit = thresholds.get("max_black_fraction")
    if limit is not None and quality["black_fraction"] > limit:
        problems.append(
            f"{quality['black_fraction']:.0%} of sampled frames are black "
            f"(qc.max_black_fraction is {limit})"
        )
    limit = thresholds.get("max_frozen_fraction")
    if limit is not None and quality["frozen_fraction"] > limit:
        problems.append(
            f"{quality['frozen_fraction']:.0%} of sampled frames repeat the one before "
            f"(qc.max_frozen_fraction is {limit})"
        )
    limit = thresholds.get("min_motion")
    if limit is not None and quality["motion"] < limit:
        problems.append(f"motion is {quality['motion']:g} (qc.min_motion is {limit})")
    return "; ".join(problems) if problems else None
