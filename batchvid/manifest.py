"""The manifest language: load, validate and expand a manifest into jobs.

The path a manifest takes::

    bytes --(yamlload: UTF-8, size, YAML with positions)--> values + positions
          --(manifest schema)--> shape errors, each at FILE:LINE:COL
          --(expansion: defaults < job keys < prompts-file row < matrix combination)--> requests
          --(schema $defs/request, once per distinct request)--> per-model errors
          --(images: containment, magic bytes, 5 MB)--> Job(id, key, ...)

Every problem found along the way is collected and raised at once as ``ManifestErrors``; a
manifest either loads completely or not at all. ``schemas/manifest.schema.json`` is the single
source of truth for what each model and provider accepts, including the wording of the errors
(its ``x-messages`` keys).
"""

from __future__ import annotations

import csv
import difflib
import functools
import hashlib
import io
import itertools
import json
import math
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import (
    ValidationError,
    best_match,
)
from jsonschema.protocols import Validator

from batchvid.errors import Location, ManifestError, ManifestErrors
from batchvid.images import ImageLoader, ImageProblem, resolve_inside
from batchvid.jobs import GENERATION_PARAMETERS, Image, Job, Manifest, canonical_json, job_key
from batchvid.schemas import load_schema
from batchvid.yamlload import (
    MAX_MANIFEST_BYTES,
    PathKey,
    Positions,
    format_path,
    load_yaml,
    read_text,
)

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_PROVIDER",
    "MAX_JOBS",
    "load_manifest",
    "validate_files",
]

DEFAULT_PROVIDER = "geekai"
DEFAULT_MODEL = "cogvideox-flash"
MAX_JOBS = 100_000
"""Most jobs one manifest may expand into; checked before anything is expanded."""
MAX_PROMPTS_FILE_BYTES = 50 * 1024 * 1024

PARAMETERS = frozenset((*GENERATION_PARAMETERS, "image"))
"""Keys that set a generation parameter (in defaults, jobs, rows and matrices)."""

_VARIABLE = re.compile(r"\$\$\{|\$\{([^}]*)\}")
_SLUG_UNSAFE = re.compile(r"[^a-z0-9._]+")
_CSV_BOOLEANS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
_CSV_INTEGERS = frozenset({"fps", "duration"})
_MAX_ID_LENGTH = 200
_STRUCTURE = frozenset({"id", "matrix", "samples", "prompts_file"})
"""Job keys that shape the expansion: a job with an error in one of them is not expanded."""


# --- public entry points ---------------------------------------------------------------------


def load_manifest(path: str | os.PathLike[str], *, provider_override: str | None = None) -> Manifest:
    """Load, validate and expand the manifest at ``path``.

    ``provider_override`` (the ``--provider`` flag) replaces the manifest's ``provider:`` before
    validation. Raises ``ManifestErrors`` with every problem found, each located at
    ``FILE:LINE:COLUMN`` where FILE is ``path`` as given.
    """
    return _Loader(path, provider_override).load()


def validate_files(
    paths: Iterable[str | os.PathLike[str]], *, provider_override: str | None = None
) -> list[ManifestError]:
    """Every problem in every manifest of ``paths`` (an empty list when all are valid)."""
    errors: list[ManifestError] = []
    for path in paths:
        try:
            load_manifest(path, provider_override=provider_override)
        except ManifestErrors as exc:
            errors.extend(exc.errors)
    return errors


# --- schema validators and readable messages -------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Validators:
    manifest: Validator
    request: Validator
    prompt: Validator
    row_id: Validator


@functools.cache
def _validators() -> _Validators:
    schema = load_schema("manifest")
    root = Draft202012Validator(schema)
    defs = schema["$defs"]
    return _Validators(
        manifest=root,
        request=root.evolve(schema=defs["request"]),
        prompt=root.evolve(schema=defs["prompt"]),
        row_id=root.evolve(schema=defs["id"]),
    )


@dataclass(frozen=True, slots=True)
class _Issue:
    """One readable problem, at ``path`` relative to the validated instance."""

    path: PathKey
    message: str
    at_key: bool = False
    """Point at the key that names ``path`` (unknown or unsupported keys), not its value."""


_TYPE_NAMES = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "object": "a mapping (key: value)",
    "array": "a list",
    "null": "empty",
}


def _show(value: Any) -> str:
    """A short spelling of a value for messages."""
    if isinstance(value, str):
        text = value if len(value) <= 60 else value[:57] + "…"
        return repr(text)
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "an empty value"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "…"


def _suggest(word: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _known_keys(schema: Mapping[str, Any]) -> list[str]:
    properties = schema.get("properties", {})
    return [k for k, v in properties.items() if "not" not in v and v.get("$ref") != "#/$defs/unsupported"]


def _issues(error: ValidationError, model: str | None) -> Iterator[_Issue]:
    """Readable issues for one jsonschema error (custom wording from ``x-messages``)."""
    path: PathKey = tuple(error.absolute_path)
    keyword = str(error.validator)
    schema = error.schema if isinstance(error.schema, dict) else {}
    instance = error.instance
    on_name = "propertyNames" in error.absolute_schema_path
    if on_name:
        path = (*path, str(instance))
    template = schema.get("x-messages", {}).get(keyword)
    if template is not None:
        fields = {
            "value": _show(instance),
            "key": str(path[-1]) if path else "",
            "model": model or DEFAULT_MODEL,
            "length": len(instance) if isinstance(instance, str) else 0,
            "enum": ", ".join(str(v) for v in error.validator_value)
            if isinstance(error.validator_value, list)
            else "",
        }
        yield _Issue(path, template.format(**fields), at_key=on_name or keyword == "not")
        return
    if keyword == "additionalProperties" and isinstance(instance, dict):
        known = _known_keys(schema)
        allowed = set(schema.get("properties", {}))
        for key in instance:
            if key not in allowed:
                yield _Issue((*path, key), f"unknown key {key!r}{_suggest(key, known)}", at_key=True)
        return
    if keyword == "required" and isinstance(instance, dict):
        for key in error.validator_value:  # type: ignore[union-attr]
            if key not in instance:
                yield _Issue(path, f"missing required key {key!r}")
        return
    if keyword in ("anyOf", "oneOf") and error.context:
        yield from _issues(best_match(error.context), model)
        return
    yield _Issue(path, _generic_message(error, keyword, instance), at_key=on_name)


def _generic_message(error: ValidationError, keyword: str, instance: Any) -> str:
    expected = error.validator_value
    if keyword == "type":
        types = expected if isinstance(expected, list) else [expected]
        wanted = " or ".join(_TYPE_NAMES.get(str(t), str(t)) for t in types)
        return f"{_show(instance)} is not {wanted}"
    if keyword == "enum":
        return f"{_show(instance)} is not one of {', '.join(_show(v) for v in expected)}"  # type: ignore[union-attr]
    if keyword == "const":
        return f"must be {_show(expected)}"
    if keyword == "minimum":
        return f"{_show(instance)} is less than the minimum, {expected}"
    if keyword == "maximum":
        return f"{_show(instance)} is more than the maximum, {expected}"
    if keyword == "exclusiveMinimum":
        return f"{_show(instance)} must be greater than {expected}"
    if keyword == "minLength":
        return "must not be empty"
    if keyword == "maxLength":
        return f"is {len(instance)} characters long; the limit is {expected}"
    if keyword in ("minItems", "minProperties"):
        return "must not be empty"
    if keyword == "pattern":
        return f"{_show(instance)} does not have the expected form ({expected})"
    message = str(error.message)
    return message if len(message) <= 200 else message[:197] + "…"


# --- prompts files ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Row:
    """One row of a prompts file: its place, its id part and the parameters it sets."""

    index: int
    location: Location
    id: str
    fields: dict[str, Any]


def _row_id(fields: Mapping[str, Any]) -> str:
    """An id for a row without one, from its content: inserting a row moves no other id."""
    return hashlib.sha256(canonical_json(fields).encode("utf-8")).hexdigest()[:8]


def _coerce_csv(column: str, value: str) -> Any:
    if column in _CSV_INTEGERS and re.fullmatch(r"[+-]?\d+", value.strip()):
        return int(value)
    if column in ("with_audio", "watermark") and value.strip().lower() in _CSV_BOOLEANS:
        return _CSV_BOOLEANS[value.strip().lower()]
    return value


def _parse_rows(
    text: str, suffix: str
) -> tuple[list[tuple[int, dict[str, Any]]], list[tuple[int, int, str]]]:
    """(line, raw fields) rows and (line, column, message) problems of a prompts file."""
    rows: list[tuple[int, dict[str, Any]]] = []
    problems: list[tuple[int, int, str]] = []
    if suffix == ".txt":
        for number, line in enumerate(text.splitlines(), start=1):
            stripped = line.strip()
            if stripped and not stripped.startswith("#"):
                rows.append((number, {"prompt": stripped}))
    elif suffix == ".jsonl":
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                problems.append((number, exc.colno, f"not a JSON line: {exc.msg}"))
                continue
            if not isinstance(value, dict):
                problems.append((number, 1, "each line must be a JSON object, like {\"prompt\": \"...\"}"))
                continue
            rows.append((number, value))
    else:  # .csv
        reader = csv.reader(io.StringIO(text, newline=""))
        try:
            header = next(reader, None)
            if header is None:
                problems.append((1, 1, "the CSV file is empty; it needs a header row, like 'id,prompt'"))
                return rows, problems
            columns = [name.strip() for name in header]
            start = reader.line_num + 1
            for record in reader:
                if any(cell.strip() for cell in record):
                    if len(record) > len(columns):
                        problems.append((start, 1, f"the row has {len(record)} cells; the header has {len(columns)}"))
                    else:
                        fields = {
                            column: _coerce_csv(column, cell)
                            for column, cell in zip(columns, record, strict=False)
                            if column and cell.strip() != ""
                        }
                        rows.append((start, fields))
                start = reader.line_num + 1
        except csv.Error as exc:
            problems.append((reader.line_num, 1, f"CSV error: {exc}"))
    return rows, problems


# --- the loader ------------------------------------------------------------------------------


class _Loader:
    """One manifest's load: the source, what was found wrong, the jobs built so far."""

    def __init__(self, path: str | os.PathLike[str], provider_override: str | None) -> None:
        self.display = os.fspath(path)
        self.path = Path(path)
        self.base_dir = self.path.parent
        self.provider_override = provider_override
        self.errors: dict[tuple[Location, str, str], ManifestError] = {}
        self.validators = _validators()
        self.images = ImageLoader(self.base_dir, os.path.dirname(self.display))
        self.positions = Positions(self.display)
        self.data: dict[str, Any] = {}
        self.provider = DEFAULT_PROVIDER
        self.defaults: dict[str, Any] = {}
        self.jobs: list[Job] = []
        self.ids: dict[str, tuple[Location, int]] = {}
        self.keys: dict[str, str] = {}
        self.request_issues: dict[str, list[_Issue]] = {}
        self.total = 0

    # errors

    def error(self, location: Location, path: PathKey | str, message: str) -> None:
        shown = path if isinstance(path, str) else format_path(path)
        self.errors.setdefault((location, shown, message), ManifestError(location, shown, message))

    def fail_if_errors(self) -> None:
        if self.errors:
            raise ManifestErrors(self.errors.values())

    def at(self, path: PathKey, *, key: bool = False) -> Location:
        return self.positions.of_key(path) if key else self.positions.of_value(path)

    # stages

    def load(self) -> Manifest:
        text = read_text(self.path, self.display, max_bytes=MAX_MANIFEST_BYTES, what="manifest")
        document = load_yaml(text, self.display)
        self.positions = document.positions
        data = document.data
        if not isinstance(data, dict):
            got = "empty" if data is None else f"{_show(data)}"
            self.error(
                self.at(()),
                (),
                f"the top level of a manifest must be a mapping, starting with 'version: 1' (got {got})",
            )
            self.fail_if_errors()
        assert isinstance(data, dict)
        if self.provider_override is not None:
            data["provider"] = self.provider_override
        self.data = data
        bad_jobs, blocked = self.check_shape()
        if blocked or not isinstance(data.get("jobs"), list):
            self.fail_if_errors()  # without valid defaults or provider, expansion would mislead
        self.provider = data.get("provider", DEFAULT_PROVIDER)
        self.defaults = data.get("defaults", {})
        for index, job in enumerate(data["jobs"]):
            bad_keys = bad_jobs.get(index, set())
            if bad_keys & _STRUCTURE or bad_keys & {"prompt", "image"} or not isinstance(job, dict):
                continue
            # Keys already reported are left out, so the rest of the job is still checked.
            clean = {k: v for k, v in job.items() if k not in bad_keys}
            if not self.expand_job(index, clean):
                break
        self.fail_if_errors()
        return Manifest(
            path=self.path,
            name=data.get("name") or self.path.stem,
            provider=self.provider,
            jobs=tuple(self.jobs),
            limits=dict(data.get("limits", {})),
            pricing=dict(data.get("pricing", {})),
        )

    def check_shape(self) -> tuple[dict[int, set[str]], bool]:
        """Validate against the manifest schema: (job index -> keys with errors, blocked).

        An error on a job as a whole counts as an error on its ``id``.
        Errors in ``version``, ``provider`` or ``defaults`` block expansion, since every job
        depends on them. An unknown version hides every other error: the rest of the file
        may be written in another version of the language.
        """
        bad_jobs: dict[int, set[str]] = {}
        issues: list[_Issue] = []
        for error in self.validators.manifest.iter_errors(self.data):
            issues.extend(_issues(error, self.model_near(tuple(error.absolute_path))))
        if "version" in self.data and any(issue.path[:1] == ("version",) for issue in issues):
            issues = [issue for issue in issues if issue.path[:1] == ("version",)]
        blocked = False
        for issue in issues:
            self.error(self.at(issue.path, key=issue.at_key), issue.path, issue.message)
            blocked = blocked or issue.path[:1] in (("version",), ("provider",), ("defaults",))
            if len(issue.path) >= 2 and issue.path[0] == "jobs" and isinstance(issue.path[1], int):
                key = str(issue.path[2]) if len(issue.path) > 2 else "id"
                bad_jobs.setdefault(issue.path[1], set()).add(key)
        # Ids must be unique as written, even when their expansions differ.
        seen: dict[str, int] = {}
        jobs = self.data.get("jobs")
        for index, job in enumerate(jobs if isinstance(jobs, list) else []):
            job_id = job.get("id") if isinstance(job, dict) else None
            if not isinstance(job_id, str):
                continue
            if job_id in seen:
                first = self.at(("jobs", seen[job_id], "id"))
                self.error(
                    self.at(("jobs", index, "id")),
                    ("jobs", index, "id"),
                    f"duplicate job id {job_id!r} (also at {first})",
                )
                bad_jobs.setdefault(index, set()).add("id")
            else:
                seen[job_id] = index
        return bad_jobs, blocked

    def model_near(self, path: PathKey) -> str | None:
        """The model in force around ``path`` (for messages): the nearest mapping's, or the default."""
        node: Any = self.data
        found: str | None = None
        for part in path:
            if isinstance(node, dict) and isinstance(node.get("model"), str):
                found = node["model"]
            try:
                node = node[part]
            except (KeyError, IndexError, TypeError):
                break
        if isinstance(node, dict) and isinstance(node.get("model"), str):
            found = node["model"]
        return found

    # expansion

    def expand_job(self, index: int, job: dict[str, Any]) -> bool:
        """Expand ``jobs[index]``; False once the manifest has passed the job cap."""
        job_id: str = job["id"]
        where: PathKey = ("jobs", index)
        base = {k: v for k, v in self.defaults.items() if k in PARAMETERS}
        base.update((k, v) for k, v in job.items() if k in PARAMETERS)
        rows: Sequence[_Row | None] = [None]
        if "prompts_file" in job:
            loaded = self.load_rows(index, job["prompts_file"])
            if loaded is None:
                return True
            rows = loaded
        matrix: dict[str, list[Any]] = job.get("matrix") or {}
        names = list(matrix)
        samples: int = job.get("samples", 1)
        count = len(rows) * math.prod(len(values) for values in matrix.values()) * samples
        if count > MAX_JOBS:
            factors = [f"{len(rows):,} rows"] if "prompts_file" in job else []
            factors += [f"{len(matrix[n])} {n}" for n in names]
            factors += [f"{samples} samples"] if samples > 1 else []
            self.error(
                self.at((*where, "matrix") if matrix else where, key=bool(matrix)),
                (*where, "matrix") if matrix else where,
                f"this job expands to {count:,} jobs ({' x '.join(factors)}); "
                f"the limit is {MAX_JOBS:,} per manifest",
            )
            return True
        self.total += count
        if self.total > MAX_JOBS:
            self.error(
                self.at(where),
                where,
                f"the manifest expands to more than {MAX_JOBS:,} jobs by here; split it into several manifests",
            )
            return False
        combos = list(itertools.product(*(range(len(matrix[n])) for n in names)))
        suffixes = _combo_suffixes(names, [[matrix[n][i] for n, i in zip(names, c, strict=True)] for c in combos])
        job_location = self.at(where)
        for row in rows:
            for combo, suffix in zip(combos, suffixes, strict=True):
                values = {n: matrix[n][i] for n, i in zip(names, combo, strict=True)}
                parts = [job_id]
                if row is not None:
                    parts.append(row.id)
                if suffix:
                    parts.append(suffix)
                self.expand_request(
                    index, job, base, row, names, combo, values, "-".join(parts),
                    row.location if row is not None else job_location, samples,
                )
        return True

    def expand_request(
        self,
        index: int,
        job: dict[str, Any],
        base: dict[str, Any],
        row: _Row | None,
        names: list[str],
        combo: tuple[int, ...],
        values: dict[str, Any],
        expanded_id: str,
        location: Location,
        samples: int,
    ) -> None:
        params = dict(base)
        if row is not None:
            params.update(row.fields)
        variables: dict[str, Any] = {}
        for name, value in values.items():
            if name in PARAMETERS:
                params[name] = value
            else:
                variables[name] = value
        source = _Source(self, index, job, row, names, combo, values)
        prompt = params.get("prompt")
        substituted_ok = True
        if isinstance(prompt, str) and "$" in prompt:
            substituted = self.substitute(prompt, variables, source)
            substituted_ok = substituted is not None
            params["prompt"] = substituted if substituted is not None else prompt
        params.setdefault("model", DEFAULT_MODEL)
        # The request is checked even when a variable is undefined: all errors at once.
        if not self.check_request(params, source) or not substituted_ok:
            return
        image: Image | None = None
        reference = params.pop("image", None)
        if reference is not None:
            try:
                image = self.images.load(reference)
            except ImageProblem as problem:
                loc, path, shape = source.place("image", image_value=True)
                self.error(loc, path, shape.format(problem))
                return
        if len(expanded_id) > _MAX_ID_LENGTH:
            expanded_id = expanded_id[: _MAX_ID_LENGTH - 9].rstrip("-") + "-" + _digest(expanded_id)
        for sample in range(samples):
            final_id = f"{expanded_id}-s{sample}" if samples > 1 else expanded_id
            if not self.claim_id(final_id, location, index):
                continue
            key = job_key(self.provider, params, image, sample)
            twin = self.keys.setdefault(key, final_id)
            # Only on an otherwise clean manifest: a job with a dropped bad key would look like
            # a twin of its neighbour, and that echo is noise.
            if twin != final_id and not self.errors:
                self.error(
                    location,
                    ("jobs", index),
                    f"job {final_id!r} sends exactly the same request as job {twin!r}, so they "
                    "would be one video; change one of them, or use 'samples:' for several "
                    "videos of one request",
                )
                continue
            self.jobs.append(
                Job(
                    id=final_id,
                    key=key,
                    index=len(self.jobs),
                    provider=self.provider,
                    params=params,
                    image=image,
                    sample=sample,
                    location=location,
                )
            )

    def substitute(self, prompt: str, variables: Mapping[str, Any], source: _Source) -> str | None:
        missing: list[str] = []

        def replace(match: re.Match[str]) -> str:
            if match.group(0) == "$${":
                return "${"
            name = match.group(1)
            if name in variables:
                return _spell(variables[name])
            missing.append(name)
            return match.group(0)

        result = _VARIABLE.sub(replace, prompt)
        for name in missing:
            if variables:
                hint = _suggest(name, variables) or f" (the matrix defines {', '.join(sorted(variables))})"
            else:
                hint = "; define it in this job's matrix, or write $${ for a literal ${"
            loc, path, shape = source.place("prompt", combination=False)
            self.error(loc, path, shape.format(f"the prompt uses ${{{name}}}, which is not defined{hint}"))
        return None if missing else result

    def check_request(self, params: dict[str, Any], source: _Source) -> bool:
        """Validate one expanded request against ``$defs/request``, memoized by content.

        The prompt's own rules are checked separately (it is what makes most requests
        distinct); the image is checked by ``ImageLoader``. Everything else goes through
        the schema once per distinct combination.
        """
        probe = dict(params)
        probe["provider"] = self.provider
        prompt = probe.get("prompt")
        if isinstance(prompt, str) and self.validators.prompt.is_valid(prompt):
            probe["prompt"] = "p"
        if isinstance(probe.get("image"), str) and probe["image"]:
            probe["image"] = "i"
        memo = canonical_json(probe)
        issues = self.request_issues.get(memo)
        if issues is None:
            issues = []
            for error in self.validators.request.iter_errors(probe):
                issues.extend(_issues(error, probe.get("model") if isinstance(probe.get("model"), str) else None))
            self.request_issues[memo] = issues
        for issue in issues:
            key = str(issue.path[0]) if issue.path else None
            loc, path, shape = source.place(key, at_key=issue.at_key, rest=issue.path[1:])
            self.error(loc, path, shape.format(issue.message))
        return not issues

    def claim_id(self, job_id: str, location: Location, index: int) -> bool:
        previous = self.ids.get(job_id)
        if previous is None:
            self.ids[job_id] = (location, index)
            return True
        other_location, other_index = previous
        jobs = self.data["jobs"]
        if other_index != index and jobs[other_index]["id"] == jobs[index]["id"]:
            return False  # the duplicate written id is already reported
        self.error(
            location,
            ("jobs", index),
            f"duplicate job id {job_id!r}: also produced at {other_location}",
        )
        return False

    def load_rows(self, index: int, reference: str) -> list[_Row] | None:
        """The rows of a job's prompts file, or None (with errors recorded) if unusable."""
        where: PathKey = ("jobs", index, "prompts_file")
        try:
            target = resolve_inside(self.base_dir, reference, "a prompts file")
        except ImageProblem as problem:
            self.error(self.at(where), where, str(problem))
            return None
        if not target.is_file():
            shown = os.path.join(os.path.dirname(self.display), reference)
            self.error(self.at(where), where, f"prompts file {reference!r} does not exist (looked for {shown!r})")
            return None
        display = os.path.join(os.path.dirname(self.display), reference)
        try:
            text = read_text(target, display, max_bytes=MAX_PROMPTS_FILE_BYTES, what="prompts file")
        except ManifestErrors as exc:
            for e in exc.errors:
                self.error(e.location, e.path, e.message)
            return None
        raw_rows, problems = _parse_rows(text, target.suffix.lower())
        prefix = format_path(where)
        for line, column, message in problems:
            self.error(Location(display, line, column), prefix, message)
        rows: list[_Row] = []
        for number, (line, fields) in enumerate(raw_rows):
            location = Location(display, line, 1)
            row_path = f"{prefix}[{number}]"
            fields = dict(fields)
            row_id = fields.pop("id", None)
            if "provider" in fields:
                self.error(location, f"{row_path}.provider", "a row cannot set the provider; it is set for the whole manifest")
                continue
            if row_id is None:
                row_id = _row_id(fields)
            else:
                id_issues = [i for e in self.validators.row_id.iter_errors(row_id) for i in _issues(e, None)]
                if id_issues:
                    for issue in id_issues:
                        self.error(location, f"{row_path}.id", issue.message)
                    continue
            rows.append(_Row(number, location, row_id, fields))
        return rows


class _Source:
    """Where the parameters of one expanded request were written, for its error messages."""

    __slots__ = ("combo", "index", "job", "loader", "names", "row", "values")

    def __init__(
        self,
        loader: _Loader,
        index: int,
        job: dict[str, Any],
        row: _Row | None,
        names: list[str],
        combo: tuple[int, ...],
        values: dict[str, Any],
    ) -> None:
        self.loader = loader
        self.index = index
        self.job = job
        self.row = row
        self.names = names
        self.combo = combo
        self.values = values

    def place(
        self,
        key: str | None,
        *,
        at_key: bool = False,
        rest: PathKey = (),
        combination: bool = True,
        image_value: bool = False,
    ) -> tuple[Location, str, str]:
        """(location, JSON path, message shape) for a problem with parameter ``key``.

        ``key`` None means the request as a whole; the shape is a format string for the message.
        """
        loader = self.loader
        job_path: PathKey = ("jobs", self.index)
        in_matrix = key is not None and key in self.names
        model_in_matrix = key in ("size", "duration") and "model" in self.names
        if in_matrix and image_value:
            value_path = (*job_path, "matrix", "image", self.combo[self.names.index("image")])
            return loader.at(value_path), format_path(value_path), "{}"
        if (in_matrix or model_in_matrix) and combination:
            shown = [n for n in self.names if n in PARAMETERS or key == "prompt"]
            pairs = ", ".join(f"{n}: {_spell(self.values[n])}" for n in shown)
            matrix_path = (*job_path, "matrix")
            shape = f"combination {{{{{pairs}}}}}: {{}}"
            return loader.at(matrix_path, key=True), format_path(matrix_path), shape
        if self.row is not None and (key is None or key in self.row.fields):
            row_path = format_path((*job_path, "prompts_file")) + f"[{self.row.index}]"
            suffix = format_path((key, *rest))[1:] if key is not None else ""
            return self.row.location, row_path + suffix, "{}"
        if key is not None and key in self.job:
            path = (*job_path, key, *rest)
            return loader.at(path, key=at_key), format_path(path), "{}"
        if key is not None and key in loader.defaults:
            return (
                loader.at(job_path),
                format_path((*job_path, key)),
                f"{{}} ({key} comes from defaults, line {loader.at(('defaults', key)).line})",
            )
        if self.row is not None:
            row_path = format_path((*job_path, "prompts_file")) + f"[{self.row.index}]"
            return self.row.location, row_path, "{}"
        return loader.at(job_path), format_path(job_path), "{}"


def _spell(value: Any) -> str:
    """A matrix value as text, the way YAML writes it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]


def _slug(value: Any) -> str:
    text = _SLUG_UNSAFE.sub("-", _spell(value).lower()).strip("-")
    return text[:24].rstrip("-")


def _combo_suffixes(names: list[str], combos: list[list[Any]]) -> list[str]:
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
