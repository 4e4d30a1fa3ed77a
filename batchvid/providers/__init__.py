"""The provider protocols batchvid speaks, by name."""

from __future__ import annotations

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


__all__ = [
    "DEFAULT_PROVIDER",
    "PROVIDERS",
    "BigModelProvider",
    "GeekAIProvider",
    "Provider",
    "TaskResult",
    "get_provider",
]
