"""The package's modules stay readable: none passes 500 lines (the project's style guide:
"Modules stay around 500 lines or fewer"; split a module by a coherent piece before it does)."""

from __future__ import annotations

from pathlib import Path

import batchvid

MAX_LINES = 500


def test_no_module_of_the_package_passes_500_lines() -> None:
    """Every .py file under batchvid/ has at most 500 lines."""
    root = Path(batchvid.__file__).parent
    sizes = {str(p.relative_to(root)): len(p.read_text(encoding="utf-8").splitlines())
             for p in sorted(root.rglob("*.py"))}
    assert len(sizes) > 50  # the package itself, not an empty folder
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}
