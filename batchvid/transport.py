"""The HTTP transport under batchvid's ``httpx.AsyncClient``s, and the event loop under them.

``make_transport("aiohttp")`` is httpx-aiohttp's ``AiohttpTransport`` (aiohttp's C-accelerated
HTTP/1.1 client behind the httpx API; the OpenAI SDK's aiohttp option uses the same package)
with a thin layer that keeps every promise the httpx transport makes to the code above it:

- errors are the httpx classes httpcore would raise for the same event, told apart by how far
  the request got: ``ConnectError``/``ConnectTimeout``/``PoolTimeout`` before it left (nothing
  can have been created), ``ReadError``/``ReadTimeout``/``RemoteProtocolError`` after (the
  server may have acted on it). httpx-aiohttp's own map turns every ``ClientConnectionError``,
  a server that closed after the request included, into ``ConnectTimeout``: "not sent", which
  would let a create be sent twice;
- a request body that the server does not take raises a timeout instead of hanging: aiohttp
  has no write timeout, so a body gets connect + write + read seconds in all (``WriteTimeout``;
  httpx allows ``write`` seconds without progress), and one above 1 MiB is streamed while
  aiohttp's read timer runs (``ReadTimeout``). Both say "may have arrived";
- ``limits.max_connections`` bounds the requests under way, and waiting for a free connection
  longer than the ``pool`` timeout raises ``PoolTimeout``;
- messages name the host, never a header value.

A response body is read in pieces of up to ``READ_SIZE`` (1 MiB: whatever aiohttp has buffered,
without waiting for more) instead of httpx-aiohttp's 16 KiB, which cut every socket read into
16 KiB copies and paid the per-chunk cost of every stream layer above 65,536 times per GiB.

Redirects, cookies, decoding and timeouts per request stay with httpx above the transport.
``make_transport("httpx")`` is httpx's own ``AsyncHTTPTransport``, the fallback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json as json_module
import logging
from collections.abc import AsyncIterator, Awaitable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import httpx

from batchvid import redirects
from batchvid.buffers import MMAP_THRESHOLD as MMAP_THRESHOLD
from batchvid.buffers import keep_freed_buffers as keep_freed_buffers
from batchvid.eventloop import backend_options as backend_options
from batchvid.settings import TransportKind
from batchvid.transport_errors import MAPPED as MAPPED

if TYPE_CHECKING:
    from batchvid.quickread import Small

T = TypeVar("T")

TRANSPORTS: tuple[TransportKind, ...] = ("aiohttp", "httpx")
DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)
"""httpx's own defaults, so both transports hold the same number of sockets."""


def make_transport(
    kind: TransportKind = "aiohttp", *, limits: httpx.Limits = DEFAULT_LIMITS
) -> httpx.AsyncBaseTransport:
    """A transport for ``httpx.AsyncClient(transport=...)``; share one between clients freely.

    Like any transport passed explicitly, it does not read proxy settings from the environment
    (``HTTPS_PROXY`` and friends): only ``httpx.AsyncClient(transport=None)`` does.
    """
    if kind == "httpx":
        return httpx.AsyncHTTPTransport(limits=limits)
    if kind == "aiohttp":
        return AiohttpTransport(limits=limits)
    raise ValueError(f"unknown transport {kind!r}: expected one of {', '.join(TRANSPORTS)}")


def transport_for(kind: TransportKind) -> httpx.AsyncBaseTransport | None:
    """What ``httpx.AsyncClient(transport=...)`` should get for ``--transport KIND``: None
    (httpx's own, built by the client) for ``httpx``, or when a proxy is set in the
    environment, since only a client without an explicit transport reads ``HTTPS_PROXY`` and
    friends; else the aiohttp transport."""
    import urllib.request

    if kind == "httpx" or urllib.request.getproxies():
        return None
    return make_transport(kind)


class Client(httpx.AsyncClient):
    """``httpx.AsyncClient`` whose cookie store reads a response only when it sets a cookie, and
    whose ``stream`` sends a plain request straight to its transport.

    httpx hands every response to its cookie jar, which first wraps the request and the
    response in ``urllib`` objects (a URL parse, a header copy): ~5 % of the event loop's time
    in a run, for APIs that set no cookies. Without a ``Set-Cookie`` header the jar (with its
    default policy, which ignores ``Set-Cookie2``) takes nothing, so skipping it changes nothing.

    A request is *plain* when httpx's client would do nothing to it but build it and hand it to
    the transport: an absolute ``httpx.URL``, no option but a JSON body, and a client without
    auth, event hooks, query parameters, redirects to follow, cookies to send or httpx's request
    log turned on, and a transport given to it with nothing routing requests elsewhere (no
    mounts or proxy), a URL without user info, the client not closed. ``stream`` then builds
    the same ``httpx.Request`` (the client's headers and timeouts) and sends it to that
    transport, skipping the auth, redirect and hook machinery wrapped around every send
    (~0.1-0.2 ms of the event loop per request, and a run polls each task several times); a
    redirect's ``Location`` is checked as httpx's client checks it. ``stream`` on a client
    following redirects (a run's downloads) is plain too where ``redirects.FOLLOWS``: a
    redirect in the answer is followed by httpx's client from its second step on
    (``redirects.follow``). Anything else goes through httpx as before.
    """

    def __init__(self, *, cookies: httpx._types.CookieTypes | None = None, **options: Any) -> None:
        super().__init__(**options)
        self.cookies = cookies
        routed = any(options.get(name) for name in ("mounts", "proxy", "proxies", "app"))
        self._direct: httpx.AsyncBaseTransport | None = None if routed else options.get("transport")
        """The transport given, which httpx's client sends every request to when nothing else
        routes them (no mounts, no proxy); None: plain requests go through httpx's client too
        (so ``--transport httpx``, whose client builds its own, is httpx's client throughout)."""
        self._encoding = options.get("default_encoding", "utf-8")
        self._shapes: dict[tuple[Any, ...], _Shape] = {}
        """Header items of the plain requests ``read_small`` sent, by shape (``_outgoing``)."""

    @contextlib.asynccontextmanager
    async def stream(self, *args: Any, **options: Any) -> AsyncIterator[httpx.Response]:
        """httpx's ``stream``; once the response is closed, it lets go of its stream, which
        refers back to it: without that cycle, a response and all it holds (aiohttp's response,
        the headers, the request) are freed as soon as their last user lets go of them, not
        by the cyclic collector, whose runs those objects made several times more frequent."""
        response: httpx.Response | None = None
        try:
            if self._plain(args, options, follows=True):
                response = await self._send_plain(*args, json=options.get("json"))
                try:
                    yield response
                finally:
                    await response.aclose()
            else:
                async with super().stream(*args, **options) as response:
                    yield response
        finally:
            if response is not None and response.is_closed:
                response.stream = _SPENT

    def _plain(self, args: tuple[Any, ...], options: dict[str, Any], *, follows: bool = False) -> bool:
        """Whether httpx's client would only build the request and send it (class doc);
        ``follows``: or also follow its redirects, which ``_send_plain`` hands to httpx's
        (``redirects.follow``, where the installed httpx is one it was checked against)."""
        return (
            self._direct is not None
            and len(args) == 2
            and isinstance(args[1], httpx.URL)
            and options.keys() <= {"json"}
            and not args[1].is_relative_url
            and not args[1].userinfo  # httpx's client makes it Basic auth
            and not self.is_closed  # httpx's client refuses to send
            and self.auth is None
            and (not self.follow_redirects or (follows and redirects.FOLLOWS))
            and not self.params
            and not any(self.event_hooks.values())
            and not self._store.jar
            and not _HTTPX_LOG.isEnabledFor(logging.INFO)
        )

    def _plain_request(self, method: str, url: httpx.URL, json: Any) -> httpx.Request:
        """The request ``build_request`` makes for a plain request: the client's headers and timeouts."""
        return httpx.Request(
            method, url, headers=self.headers, json=json, extensions={"timeout": self.timeout.as_dict()}
        )

    async def _send_plain(self, method: str, url: httpx.URL, *, json: Any = None) -> httpx.Response:
        """What ``AsyncClient.send(build_request(...), stream=True)`` does for a plain request:
        sent straight to the transport (on aiohttp's, its body read from aiohttp as it comes:
        ``quickread.open_stream``); a redirect the client follows goes on in httpx's client."""
        request = self._plain_request(method, url, json)
        response = await self._send_direct(request)
        if self.follow_redirects and response.has_redirect_location:
            return await redirects.follow(self, request, response)
        return response

    async def _send_direct(self, request: httpx.Request) -> httpx.Response:
        """What httpx's client does to send one request (``_send_single_request``), but the
        request log and the response's ``elapsed``."""
        transport = self._direct
        assert transport is not None  # (_plain)
        try:
            if isinstance(transport, AiohttpTransport) and transport.quick and len(request.content) <= LARGE_BODY:
                from batchvid.quickread import open_stream

                response = await open_stream(transport, request)
            else:
                response = await transport.handle_async_request(request)
        except httpx.RequestError as exc:
            exc.request = request  # as httpx's client does
            raise
        response.request = request
        try:
            check_location(request, response.status_code, response.headers)
        except httpx.RemoteProtocolError:
            await response.aclose()
            raise
        self._store.extract_cookies(response)
        response.default_encoding = self._encoding
        return response

    async def read_small(self, method: str, url: httpx.URL, *, json: Any = None, limit: int) -> Small | None:
        """A plain request's answer read whole, up to ``limit`` bytes, straight from aiohttp
        (no httpx response and its stream layers); None, before anything is sent, when the
        request is not plain, its body is large or the transport is not aiohttp's: then
        ``stream`` it. The request is not built as an ``httpx.Request`` (``_outgoing``): one
        is made only for an error, a redirect's check or a cookie to keep."""
        transport = self._direct
        if not (isinstance(transport, AiohttpTransport) and transport.quick and self._plain((method, url), {"json": json})):
            return None
        outgoing = self._outgoing(method, url, json)
        if len(outgoing.content) > LARGE_BODY:
            return None
        from batchvid.quickread import read_small

        try:
            small = await read_small(transport, outgoing, limit)  # type: ignore[arg-type]  # (_Outgoing: as read there)
        except httpx.RequestError as exc:
            exc.request = self._plain_request(method, url, json)  # as httpx's client does
            raise
        if small.cookies:
            request = self._plain_request(method, url, json)
            self._store.extract_cookies(httpx.Response(small.status, headers=small.cookies, request=request))
        return small

    def _outgoing(self, method: str, url: httpx.URL, json: Any) -> _Outgoing:
        """What ``quickread.read_small`` reads of the ``httpx.Request`` that ``_plain_request``
        would make: its method, URL, header items, body and timeouts. The header items of a
        request of this shape (the client's headers, the URL's host, the method, a body or
        not) are those of the first such ``httpx.Request``, kept, with the body's length put
        in; a shape whose headers a body does not set as httpx sets them (the client sending
        its own Host, Content-Length or Content-Type) is made as an ``httpx.Request`` each
        time."""
        body = b"" if json is None else _json_body(json)
        key = (tuple(self.headers.raw), url.netloc, method, json is None)
        shape = self._shapes.get(key)
        if shape is None:
            shape = self._shape(key, method, url, json, body)
        timeouts = {"timeout": self.timeout.as_dict()}
        if shape is _UNSHAPED:
            request = self._plain_request(method, url, json)
            return _Outgoing(method, str(url), list(request.headers.items()), request.content, timeouts)
        items, length_at = shape
        if length_at is not None:
            items = [*items[:length_at], (items[length_at][0], str(len(body))), *items[length_at + 1 :]]
        return _Outgoing(method, str(url), items, body, timeouts)

    def _shape(self, key: tuple[Any, ...], method: str, url: httpx.URL, json: Any, body: bytes) -> _Shape:
        request = self._plain_request(method, url, json)
        items = list(request.headers.items())
        names = [name.lower() for name, _ in items]
        length_at = names.index("content-length") if "content-length" in names else None
        own = {name.lower() for name in self.headers}
        shape: _Shape = (items, length_at)
        if request.content != body or own & {"host", "content-length", "content-type", "transfer-encoding"} or (
            json is not None and (length_at is None or items[length_at][1] != str(len(body)))
        ):
            shape = _UNSHAPED
        if len(self._shapes) >= 16:
            self._shapes.clear()
        self._shapes[key] = shape
        return shape

    @property
    def cookies(self) -> httpx.Cookies:
        return self._store

    @cookies.setter
    def cookies(self, cookies: httpx._types.CookieTypes | None) -> None:
        self._store = _SetCookies(cookies)


class _Outgoing:
    """A plain request as ``quickread.read_small`` reads it (``Client._outgoing``): the fields
    of an ``httpx.Request`` it uses, without making one."""

    __slots__ = ("content", "extensions", "headers", "method", "url")

    def __init__(self, method: str, url: str, headers: list[tuple[str, str]], content: bytes,
                 extensions: dict[str, Any]) -> None:
        self.method, self.url, self.headers, self.content, self.extensions = method, url, headers, content, extensions


_Shape = tuple[list[tuple[str, str]], int | None]
_UNSHAPED: _Shape = ([], None)
"""A shape whose requests are made as ``httpx.Request``s each time (compared by identity)."""


def _json_body(value: Any) -> bytes:
    """A JSON request body as httpx encodes it (``httpx._content.encode_json``)."""
    return json_module.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


REDIRECTS = frozenset((301, 302, 303, 307, 308))


def check_location(request: httpx.Request, status: int, headers: Mapping[str, str]) -> None:
    """Fail as httpx's client does on a redirect whose ``Location`` header is not a URL: it
    reads one even when not following it (``Response.next_request``)."""
    location = headers.get("Location") if status in REDIRECTS else None
    if location is not None:
        try:
            httpx.URL(location)
        except httpx.InvalidURL as exc:
            raise httpx.RemoteProtocolError(f"Invalid URL in location header: {exc}.", request=request) from None


_HTTPX_LOG = logging.getLogger("httpx")
"""httpx's logger: its client logs each request at INFO, so with that on, requests go through it."""


_SPENT = httpx.ByteStream(b"")
"""The stream of a closed response (httpx reads none once it is closed)."""


class _SetCookies(httpx.Cookies):
    def extract_cookies(self, response: httpx.Response) -> None:
        if "set-cookie" in response.headers:
            super().extract_cookies(response)


class AiohttpTransport(httpx.AsyncBaseTransport):
    """httpx-aiohttp's transport, with httpx's error classes and pool timeout (module doc)."""

    def __init__(self, *, limits: httpx.Limits = DEFAULT_LIMITS) -> None:
        from httpx_aiohttp import AiohttpTransport as _Inner

        self._inner = _Inner(limits=limits, trust_env=False)
        self.quick = hasattr(self._inner, "client") and callable(getattr(self._inner, "get_client", None))
        """Whether ``quickread`` can reach aiohttp's session where httpx-aiohttp 0.1.12-0.2.0
        keep it (``client``, opened by ``get_client``); if a later one does not, every request
        goes through httpx-aiohttp's own ``handle_async_request``."""
        keep_freed_buffers()
        cap = limits.max_connections
        self._slots = anyio.Semaphore(cap) if cap is not None else None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await self.acquire_slot(request)
        try:
            with MAPPED:
                response = await self._send(request)
        except BaseException:
            self.release_slot()
            raise
        assert isinstance(response.stream, httpx.AsyncByteStream)
        _read_in_large_pieces(response.stream)
        response.stream = Body(response.stream, self.release_slot)
        return response

    def session(self) -> Any:
        """aiohttp's ``ClientSession`` that httpx-aiohttp sends through, opened as it opens it
        (``quick`` says whether it can be reached)."""
        from aiohttp import ClientSession

        inner = self._inner
        if not isinstance(inner.client, ClientSession):
            inner.client = inner.get_client()
        return inner.client

    async def _send(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` and read the response head. aiohttp has no write timeout, so a
        request with a body gets a deadline of connect + write + read: past it, the body was
        not taken (a stalled server; the read timeout covers the wait for an answer)."""
        request = _streamed_if_large(request)
        has_body = request.headers.get("content-length", "0") != "0" or (
            "transfer-encoding" in request.headers
        )
        return await body_sent_in_time(request, has_body, self._inner.handle_async_request(request))

    async def aclose(self) -> None:
        """Close every connection. Like httpx's own, the transport still serves later requests
        (on new connections): a client closing it does not break another one sharing it."""
        await self._inner.aclose()
        self._inner.client = None  # the next request opens a new aiohttp session

    async def acquire_slot(self, request: httpx.Request) -> None:
        """A place among ``limits.max_connections`` requests under way, or ``PoolTimeout``
        past the request's ``pool`` timeout; ``release_slot`` gives it back."""
        if self._slots is None:
            return
        try:
            self._slots.acquire_nowait()  # the usual case: no timer needed
            return
        except anyio.WouldBlock:
            pass
        timeouts = request.extensions.get("timeout", {})
        try:
            with anyio.fail_after(timeouts.get("pool")):
                await self._slots.acquire()
        except TimeoutError:
            raise httpx.PoolTimeout("timed out waiting for a free connection") from None

    def release_slot(self) -> None:
        if self._slots is not None:
            self._slots.release()


async def body_sent_in_time(request: httpx.Request, has_body: bool, sending: Awaitable[T]) -> T:
    """Await ``sending`` (``request`` sent, its answer's head read); with a body, within
    connect + write + read seconds, or ``WriteTimeout``: the body was not taken."""
    timeouts = request.extensions.get("timeout", {})
    write = timeouts.get("write")
    if write is None or not has_body:
        return await sending
    limit = write + (timeouts.get("connect") or 0.0) + (timeouts.get("read") or 0.0)
    try:
        async with asyncio.timeout(limit):  # cheaper than a cancel scope, on every create
            return await sending
    except TimeoutError:
        raise httpx.WriteTimeout(f"the request body was not sent within {limit:g} s") from None


READ_SIZE = 1 << 20
"""The largest piece of a response body handed up at once: what aiohttp has buffered, up to
this (its buffer pauses the socket at twice ``read_bufsize``, 256 KiB in aiohttp 3.14). Keep it
under ``MMAP_THRESHOLD``, or each piece is a fresh ``mmap`` again."""


def _read_in_large_pieces(stream: httpx.AsyncByteStream) -> None:
    """Have httpx-aiohttp's response stream read up to ``READ_SIZE`` at a time (its
    ``CHUNK_SIZE``, 16 KiB, is a class attribute: this instance gets its own). A version
    without it reads as it does (tests/test_download_stream.py notices)."""
    if hasattr(stream, "CHUNK_SIZE"):
        setattr(stream, "CHUNK_SIZE", READ_SIZE)  # noqa: B010 (not an attribute mypy knows)


LARGE_BODY = 1 << 20
"""aiohttp warns (ResourceWarning) about bytes bodies above 1 MiB: those go as a stream."""


def _streamed_if_large(request: httpx.Request) -> httpx.Request:
    """``request`` with a body above ``LARGE_BODY`` as a stream of 64 KiB slices (its
    Content-Length kept: not chunked); httpx sets ``response.request`` back to the original.

    A redirect's request (httpx's client makes it over the stream of the one redirected, an
    in-memory ``httpx.ByteStream``, unread) gets its body read first: httpx-aiohttp would send
    any stream chunked, so a redirected GET would carry ``Transfer-Encoding: chunked`` and an
    empty body, which httpx's transport does not send and a server or CDN may refuse."""
    try:
        content = request.content
    except httpx.RequestNotRead:
        if not isinstance(request.stream, httpx.ByteStream):
            return request
        content = request.read()
    if len(content) <= LARGE_BODY:
        return request
    return httpx.Request(
        request.method,
        request.url,
        headers=request.headers,
        stream=_Slices(content),
        extensions=request.extensions,
    )


class _Slices(httpx.AsyncByteStream):
    def __init__(self, content: bytes) -> None:
        self._content = content

    async def __aiter__(self) -> AsyncIterator[bytes]:
        view = memoryview(self._content)
        for start in range(0, len(view), 1 << 16):
            yield bytes(view[start : start + (1 << 16)])


class Body(httpx.AsyncByteStream):
    """The response body: mapped errors, and the connection slot given back once, on close."""

    def __init__(self, inner: httpx.AsyncByteStream, release: Any) -> None:
        self._inner = inner
        self._release = release
        self._open = True

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with MAPPED:
            async for chunk in self._inner:
                yield chunk

    async def aclose(self) -> None:
        if not self._open:
            return
        self._open = False
        try:
            with MAPPED:
                await self._inner.aclose()
        finally:
            self._release()
