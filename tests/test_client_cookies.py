"""batchvid's httpx client keeps httpx's cookie behaviour while skipping the jar for responses
that set no cookie."""

from __future__ import annotations

import httpx
import pytest

from batchvid.transport import Client


@pytest.mark.anyio
async def test_client_keeps_cookies_a_response_sets_and_skips_the_jar_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``Client`` stores a cookie a response sets and sends it back, as httpx's client does;
    a response without ``Set-Cookie`` never reaches the cookie jar."""
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("cookie"))
        if request.url.path == "/login":
            return httpx.Response(200, headers={"Set-Cookie": "session=abc; Path=/"})
        return httpx.Response(200, json={"ok": True})

    jar_calls: list[int] = []
    real = httpx.Cookies.extract_cookies
    monkeypatch.setattr(httpx.Cookies, "extract_cookies",
                        lambda self, response: (jar_calls.append(1), real(self, response))[1])
    async with Client(transport=httpx.MockTransport(handler), base_url="http://api.test") as client:
        await client.get("/plain")
        assert jar_calls == [] and not client.cookies
        await client.get("/login")
        await client.get("/plain")
    assert client.cookies.get("session") == "abc"
    assert jar_calls == [1]
    assert seen == [None, None, "session=abc"]
