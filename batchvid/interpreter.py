"""The Python interpreter batchvid's child processes run on (the replay-snapshot child of
``batchvid.snapshot``, the analysis workers of ``batchvid.media_pool``): this process's own,
when it is one that can be started.

Where Python is embedded (uwsgi, an application), ``sys.executable`` can be the host program,
or empty, and a frozen application's is the application itself: none of those may be started
with a child's arguments. Such a process starts no child, and does the work another way (the
workers' clips are analysed on threads) or leaves it (no snapshot: the next run writes it).
"""

from __future__ import annotations

import os
import re
import sys

_PYTHON = re.compile(r"(python|pypy)[0-9.]*(-?[a-z]+)?(\.exe)?", re.IGNORECASE)
"""An interpreter's name: python3, python3.11, python3.11d, pythonw.exe, pypy3, ..."""


def is_python(executable: str) -> bool:
    """Whether ``executable`` (``sys.executable``) is named as a Python interpreter is."""
    return bool(executable) and _PYTHON.fullmatch(os.path.basename(executable)) is not None


def python_command(*args: str) -> list[str] | None:
    """The command that runs this interpreter with ``args`` and without the working directory
    on its path (``-P``: this process's batchvid, not one in the working directory); None when
    this process has no interpreter to start (not named as one, ``is_python``, or frozen)."""
    if getattr(sys, "frozen", False) or not is_python(sys.executable):
        return None
    return [sys.executable, "-P", *args]
