"""What an interrupted command says it does as it stops: ``run`` finishes its downloads,
``enhance`` (which downloads nothing) asks for no more rewrites."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import anyio
import httpx

from batchvid.events import Collector, RunStopping
from batchvid.manifest import load_manifest
from batchvid.runner import Runner
from batchvid.simulator import Simulator, SimulatorConfig
from batchvid.stopping import Stopper
from batchvid.store import read_records
from tests.test_enhance_run import FOX, settings, write_manifest


class SignalOnChat(httpx.AsyncBaseTransport):
    """Sends this process SIGINT once a chat request is under way, then answers it only after
    10 seconds."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.chats = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("chat/completions"):
            self.chats += 1
            await anyio.sleep(0.2)  # the signal receiver, started beside the rewrites, is installed
            os.kill(os.getpid(), signal.SIGINT)
            await anyio.sleep(10)  # unless the interrupt ends the wait; then the chat is answered
        return await self.inner.handle_async_request(request)


def test_interrupted_enhance_says_it_stops_rewriting_not_downloading(tmp_path: Path) -> None:
    """SIGINT during ``enhance``'s rewrite: the stop message speaks of rewrites, not downloads;
    the rewrite under way is dropped at once and nothing is journaled."""
    manifest = load_manifest(write_manifest(tmp_path, FOX))
    out, collector = tmp_path / "out", Collector()
    transport = SignalOnChat(httpx.ASGITransport(app=Simulator(SimulatorConfig()).app))
    runner = Runner(manifest, settings(out, handle_signals=True), transport=transport, subscribers=[collector])
    (row,) = anyio.run(runner.enhance_only)
    message = "SIGINT received; asking for no more rewrites (the one under way is dropped and asked again next time)"
    assert runner.stopped == {"reason": "interrupted", "message": message}
    assert [e for e in collector.events if isinstance(e, RunStopping)] == [RunStopping("interrupted", message)]
    assert transport.chats == 1 and row.result is None and row.error == "stopped before the rewrite"
    assert all(record.enhanced is None for record in read_records(out).values())


def test_interrupted_run_says_it_finishes_downloads() -> None:
    """SIGINT during ``run``: the stop message says the downloads under way are finished."""
    said: list[object] = []
    stopper = Stopper(said.append, lambda text: text, grace=1.0)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(stopper.watch_signals)
            await anyio.sleep(0.05)  # the receiver is installed
            os.kill(os.getpid(), signal.SIGINT)
            with anyio.fail_after(5):
                while not stopper.interrupted:
                    await anyio.sleep(0.01)
            tg.cancel_scope.cancel()

    anyio.run(main)
    assert said == [RunStopping("interrupted", "SIGINT received; finishing downloads under way")]
