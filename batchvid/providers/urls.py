"""``httpx.URL`` objects made without httpx's parser for the plain URLs a run uses most.

httpx parses a URL in Python, character by character (a check for control characters, a
quoting pass per component, the authority's regular expressions): ~25-50 us each, and a job
parses three (its poll's path joined to the API root, its video's and its cover's URLs). A URL
whose every character is one httpx leaves as it is (letters, digits, ``-._~``, ``/`` between
segments that do not start with a dot, ``=`` and ``&`` in the query), with a lower-case
``http``/``https`` scheme and host, is split here by one regular expression into the
``ParseResult`` httpx itself would make (``tests/test_provider_urls.py`` compares the two on
URLs of every shape). Anything else goes to httpx, which parses or refuses it as before.
"""

from __future__ import annotations

import ipaddress
import re

import httpx
from httpx._urlparse import IPv4_STYLE_HOSTNAME, ParseResult

_SEGMENT = r"[A-Za-z0-9_~-][A-Za-z0-9._~-]*"
"""A path segment httpx neither quotes nor removes (no ``.`` or ``..``: it starts otherwise)."""

_RELATIVE = re.compile(rf"/?(?:{_SEGMENT}/)*(?:{_SEGMENT})?")
_ABSOLUTE = re.compile(
    rf"(https?)://([a-z0-9-]+(?:\.[a-z0-9-]+)*)(?::([0-9]{{1,5}}))?((?:/{_SEGMENT})*/?)"
    r"(?:\?([A-Za-z0-9._~=&-]*))?"
)
_DEFAULT_PORTS = {"http": 80, "https": 443}
_LONGEST = 4096
"""Longer URLs go to httpx (which refuses those over 65,536 characters)."""


def parsed(url: str) -> httpx.URL:
    """``httpx.URL(url)``, made without httpx's parser when ``url`` is a plain absolute one."""
    match = _ABSOLUTE.fullmatch(url) if len(url) <= _LONGEST else None
    if match is None:
        return httpx.URL(url)
    scheme, host, port, path, query = match.groups()
    if IPv4_STYLE_HOSTNAME.match(host):
        try:
            ipaddress.IPv4Address(host)
        except ipaddress.AddressValueError:
            return httpx.URL(url)  # which refuses it
    number = int(port) if port else None
    if number == _DEFAULT_PORTS[scheme]:
        number = None
    return _url(ParseResult(scheme, "", host, number, path, query, None))


def joined(base: httpx.URL, path: str) -> httpx.URL | None:
    """What ``base.copy_with(raw_path=base.raw_path + httpx.URL(path).raw_path.lstrip(b"/"))``
    gives (a relative ``path`` appended to the path of a client's ``base_url``), when ``path``
    is plain and ``base`` has neither query nor fragment; else None."""
    reference: ParseResult = base._uri_reference
    if reference.query is not None or reference.fragment is not None:
        return None
    if len(path) > _LONGEST or not _RELATIVE.fullmatch(path):
        return None
    return _url(reference._replace(path=(reference.path or "/") + path.lstrip("/")))


def _url(reference: ParseResult) -> httpx.URL:
    """The ``httpx.URL`` of an already parsed ``reference`` (what its ``__init__`` would set)."""
    url = httpx.URL.__new__(httpx.URL)
    url._uri_reference = reference
    return url
