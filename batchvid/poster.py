"""Posters: the first frame of a video as a small JPEG, for the gallery (report.html).

Made with PyAV's MJPEG encoder, single-threaded and bit-exact, so the same video gives the same
bytes (the encoder writes no version comment). A poster is a convenience: a video that does not
decode has none, and nothing fails because of it.

A run makes each poster in the same pass over the video as its probe and quality signals
(``batchvid.media.analyse``, where ``FirstFrame`` takes the first frame from the packets the
signals scan), writes it (``write_poster``) and records it, ``{path, sha256, bytes}``, in the
journal, report.json and batchvid.lock, where ``batchvid verify`` checks it; ``make_poster``
serves older directories (``batchvid view``).
"""

from __future__ import annotations

import functools
import hashlib
import os
import threading
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from av.video.reformatter import VideoReformatter

# PyAV is imported where a frame is decoded or encoded, not with this module: the gallery and
# the planner use its names, and a rerun with nothing to download never needs PyAV.

POSTER_NAME = "poster.jpg"
MAX_WIDTH = 320
_QUALITY = 3  # MJPEG qscale: 2 (best) .. 31; 3 looks clean at thumbnail size
_FF_QP2LAMBDA = 118


def poster_path(job_dir: Path) -> Path:
    """Where a job's poster lives: ``jobs/<id>/poster.jpg``."""
    return job_dir / POSTER_NAME


def poster_size(width: int, height: int) -> tuple[int, int]:
    """``width`` x ``height`` scaled to at most ``MAX_WIDTH`` wide, aspect kept, even sides."""
    if width > MAX_WIDTH:
        height, width = round(height * MAX_WIDTH / width), MAX_WIDTH
    return max(2, width - width % 2), max(2, height - height % 2)


def poster_jpeg(video: Path) -> bytes | None:
    """The first frame of ``video`` as JPEG bytes, or None when it has no decodable frame."""
    import av

    try:
        with av.open(os.fspath(video)) as container:
            if not container.streams.video:
                return None
            stream = container.streams.video[0]
            stream.thread_type = "NONE"
            frame = next(iter(container.decode(stream)), None)
    except (av.FFmpegError, OSError):
        return None
    return jpeg_of(frame) if frame is not None else None


class FirstFrame:
    """The first frame of a video stream, decoded from its packets as they are read by someone
    else (the quality scan), by a decoder of its own: the scan's decoder may skip the loop
    filter, which changes pixels. The same frame as ``poster_jpeg``'s, so the same bytes
    (tests/test_analysis.py compares them). The decoder is kept for the next clip of the same
    parameter sets (``keep_decoder``) when the first packet gave the frame.

    An H.264 stream with B-frames holds its first picture back until the pictures decoded
    after it show that none comes before it (2-3 more for an x264 clip, ~0.5 ms each at
    720x480). Those pictures change nothing in the first one, so when the first packet is a
    keyframe and the packets after it (``HOLD`` of them, or all there are) come after it in
    presentation order, it is taken out at once (the decoder drained), and the later packets
    are not decoded: the frame ``poster_jpeg`` gets, as the decoder would order it had it
    decoded them. A packet that might come before it (no timestamp, an earlier one, one to be
    discarded or corrupt) and the packets held are decoded as they came, as before; so is a
    clip whose first picture comes out interlaced (maybe one field of two packets)."""

    def __init__(self, stream: Any) -> None:
        import av

        self._error: type[Exception] = av.FFmpegError
        source = self._source = stream.codec_context
        self._fits = (source.name, source.extradata, *(getattr(source, n) for n in COLOUR_FIELDS))
        self._decoder: Any = kept_decoder("first", self._fits) or new_decoder(source)
        self.frame: Any = None
        self._done = False
        self._fed = 0
        self._clean = False
        """Whether the first packet gave the frame: one picture decoded, without error."""
        self._first: Any = None
        self._held: list[Any] | None = None
        """The packets after the first (``_first``), not decoded, while its picture waits in
        the decoder and none of them comes before it; None when not holding."""

    def feed(self, packet: Any) -> bool:
        """Decode ``packet`` until the first frame is out (a decoding error: no poster);
        whether that is done (later packets are not needed)."""
        if self._done:
            return True
        if self._held is not None:
            return self._hold(packet)
        self._fed += 1
        try:
            frames = self._decoder.decode(packet)
        except self._error:
            self._done = True
            return True
        if frames:
            self.frame, self._done = frames[0], True
            self._clean = self._fed == 1 and packet is not None and not sets_in_band((packet,), self._fits[1])
        elif self._fed == 1 and self._first is None and self._fits[0] == "h264" and _leads(packet, None):
            self._first, self._held = packet, []
        return self._done

    def _hold(self, packet: Any) -> bool:
        """``feed`` while the first picture waits: ``packet`` held if it comes after it, else
        the held packets and it decoded; the first picture drained when ``HOLD`` packets are
        held, or when the packets ran out (``packet`` None)."""
        held = self._held
        assert held is not None
        if packet is not None and not _leads(self._first, packet):
            self._held = None
            return self._fed_all([*held, packet])
        if packet is not None:
            held.append(packet)
            if len(held) < HOLD:
                return False
        self._held = None
        try:
            frames = self._decoder.decode(None)
        except self._error:
            frames = []
        if len(frames) == 1 and not frames[0].interlaced_frame:
            self.frame, self._done = frames[0], True
            return True
        # Not one whole picture: the packets decoded as they came, by a new decoder.
        self._decoder, self._fed = new_decoder(self._source), 0
        return self._fed_all([self._first, *held, *([None] if packet is None else [])])

    def _fed_all(self, packets: list[Any]) -> bool:
        """``packets`` fed in order (the first packet is not held again); whether the first
        frame is out."""
        return any(self.feed(one) for one in packets)

    def finish(self) -> Any:
        """The first frame, draining the decoder if the packets ran out before it came out;
        None when there is none."""
        self.feed(None)
        if self._clean:
            keep_decoder("first", self._fits, self._decoder)
        return self.frame


HOLD = 16
"""Packets held, not decoded, after a first packet whose picture the decoder holds back: an
H.264 decoder holds at most 16 pictures before it lets the first out, so by then nothing
that could come before it is left unseen."""


def _leads(first: Any, later: Any) -> bool:
    """Whether ``first``, a stream's first packet, is a keyframe shown before ``later`` (a
    packet after it; None: whether it can lead at all): both with timestamps, neither to be
    discarded nor corrupt."""
    if first is None:
        return False
    if later is None:
        return bool(first.is_keyframe and first.pts is not None and not (first.is_discard or first.is_corrupt))
    return later.pts is not None and later.pts > first.pts and not (later.is_discard or later.is_corrupt)


COLOUR_FIELDS = ("color_range", "colorspace", "color_primaries", "color_trc")
KEEP_PIXELS = 640 * 360
"""The largest picture, in pixels, of a decoder that is kept for the next clip."""


def new_decoder(source: Any, fields: tuple[str, ...] = COLOUR_FIELDS) -> Any:
    """A single-threaded decoder for the codec of ``source`` (a stream's codec context) with
    its extradata and its ``fields``."""
    import av

    decoder = av.CodecContext.create(source.name, "r")
    decoder.extradata = source.extradata
    for name in fields:
        setattr(decoder, name, getattr(source, name))
    decoder.thread_count = 1
    return decoder


def kept_decoder(slot: str, fits: tuple[Any, ...]) -> Any:
    """The decoder this thread kept in ``slot`` (``keep_decoder``) if it was kept for ``fits``,
    taken out of the slot; else None."""
    kept: tuple[tuple[Any, ...], Any] | None = getattr(_local, slot, None)
    if kept is None or kept[0] != fits:
        return None
    setattr(_local, slot, None)
    return kept[1]


def keep_decoder(slot: str, fits: tuple[Any, ...], decoder: Any) -> None:
    """Keep ``decoder``, flushed, in this thread's ``slot`` for the next stream that ``fits``
    (``kept_decoder``): opening, setting up and freeing an H.264 decoder is ~0.8 of a simulator
    clip's ~12 million instructions, and a clip takes two. H.264 decoders only, and only for the
    same extradata (``fits`` starts with the codec's name and the extradata; the caller adds
    the fields it set): flushed as for a seek, one decodes the next stream as a new one does,
    for a flush forgets the pictures, references, picture order, recovery point and SEI, and
    what it keeps (the parameter sets, the reorder depth they set) is what that extradata gives
    a new decoder. The callers keep a decoder only when nothing else can have changed it: no
    error, and no reorder depth found by guessing (tests/benchmarks/ab_analysis.py checks
    orders in which kept decoders serve the next clips). Small pictures only (``KEEP_PIXELS``):
    a decoder holds a few of its pictures, and a large clip's analysis costs so much more than
    a new decoder that keeping one would save nothing worth the memory."""
    if fits[0] != "h264" or not fits[1] or decoder.width * decoder.height > KEEP_PIXELS:
        return
    decoder.flush_buffers()
    setattr(_local, slot, (fits, decoder))


def sets_in_band(packets: Iterable[Any], extradata: bytes | None) -> bool:
    """Whether an H.264 stream's ``packets`` may carry parameter sets of their own (an SPS,
    PPS or their extensions: NAL types 7, 8, 13, 15), which a flush would not forget: a
    decoder that saw one may decode the next clip of the same extradata otherwise than a new
    decoder. True unless the extradata is ``avcC`` (an MP4's) and no packet's length-prefixed
    NAL units hold one (or there is no packet). Each packet is read as a copy of its bytes,
    whose slices and indexing cost less than a memoryview's (callers pass small clips' packets,
    ``KEEP_PIXELS``)."""
    if not extradata or extradata[0] != 1 or len(extradata) < 5:
        return any(True for _ in packets)
    size = (extradata[4] & 3) + 1
    for packet in packets:
        data = bytes(packet)
        at, end = 0, len(data)
        while at + size < end:
            length = int.from_bytes(data[at:at + size], "big")
            at += size
            if data[at] & 0x1F in _PARAMETER_SETS:
                return True
            at += length
    return False


_PARAMETER_SETS = frozenset((7, 8, 13, 15))


_local = threading.local()


def jpeg_of(frame: Any) -> bytes | None:
    """``frame`` scaled to ``poster_size`` and encoded as a bit-exact JPEG."""
    from av.video.reformatter import VideoReformatter

    width, height = poster_size(frame.width, frame.height)
    reformatter: VideoReformatter | None = getattr(_local, "reformatter", None)
    if reformatter is None:
        # One per thread, kept: it keeps its scaler while the sizes stay the same. It scales
        # on this thread (threads=1): the same pixels, without waking swscale's threads.
        reformatter = _local.reformatter = VideoReformatter()
    # Positional where PyAV's order has always been this one: fewer keywords to parse.
    pixels, bicubic = _scaling()
    image = reformatter.reformat(frame, width, height, pixels, None, None, bicubic, threads=1)
    encoder = _encoder(width, height)
    try:
        image.pts, image.time_base = encoder.pictures, encoder.context.time_base
        encoder.pictures += 1
        data = b"".join(bytes(p) for p in encoder.context.encode(image))
    except BaseException:
        _local.encoder = None  # its state is unknown: the next poster gets a new one
        raise
    return data or None


@functools.cache
def _scaling() -> tuple[Any, int]:
    """The poster's pixel format and scaling, as PyAV objects made once: a reformat given them
    skips looking their names up."""
    from av.video.format import VideoFormat
    from av.video.reformatter import Interpolation

    return VideoFormat("yuvj420p"), Interpolation.BICUBIC.value


class _Encoder:
    """A thread's MJPEG encoder, kept for the next poster of the same size: opening one costs
    more than encoding a poster (~60 of ~175 us for a simulator clip). Each picture is encoded
    alone (intra only, fixed quantiser, no state carried between pictures, nothing buffered),
    so a kept encoder gives the bytes a new one gives (tests/test_poster.py); the pictures
    only need increasing timestamps."""

    def __init__(self, width: int, height: int) -> None:
        import av
        from av.codec.context import Flags

        self.size = (width, height)
        self.pictures = 0
        context = self.context = av.CodecContext.create("mjpeg", "w")
        context.width, context.height, context.pix_fmt = width, height, "yuvj420p"
        context.time_base = Fraction(1, 1)
        context.thread_count = 1
        context.options = {"flags": "+bitexact"}
        context.flags |= Flags.qscale
        context.global_quality = _QUALITY * _FF_QP2LAMBDA


def _encoder(width: int, height: int) -> _Encoder:
    """This thread's ``_Encoder`` for pictures of ``width`` x ``height`` (a new one when the
    last poster had another size)."""
    encoder: _Encoder | None = getattr(_local, "encoder", None)
    if encoder is None or encoder.size != (width, height):
        encoder = _local.encoder = _Encoder(width, height)
    return encoder


def make_poster(video: Path, out: Path) -> bool:
    """Write the first frame of ``video`` to ``out`` (JPEG, at most 320 px wide) atomically.

    Returns False, writing nothing, when the video has no decodable frame.
    """
    from batchvid.store import write_atomic  # here: an analysis worker needs none of it

    data = poster_jpeg(video)
    if data is None:
        return False
    # Not fsynced: a poster lost in a crash is made again from its video.
    write_atomic(out, data, durable=False)
    return True


def write_poster(root: Path, video: Path, data: bytes | None) -> dict[str, Any] | None:
    """Write ``data``, the poster of ``video`` (inside output directory ``root``), beside it,
    atomically and durably (the journal is about to record it); returns its
    ``{path, sha256, bytes}`` relative to ``root``, or None when there is no poster (the video
    has no decodable frame)."""
    from batchvid.store import write_atomic

    if data is None:
        return None
    out = poster_path(video.parent)
    write_atomic(out, data)
    return {
        "path": out.relative_to(root).as_posix(),
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
    }
