"""Bulk building without the cyclic garbage collector's rescans.

Loading a 100,000-job manifest or planning it creates a few hundred thousand objects that all
live on, and no reference cycles: each collection the allocations trigger rescans them for
nothing (about a fifth of the load's time). Memory stays bounded by the input, whose size is
bounded (``MAX_JOBS``, the file size limits); reference counting frees everything else as usual.
"""

from __future__ import annotations

import atexit
import gc
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def paused_gc() -> Iterator[None]:
    """The cyclic collector off inside the block, on again after it if it was on before."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@contextmanager
def long_lived() -> Iterator[Callable[[bool], None]]:
    """The collector paused inside the block until ``settle(freeze)`` is called (as
    ``paused_gc``); then, with ``freeze``, every object alive is set apart where no collection
    scans it (``gc.freeze``) and the collector runs again, for new objects only; they are
    handed back on leaving (``gc.unfreeze``).

    For a run: the manifest, the journal's records, the plan and one outcome per job (a few
    million objects for 100,000 jobs, alive until the run ends, no cycles) are built, then
    settled. Paused alone, the first collection after the pause scanned them all at once, and
    every full collection during the run (or its report) scanned them again. Objects freed
    meanwhile are freed by reference counting as usual, but cyclic garbage alive at the freeze
    (a process's earlier work: an unclosed socket in a test session) waits for the unfreeze and
    then for a full collection: the caller freezes only a large run in a process of its own.
    Nothing is frozen when the collector was off, or when the process had frozen objects
    already (its own ``gc.freeze``: not ours to hand back).
    """
    if not gc.isenabled():
        yield lambda freeze: None
        return
    frozen = False

    def settle(freeze: bool) -> None:
        nonlocal frozen
        if not frozen and not gc.isenabled():
            if freeze and gc.get_freeze_count() == 0:
                gc.freeze()  # before enabling: the pause's allocations then trigger no catch-up
                frozen = True
            gc.enable()

    gc.disable()
    try:
        yield settle
    finally:
        gc.enable()
        if frozen:
            gc.unfreeze()


RUN_YOUNG_THRESHOLD = 7000
"""The young generation's threshold while jobs run (Python's default is 700)."""


@contextmanager
def fewer_collections(young: int = RUN_YOUNG_THRESHOLD) -> Iterator[None]:
    """The cyclic collector's young generation collected every ``young`` net allocations inside
    the block instead of every 700, then as before.

    A running job's objects (answers, headers, coroutines) die by reference counting within
    milliseconds, but hundreds of them are alive at any moment across the jobs in flight: a
    collection every 700 allocations scans them (and promotes them to be scanned again) for
    no garbage, ~0.3 ms of the event loop's CPU per job. Collections still happen, ten times
    fewer, so a cycle made meanwhile is still freed, a little later.
    """
    first, *older = gc.get_threshold()
    if first == 0 or first >= young:  # off, or already as sparse
        yield
        return
    gc.set_threshold(young, *older)
    try:
        yield
    finally:
        if gc.get_threshold()[0] == young:  # unless someone changed it meanwhile
            gc.set_threshold(first, *older)


_KEPT: list[Any] = []
"""What ``keep_until_exit`` keeps; it holds itself."""


def keep_until_exit(*objects: object) -> None:
    """Keep ``objects`` (and what they hold) alive until the process exits, and not freed then.

    For a large run in a process of its own (the CLI's), which ends once the run has: freeing
    a 100,000-job run's few million objects one by one as the command returns and the
    interpreter shuts down took ~0.5 s, for memory the process gives back by exiting anyway.
    ``_KEPT`` holds itself (a cycle: clearing the module's names at shutdown does not free
    it) and is frozen as the process exits (``atexit``), so the shutdown's last collection,
    which does not look at frozen objects, does not free it either. Only plain data belongs
    here: nothing kept is finalized (no ``__del__``, no file closed or flushed)."""
    if not _KEPT:
        _KEPT.append(_KEPT)
        freeze_at_exit()
    _KEPT.extend(objects)


_FREEZING: list[bool] = []
"""Whether ``freeze_at_exit`` registered its ``atexit`` already."""


def freeze_at_exit() -> None:
    """Skip the cyclic collector's last passes as this process shuts down: everything alive
    then is frozen (``gc.freeze`` at ``atexit``), so the interpreter's shutdown collections,
    which do not look at frozen objects, scan nothing.

    For a process that ends once its command has (the CLI's ``run``): those collections walk
    every object the process holds, the HTTP stack's modules included, to free memory the
    process gives back by exiting anyway (~100 ms of a ``batchvid run`` of 300 jobs on the
    project's 2-core VM, ~20 ms left with it). An object in a reference cycle at exit is then
    not finalized (its ``__del__`` does not run): what must reach the disk is written, flushed
    and closed before the command returns (the journal is fsynced line by line, report files
    written whole), as it must be anyway for a process that is killed. Objects freed by
    reference counting as the modules are cleared are finalized as before."""
    if not _FREEZING:
        _FREEZING.append(True)
        atexit.register(gc.freeze)


def trim_heap() -> bool:
    """Hand the C heap's free pages back to the kernel (glibc's ``malloc_trim(0)``, every
    arena); False where malloc is not glibc's or the user tuned it (``MALLOC_*_``,
    ``GLIBC_TUNABLES``).

    For a large run in the CLI's process, as its jobs end and its report files are about to be
    made, which is its peak: the download buffers' arenas (glibc keeps up to 8 MiB free in each,
    ``transport.keep_freed_buffers``) and the holes the jobs left in the main heap stay resident,
    yet the report files, made on the main thread and mostly in the interpreter's own arenas,
    reuse little of them (20,000 jobs: the run's peak 113.6 -> 107.8 MB; a few milliseconds)."""
    try:
        libc_version = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (AttributeError, ValueError, OSError):
        return False
    tuned = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")
    if not libc_version.startswith("glibc") or any(name in os.environ for name in tuned):
        return False
    import ctypes

    ctypes.CDLL(None).malloc_trim(0)
    return True
