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
import stat
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
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_RANGE = re.compile(r"bytes=(\d*)-(\d*)", re.IGNORECASE)


def _number(digits: str) -> int:
    """A Range position; one of more than 18 digits (past any file) as 10**18, so that a huge
    number is neither an error nor a slow conversion."""
    return int(digits) if len(digits.lstrip("0")) <= 18 else 10**18


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
        suffix = _number(last)
        if suffix == 0 or size == 0:
            return False
        return max(size - suffix, 0), size - 1
    start = _number(first)
    if last and _number(last) < start:
        return None
    if start >= size:
        return False
    return start, min(_number(last), size - 1) if last else size - 1


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

    def _inside(self, path: str) -> str | None:
        """``path``'s real path when neither it nor its real path leaves the directory or has a
        dot-named part (``.batchvid/``, a symlink into it); else ``None``."""
        try:
            root = os.path.realpath(self.directory)
            real = os.path.realpath(path)
        except (OSError, ValueError):  # a NUL byte (%00)
            return None
        for name, base in ((path, self.directory), (real, root)):
            # ".." is dot-named too: a real path outside the directory is refused here
            if any(part.startswith(".") for part in Path(os.path.relpath(name, base)).parts
                   if part != "."):
                return None
        return real

    def _open(self, real: str) -> BinaryIO | None:
        """The regular file at ``real`` (a path ``_inside`` gave), opened from the directory one
        name at a time with no symlink followed: one swapped in since the check is refused, so
        what is opened is what was checked. ``None`` when it cannot be (404)."""
        flags = os.O_RDONLY | _O_NOFOLLOW | _O_CLOEXEC | _O_NONBLOCK  # a FIFO must not block
        root = os.path.realpath(self.directory)
        try:
            if os.open not in os.supports_dir_fd:  # not POSIX: no walk, the path as checked
                fd = os.open(real, flags)
            else:
                parts = Path(os.path.relpath(real, root)).parts
                fd = os.open(root, os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC)
                for i, part in enumerate(parts):
                    last = i == len(parts) - 1
                    try:
                        fd_next = os.open(part, flags if last else flags | _O_DIRECTORY,
                                          dir_fd=fd)
                    finally:
                        os.close(fd)
                    fd = fd_next
        except (OSError, ValueError):
            return None
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # a directory, FIFO, device: not served
            os.close(fd)
            return None
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")

    def _host_is_local(self) -> bool:
        """Whether the request names this machine (``Host`` 127.0.0.1, localhost, [::1], or
        none): a web page whose name was re-pointed at 127.0.0.1 (DNS rebinding) sends its own
        name and must not read the output directory through the user's browser."""
        host = self.headers.get("Host")
        if host is None:
            return True
        try:
            name = urllib.parse.urlsplit("//" + host.strip()).hostname or ""
        except ValueError:
            return False
        return name in ("127.0.0.1", "localhost", "::1") or name.endswith(".localhost")

    def send_head(self) -> Any:
        if not self._host_is_local():
            self.send_error(HTTPStatus.MISDIRECTED_REQUEST, "Not a local host name")
            return None
        path = self.translate_path(self.path)
        real = self._inside(path)
        if real is not None and os.path.isdir(real):
            if not urllib.parse.urlsplit(self.path).path.endswith("/"):
                return super().send_head()  # the redirect to the name with a slash
            for index in ("index.html", "index.htm"):
                if os.path.lexists(os.path.join(path, index)):
                    path = os.path.join(path, index)
                    real = self._inside(path)
                    break
            else:
                return self.list_directory(real)
        file = None if real is None or path.endswith("/") else self._open(real)
        if file is None:
            self.send_error(HTTPStatus.NOT_FOUND, "File not found")
            return None
        try:
            return self._send_file_head(file, self.guess_type(path))
        except BaseException:
            file.close()
            raise

    def _send_file_head(self, file: BinaryIO, media_type: str) -> BinaryIO | None:
        status = os.fstat(file.fileno())
        size = status.st_size
        modified = self.date_time_string(int(status.st_mtime))
        if ("If-Modified-Since" in self.headers and "If-None-Match" not in self.headers
                and _unchanged_since(self.headers["If-Modified-Since"], status.st_mtime)):
            self.send_response(HTTPStatus.NOT_MODIFIED)
            self.send_header("Last-Modified", modified)
            self.end_headers()
            file.close()
            return None
        # Range is defined for GET only (RFC 9110 14.2): HEAD answers as a GET without it would
        wanted = self.headers.get("Range") if self.command == "GET" else None
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
