"""aiohttp's errors raised as the httpx errors httpcore raises for the same event
(``transport.py``'s promise to the code above it: module doc there).

``with MAPPED:`` around anything that talks to aiohttp (a request, a body read, a close). The
classes are told apart by how far the request got: before it left (nothing can have been
created) or after (the server may have acted on it).
"""

from __future__ import annotations

from typing import Any, Literal

import httpx


def _error_class(exc: BaseException) -> type[httpx.TransportError] | None:
    """The httpx error httpcore raises for the event behind an aiohttp exception."""
    import aiohttp

    # First match wins: subclasses before their bases.
    table: tuple[tuple[type[BaseException], type[httpx.TransportError]], ...] = (
        (aiohttp.ConnectionTimeoutError, httpx.ConnectTimeout),
        (aiohttp.ServerTimeoutError, httpx.ReadTimeout),
        (aiohttp.ClientProxyConnectionError, httpx.ProxyError),
        (aiohttp.ClientHttpProxyError, httpx.ProxyError),
        (aiohttp.ClientConnectorError, httpx.ConnectError),
        (aiohttp.ServerDisconnectedError, httpx.RemoteProtocolError),
        (aiohttp.ClientPayloadError, httpx.RemoteProtocolError),
        (aiohttp.ClientResponseError, httpx.RemoteProtocolError),
        (aiohttp.NonHttpUrlClientError, httpx.UnsupportedProtocol),
        (aiohttp.InvalidURL, httpx.UnsupportedProtocol),
        (aiohttp.ClientConnectionError, httpx.ReadError),
        (aiohttp.ClientError, httpx.ReadError),
        (TimeoutError, httpx.ReadTimeout),
    )
    for source, target in table:
        if isinstance(exc, source):
            return target
    return None


class _Mapped:
    """``with MAPPED:`` raises aiohttp's errors, and httpx-aiohttp's mapping of them, as
    httpcore's would be (a class, not a generator function: three per request).

    An error httpx-aiohttp already mapped is judged by its cause, the aiohttp exception.
    """

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> Literal[False]:
        if not isinstance(exc, Exception):
            return False
        source = exc.__cause__ if isinstance(exc, httpx.TransportError) else exc
        target = _error_class(source) if source is not None else None
        if target is None or type(exc) is target:
            return False
        raise target(_message(source)) from source


MAPPED = _Mapped()


def _message(exc: BaseException | None) -> str:
    """A one-line description: the aiohttp class and its text (a host and port, a reason)."""
    if exc is None:
        return ""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
