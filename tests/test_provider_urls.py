"""batchvid.providers.urls: URLs made without httpx's parser equal httpx's own, and every URL
it does not make plainly goes to httpx (refused as httpx refuses it)."""

from __future__ import annotations

import random

import httpx
import pytest

from batchvid.providers import urls
from batchvid.providers.wire import endpoint

ABSOLUTE = [
    "http://127.0.0.1:8000/files/0123abcd/video.mp4",
    "https://aigc-files.bigmodel.cn/api/cogvideo/1f2e3d4c-5b6a_0.mp4",
    "https://cdn.example.com/v/clip.mp4?Expires=1700000000&Signature=abc-DEF_123&x=",
    "https://cdn.example.com:443/a.mp4", "http://cdn.example.com:80/a.mp4",
    "http://cdn.example.com:0080/a.mp4", "https://cdn.example.com:8443/a.mp4",
    "http://example.com", "http://example.com/", "http://example.com?", "http://example.com/?q=1",
    "http://example.com/a/b/", "http://example.com//a", "http://example.com/a/./b",
    "http://example.com/a/../b", "http://example.com/.hidden", "http://example.com/a.b/c..d",
    "http://1.2.3.999/a", "http://999.1.1.1/", "http://01.02.03.04/", "http://1.2.3/",
    "http://localhost:65536/", "http://localhost:99999/", "http://localhost:/a",
    "HTTP://Example.COM/A", "http://example.com/%41", "http://example.com/a b",
    "http://example.com/a?b=%zz", "http://example.com/#frag", "ftp://example.com/a",
    "http://user@example.com/", "http://[::1]:8000/a", "http://exa_mple.com/", "http://-x-.com/",
    "http://example.com/a\tb", "http://example.com/ü", "http://bücher.de/", "https://a..b/",
]


def same(make: object, expected: object) -> None:
    """Both made the same URL (``_uri_reference`` and text), or both raised InvalidURL."""
    assert type(make) is type(expected), (make, expected)
    if isinstance(expected, httpx.URL):
        assert isinstance(make, httpx.URL)
        assert make._uri_reference == expected._uri_reference
        assert str(make) == str(expected) and make.raw_path == expected.raw_path


def outcome(call: object, *args: object) -> object:
    try:
        return call(*args)  # type: ignore[operator]
    except httpx.InvalidURL as exc:
        return exc


def random_text(rng: random.Random, alphabet: str, length: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(length))


def test_absolute_urls_equal_httpx_s() -> None:
    """Every listed URL, and random ones over a tricky alphabet, parse as httpx parses them
    (or are refused alike); the plain ones without httpx's parser."""
    rng = random.Random(7)
    alphabet = "aZ09-._~/?&=%:@#!$ \t"
    extra = [
        f"http://{random_text(rng, 'ab1.-', rng.randint(1, 8))}{rng.choice(['', ':8000', ':80'])}"
        f"/{random_text(rng, alphabet, rng.randint(0, 20))}"
        for _ in range(3000)
    ]
    for url in ABSOLUTE + extra:
        same(outcome(urls.parsed, url), outcome(httpx.URL, url))


def test_plain_urls_skip_httpx_s_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    """The URLs a provider returns for its files are made without httpx's parser."""
    calls: list[str] = []
    real = httpx.URL.__init__

    def counting(self: httpx.URL, url: object = "", **kwargs: object) -> None:
        calls.append(str(url))
        real(self, url, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(httpx.URL, "__init__", counting)
    for url in ABSOLUTE[:4]:
        urls.parsed(url)
    assert calls == []
    urls.parsed("HTTP://Example.COM/A")
    assert calls == ["HTTP://Example.COM/A"]


def httpx_join(base: httpx.URL, path: str) -> httpx.URL:
    """A path joined to a base URL by httpx's parser alone, as ``endpoint`` did before."""
    url = httpx.URL(path)
    if not url.is_relative_url:
        return url
    return base.copy_with(raw_path=base.raw_path + url.raw_path.lstrip(b"/"))


@pytest.mark.parametrize("base", [
    "http://127.0.0.1:8000/api/paas/v4/", "https://open.bigmodel.cn/api/paas/v4/",
    "https://geekai.co/api/v1/", "http://u:p@host:81/root/", "http://host/", "http://host",
    "http://host/a?q=1", "http://[::1]:9/x/",
])
def test_joined_paths_equal_httpx_s(base: str) -> None:
    """A path joined to a client's base URL equals what httpx's merge makes, for plain task
    ids and for ids httpx must quote or reject."""
    root = httpx.AsyncClient(base_url=base).base_url
    rng = random.Random(3)
    paths = ["async-result/abc-123_x~y", "/videos/generations", "async-result/", "", "/",
             "async-result/a.b", "async-result/.x", "a/../b", "a//b", "//host/x", "a:b/c",
             "async-result/%41", "async-result/a b", "async-result/ü", "a?x=1", "a#f", "http://x/y"]
    paths += [random_text(rng, "aZ09-._~/%: ?#", rng.randint(0, 16)) for _ in range(1000)]
    for path in paths:
        quick = outcome(urls.joined, root, path)
        reference = outcome(httpx_join, root, path)
        if quick is not None:
            same(quick, reference)
        same(outcome(endpoint, root, path), reference)


def test_a_poll_path_is_joined_without_httpx_s_parser() -> None:
    """A poll's path under the API root (a new task id each time) is joined plainly."""
    root = httpx.AsyncClient(base_url="http://127.0.0.1:8000/api/paas/v4").base_url
    made = urls.joined(root, "async-result/8f1c2d3e-44aa")
    assert made is not None and str(made) == "http://127.0.0.1:8000/api/paas/v4/async-result/8f1c2d3e-44aa"
