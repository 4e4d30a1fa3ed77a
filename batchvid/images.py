"""First-frame images: where they may come from and what they must be.

A local path is resolved against the manifest's directory and must stay inside the root (the
git work tree holding the manifest, ``root:`` or ``--root``; else the manifest's directory); an https
URL is passed through; a ``data:`` URI is decoded. Local files and data URIs must be PNG or
JPEG by their content (magic bytes, not the name) and at most 5 MB. Each distinct image is read
once, so thousands of jobs sharing one image share its bytes.
"""

from __future__ import annotations

import binascii
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from urllib.parse import urlsplit

from batchvid.jobs import Image

MAX_IMAGE_BYTES = 5 * 1024 * 1024

_MAGIC = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"))
_DATA_URI = re.compile(r"data:(?P<type>[^;,]*)(?P<params>(?:;[^;,]*)*),(?P<data>.*)", re.DOTALL)
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")


class ImageProblem(ValueError):
    """An image reference that cannot be used; the message says why, for a person."""


def sniff_media_type(data: bytes) -> str | None:
    """``image/png`` or ``image/jpeg`` from the first bytes, else None."""
    for magic, media_type in _MAGIC:
        if data.startswith(magic):
            return media_type
    return None


def _size_text(n: int) -> str:
    return f"{n:,} bytes ({n / (1024 * 1024):.1f} MB)"


def check_image_bytes(data: bytes, what: str) -> str:
    """The media type of ``data``, or ImageProblem if it is too big or not PNG/JPEG."""
    if len(data) > MAX_IMAGE_BYTES:
        raise ImageProblem(
            f"{what} is {_size_text(len(data))}; images may be at most 5 MB ({MAX_IMAGE_BYTES:,} bytes)"
        )
    media_type = sniff_media_type(data)
    if media_type is None:
        raise ImageProblem(
            f"{what} is not a PNG or JPEG image (checked by its content, not its name)"
        )
    return media_type


def find_root(start: Path) -> Path:
    """The git work tree holding ``start`` (the nearest directory with ``.git``), else ``start``."""
    here = start.resolve()
    for directory in (here, *here.parents):
        if (directory / ".git").exists():
            return directory
    return start


def resolve_inside(base_dir: Path, reference: str, what: str = "the file", *, root: Path | None = None) -> Path:
    """``reference`` (relative, POSIX or Windows separators) resolved against ``base_dir``.

    The result must stay inside ``root`` (default: ``base_dir`` itself). Refuses absolute
    paths, ``..`` escapes and symlinks that point outside ``root``.
    """
    if not reference:
        raise ImageProblem(f"{what} path is empty")
    if (
        PurePosixPath(reference).is_absolute()
        or PureWindowsPath(reference).is_absolute()
        or PureWindowsPath(reference).drive
        or reference.startswith(("/", "\\", "~"))
    ):
        raise ImageProblem(
            f"{reference!r} is an absolute path; write {what} path relative to the "
            "manifest's directory, inside it"
        )
    parts = PureWindowsPath(reference).parts
    inner = base_dir.resolve()
    outer = inner if root is None else root.resolve()
    if outer == inner and ".." in parts:
        raise ImageProblem(
            f"{reference!r} leaves the manifest's directory ('..'); {what} must be inside it"
        )
    target = (inner / Path(*parts)).resolve()
    if target.is_relative_to(outer):
        return target
    if outer == inner:
        raise ImageProblem(
            f"{reference!r} resolves to {str(target)!r}, outside the manifest's directory "
            f"(a symlink pointing out?); {what} must be inside it"
        )
    raise ImageProblem(
        f"{reference!r} resolves to {str(target)!r}, outside the root {str(outer)!r} (the git "
        f"work tree holding the manifest, or root: / --root); {what} must be inside it"
    )


@dataclass(slots=True)
class ImageLoader:
    """Turns image references into checked ``Image`` values, reading each file once."""

    base_dir: Path
    display_dir: str = ""
    """How the user spells ``base_dir`` (the manifest's directory as given), for messages."""
    root: Path | None = None
    """Files must resolve inside this directory (default: ``base_dir``)."""
    _by_path: dict[Path, Image | ImageProblem] = field(default_factory=dict)
    _by_source: dict[str, Image | ImageProblem] = field(default_factory=dict)

    def load(self, source: str) -> Image:
        """The image ``source`` names (path, https URL or data URI); ImageProblem if unusable."""
        cached = self._by_source.get(source)
        if cached is None:
            cached = self._load(source)
            self._by_source[source] = cached
        if isinstance(cached, ImageProblem):
            raise cached
        return cached

    def _load(self, source: str) -> Image | ImageProblem:
        try:
            if source.startswith("data:"):
                return self._data_uri(source)
            if _SCHEME.match(source) and not PureWindowsPath(source).drive:
                return self._url(source)
            return self._file(source)
        except ImageProblem as problem:
            return problem

    def _url(self, source: str) -> Image:
        parts = urlsplit(source)
        scheme = parts.scheme.lower()
        if scheme == "http":
            raise ImageProblem(f"{source!r} is a plain http URL; use https (or a local file)")
        if scheme != "https":
            raise ImageProblem(
                f"{source!r} uses the {scheme}: scheme; an image is a path beside the manifest, "
                "an https URL or a data: URI"
            )
        if not parts.hostname:
            raise ImageProblem(f"{source!r} is not a complete https URL (no host)")
        return Image(source=source, url=source)

    def _data_uri(self, source: str) -> Image:
        match = _DATA_URI.fullmatch(source)
        short = source[:40] + ("…" if len(source) > 40 else "")
        if match is None:
            raise ImageProblem(f"{short!r} is not a valid data URI (data:image/png;base64,...)")
        declared = match["type"].lower()
        if declared not in ("image/png", "image/jpeg", "image/jpg"):
            raise ImageProblem(f"the data URI declares {declared or 'no type'!r}; use image/png or image/jpeg")
        if "base64" not in (p.strip().lower() for p in match["params"].split(";")):
            raise ImageProblem("the data URI is not base64-encoded (data:image/png;base64,...)")
        encoded = "".join(match["data"].split())
        # Refuse before decoding when the text alone says the bytes are too big.
        if len(encoded) * 3 // 4 > MAX_IMAGE_BYTES + 3:
            raise ImageProblem(
                f"the data URI holds about {_size_text(len(encoded) * 3 // 4)}; images may be "
                f"at most 5 MB ({MAX_IMAGE_BYTES:,} bytes)"
            )
        try:
            data = binascii.a2b_base64(encoded, strict_mode=True)
        except binascii.Error as exc:
            raise ImageProblem(f"the data URI's base64 is invalid: {exc}") from exc
        media_type = check_image_bytes(data, "the data URI's image")
        if media_type.split("/")[1] not in declared:
            raise ImageProblem(f"the data URI declares {declared} but its content is {media_type}")
        return Image(
            source="data:",
            data=data,
            media_type=media_type,
            sha256=hashlib.sha256(data).hexdigest(),
        )

    def _file(self, source: str) -> Image:
        target = resolve_inside(self.base_dir, source, "an image", root=self.root)
        cached = self._by_path.get(target)
        if cached is None:
            try:
                cached = self._read(source, target)
            except ImageProblem as problem:
                cached = problem
            self._by_path[target] = cached
        if isinstance(cached, ImageProblem):
            raise cached
        if cached.source != source:
            # Same bytes, written differently: keep the manifest's spelling, share the data.
            return Image(
                source=source,
                data=cached.data,
                media_type=cached.media_type,
                sha256=cached.sha256,
            )
        return cached

    def _read(self, source: str, target: Path) -> Image:
        if not target.exists():
            shown = os.path.join(self.display_dir, source)
            raise ImageProblem(f"image {source!r} does not exist (looked for {shown!r})")
        if not target.is_file():
            raise ImageProblem(f"image {source!r} is not a file")
        size = target.stat().st_size
        if size > MAX_IMAGE_BYTES:
            raise ImageProblem(
                f"image {source!r} is {_size_text(size)}; images may be at most 5 MB "
                f"({MAX_IMAGE_BYTES:,} bytes)"
            )
        try:
            data = target.read_bytes()
        except OSError as exc:
            raise ImageProblem(f"cannot read image {source!r}: {exc.strerror}") from exc
        media_type = check_image_bytes(data, f"image {source!r}")
        return Image(
            source=source,
            data=data,
            media_type=media_type,
            sha256=hashlib.sha256(data).hexdigest(),
        )
