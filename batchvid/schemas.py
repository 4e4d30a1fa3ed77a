"""The JSON Schemas batchvid ships: ``manifest`` and ``report``.

An installed wheel carries them as package data in ``batchvid/_schemas/`` (pyproject
force-includes the repository's top-level ``schemas/`` there); an editable install reads the
repository's ``schemas/`` directly.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from pathlib import Path
from typing import Any

SCHEMA_NAMES = ("manifest", "report")

_REPO_SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"


def schema_text(name: str) -> str:
    """The text of a shipped schema, as stored (``batchvid schema NAME`` prints this)."""
    if name not in SCHEMA_NAMES:
        raise ValueError(f"unknown schema {name!r}; known: {', '.join(SCHEMA_NAMES)}")
    file_name = f"{name}.schema.json"
    packaged = resources.files("batchvid").joinpath("_schemas", file_name)
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    return (_REPO_SCHEMAS / file_name).read_text(encoding="utf-8")


@functools.cache
def _load(name: str) -> dict[str, Any]:
    value = json.loads(schema_text(name))
    assert isinstance(value, dict)
    return value


def load_schema(name: str) -> dict[str, Any]:
    """The parsed schema ``name`` (``manifest`` or ``report``); parsed once, then cached.

    The returned dict is shared: do not modify it.
    """
    return _load(name)
