"""The provider protocols batchvid speaks, by name."""

from __future__ import annotations

import httpx

from batchvid.errors import UsageError
from batchvid.providers.base import Provider, TaskResult
from batchvid.providers.bigmodel import BigModelProvider
from batchvid.providers.geekai import GeekAIProvider

_PROVIDERS: dict[str, type[Provider]] = {
    "geekai": GeekAIProvider,
    "bigmodel": BigModelProvider,
}

PROVIDERS: tuple[str, ...] = tuple(_PROVIDERS)
"""The provider names a manifest or ``--provider`` may use; the first is the default."""

DEFAULT_PROVIDER = PROVIDERS[0]

KEY_ENV_VARS: tuple[str, ...] = tuple(name for cls in _PROVIDERS.values() for name in cls.key_env_vars)
"""Every environment variable a provider reads its API key from."""


def get_provider(name: str) -> Provider:
    """A provider protocol by name; an unknown name is a ``UsageError``."""
    try:
        cls = _PROVIDERS[name]
    except KeyError:
        known = ", ".join(PROVIDERS)
        raise UsageError(f"unknown provider {name!r}: use one of {known}") from None
    return cls()


def check_base_url(url: httpx.URL, provider: str, where: str) -> None:
    """Refuse a base URL that is another provider's API root (its host, or its path such as
    BigModel's /api/paas/v4): the request would be refused with a puzzling message (GeekAI's
    ``async`` is an unknown parameter to BigModel), so say so before anything is sent."""
    own = get_provider(provider)
    for name in PROVIDERS:
        other = get_provider(name)
        root = httpx.URL(other.default_base_url)
        if name == provider or root.path == httpx.URL(own.default_base_url).path:
            continue
        if url.host == root.host or url.path.rstrip("/") == root.path.rstrip("/"):
            raise UsageError(
                f"{where} is {other.label}'s API (its root is {other.default_base_url}) but the "
                f"provider is {provider} ({own.label}, root {own.default_base_url}): set "
                f"provider: {name} in the manifest (or --provider {name}), or point the URL at "
                f"{own.label}"
            )


__all__ = [
    "DEFAULT_PROVIDER",
    "PROVIDERS",
    "BigModelProvider",
    "GeekAIProvider",
    "Provider",
    "TaskResult",
    "check_base_url",
    "get_provider",
]
