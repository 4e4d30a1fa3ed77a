"""batchvid.poster's kept encoder: posters made one after another, of one size or of several,
are the bytes a new encoder makes for each."""

from __future__ import annotations

import threading
from pathlib import Path

import av
import pytest

from batchvid import poster
from batchvid.poster import jpeg_of
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
