"""Small builders shared by tests."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from socketserver import TCPServer
from typing import Any

import httpx

from batchvid.jobkey import job_key
from batchvid.jobs import Job, Manifest


def make_job(job_id: str = "j1", index: int = 0, provider: str = "geekai", **params: Any) -> Job:
    params.setdefault("model", "cogvideox-flash")
    params.setdefault("prompt", f"prompt of {job_id}")
    return Job(
        id=job_id,
        key=job_key(provider, params, None, 0),
        index=index,
        provider=provider,
        params=params,
    )


def make_manifest(jobs: list[Job], path: Path | None = None, **kw: Any) -> Manifest:
    provider = jobs[0].provider if jobs else "geekai"
    return Manifest(
        path=path or Path("manifest.yaml"),
        name=kw.pop("name", "test"),
        provider=provider,
        jobs=tuple(jobs),
        **kw,
    )


FAST = ["--simulate", "--no-progress", "--sim-latency", "0.05",
        "--poll-interval", "0.01:0.05", "--rpm", "6000"]
"""`batchvid run` flags for a quick run on the in-process simulator."""


class Recording(httpx.AsyncBaseTransport):
    """Passes requests to another transport and keeps them."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return await self.inner.handle_async_request(request)


@contextmanager
def serving(server: TCPServer) -> Iterator[str]:
    """``server`` answering in a thread while the block runs (its ``http://127.0.0.1:PORT``
    yielded), then shut down, closed and its thread joined."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
