"""The event loop under ``anyio.run``, kept apart from ``transport`` so that choosing it does not
import the HTTP stack (a rerun with nothing to send needs none)."""

from __future__ import annotations

from typing import Any


def backend_options(use_uvloop: bool = True) -> dict[str, Any]:
    """``anyio.run(..., backend_options=...)``: uvloop when asked for and installed."""
    if not use_uvloop:
        return {}
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return {}
    return {"use_uvloop": True}
