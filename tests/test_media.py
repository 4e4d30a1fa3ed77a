"""batchvid.media.probe: what it reports for a video, and how it fails on a bad file."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from batchvid.errors import BatchvidError
from batchvid.media import MediaError, MediaInfo, probe
from batchvid.simulator.video import VideoSpec, render_video


@pytest.fixture(scope="module")
def video_bytes() -> bytes:
    return render_video(VideoSpec(64, 48, 30, 1.0, True, 3))


@pytest.fixture
def video(tmp_path: Path, video_bytes: bytes) -> Path:
    path = tmp_path / "video.mp4"
    path.write_bytes(video_bytes)
    return path


def test_probe_reports_codec_size_fps_and_audio(video: Path) -> None:
    """A 64x48 30 fps H.264 video with AAC is described exactly."""
    info = replace(probe(video), quality=None)
    assert info == MediaInfo(
        codec="h264",
        width=64,
        height=48,
        fps=30.0,
        frame_count=30,
        duration=pytest.approx(1.0, abs=0.05),  # type: ignore[arg-type]
        has_audio=True,
        audio_codec="aac",
    )


def test_probe_reports_no_audio(tmp_path: Path) -> None:
    """A video without an audio track has ``has_audio`` false and no audio codec."""
    path = tmp_path / "silent.mp4"
    path.write_bytes(render_video(VideoSpec(32, 32, 60, 0.5, False, 0)))
    info = probe(path)
    assert (info.has_audio, info.audio_codec, info.fps) == (False, None, 60.0)


def test_to_dict_is_sorted_and_rounded(video: Path) -> None:
    """``to_dict`` gives sorted keys and floats rounded to 3 decimals."""
    data = probe(video).to_dict()
    assert list(data) == sorted(data)
    assert data["fps"] == 30.0
    assert data["duration"] == round(data["duration"], 3)


def test_probe_records_quality_signals(video: Path) -> None:
    """probe measures the quality signals, and to_dict records them under ``quality``."""
    info = probe(video)
    assert info.quality is not None and info.quality.frames_decoded == 30
    assert info.to_dict()["quality"] == info.quality.to_dict()


def test_truncated_file_raises_media_error(tmp_path: Path, video_bytes: bytes) -> None:
    """Half a file does not probe: MediaError, a BatchvidError, naming the file."""
    path = tmp_path / "half.mp4"
    path.write_bytes(video_bytes[: len(video_bytes) // 2])
    with pytest.raises(MediaError, match="half.mp4"):
        probe(path)
    assert issubclass(MediaError, BatchvidError)


def test_garbage_file_raises_media_error(tmp_path: Path) -> None:
    """Bytes that are no media at all raise MediaError."""
    path = tmp_path / "garbage.mp4"
    path.write_bytes(b"not a video" * 100)
    with pytest.raises(MediaError, match="not a readable video"):
        probe(path)


def test_missing_file_raises_media_error(tmp_path: Path) -> None:
    """A path that does not exist raises MediaError, not an OSError."""
    with pytest.raises(MediaError, match="no such file"):
        probe(tmp_path / "absent.mp4")


def test_a_file_cut_anywhere_analyses_or_raises_media_error(tmp_path: Path, video_bytes: bytes) -> None:
    """A video cut at any point, its moov first or last (cut inside a stream's sample
    description, the stream names no codec PyAV has), is analysed and probed or raises
    MediaError naming the file: never another error, which would end the run."""
    import av

    from batchvid.media import analyse

    source = tmp_path / "source.mp4"
    source.write_bytes(video_bytes)
    faststart = tmp_path / "faststart.mp4"
    with av.open(str(source)) as original, av.open(str(faststart), "w", format="mp4",
                                                   options={"movflags": "faststart"}) as out:
        streams = {s.index: out.add_stream_from_template(s) for s in original.streams}
        for packet in original.demux():
            if packet.dts is not None:
                packet.stream = streams[packet.stream.index]
                out.mux(packet)
    clip = tmp_path / "cut.mp4"
    for data in (video_bytes, faststart.read_bytes()):
        for cut in range(0, len(data), 29):
            clip.write_bytes(data[:cut])
            for call in (analyse, probe):
                try:
                    call(clip)
                except MediaError as exc:
                    assert "cut.mp4" in str(exc)
