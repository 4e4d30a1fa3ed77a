"""Where the parameters of one expanded request were written, for its error messages.

A request mixes defaults, the job's keys, a prompts-file row and a matrix combination; a
problem with one parameter is reported where that parameter was written.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from batchvid.errors import Location
from batchvid.jobs import GENERATION_PARAMETERS
from batchvid.manifest.context import Context, Scope
from batchvid.manifest.messages import spell
from batchvid.yamlload import PathKey, format_path

PARAMETERS = frozenset((*GENERATION_PARAMETERS, "image"))
"""Keys that set a generation parameter (in defaults, jobs, rows and matrices)."""


class Row(NamedTuple):
    """One row of a prompts file: its place, its id part and the parameters it sets."""

    number: int
    """0-based, among the file's rows: ``prompts_file[number]`` in messages."""
    location: Location
    id: str
    fields: dict[str, Any]


class Origin(NamedTuple):
    """The pieces one expanded request was built from (a tuple: one is made per request)."""

    job_index: int
    """Which entry of ``jobs:``."""
    job: Mapping[str, Any]
    row: Row | None
    names: tuple[str, ...]
    """The matrix's names, in the order written."""
    combo: tuple[int, ...]
    """The index of each name's value in this combination."""
    values: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Spot:
    """Where to report a problem: location, JSON path, and a format string for the message."""

    location: Location
    path: str
    shape: str = "{}"

    def report(self, context: Context, message: str) -> None:
        context.error(self.location, self.path, self.shape.format(message))


def place(
    context: Context,
    scope: Scope,
    origin: Origin,
    key: str | None,
    *,
    at_key: bool = False,
    rest: PathKey = (),
    combination: bool = True,
    image_value: bool = False,
) -> Spot:
    """Where a problem with parameter ``key`` (None: the request as a whole) was written."""
    job_path: PathKey = ("jobs", origin.job_index)
    in_matrix = key is not None and key in origin.names
    model_in_matrix = key in ("size", "duration") and "model" in origin.names
    if in_matrix and image_value:
        value_path = (*job_path, "matrix", "image", origin.combo[origin.names.index("image")])
        return Spot(context.at(value_path), format_path(value_path))
    if (in_matrix or model_in_matrix) and combination:
        return _combination(context, origin, key)
    row = origin.row
    if row is not None and (key is None or key in row.fields):
        row_path = format_path((*job_path, "prompts_file")) + f"[{row.number}]"
        suffix = format_path((key, *rest))[1:] if key is not None else ""
        return Spot(row.location, row_path + suffix)
    if key is not None and key in origin.job:
        path = (*job_path, key, *rest)
        return Spot(context.at(path, key=at_key), format_path(path))
    if key is not None and key in scope.defaults:
        line = context.at(("defaults", key)).line
        shape = f"{{}} ({key} comes from defaults, line {line})"
        return Spot(context.at(job_path), format_path((*job_path, key)), shape)
    if row is not None:
        return Spot(row.location, format_path((*job_path, "prompts_file")) + f"[{row.number}]")
    return Spot(context.at(job_path), format_path(job_path))


def _combination(context: Context, origin: Origin, key: str | None) -> Spot:
    shown = [n for n in origin.names if n in PARAMETERS or key == "prompt"]
    pairs = ", ".join(f"{n}: {spell(origin.values[n])}" for n in shown)
    matrix_path = ("jobs", origin.job_index, "matrix")
    return Spot(context.at(matrix_path, key=True), format_path(matrix_path), f"combination {{{{{pairs}}}}}: {{}}")
