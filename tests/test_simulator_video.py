"""Every video the simulator returns decodes with the requested fps and audio presence."""

from __future__ import annotations

import hashlib
import io
import itertools
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import av
import httpx
import numpy
import pytest

from batchvid.media import probe
from batchvid.simulator import BIGMODEL_PREFIX, GEEKAI_PREFIX, Simulator, SimulatorConfig

pytestmark = pytest.mark.anyio

AUTH = {"Authorization": "Bearer test-key"}


@asynccontextmanager
async def client_for(sim: Simulator) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=sim.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sim.test") as client:
        yield client


async def bigmodel_video(client: httpx.AsyncClient, **params: Any) -> tuple[bytes, bytes]:
    body = {"model": "cogvideox-2", "prompt": "a cat", "size": "720x480", **params}
    task_id = (
        await client.post(f"{BIGMODEL_PREFIX}/videos/generations", json=body, headers=AUTH)
    ).json()["id"]
    result = (await client.get(f"{BIGMODEL_PREFIX}/async-result/{task_id}", headers=AUTH)).json()
    video = (await client.get(result["video_result"][0]["url"])).content
    cover = (await client.get(result["video_result"][0]["cover_image_url"])).content
    return video, cover


@pytest.mark.parametrize("fps", [30, 60])
@pytest.mark.parametrize("with_audio", [False, True])
async def test_video_has_requested_fps_and_audio(
    tmp_path: Path, fps: int, with_audio: bool
) -> None:
    """The MP4 is H.264 at the requested fps, with an AAC track exactly when asked."""
    async with client_for(Simulator()) as client:
        video, _ = await bigmodel_video(client, fps=fps, with_audio=with_audio)
    path = tmp_path / "v.mp4"
    path.write_bytes(video)
    info = probe(path)
    assert info.codec == "h264"
    assert info.fps == fps
    assert info.frame_count == fps
    assert info.has_audio is with_audio
    assert info.audio_codec == ("aac" if with_audio else None)


async def test_geekai_video_decodes(tmp_path: Path) -> None:
    """A GeekAI sync result downloads as a decodable video with audio at 60 fps."""
    body = {
        "model": "cogvideox-3",
        "prompt": "x",
        "size": "1280x720",
        "fps": 60,
        "with_audio": True,
    }
    async with client_for(Simulator()) as client:
        result = (
            await client.post(f"{GEEKAI_PREFIX}/videos/generations", json=body, headers=AUTH)
        ).json()
        (tmp_path / "v.mp4").write_bytes(
            (await client.get(result["video_result"][0]["url"])).content
        )
    info = probe(tmp_path / "v.mp4")
    assert (info.fps, info.has_audio) == (60.0, True)


async def test_video_is_scaled_down_keeping_the_aspect_ratio(tmp_path: Path) -> None:
    """By default the longer side is at most 160 px and the requested ratio is kept."""
    async with client_for(Simulator()) as client:
        video, _ = await bigmodel_video(client, model="cogvideox-3", size="1920x1080")
    (tmp_path / "v.mp4").write_bytes(video)
    info = probe(tmp_path / "v.mp4")
    assert (info.width, info.height) == (160, 90)


async def test_full_size_renders_the_requested_size(tmp_path: Path) -> None:
    """``full_size`` renders exactly the requested ``size``."""
    async with client_for(Simulator(SimulatorConfig(full_size=True, video_seconds=0.1))) as client:
        video, _ = await bigmodel_video(client, size="720x480")
    (tmp_path / "v.mp4").write_bytes(video)
    info = probe(tmp_path / "v.mp4")
    assert (info.width, info.height) == (720, 480)


async def test_video_seconds_sets_the_length(tmp_path: Path) -> None:
    """``video_seconds`` is the duration of every video."""
    async with client_for(Simulator(SimulatorConfig(video_seconds=0.5))) as client:
        video, _ = await bigmodel_video(client)
    (tmp_path / "v.mp4").write_bytes(video)
    assert probe(tmp_path / "v.mp4").duration == pytest.approx(0.5, abs=0.05)


async def test_same_request_gives_the_same_bytes() -> None:
    """A request (with its request_id) and seed give the same video bytes in any simulator."""
    async with client_for(Simulator(SimulatorConfig(seed=1))) as client:
        first, _ = await bigmodel_video(client, request_id="a")
    async with client_for(Simulator(SimulatorConfig(seed=1))) as client:
        second, _ = await bigmodel_video(client, request_id="a")
    assert first == second


async def test_different_prompts_give_different_videos() -> None:
    """Three prompts give three different files (sha256), however alike their parameters."""
    async with client_for(Simulator()) as client:
        videos = [
            (await bigmodel_video(client, prompt=prompt))[0]
            for prompt in ("a cat", "a dog", "a red fox at dawn")
        ]
    assert len({hashlib.sha256(video).hexdigest() for video in videos}) == 3


async def test_samples_of_one_request_give_different_videos() -> None:
    """The same body created three times (a job's samples) gives three different files."""
    async with client_for(Simulator()) as client:
        videos = [(await bigmodel_video(client))[0] for _ in range(3)]
    assert len(set(videos)) == 3


async def test_videos_are_cached() -> None:
    """Downloading one task's video ten times renders it once."""
    sim = Simulator()
    async with client_for(sim) as client:
        task_id = (
            await client.post(
                f"{BIGMODEL_PREFIX}/videos/generations",
                json={"model": "cogvideox-2", "prompt": "a cat", "size": "720x480"},
                headers=AUTH,
            )
        ).json()["id"]
        result = await client.get(f"{BIGMODEL_PREFIX}/async-result/{task_id}", headers=AUTH)
        url = result.json()["video_result"][0]["url"]
        bodies = {(await client.get(url)).content for _ in range(10)}
    assert len(bodies) == 1
    assert sim.stats()["videos_rendered"] == 1


def grey_frames(data: bytes) -> list[numpy.ndarray[Any, Any]]:
    """Every frame of an MP4 as a signed-integer luma array (0-255)."""
    with av.open(io.BytesIO(data)) as container:
        return [frame.to_ndarray(format="gray").astype(int) for frame in container.decode(video=0)]


async def test_black_marker_gives_an_all_black_video() -> None:
    """A prompt with [black] gives a video whose every frame is black."""
    async with client_for(Simulator()) as client:
        video, _ = await bigmodel_video(client, prompt="night [black]")
    frames = grey_frames(video)
    assert len(frames) == 30
    assert all(frame.max() <= 20 for frame in frames)


async def test_frozen_marker_gives_identical_frames_that_are_not_black() -> None:
    """A prompt with [frozen] gives a video whose frames are all the same, and not black."""
    async with client_for(Simulator()) as client:
        video, _ = await bigmodel_video(client, prompt="a statue [frozen]")
    frames = grey_frames(video)
    assert len(frames) == 30
    assert all((frame == frames[0]).all() for frame in frames)
    assert frames[0].max() > 200


@pytest.mark.parametrize("prompt", ["a cat", "a dog", "a red fox at dawn", "rain"])
async def test_unmarked_videos_move_between_frames(prompt: str) -> None:
    """Without a marker, consecutive frames differ visibly (the bar moves)."""
    async with client_for(Simulator()) as client:
        video, _ = await bigmodel_video(client, prompt=prompt)
    frames = grey_frames(video)
    diffs = [float(abs(x - y).mean()) for x, y in itertools.pairwise(frames)]
    assert min(diffs) > 1.0


async def test_cover_is_a_png_of_the_video_size() -> None:
    """The cover is a PNG whose size matches the (scaled) video."""
    async with client_for(Simulator()) as client:
        _, cover = await bigmodel_video(client, size="720x480")
    assert cover[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", cover[16:24]) == (160, 106)


async def test_padded_download_is_still_a_valid_video(tmp_path: Path) -> None:
    """With ``download_bytes`` the padded file still probes with the same streams."""
    async with client_for(Simulator(SimulatorConfig(download_bytes=300_000))) as client:
        video, _ = await bigmodel_video(client, with_audio=True)
    (tmp_path / "v.mp4").write_bytes(video)
    info = probe(tmp_path / "v.mp4")
    assert len(video) == 300_000
    assert (info.codec, info.has_audio, info.fps) == ("h264", True, 30.0)
