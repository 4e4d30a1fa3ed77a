"""``transport.Client.stream`` sends a plain request straight to its transport: the same bytes
on the wire, the same answer, the same errors as httpx's client, and httpx's client whenever it
would do more than build and send (cookies to send, hooks, redirects to follow).

Every test runs on both transports, against a loopback server that records each request whole.
"""

from __future__ import annotations

import contextlib
import gzip
import re
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc
import httpx
import httpx_aiohttp
import pytest

from batchvid import redirects
from batchvid.errors import TransientError
from batchvid.providers import wire
from batchvid.providers.wire import RawResponse, endpoint, send
from batchvid.transport import TRANSPORTS, Client, make_transport

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("kind", TRANSPORTS)]

KEY = "sk-plain-secret-77c1"
PORT = re.compile(rb"(?<=127\.0\.0\.1:)\d+")
TEXT_PORT = re.compile(r"(?<=127\.0\.0\.1:)\d+")
ANSWER = b'{"task_status":"PROCESSING","id":"t-1"}'


@asynccontextmanager
async def recording_server(
    requests: list[bytes], extra: bytes = b"", answer: bytes = ANSWER, whole: bytes | None = None
) -> AsyncIterator[str]:
    """A loopback HTTP/1.1 server answering every request with ``answer`` (and the header lines
    ``extra``), or with the bytes ``whole``, noting each request's bytes (head and body) in
    ``requests``."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    base = f"http://127.0.0.1:{listener.extra(anyio.abc.SocketAttribute.local_port)}"

    async def serve(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            data = b""
            try:
                while True:
                    while b"\r\n\r\n" not in data:
                        data += await stream.receive()
                    head, _, rest = data.partition(b"\r\n\r\n")
                    length = next((int(line.split(b":")[1]) for line in head.lower().split(b"\r\n")
                                   if line.startswith(b"content-length:")), 0)
                    while len(rest) < length:
                        rest += await stream.receive()
                    requests.append(head + b"\r\n\r\n" + rest[:length])
                    data = rest[length:]
                    await stream.send(whole or b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                      + extra + b"Content-Length: %d\r\n\r\n" % len(answer) + answer)
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, serve)
        yield base
        tg.cancel_scope.cancel()


def options(kind: str, base: str, **more: Any) -> dict[str, Any]:
    return {
        "base_url": base + "/api/v4",
        "headers": {"Authorization": f"Bearer {KEY}"},
        "transport": make_transport(kind),
        "timeout": httpx.Timeout(30.0, connect=5.0),
        **more,
    }


async def exchange(api: httpx.AsyncClient) -> list[RawResponse]:
    """A poll and a create, as the providers send them."""
    return [
        await send(api, "GET", "async-result/t-1"),
        await send(api, "POST", "videos/generations", json_body={"prompt": "一只猫", "n": 1.5}),
    ]


@pytest.fixture
def httpx_sends(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The requests that went through ``httpx.AsyncClient.send``."""
    seen: list[str] = []
    real = httpx.AsyncClient.send

    async def counting(self: httpx.AsyncClient, request: httpx.Request, **kw: Any) -> httpx.Response:
        seen.append(request.method)
        return await real(self, request, **kw)

    monkeypatch.setattr(httpx.AsyncClient, "send", counting)
    return seen


@pytest.fixture
def streamed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The requests that ``wire.send`` read through ``Client.stream`` (not ``read_small``)."""
    seen: list[str] = []
    real = Client.stream

    def counting(self: Client, method: str, *args: Any, **kw: Any) -> Any:
        seen.append(method)
        return real(self, method, *args, **kw)

    monkeypatch.setattr(Client, "stream", counting)
    return seen


GZIPPED = gzip.compress(ANSWER)
ANSWERS = {
    "gzip": b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s"
    % (len(GZIPPED), GZIPPED),
    "429": b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 3\r\nContent-Length: 2\r\n\r\n{}",
    "two Retry-After": b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 3\r\nRetry-After: 5\r\n"
    b"Content-Length: 2\r\n\r\n{}",
    "no reason": b"HTTP/1.1 503 \r\nContent-Length: 0\r\n\r\n",
    "declared too large": b"HTTP/1.1 200 OK\r\nContent-Length: 65\r\n\r\n" + b"x" * 65,
    "chunked too large": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"28\r\n" + b"y" * 40 + b"\r\n28\r\n" + b"z" * 40 + b"\r\n0\r\n\r\n",
    "chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"28\r\n" + b"y" * 40 + b"\r\n0\r\n\r\n",
}


async def test_plain_requests_are_httpx_clients_to_the_byte(
    kind: str, httpx_sends: list[str], streamed: list[str]
) -> None:
    """A poll and a create through Client leave as the same bytes as through httpx's client,
    get the same answers, and skip httpx's send (and on aiohttp, httpx's response)."""
    theirs: list[bytes] = []
    ours: list[bytes] = []
    async with recording_server(theirs) as base, httpx.AsyncClient(**options(kind, base)) as api:
        expected = await exchange(api)
    assert httpx_sends == ["GET", "POST"]
    async with recording_server(ours) as base, Client(**options(kind, base)) as api:
        answers = await exchange(api)
    assert httpx_sends == ["GET", "POST"]  # none more
    assert [PORT.sub(b"PORT", r) for r in ours] == [PORT.sub(b"PORT", r) for r in theirs]
    assert answers == expected
    assert answers[0].body == ANSWER and answers[0].status == 200
    assert streamed == ([] if kind == "aiohttp" else ["GET", "POST"])


async def several(api: httpx.AsyncClient) -> list[RawResponse]:
    """Polls and creates of several lengths, each shape sent more than once."""
    return [
        await send(api, "GET", "async-result/t-1"),
        await send(api, "POST", "videos/generations", json_body={"prompt": "一只猫", "n": 1.5}),
        await send(api, "GET", "async-result/task-two"),
        await send(api, "POST", "videos/generations", json_body={"prompt": "a much longer prompt " * 9}),
        await send(api, "POST", "videos/generations", json_body={"prompt": "", "request_id": "r-3"}),
        await send(api, "GET", "async-result/t-1"),
    ]


@pytest.mark.parametrize("own", [{}, {"Content-Type": "application/json; charset=utf-8"}, {"Host": "example.test"}])
async def test_plain_requests_after_the_first_of_their_shape_are_httpx_clients_to_the_byte(
    kind: str, own: dict[str, str]
) -> None:
    """Requests of a shape already sent (``Client._outgoing`` reuses its header items with the
    body's length put in) leave as the same bytes as through httpx's client, creates of other
    lengths included; so do those of a client sending its own Host or Content-Type."""
    theirs: list[bytes] = []
    ours: list[bytes] = []
    headers = {"Authorization": f"Bearer {KEY}", **own}
    async with recording_server(theirs) as base, httpx.AsyncClient(**options(kind, base, headers=headers)) as api:
        expected = await several(api)
    async with recording_server(ours) as base, Client(**options(kind, base, headers=headers)) as api:
        answers = await several(api)
    assert len(ours) == 6
    assert [PORT.sub(b"PORT", r) for r in ours] == [PORT.sub(b"PORT", r) for r in theirs]
    assert answers == expected


async def with_headers_changing(api: httpx.AsyncClient) -> list[RawResponse]:
    """A poll and a create, then again after a header is added to the client, then again
    after its Authorization is replaced and the added header removed."""
    answers = await exchange(api)
    api.headers["X-Attempt"] = "2"
    answers += await exchange(api)
    api.headers["Authorization"] = f"Bearer {KEY}-renewed"
    del api.headers["X-Attempt"]
    return answers + await exchange(api)


async def test_plain_requests_carry_the_clients_headers_as_they_are_when_sent(kind: str) -> None:
    """A client whose headers change between requests of one shape (a header added, the
    Authorization replaced) sends the headers it has at each request, as httpx's client does:
    the header items ``Client._outgoing`` kept for the shape are not reused for other headers."""
    theirs: list[bytes] = []
    ours: list[bytes] = []
    async with recording_server(theirs) as base, httpx.AsyncClient(**options(kind, base)) as api:
        expected = await with_headers_changing(api)
    async with recording_server(ours) as base, Client(**options(kind, base)) as api:
        answers = await with_headers_changing(api)
    assert len(ours) == 6
    assert [PORT.sub(b"PORT", r) for r in ours] == [PORT.sub(b"PORT", r) for r in theirs]
    assert b"x-attempt: 2" in ours[2].lower() and f"{KEY}-renewed".encode() in ours[5]
    assert answers == expected


async def test_plain_requests_to_two_hosts_and_posts_with_and_without_a_body_are_httpx_clients(
    kind: str,
) -> None:
    """One client's requests to two hosts (each its own Host header) and POSTs without a body
    then with one leave as the same bytes, ports and all, as
    through httpx's client: a shape's kept header items serve only its own host and body."""
    first: list[bytes] = []
    second: list[bytes] = []

    async def mixed(api: httpx.AsyncClient, other: str) -> list[RawResponse]:
        return [
            await send(api, "POST", "videos/generations"),
            await send(api, "POST", "videos/generations", json_body={"prompt": "a cat"}),
            await send(api, "GET", f"{other}/api/v4/async-result/t-1"),
            await send(api, "GET", "async-result/t-1"),
            await send(api, "POST", f"{other}/api/v4/videos/generations", json_body={"prompt": "a dog"}),
        ]

    async with recording_server(first) as base, recording_server(second) as other:
        async with httpx.AsyncClient(**options(kind, base)) as api:
            expected = await mixed(api, other)
        theirs = (first[:], second[:])
        first.clear()
        second.clear()
        async with Client(**options(kind, base)) as api:
            answers = await mixed(api, other)
    assert (first, second) == theirs
    assert len(first) == 3 and len(second) == 2
    assert answers == expected


@pytest.mark.parametrize("answer", ANSWERS)
async def test_answers_are_read_as_through_httpx(
    kind: str, answer: str, streamed: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A compressed answer, a 429 with Retry-After, a status without a reason and bodies past
    the size limit (declared or not) read the same through Client as through httpx's client."""
    monkeypatch.setattr(wire, "MAX_RESPONSE_BYTES", 64)
    got = []
    for cls in (httpx.AsyncClient, Client):
        async with recording_server([], whole=ANSWERS[answer]) as base, cls(**options(kind, base)) as api:
            got.append(await exchange(api))
    assert got[1] == got[0]
    assert streamed == ([] if kind == "aiohttp" else ["GET", "POST"])
    if answer == "gzip":
        assert got[1][0].body == ANSWER
    if answer.endswith("too large"):
        assert got[1][0].too_large


async def test_cookies_go_through_httpx(kind: str, httpx_sends: list[str]) -> None:
    """A cookie the server set is sent back: once the jar holds one, requests go through
    httpx's client, which adds it."""
    seen: list[bytes] = []
    cookie = b"Set-Cookie: session=abc; Path=/\r\n"
    async with recording_server(seen, cookie) as base, Client(**options(kind, base)) as api:
        await exchange(api)
    assert httpx_sends == ["POST"]
    assert b"cookie: session=abc" not in seen[0].lower()
    assert b"cookie: session=abc" in seen[1].lower()


async def test_hooks_go_through_httpx(kind: str, httpx_sends: list[str]) -> None:
    """A client with event hooks sends through httpx's client, and its hooks run."""
    hooked: list[str] = []

    async def hook(request: httpx.Request) -> None:
        hooked.append(request.method)

    seen: list[bytes] = []
    async with recording_server(seen) as base, Client(**options(kind, base, event_hooks={"request": [hook]})) as api:
        await exchange(api)
    assert hooked == ["GET", "POST"]
    assert httpx_sends == ["GET", "POST"]


@asynccontextmanager
async def routed_server(routes: dict[bytes, bytes], seen: list[bytes]) -> AsyncIterator[str]:
    """A loopback HTTP/1.1 server answering each request with ``routes[path]`` (``{port}`` in
    it: the port of the server named by ``routes[b"other"]``, if any), noting each request's
    head (and a chunked body) in ``seen``; a route whose answer declares more body than it has hangs up after it."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    base = f"http://127.0.0.1:{listener.extra(anyio.abc.SocketAttribute.local_port)}"

    async def serve(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            data = b""
            try:
                while True:
                    while b"\r\n\r\n" not in data:
                        data += await stream.receive()
                    head, _, data = data.partition(b"\r\n\r\n")
                    if b"transfer-encoding: chunked" in head.lower():  # a 307's empty body
                        while b"0\r\n\r\n" not in data:
                            data += await stream.receive()
                        body, _, data = data.partition(b"0\r\n\r\n")
                        head += b"\r\n\r\n" + body + b"0"
                    seen.append(head)
                    answer = routes[head.split(b" ")[1]]
                    await stream.send(answer)
                    if b"hang up" in answer:
                        return
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, serve)
        yield base
        tg.cancel_scope.cancel()


def redirect(status: int, location: str) -> bytes:
    return b"HTTP/1.1 %d Moved\r\nLocation: %s\r\nContent-Length: 2\r\n\r\n{}" % (status, location.encode())


FILE = b"HTTP/1.1 200 OK\r\nContent-Type: video/mp4\r\nContent-Length: 6\r\n\r\nvideo!"


async def fetch(files: httpx.AsyncClient, url: str) -> tuple[int, bytes, str, list[tuple[int, str]]]:
    """A download as ``download.fetch`` makes it: status, body, final URL, the redirects."""
    async with files.stream("GET", httpx.URL(url)) as response:
        body = b"".join([chunk async for chunk in response.aiter_bytes()])
    return response.status_code, body, str(response.url), [(r.status_code, str(r.url)) for r in response.history]


async def test_redirects_are_followed_as_by_httpx(kind: str, httpx_sends: list[str]) -> None:
    """A client following redirects sends a file request straight to its transport, and a
    redirect chain (to another origin too, whose hop loses the Authorization header) is
    followed as httpx's client follows it: the same requests on the wire, the same answer and
    history; without redirects, httpx's client's send is not used at all."""
    got = []
    for cls in (httpx.AsyncClient, Client):
        seen: list[bytes] = []
        async with routed_server({b"/c": FILE}, seen) as other:
            routes = {
                b"/file": FILE,
                b"/a": redirect(302, "/b"),
                b"/b": redirect(307, other + "/c"),
            }
            async with (
                routed_server(routes, seen) as base,
                cls(**options(kind, base, follow_redirects=True, max_redirects=5)) as files,
            ):
                answers = [await fetch(files, base + "/file"), await fetch(files, base + "/a")]
            got.append(([PORT.sub(b"PORT", r) for r in seen], [tuple(PORT.sub(b"PORT", str(x).encode()) for x in a) for a in answers]))
    assert got[1] == got[0]
    assert httpx_sends == ["GET", "GET"]  # httpx's client's own two
    requests, answers = got[1]
    assert len(requests) == 4 and b"authorization" not in requests[3].lower()
    assert b"authorization" in requests[2].lower()
    assert answers[1][0] == b"200" and answers[1][1] == b"b'video!'"


async def test_too_many_redirects_fail_as_through_httpx(kind: str) -> None:
    """A chain longer than ``max_redirects`` fails as through httpx's client, after the same
    requests."""
    got = []
    for cls in (httpx.AsyncClient, Client):
        seen: list[bytes] = []
        routes = {b"/a": redirect(301, "/b"), b"/b": redirect(308, "/c"), b"/c": FILE}
        async with (
            routed_server(routes, seen) as base,
            cls(**options(kind, base, follow_redirects=True, max_redirects=1)) as files,
        ):
            with pytest.raises(httpx.TooManyRedirects) as caught:
                await fetch(files, base + "/a")
        got.append(([PORT.sub(b"PORT", r) for r in seen], str(caught.value), caught.value.request.url.path))
    assert got[1] == got[0]
    assert len(got[1][0]) == 2


BODIES = {
    "chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nvid\r\n3\r\neo!\r\n0\r\n\r\n",
    "gzip": b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s"
    % (len(gzip.compress(b"video!")), gzip.compress(b"video!")),
    "cut short": b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nvideo! then hang up",
    "not found": b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
}


@pytest.mark.parametrize("answer", BODIES)
async def test_file_bodies_read_as_through_httpx(kind: str, answer: str) -> None:
    """A file's body read through Client (straight from aiohttp on its transport) is what
    httpx's client reads: chunked, compressed, a status without a body, and a body cut short
    failing with the same error and message."""
    got = []
    for cls in (httpx.AsyncClient, Client):
        async with (
            routed_server({b"/f": BODIES[answer]}, []) as base,
            cls(**options(kind, base, follow_redirects=True)) as files,
        ):
            try:
                got.append(await fetch(files, base + "/f"))
            except httpx.TransportError as exc:
                got.append((type(exc), str(exc)))
    got = [tuple(TEXT_PORT.sub("PORT", x) if isinstance(x, str) else x for x in g) for g in got]
    assert got[1] == got[0]
    if answer == "cut short":
        assert issubclass(got[1][0], httpx.TransportError)  # type: ignore[arg-type]
    else:
        assert got[1][1] == (b"" if answer == "not found" else b"video!")


async def test_errors_are_httpx_clients(kind: str) -> None:
    """A refused connection and a connection closed after the request fail as through httpx's
    client: the same classes, the request attached, the same reach for the runner."""

    async def hang_up(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            await stream.receive()

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    closing = f"http://127.0.0.1:{listener.extra(anyio.abc.SocketAttribute.local_port)}"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        refused = f"http://127.0.0.1:{sock.getsockname()[1]}"
    outcomes: dict[type, list[tuple[type, str, bool]]] = {}
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, hang_up)
        for cls in (httpx.AsyncClient, Client):
            for base in (refused, closing):
                async with cls(**options(kind, base)) as api:
                    url = endpoint(api.base_url, "async-result/t-1")
                    with pytest.raises(httpx.TransportError) as raw_error:
                        async with api.stream("GET", url):
                            pass
                    with pytest.raises(TransientError) as caught:
                        await send(api, "GET", "async-result/t-1")
                assert raw_error.value.request.url == url
                assert KEY not in str(caught.value) and KEY not in repr(caught.value.__cause__)
                outcomes.setdefault(cls, []).append(
                    (type(raw_error.value), caught.value.reach, caught.value.__cause__.__class__ is type(raw_error.value))
                )
        tg.cancel_scope.cancel()
    assert outcomes[Client] == outcomes[httpx.AsyncClient]
    assert [reach for _, reach, _ in outcomes[Client]] == ["not_sent", "maybe_delivered"]


async def read_through(api: Client, how: str, path: str) -> None:
    """An answer read as ``wire.send`` reads it, or streamed as a download is."""
    if how == "send":
        await send(api, "GET", path)
        return
    follows = Client(transport=api._direct, timeout=api.timeout, follow_redirects=True)
    async with follows.stream("GET", endpoint(api.base_url, path)) as response:
        async for _ in response.aiter_bytes():
            pass


@pytest.mark.parametrize("how", ["send", "stream"])
@pytest.mark.parametrize("cut", ["head", "body"])
async def test_cancelling_a_read_closes_the_connection(kind: str, cut: str, how: str) -> None:
    """A wire.send, or a download's stream on a client following redirects, cancelled while
    waiting for the answer, or mid-body, closes its connection (the server sees EOF) and gives
    its place in the connection bound back."""
    closed = anyio.Event()

    async def serve(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            data = b""
            while b"\r\n\r\n" not in data:
                data += await stream.receive()
            if cut == "body":
                await stream.send(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\nfirst")
            try:
                while True:
                    await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                closed.set()

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    base = f"http://127.0.0.1:{listener.extra(anyio.abc.SocketAttribute.local_port)}"
    limits = httpx.Limits(max_connections=1)
    async with listener, anyio.create_task_group() as server:
        server.start_soon(listener.serve, serve)
        async with Client(**options(kind, base, transport=make_transport(kind, limits=limits))) as api:
            with anyio.move_on_after(0.3):
                await read_through(api, how, "async-result/t-1")
            with anyio.fail_after(5):
                await closed.wait()
                closed = anyio.Event()
                with anyio.move_on_after(0.3):  # the one connection's place is free again
                    await read_through(api, how, "async-result/t-2")
                await closed.wait()
        server.cancel_scope.cancel()


async def test_without_httpx_private_routing(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Client sends plain requests to the transport it was given, not through httpx's private
    ``_transport_for_url`` (an httpx release may rename it)."""
    monkeypatch.delattr(httpx.AsyncClient, "_transport_for_url")
    seen: list[bytes] = []
    async with recording_server(seen) as base, Client(**options(kind, base)) as api:
        answers = await exchange(api)
    assert [a.status for a in answers] == [200, 200] and len(seen) == 2


async def test_without_httpx_redirect_steps_downloads_go_through_httpx(
    kind: str, monkeypatch: pytest.MonkeyPatch, httpx_sends: list[str]
) -> None:
    """Without httpx's two redirect steps (an httpx release may rename them), a client
    following redirects sends through httpx's client, and a redirect is still followed."""
    assert redirects.follows_as_httpx()
    with monkeypatch.context() as patch:  # httpx's client needs the step back to follow
        patch.delattr(httpx.AsyncClient, "_send_handling_redirects")
        assert not redirects.follows_as_httpx()
    monkeypatch.setattr(redirects, "FOLLOWS", False)  # as found without the step
    routes = {b"/a": redirect(302, "/f"), b"/f": FILE}
    async with (
        routed_server(routes, []) as base,
        Client(**options(kind, base, follow_redirects=True)) as files,
    ):
        answer = await fetch(files, base + "/a")
    assert answer[:2] == (200, b"video!") and [status for status, _ in answer[3]] == [302]
    assert httpx_sends == ["GET"]


async def test_a_client_building_its_transport_is_httpxs(kind: str, httpx_sends: list[str]) -> None:
    """A Client given no transport (``--transport httpx``: httpx builds it, with any proxy
    from the environment) sends every request through httpx's client, a download on a client
    following redirects included."""
    async with recording_server([]) as base, Client(**{**options(kind, base), "transport": None}) as api:
        await exchange(api)
    assert httpx_sends == ["GET", "POST"]
    routes = {b"/a": redirect(302, "/f"), b"/f": FILE}
    async with (
        routed_server(routes, []) as base,
        Client(**{**options(kind, base), "transport": None, "follow_redirects": True}) as files,
    ):
        answer = await fetch(files, base + "/a")
    assert answer[:2] == (200, b"video!") and [status for status, _ in answer[3]] == [302]
    assert httpx_sends == ["GET", "POST", "GET"]


SLOT_ROUTES = {
    b"/f": FILE,
    b"/a": redirect(302, "/f"),
    b"/loop": redirect(302, "/loop"),
    b"/bad": redirect(302, "http://[bad"),
    b"/cut": b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nvideo! then hang up",
    b"/stall": b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nvid",
    b"/to-stall": redirect(307, "/stall"),
}


async def test_downloads_give_their_connection_place_back_once(kind: str) -> None:
    """Downloads on a client following redirects, ended every way (read, redirected, too many
    redirects, a bad redirect, cut short, cancelled at the head or mid-body), leave the
    connection bound as it was: with ``max_connections=1``, one open download still makes the
    next wait past its pool timeout (a place given back twice would let it through), and once
    closed, the next goes."""
    limits = httpx.Limits(max_connections=1)
    timeout = httpx.Timeout(5.0, pool=0.3)
    async with (
        routed_server(SLOT_ROUTES, []) as base,
        Client(**options(kind, base, transport=make_transport(kind, limits=limits), timeout=timeout,
                         follow_redirects=True, max_redirects=2)) as files,
    ):
        for path in SLOT_ROUTES:
            for cancel in ("no", "head", "body"):
                with anyio.move_on_after(0.5) as scope, contextlib.suppress(httpx.HTTPError):
                    async with files.stream("GET", httpx.URL(base + path.decode())) as response:
                        if cancel == "head":
                            scope.cancel()
                            await anyio.sleep(0)
                        async for _ in response.aiter_bytes():
                            if cancel == "body":
                                scope.cancel()
                                await anyio.sleep(0)
        async with files.stream("GET", httpx.URL(base + "/stall")):
            with pytest.raises(httpx.PoolTimeout):
                await fetch(files, base + "/f")
        assert (await fetch(files, base + "/a"))[:2] == (200, b"video!")


async def test_a_closed_client_refuses_as_httpxs(kind: str) -> None:
    """A closed Client refuses to send, as httpx's client does (nothing is sent, and no new
    aiohttp session is opened behind the closed one)."""
    seen: list[bytes] = []
    async with recording_server(seen) as base:
        for cls in (httpx.AsyncClient, Client):
            async with cls(**options(kind, base)) as api:
                pass
            with pytest.raises(RuntimeError, match="client has been closed"):
                await send(api, "GET", "async-result/t-1")
    assert seen == []


async def test_user_info_in_the_url_is_httpxs(kind: str) -> None:
    """A base URL with user info gets what httpx's client makes of it (Basic auth over the
    key on httpx's transport, aiohttp's refusal on aiohttp's), through Client too."""
    got: list[Any] = []
    for cls in (httpx.AsyncClient, Client):
        seen: list[bytes] = []
        async with recording_server(seen) as base:
            userinfo = base.replace("http://", "http://user:pw@")
            async with cls(**options(kind, userinfo)) as api:
                try:
                    await send(api, "GET", "async-result/t-1")
                except ValueError as exc:
                    seen.append(str(exc).encode())
        got.append([PORT.sub(b"PORT", r) for r in seen])
    assert got[1] == got[0]


async def test_a_redirect_to_no_url_fails_as_through_httpx(kind: str) -> None:
    """A 3xx whose Location is not a URL fails the request as httpx's client fails it (a
    protocol error: may have been delivered), not read as an answer."""
    whole = b"HTTP/1.1 302 Found\r\nLocation: http://a:x/\r\nContent-Length: 2\r\n\r\n{}"
    got = []
    for cls in (httpx.AsyncClient, Client):
        async with recording_server([], whole=whole) as base, cls(**options(kind, base)) as api:
            with pytest.raises(TransientError) as caught:
                await send(api, "POST", "videos/generations", json_body={"prompt": "p"})
        got.append((str(caught.value), caught.value.reach))
    assert got[1] == got[0]
    assert "Invalid URL in location header" in got[1][0]


async def test_a_read_timeout_reads_as_through_httpx(kind: str) -> None:
    """An answer that never comes fails with the same error and message through Client as
    through httpx's client."""

    async def silent(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            await stream.receive()
            await anyio.sleep_forever()

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    base = f"http://127.0.0.1:{listener.extra(anyio.abc.SocketAttribute.local_port)}"
    got = []
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, silent)
        for cls in (httpx.AsyncClient, Client):
            async with cls(**options(kind, base, timeout=httpx.Timeout(0.2))) as api:
                with pytest.raises(TransientError) as caught:
                    await send(api, "GET", "async-result/t-1")
            got.append((str(caught.value), caught.value.reach, type(caught.value.__cause__)))
        tg.cancel_scope.cancel()
    assert got[1] == got[0]
    assert got[1][2] is httpx.ReadTimeout


_REAL_INNER = httpx_aiohttp.AiohttpTransport


class _Wrapped(httpx.AsyncBaseTransport):
    """httpx-aiohttp's transport without its ``client`` and ``get_client`` (a release that
    keeps aiohttp's session elsewhere)."""

    def __init__(self, **options: Any) -> None:
        self._real = _REAL_INNER(**options)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self._real.handle_async_request(request)

    async def aclose(self) -> None:
        await self._real.aclose()


async def test_an_httpx_aiohttp_without_its_session_falls_back(
    kind: str, monkeypatch: pytest.MonkeyPatch, streamed: list[str]
) -> None:
    """If httpx-aiohttp no longer keeps aiohttp's session in ``client``, wire.send reads
    answers through Client.stream instead (same answers), not an AttributeError per request."""
    monkeypatch.setattr(httpx_aiohttp, "AiohttpTransport", _Wrapped)
    seen: list[bytes] = []
    async with recording_server(seen) as base, Client(**options(kind, base)) as api:
        answers = await exchange(api)
    assert [a.body for a in answers] == [ANSWER, ANSWER]
    assert streamed == ["GET", "POST"]
