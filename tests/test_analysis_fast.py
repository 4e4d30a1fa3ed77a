"""The analysis's shortcuts give what the long way gives: the scan's kept packets against a
second read of the clip, MP4's format named against FFmpeg's guess, and an H.264 clip opened
without FFmpeg's stream probing against a probed one."""

from __future__ import annotations

import dataclasses
import logging
import subprocess
import sys
import threading
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from batchvid import media, media_pool, media_worker, poster, quality
from batchvid.media import analyse, probe
from batchvid.simulator.video import VideoSpec, render_video
from tests.test_analysis import clips  # noqa: F401  (the fixture)
from tests.test_quality import make_clip


def count_kept_decodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the sequential decodes made from kept packets (one entry each)."""
    calls: list[int] = []
    decoded = quality._decoded

    def counting(codec: Any, packets: list[Any]) -> Any:
        calls.append(len(packets))
        return decoded(codec, packets)

    monkeypatch.setattr(quality, "_decoded", counting)
    return calls


def test_kept_packets_give_what_a_second_read_gives(
    clips: list[Path], monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    """Signals and posters from the packets the scan kept equal those from reading the clip
    again (seek to the start, demux again), on every clip; and the kept ones were used."""
    calls = count_kept_decodes(monkeypatch)
    kept = [analyse(clip) for clip in clips]
    used = len(calls)
    monkeypatch.setattr(quality, "KEEP_BYTES", -1)
    again = [analyse(clip) for clip in clips]
    assert len(calls) == used
    assert used == len(clips) - 1  # the clip with a keyframe every 5 frames seeks to them
    for clip, one, other in zip(clips, kept, again, strict=True):
        assert one == other, clip.name


def test_a_clip_over_the_keep_limit_is_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A clip whose packets exceed KEEP_BYTES is decoded from a second read, to the same
    signals."""
    clip = make_clip(tmp_path / "clip.mp4", "moving", frames=90, preset="veryfast")
    calls = count_kept_decodes(monkeypatch)
    expected = probe(clip)
    assert len(calls) == 1
    monkeypatch.setattr(quality, "KEEP_BYTES", 1000)
    assert probe(clip) == expected
    assert len(calls) == 1


def test_other_containers_are_read_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Matroska clip (its demuxer may make timestamps up as it reads) is not decoded from
    kept packets."""
    clip = make_clip(tmp_path / "clip.mkv", "moving", frames=45)
    calls = count_kept_decodes(monkeypatch)
    info = probe(clip)
    assert calls == [] and info.quality is not None and info.quality.samples == 32


def test_mp4_named_gives_what_ffmpeg_guesses(
    clips: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    """Opening an MP4 file as MP4 without FFmpeg's guess gives the same analysis, and the
    same error for a file that only starts like one."""
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(clips[0].read_bytes()[:200])
    assert media._format_of(clips[0]) == "mp4" and media._format_of(broken) == "mp4"
    named = [analyse(clip) for clip in clips]
    with pytest.raises(media.MediaError) as named_error:
        analyse(broken)
    monkeypatch.setattr(media, "_format_of", lambda path: None)
    assert [analyse(clip) for clip in clips] == named
    with pytest.raises(media.MediaError) as guessed_error:
        analyse(broken)
    assert str(named_error.value) == str(guessed_error.value)


def unprobed_clips(root: Path) -> list[Path]:
    """H.264 MP4 clips of many shapes: simulator clips (with audio, frozen, black, other sizes
    and rates), B-frames (x264's veryfast and medium), a keyframe every 5 frames, an odd size,
    one frame, a long GOP at 8 fps as generated clips have, one moov-first clip, two frames
    whose SPS states a reorder depth, and one in full range."""
    paths = []
    specs = [VideoSpec(160, 90, 30, 1.0, False, 1), VideoSpec(160, 90, 16, 1.0, True, 2, look="frozen"),
             VideoSpec(64, 48, 8, 2.0, False, 5, look="black"), VideoSpec(320, 180, 25, 0.5, True, 7, 1)]
    for index, spec in enumerate(specs):
        path = root / f"sim{index}.mp4"
        path.write_bytes(render_video(spec))
        paths.append(path)
    paths.append(make_clip(root / "bframes.mp4", "moving", frames=50, preset="veryfast"))
    paths.append(make_clip(root / "medium.mp4", "moving", frames=49, width=160, height=96, preset="medium"))
    paths.append(make_clip(root / "keyframes.mp4", "moving", frames=40, gop=5, preset="medium"))
    paths.append(make_clip(root / "odd.mp4", "moving", frames=20, width=98, height=58))
    paths.append(make_clip(root / "one.mp4", "frozen", frames=1))
    # B-frames on, too few frames for one: the SPS states a reorder depth, the timestamps none.
    paths.append(make_clip(root / "two.mp4", "moving", frames=2, preset="medium"))
    paths.append(full_range_clip(root / "full.mp4"))
    return paths


def full_range_clip(path: Path) -> Path:
    """An H.264 MP4 clip in full range (yuvj420p), which only its SPS says (no ``colr`` box)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=16)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuvj420p"
        stream.options = {"preset": "veryfast"}
        for index in range(16):
            picture = np.full((64, 96, 3), 12 * index, np.uint8)
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24").reformat(format="yuvj420p")
            frame.pts, frame.time_base = index, Fraction(1, 16)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def record_opens(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Records whether each clip ``media._opened`` opens is opened probed (one entry each)."""
    opens: list[bool] = []
    opened = media._opened

    def recording(path: Any, *, probed: bool = True) -> Any:
        opens.append(probed)
        return opened(path, probed=probed)

    monkeypatch.setattr(media, "_opened", recording)
    return opens


def test_h264_mp4_clips_are_analysed_unprobed_to_the_probed_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An H.264 MP4 clip is analysed without FFmpeg's stream probing (the stream's pixel format
    stays unknown: no decoder ran), opened once, to the same facts, signals and poster as with
    probing, in an order where each clip's kept decoders serve the next and in one where none
    do."""
    opens = record_opens(monkeypatch)
    shapes = unprobed_clips(tmp_path)
    unset = {}
    for clip in shapes:
        with media._opened(clip, probed=False) as (_, video, _):
            assert video.codec_context.format is None, clip.name
            fields = (video.codec_context.has_b_frames, video.codec_context.color_range)
        with media._opened(clip) as (_, video, _):
            assert video.codec_context.format is not None, clip.name
            unset[clip.name] = fields != (video.codec_context.has_b_frames, video.codec_context.color_range)
    # Facts a probing decoder sets that stay unset unprobed (which the analysis's decoders
    # then learn from the bitstream): the reorder depth, the colour range.
    assert unset["two.mp4"] and unset["full.mp4"]
    unprobed = [media._analyse(clip, probed=False) for clip in shapes]
    forget_kept_decoders()
    probed = [media._analyse(clip, probed=True) for clip in shapes]
    for clip, one, other in zip(shapes, unprobed, probed, strict=True):
        assert one is not None and one == other, clip.name
        forget_kept_decoders()
        opens.clear()
        assert analyse(clip) == other, clip.name
        assert opens == [False], clip.name  # once, unprobed: not analysed again with probing


def test_other_codecs_and_containers_are_analysed_probed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An MPEG-4 part 2 clip (whose size only its decoder gives) is not analysed unprobed, and a
    Matroska one is opened probed: both get what probing gives."""
    opens = record_opens(monkeypatch)
    mpeg4 = tmp_path / "mpeg4.mp4"
    with av.open(str(mpeg4), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        for index in range(10):
            frame = av.VideoFrame.from_ndarray(np.full((64, 96, 3), 20 * index, np.uint8), format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, 25)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    assert media._analyse(mpeg4, probed=False) is None
    opens.clear()
    assert analyse(mpeg4) == media._analyse(mpeg4, probed=True)
    assert opens == [False, True, True]  # analyse's two opens, then the probed one compared
    assert analyse(mpeg4).info.width == 96
    mkv = make_clip(tmp_path / "clip.mkv", "moving", frames=20)
    with media._opened(mkv, probed=False) as (_, video, _):
        assert video.codec_context.format is not None
    assert analyse(mkv) == media._analyse(mkv, probed=True)


def test_a_clip_whose_container_states_another_size_is_analysed_probed(tmp_path: Path) -> None:
    """A clip whose sample description gives another height than its frames have is analysed
    with probing (the first frame's size is checked), to probing's facts."""
    clip = make_clip(tmp_path / "clip.mp4", "moving", frames=20)
    data = bytearray(clip.read_bytes())
    entry = data.index(b"avc1", data.index(b"stsd"))  # its width at +28, its height at +30
    assert int.from_bytes(data[entry + 30 : entry + 32], "big") == 64
    data[entry + 30 : entry + 32] = (56).to_bytes(2, "big")
    clip.write_bytes(bytes(data))
    assert media._analyse(clip, probed=False) is None
    assert analyse(clip) == media._analyse(clip, probed=True)


def test_an_application_that_logs_ffmpeg_gets_its_clips_probed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Where the application turned PyAV's logging of FFmpeg on, an H.264 MP4 clip is opened
    probed, so FFmpeg logs nothing about its codec whitelist, and analysed to probing's result."""
    clip = make_clip(tmp_path / "clip.mp4", "moving", frames=20)
    av.logging.set_level(av.logging.WARNING)
    try:
        with caplog.at_level(logging.WARNING, logger="libav"):
            with media._opened(clip, probed=False) as (_, video, _):
                assert video.codec_context.format is not None  # probed
            analysis = analyse(clip)
    finally:
        av.logging.set_level(None)
    assert not [record for record in caplog.records if "whitelist" in record.getMessage()]
    assert analysis == media._analyse(clip, probed=True)


def outcome(call: Any, clip: Path) -> Any:
    """``call(clip)``, or the message of the MediaError it raised."""
    try:
        return call(clip)
    except media.MediaError as exc:
        return str(exc)


def vp9_webm(path: Path) -> Path:
    """A VP9 clip in WebM: neither MP4 nor H.264."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libvpx-vp9", rate=25)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        stream.options = {"deadline": "realtime", "cpu-used": "8"}
        for index in range(10):
            frame = av.VideoFrame.from_ndarray(np.full((64, 96, 3), 20 * index, np.uint8), format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, 25)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def test_a_clip_that_cannot_skip_probing_is_opened_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A clip that is not MP4 (WebM with VP9, Matroska with H.264) is opened once, probed, to
    the probed analysis; a file that does not open as a video is tried once, to the probed
    error; an H.264 MP4 clip is opened once, unprobed."""
    webm, mkv = vp9_webm(tmp_path / "clip.webm"), make_clip(tmp_path / "clip.mkv", "moving", frames=20)
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"not a video at all " * 64)
    mp4 = make_clip(tmp_path / "clip.mp4", "moving", frames=20)
    expected = {clip: outcome(lambda path: media._analyse(path, probed=True), clip) for clip in (webm, mkv, garbage)}
    assert isinstance(expected[webm], media.Analysis) and expected[webm].info.codec == "vp9"
    assert isinstance(expected[garbage], str)
    expected[mp4] = media._analyse(mp4, probed=True)
    opens: list[str] = []
    av_open = av.open

    def counting(file: Any, *args: Any, **kwargs: Any) -> Any:
        opens.append(file)
        return av_open(file, *args, **kwargs)

    monkeypatch.setattr(av, "open", counting)
    for clip in (webm, mkv, garbage, mp4):
        opens.clear()
        assert outcome(analyse, clip) == expected[clip], clip.name
        assert opens == [str(clip)], clip.name


def test_a_clip_cut_short_gets_probings_result(tmp_path: Path) -> None:
    """A moov-first clip cut at several points in its frames gives the analysis, or the error,
    that a probed analysis gives."""
    whole = tmp_path / "whole.mp4"
    with av.open(str(whole), "w", options={"movflags": "+faststart"}) as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        stream.options = {"preset": "veryfast"}
        for index in range(40):
            frame = av.VideoFrame.from_ndarray(np.full((64, 96, 3), 6 * index, np.uint8), format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, 30)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    data = whole.read_bytes()
    mdat = data.index(b"mdat")
    for cut in (mdat + 8, mdat + 40, (mdat + len(data)) // 2, len(data) - 10):
        clip = tmp_path / f"cut{cut}.mp4"
        clip.write_bytes(data[:cut])
        assert outcome(analyse, clip) == outcome(lambda path: media._analyse(path, probed=True), clip), cut


def test_format_of_other_files_is_left_to_ffmpeg(tmp_path: Path) -> None:
    """A Matroska file, a short file and a missing one get no format named."""
    assert media._format_of(make_clip(tmp_path / "clip.mkv", "moving", frames=5)) is None
    (tmp_path / "short").write_bytes(b"\0\0")
    assert media._format_of(tmp_path / "short") is None
    assert media._format_of(tmp_path / "missing.mp4") is None


def test_packed_analysis_reads_back_equal(clips: list[Path]) -> None:  # noqa: F811
    """A worker's plain-value form of an analysis reads back to an equal one, for analyses
    with signals and a poster and for one with neither."""
    for clip in clips[:3]:
        result = analyse(clip)
        assert media_pool._unpacked(media_worker._packed(result)) == result
    bare = media.Analysis(dataclasses.replace(analyse(clips[0]).info, quality=None), None)
    assert media_pool._unpacked(media_worker._packed(bare)) == bare


@pytest.mark.anyio
async def test_workers_use_this_batchvid_not_the_working_directorys(
    clips: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    """A worker started from a directory holding another ``batchvid`` package imports this
    process's, as a run from inside another checkout needs."""
    (tmp_path / "batchvid").mkdir()
    (tmp_path / "batchvid" / "__init__.py").write_text("raise ImportError('the wrong batchvid')\n")
    monkeypatch.chdir(tmp_path)
    pool = media.AnalysisPool(workers=1, after=0)
    try:
        assert await pool.analyse(clips[0]) == analyse(clips[0])
        assert len(pool._idle) == 1 and not pool._broken
    finally:
        pool.close()


def test_a_worker_loads_no_event_loop_and_no_output_writing() -> None:
    """An analysis worker's imports (its module, PyAV, numpy) leave out anyio, asyncio and
    batchvid's journal and file writing, which only the run's process needs: a worker starts
    in less CPU time."""
    script = (
        "import sys\n"
        "from batchvid.media_worker import serve\n"
        "import av.video.reformatter, numpy\n"
        "print(' '.join(sorted(sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-P", "-c", script], env=media_pool.worker_env(),
                          capture_output=True, text=True, check=True)
    loaded = set(done.stdout.split())
    assert {"batchvid.media", "batchvid.poster", "batchvid.quality", "av", "numpy"} <= loaded
    assert not loaded & {"anyio", "asyncio", "batchvid.store", "batchvid.journal", "json"}


@pytest.mark.parametrize("first", ["batchvid.media", "batchvid.media_pool", "batchvid.media_worker"])
def test_media_and_its_pool_import_in_either_order(first: str) -> None:
    """``batchvid.media`` and ``batchvid.media_pool`` import each other as they end: whichever
    is imported first in a new interpreter, both give the pool's entry points, the same
    objects, without PyAV or numpy loaded."""
    script = (
        f"import sys, {first}\n"
        "from batchvid import media, media_pool\n"
        "names = ['AnalysisPool', 'analyse_off_loop', 'start_pool', 'shutdown_pool']\n"
        "assert all(getattr(media, n) is getattr(media_pool, n) for n in names)\n"
        "assert media_pool.media is media and media.analyse is not None\n"
        "print(' '.join(sorted(sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-P", "-c", script], env=media_pool.worker_env(),
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert not set(done.stdout.split()) & {"av", "numpy"}


def forget_kept_decoders() -> None:
    poster._local.first = poster._local.sampler = None


def one_parameter_set(root: Path) -> list[Path]:
    """Simulator clips of one size, rate and look (so one set of parameter sets) but other
    colours, patterns and lengths, and one of them cut short and one damaged."""
    paths = []
    for index, (seconds, colour, pattern) in enumerate(
        ((1.0, 3, 0), (0.5, 5, 1), (2.0, 1, 0), (1.0, 7, 1))
    ):
        path = root / f"same-{index}.mp4"
        path.write_bytes(render_video(VideoSpec(160, 90, 16, seconds, False, colour, pattern)))
        paths.append(path)
    data = paths[0].read_bytes()
    cut = root / "cut.mp4"
    cut.write_bytes(data[: len(data) - 200])
    damaged = root / "damaged.mp4"
    middle = len(data) // 2
    damaged.write_bytes(data[:middle] + bytes(range(7, 255, 3)) + data[middle + 83 :])
    paths[2:2] = [cut, damaged]
    return paths


def analysed(path: Path) -> object:
    try:
        return analyse(path)
    except media.MediaError as exc:
        return str(exc)


def test_kept_decoders_give_what_new_ones_give(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Clips of one set of parameter sets analysed in turn, so that the decoders kept from one
    (poster's and samples') serve the next, give what each gives with new decoders, a clip cut
    short among them; and the kept decoders did serve them."""
    paths = one_parameter_set(tmp_path)
    wanted = []
    for path in paths:
        forget_kept_decoders()
        wanted.append(analysed(path))
    assert isinstance(wanted[2], str) and isinstance(wanted[3], str)  # they do not analyse
    made: list[tuple[Any, ...]] = []
    new_decoder = poster.new_decoder
    monkeypatch.setattr(poster, "new_decoder", lambda *args: made.append(args) or new_decoder(*args))
    forget_kept_decoders()
    for path, expected in zip(paths * 3, wanted * 3, strict=True):
        assert analysed(path) == expected, path.name
    # The first clip's two, then for each damaged clip two for its probed analysis (the
    # unprobed one took the kept ones, and its error dropped them) and two after it (that
    # error dropped those too): kept for all the others.
    assert len(made) == 2 * (1 + 2 * 3)
    assert poster._local.first is not None and poster._local.sampler is not None


def test_a_kept_decoder_serves_only_its_parameter_sets(tmp_path: Path) -> None:
    """Clips of two sizes in turn each give what they give with new decoders: a decoder kept
    from one size does not decode the other."""
    paths = []
    for width, height in ((160, 90), (96, 64), (160, 90), (96, 64)):
        path = tmp_path / f"clip-{len(paths)}.mp4"
        path.write_bytes(render_video(VideoSpec(width, height, 16, 1.0, False, len(paths))))
        paths.append(path)
    wanted = []
    for path in paths:
        forget_kept_decoders()
        wanted.append(analysed(path))
    forget_kept_decoders()
    assert [analysed(path) for path in paths * 2] == wanted * 2


def test_no_decoder_is_kept_from_a_stream_that_reorders(tmp_path: Path) -> None:
    """A clip with B-frames leaves no decoder kept: its samples' decoder may have guessed a
    reorder depth, and its first packet gave no frame."""
    clip = make_clip(tmp_path / "bframes.mp4", "moving", frames=60, preset="veryfast")
    forget_kept_decoders()
    analysed(clip)
    assert poster._local.first is None and poster._local.sampler is None


def test_no_decoder_is_kept_from_a_large_stream(tmp_path: Path) -> None:
    """A clip of pictures larger than KEEP_PIXELS leaves no decoder kept (nor its pictures)."""
    clip = make_clip(tmp_path / "large.mp4", "moving", frames=4, width=642, height=360)
    forget_kept_decoders()
    analysed(clip)
    assert poster._local.first is None and poster._local.sampler is None
    small = make_clip(tmp_path / "small.mp4", "moving", frames=4, width=640, height=360)
    analysed(small)
    assert poster._local.first is not None and poster._local.sampler is not None


def test_each_thread_keeps_its_own_decoders(tmp_path: Path) -> None:
    """Clips analysed on two threads at once give what they give one by one: each thread keeps
    decoders of its own."""
    paths = one_parameter_set(tmp_path)
    wanted = [analysed(path) for path in paths]
    got: dict[str, list[object]] = {}

    def run(name: str) -> None:
        got[name] = [analysed(path) for path in paths * 4]

    threads = [threading.Thread(target=run, args=(name,)) for name in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert got["a"] == got["b"] == wanted * 4


def _h264(cabac: bool) -> tuple[bytes, list[bytes]]:
    """Eight 160x96 frames by libx264 (no B-frames): its Annex B extradata (empty unless
    ``cabac``, whose encoder keeps its parameter sets apart) and packets."""
    import fractions

    import av
    import numpy as np

    codec = av.CodecContext.create("libx264", "w")
    codec.width, codec.height, codec.pix_fmt = 160, 96, "yuv420p"
    codec.time_base = fractions.Fraction(1, 16)
    codec.options = {"preset": "ultrafast", "bframes": "0", **({"x264-params": "cabac=1"} if cabac else {})}
    if cabac:
        codec.flags |= av.codec.context.Flags.global_header
    packets: list[bytes] = []
    for i in range(8):
        picture = np.zeros((96, 160, 3), np.uint8)
        picture[:, :, 0], picture[10:40, 20 + 5 * i:60 + 5 * i, 1] = 30 * i, 200
        frame = av.VideoFrame.from_ndarray(picture, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        packets += map(bytes, codec.encode(frame))
    return codec.extradata or b"", [*packets, *map(bytes, codec.encode(None))]


def _units(annex_b: bytes) -> list[bytes]:
    return [u for u in annex_b.replace(b"\x00\x00\x00\x01", b"\x00\x00\x01").split(b"\x00\x00\x01") if u]


def _length_prefixed(annex_b: bytes) -> bytes:
    return b"".join(len(u).to_bytes(4, "big") + u for u in _units(annex_b))


def test_a_decoder_that_saw_parameter_sets_in_band_is_not_kept() -> None:
    """A clip whose packets carry their own SPS/PPS (here CAVLC ones, under the avcC extradata
    of a CABAC stream) leaves no kept decoder: the next clip of that extradata gets the first
    frame a new decoder gives."""
    import av

    extradata, plain = _h264(cabac=True)
    sps, pps = (u for u in _units(extradata) if u[0] & 0x1F in (7, 8))
    avcc = bytes([1, *sps[1:4], 0xFF, 0xE1, *len(sps).to_bytes(2, "big"), *sps, 1, *len(pps).to_bytes(2, "big"), *pps])
    _, in_band = _h264(cabac=False)
    source = dataclasses.make_dataclass("Codec", ["name", "extradata", *poster.COLOUR_FIELDS])(
        "h264", avcc, 0, 2, 2, 2)

    def first_frame(packets: list[bytes]) -> Any:
        first = poster.FirstFrame(dataclasses.make_dataclass("Stream", ["codec_context"])(source))
        for data in packets:
            if first.feed(av.Packet(data)):
                break
        frame = first.finish()
        return None if frame is None else frame.to_ndarray()

    forget_kept_decoders()
    wanted = first_frame(list(map(_length_prefixed, plain)))
    forget_kept_decoders()
    assert first_frame(list(map(_length_prefixed, in_band))) is not None
    got = first_frame(list(map(_length_prefixed, plain)))
    assert wanted is not None and got is not None and (got == wanted).all()


def test_parameter_sets_are_found_in_any_packet_of_a_clip() -> None:
    """``sets_in_band`` reads every packet's length-prefixed NAL units: an SPS or PPS in any
    of them, after other units or alone, counts; slices and SEI do not; without avcC
    extradata every clip with a packet counts."""
    avcc = bytes([1, 0x64, 0, 0x1F, 0xFF])  # 4-byte lengths

    def unit(kind: int, body: bytes = b"\x88\x84") -> bytes:
        return (1 + len(body)).to_bytes(4, "big") + bytes([0x60 | kind]) + body

    slices = [unit(6) + unit(5), unit(1), unit(1, b"\x9a" * 40)]
    assert not poster.sets_in_band(slices, avcc)
    for kind in (7, 8, 13, 15):
        assert poster.sets_in_band([*slices, unit(1) + unit(kind) + unit(1)], avcc)
        assert poster.sets_in_band([slices[0], unit(kind), *slices[1:]], avcc)
    assert not poster.sets_in_band([], avcc)
    assert poster.sets_in_band(slices, b"") and poster.sets_in_band(slices, b"\x00\x00\x00\x01g")
    assert not poster.sets_in_band([], None)
