"""The JSON Schemas batchvid ships: ``manifest`` and ``report``.

An installed wheel carries them as package data in ``batchvid/_schemas/`` (pyproject
force-includes the repository's top-level ``schemas/`` there); an editable install reads the
repository's ``schemas/`` directly.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

SCHEMA_NAMES = ("manifest", "report")

_PACKAGE = Path(__file__).resolve().parent
_REPO_SCHEMAS = _PACKAGE.parent / "schemas"


def schema_text(name: str) -> str:
    """The text of a shipped schema, as stored (``batchvid schema NAME`` prints this)."""
    if name not in SCHEMA_NAMES:
        raise ValueError(f"unknown schema {name!r}; known: {', '.join(SCHEMA_NAMES)}")
    file_name = f"{name}.schema.json"
    for found in (_PACKAGE / "_schemas" / file_name, _REPO_SCHEMAS / file_name):
        if found.is_file():  # a wheel's package data, or this repository's (importlib.resources not imported)
            return found.read_text(encoding="utf-8")
    from importlib import resources  # a package inside a zip file

    return resources.files("batchvid").joinpath("_schemas", file_name).read_text(encoding="utf-8")


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
