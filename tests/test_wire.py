"""The URLs the wire sends to: the same as httpx would make, parsed once."""

from __future__ import annotations

import httpx
import pytest

from batchvid.providers.answers import http_url, parse_url
from batchvid.providers.wire import endpoint

BASES = ["http://127.0.0.1:8000/api/paas/v4", "https://geekai.co/api/v1/", "http://h/a%20b/", "http://h",
         "http://u:p@h:80/x/", "http://h/x/?q=1", "http://[::1]:8000/api/", "HTTPS://H.Example:443/V1/", "http://ü.example/a/"]
PATHS = [
    "videos/generations", "/videos/generations", "async-result/ab%2Fc", "task/123?x=1",
    "async-result/%E4%BD%A0", "http://other.example/x", "",
    # plain paths, joined to the base's text (``endpoint``'s short way), and near misses
    "async-result/abc-123_x.y~z", "a/./b", "a/../b", ".hidden/x", "a//b", "//evil.example/x", "a/",
    "/", "a b", "-x", "async-result/ü",
]


@pytest.mark.parametrize("base", BASES)
@pytest.mark.parametrize("path", PATHS)
def test_endpoint_is_the_url_httpx_makes_of_a_path_under_the_base_url(base: str, path: str) -> None:
    """``endpoint`` merges a path into a client's base URL exactly as the client would."""
    client = httpx.AsyncClient(base_url=base)
    expected = client.build_request("GET", path).url
    endpoint.cache_clear()
    made = endpoint(client.base_url, path)
    sent = client.build_request("GET", made).url
    assert str(sent) == str(expected) == str(made)
    assert sent.raw_path == expected.raw_path == made.raw_path
    assert made == expected


def test_a_checked_result_url_is_parsed_once_for_its_download() -> None:
    """The URL ``http_url`` accepted is the very ``httpx.URL`` the download then takes."""
    url = "http://127.0.0.1:1/files/abc/video.mp4?sig=1"
    assert http_url(f"  {url} ") == url
    assert parse_url(url) is parse_url(url)
    assert http_url("http://bad host/\x00") is None
