"""The package's public surface stays small, sorted and importable."""

from __future__ import annotations

import batchvid


def test_all_is_sorted_and_complete() -> None:
    """__all__ is sorted and every name in it exists."""
    assert batchvid.__all__ == sorted(batchvid.__all__)
    missing = [name for name in batchvid.__all__ if not hasattr(batchvid, name)]
    assert missing == []
