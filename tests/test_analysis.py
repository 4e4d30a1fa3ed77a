"""batchvid.media.analyse and AnalysisPool: one pass equals probe + poster, in a thread or a
worker process, for good clips and broken ones."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import anyio
import av
import numpy as np
import pytest
from av.codec.context import Flags

from batchvid import media_pool
from batchvid.media import Analysis, AnalysisPool, MediaError, analyse, probe
from batchvid.poster import poster_jpeg, poster_size
from batchvid.simulator.video import VideoSpec, render_video
from tests.test_quality import make_clip


def full_range_clip(path: Path) -> Path:
    """A full-range (yuvj420p) clip with the deblocking filter on (preset medium)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuvj420p"
        stream.codec_context.thread_count = 1
        stream.options = {"preset": "medium"}
        for index in range(40):
            picture = np.full((64, 96, 3), 5 * index, np.uint8)
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, 30)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Simulator clips (moving, frozen, black, with audio) and PyAV-made ones: B-frames, a
    keyframe every 5 frames with deblocking, full range."""
    root = tmp_path_factory.mktemp("clips")
    paths = []
    for look, audio in (("moving", False), ("frozen", True), ("black", False)):
        path = root / f"sim-{look}.mp4"
        path.write_bytes(render_video(VideoSpec(160, 90, 16, 1.0, audio, 3, look=look)))
        paths.append(path)
    paths.append(make_clip(root / "bframes.mp4", "moving", frames=120, preset="veryfast"))
    paths.append(make_clip(root / "bframes-frozen.mp4", "frozen", frames=300, preset="veryfast"))
    paths.append(make_clip(root / "keyframes.mp4", "moving", frames=60, gop=5, preset="medium"))
    paths.append(make_clip(root / "black.mp4", "black"))
    paths.append(full_range_clip(root / "full-range.mp4"))
    return paths


def reference_poster(video: Path) -> bytes:
    """The poster as batchvid made it before the one pass: the first frame of a plain decode,
    scaled by the frame's own reformatter."""
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "NONE"
        frame = next(iter(container.decode(stream)))
    width, height = poster_size(frame.width, frame.height)
    image = frame.reformat(width=width, height=height, format="yuvj420p", interpolation="BICUBIC")
    image.pts = 0
    encoder = av.CodecContext.create("mjpeg", "w")
    encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuvj420p"
    encoder.time_base = Fraction(1, 1)
    encoder.thread_count = 1
    encoder.options = {"flags": "+bitexact"}
    encoder.flags |= Flags.qscale
    encoder.global_quality = 3 * 118
    return b"".join(bytes(p) for p in [*encoder.encode(image), *encoder.encode(None)])


def test_one_pass_equals_probe_and_poster(clips: list[Path]) -> None:
    """analyse gives probe's facts and signals and poster_jpeg's bytes, on every clip."""
    for clip in clips:
        result = analyse(clip)
        assert result.info == probe(clip), clip.name
        assert result.poster is not None and result.poster == poster_jpeg(clip), clip.name


def test_poster_bytes_equal_a_plain_decode(clips: list[Path]) -> None:
    """The poster's frame and scaling match a plain first-frame decode, byte for byte (the
    one pass decodes it apart from the signals, which skip the loop filter)."""
    for clip in clips:
        assert analyse(clip).poster == reference_poster(clip), clip.name


def test_broken_video_raises_the_same_error(tmp_path: Path) -> None:
    """A truncated file raises the MediaError probe raises, with the same message."""
    data = render_video(VideoSpec(64, 48, 30, 1.0, False, 3))
    path = tmp_path / "half.mp4"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(MediaError) as expected:
        probe(path)
    with pytest.raises(MediaError) as got:
        analyse(path)
    assert str(got.value) == str(expected.value)


@pytest.fixture
def pool() -> Iterator[AnalysisPool]:
    started = AnalysisPool(workers=1, after=0)
    yield started
    started.close()


def workers_of(pool: AnalysisPool) -> list[int]:
    """The pids of the pool's idle workers."""
    return [worker._process.pid for worker in pool._idle]


@pytest.mark.anyio
async def test_pool_results_equal_in_thread_results(clips: list[Path], pool: AnalysisPool) -> None:
    """Analyses made in a worker process equal those made in this one, posters included."""
    for clip in clips:
        result = await pool.analyse(clip)
        assert isinstance(result, Analysis)
        assert result == analyse(clip), clip.name
    assert len(workers_of(pool)) == 1 and os.getpid() not in workers_of(pool)


@pytest.mark.anyio
async def test_pool_gives_the_same_error_for_a_broken_video(tmp_path: Path, pool: AnalysisPool) -> None:
    """A file that is not a video raises the same MediaError from a worker process."""
    path = tmp_path / "garbage.mp4"
    path.write_bytes(b"not a video" * 100)
    with pytest.raises(MediaError) as expected:
        analyse(path)
    with pytest.raises(MediaError) as got:
        await pool.analyse(path)
    assert str(got.value) == str(expected.value)
    assert len(workers_of(pool)) == 1


@pytest.mark.anyio
async def test_first_clips_run_on_threads(clips: list[Path]) -> None:
    """A pool with after=2 analyses two clips without starting a process, then starts one."""
    pool = AnalysisPool(workers=1, after=2)
    try:
        for clip in clips[:2]:
            await pool.analyse(clip)
            assert pool._started == 0
        assert await pool.analyse(clips[2]) == analyse(clips[2])
        assert len(workers_of(pool)) == 1
    finally:
        pool.close()


@pytest.mark.anyio
async def test_workers_ignore_sigint_and_stop_on_close(clips: list[Path], pool: AnalysisPool) -> None:
    """A worker runs in a session of its own (a Ctrl-C at the terminal does not reach it) and
    ignores SIGINT; close ends it."""
    await pool.analyse(clips[0])
    (pid,) = workers_of(pool)
    assert os.getsid(pid) != os.getsid(0)
    os.kill(pid, signal.SIGINT)
    assert await pool.analyse(clips[1]) == analyse(clips[1])
    assert workers_of(pool) == [pid]
    pool.close()
    assert not _alive(pid) and pool._started == 0


@pytest.mark.anyio
async def test_a_dead_worker_is_replaced(clips: list[Path], pool: AnalysisPool) -> None:
    """When a worker has died, its clip is still analysed (on a thread), and the next clip
    gets a new worker."""
    await pool.analyse(clips[0])
    (pid,) = workers_of(pool)
    os.kill(pid, signal.SIGKILL)
    while _alive(pid):
        time.sleep(0.01)
    assert await pool.analyse(clips[1]) == analyse(clips[1])
    assert workers_of(pool) == []
    assert await pool.analyse(clips[2]) == analyse(clips[2])
    (new,) = workers_of(pool)
    assert new != pid


@pytest.mark.anyio
async def test_workers_do_not_get_the_api_keys(
    clips: list[Path], pool: AnalysisPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker process's environment holds none of the providers' API key variables (it
    only reads videos), and still the rest of this process's environment."""
    monkeypatch.setenv("GEEKAI_API_KEY", "sk-worker-must-not-see")
    monkeypatch.setenv("ZHIPUAI_API_KEY", "zk-worker-must-not-see")
    monkeypatch.setenv("BATCHVID_TEST_MARKER", "kept")
    await pool.analyse(clips[0])
    (pid,) = workers_of(pool)
    with open(f"/proc/{pid}/environ", "rb") as environ:
        names = {entry.split(b"=", 1)[0] for entry in environ.read().split(b"\0") if entry}
    assert b"BATCHVID_TEST_MARKER" in names
    assert not names & {b"GEEKAI_API_KEY", b"ZHIPUAI_API_KEY", b"BIGMODEL_API_KEY"}


def _alive(pid: int) -> bool:
    """Whether ``pid`` is running (a zombie is not)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[-1][0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.anyio
async def test_concurrent_clips_share_at_most_the_pool_size(clips: list[Path]) -> None:
    """Clips analysed at once on a cold pool all get their own results, from at most
    ``workers`` processes."""
    pool = AnalysisPool(workers=2, after=0)
    results: dict[Path, Analysis] = {}

    async def one(clip: Path) -> None:
        results[clip] = await pool.analyse(clip)

    try:
        async with anyio.create_task_group() as group:
            for clip in clips:
                group.start_soon(one, clip)
        assert results == {clip: analyse(clip) for clip in clips}
        assert 1 <= len(workers_of(pool)) <= 2 and pool._started == len(workers_of(pool))
    finally:
        pool.close()


@pytest.mark.anyio
async def test_workers_that_cannot_start_leave_clips_to_threads(
    clips: list[Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """When a worker dies before its first answer (no usable Python to start it with), its
    clip and every later one are analysed on threads, with no further worker started."""
    started: list[object] = []
    popen = subprocess.Popen

    def counting_popen(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        started.append(args)
        return popen(*args, **kwargs)

    broken = tmp_path / "python3"  # named as an interpreter is, but exits at once
    broken.write_text("#!/bin/sh\nexit 1\n")
    broken.chmod(0o755)
    pool = AnalysisPool(workers=2, after=0)
    monkeypatch.setattr("sys.executable", str(broken))
    monkeypatch.setattr(subprocess, "Popen", counting_popen)
    try:
        for clip in clips[:3]:
            assert await pool.analyse(clip) == analyse(clip)
        assert len(started) == 1
        assert pool._broken and pool._started == 0 and workers_of(pool) == []
    finally:
        pool.close()


@pytest.mark.anyio
@pytest.mark.parametrize("frozen", [False, True])
async def test_no_worker_is_started_without_an_interpreter(
    clips: list[Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, frozen: bool
) -> None:
    """Where ``sys.executable`` is not a Python interpreter (the host program Python is
    embedded in), or the application is frozen, no worker is started with it: every clip is
    analysed on a thread, to the same analysis."""
    ran = tmp_path / "ran"
    host = tmp_path / ("python3" if frozen else "uwsgi")
    host.write_text(f"#!/bin/sh\necho started >> {ran}\n")
    host.chmod(0o755)
    monkeypatch.setattr("sys.executable", str(host))
    if frozen:
        monkeypatch.setattr("sys.frozen", True, raising=False)
    pool = AnalysisPool(workers=2, after=0)
    try:
        pool.start()
        for clip in clips[:3]:
            assert await pool.analyse(clip) == analyse(clip)
        assert pool._broken and pool._started == 0 and workers_of(pool) == []
    finally:
        pool.close()
    assert not ran.exists()


def test_container_without_frame_count_is_measured(tmp_path: Path) -> None:
    """A Matroska clip (its stream gives no frame count) gets its frames counted and its
    signals measured on all of them, by probe and analyse alike."""
    clip = make_clip(tmp_path / "clip.mkv", "moving", frames=45)
    with av.open(str(clip)) as container:
        assert not container.streams.video[0].frames
    info = probe(clip)
    assert info.frame_count == 45 and info.quality is not None
    assert info.quality.frames_decoded == 45 and info.quality.samples == 32
    assert analyse(clip).info == info


@pytest.mark.anyio
async def test_a_started_pool_sends_the_first_clip_to_its_worker(clips: list[Path]) -> None:
    """start() starts one worker before any clip (even with after > 0), and the first clip
    goes to that worker; a second start() starts no other."""
    pool = AnalysisPool(workers=2, after=8)
    try:
        pool.start()
        (pid,) = workers_of(pool)
        pool.start()
        assert workers_of(pool) == [pid] and pool._started == 1
        assert await pool.analyse(clips[0]) == analyse(clips[0])
        assert workers_of(pool) == [pid]
    finally:
        pool.close()


def test_close_ends_a_worker_still_starting() -> None:
    """close() ends a worker that was started and never given a clip (it is killed, having
    nothing to finish)."""
    pool = AnalysisPool(workers=1)
    pool.start()
    (pid,) = workers_of(pool)
    pool.close()
    assert not _alive(pid) and pool._started == 0 and workers_of(pool) == []


@pytest.mark.anyio
@pytest.mark.parametrize(("start_seconds", "expected"), [(1e9, 1), (0.0, 2)])
async def test_workers_are_added_only_when_clips_queue_longer_than_a_start(
    clips: list[Path], monkeypatch: pytest.MonkeyPatch, start_seconds: float, expected: int
) -> None:
    """Clips arriving at once get a second worker only when their queue would last longer
    than a worker takes to start (never, if starting took forever; always, if it took no
    time). One clip a request: clips sent together in one request wait for that one worker."""
    monkeypatch.setattr("batchvid.media_pool.WORKER_START_SECONDS", start_seconds)
    monkeypatch.setattr("batchvid.media_pool.BATCH_SECONDS", 0.0)
    pool = AnalysisPool(workers=2, after=0)
    results: dict[Path, Analysis] = {}

    async def one(clip: Path) -> None:
        results[clip] = await pool.analyse(clip)

    try:
        await pool.analyse(clips[0])
        await pool.analyse(clips[1])  # a clip's time, measured
        async with anyio.create_task_group() as group:
            for clip in clips * 2:
                group.start_soon(one, clip)
        assert results == {clip: analyse(clip) for clip in clips}
        assert len(workers_of(pool)) == pool._started == expected
    finally:
        pool.close()


@pytest.mark.anyio
async def test_a_clips_time_is_its_cpu_time_in_the_worker_not_the_wait(clips: list[Path]) -> None:
    """The clip time that decides whether to add a worker is the CPU time the worker spent
    (its reply says), not the time from request to reply: a worker kept off the CPU for a
    second (as on a busy machine) does not make clips look slow, so no second worker starts."""
    pool = AnalysisPool(workers=2, after=0)
    try:
        await pool.analyse(clips[0])  # the first answer (with the start) is not counted
        (pid,) = workers_of(pool)
        os.kill(pid, signal.SIGSTOP)
        timer = threading.Timer(1.0, os.kill, (pid, signal.SIGCONT))
        timer.start()
        asked = time.monotonic()
        assert await pool.analyse(clips[0]) == analyse(clips[0])
        timer.join()
        assert time.monotonic() - asked >= 1.0
        assert 0 < pool._idle[0].last_cpu < 0.2 and pool._clip_seconds < 0.04
        async with anyio.create_task_group() as group:
            for clip in clips[:3] * 4:
                group.start_soon(pool.analyse, clip)
        assert pool._started == 1
    finally:
        pool.close()


def recording_calls(monkeypatch: pytest.MonkeyPatch, *, kill: bool = False) -> list[int]:
    """Records the number of clips in each request to a worker (and with ``kill``, kills the
    worker as each request goes out)."""
    sizes: list[int] = []
    call = media_pool._Worker.call

    async def recording(worker: Any, paths: list[str]) -> Any:
        sizes.append(len(paths))
        if kill and worker.answered:
            worker._process.kill()
            worker._process.wait()
        return await call(worker, paths)

    monkeypatch.setattr(media_pool._Worker, "call", recording)
    return sizes


@pytest.mark.anyio
async def test_clips_queued_behind_one_go_to_the_worker_together(
    clips: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Clips that queue while a worker is busy go to it in one request (as many as about
    BATCH_SECONDS of its CPU), and each gets its own result."""
    monkeypatch.setattr("batchvid.media_pool.WORKER_START_SECONDS", 1e9)
    sizes = recording_calls(monkeypatch)
    pool = AnalysisPool(workers=1, after=0)
    results: dict[int, Analysis] = {}

    async def one(index: int, clip: Path) -> None:
        results[index] = await pool.analyse(clip)

    try:
        await pool.analyse(clips[0])
        await pool.analyse(clips[1])  # a clip's CPU time, measured
        assert sizes == [1, 1]
        monkeypatch.setattr(pool, "_clip_seconds", media_pool.BATCH_SECONDS / 4)
        async with anyio.create_task_group() as group:
            for index, clip in enumerate(clips * 2):
                group.start_soon(one, index, clip)
        assert results == {i: analyse(clip) for i, clip in enumerate(clips * 2)}
        assert sum(sizes[2:]) == 2 * len(clips) and sizes[2] == 4 and len(sizes) < 2 + len(clips)
        assert pool._loop_state()[1] == []
    finally:
        pool.close()


@pytest.mark.anyio
async def test_a_clip_in_a_batch_under_way_is_not_sent_again(
    clips: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With two workers, a clip already in a request under way waits for that request's reply
    when its own turn comes, rather than going to the other worker as well: each clip is
    sent once, and gets its own result."""
    monkeypatch.setattr("batchvid.media_pool.WORKER_START_SECONDS", 0.0)
    pool = AnalysisPool(workers=2, after=0)
    results: dict[int, Analysis] = {}

    async def one(index: int, clip: Path) -> None:
        results[index] = await pool.analyse(clip)

    try:
        await pool.analyse(clips[0])
        await pool.analyse(clips[1])  # a clip's time, measured
        with monkeypatch.context() as unbatched:  # a clip a request: a second worker starts and answers
            unbatched.setattr("batchvid.media_pool.BATCH_SECONDS", 0.0)
            async with anyio.create_task_group() as group:
                for index, clip in enumerate(clips * 2):
                    group.start_soon(one, index, clip)
        assert pool._started == 2 and pool._loop_state()[0].total_tokens == 2
        sizes = recording_calls(monkeypatch)
        monkeypatch.setattr(pool, "_clip_seconds", media_pool.BATCH_SECONDS / 64)
        results.clear()
        async with anyio.create_task_group() as group:
            for index, clip in enumerate(clips * 2):
                group.start_soon(one, index, clip)
        assert results == {i: analyse(clip) for i, clip in enumerate(clips * 2)}
        assert sum(sizes) == 2 * len(clips)
    finally:
        pool.close()


@pytest.mark.anyio
async def test_the_clips_of_a_worker_that_died_are_analysed_on_threads(
    clips: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """When a worker dies with several clips of one request, each of them is still analysed
    (on a thread), and the next clips get a new worker."""
    pool = AnalysisPool(workers=1, after=0)
    results: dict[int, Analysis] = {}

    async def one(index: int, clip: Path) -> None:
        results[index] = await pool.analyse(clip)

    try:
        await pool.analyse(clips[0])
        await pool.analyse(clips[1])
        (pid,) = workers_of(pool)
        monkeypatch.setattr(pool, "_clip_seconds", media_pool.BATCH_SECONDS / 8)
        sizes = recording_calls(monkeypatch, kill=True)
        async with anyio.create_task_group() as group:
            for index, clip in enumerate(clips):
                group.start_soon(one, index, clip)
        assert results == {i: analyse(clip) for i, clip in enumerate(clips)}
        assert max(sizes) > 1 and not _alive(pid)
        monkeypatch.undo()
        assert await pool.analyse(clips[2]) == analyse(clips[2])
        (new,) = workers_of(pool)
        assert new != pid
    finally:
        pool.close()


@pytest.mark.anyio
async def test_a_cancelled_clip_leaves_the_queue(clips: list[Path]) -> None:
    """A clip whose caller is cancelled while it waits for a worker is not sent to one."""
    pool = AnalysisPool(workers=1, after=0)
    try:
        await pool.analyse(clips[0])
        limiter, queue = pool._loop_state()
        release = anyio.Event()

        async def busy() -> None:  # the worker is busy
            async with limiter:
                await release.wait()

        async with anyio.create_task_group() as group:
            group.start_soon(busy)
            await anyio.sleep(0.05)
            with anyio.move_on_after(0.2) as waited:
                await pool.analyse(clips[1])
            assert waited.cancelled_caught and queue == []
            release.set()
        assert await pool.analyse(clips[1]) == analyse(clips[1])
    finally:
        pool.close()


def test_a_process_that_hands_clips_to_workers_loads_neither_pyav_nor_numpy(
    clips: list[Path],
) -> None:
    """With the pool started, a process that analyses clips through it (as a run does) never
    imports PyAV or numpy itself: the workers do."""
    script = (
        "import sys, anyio\n"
        "from pathlib import Path\n"
        "import batchvid.download\n"
        "from batchvid import media\n"
        "media.start_pool()\n"
        "result = anyio.run(media.analyse_off_loop, Path(sys.argv[1]))\n"
        "assert result.info.quality is not None and result.poster\n"
        "print(sorted(m for m in ('av', 'numpy') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(clips[0])], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"


@pytest.mark.anyio
async def test_workers_keep_freed_memory_unless_malloc_was_tuned(
    clips: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker's environment tells glibc's malloc to keep freed blocks (and numpy's OpenBLAS
    to start no threads), unless this process's environment tunes malloc itself."""
    for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES"):
        monkeypatch.delenv(name, raising=False)
    for tuned in (False, True):
        if tuned:
            monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.check=0")
        pool = AnalysisPool(workers=1, after=0)
        try:
            await pool.analyse(clips[0])
            (pid,) = workers_of(pool)
            with open(f"/proc/{pid}/environ", "rb") as environ:
                names = {entry.split(b"=", 1)[0] for entry in environ.read().split(b"\0") if entry}
        finally:
            pool.close()
        assert b"OPENBLAS_NUM_THREADS" in names
        assert (b"MALLOC_MMAP_THRESHOLD_" in names) is not tuned
        assert (b"MALLOC_TRIM_THRESHOLD_" in names) is not tuned
