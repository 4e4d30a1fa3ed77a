"""Which jobs of a report come from one matrix, and each one's place on the matrix's axes.

report.json does not (yet) say which manifest entry a job was expanded from. When a job entry
carries ``source`` (the entry it came from) and ``matrix`` (its axis values), those are used as
they are. Otherwise the sweep is recovered from what the expansion leaves behind
(batchvid.manifest): jobs of one entry are consecutive, their ids are the entry's id followed by
the slugs of their matrix values in matrix order (and ``-s<N>`` per sample), and every matrix
value is either a parameter that varies or a word of the prompt that varies. A candidate group
is accepted only when every value it found appears in its job's id, so unrelated neighbours
with a common first word are not taken for a sweep.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

_SLUG_UNSAFE = re.compile(r"[^a-z0-9._]+")  # as batchvid.manifest slugs matrix values
_PROBE = 16


@dataclass
class Axis:
    name: str
    values: list[Any] = field(default_factory=list)

    _index: dict[str, int] = field(default_factory=dict, repr=False, compare=False)

    def index_of(self, value: Any) -> int:
        """The position of ``value`` on this axis, added at the end when new."""
        text = _spelling(value)
        if text not in self._index:
            self._index[text] = len(self.values)
            self.values.append(value)
        return self._index[text]


@dataclass
class Sweep:
    """Jobs (by position in the report) expanded from one matrix entry."""

    name: str
    axes: list[Axis]
    members: list[int]
    """Positions of the jobs in the report, in manifest order."""
    coordinates: list[list[int]]
    """Per member, the index of its value on each axis."""
    template: str | None = None
    """The prompt with its varying words shown as ‹1›, ‹2›, … (heuristic sweeps only)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "axes": [{"name": a.name, "values": [_spelling(v) for v in a.values]} for a in self.axes],
            "members": self.members,
            "coords": self.coordinates,
            "template": self.template,
        }


def _spelling(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _slug(value: Any) -> str:
    return _SLUG_UNSAFE.sub("-", _spelling(value).lower()).strip("-")[:24].rstrip("-")


def find_sweeps(jobs: Sequence[Mapping[str, Any]]) -> list[Sweep]:
    """Every sweep among ``jobs`` (report.json's job entries, in manifest order)."""
    if any(isinstance(j.get("matrix"), Mapping) for j in jobs):
        return _declared_sweeps(jobs)
    sweeps = []
    for run in _runs(jobs):
        sweep = _recover(jobs, run)
        if sweep is not None:
            sweeps.append(sweep)
    return sweeps


def _declared_sweeps(jobs: Sequence[Mapping[str, Any]]) -> list[Sweep]:
    groups: dict[str, Sweep] = {}
    for position, job in enumerate(jobs):
        matrix = job.get("matrix")
        if not isinstance(matrix, Mapping) or not matrix:
            continue
        source = str(job.get("source", ""))
        sweep = groups.get(source)
        if sweep is None:
            sweep = groups[source] = Sweep(source, [Axis(str(n)) for n in matrix], [], [])
        if [a.name for a in sweep.axes] != [str(n) for n in matrix]:
            continue
        sweep.members.append(position)
        sweep.coordinates.append([a.index_of(v) for a, v in zip(sweep.axes, matrix.values(), strict=True)])
    return [s for s in groups.values() if len(s.members) > 1]


def _stem(job: Mapping[str, Any]) -> str:
    """The id without its ``-s<N>`` sample suffix."""
    job_id, suffix = str(job["id"]), f"-s{job.get('sample', 0)}"
    return job_id.removesuffix(suffix)


def _runs(jobs: Sequence[Mapping[str, Any]]) -> list[list[int]]:
    """Maximal runs of consecutive jobs whose ids share their first word."""
    runs: list[list[int]] = []
    first_word = None
    for position, job in enumerate(jobs):
        word = str(job["id"]).split("-", 1)[0]
        if runs and word == first_word:
            runs[-1].append(position)
        else:
            runs.append([position])
            first_word = word
    return [r for r in runs if len(r) > 1]


def _parameter_axes(entries: Sequence[Mapping[str, Any]]) -> list[tuple[str, list[Any]]]:
    names = sorted({k for e in entries for k in e["parameters"] if k not in ("prompt", "image")})
    axes = []
    for name in names:
        values = [e["parameters"].get(name) for e in entries]
        if len({_spelling(v) for v in values}) > 1:
            axes.append((name, values))
    return axes


def _prompt_axes(prompts: Sequence[str]) -> tuple[list[list[str]], str] | None:
    """Per varying stretch of words, each prompt's words there; and the template. None when the
    prompts do not line up word for word."""
    words = [p.split(" ") for p in prompts]
    if len({len(w) for w in words}) != 1:
        return None
    varying = [i for i in range(len(words[0])) if len({w[i] for w in words}) > 1]
    stretches: list[list[int]] = []
    for i in varying:
        if stretches and stretches[-1][-1] == i - 1:
            stretches[-1].append(i)
        else:
            stretches.append([i])
    template = list(words[0])
    for n, stretch in enumerate(stretches, start=1):
        template[stretch[0]] = f"‹{n}›"
        for i in stretch[1:]:
            template[i] = ""
    columns = [[" ".join(w[i] for i in stretch) for w in words] for stretch in stretches]
    return columns, " ".join(t for t in template if t)


def _recover(jobs: Sequence[Mapping[str, Any]], run: list[int]) -> Sweep | None:
    # Part of a sweep is a sweep: a long run (a prompts file) is refused from its first jobs.
    if len(run) > _PROBE and _recover(jobs, run[:_PROBE]) is None:
        return None
    entries = [jobs[p] for p in run]
    stems = [_stem(e) for e in entries]
    prompts = [str(e["parameters"].get("prompt") or "") for e in entries]
    found = _prompt_axes(prompts) if len(set(prompts)) > 1 else ([], None)
    if found is None:
        return None
    prompt_columns, template = found
    named = [(f"‹{n}›", column) for n, column in enumerate(prompt_columns, start=1)]
    named += _parameter_axes(entries)
    if not named and len(set(stems)) > 1:
        return None
    spelled = [f"-{stem}-" for stem in stems]
    for _, column in named:
        if not all(f"-{_slug(v)}-" in text for v, text in zip(column, spelled, strict=True)):
            return None  # a value the id does not carry: not one matrix
    # Axes in the order the ids spell them, which is the manifest's matrix order; the name is
    # what comes before the first value.
    starts = {name: spelled[0].find(f"-{_slug(column[0])}-") for name, column in named}
    named.sort(key=lambda axis: starts[axis[0]])
    name = spelled[0][: min(starts.values(), default=len(spelled[0]))].strip("-") or stems[0]
    axes = [Axis(axis_name) for axis_name, _ in named]
    coordinates = [
        [axis.index_of(column[i]) for axis, (_, column) in zip(axes, named, strict=True)]
        for i in range(len(entries))
    ]
    return Sweep(name, axes, run, coordinates, template if prompt_columns else None)
