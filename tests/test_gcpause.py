"""The cyclic collector's settings while a run builds or runs, and after."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from batchvid.gcpause import fewer_collections, paused_gc


@pytest.fixture(autouse=True)
def restore_gc() -> Iterator[None]:
    threshold, enabled = gc.get_threshold(), gc.isenabled()
    yield
    gc.set_threshold(*threshold)
    (gc.enable if enabled else gc.disable)()


def test_fewer_collections_raises_the_young_threshold_inside_the_block_only() -> None:
    """Inside the block the young generation waits for ``young`` allocations; the older
    thresholds stay, and all come back after it, after an error too."""
    gc.set_threshold(700, 10, 10)
    with pytest.raises(KeyError), fewer_collections(5000):
        assert gc.get_threshold() == (5000, 10, 10)
        raise KeyError
    assert gc.get_threshold() == (700, 10, 10)


def test_fewer_collections_never_makes_collections_more_frequent() -> None:
    """A threshold already above ``young`` stays as it is, inside and after."""
    gc.set_threshold(9000, 10, 10)
    with fewer_collections(5000):
        assert gc.get_threshold() == (9000, 10, 10)
    assert gc.get_threshold() == (9000, 10, 10)


def test_paused_gc_turns_the_collector_off_inside_the_block_only() -> None:
    """The collector is off inside, on again after (it was on)."""
    gc.enable()
    with paused_gc():
        assert not gc.isenabled()
    assert gc.isenabled()
