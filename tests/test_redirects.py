"""``redirects``: a download's redirect followed by httpx's own client from its second step,
only on an httpx whose two private redirect steps were read for it."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from batchvid import redirects


def test_the_installed_httpx_is_one_read() -> None:
    """The installed httpx has the redirect steps ``follow`` calls, as read: when a new httpx
    fails this, read its ``_build_redirect_request`` and ``_send_handling_redirects`` before
    widening ``READ_VERSIONS`` (until then downloads go through httpx's client, correctly)."""
    assert redirects.follows_as_httpx()
    assert redirects.FOLLOWS


@pytest.mark.parametrize("version", ["0.26.0", "0.29.0", "1.0.dev3", "1.0.0", "0.28rc1", ""])
def test_other_httpx_releases_are_not_followed_from_inside(version: str) -> None:
    """An httpx release outside the ones read is not trusted with ``follow``, even with the
    same signatures: a private method can change what it does and keep them."""
    assert redirects.follows_as_httpx(httpx.__version__)
    assert not redirects.follows_as_httpx(version)


def test_a_changed_signature_is_not_followed_from_inside(monkeypatch: pytest.MonkeyPatch) -> None:
    """A redirect step taking other parameters (or missing) is not called."""

    async def go_on(self: Any, request: Any, follow_redirects: Any, history: Any, hops: Any = 0) -> Any:
        raise AssertionError

    monkeypatch.setattr(httpx.AsyncClient, "_send_handling_redirects", go_on)
    assert not redirects.follows_as_httpx()
    monkeypatch.delattr(httpx.AsyncClient, "_send_handling_redirects")
    assert not redirects.follows_as_httpx()
