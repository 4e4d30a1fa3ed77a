"""The HTTP server behind ``batchvid view --serve``: an output directory's files on 127.0.0.1,
with byte ranges so that every browser plays and seeks its videos.

Python's ``http.server.SimpleHTTPRequestHandler`` always answers a whole file with 200: Safari
then refuses to play a ``<video>``, and seeking a long clip re-downloads it elsewhere. This
handler keeps its path handling and adds, for files:

- ``Range: bytes=a-b``, ``bytes=a-`` and ``bytes=-n`` answered with 206, ``Content-Range`` and
  the part's length, sent from the file with ``sendfile`` (never read whole);
- 416 with ``Content-Range: bytes */SIZE`` for a range that starts past the end;
- a Range it does not serve (several ranges, another unit, bad syntax, or an ``If-Range`` that
  no longer matches) ignored, as RFC 9110 allows: the whole file, 200;
- ``Accept-Ranges: bytes`` on every file response, and 304 for an unchanged ``If-Modified-Since``.

What it refuses, with 404: a dot-named file or directory (``.batchvid/``: the journal, the lock,
the run's state), anything whose real path leaves the directory (a symlink pointing out; ``..``,
``%2e%2e`` are already folded into the directory by ``translate_path``). Directory listings
leave the dot-named entries out. A browser that closes the connection mid-video (it does so on
every seek) is not an error: nothing is printed.
"""

from __future__ import annotations

import datetime
import email.utils
import functools
import html
import io
import os
import re
import sys
import urllib.parse
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, BinaryIO

__all__ = ["ViewServer", "make_server"]

_MEDIA_TYPES = {
    ".mp4": "video/mp4",
    ".webm": "video/webm",
    ".html": "text/html; charset=utf-8",
    ".json": "application/json",
    ".jsonl": "text/plain; charset=utf-8",
    ".md": "text/markdown; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".xml": "application/xml",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
}
_RANGE = re.compile(r"bytes=(\d*)-(\d*)", re.IGNORECASE)


def parse_range(header: str, size: int) -> tuple[int, int] | None | bool:
    """The byte range ``(first, last)`` (inclusive) one ``Range`` header asks of a file of
    ``size`` bytes; ``None`` when the header is to be ignored (several ranges, another unit,
    bad syntax: the whole file is sent); ``False`` when it cannot be satisfied (416)."""
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first:
        if not last:
            return None
        suffix = int(last)
        if suffix == 0 or size == 0:
            return False
        return max(size - suffix, 0), size - 1
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= size:
        return False
    return start, min(int(last), size - 1) if last else size - 1


def _unchanged_since(header: str, mtime: float) -> bool:
    """Whether an ``If-Modified-Since`` date is at or after ``mtime`` (ill-formed: no)."""
    try:
        since = email.utils.parsedate_to_datetime(header)
    except (TypeError, IndexError, OverflowError, ValueError):
        return False
    if since.tzinfo is None:
        since = since.replace(tzinfo=datetime.UTC)
    modified = datetime.datetime.fromtimestamp(mtime, datetime.UTC)
    return modified.replace(microsecond=0) <= since


class ViewHandler(SimpleHTTPRequestHandler):
    """SimpleHTTPRequestHandler with byte ranges, no dot-named paths, nothing outside the
    directory (symlinks included) and fixed media types."""

    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, **_MEDIA_TYPES}
    _part: tuple[int, int] = (0, 0)

    def _allowed(self, path: str) -> bool:
        root = os.path.realpath(self.directory)
        relative = os.path.relpath(path, self.directory)
        if any(part.startswith(".") and part != "." for part in Path(relative).parts):
            return False
        real = os.path.realpath(path)
        return real == root or real.startswith(root.rstrip(os.sep) + os.sep)

    def send_head(self) -> Any:
        path = self.translate_path(self.path)
        if not self._allowed(path):
            self.send_error(HTTPStatus.NOT_FOUND, "File not found")
            return None
        if os.path.isdir(path) or path.endswith("/"):
            return super().send_head()
        try:
            file = open(path, "rb")  # noqa: SIM115 -- the caller closes it, as in the base class
        except OSError:
            self.send_error(HTTPStatus.NOT_FOUND, "File not found")
            return None
        try:
            return self._send_file_head(file, self.guess_type(path))
        except BaseException:
            file.close()
            raise

    def _send_file_head(self, file: BinaryIO, media_type: str) -> BinaryIO | None:
        stat = os.fstat(file.fileno())
        size = stat.st_size
        modified = self.date_time_string(int(stat.st_mtime))
        if ("If-Modified-Since" in self.headers and "If-None-Match" not in self.headers
                and _unchanged_since(self.headers["If-Modified-Since"], stat.st_mtime)):
            self.send_response(HTTPStatus.NOT_MODIFIED)
            self.send_header("Last-Modified", modified)
            self.end_headers()
            file.close()
            return None
        wanted = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        part = None if wanted is None or if_range not in (None, modified) else (
            parse_range(wanted, size))
        if part is False:
            self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            file.close()
            return None
        if isinstance(part, tuple):
            first, last = part
            self.send_response(HTTPStatus.PARTIAL_CONTENT)
            self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
        else:
            first, last = 0, size - 1
            self.send_response(HTTPStatus.OK)
        self._part = (first, last - first + 1)
        self.send_header("Content-Type", media_type)
        self.send_header("Content-Length", str(last - first + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Last-Modified", modified)
        self.end_headers()
        return file

    def copyfile(self, source: Any, outputfile: Any) -> None:
        if not isinstance(source, io.BufferedReader):  # a directory listing
            super().copyfile(source, outputfile)
            return
        first, count = self._part
        if count > 0:
            sent = self.connection.sendfile(source, first, count)
            if sent < count:  # the file shrank under us: the length sent was a lie
                self.close_connection = True

    def list_directory(self, path: str | os.PathLike[str]) -> io.BytesIO | None:
        try:
            names = sorted((n for n in os.listdir(path) if not n.startswith(".")), key=str.lower)
        except OSError:
            self.send_error(HTTPStatus.NOT_FOUND, "No permission to list directory")
            return None
        shown = html.escape(urllib.parse.unquote(urllib.parse.urlsplit(self.path).path))
        items = []
        for name in names:
            link = name + "/" if os.path.isdir(os.path.join(path, name)) else name
            items.append(f'<li><a href="{urllib.parse.quote(link)}">{html.escape(link)}</a></li>')
        page = (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{shown}</title>'
                f"</head><body><h1>{shown}</h1><ul>\n" + "\n".join(items)
                + "\n</ul></body></html>\n").encode()
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        return io.BytesIO(page)


class ViewServer(ThreadingHTTPServer):
    """A threading HTTP server that stays quiet when a client hangs up mid-response."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


def make_server(root: Path, port: int) -> ViewServer:
    """A server for ``root``'s files on 127.0.0.1:``port`` (0: a free one); ``OSError`` when
    it cannot listen there."""
    return ViewServer(("127.0.0.1", port), functools.partial(ViewHandler, directory=str(root)))
