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
_NUMBER_CHARS = frozenset("0123456789_:.+-")
_BEFORE_SCALAR = frozenset(" \t\r\n[,{:-\x85\u2028\u2029")
"""What may precede a plain scalar that begins with a digit (or a sign)."""
_BASE60 = re.compile(r"[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?(?=$|[\s,\]}#])", re.MULTILINE)
_NEWLINE = re.compile(r"\r\n|[\r\n\x85\u2028\u2029]")
_OTHER_BREAKS = re.compile(r"[\r\x85\u2028\u2029]")
_YAML11_ONLY = re.compile(
    r"(?:y|Y|yes|Yes|YES|n|N|no|No|NO|on|On|ON|off|Off|OFF"  # booleans of YAML 1.1 only
    r"|[-+]?0[0-9_]+|[-+]?0b[01_]+|[-+]?[0-9][0-9_]*_[0-9_]*)"  # octal 010, binary, 1_000
    r"(?=$|[\s,\]}#])"
)


def restore_base60(data: Any, positions: Positions, text: str) -> Any:
    """``data`` with every number YAML read in base 60 replaced by the text written. The text
    is searched for such scalars first (most manifests have none), and only the values written
    exactly there are looked at."""
    written: dict[tuple[int, int], str] = {}
    for hit in _ANYWHERE.finditer(text):
        begin = hit.start()
        while begin > 0 and text[begin - 1] in _NUMBER_CHARS:
            begin -= 1
        scalar = _BASE60.match(text, begin)
        if scalar is None or (begin > 0 and text[begin - 1] not in _BEFORE_SCALAR):
            continue
        written[_line_column(text, begin)] = scalar.group(0)
    if not written:
        return data
    for path, where in positions.values.items():
        found = written.get(where)
        if found is not None and path:
            parent = _parent(data, path)
            value = parent[path[-1]] if parent is not None else None  # type: ignore[index]
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                parent[path[-1]] = found  # type: ignore[index]
    return data


def _line_column(text: str, offset: int) -> tuple[int, int]:
    """The 1-based line and column of ``offset`` as YAML counts them (its line breaks)."""
    if _OTHER_BREAKS.search(text, 0, offset) is None:  # "\n" alone ("\r\n" ends in one)
        return text.count("\n", 0, offset) + 1, offset - text.rfind("\n", 0, offset)
    ends = [m.end() for m in _NEWLINE.finditer(text, 0, offset)]
    return len(ends) + 1, offset - (ends[-1] if ends else 0) + 1


def _parent(data: Any, path: PathKey) -> dict[str, Any] | list[Any] | None:
    node = data
    try:
        for part in path[:-1]:
            node = node[part]
    except (KeyError, IndexError, TypeError):
        return None
    return node if isinstance(node, (dict, list)) else None


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
