"""Both transports keep what the client relies on: streaming, timeouts, redirects, cancellation,
httpx's error classes (told apart by whether the request left), and no header in any message.

Every test runs on ``aiohttp`` and ``httpx``, against a scripted HTTP/1.1 server on a loopback
socket (real sockets, so real timeouts and resets) or the simulator served over TCP.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio
import anyio.abc
import httpx
import pytest

from batchvid.providers.wire import NOT_SENT
from batchvid.simulator import BIGMODEL_PREFIX, SimulatorConfig, running_simulator
from batchvid.transport import TRANSPORTS, backend_options, make_transport

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("kind", TRANSPORTS)]

SECRET = "sk-transport-secret-4f9a"
AMBIGUOUS_SEND = (
    httpx.ReadError,
    httpx.ReadTimeout,
    httpx.WriteError,
    httpx.WriteTimeout,
    httpx.RemoteProtocolError,
)
"""Failures after the request may have left: ``providers.wire.send`` says ``maybe_delivered``."""
Handler = Callable[[anyio.abc.SocketStream, str], Awaitable[None]]


async def read_request(stream: anyio.abc.SocketStream) -> str:
    """The request line and headers (bodies are small and read with them or ignored)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += await stream.receive()
    return data.partition(b"\r\n\r\n")[0].decode("latin-1")


async def wait_for_eof(stream: anyio.abc.SocketStream) -> None:
    """Return once the client has closed its side of the connection."""
    try:
        while True:
            await stream.receive()
    except (anyio.EndOfStream, anyio.BrokenResourceError):
        return


@asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[str]:
    """A loopback server calling ``handler(stream, base_url)`` for each connection."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    base = f"http://127.0.0.1:{listener.extra(anyio.abc.SocketAttribute.local_port)}"

    async def serve(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            await handler(stream, base)

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, serve)
        yield base
        tg.cancel_scope.cancel()


def client(kind: str, **kw: object) -> httpx.AsyncClient:
    limits = kw.pop("limits", httpx.Limits(max_connections=10))
    return httpx.AsyncClient(transport=make_transport(kind, limits=limits), **kw)  # type: ignore[arg-type]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def chain(exc: BaseException | None) -> list[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


# --- streaming ---------------------------------------------------------------------------------


async def test_body_streams_before_it_is_complete(kind: str) -> None:
    """aiter_bytes yields the first chunk while the server still holds back the rest."""
    first_seen = anyio.Event()
    size = 4 << 20

    async def handler(stream: anyio.abc.SocketStream, base: str) -> None:
        await read_request(stream)
        await stream.send(f"HTTP/1.1 200 OK\r\ncontent-length: {2 * size}\r\n\r\n".encode())
        await stream.send(b"a" * size)
        await first_seen.wait()  # a client that buffered the whole body would never get here
        await stream.send(b"b" * size)

    received = chunks = 0
    with anyio.fail_after(20):
        async with (
            raw_server(handler) as base,
            client(kind) as http,
            http.stream("GET", f"{base}/big") as response,
        ):
            async for chunk in response.aiter_bytes():
                first_seen.set()
                received += len(chunk)
                chunks += 1
    assert received == 2 * size
    assert chunks > 2


async def test_simulator_create_poll_download_over_tcp(kind: str) -> None:
    """Create, poll and stream a video from the simulator over TCP with the key as a header."""
    with running_simulator(SimulatorConfig(download_bytes=3 << 20)) as sim:
        async with client(kind, base_url=sim.base_url + BIGMODEL_PREFIX,
                          headers={"Authorization": f"Bearer {SECRET}"}) as api:
            body = {"model": "cogvideox-2", "prompt": "a cat", "request_id": f"t-{kind}"}
            created = await api.post("/videos/generations", json=body)
            result = (await api.get(f"/async-result/{created.json()['id']}")).json()
            size = 0
            async with api.stream("GET", result["video_result"][0]["url"]) as response:
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
    assert created.status_code == 200
    assert result["task_status"] == "SUCCESS"
    assert size == 3 << 20


async def test_large_body_is_sent_whole_with_its_length(kind: str) -> None:
    """A 3 MiB body (an inline image) arrives whole, with Content-Length, not chunked."""

    async def handler(stream: anyio.abc.SocketStream, base: str) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            data += await stream.receive()
        head, _, body = data.partition(b"\r\n\r\n")
        fields = dict(
            (k.strip().lower(), v.strip()) for k, _, v in
            (line.partition(":") for line in head.decode("latin-1").split("\r\n")[1:])
        )
        length = int(fields["content-length"])
        while len(body) < length:
            body += await stream.receive()
        reply = f"{len(body)} {'transfer-encoding' in fields} {body == payload}".encode()
        await stream.send(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(reply), reply))

    payload = bytes(range(256)) * (3 << 12)
    async with raw_server(handler) as base, client(kind) as http:
        response = await http.post(f"{base}/create", content=payload)
    assert response.text == f"{len(payload)} False True"


# --- errors before the request left: nothing can have been created -----------------------------


async def test_refused_connection_is_connect_error(kind: str) -> None:
    """A refused connection raises httpx.ConnectError, one of the runner's NOT_SENT errors."""
    async with client(kind) as http:
        with pytest.raises(httpx.ConnectError) as caught:
            await http.get(f"http://127.0.0.1:{free_port()}/x")
    assert isinstance(caught.value, NOT_SENT)


async def test_connect_timeout(kind: str) -> None:
    """A listener whose accept queue is full never completes the handshake: ConnectTimeout."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    fillers = []
    try:
        for _ in range(4):  # fill the accept queue; later SYNs are dropped
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(server.getsockname())
            fillers.append(filler)
        await anyio.sleep(0.1)
        url = f"http://127.0.0.1:{server.getsockname()[1]}/"
        async with client(kind, timeout=httpx.Timeout(5.0, connect=0.3)) as http:
            with pytest.raises(httpx.ConnectTimeout) as caught:
                await http.get(url)
        assert isinstance(caught.value, NOT_SENT)
    finally:
        for filler in fillers:
            filler.close()
        server.close()


async def test_pool_timeout(kind: str) -> None:
    """With every connection busy, waiting longer than the pool timeout raises PoolTimeout."""

    async def handler(stream: anyio.abc.SocketStream, base: str) -> None:
        await read_request(stream)
        await stream.send(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")
        await wait_for_eof(stream)

    timeout = httpx.Timeout(5.0, pool=0.2)
    async with (
        raw_server(handler) as base,
        client(kind, limits=httpx.Limits(max_connections=1), timeout=timeout) as http,
        http.stream("GET", f"{base}/held"),
    ):
        with pytest.raises(httpx.PoolTimeout) as caught:
            await http.get(f"{base}/second")
    assert isinstance(caught.value, NOT_SENT)


async def test_body_the_server_does_not_take_times_out(kind: str) -> None:
    """A request body the server never reads raises a write or read timeout instead of
    hanging (aiohttp streams a large body while it waits for the answer, so its read timer
    fires first), never a "not sent" error."""

    async def handler(stream: anyio.abc.SocketStream, base: str) -> None:
        await anyio.sleep_forever()

    timeout = httpx.Timeout(5.0, connect=0.2, write=0.3, read=0.3)
    with anyio.fail_after(10):
        async with raw_server(handler) as base, client(kind, timeout=timeout) as http:
            with pytest.raises((httpx.WriteTimeout, httpx.ReadTimeout)) as caught:
                await http.post(f"{base}/create", content=b"x" * (64 << 20))
    assert not isinstance(caught.value, NOT_SENT)


# --- errors after the request left: the server may have acted on it ---------------------------


async def test_read_timeout_waiting_for_the_answer(kind: str) -> None:
    """A server that reads the request and never answers raises ReadTimeout."""

    async def handler(stream: anyio.abc.SocketStream, base: str) -> None:
        await read_request(stream)
        await wait_for_eof(stream)

    async with raw_server(handler) as base, client(kind, timeout=httpx.Timeout(5.0, read=0.3)) as http:
        with pytest.raises(httpx.ReadTimeout) as caught:
            await http.post(f"{base}/create", json={"a": 1})
    assert (isinstance(caught.value, httpx.TransportError) and not isinstance(caught.value, NOT_SENT))


async def test_read_timeout_mid_body(kind: str) -> None:
    """A body that stops arriving raises ReadTimeout from aiter_bytes."""

    async def handler(stream: anyio.abc.SocketStream, base: str) -> None:
        await read_request(stream)
        await stream.send(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nhalf")
        await wait_for_eof(stream)

    async with raw_server(handler) as base, client(kind, timeout=httpx.Timeout(5.0, read=0.3)) as http:
        with pytest.raises(httpx.ReadTimeout):
            async with http.stream("GET", f"{base}/stall") as response:
                async for _ in response.aiter_bytes():
                    pass


async def test_server_closing_without_an_answer_is_ambiguous(kind: str) -> None:
    """A connection closed after the request arrived raises RemoteProtocolError, not a
    "not sent" error: a create may have been acted on and must not be sent again blindly."""

    async def handler(stream: anyio.abc.SocketStream, base: str) -> None:
        await read_request(stream)

    async with raw_server(handler) as base, client(kind) as http:
        with pytest.raises(httpx.RemoteProtocolError) as caught:
            await http.post(f"{base}/create", json={"a": 1})
    assert (isinstance(caught.value, httpx.TransportError) and not isinstance(caught.value, NOT_SENT))
    assert not isinstance(caught.value, NOT_SENT)


async def test_body_cut_short_is_remote_protocol_error(kind: str) -> None:
    """A body closed before its Content-Length raises RemoteProtocolError."""

    async def handler(stream: anyio.abc.SocketStream, base: str) -> None:
        await read_request(stream)
        await stream.send(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n" + b"x" * 100)

    async with raw_server(handler) as base, client(kind) as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await http.get(f"{base}/short")


async def test_reset_mid_body_is_a_read_error(kind: str) -> None:
    """A TCP reset mid-body raises ReadError or RemoteProtocolError (both: may have arrived)."""

    async def handler(stream: anyio.abc.SocketStream, base: str) -> None:
        await read_request(stream)
        await stream.send(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n" + b"x" * 100)
        await anyio.sleep(0.05)
        raw = stream.extra(anyio.abc.SocketAttribute.raw_socket)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    async with raw_server(handler) as base, client(kind) as http:
        with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)) as caught:
            async with http.stream("GET", f"{base}/reset") as response:
                async for _ in response.aiter_bytes():
                    pass
    assert (isinstance(caught.value, httpx.TransportError) and not isinstance(caught.value, NOT_SENT))


async def test_provider_send_classifies_both_failures_as_the_runner_expects(kind: str) -> None:
    """providers.base.send turns a refused connection into a network error that was not sent,
    and a connection closed after the request into one that may have been delivered."""
    from batchvid.errors import TransientError
    from batchvid.providers.base import send

    async def handler(stream: anyio.abc.SocketStream, base: str) -> None:
        await read_request(stream)

    causes = []
    reaches: list[str] = []
    async with raw_server(handler) as base:
        for url in (f"http://127.0.0.1:{free_port()}", base):
            async with client(kind, base_url=url) as http:
                with pytest.raises(TransientError) as caught:
                    await send(http, "POST", "/videos/generations", json_body={"prompt": "p"})
            causes.append(caught.value.__cause__)
            reaches.append(caught.value.reach)
    assert isinstance(causes[0], NOT_SENT)
    assert isinstance(causes[1], httpx.TransportError) and not isinstance(causes[1], NOT_SENT)
    assert reaches == ["not_sent", "maybe_delivered"]


# --- redirects (handled by httpx above the transport) ------------------------------------------


async def test_redirects_are_followed_up_to_the_limit(kind: str) -> None:
    """An endless redirect chain raises TooManyRedirects after max_redirects + 1 requests."""
    hits: list[str] = []

    async def handler(stream: anyio.abc.SocketStream, base: str) -> None:
        while True:
            try:
                line = (await read_request(stream)).split("\r\n")[0]
            except anyio.EndOfStream:
                return
            hits.append(line)
            n = len(hits)
            await stream.send(f"HTTP/1.1 302 Found\r\nlocation: /r{n}\r\ncontent-length: 0\r\n\r\n".encode())

    async with raw_server(handler) as base, client(kind, follow_redirects=True, max_redirects=3) as http:
        with pytest.raises(httpx.TooManyRedirects):
            await http.get(f"{base}/start")
    assert len(hits) == 4


async def test_redirect_is_followed_to_the_body(kind: str) -> None:
    """One redirect is followed: the final body arrives and the history holds the 302."""

    async def handler(stream: anyio.abc.SocketStream, base: str) -> None:
        while True:
            try:
                path = (await read_request(stream)).split(" ")[1]
            except anyio.EndOfStream:
                return
            if path == "/old":
                await stream.send(b"HTTP/1.1 302 Found\r\nlocation: /new\r\ncontent-length: 0\r\n\r\n")
            else:
                await stream.send(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nvideo")

    async with raw_server(handler) as base, client(kind, follow_redirects=True) as http:
        response = await http.get(f"{base}/old")
    assert response.content == b"video"
    assert [r.status_code for r in response.history] == [302]


async def test_a_redirected_request_carries_the_body_httpx_sends(kind: str) -> None:
    """A redirected GET goes with no body and no body headers (not chunked), and a POST
    redirected by a 307 repeats its body with its Content-Length, as httpx's transport sends
    them."""
    heads: list[str] = []
    bodies: list[bytes] = []

    async def handler(stream: anyio.abc.SocketStream, base: str) -> None:
        data = b""
        while True:
            try:
                while b"\r\n\r\n" not in data:
                    data += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return
            head, _, data = data.partition(b"\r\n\r\n")
            text = head.decode("latin-1").lower()
            heads.append(text)
            length = int(text.split("content-length: ")[1].split("\r\n")[0]) if "content-length: " in text else 0
            while len(data) < length:
                data += await stream.receive()
            bodies.append(data[:length])
            data = data[length:]
            path = text.split(" ")[1]
            if path in ("/get", "/post"):
                status = b"302 Found" if path == "/get" else b"307 Temporary Redirect"
                await stream.send(b"HTTP/1.1 %s\r\nlocation: /new\r\ncontent-length: 0\r\n\r\n" % status)
            else:
                await stream.send(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nvideo")

    async with raw_server(handler) as base, client(kind, follow_redirects=True) as http:
        assert (await http.get(f"{base}/get")).content == b"video"
        assert (await http.post(f"{base}/post", json={"a": 1})).content == b"video"
    redirected_get, redirected_post = heads[1], heads[3]
    assert not any(name in redirected_get for name in ("transfer-encoding", "content-type", "content-length"))
    assert bodies[1] == b""
    assert "transfer-encoding" not in redirected_post and "content-length: 7" in redirected_post
    assert bodies[3] == bodies[2] == b'{"a":1}'


async def test_redirect_to_a_non_http_url_is_unsupported_protocol(kind: str) -> None:
    """A redirect to ftp:// raises UnsupportedProtocol, as the runner expects."""

    async def handler(stream: anyio.abc.SocketStream, base: str) -> None:
        await read_request(stream)
        await stream.send(b"HTTP/1.1 302 Found\r\nlocation: ftp://example.invalid/v.mp4\r\ncontent-length: 0\r\n\r\n")

    async with raw_server(handler) as base, client(kind, follow_redirects=True) as http:
        with pytest.raises(httpx.UnsupportedProtocol):
            await http.get(f"{base}/v")


# --- cancellation ------------------------------------------------------------------------------


async def test_cancel_mid_body_closes_the_connection(kind: str) -> None:
    """Cancelling a task that is reading a body closes its connection (the server sees EOF)."""
    closed = anyio.Event()

    async def handler(stream: anyio.abc.SocketStream, base: str) -> None:
        await read_request(stream)
        await stream.send(b"HTTP/1.1 200 OK\r\ncontent-length: 1000000\r\n\r\nfirst")
        await wait_for_eof(stream)
        closed.set()

    async with raw_server(handler) as base, client(kind) as http:
        async with anyio.create_task_group() as tg:

            async def download() -> None:
                async with http.stream("GET", f"{base}/v") as response:
                    async for _ in response.aiter_bytes():
                        tg.cancel_scope.cancel()
                        await anyio.sleep_forever()

            tg.start_soon(download)
        with anyio.fail_after(5):
            await closed.wait()


async def test_cancel_while_waiting_for_the_answer_closes_the_connection(kind: str) -> None:
    """Cancelling a request the server has not answered closes its connection."""
    arrived, closed = anyio.Event(), anyio.Event()

    async def handler(stream: anyio.abc.SocketStream, base: str) -> None:
        await read_request(stream)
        arrived.set()
        await wait_for_eof(stream)
        closed.set()

    async with raw_server(handler) as base, client(kind) as http:
        async with anyio.create_task_group() as tg:
            tg.start_soon(http.get, f"{base}/slow")
            await arrived.wait()
            tg.cancel_scope.cancel()
        with anyio.fail_after(5):
            await closed.wait()


async def test_connection_is_reused_after_a_complete_body(kind: str) -> None:
    """Keep-alive works: two requests in a row use one connection."""
    connections = 0

    async def handler(stream: anyio.abc.SocketStream, base: str) -> None:
        nonlocal connections
        connections += 1
        while True:
            try:
                await read_request(stream)
            except anyio.EndOfStream:
                return
            await stream.send(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")

    async with raw_server(handler) as base, client(kind) as http:
        first = await http.get(f"{base}/a")
        second = await http.get(f"{base}/b")
    assert (first.text, second.text) == ("ok", "ok")
    assert connections == 1


async def test_a_closed_transport_serves_the_next_client(kind: str) -> None:
    """A transport shared by two clients keeps working after the first one closes it."""

    async def handler(stream: anyio.abc.SocketStream, base: str) -> None:
        await read_request(stream)
        await stream.send(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")

    transport = make_transport(kind)
    async with raw_server(handler) as base:
        async with httpx.AsyncClient(transport=transport) as first:
            assert (await first.get(f"{base}/a")).text == "ok"
        async with httpx.AsyncClient(transport=transport) as second:
            assert (await second.get(f"{base}/b")).text == "ok"


# --- the key -----------------------------------------------------------------------------------


async def test_error_messages_hold_no_header_value(kind: str) -> None:
    """Neither the httpx error nor anything it chains to shows the Authorization header."""

    async def handler(stream: anyio.abc.SocketStream, base: str) -> None:
        await read_request(stream)

    headers = {"Authorization": f"Bearer {SECRET}"}
    errors: list[BaseException] = []
    async with raw_server(handler) as base, client(kind, headers=headers) as http:
        for url in (f"{base}/create", f"http://127.0.0.1:{free_port()}/x"):
            try:
                await http.post(url, json={"prompt": "p"})
            except httpx.TransportError as exc:
                errors.append(exc)
    assert len(errors) == 2
    for error in errors:
        for link in chain(error):
            assert SECRET not in str(link)
            assert SECRET not in repr(link)


# --- the module's own choices ------------------------------------------------------------------


def test_unknown_transport_is_refused(kind: str) -> None:
    """make_transport names the choices when given an unknown kind."""
    with pytest.raises(ValueError, match="aiohttp, httpx"):
        make_transport(kind + "-nope")  # type: ignore[arg-type]


def test_uvloop_runs_when_asked_for(kind: str) -> None:
    """backend_options() runs anyio on uvloop (a dependency); use_uvloop=False on asyncio's."""
    import asyncio

    async def loop_module() -> str:
        return type(asyncio.get_running_loop()).__module__

    assert anyio.run(loop_module, backend_options=backend_options()).startswith("uvloop")
    assert anyio.run(loop_module, backend_options=backend_options(False)).startswith("asyncio")


def test_run_uses_the_chosen_transport_unless_a_proxy_is_set(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`run --transport aiohttp` gets the aiohttp transport; httpx's own (None: built by the
    client, which reads proxy variables) for `--transport httpx` or when a proxy is set."""
    import os

    from batchvid.cli import build_parser
    from batchvid.transport import AiohttpTransport, transport_for

    for name in [n for n in os.environ if n.lower().endswith("_proxy")]:
        monkeypatch.delenv(name)
    args = build_parser().parse_args(["run", "m.yaml", "--transport", kind, "--no-uvloop"])
    assert args.no_uvloop
    chosen = transport_for(args.transport)
    assert isinstance(chosen, AiohttpTransport) if kind == "aiohttp" else chosen is None
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    assert transport_for(args.transport) is None
