"""A matrix's values that YAML 1.1 alone reads as booleans or numbers, put back as written.

For a matrix variable that only fills in ``${name}`` (not a generation parameter, where
``with_audio: [yes, no]`` keeps meaning true and false): ``country: [NO, SE]`` reaches the
prompt as ``NO`` (YAML 1.1 read false: "the Norway problem"), ``code: [010]`` as ``010`` (read
as the octal 8). ``yamlload`` keeps the text of each such scalar (``Positions.yaml11``); a
base-60 ``10:30`` it already reads as the text written, wherever it is.
"""

from __future__ import annotations

from typing import Any

from batchvid.manifest.place import PARAMETERS
from batchvid.yamlload import Positions


def restore_matrix_text(data: Any, positions: Positions) -> None:
    """Put back, as written, the values of each matrix variable that is no generation
    parameter which YAML 1.1 alone read as a boolean or a number (``NO``, ``on``, ``010``)."""
    if not positions.yaml11:
        return
    jobs = data.get("jobs") if isinstance(data, dict) else None
    for index, job in enumerate(jobs if isinstance(jobs, list) else []):
        matrix = job.get("matrix") if isinstance(job, dict) else None
        if not isinstance(matrix, dict):
            continue
        for name, values in matrix.items():
            if name in PARAMETERS or not isinstance(values, list):
                continue
            for position in range(len(values)):
                written = positions.yaml11.get(("jobs", index, "matrix", name, position))
                if written is not None:
                    values[position] = written
