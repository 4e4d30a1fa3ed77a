"""Image references: containment, content checks, caching (batchvid.images)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from batchvid.images import MAX_IMAGE_BYTES, ImageLoader, ImageProblem, sniff_media_type

REPO = Path(__file__).resolve().parent.parent
PNG = (REPO / "manifests" / "images" / "photo.png").read_bytes()
JPEG = (REPO / "manifests" / "images" / "photo.jpg").read_bytes()


@pytest.fixture
def loader(tmp_path: Path) -> ImageLoader:
    (tmp_path / "a.png").write_bytes(PNG)
    (tmp_path / "b.jpeg.txt").write_bytes(JPEG)
    return ImageLoader(tmp_path)


def test_shipped_images_are_real() -> None:
    """The example images are a PNG and a JPEG of a few KB."""
    assert sniff_media_type(PNG) == "image/png" and sniff_media_type(JPEG) == "image/jpeg"
    assert len(PNG) < 16_384 and len(JPEG) < 16_384


def test_local_png_is_inline(loader: ImageLoader) -> None:
    """A local PNG becomes inline bytes with its media type and sha256."""
    image = loader.load("a.png")
    assert image.data == PNG and image.media_type == "image/png" and image.url is None
    assert image.data_uri().startswith("data:image/png;base64,")


def test_content_decides_type_not_name(loader: ImageLoader) -> None:
    """A JPEG named .txt is a JPEG."""
    assert loader.load("b.jpeg.txt").media_type == "image/jpeg"


def test_each_file_is_read_once(loader: ImageLoader) -> None:
    """Two spellings of one file share the same bytes object."""
    assert loader.load("a.png").data is loader.load("./a.png").data


def test_https_url_passes_through(loader: ImageLoader) -> None:
    """An https URL is passed to the provider as written."""
    image = loader.load("https://example.com/x.jpg")
    assert image.url == "https://example.com/x.jpg" and image.data is None


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("http://example.com/x.png", "plain http URL"),
        ("ftp://example.com/x.png", "ftp: scheme"),
        ("https:///x.png", "no host"),
        ("/etc/passwd", "absolute path"),
        ("../x.png", "leaves the manifest's directory"),
        ("sub/../../x.png", "leaves the manifest's directory"),
        ("missing.png", "does not exist"),
    ],
)
def test_bad_references(loader: ImageLoader, source: str, message: str) -> None:
    """Unusable references are refused with a reason."""
    with pytest.raises(ImageProblem, match=message):
        loader.load(source)


def test_text_file_renamed_png_is_refused(tmp_path: Path) -> None:
    """A text file named .png is not an image."""
    (tmp_path / "fake.png").write_text("hello", encoding="utf-8")
    with pytest.raises(ImageProblem, match="not a PNG or JPEG"):
        ImageLoader(tmp_path).load("fake.png")


def test_image_over_limit(tmp_path: Path) -> None:
    """An image one byte over 5 MB is refused."""
    (tmp_path / "big.png").write_bytes(PNG + b"\0" * (MAX_IMAGE_BYTES + 1 - len(PNG)))
    with pytest.raises(ImageProblem, match="at most 5 MB"):
        ImageLoader(tmp_path).load("big.png")


def test_symlink_out_is_refused(tmp_path: Path) -> None:
    """A symlink resolving outside the base directory is refused."""
    (tmp_path / "out.png").write_bytes(PNG)
    base = tmp_path / "base"
    base.mkdir()
    (base / "in.png").symlink_to(tmp_path / "out.png")
    with pytest.raises(ImageProblem, match="outside the manifest's directory"):
        ImageLoader(base).load("in.png")


def test_data_uri_is_decoded_and_checked(loader: ImageLoader) -> None:
    """A PNG data URI becomes inline bytes; the source is recorded as 'data:'."""
    image = loader.load("data:image/png;base64," + base64.b64encode(PNG).decode())
    assert image.data == PNG and image.source == "data:"


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("data:image/png;base64," + base64.b64encode(b"hello").decode(), "not a PNG or JPEG"),
        ("data:image/gif;base64,R0lG", "use image/png or image/jpeg"),
        ("data:image/png,rawbytes", "not base64"),
        ("data:image/png;base64,@@@@", "base64 is invalid"),
        ("data:image/png;base64," + base64.b64encode(JPEG).decode(), "content is image/jpeg"),
    ],
)
def test_bad_data_uris(loader: ImageLoader, uri: str, message: str) -> None:
    """Data URIs get the same checks as files, plus their own form."""
    with pytest.raises(ImageProblem, match=message):
        loader.load(uri)
