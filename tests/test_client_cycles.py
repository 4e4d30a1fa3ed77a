"""batchvid's httpx client frees a streamed response by reference counting once it is closed."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import anyio
import httpx
import pytest

from batchvid.simulator import SimulatorConfig, running_simulator
from batchvid.transport import Client, make_transport


@pytest.fixture(scope="module")
def simulator_url() -> Iterator[str]:
    with running_simulator(SimulatorConfig(latency=0.0)) as sim:
        yield sim.base_url


@pytest.mark.parametrize("kind", ["mock", "aiohttp"])
def test_a_closed_streamed_response_needs_no_cyclic_collection(kind: str, simulator_url: str) -> None:
    """After ``Client.stream``'s block the response, read in full, is freed as soon as the
    caller lets go of it, with the cyclic collector off (httpx's own stream refers back to it)."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"ok": True})

    transport = httpx.MockTransport(handler) if kind == "mock" else make_transport("aiohttp")
    url = "http://api.test/x" if kind == "mock" else f"{simulator_url}/_simulator/stats"

    async def fetch() -> None:
        async with Client(transport=transport) as client:
            await client.get(url)  # the connection is open: the next response is the one seen
            gc.collect()
            gc.disable()
            try:
                async with client.stream("GET", url) as response:
                    body = b"".join([chunk async for chunk in response.aiter_bytes()])
                gone = weakref.ref(response)
                del response
                assert gone() is None
            finally:
                gc.enable()
            assert body.startswith(b"{")

    anyio.run(fetch)
