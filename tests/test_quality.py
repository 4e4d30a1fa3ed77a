"""batchvid.quality: signals of black, frozen and moving clips, sampling bounds, qc thresholds."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from batchvid import quality
from batchvid.media import probe
from batchvid.quality import MAX_SAMPLES, Quality, check_quality, signals


def make_clip(path: Path, kind: str, *, frames: int = 60, gop: int | None = None,
              width: int = 96, height: int = 64, preset: str = "ultrafast") -> Path:
    """An H.264 clip made with PyAV: ``black``, ``frozen`` (one still picture) or ``moving``
    (a white bar crossing a grey picture)."""
    rng = np.random.default_rng(1)
    still = rng.integers(40, 220, (height, width, 3), dtype=np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.thread_count = 1
        stream.options = {"preset": preset, "crf": "23", **({"g": str(gop)} if gop else {})}
        for index in range(frames):
            if kind == "black":
                picture = np.zeros((height, width, 3), np.uint8)
            elif kind == "frozen":
                picture = still
            else:
                picture = np.full((height, width, 3), 90, np.uint8)
                x = (index * 7) % width
                picture[:, x : x + 12] = 255
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, 30)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def measured(path: Path) -> Quality:
    info = probe(path)
    assert info.quality is not None
    return info.quality


def test_black_clip_is_black(tmp_path: Path) -> None:
    """An all-black clip has black_fraction >= 0.9 and a luma mean near 0."""
    q = measured(make_clip(tmp_path / "black.mp4", "black"))
    assert q.black_fraction >= 0.9
    assert q.luma_mean < 0.02


def test_frozen_clip_is_frozen(tmp_path: Path) -> None:
    """A clip of one still picture has frozen_fraction >= 0.9, is not black, barely moves."""
    q = measured(make_clip(tmp_path / "frozen.mp4", "frozen"))
    assert q.frozen_fraction >= 0.9
    assert q.black_fraction == 0.0
    assert q.motion < quality.FROZEN_DIFF


def test_moving_clip_moves(tmp_path: Path) -> None:
    """A clip with a moving bar has motion > 0 and is neither black nor frozen."""
    q = measured(make_clip(tmp_path / "moving.mp4", "moving"))
    assert q.motion > 0.01
    assert q.black_fraction == 0.0
    assert q.frozen_fraction == 0.0


def test_sample_count_is_bounded(tmp_path: Path) -> None:
    """A clip of 300 frames is judged on at most MAX_SAMPLES frames; every frame is counted."""
    q = measured(make_clip(tmp_path / "long.mp4", "moving", frames=300))
    assert q.samples == MAX_SAMPLES
    assert q.frames_decoded == 300


def test_clip_with_many_keyframes_samples_keyframes(tmp_path: Path) -> None:
    """With a keyframe every 5 frames, the keyframes are the samples and still show motion."""
    q = measured(make_clip(tmp_path / "gop.mp4", "moving", frames=60, gop=5))
    assert q.samples == 12
    assert q.motion > 0.01 and q.frozen_fraction == 0.0


def test_clip_with_b_frames_is_sampled_by_time(tmp_path: Path) -> None:
    """With B-frames left undecoded, a one-GOP clip still gets 32 samples spread over it, and a
    still picture still reads as frozen."""
    path = make_clip(tmp_path / "b.mp4", "frozen", frames=300, preset="veryfast")
    with av.open(str(path)) as container:
        assert container.streams.video[0].codec_context.has_b_frames
    q = measured(path)
    assert q.samples == MAX_SAMPLES and q.frames_decoded == 300
    assert q.frozen_fraction >= 0.9


def test_frames_decoded_matches_container_count(tmp_path: Path) -> None:
    """For a whole clip, frames_decoded equals the container's frame_count."""
    info = probe(make_clip(tmp_path / "whole.mp4", "moving", frames=45))
    assert info.quality is not None
    assert info.quality.frames_decoded == info.frame_count == 45


def test_probe_without_quality_skips_signals(tmp_path: Path) -> None:
    """probe(quality=False) leaves quality out, and to_dict shows it as null."""
    info = probe(make_clip(tmp_path / "clip.mp4", "moving", frames=10), quality=False)
    assert info.quality is None and info.to_dict()["quality"] is None


def test_signals_of_no_samples_are_zero() -> None:
    """Without samples the signals are zero, not a division error."""
    assert signals([], 7) == Quality(0.0, 0.0, 0.0, 0.0, 7, 0)


def test_to_dict_is_sorted_and_rounded() -> None:
    """Quality.to_dict has sorted keys and floats rounded to 4 decimals."""
    data = Quality(0.123456, 0.5, 0.25, 0.333333, 10, 8).to_dict()
    assert list(data) == sorted(data)
    assert data["motion"] == 0.1235 and data["luma_mean"] == 0.3333


GOOD = {"motion": 0.05, "black_fraction": 0.0, "frozen_fraction": 0.0}


@pytest.mark.parametrize(
    ("signal", "value", "threshold", "words"),
    [
        ("black_fraction", 0.97, {"max_black_fraction": 0.5}, "97% of sampled frames are black"),
        ("frozen_fraction", 1.0, {"max_frozen_fraction": 0.8}, "100% of sampled frames repeat"),
        ("motion", 0.001, {"min_motion": 0.01}, "motion is 0.001 (qc.min_motion is 0.01)"),
    ],
)
def test_check_quality_names_the_broken_threshold(
    signal: str, value: float, threshold: dict[str, float], words: str
) -> None:
    """A signal past its qc threshold gives a message naming the signal and the threshold."""
    message = check_quality(dict(GOOD, **{signal: value}), threshold)
    assert message is not None and words in message
    assert f"qc.{next(iter(threshold))}" in message


def test_check_quality_passes_within_thresholds() -> None:
    """Signals within every threshold pass (None), and so does a clip without thresholds."""
    thresholds = {"max_black_fraction": 0.5, "max_frozen_fraction": 0.5, "min_motion": 0.01}
    assert check_quality(GOOD, thresholds) is None
    assert check_quality(dict(GOOD, black_fraction=1.0), {}) is None


def test_check_quality_reports_every_broken_threshold() -> None:
    """A black, frozen clip breaks all three thresholds and the message lists all three."""
    bad = {"motion": 0.0, "black_fraction": 1.0, "frozen_fraction": 1.0}
    thresholds = {"max_black_fraction": 0.5, "max_frozen_fraction": 0.5, "min_motion": 0.01}
    message = check_quality(bad, thresholds)
    assert message is not None and message.count(";") == 2


def test_check_quality_passes_a_clip_without_signals() -> None:
    """A video that did not decode has no signals; the qc check leaves it to --strict-media."""
    assert check_quality(None, {"min_motion": 0.5}) is None


def test_measured_black_and_frozen_clips_fail_qc(tmp_path: Path) -> None:
    """Signals measured on real clips, as recorded (to_dict), trip the matching thresholds."""
    thresholds = {"max_black_fraction": 0.5, "max_frozen_fraction": 0.5}
    black = measured(make_clip(tmp_path / "b.mp4", "black")).to_dict()
    moving = measured(make_clip(tmp_path / "m.mp4", "moving")).to_dict()
    assert check_quality(black, thresholds) is not None
    assert check_quality(moving, thresholds) is None


def test_manifest_accepts_qc_and_license(tmp_path: Path) -> None:
    """A manifest may set qc thresholds and a license; a threshold out of 0-1 is refused."""
    from batchvid.errors import ManifestErrors
    from batchvid.manifest import load_manifest

    text = ("version: 1\nlicense: cc-by-4.0\nqc:\n  max_black_fraction: 0.5\n"
            "  min_motion: 0.01\n  max_frozen_fraction: 0.8\njobs:\n  - id: cat\n    prompt: a cat\n")
    (tmp_path / "ok.yaml").write_text(text)
    assert len(load_manifest(tmp_path / "ok.yaml").jobs) == 1
    (tmp_path / "bad.yaml").write_text(text.replace("0.5", "5"))
    with pytest.raises(ManifestErrors, match=r"bad.yaml:4:\d+: \$.qc.max_black_fraction"):
        load_manifest(tmp_path / "bad.yaml")


def test_signals_of_samples_at_once_equal_sample_by_sample() -> None:
    """signals() on samples of one size equals, to the last bit, the float32 arithmetic done
    sample by sample (the mean of each, the mean absolute difference of each pair)."""
    rng = np.random.default_rng(7)
    samples = [rng.integers(0, 256, (36, 64), dtype=np.uint8) for _ in range(32)]
    scaled = [np.asarray(s, dtype=np.float32) / 255.0 for s in samples]
    means = [float(s.mean()) for s in scaled]
    diffs = [float(np.abs(a - b).mean()) for a, b in zip(scaled, scaled[1:], strict=False)]
    quality = signals(samples, 40)
    assert quality.luma_mean == sum(means) / len(means)
    assert quality.motion == sum(diffs) / len(diffs)
    assert quality.black_fraction == sum(m < 0.06 for m in means) / len(means)
    assert quality.samples == 32 and quality.frames_decoded == 40



def test_samples_of_two_sizes_are_refused_as_before() -> None:
    """Frames of one size become one array equal to the frames shrunk one by one; frames of
    two sizes (a stream that changes size) get numpy's error for arrays of two shapes, as
    when each sample was its own array."""
    shrink = quality._Shrinker()
    rng = np.random.default_rng(3)
    frames = []
    for width, height in ((160, 90), (160, 90), (96, 64)):
        picture = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        frames.append(av.VideoFrame.from_ndarray(picture, format="rgb24"))
    one_size = shrink.stack(frames[:2])
    alone = [shrink.stack([frame])[0] for frame in frames[:2]]
    assert one_size.shape == (2, 36, 64) and all((one_size[i] == alone[i]).all() for i in (0, 1))
    assert signals(one_size, 2) == signals(alone, 2)
    with pytest.raises(ValueError) as expected:
        np.stack([alone[0], shrink.stack(frames[2:])[0]])
    with pytest.raises(ValueError) as got:
        signals(shrink.stack(frames), 3)
    assert str(got.value) == str(expected.value)
