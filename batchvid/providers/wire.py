"""The wire: one HTTP exchange with a provider, read with a size limit.

Both providers speak the same dialect: JSON in, JSON out, errors as an HTTP status plus an
optional ``{"error": {"code", "message"}}`` body. ``send`` is the one place httpx errors are
translated: a transport failure becomes ``TransientError("network")`` carrying how far the
request got (``reach``, read by ``batchvid.billing``). Nothing here keeps or shows request
headers.
"""

from __future__ import annotations

import datetime
import email.utils
import functools
import json
import math
import re
import time
from dataclasses import dataclass
from typing import Any

import httpx

from batchvid.errors import TransientError
from batchvid.transport import Client

MAX_RESPONSE_BYTES = 4 * 1024 * 1024
"""API answers are small JSON documents; a larger body is refused as ``bad_response``."""

MAX_RETRY_AFTER = 600.0
"""The longest ``Retry-After`` honoured, in seconds: a larger value is capped to this."""

EXCERPT_CHARS = 500
"""How much of a body that is not the expected JSON goes into an error message."""


@dataclass(frozen=True, slots=True)
class RawResponse:
    """An HTTP answer read with a size limit: status, the headers that matter, and the body."""

    status: int
    body: bytes
    """At most ``MAX_RESPONSE_BYTES``; see ``too_large``."""
    too_large: bool = False
    """The body was longer than ``MAX_RESPONSE_BYTES`` and was not read to the end."""
    retry_after: float | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        """The body parsed as JSON; raises ``ValueError`` when it is not JSON or too large."""
        if self.too_large:
            raise ValueError(f"response body larger than {MAX_RESPONSE_BYTES} bytes")
        try:
            return json.loads(self.body.decode("utf-8"))
        except RecursionError:  # absurdly deep nesting: garbage, not a crash
            raise ValueError("response body nested too deeply") from None

    def excerpt(self) -> str:
        """A short, printable piece of the body for a person to read."""
        return excerpt(self.body.decode("utf-8", errors="replace"))


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """``text`` on one line, trimmed to ``limit`` characters (with an ellipsis when cut)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP-date.

    Returns None when absent or unreadable; clamps to ``[0, MAX_RETRY_AFTER]``. ``now`` is the
    wall-clock time (``time.time()``) an HTTP-date is measured from.
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # RFC 9110 dates are GMT; be lenient with ones that omit it
            when = when.replace(tzinfo=datetime.UTC)
        seconds = when.timestamp() - (time.time() if now is None else now)
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def normalise_code(value: Any) -> str | None:
    """A business code as a string (``1302`` and ``"1302"`` are the same), or None."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return text or None


def error_fields(payload: Any) -> tuple[str | None, str | None]:
    """``(code, message)`` from an error body such as ``{"error": {"code", "message"}}``.

    Also accepts the flatter shapes some gateways use (``{"code", "message"}``,
    ``{"error": "text"}``); returns None for what is not there.
    """
    if not isinstance(payload, dict):
        return None, None
    err = payload.get("error")
    source: dict[str, Any] = err if isinstance(err, dict) else payload
    code = normalise_code(source.get("code"))
    message = source.get("message") or source.get("msg")
    if isinstance(err, str) and err.strip():
        message = err
    return code, (excerpt(str(message)) if message else None)


async def send(
    client: httpx.AsyncClient,
    method: str,
    path: str,
    *,
    json_body: dict[str, Any] | None = None,
) -> RawResponse:
    """Send one request and read at most ``MAX_RESPONSE_BYTES`` of the answer.

    Transport failures (connection refused or reset, timeouts, protocol errors) become
    ``TransientError("network")`` whose ``reach`` says whether the request may have left (the
    one place httpx errors are read for that), chained from a copy of the httpx exception (same type and
    message, so a caller can still tell a refused connection from a lost answer) that does not
    hold the request: the original carries the headers, ``Authorization`` included.

    On batchvid's own client (``transport.Client``) a plain request's answer is read straight
    from aiohttp (``Client.read_small``): the same request, answer and errors, fewer layers.
    """
    url = endpoint(client.base_url, path)
    try:
        small = await client.read_small(method, url, json=json_body, limit=MAX_RESPONSE_BYTES) if (
            isinstance(client, Client)
        ) else None
        if small is not None:
            return RawResponse(
                status=small.status,
                body=small.body,
                too_large=small.too_large,
                retry_after=parse_retry_after(small.retry_after),
                reason=small.reason,
            )
        async with client.stream(method, url, json=json_body) as response:
            declared = response.headers.get("content-length")
            too_large = (
                declared is not None and declared.isdigit() and int(declared) > MAX_RESPONSE_BYTES
            )
            chunks: list[bytes] = []
            size = 0
            if not too_large:
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > MAX_RESPONSE_BYTES:
                        too_large = True
                        break
                    chunks.append(chunk)
            return RawResponse(
                status=response.status_code,
                body=b"".join(chunks)[:MAX_RESPONSE_BYTES],
                too_large=too_large,
                retry_after=parse_retry_after(response.headers.get("retry-after")),
                reason=response.reason_phrase,
            )
    except httpx.TransportError as exc:
        detail = excerpt(str(exc)) or "no detail"
        error = TransientError(
            "network",
            f"{method} {path} failed: {type(exc).__name__}: {detail}",
            reach="not_sent" if isinstance(exc, NOT_SENT) else "maybe_delivered",
        )
        raise error from _without_request(exc)


@functools.lru_cache(maxsize=1024)
def endpoint(base: httpx.URL, path: str) -> httpx.URL:
    """The URL a client with ``base_url`` ``base`` sends ``path`` to, made as httpx makes it
    (``AsyncClient._merge_url``: a relative path is appended to the base URL's path) and
    remembered: httpx spends ~150 µs on each merge, and a run sends every create to one path
    and polls each task at one path several times. ``httpx.URL`` is immutable; an absolute URL
    given to the client is taken as it is. A path of plain characters (a poll's, a create's)
    under a base URL ending in ``/`` with no query is parsed once, joined to the base's text,
    not parsed alone and then merged (the same URL, half the cost)."""
    prefix = _prefix(base)
    if prefix is not None and _PLAIN_PATH.fullmatch(path) and "/." not in "/" + path:
        return httpx.URL(prefix + path.lstrip("/"))
    url = httpx.URL(path)
    if not url.is_relative_url:
        return url
    return base.copy_with(raw_path=base.raw_path + url.raw_path.lstrip(b"/"))


_PLAIN_PATH = re.compile(r"/?[A-Za-z0-9_.~-][A-Za-z0-9_.~/-]*")
"""A relative path that needs neither quoting nor normalising (nor a second ``/`` first)."""


@functools.lru_cache(maxsize=16)
def _prefix(base: httpx.URL) -> str | None:
    """``base``'s text, when a plain path can be appended to it as text (``endpoint``)."""
    text = str(base)
    if not text.endswith("/") or not base.raw_path.endswith(b"/") or base.query or base.fragment or base.is_relative_url:
        return None  # ("http://h" has the path "/" but not the text)
    return text


NOT_SENT = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.UnsupportedProtocol,
    httpx.LocalProtocolError,
)
"""Transport failures raised before a request left: the provider saw nothing. Every other one
(a read or write that broke, a timeout waiting for the answer) may have delivered it."""


def _without_request(exc: httpx.TransportError) -> BaseException | None:
    """The same kind of httpx error with the same message, minus the request it was raised for."""
    try:
        return type(exc)(str(exc))
    except Exception:  # an exotic subclass with another constructor: drop the cause
        return None


def read_object(raw: RawResponse) -> dict[str, Any] | None:
    """The body when it is a JSON object, else None (not JSON, too large, another JSON type)."""
    try:
        payload = raw.json()
    except ValueError:
        return None
    return payload if isinstance(payload, dict) else None

