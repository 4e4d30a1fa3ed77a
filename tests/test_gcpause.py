"""The cyclic collector's settings while a run builds or runs, and after."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from batchvid.gcpause import fewer_collections, long_lived, paused_gc


@pytest.fixture(autouse=True)
def restore_gc() -> Iterator[None]:
    threshold, enabled = gc.get_threshold(), gc.isenabled()
    assert gc.get_freeze_count() == 0
    yield
    gc.unfreeze()
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


class _Node:
    """An object the collector tracks."""


def test_long_lived_pauses_until_settled_then_sets_the_built_objects_apart() -> None:
    """Until ``settle(True)`` the collector is off; then the objects alive are frozen (no collection
    scans them) and the collector is on; leaving the block hands them back."""
    gc.enable()
    with long_lived() as settle:
        assert not gc.isenabled()
        built = [_Node() for _ in range(100)]
        settle(True)
        assert gc.isenabled()
        assert gc.get_freeze_count() >= len(built)
        assert not any(gc.is_tracked(node) and node in gc.get_objects() for node in built[:3])
    assert gc.get_freeze_count() == 0
    assert gc.isenabled()
    assert any(node is built[0] for node in gc.get_objects())


def test_long_lived_hands_back_what_it_froze_after_an_error_and_never_froze_before_settling() -> None:
    """An error before ``settle(True)`` leaves nothing frozen and the collector on; after it, the
    frozen objects are handed back all the same."""
    gc.enable()
    with pytest.raises(KeyError), long_lived():
        raise KeyError
    assert gc.isenabled() and gc.get_freeze_count() == 0
    with pytest.raises(KeyError), long_lived() as settle:
        settle(True)
        raise KeyError
    assert gc.isenabled() and gc.get_freeze_count() == 0


_OWN_FREEZE = """
import gc
from batchvid.gcpause import long_lived

gc.enable()
gc.freeze()
frozen = gc.get_freeze_count()
assert frozen > 0
with long_lived() as settle:
    settle(True)
    assert gc.isenabled() and gc.get_freeze_count() == frozen, gc.get_freeze_count()
assert gc.get_freeze_count() == frozen, (gc.get_freeze_count(), frozen)
gc.unfreeze()
gc.disable()
with long_lived() as settle:
    settle(True)
    assert not gc.isenabled() and gc.get_freeze_count() == 0
assert not gc.isenabled()
print("ok")
"""


def test_long_lived_leaves_a_process_s_own_freeze_and_a_disabled_collector_alone() -> None:
    """Objects the process froze itself stay frozen after the block (nothing is frozen on top,
    so nothing of theirs is handed back); with the collector off, it stays off throughout.
    In a fresh interpreter: the freeze count is exact only where no other thread (a test's
    server, a worker) frees a frozen object meanwhile, as one did in the suite's process."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _OWN_FREEZE], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout == "ok\n", done.stderr


def test_long_lived_without_freeze_only_pauses_until_settled() -> None:
    """``freeze=False``: off until ``settle(True)``, then on again, nothing frozen."""
    gc.enable()
    with long_lived() as settle:
        assert not gc.isenabled()
        settle(False)
        assert gc.isenabled() and gc.get_freeze_count() == 0
    assert gc.isenabled() and gc.get_freeze_count() == 0


_KEEPING = """
import os, sys
from batchvid.gcpause import keep_until_exit

class Loud:
    def __del__(self, write=os.write):
        write(1, b"freed\\n")

held = [Loud(), {"a": [1, 2]}]
if sys.argv[1] == "keep":
    keep_until_exit(held)
del held
print("end", flush=True)
"""


@pytest.mark.parametrize("keep", [False, True])
def test_what_is_kept_until_exit_stays_alive_and_is_not_freed_at_exit(keep: bool) -> None:
    """An object kept (``keep_until_exit``) outlives its last name and is not freed as the
    process shuts down; one not kept is freed when its last name goes."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _KEEPING, "keep" if keep else "free"],
                          capture_output=True, text=True, check=True)
    assert done.stdout == ("end\n" if keep else "freed\nend\n")
    assert done.stderr == ""


_CYCLE_AT_EXIT = """
import os, sys
from batchvid.gcpause import freeze_at_exit

class Loud:
    def __del__(self, write=os.write):
        write(1, b"finalized\\n")

cycle = Loud()
cycle.me = cycle  # freed only by the cyclic collector: at the latest, its passes at shutdown
if sys.argv[1] == "freeze":
    freeze_at_exit()
    freeze_at_exit()  # registered once
print("end", flush=True)
"""


@pytest.mark.parametrize("freeze", [False, True])
def test_freeze_at_exit_skips_the_collectors_passes_at_shutdown(freeze: bool) -> None:
    """A process that called ``freeze_at_exit`` shuts down without the cyclic collector's
    passes: an object in a reference cycle is not finalized, where without it the shutdown's
    collection finalizes it."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _CYCLE_AT_EXIT, "freeze" if freeze else "plain"],
                          capture_output=True, text=True, check=True)
    assert done.stdout == ("end\n" if freeze else "end\nfinalized\n")
    assert done.stderr == ""
