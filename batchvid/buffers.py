"""glibc's malloc told to keep the memory of freed response buffers (``keep_freed_buffers``),
for the transport that receives them (``transport.py``)."""

from __future__ import annotations

import functools
import os

MMAP_THRESHOLD = 2 << 20
TRIM_THRESHOLD = 8 << 20


@functools.cache
def keep_freed_buffers() -> bool:
    """Have glibc's malloc reuse the memory of freed response buffers rather than hand it back
    to the kernel after each one; True when set (once per process).

    A body arrives as bytes objects of 64 KiB to 1 MiB (a socket read, aiohttp's copy of it, a
    piece joined for the reader). glibc serves sizes above its mmap threshold (128 KiB at
    first, then the largest block freed) from ``mmap`` and trims the top of the heap past twice
    that, so the pages of one buffer go back to the kernel and the next one faults them in
    again: ~270,000 page faults, ~1 s of kernel CPU, per GiB received. Up to 2 MiB from the
    heap, trimmed only past 8 MiB free, the same pages serve every buffer. Not on other C
    libraries, nor when the user tuned malloc (``MALLOC_*_`` or ``GLIBC_TUNABLES`` set).
    """
    try:
        libc_version = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (AttributeError, ValueError, OSError):  # Windows has no confstr, macOS not this name
        return False
    tuned = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")
    if not libc_version.startswith("glibc") or any(name in os.environ for name in tuned):
        return False
    import ctypes

    mallopt = ctypes.CDLL(None).mallopt
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    return bool(mallopt(m_mmap_threshold, MMAP_THRESHOLD) and mallopt(m_trim_threshold, TRIM_THRESHOLD))
