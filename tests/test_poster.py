"""batchvid.poster's kept encoder: posters made one after another, of one size or of several,
are the bytes a new encoder makes for each; and the first frame of a clip with B-frames, taken
without decoding the pictures after it, makes the poster that decoding them makes."""

from __future__ import annotations

import threading
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from batchvid import poster
from batchvid.media import analyse
from batchvid.poster import jpeg_of, poster_jpeg
from tests.test_analysis import clips, reference_poster  # noqa: F401  (the fixture)


def first_frame(video: Path) -> av.VideoFrame:
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "NONE"
        return next(iter(container.decode(stream)))


def test_a_kept_encoder_gives_a_new_encoders_bytes(clips: list[Path]) -> None:  # noqa: F811
    """Posters of clips of two sizes, each made three times in turn and twice in a row,
    equal those of a new encoder (the old way), and the encoder is kept between same-size
    posters."""
    frames = [first_frame(clip) for clip in clips]
    expected = [reference_poster(clip) for clip in clips]
    assert len({(frame.width, frame.height) for frame in frames}) >= 2
    for _ in range(3):
        for frame, wanted in zip(frames, expected, strict=True):
            assert jpeg_of(frame) == wanted
            kept = poster._local.encoder
            assert jpeg_of(frame) == wanted
            assert poster._local.encoder is kept and kept.pictures >= 2


def test_a_failed_encode_drops_the_kept_encoder(
    clips: list[Path], monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    """An encoder whose encode raised is not used again: the next poster gets a new one,
    with the right bytes."""
    frame = first_frame(clips[0])
    jpeg_of(frame)
    broken = poster._local.encoder

    class Failing:
        time_base = broken.context.time_base

        def encode(self, image: object) -> list[object]:
            raise av.FFmpegError(22, "invalid")

    monkeypatch.setattr(broken, "context", Failing())
    with pytest.raises(av.FFmpegError):
        jpeg_of(frame)
    assert getattr(poster._local, "encoder", None) is None
    assert jpeg_of(frame) == reference_poster(clips[0])


def test_each_thread_has_its_own_encoder(clips: list[Path]) -> None:  # noqa: F811
    """Posters made on two threads at once get their bytes right, each from its own
    encoder."""
    frames = [first_frame(clip) for clip in clips]
    expected = [reference_poster(clip) for clip in clips]
    got: dict[str, list[bytes | None]] = {}

    def make(name: str) -> None:
        got[name] = [jpeg_of(frame) for frame in frames * 5]

    threads = [threading.Thread(target=make, args=(name,)) for name in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert got["a"] == got["b"] == expected * 5


def bframe_clip(path: Path, params: str, frames: int = 30, width: int = 96, height: int = 64) -> Path:
    """An H.264 clip of a moving gradient, x264 given ``params`` (its B-frames)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=16)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.thread_count = 1
        stream.options = {"preset": "veryfast", "x264-params": params}
        rows, columns = np.mgrid[0:height, 0:width]
        for index in range(frames):
            picture = np.stack([(columns * 3 + index * 7) % 256, (rows * 2 + index * 5) % 256,
                                ((columns + rows) // 2 + index * 11) % 256], -1).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, 16)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def from_leading_keyframe(source: Path, path: Path) -> Path:
    """``source``'s packets from its first keyframe but one whose next packet is shown before it
    (a picture of an open GOP that leads its keyframe)."""
    with av.open(str(source)) as inp:
        template = inp.streams.video[0]
        packets = [packet for packet in inp.demux(template) if packet.dts is not None]
        start = next(i for i in range(1, len(packets) - 1)
                     if packets[i].is_keyframe and packets[i + 1].pts < packets[i].pts)
        with av.open(str(path), "w") as out:
            stream = out.add_stream_from_template(template)
            for packet in packets[start:]:
                packet.stream = stream
                out.mux(packet)
    return path


def count_decoded_packets(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the packets with data that each new poster decoder decodes (one entry each)."""
    counts: list[int] = []
    new_decoder = poster.new_decoder

    class Counting:
        def __init__(self, decoder: Any) -> None:
            self.decoder, self.at = decoder, len(counts)
            counts.append(0)

        def decode(self, packet: Any) -> Any:
            counts[self.at] += packet is not None
            return self.decoder.decode(packet)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.decoder, name)

    monkeypatch.setattr(poster, "new_decoder", lambda *args: Counting(new_decoder(*args)))
    monkeypatch.setattr(poster, "kept_decoder", lambda *args: None)
    return counts


def test_a_bframe_clips_first_frame_is_taken_from_its_first_packet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A clip whose decoder holds its first picture back (B-frames, reorder depths 1 to 16)
    gets its poster from the first packet alone (the analysis's own decoder is counted too:
    the poster's is the first made), byte for byte the poster that decoding in order gives."""
    counts = count_decoded_packets(monkeypatch)
    for params in ("bframes=1", "bframes=3:b-pyramid=normal", "bframes=16:b-adapt=0:b-pyramid=strict"):
        clip = bframe_clip(tmp_path / f"{params.replace(':', '-')}.mp4", params)
        counts.clear()
        analysis = analyse(clip)
        assert analysis.poster is not None and analysis.poster == poster_jpeg(clip), params
        assert counts[0] == 1, params


def test_the_first_frame_is_out_once_hold_packets_are_held(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A B-frame clip's first frame is out (``feed`` says done, later packets not needed) at the
    ``HOLD``-th packet after its first, not only when its packets run out: a long clip's
    packets are not all held. Its poster is the one decoding in order gives."""
    monkeypatch.setattr(poster, "kept_decoder", lambda *args: None)
    clip = bframe_clip(tmp_path / "long.mp4", "bframes=3", frames=60)
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        first = poster.FirstFrame(stream)
        done = [first.feed(packet) for packet in container.demux(stream) if packet.size]
    assert len(done) == 60 and done.index(True) == poster.HOLD
    assert jpeg_of(first.finish()) == poster_jpeg(clip)


@pytest.mark.parametrize("frames", [1, 2, 3])
def test_a_bframe_clip_of_few_frames_gets_its_first_frame(tmp_path: Path, frames: int) -> None:
    """A clip with B-frames that ends before the decoder would let its first picture out
    gets the poster that decoding in order gives."""
    clip = bframe_clip(tmp_path / "short.mp4", "bframes=3", frames=frames)
    assert analyse(clip).poster == poster_jpeg(clip) is not None


def test_a_picture_that_may_come_first_is_decoded_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A clip that starts at an open GOP's keyframe, whose next pictures are shown before it,
    and an interlaced (MBAFF) clip have their packets decoded in order up to the first
    frame, to the poster that decoding in order gives."""
    counts = count_decoded_packets(monkeypatch)
    gop = bframe_clip(tmp_path / "open-gop.mp4", "bframes=3:keyint=12:open-gop=1", frames=40)
    leading = from_leading_keyframe(gop, tmp_path / "leading.mp4")
    with av.open(str(leading)) as container:
        packets = [(p.pts, p.is_keyframe) for p in container.demux(container.streams.video[0]) if p.size]
    assert packets[0][1] and packets[1][0] < packets[0][0]  # the second is shown first
    interlaced = bframe_clip(tmp_path / "mbaff.mp4", "bframes=3:interlaced=1:tff=1")
    for clip in (leading, interlaced):
        counts.clear()
        analysis = analyse(clip)
        assert analysis.poster is not None and analysis.poster == poster_jpeg(clip), clip.name
        assert max(counts) > 1, clip.name  # not the first packet alone
