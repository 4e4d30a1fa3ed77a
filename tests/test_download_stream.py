"""The video download path: streamed to disk in batches, hashed, synced as it grows, capped.

The large-body tests use the simulator over TCP on both transports (a real socket, real chunk
sizes); the pipeline's bounds use httpx's MockTransport with a scripted body.
"""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, cast

import anyio
import httpx
import pytest

from batchvid import durable
from batchvid.download import WRITE_BATCH, Downloader, Held, _commit_held, _stream_into
from batchvid.durable import HashingWriter, hashing_writer
from batchvid.errors import JobFatalError, TransientError
from batchvid.simulator import BIGMODEL_PREFIX, SimulatorConfig, running_simulator
from batchvid.transport import READ_SIZE, TRANSPORTS, Client, make_transport

MIB = 1 << 20


CLIENTS = {
    "httpx's client": lambda kind: httpx.AsyncClient(transport=make_transport(kind)),
    "batchvid's": lambda kind: Client(transport=make_transport(kind), follow_redirects=True, max_redirects=5),
}
"""httpx's own client, and batchvid's as a run's downloads use it (plain requests: on aiohttp,
bodies read straight from aiohttp's response)."""


def downloader(client: httpx.AsyncClient, root: Path, cap: int = 1 << 40) -> Downloader:
    """A Downloader for ``fetch`` alone (which needs no poller, policy or effects)."""
    none = cast(Any, None)
    return Downloader(client, root, none, none, none, max_bytes=cap, retries=0, strict_media=False)


def video_url(base_url: str, request_id: str) -> str:
    """Create a task on the simulator and return its result URL."""
    with httpx.Client(base_url=base_url + BIGMODEL_PREFIX, headers={"Authorization": "Bearer k"}) as api:
        body = {"model": "cogvideox-2", "prompt": "a cat", "request_id": request_id}
        task_id = api.post("/videos/generations", json=body).json()["id"]
        result = api.get(f"/async-result/{task_id}").json()
    return str(result["video_result"][0]["url"])


@pytest.mark.parametrize("which", CLIENTS)
@pytest.mark.anyio
@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_large_body_lands_byte_for_byte(
    kind: str, which: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 12 MiB video (many chunks, several batches, background syncs) is on disk exactly as
    served, with the sha256 and size of the served bytes."""
    monkeypatch.setattr(durable, "SYNC_EVERY", MIB)
    with running_simulator(SimulatorConfig(download_bytes=12 * MIB)) as sim:
        url = video_url(sim.base_url, f"bytes-{kind}")
        served = httpx.get(url).content
        async with CLIENTS[which](kind) as client:
            video = await downloader(client, tmp_path).fetch(url, tmp_path / "video.mp4")
    assert len(served) == 12 * MIB
    assert (tmp_path / "video.mp4").read_bytes() == served
    assert video == {
        "path": "video.mp4",
        "sha256": hashlib.sha256(served).hexdigest(),
        "bytes": len(served),
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == ["video.mp4"]


@pytest.mark.parametrize("which", CLIENTS)
@pytest.mark.anyio
@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_body_cut_short_is_a_truncation(kind: str, which: str, tmp_path: Path) -> None:
    """A server that closes after half of its declared 12 MiB: a transient failure (retried),
    and neither the video nor its temporary file is left."""
    config = SimulatorConfig(download_bytes=12 * MIB, fault_rate=1.0, faults=frozenset({"truncated"}))
    with running_simulator(config) as sim:
        url = video_url(sim.base_url, f"cut-{kind}")
        async with CLIENTS[which](kind) as client:
            with pytest.raises(TransientError) as caught:
                await downloader(client, tmp_path).fetch(url, tmp_path / "video.mp4")
    assert caught.value.kind in ("network", "truncated_download")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("which", CLIENTS)
@pytest.mark.anyio
@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_body_is_read_in_pieces_of_at_most_read_size(kind: str, which: str) -> None:
    """Chunks of a 12 MiB body never exceed READ_SIZE; on aiohttp they are larger than
    httpx-aiohttp's own 16 KiB (what arrived since the last read, not 16 KiB slices of it)."""
    with running_simulator(SimulatorConfig(download_bytes=12 * MIB)) as sim:
        url = video_url(sim.base_url, f"pieces-{kind}")
        sizes = []
        async with (
            CLIENTS[which](kind) as client,
            client.stream("GET", httpx.URL(url)) as response,
        ):
            async for chunk in response.aiter_bytes():
                sizes.append(len(chunk))
                time.sleep(0.001)  # let data pile up in the client's read buffer
    assert sum(sizes) == 12 * MIB
    assert max(sizes) <= READ_SIZE
    if kind == "aiohttp":
        assert max(sizes) > 64 << 10


def response_of(body: AsyncIterator[bytes], headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(200, headers=headers, content=body)


@pytest.mark.anyio
async def test_cap_crossed_inside_a_large_chunk_is_refused(tmp_path: Path) -> None:
    """A body without Content-Length that passes the cap in the middle of a 1 MiB chunk is
    refused (download_too_large) and nothing is left on disk."""
    cap = 5 * MIB + 10

    async def body() -> AsyncIterator[bytes]:
        for _ in range(8):
            yield b"\1" * MIB

    async def handler(request: httpx.Request) -> httpx.Response:
        return response_of(body())

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(JobFatalError, match="exceeds the cap") as caught:
            await downloader(client, tmp_path, cap).fetch("http://cdn.test/v.mp4", tmp_path / "v.mp4")
    assert caught.value.kind == "download_too_large"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.anyio
async def test_cancelled_download_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A download cancelled mid-body (an interrupt) returns promptly once the batch being
    written is done: no writer thread left running, no file left behind."""
    monkeypatch.setattr(durable, "SYNC_EVERY", 1 << 40)
    served = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal served
        while True:
            served += 1
            yield b"\2" * MIB

    async def handler(request: httpx.Request) -> httpx.Response:
        return response_of(endless())

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        with anyio.move_on_after(0.5) as scope:
            await downloader(client, tmp_path).fetch("http://cdn.test/v.mp4", tmp_path / "v.mp4")
    assert scope.cancelled_caught
    assert served > 2 * WRITE_BATCH // MIB  # the cancel came while batches were being written
    assert not [t for t in threading.enumerate() if t.name.startswith("batchvid-write")]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.anyio
async def test_a_handed_over_download_is_committed_later_with_its_hash(tmp_path: Path) -> None:
    """``fetch(later=...)`` leaves the file uncommitted (no final name yet) and its record's
    sha256 unset; ``_commit_held`` renames it into place and fills in the served bytes' hash."""
    cover = b"\x89PNG" + bytes(range(256)) * 40

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=cover)

    later: list[Held] = []
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        record = await downloader(client, tmp_path).fetch("http://cdn.test/c.png", tmp_path / "cover.png",
                                                           later=later)
    assert record == {"path": "cover.png", "sha256": None, "bytes": len(cover)}
    assert not (tmp_path / "cover.png").exists()
    _commit_held(later)
    assert later == []
    assert (tmp_path / "cover.png").read_bytes() == cover
    assert record["sha256"] == hashlib.sha256(cover).hexdigest()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cover.png"]


@pytest.mark.anyio
async def test_a_truncated_handed_over_download_leaves_nothing(tmp_path: Path) -> None:
    """A body shorter than its Content-Length is refused even when the commit was to be left
    to the caller: nothing is handed over and no temporary file stays."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-length": "100"}, content=b"x" * 10)

    later: list[Held] = []
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(TransientError, match="received 10 of 100"):
            await downloader(client, tmp_path).fetch("http://cdn.test/c.png", tmp_path / "cover.png",
                                                     later=later)
    assert later == []
    assert list(tmp_path.iterdir()) == []


class SlowWriter:
    """Records what ``_stream_into`` hands over; each batch takes a while to 'write'."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.written = 0
        self.lock = threading.Lock()

    def write_all(self, chunks: Sequence[bytes]) -> None:
        time.sleep(0.02)
        self.hold(chunks)

    def hold(self, chunks: Sequence[bytes]) -> None:
        with self.lock:
            self.chunks.extend(chunks)
            self.written += len(chunks)


@pytest.mark.anyio
async def test_at_most_two_batches_are_held() -> None:
    """With a writer slower than the network, the chunks read but not yet written never
    exceed two batches (the one being written and the one being read): memory is bounded."""
    per_batch = WRITE_BATCH // MIB
    writer = SlowWriter()
    held: list[int] = []

    async def body() -> AsyncIterator[bytes]:
        for i in range(10 * per_batch):
            with writer.lock:
                held.append(i + 1 - writer.written)
            yield bytes([i % 251]) * MIB

    await _stream_into(response_of(body()), cast(HashingWriter, writer), cap=1 << 40)
    assert max(held) <= 2 * per_batch
    assert b"".join(writer.chunks) == b"".join(bytes([i % 251]) * MIB for i in range(10 * per_batch))


@pytest.mark.anyio
async def test_a_small_body_is_written_by_the_commit(tmp_path: Path) -> None:
    """A body smaller than one batch makes no file on the event loop: the temporary file is
    made, written and fsynced by ``commit`` (in its worker thread), with every byte hashed."""
    chunks = [bytes([i]) * 1000 for i in range(50)]

    async def body() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    with hashing_writer(tmp_path / "cover.png") as writer:
        await _stream_into(response_of(body()), writer, cap=1 << 40)
        assert writer.size == 50_000 and list(tmp_path.iterdir()) == []
        writer.commit()
    assert (tmp_path / "cover.png").read_bytes() == b"".join(chunks)
    assert writer.sha256 == hashlib.sha256(b"".join(chunks)).hexdigest()


# --- HashingWriter ------------------------------------------------------------------------------


def test_large_file_is_synced_as_it_grows_and_fsynced_before_the_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past SYNC_EVERY bytes a background fdatasync runs; commit still fsyncs the file before
    renaming it, and the file holds every byte written, hashed."""
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(durable, "SYNC_EVERY", MIB)
    monkeypatch.setattr(durable, "_fdatasync", lambda fd: events.append("background"))
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))[1])
    data = [os.urandom(256 << 10) for _ in range(16)]
    with hashing_writer(tmp_path / "video.mp4") as writer:
        for i in range(0, 16, 4):
            writer.write_all(data[i : i + 4])
            sync = writer._syncing
            if sync is not None:
                sync.join()  # let each sync finish, so the next one can start
        writer.commit()
    assert events.count("background") == 4
    assert events.index("fsync") < events.index("replace")
    assert events[: events.index("fsync")] == ["background"] * 4
    assert (tmp_path / "video.mp4").read_bytes() == b"".join(data)
    assert writer.sha256 == hashlib.sha256(b"".join(data)).hexdigest()


def test_failed_background_sync_fails_the_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An I/O error of a background sync (the kernel reports it once) fails commit: the video
    is not renamed into place, and nothing is left behind."""

    def broken(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(durable, "SYNC_EVERY", MIB)
    monkeypatch.setattr(durable, "_fdatasync", broken)
    with pytest.raises(OSError, match="Input/output"), hashing_writer(tmp_path / "v.mp4") as writer:
        writer.write_all([b"\0" * MIB, b"\0" * MIB])
        writer.commit()
    assert list(tmp_path.iterdir()) == []


def test_discard_leaves_a_running_sync_its_descriptor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """discard does not wait for a background sync, nor close the descriptor under it: the
    sync thread removes the temporary file when it ends."""
    release = threading.Event()
    open_at_end: list[bool] = []

    def slow(fd: int) -> None:
        release.wait(10)
        try:
            os.fstat(fd)
            open_at_end.append(True)
        except OSError:
            open_at_end.append(False)

    monkeypatch.setattr(durable, "SYNC_EVERY", MIB)
    monkeypatch.setattr(durable, "_fdatasync", slow)
    with hashing_writer(tmp_path / "v.mp4") as writer:
        writer.write_all([b"\0" * MIB])
        sync = writer._syncing
    assert sync is not None and sync.is_alive()
    assert [p.name for p in tmp_path.iterdir()] == [writer.tmp.name]
    release.set()
    sync.join()
    assert open_at_end == [True]
    assert list(tmp_path.iterdir()) == []


def test_many_small_chunks_and_a_short_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """More chunks than one writev takes, and a writev that writes only part of its buffers:
    every byte still lands, in order."""
    real_writev = os.writev
    calls: list[int] = []

    def short_first(fd: int, buffers: Sequence[bytes]) -> int:
        calls.append(len(buffers))
        if len(calls) == 1:
            return os.write(fd, b"".join(buffers)[:1000])
        return real_writev(fd, buffers)

    monkeypatch.setattr(os, "writev", short_first)
    chunks = [i.to_bytes(2, "big") * 7 for i in range(3000)]
    with hashing_writer(tmp_path / "v.bin") as writer:
        writer.write_all(chunks)
        writer.commit()
    assert calls == [durable.IOV_MAX, durable.IOV_MAX, 3000 - 2 * durable.IOV_MAX]
    assert (tmp_path / "v.bin").read_bytes() == b"".join(chunks)
    assert writer.size == 3000 * 14



ALLOCATIONS = """
import collections, random, resource, sys
from batchvid.transport import keep_freed_buffers
tuned = keep_freed_buffers() if sys.argv[1] == "tuned" else False
rng, held = random.Random(1), collections.deque()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(1000):  # buffers of a streamed body: 200 KiB to 1 MiB, a few alive at a time
    held.append(bytes(bytearray(rng.randrange(200 << 10, 1 << 20))))
    if len(held) > 3:
        held.popleft()
print(tuned, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_freed_body_buffers_are_reused_not_faulted_in_again() -> None:
    """With keep_freed_buffers, a stream of 200 KiB-1 MiB buffers reuses the same pages: a
    tenth of the page faults (or fewer) of glibc's defaults; a user's own MALLOC_* setting wins."""

    def faults(mode: str, **env: str) -> tuple[str, int]:
        out = subprocess.run(
            [sys.executable, "-c", ALLOCATIONS, mode],
            env={**os.environ, **env}, capture_output=True, text=True, check=True,
        ).stdout.split()
        return out[0], int(out[1])

    if not (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc"):
        pytest.skip("not glibc")
    plain_set, plain = faults("plain")
    tuned_set, tuned = faults("tuned")
    user_set, _ = faults("tuned", MALLOC_TRIM_THRESHOLD_="131072")
    assert (plain_set, tuned_set, user_set) == ("False", "True", "False")
    assert tuned * 10 < plain
