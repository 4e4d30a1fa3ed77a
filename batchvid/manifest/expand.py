"""Stage three: each job expanded into requests, each request checked.

Parameters combine as defaults < job keys < prompts-file row < matrix combination; ``${name}``
in the prompt takes the combination's value. Each distinct request is checked against
``$defs/request`` once; its values are then canonicalized by the schema's types (``fps: 30.0``
is sent, and hashed, as ``30``).
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from operator import attrgetter, contains, methodcaller
from typing import Any, NamedTuple, cast

from batchvid.errors import Location
from batchvid.jobkey import canonical_json
from batchvid.manifest.context import Context, Scope
from batchvid.manifest.messages import DEFAULT_MODEL, Issue, issues, spell, suggest
from batchvid.manifest.place import PARAMETERS, Origin, Row, place
from batchvid.manifest.rows import load_rows
from batchvid.manifest.shape import Shape
from batchvid.yamlload import PathKey

MAX_JOBS = 100_000
"""Most jobs one manifest may expand into; checked before anything is expanded."""
WARN_JOBS = 5_000
"""A job whose matrix expands to more than this many jobs gets a warning with the count."""

MAX_ID_LENGTH = 200
_VARIABLE = re.compile(r"\$\$\{|\$\{([^}]*)\}")
_SLUG_UNSAFE = re.compile(r"[^a-z0-9._]+")
_STRUCTURE = frozenset({"id", "matrix", "samples", "prompts_file", "prompt", "image"})
"""Job keys without which a job is not expanded when they have an error."""


class Request(NamedTuple):
    """One expanded, checked request: what the files stage turns into jobs (one per sample)."""

    id: str
    """The expanded id, before any ``-sN`` sample suffix."""
    source: str
    """The id of the manifest job it was expanded from."""
    params: dict[str, Any]
    """Generation parameters, canonical; ``image`` is still the reference as written."""
    origin: Origin
    location: Location
    samples: int


class Template:
    """A checked, canonical request of a manifest job's row: what every row of the same shape
    (``_shape``) sends, with its own prompt put in (its position in ``params`` is the same)."""

    __slots__ = ("params", "origin")

    def __init__(self, params: dict[str, Any], origin: Origin) -> None:
        self.params = params
        """Checked and canonical: what ``_request`` made of the first row of the shape."""
        self.origin = origin
        """That row's: anything said of the request but its prompt is said of every such row."""


class SharedRows(NamedTuple):
    """Consecutive rows of one manifest job (no image in the job) that each set a prompt without
    ``${``, and whose requests are their shape's ``Template`` with their prompt: each becomes
    the jobs a ``Request`` would (``files.build_jobs``)."""

    source: str
    rows: list[Row]
    templates: list[Template]
    """Each row's, in step with ``rows``."""
    samples: int


@dataclass(frozen=True, slots=True)
class _Family:
    """One manifest job and what it multiplies into."""

    index: int
    job: Mapping[str, Any]
    rows: Sequence[Row | None]
    matrix: Mapping[str, list[Any]]
    samples: int

    @property
    def count(self) -> int:
        return len(self.rows) * math.prod(len(v) for v in self.matrix.values()) * self.samples

    def factors(self) -> str:
        parts = [f"{len(self.rows):,} rows"] if "prompts_file" in self.job else []
        parts += [f"{len(values)} {name}" for name, values in self.matrix.items()]
        parts += [f"{self.samples} samples"] if self.samples > 1 else []
        return " x ".join(parts)


def expand_jobs(context: Context, scope: Scope, jobs: list[Any], shape: Shape) -> Iterator[Request | SharedRows]:
    """Every request of every job whose structure is sound, in manifest order (lazily)."""
    total = 0
    for index, job in enumerate(jobs):
        bad = shape.bad_keys.get(index, set())
        if not isinstance(job, dict) or bad & _STRUCTURE:
            continue
        # Keys already reported are left out, so the rest of the job is still checked.
        family = _family(context, index, {k: v for k, v in job.items() if k not in bad})
        if family is None:
            continue
        total += family.count
        if total > MAX_JOBS:
            where: PathKey = ("jobs", index)
            context.error(
                context.at(where),
                where,
                f"the manifest expands to more than {MAX_JOBS:,} jobs by here; split it into several manifests",
            )
            break
        yield from _expand(context, scope, family)


def _family(context: Context, index: int, job: dict[str, Any]) -> _Family | None:
    """The job's rows, matrix and samples; None (reported) if it cannot be expanded."""
    rows: Sequence[Row | None] = [None]
    if "prompts_file" in job:
        loaded = load_rows(context, index, job["prompts_file"])
        if loaded is None:
            return None
        rows = loaded
    family = _Family(index, job, rows, job.get("matrix") or {}, job.get("samples", 1))
    count = family.count
    where: PathKey = ("jobs", index, "matrix") if family.matrix else ("jobs", index)
    location = context.at(where, key=bool(family.matrix))
    if count > MAX_JOBS:
        context.error(
            location,
            where,
            f"this job expands to {count:,} jobs ({family.factors()}); the limit is {MAX_JOBS:,} per manifest",
        )
        return None
    if family.matrix and count > WARN_JOBS:
        context.diagnostics.warn(
            location,
            where,
            f"this job expands to {count:,} jobs ({family.factors()}); "
            "check that you mean to pay for all of them before running it",
        )
    return family


def _expand(context: Context, scope: Scope, family: _Family) -> Iterator[Request | SharedRows]:
    base = {k: v for k, v in scope.defaults.items() if k in PARAMETERS}
    base.update((k, v) for k, v in family.job.items() if k in PARAMETERS)
    if not family.matrix and "prompts_file" in family.job:
        return _expand_rows(context, scope, family, base)
    return _expand_combinations(context, scope, family, base)


def _expand_combinations(
    context: Context, scope: Scope, family: _Family, base: Mapping[str, Any]
) -> Iterator[Request]:
    """The requests of every row and matrix combination, each through ``_request``."""
    names = tuple(family.matrix)
    combos = list(itertools.product(*(range(len(family.matrix[n])) for n in names)))
    values = [{n: family.matrix[n][i] for n, i in zip(names, c, strict=True)} for c in combos]
    suffixes = _combo_suffixes(names, [list(v.values()) for v in values])
    job_id: str = family.job["id"]
    job_location = context.at(("jobs", family.index))
    for row in family.rows:
        head = job_id if row is None else f"{job_id}-{row.id}"
        location = job_location if row is None else row.location
        for combo, chosen, suffix in zip(combos, values, suffixes, strict=True):
            origin = Origin(family.index, family.job, row, names, combo, chosen)
            request = _request(context, scope, origin, base, family.samples)
            if request is not None:
                expanded = f"{head}-{suffix}" if suffix else head
                yield Request(bounded_id(expanded), job_id, request, origin, location, family.samples)


def _expand_rows(
    context: Context, scope: Scope, family: _Family, base: Mapping[str, Any]
) -> Iterator[Request | SharedRows]:
    """The requests of a job with a prompts file and no matrix: ``_expand_combinations``'s, faster.

    Rows of one shape (the same keys in the same order, the same values but the prompt's), each
    with a valid prompt without ``${``, send the same request but for the prompt: once the first
    of them has passed ``_request``, the others need only their prompt checked. Runs of such
    rows go on as ``SharedRows``; a row of a shape whose request is wrong goes through
    ``_request`` itself (its problems are reported where it wrote them).
    """
    rows = cast("list[Row]", list(family.rows))  # a prompts file's: no None among them
    templates: dict[Any, Template | None] = {}
    shapes = _shared_shapes(context, rows) if "image" not in base else None
    if shapes is None:
        return _rows_in_turn(context, scope, family, base, rows, templates, None)
    return _rows_at_once(context, scope, family, base, rows, shapes, templates)


_MANY_SHAPES = 64
"""More distinct shapes than this in one prompts file: its rows go one by one."""
_FIELDS, _GET_PROMPT = attrgetter("fields"), methodcaller("get", "prompt")


def _shared_shapes(context: Context, rows: list[Row]) -> tuple[list[Any], list[int]] | None:
    """The rows' distinct ``_shape``s (in order of first appearance) and each row's number
    among them, when every row may share its shape's template (a valid prompt without ``${``,
    a shape), checked in C-level passes over the rows; else None."""
    fields_list = list(map(_FIELDS, rows))
    prompts = list(map(_GET_PROMPT, fields_list))
    if set(map(type, prompts)) != {str} or not all(prompts) or any(map(contains, prompts, repeat("$"))):
        return None
    if not context.checks.prompts_ok(prompts):
        return None
    if set(map(len, fields_list)) == {1}:  # the prompt alone
        return [()], [0] * len(rows)
    seen: dict[Any, int] = {}
    numbers = [seen.setdefault(_shape(fields) if len(fields) > 1 else (), len(seen)) for fields in fields_list]
    return None if None in seen else (list(seen), numbers)


def _rows_at_once(
    context: Context,
    scope: Scope,
    family: _Family,
    base: Mapping[str, Any],
    rows: list[Row],
    shapes: tuple[list[Any], list[int]],
    templates: dict[Any, Template | None],
) -> Iterator[Request | SharedRows]:
    """``_rows_in_turn`` of rows that all may share their shape's template (``_shared_shapes``):
    ``_request`` of each shape's first row, in row order, then the rows as one run. A shape
    whose request is wrong hands the rows after its first to ``_rows_in_turn``."""
    distinct, numbers = shapes
    if len(distinct) > _MANY_SHAPES:
        yield from _rows_in_turn(context, scope, family, base, rows, templates, None)
        return
    firsts = dict(zip(reversed(numbers), range(len(numbers) - 1, -1, -1), strict=True))
    job_id: str = family.job["id"]
    made: list[Template] = []
    for number, shape in enumerate(distinct):  # in the order of their first rows
        first = firsts[number]
        origin = Origin(family.index, family.job, rows[first], (), (), {})
        params = _request(context, scope, origin, base, family.samples)
        if params is None:  # reported; the rows before it are a run of good shapes
            templates.update(zip(distinct, made, strict=False))
            templates[shape] = None
            run = SharedRows(job_id, rows[:first], list(map(made.__getitem__, numbers[:first])), family.samples)
            yield from _rows_in_turn(context, scope, family, base, rows[first + 1 :], templates, run if first else None)
            return
        made.append(Template(params, origin))
    yield SharedRows(job_id, rows, list(map(made.__getitem__, numbers)), family.samples)


def _rows_in_turn(
    context: Context,
    scope: Scope,
    family: _Family,
    base: Mapping[str, Any],
    rows: Iterable[Row],
    templates: dict[Any, Template | None],
    run: SharedRows | None,
) -> Iterator[Request | SharedRows]:
    """``_expand_rows`` row by row, after ``templates`` and ``run`` made so far."""
    job_id: str = family.job["id"]
    no_values: dict[str, Any] = {}
    prompt_ok = context.checks.prompt_ok
    shared = "image" not in base
    for row in rows:
        prompt = row.fields.get("prompt")
        if shared and type(prompt) is str and prompt and "$" not in prompt and prompt_ok(prompt):
            shape = _shape(row.fields)
            if shape is not None and shape not in templates:  # its shape's first row: checked in full
                origin = Origin(family.index, family.job, row, (), (), no_values)
                params = _request(context, scope, origin, base, family.samples)
                templates[shape] = None if params is None else Template(params, origin)
                if params is None:
                    continue  # reported
            template = templates.get(shape) if shape is not None else None
            if template is not None:
                if run is None:
                    run = SharedRows(job_id, [], [], family.samples)
                run.rows.append(row)
                run.templates.append(template)
                continue
        if run is not None:
            yield run
            run = None
        origin = Origin(family.index, family.job, row, (), (), no_values)
        params = _request(context, scope, origin, base, family.samples)
        if params is not None:
            yield Request(bounded_id(f"{job_id}-{row.id}"), job_id, params, origin, row.location, family.samples)
    if run is not None:
        yield run


def _shape(fields: Mapping[str, Any]) -> Any:
    """What decides a row's request besides its prompt: its keys in order and its other values
    (1, 1.0 and true kept apart); None when a row must be expanded alone (an image, or a list
    or mapping where a scalar belongs)."""
    if len(fields) == 1:
        return ()
    if "image" in fields:
        return None
    shape = (tuple(fields), tuple((type(v), v) for k, v in fields.items() if k != "prompt"))
    try:
        hash(shape)
    except TypeError:
        return None
    return shape


def _request(
    context: Context, scope: Scope, origin: Origin, base: Mapping[str, Any], samples: int
) -> dict[str, Any] | None:
    """The parameters of one combination, checked and canonical; None if they are wrong."""
    params = dict(base)
    if origin.row is not None:
        params.update(origin.row.fields)
    variables: dict[str, Any] = {}
    for name, value in origin.values.items():
        if name in PARAMETERS:
            params[name] = value
        else:
            variables[name] = value
    prompt = params.get("prompt")
    substituted_ok = True
    if isinstance(prompt, str) and "$" in prompt:
        substituted = _substitute(context, scope, origin, prompt, variables)
        substituted_ok = substituted is not None
        params["prompt"] = substituted if substituted is not None else prompt
    params.setdefault("model", DEFAULT_MODEL)
    # The request is checked even when a variable is undefined: all errors at once.
    if not check_request(context, scope, origin, params) or not substituted_ok:
        return None
    return _canonical(params, context.checks.integral)


def _canonical(params: dict[str, Any], integral: frozenset[str]) -> dict[str, Any]:
    """Integral floats of integer parameters as ints: ``fps: 30.0`` is sent as ``30``."""
    for name in integral:
        value = params.get(name)
        if isinstance(value, float) and value.is_integer():
            params[name] = int(value)
    return params


def _substitute(
    context: Context, scope: Scope, origin: Origin, prompt: str, variables: Mapping[str, Any]
) -> str | None:
    missing: list[str] = []

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$${":
            return "${"
        name = match.group(1)
        if name in variables:
            return spell(variables[name])
        missing.append(name)
        return match.group(0)

    result = _VARIABLE.sub(replace, prompt)
    for name in missing:
        if variables:
            hint = suggest(name, variables) or f" (the matrix defines {', '.join(sorted(variables))})"
        else:
            hint = "; define it in this job's matrix, or write $${ for a literal ${"
        spot = place(context, scope, origin, "prompt", combination=False)
        spot.report(context, f"the prompt uses ${{{name}}}, which is not defined{hint}")
    return None if missing else result


def check_request(context: Context, scope: Scope, origin: Origin, params: dict[str, Any]) -> bool:
    """Validate one expanded request against ``$defs/request``, memoized.

    The prompt's own rules are checked separately (it is what makes most requests distinct);
    the image is checked by the files stage. Everything else goes through the schema once per
    distinct combination.
    """
    prompt = params.get("prompt")
    prompt_ok = isinstance(prompt, str) and context.checks.prompt_ok(prompt)
    memo = _memo_key(origin, params, prompt_ok)
    found: list[Issue] | None = scope.request_issues.get(memo)
    if found is None:
        probe = dict(params)
        probe["provider"] = scope.provider
        if prompt_ok:
            probe["prompt"] = "p"
        if isinstance(probe.get("image"), str) and probe["image"]:
            probe["image"] = "i"
        model = probe.get("model") if isinstance(probe.get("model"), str) else None
        found = [] if context.checks.request_ok(probe) else [
            i for e in context.checks.request.iter_errors(probe) for i in issues(e, model)
        ]
        scope.request_issues[memo] = found
    for issue in found:
        key = str(issue.path[0]) if issue.path else None
        place(context, scope, origin, key, at_key=issue.at_key, rest=issue.path[1:]).report(context, issue.message)
    return not found


def _memo_key(origin: Origin, params: dict[str, Any], prompt_ok: bool) -> Any:
    """Equal for requests the schema sees alike: one manifest job, the same parameters from
    its row and matrix besides the prompt (1, 1.0 and true kept apart), a valid prompt or the
    same one. Everything else is fixed by the job (defaults and its own keys).
    """
    fields = origin.row.fields if origin.row is not None else {}
    others: Any = ()
    if len(fields) > 1 or (fields and "prompt" not in fields):
        others = tuple((k, type(v), v) for k, v in fields.items() if k != "prompt")
    chosen: Any = ()
    if origin.values:
        chosen = tuple((k, type(v), v) for k, v in origin.values.items() if k in PARAMETERS and k != "prompt")
    key = (origin.job_index, chosen, others, True if prompt_ok else params.get("prompt"))
    try:
        hash(key)
    except TypeError:  # a list or mapping where a scalar belongs: rare, and wrong anyway
        return canonical_json({**params, "": origin.job_index})
    return key


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]


def bounded_id(expanded_id: str) -> str:
    """An expanded id cut to the limit, a hash of the whole appended when it is cut."""
    if len(expanded_id) <= MAX_ID_LENGTH:
        return expanded_id
    return expanded_id[: MAX_ID_LENGTH - 9].rstrip("-") + "-" + _digest(expanded_id)


def _slug(value: Any) -> str:
    text = _SLUG_UNSAFE.sub("-", spell(value).lower()).strip("-")
    return text[:24].rstrip("-")


def _combo_suffixes(names: Sequence[str], combos: list[list[Any]]) -> list[str]:
    """Readable id suffixes for matrix combinations (``rabbit-dawn-30``).

    A combination whose values do not survive sanitizing (empty, or colliding with another
    combination's suffix) gets a short hash of its values appended, so ids stay unique.
    """
    if not names:
        return [""] * len(combos)
    slugs = [[_slug(v) for v in combo] for combo in combos]
    plain = ["-".join(s for s in parts if s) for parts in slugs]
    counts = Counter(plain)
    out = []
    for combo, parts, text in zip(combos, slugs, plain, strict=True):
        if counts[text] > 1 or not all(parts):
            digest = _digest(canonical_json(dict(zip(names, combo, strict=True))))
            text = f"{text}-{digest}" if text else digest
        out.append(text)
    return out
