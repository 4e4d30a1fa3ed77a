"""A small API answer read straight from aiohttp: ``transport.Client.read_small``'s way.

A poll's or a create's answer is a small JSON document that ``providers.wire.send`` reads
whole. Through httpx it is an ``httpx.Response`` over httpx-aiohttp's stream over aiohttp's
response, each layer with its own objects, headers and iterators, several times a job. Here the
same ``httpx.Request`` (so the same bytes on the wire) goes to aiohttp as httpx-aiohttp sends it,
under ``AiohttpTransport``'s connection bound and error mapping (``MAPPED``), and the answer's
body is read as ``wire.send`` reads a response: up to a limit, decoded as httpx decodes it.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
import httpx

from batchvid.transport import (
    MAPPED,
    READ_SIZE,
    AiohttpTransport,
    Body,
    body_sent_in_time,
    check_location,
)


@dataclass(frozen=True, slots=True)
class Small:
    """An answer read whole: what ``providers.wire.send`` keeps of it."""

    status: int
    reason: str
    """httpx's ``reason_phrase`` for it."""
    body: bytes
    """At most the limit read to, decoded as httpx decodes it (``Content-Encoding``)."""
    too_large: bool
    """The body was longer than the limit and was not read to the end."""
    retry_after: str | None
    """Its ``Retry-After`` headers as httpx reads them (several joined by ``", "``)."""
    cookies: list[tuple[bytes, bytes]]
    """The answer's headers when it sets a cookie (for the client's jar), else empty."""


async def read_small(transport: AiohttpTransport, request: httpx.Request, limit: int) -> Small:
    """``request``'s answer, its body read whole up to ``limit`` bytes, as the transport's
    ``handle_async_request`` and reading its stream would give it. For a body of at most
    ``transport.LARGE_BODY`` (larger ones are streamed by ``handle_async_request``)."""
    await transport.acquire_slot(request)
    try:
        with MAPPED, _AS_NAMED:
            async with await _open(transport, request) as answer:
                return await _read(answer, request, limit)
    finally:
        transport.release_slot()


async def open_stream(transport: AiohttpTransport, request: httpx.Request) -> httpx.Response:
    """``transport.handle_async_request(request)``'s response, but its body read from aiohttp's
    response as it arrives (httpx-aiohttp's stream left out): the same status, headers,
    extensions, pieces, errors and connection slot (``transport.Body``). For a body of at most
    ``transport.LARGE_BODY``."""
    await transport.acquire_slot(request)
    try:
        with MAPPED, _AS_NAMED:
            answer = await _open(transport, request)
    except BaseException:
        transport.release_slot()
        raise
    extensions = {"http_version": b"HTTP/1.1"}
    if answer.reason:
        extensions["reason_phrase"] = answer.reason.encode()
    return httpx.Response(
        answer.status, headers=answer.raw_headers, stream=Body(_Chunks(answer), transport.release_slot),
        request=request, extensions=extensions,
    )


class _Chunks(httpx.AsyncByteStream):
    """An aiohttp response's body in pieces of up to ``READ_SIZE`` (``iter_chunked``, as
    httpx-aiohttp reads it), its errors raised as httpx-aiohttp raises them (``_AS_NAMED``)."""

    def __init__(self, answer: Any) -> None:
        self._answer = answer

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _AS_NAMED:
            async for chunk in self._answer.content.iter_chunked(READ_SIZE):
                yield chunk

    async def aclose(self) -> None:
        with _AS_NAMED:
            await self._answer.__aexit__(None, None, None)


_NAMED: dict[type[Exception], type[httpx.TransportError]] = {
    aiohttp.ConnectionTimeoutError: httpx.ConnectTimeout,
    aiohttp.SocketTimeoutError: httpx.ReadTimeout,
    aiohttp.NonHttpUrlClientError: httpx.UnsupportedProtocol,
    aiohttp.InvalidUrlClientError: httpx.UnsupportedProtocol,
}
"""aiohttp's errors that httpx-aiohttp raises as the httpx class ``MAPPED`` gives them, with
their own text (``MAPPED`` keeps it): so they read the same here as through httpx's client."""


class _AsNamed:
    """``with _AS_NAMED:`` raises ``_NAMED``'s aiohttp errors as httpx-aiohttp does (inside
    ``MAPPED``, which then keeps them; a class, not a generator function: one per request)."""

    __slots__ = ()
    _sources = tuple(_NAMED)

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> Literal[False]:
        if isinstance(exc, self._sources):
            target = next(target for source, target in _NAMED.items() if isinstance(exc, source))
            raise target(str(exc)) from exc
        return False


_AS_NAMED = _AsNamed()


async def _open(transport: AiohttpTransport, request: httpx.Request) -> Any:
    """aiohttp's response to ``request`` (its head read), sent as httpx-aiohttp sends it, a
    body within ``body_sent_in_time``."""
    timeouts = request.extensions["timeout"]
    body = request.content or None
    sending = transport.session().request(
        request.method, str(request.url), headers=request.headers, data=body,
        allow_redirects=False, auto_decompress=False, compress=False,
        timeout=_client_timeout(timeouts.get("connect"), timeouts.get("read"), timeouts.get("pool")),
    )
    return await body_sent_in_time(request, body is not None, sending)


async def _read(answer: Any, request: httpx.Request, limit: int) -> Small:
    """Read aiohttp's ``answer`` as ``wire.send`` reads an httpx response: a declared length
    above ``limit``, or more bytes than it, is ``too_large``."""
    headers = answer.headers
    check_location(request, answer.status, headers)
    declared = headers.get("Content-Length")
    too_large = declared is not None and declared.isdigit() and int(declared) > limit
    chunks: list[bytes] = []
    if not too_large:
        pieces: AsyncIterator[bytes] = _Pieces(answer).__aiter__()
        if headers.get("Content-Encoding", "identity").strip().lower() != "identity":
            decoded = httpx.Response(answer.status, headers=answer.raw_headers, stream=_Pieces(answer),
                                     request=request)
            pieces = decoded.aiter_bytes()
        size = 0
        async for chunk in pieces:
            size += len(chunk)
            if size > limit:
                too_large = True
                break
            chunks.append(chunk)
    reason = answer.reason.encode().decode("ascii", errors="ignore") if answer.reason else None
    return Small(
        status=answer.status,
        reason=reason if reason is not None else httpx.codes.get_reason_phrase(answer.status),
        body=b"".join(chunks),
        too_large=too_large,
        retry_after=", ".join(headers.getall("Retry-After")) if "Retry-After" in headers else None,
        cookies=list(answer.raw_headers) if "Set-Cookie" in headers else [],
    )


class _Pieces(httpx.AsyncByteStream):
    """An aiohttp response's body as it arrives."""

    def __init__(self, answer: Any) -> None:
        self._answer = answer

    async def __aiter__(self) -> AsyncIterator[bytes]:
        content = self._answer.content
        while chunk := await content.readany():
            yield chunk


@functools.lru_cache(maxsize=16)
def _client_timeout(connect: float | None, read: float | None, pool: float | None) -> Any:
    """aiohttp's timeouts for httpx's, as httpx-aiohttp maps them (one object per setting)."""
    from aiohttp import ClientTimeout

    return ClientTimeout(sock_connect=connect, sock_read=read, connect=pool)
