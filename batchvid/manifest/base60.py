"""YAML 1.1's base-60 numbers, read back as the text written.

PyYAML resolves a plain ``10:30`` to the integer 630 (and ``1:30.5`` to the float 90.5), as
YAML 1.1 says; YAML 1.2, which editors validating through the manifest's ``$schema`` line
follow, reads them as strings. A manifest means the text: ``poll_interval: 2:15`` is MIN:MAX
seconds (not 135), and a matrix value ``10:30`` goes into the prompt as ``10:30`` (not
``630``). Every such number is replaced by the scalar as it was written, found at its recorded
position in the text.

Likewise for a matrix variable that only fills in ``${name}`` (not a generation parameter,
where ``with_audio: [yes, no]`` keeps meaning true and false): ``country: [NO, SE]`` reaches
the prompt as ``NO`` (YAML 1.1 read false: "the Norway problem"), ``code: [010]`` as ``010``
(read as the octal 8).
"""

from __future__ import annotations

import re
from typing import Any

from batchvid.manifest.place import PARAMETERS
from batchvid.yamlload import PathKey, Positions

_ANYWHERE = re.compile(r"[0-9]:[0-5]?[0-9]")
_YAML11_ONLY = re.compile(
    r"(?:y|Y|yes|Yes|YES|n|N|no|No|NO|on|On|ON|off|Off|OFF"  # booleans of YAML 1.1 only
    r"|[-+]?0[0-9_]+|[-+]?0b[01_]+|[-+]?[0-9][0-9_]*_[0-9_]*)"  # octal 010, binary, 1_000
    r"(?=$|[\s,\]}#])"
)
_BASE60 = re.compile(r"[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?(?=$|[\s,\]}#])")


def restore_base60(data: Any, positions: Positions, text: str) -> Any:
    """``data`` with every number YAML read in base 60 replaced by the text written; ``data``
    itself when the text holds nothing that could be one (the common case: one scan)."""
    if _ANYWHERE.search(text) is None:
        return data
    return _restore(data, (), positions, text.splitlines())


def _restore(value: Any, path: PathKey, positions: Positions, lines: list[str]) -> Any:
    if isinstance(value, dict):
        for key, item in value.items():
            value[key] = _restore(item, (*path, key), positions, lines)
        return value
    if isinstance(value, list):
        for index, item in enumerate(value):
            value[index] = _restore(item, (*path, index), positions, lines)
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    where = positions.values.get(path)
    if where is None or where[0] > len(lines):
        return value
    line, column = where
    written = _BASE60.match(lines[line - 1], column - 1)
    return written.group(0) if written is not None else value


def restore_matrix_text(data: Any, positions: Positions, text: str) -> None:
    """Put back, as written, the values of each matrix variable that is no generation
    parameter which YAML 1.1 alone read as a boolean or a number (``NO``, ``on``, ``010``)."""
    jobs = data.get("jobs") if isinstance(data, dict) else None
    lines: list[str] | None = None
    for index, job in enumerate(jobs if isinstance(jobs, list) else []):
        matrix = job.get("matrix") if isinstance(job, dict) else None
        if not isinstance(matrix, dict):
            continue
        for name, values in matrix.items():
            if name in PARAMETERS or not isinstance(values, list):
                continue
            for position, value in enumerate(values):
                if not isinstance(value, (bool, int)):
                    continue
                where = positions.values.get(("jobs", index, "matrix", name, position))
                if where is None:
                    continue
                lines = text.splitlines() if lines is None else lines
                if where[0] <= len(lines):
                    written = _YAML11_ONLY.match(lines[where[0] - 1], where[1] - 1)
                    if written is not None:
                        values[position] = written.group(0)
