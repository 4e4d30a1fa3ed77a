"""What the CLI checks about a provider before anything is sent, without importing the
providers (and with them httpx): each one's API key variables, and ``--base-url`` /
``BATCHVID_BASE_URL``.

A plain URL (``http(s)://host[:port][/path]`` with a lowercase scheme, an ASCII host that is no
IDNA label, no dot segments, query, fragment or escape) has the host and path ``httpx.URL``
would give it, read with one regular expression; anything else goes through ``httpx.URL``
itself. So a rerun with nothing to send, which needs no HTTP stack, does not import one (httpx
brings rich, click and pygments with it: ~0.1 s).
"""

from __future__ import annotations

import ipaddress
import re

from batchvid.errors import UsageError

PROVIDER_ROOTS: dict[str, tuple[str, str]] = {
    "geekai": ("GeekAI", "https://geekai.co/api/v1"),
    "bigmodel": ("BigModel", "https://open.bigmodel.cn/api/paas/v4"),
}
"""Each provider's label and default base URL, in ``providers.PROVIDERS`` order: its
``Provider`` class takes them from here, so the CLI's checks need not import the providers."""

KEY_VARIABLES: dict[str, tuple[str, ...]] = {
    "geekai": ("GEEKAI_API_KEY",),
    "bigmodel": ("ZHIPUAI_API_KEY", "BIGMODEL_API_KEY"),
}
"""Each provider's ``key_env_vars`` (its ``Provider`` class takes them from here)."""


def key_variables(provider: str) -> tuple[str, ...]:
    """The environment variables ``provider`` reads its API key from; an unknown name is the
    providers' ``UsageError``."""
    names = KEY_VARIABLES.get(provider)
    if names is None:
        from batchvid.providers import get_provider

        return get_provider(provider).key_env_vars
    return names

_PLAIN = re.compile(
    r"(https?)://([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)(?::([0-9]{1,5}))?"
    r"((?:/[A-Za-z0-9_~-][A-Za-z0-9._~-]*)*/?)",
    re.ASCII,
)
_IPV4_STYLE = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+", re.ASCII)


def url_parts(value: str) -> tuple[str, str, str] | None:
    """``value``'s scheme, host and path as ``httpx.URL(value)`` has them, or None where httpx
    refuses it."""
    plain = _plain_parts(value)
    if plain is not None:
        return plain
    import httpx

    try:
        url = httpx.URL(value)
    except httpx.InvalidURL:
        return None
    return url.scheme, url.host, url.path


def _plain_parts(value: str) -> tuple[str, str, str] | None:
    match = _PLAIN.fullmatch(value)
    if match is None:
        return None
    scheme, host, port, path = match.groups()
    if "xn--" in host.lower() or (port is not None and int(port) > 65535):
        return None
    if _IPV4_STYLE.fullmatch(host):
        try:
            ipaddress.IPv4Address(host)
        except ipaddress.AddressValueError:
            return None
    return scheme, host.lower(), path or "/"


def check_base_url(value: str, provider: str, where: str) -> None:
    """Refuse a base URL that is no http(s) URL, or is another provider's API root (its host, or
    its path such as BigModel's /api/paas/v4): the request would be refused with a puzzling
    message (GeekAI's ``async`` is an unknown parameter to BigModel), so say so before anything
    is sent. ``where`` names the flag or variable."""
    parts = url_parts(value)
    if parts is None or parts[0] not in ("http", "https") or not parts[1]:
        raise UsageError(f"{where} {value!r}: expected an http(s) URL such as https://geekai.co/api/v1")
    if provider not in PROVIDER_ROOTS:
        from batchvid.providers import get_provider

        get_provider(provider)  # raises the unknown provider's UsageError
    _, host, path = parts
    own_label, own_root = PROVIDER_ROOTS[provider]
    own_path = _root_parts(own_root)[2]
    for name, (label, root) in PROVIDER_ROOTS.items():
        _, root_host, root_path = _root_parts(root)
        if name == provider or root_path == own_path:
            continue
        if host == root_host or path.rstrip("/") == root_path.rstrip("/"):
            raise UsageError(
                f"{where} {value} is {label}'s API (its root is {root}) but the provider is "
                f"{provider} ({own_label}, root {own_root}): set provider: {name} in the manifest "
                f"(or --provider {name}), or point the URL at {own_label}"
            )


def _root_parts(root: str) -> tuple[str, str, str]:
    parts = _plain_parts(root)
    assert parts is not None, root
    return parts
