"""The analysis's shortcuts give what the long way gives: the scan's kept packets against a
second read of the clip, and MP4's format named against FFmpeg's guess."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from batchvid import media, media_worker, quality
from batchvid.media import analyse, probe
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
        assert media._unpacked(media_worker._packed(result)) == result
    bare = media.Analysis(dataclasses.replace(analyse(clips[0]).info, quality=None), None)
    assert media._unpacked(media_worker._packed(bare)) == bare


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
    done = subprocess.run([sys.executable, "-P", "-c", script], env=media.worker_env(),
                          capture_output=True, text=True, check=True)
    loaded = set(done.stdout.split())
    assert {"batchvid.media", "batchvid.poster", "batchvid.quality", "av", "numpy"} <= loaded
    assert not loaded & {"anyio", "asyncio", "batchvid.store", "batchvid.journal", "json"}
