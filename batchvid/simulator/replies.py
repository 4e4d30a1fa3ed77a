"""What the simulator answers: replies, provider-shaped errors, and ASGI plumbing helpers."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from batchvid.simulator.contract import Rejected

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


@dataclass(slots=True)
class Reply:
    status: int
    body: bytes = b""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    stream: Iterable[bytes] | None = None
    length: int | None = None
    drop: str | None = None
    """``reset``: close after the headers; ``truncated``: send half the declared body."""


def json_reply(status: int, payload: Any, headers: Iterable[tuple[bytes, bytes]] = ()) -> Reply:
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return Reply(status, body, [(b"content-type", b"application/json"), *headers])


async def read_body(receive: Receive, limit: int) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size <= limit:
            chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks) if size <= limit else None


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


def error(
    provider: str,
    status: int,
    code: str | int,
    message: str,
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> Reply:
    if provider == "bigmodel":
        code = str(code)
    return json_reply(status, {"error": {"code": code, "message": message}}, headers)


def unauthorized(provider: str, code: str, message: str) -> Reply:
    return error(provider, 401, code if provider == "bigmodel" else 401, message)


def rejection(provider: str, rejected: Rejected) -> Reply:
    if provider == "bigmodel":
        code = {"model": "1211", "prompt": "1261"}.get(rejected.reason, "1214")
        return error(provider, 400, code, rejected.message)
    return error(provider, 400, 400, rejected.message)


def method_not_allowed() -> Reply:
    return json_reply(405, {"error": {"code": 405, "message": "method not allowed"}})


def not_found() -> Reply:
    return Reply(404, b"Not Found", [(b"content-type", b"text/plain")])


def expired(status: int) -> Reply:
    page = b'<?xml version="1.0"?><Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>'
    return Reply(status, page, [(b"content-type", b"application/xml")])


def parse_range(value: str, total: int) -> tuple[int, int] | None:
    """``bytes=a-b``, ``bytes=a-`` or ``bytes=-n`` as a half-open range, or None."""
    match = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", value)
    if match is None or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if first == "":
        start, stop = max(0, total - int(last)), total
    else:
        start = int(first)
        stop = min(total, int(last) + 1) if last else total
    if start >= stop:
        return None
    return start, stop
