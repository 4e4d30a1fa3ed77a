"""The expanded jobs a manifest describes: what is sent, and the identity that decides reuse.

These are plain values. ``batchvid.manifest`` builds them; plans, providers, the runner and the
reports read them.
"""

from __future__ import annotations

import base64
import fnmatch
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain, repeat
from operator import attrgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, overload

from batchvid.errors import Location, UsageError
from batchvid.gcpause import paused_gc

if TYPE_CHECKING:
    from batchvid.enhance.settings import EnhanceSettings

T = TypeVar("T")

# Generation parameters in the order they are shown; what each model accepts is in the schema.
GENERATION_PARAMETERS = (
    "model",
    "prompt",
    "size",
    "quality",
    "with_audio",
    "fps",
    "duration",
    "watermark",
)


@dataclass(frozen=True, slots=True, eq=False)
class Image:
    """A first-frame image, resolved and checked.

    Either ``url`` is set (an https URL passed through to the provider), or the image is inline:
    ``data`` holds its bytes, ``media_type`` is ``image/png`` or ``image/jpeg`` and ``sha256``
    is the hash of ``data``. ``source`` is how the manifest wrote it (a path, a URL, or
    ``data:`` for a data URI).
    """

    source: str
    url: str | None = None
    data: bytes | None = None
    media_type: str | None = None
    sha256: str | None = None

    def data_uri(self) -> str:
        """The value sent to the provider: the URL, or a base64 data URI of the bytes."""
        if self.url is not None:
            return self.url
        assert self.data is not None and self.media_type is not None
        return f"data:{self.media_type};base64,{base64.b64encode(self.data).decode('ascii')}"

    def describe(self) -> dict[str, Any]:
        """How the image appears in keys and in ``request.json``: never the bytes."""
        if self.url is not None:
            return {"url": self.url}
        assert self.data is not None
        return {"sha256": self.sha256, "bytes": len(self.data), "media_type": self.media_type}


@dataclass(frozen=True, slots=True)
class Job:
    """One generation to perform: one expanded request and one sample index."""

    id: str
    """Deterministic, readable, filesystem-safe and unique within the manifest."""
    key: str
    """sha256 (hex) of the canonical request plus the sample index: decides reuse."""
    index: int
    """Position in the expanded manifest: reports list jobs in this order."""
    provider: str
    params: Mapping[str, Any]
    """Generation parameters other than the image (model, prompt, size, fps, …), as written: a
    dict, or for a prompts file's rows a ``PromptParams`` equal to it (read-only either way)."""
    image: Image | None = None
    sample: int = 0
    location: Location | None = field(default=None, compare=False)
    """Where the job is defined, for messages."""
    source: str = field(default="", compare=False)
    """The id of the manifest job it was expanded from (``coffee`` for ``coffee-30-s0``)."""
    enhance: EnhanceSettings | None = None
    """How its prompt is rewritten before it is sent (``docs/enhance.md``), or None."""
    matrix: Mapping[str, Any] = field(default_factory=dict, compare=False)
    """Its matrix combination, name -> value (empty for a job without ``matrix:``)."""

    @property
    def short_key(self) -> str:
        return self.key[:12]

    @property
    def model(self) -> str:
        return str(self.params["model"])

    def canonical_params(self) -> dict[str, Any]:
        """The parameters with the image described by hash: what ``metadata.jsonl`` shows."""
        out = dict(self.params)
        if self.image is not None:
            out["image"] = self.image.describe()
        return out


class PromptParams(Mapping[str, Any]):
    """``{**shared, "prompt": prompt}`` without a dict of its own: the parameters of one of the
    many jobs that differ in their prompt alone (a prompts file's rows), 48 bytes where the
    dict takes 184. Equal to that dict, in its order (``shared`` holds a "prompt"); read-only,
    as every Job's parameters are."""

    __slots__ = ("_shared", "_prompt")

    def __init__(self, shared: dict[str, Any], prompt: str) -> None:
        self._shared, self._prompt = shared, prompt

    def __getitem__(self, name: str) -> Any:
        return self._prompt if name == "prompt" else self._shared[name]

    def get(self, name: str, default: Any = None) -> Any:
        return self._prompt if name == "prompt" else self._shared.get(name, default)

    def __contains__(self, name: object) -> bool:
        return name in self._shared

    def __iter__(self) -> Iterator[str]:
        return iter(self._shared)

    def __len__(self) -> int:
        return len(self._shared)

    def __repr__(self) -> str:
        return repr(dict(self))


def model_of(params: Mapping[str, Any]) -> str:
    """``Job.model`` of a job with these parameters."""
    return str(params["model"])


def shared_column(jobs: Iterable[Job], read: Callable[[Mapping[str, Any]], T]) -> list[T]:
    """``read(job.params)`` of each job, for a ``read`` that does not look at the prompt (the
    model, the size): read once per distinct parameters dict, so about once per template for a
    prompts file's jobs (each ``PromptParams`` reads through to its template's dict) rather than
    once per job; the rest in C-level passes (``map``)."""
    jobs = jobs if isinstance(jobs, list | tuple) else list(jobs)
    try:  # every job's params a PromptParams (a prompts file's): its template in one pass
        shared: list[Mapping[str, Any]] = list(map(_PARAMS_SHARED, jobs))
    except AttributeError:  # a plain dict stands for itself
        params = list(map(_PARAMS, jobs))
        shared = list(map(getattr, params, repeat("_shared"), params))
    return shared_dicts_column(shared, read)


def shared_dicts_column(shared: Sequence[Mapping[str, Any]], read: Callable[[Mapping[str, Any]], T]) -> list[T]:
    """``read`` of each of ``shared``, read once per distinct object (``shared_column``)."""
    if len(shared) > 1 and len(set(map(id, shared))) == 1:
        return [read(shared[0])] * len(shared)
    held = list(map(id, shared))  # each dict alive in ``shared`` meanwhile: ids stay apart
    values = {held_id: read(one) for held_id, one in dict(zip(held, shared, strict=True)).items()}
    return list(map(values.__getitem__, held))


_PARAMS, _PARAMS_SHARED = attrgetter("params"), attrgetter("params._shared")


class JobFields:
    """A ``Job``'s fields in its order, plainly assignable: ``JobFields(...).freeze()`` is
    ``Job(...)`` with every field given, at a third of the cost.

    A frozen dataclass's ``__init__`` sets each field through ``object.__setattr__``: 2-4 µs for
    a Job, which a 100,000-job manifest feels. ``freeze`` makes the filled object the Job it is
    (Python allows the class change between equal slot layouts): frozen, and equal to one built
    by ``Job(...)``.
    """

    __slots__ = ("id", "key", "index", "provider", "params", "image", "sample", "location", "source", "enhance", "matrix")

    def __init__(
        self,
        id: str,
        key: str,
        index: int,
        provider: str,
        params: Mapping[str, Any],
        image: Image | None,
        sample: int,
        location: Location | None,
        source: str,
        enhance: EnhanceSettings | None,
        matrix: Mapping[str, Any],
    ) -> None:
        self.id, self.key, self.index, self.provider, self.params, self.image = id, key, index, provider, params, image
        self.sample, self.location, self.source, self.enhance = sample, location, source, enhance
        self.matrix = matrix

    def freeze(self) -> Job:
        self.__class__ = Job  # type: ignore[assignment]
        return self  # type: ignore[return-value]


def matches(job: Job, pattern: str) -> bool:
    """Whether ``pattern`` (a case-sensitive glob) names ``job``: its id, or the manifest job
    it was expanded from (``coffee`` selects ``coffee-30-s0``)."""
    return fnmatch.fnmatchcase(job.id, pattern) or (bool(job.source) and fnmatch.fnmatchcase(job.source, pattern))


def select_jobs(jobs: Sequence[Job], patterns: Sequence[str] = ()) -> list[Job]:
    """The jobs any of ``patterns`` names (all jobs when there are none), in manifest order.

    Raises ``UsageError`` naming each pattern that selects no job, with a did-you-mean.
    """
    if not patterns:
        return list(jobs)
    hits = {pattern: False for pattern in patterns}
    chosen = []
    for job in jobs:
        named = [p for p in patterns if matches(job, p)]
        for pattern in named:
            hits[pattern] = True
        if named:
            chosen.append(job)
    missing = [pattern for pattern, hit in hits.items() if not hit]
    if missing:
        raise UsageError("\n".join(_nothing_selected(pattern, jobs) for pattern in missing))
    return chosen


def _nothing_selected(pattern: str, jobs: Sequence[Job]) -> str:
    names = list(dict.fromkeys(j.source for j in jobs if j.source))
    if len(jobs) <= 1000:
        names += [j.id for j in jobs]
    import difflib  # only to say what was meant

    close = difflib.get_close_matches(pattern, names, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"--only {pattern}: no job id matches{hint} (see `batchvid plan`)"


class MadeOnUse(Sequence[T]):
    """A sequence whose items are made on first use, all at once (``made``): then it behaves
    as the tuple of them (equal to it, hashed as it). Subclasses give ``made`` and ``__len__``."""

    __slots__ = ()

    def made(self) -> tuple[T, ...]:
        raise NotImplementedError

    @overload
    def __getitem__(self, index: int) -> T: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[T, ...]: ...
    def __getitem__(self, index: int | slice) -> T | tuple[T, ...]:
        return self.made()[index]

    def __iter__(self) -> Iterator[T]:
        return iter(self.made())

    def __contains__(self, value: object) -> bool:
        return value in self.made()

    def __reversed__(self) -> Iterator[T]:
        return reversed(self.made())

    def index(self, value: Any, start: int = 0, stop: int = sys.maxsize) -> int:
        return self.made().index(value, start, stop)

    def count(self, value: Any) -> int:
        return self.made().count(value)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, MadeOnUse):
            other = other.made()
        return self.made() == other if isinstance(other, tuple) else NotImplemented

    def __hash__(self) -> int:
        return hash(self.made())

    def __repr__(self) -> str:
        return repr(self.made())


@dataclass(frozen=True, slots=True)
class JobColumns:
    """What a plan's table shows of jobs not made yet, column by column: each job's id, key
    and parameters but the prompt (its template's dict: the model, the size), each dict
    ``shared`` holds (once or more: few), and whether none of the jobs has its prompt
    rewritten first (``enhance``)."""

    ids: list[str]
    keys: list[str]
    shared: list[dict[str, Any]]
    templates: list[dict[str, Any]]
    plain: bool

    def column(self, read: Callable[[Mapping[str, Any]], T]) -> list[T]:
        """``read`` of each job's dict (``shared_dicts_column``), without a pass over the jobs
        when every dict reads the same."""
        values = set(map(read, self.templates))
        if len(values) == 1:
            return [values.pop()] * len(self.ids)
        return shared_dicts_column(self.shared, read)


class JobSequence(MadeOnUse[Job]):
    """A manifest's jobs in order, where the many jobs of a prompts file's rows stay the columns
    they are made from (``defer``) until a job is first asked for: ``batchvid validate`` only
    counts them (``len``) and never makes them, and ``batchvid plan`` of new jobs reads their
    ``columns``. On first use every job is made at once, and the sequence then behaves as the
    tuple of them (equal to it, hashed as it)."""

    __slots__ = ("_parts", "_length", "_made", "_columns")

    def __init__(self) -> None:
        self._parts: list[list[Job] | Callable[[], Iterable[Job]]] = []
        self._length = 0
        self._made: tuple[Job, ...] | None = None
        self._columns: list[JobColumns] | None = []

    def append(self, job: Job) -> None:
        if not self._parts or not isinstance(self._parts[-1], list):
            self._parts.append([])
        self._parts[-1].append(job)  # type: ignore[union-attr]
        self._length += 1
        self._columns = None

    def defer(self, count: int, make: Callable[[], Iterable[Job]], columns: JobColumns | None = None) -> None:
        """The next ``count`` jobs are what ``make()`` gives, when a job is first asked for;
        ``columns``, if given, are theirs (``JobColumns``)."""
        self._parts.append(make)
        self._length += count
        if self._columns is not None and columns is not None:
            self._columns.append(columns)
        else:
            self._columns = None

    def columns(self) -> JobColumns | None:
        """Every job's ``JobColumns`` when every job was ``defer``red with its columns, else None."""
        parts = self._columns
        if parts is None or not parts:
            return None
        if len(parts) == 1:
            return parts[0]
        return JobColumns(
            list(chain.from_iterable(part.ids for part in parts)),
            list(chain.from_iterable(part.keys for part in parts)),
            list(chain.from_iterable(part.shared for part in parts)),
            list(chain.from_iterable(part.templates for part in parts)),
            all(part.plain for part in parts),
        )

    def made(self) -> tuple[Job, ...]:
        """Every job, made now if not yet."""
        if self._made is None:
            with paused_gc():  # as while loading: many objects that all live on, and no cycles
                made = tuple(chain.from_iterable(part if isinstance(part, list) else part() for part in self._parts))
            assert len(made) == self._length
            self._made, self._parts, self._columns = made, [], None
        return self._made

    def __len__(self) -> int:
        return self._length


@dataclass(frozen=True, slots=True)
class Manifest:
    """A validated manifest with its jobs expanded, in manifest order."""

    path: Path
    name: str
    provider: str
    jobs: Sequence[Job]
    """In manifest order: a ``JobSequence`` as loaded, or a tuple."""
    limits: Mapping[str, Any] = field(default_factory=dict)
    """``limits:`` as written: max_in_flight, requests_per_minute, retries, timeout,
    poll_interval, max_cost."""
    pricing: Mapping[str, float] = field(default_factory=dict)
    """``pricing:`` as written: model name -> price per video (overrides the built-in table)."""
    qc: Mapping[str, float] = field(default_factory=dict)
    """``qc:`` as written: quality thresholds (``batchvid.quality.check_quality``); empty, none."""
    license: str | None = None
    """``license:`` as written (a Hub license id), for report.json and the dataset card."""
    warnings: tuple[str, ...] = ()
    """``FILE:LINE:COL: $.path: warning: ...`` lines worth showing before anything is sent
    (for example a matrix of more than 5,000 jobs)."""
