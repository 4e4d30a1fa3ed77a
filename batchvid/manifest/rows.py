"""Prompts files: one job per row of a .txt, .jsonl or .csv file beside the manifest.

``parse_rows`` turns the text into (line, fields) rows and (line, column, message) problems;
``load_rows`` reads the file a job names and checks each row's id and keys.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from itertools import compress, repeat
from json.encoder import encode_basestring
from operator import add, and_, contains, eq, is_, itemgetter, methodcaller
from typing import Any

from batchvid.errors import Location, ManifestErrors
from batchvid.images import ImageProblem, resolve_inside
from batchvid.jobkey import PROMPT_MARK, canonical_json, cut_at_prompt
from batchvid.manifest.context import Context
from batchvid.manifest.messages import issues
from batchvid.manifest.place import Row
from batchvid.yamlload import PathKey, format_path, read_text

MAX_PROMPTS_FILE_BYTES = 50 * 1024 * 1024

_CSV_BOOLEANS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
_CSV_INTEGERS = frozenset({"fps", "duration"})
_INTEGER = re.compile(r"[+-]?\d+")

Fields = dict[str, Any]
_ODD_BREAKS = re.compile("[\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
Problems = list[tuple[int, int, str]]


def row_id(fields: Mapping[str, Any]) -> str:
    """An id for a row without one, from its content: inserting a row moves no other id."""
    return hashlib.sha256(canonical_json(fields).encode("utf-8")).hexdigest()[:8]


class _RowIds:
    """``row_id`` of many rows, the JSON of each shape (its values but the prompt) spelled once:
    each id then costs one string escape and one sha256."""

    def __init__(self) -> None:
        self._spelled: dict[Any, tuple[str, str] | None] = {}

    def of(self, fields: Fields) -> str:
        prompt = fields.get("prompt")
        if type(prompt) is not str:
            return row_id(fields)
        others: Any = ()
        if len(fields) > 1:
            others = tuple((k, type(v), v) for k, v in fields.items() if k != "prompt")
        try:
            cut = self._spelled[others] if others in self._spelled else self._spell(others, fields)
        except TypeError:  # a list or mapping where a scalar belongs: rare, and wrong anyway
            cut = None
        if cut is None:
            return row_id(fields)
        return hashlib.sha256((cut[0] + encode_basestring(prompt) + cut[1]).encode()).hexdigest()[:8]

    def many(self, givens: list[Any], fields_list: list[Fields]) -> list[str]:
        """Each row's id: the one ``given``, or if None ``of`` its fields; those of rows that
        hold a prompt alone in C-level passes (``jobkey.spelled_keys``'s way)."""
        bare = [fields for given, fields in zip(givens, fields_list, strict=True) if given is None]
        prompts = list(map(_PROMPT_OF, bare))
        alone = list(map(and_, map(eq, map(len, bare), repeat(1)), map(is_, map(type, prompts), repeat(str))))
        cut = self._spelled[()] if () in self._spelled else self._spell((), {"prompt": ""})
        if cut is None:
            alone = [False] * len(bare)
        head, tail = repeat(cut[0] if cut else ""), repeat(cut[1] if cut else "")
        spelled = map(add, map(add, head, map(encode_basestring, compress(prompts, alone))), tail)
        quick = map(_EIGHT, map(_HEXDIGEST, map(hashlib.sha256, map(str.encode, spelled))))
        made = iter([next(quick) if simple else self.of(fields) for simple, fields in zip(alone, bare, strict=True)])
        return [next(made) if given is None else given for given in givens]

    def _spell(self, others: Any, fields: Fields) -> tuple[str, str] | None:
        cut = self._spelled[others] = cut_at_prompt(canonical_json({**fields, "prompt": PROMPT_MARK}))
        return cut


_PROMPT_OF, _HEXDIGEST, _EIGHT = methodcaller("get", "prompt"), methodcaller("hexdigest"), itemgetter(slice(0, 8))


class _LocationFields:
    """``Location(file, line, 1)`` at a third of the cost (as ``jobs.JobFields`` for a Job)."""

    __slots__ = ("file", "line", "column")

    def __init__(self, file: str, line: int) -> None:
        self.file, self.line, self.column = file, line, 1

    def freeze(self) -> Location:
        self.__class__ = Location  # type: ignore[assignment]
        return self  # type: ignore[return-value]


def parse_rows(text: str, suffix: str) -> tuple[Iterable[tuple[int, Fields]], Problems]:
    """(line, raw fields) rows and (line, column, message) problems of a prompts file."""
    if suffix == ".txt":
        return _txt_rows(text), []
    if suffix == ".jsonl":
        return _jsonl_rows(text)
    return _csv_rows(text)


def _txt_rows(text: str) -> list[tuple[int, Fields]]:
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            rows.append((number, {"prompt": stripped}))
    return rows


def _jsonl_rows(text: str) -> tuple[Iterable[tuple[int, Fields]], Problems]:
    body = text[:-1] if text.endswith("\n") else text
    if body and "\r" not in body:  # the usual file: one object a line, no blank line (it breaks the array)
        whole = _jsonl_at_once(text, body.count("\n") + 1, body.replace("\n", ","))
        if whole is not None:
            return _Numbered(whole), []
    numbered = [(n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    fast = _jsonl_at_once(text, len(numbered), ",".join(line for _, line in numbered))
    if fast is not None:
        return [(n, value) for (n, _), value in zip(numbered, fast, strict=True)], []
    return _jsonl_line_by_line(numbered)


class _Numbered:
    """The rows of a file with one row on each line from the first: (line, fields) pairs when
    iterated, and ``fields`` as one list (``load_rows`` takes it whole)."""

    __slots__ = ("fields",)

    def __init__(self, fields: list[Fields]) -> None:
        self.fields = fields

    def __iter__(self) -> Iterator[tuple[int, Fields]]:
        return enumerate(self.fields, start=1)


def _jsonl_at_once(text: str, count: int, joined: str) -> list[Fields] | None:
    """The ``count`` lines joined by commas in ``joined``, parsed as one JSON array (one C
    call), or None to go line by line.

    Taken only when it must agree with the line-by-line reading: no character that
    ``splitlines`` breaks at but a JSON string may hold, one object per line.
    """
    # Those that are ASCII (\x0b, \x0c, \x1c-\x1e) cannot be in JSON text but as escapes, so in
    # an ASCII file they make the array invalid; str.isascii() is free.
    if not text.isascii() and _ODD_BREAKS.search(text):
        return None
    try:
        values = json.loads(f"[{joined}]")
    except (json.JSONDecodeError, RecursionError):
        return None
    if not isinstance(values, list) or len(values) != count:
        return None
    return values if not values or set(map(type, values)) == {dict} else None


def _jsonl_line_by_line(numbered: list[tuple[int, str]]) -> tuple[list[tuple[int, Fields]], Problems]:
    rows: list[tuple[int, Fields]] = []
    problems: Problems = []
    for number, line in numbered:
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append((number, exc.colno, f"not a JSON line: {exc.msg}"))
            continue
        if not isinstance(value, dict):
            problems.append((number, 1, "each line must be a JSON object, like {\"prompt\": \"...\"}"))
            continue
        rows.append((number, value))
    return rows, problems


def _coerce_csv(column: str, value: str) -> Any:
    if column in _CSV_INTEGERS and _INTEGER.fullmatch(value.strip()):
        return int(value)
    if column in ("with_audio", "watermark") and value.strip().lower() in _CSV_BOOLEANS:
        return _CSV_BOOLEANS[value.strip().lower()]
    return value


def _csv_rows(text: str) -> tuple[list[tuple[int, Fields]], Problems]:
    rows: list[tuple[int, Fields]] = []
    problems: Problems = []
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    start = 1
    try:
        header = next(reader, None)
        if header is None:
            problems.append((1, 1, "the CSV file is empty; it needs a header row, like 'id,prompt'"))
            return rows, problems
        columns = [name.strip() for name in header]
        start = reader.line_num + 1
        for record in reader:
            blank = not any(cell.strip() for cell in record)
            if not blank and len(record) > len(columns):
                problems.append((start, 1, f"the row has {len(record)} cells; the header has {len(columns)}"))
            elif not blank:
                fields = {
                    column: _coerce_csv(column, cell)
                    for column, cell in zip(columns, record, strict=False)
                    if column and cell.strip() != ""
                }
                rows.append((start, fields))
            start = reader.line_num + 1
    except csv.Error as exc:
        problems.append(_csv_problem(exc, text, start, reader.line_num))
    return rows, problems


def _csv_problem(exc: csv.Error, text: str, start: int, line_num: int) -> tuple[int, int, str]:
    if "unexpected end of data" in str(exc):
        return (
            start,
            1,
            "a quote opened in this row is never closed, so it would swallow every row after it; "
            "close the quote (write \"\" for a quote inside a quoted cell)",
        )
    if "expected after '\"'" in str(exc):
        return (
            line_num,
            1,
            "a quote closes in the middle of a cell; quote the whole cell, and write \"\" for a "
            f"quote inside it (CSV error: {exc})",
        )
    return (line_num, 1, f"CSV error: {exc}")


def load_rows(context: Context, index: int, reference: str) -> list[Row] | None:
    """The rows of ``jobs[index]``'s prompts file, or None (with errors recorded) if unusable."""
    where: PathKey = ("jobs", index, "prompts_file")
    try:
        target = resolve_inside(context.base_dir, reference, "a prompts file", root=context.root)
    except ImageProblem as problem:
        context.error(context.at(where), where, str(problem))
        return None
    display = os.path.join(os.path.dirname(context.display), reference)
    if not target.is_file():
        context.error(context.at(where), where, f"prompts file {reference!r} does not exist (looked for {display!r})")
        return None
    try:
        text = read_text(target, display, max_bytes=MAX_PROMPTS_FILE_BYTES, what="prompts file")
    except ManifestErrors as exc:
        context.diagnostics.extend(exc)
        return None
    raw_rows, problems = parse_rows(text, target.suffix.lower())
    prefix = format_path(where)
    for line, column, message in problems:
        context.error(Location(display, line, column), prefix, message)
    lines: Sequence[int]
    if isinstance(raw_rows, _Numbered):  # a JSON-lines file read at once: its columns as they are
        lines, fields_list = range(1, len(raw_rows.fields) + 1), raw_rows.fields
    else:
        lines, fields_list = [], []
        for line, fields in raw_rows:  # not a list of the pairs: 5 MB at 100,000 rows, kept by the allocator
            lines.append(line)
            fields_list.append(fields)
    givens = list(map(_POP_ID, fields_list))  # the rows' fields are this load's own: no copy
    at_once = _rows_at_once(context, display, lines, fields_list, givens)
    if at_once is not None:
        return at_once
    rows = []
    id_ok, ids = context.checks.id_ok, _RowIds()
    for number, (line, fields, given) in enumerate(zip(lines, fields_list, givens, strict=True)):
        if "provider" not in fields:  # the usual rows, inline
            if type(given) is str and id_ok(given):
                rows.append(Row(number, _LocationFields(display, line).freeze(), given, fields))
                continue
            if given is None:
                rows.append(Row(number, _LocationFields(display, line).freeze(), ids.of(fields), fields))
                continue
        row = _checked_row(context, Location(display, line, 1), prefix, number, given, fields)
        if row is not None:
            rows.append(row)
    return rows


_POP_ID = methodcaller("pop", "id", None)


def _rows_at_once(
    context: Context, display: str, lines: Sequence[int], fields_list: list[Fields], givens: list[Any]
) -> list[Row] | None:
    """``load_rows``'s rows when each is usual (no provider; an id that passes ``$defs/id``, or
    none), built in C-level passes over the rows (``map``) rather than a loop; else None (the
    loop then reports each unusual row)."""
    if any(map(contains, fields_list, repeat("provider"))):
        return None
    kinds = set(map(type, givens))
    if not kinds <= {str, type(None)}:
        return None
    plain = type(None) not in kinds
    if not context.checks.ids_ok(givens if plain else [g for g in givens if g is not None]):
        return None
    ids = givens if plain else _RowIds().many(givens, fields_list)
    return list(map(_new_tuple, repeat(Row), zip(range(len(ids)), _locations(display, lines), ids, fields_list, strict=True)))


def _locations(file: str, lines: Sequence[int]) -> list[Location]:
    """``Location(file, line, 1)`` of each line, each slot set in a C-level pass (``map``)."""
    made: list[Location] = list(map(object.__new__, repeat(Location, len(lines))))
    deque(map(_SET_FILE, made, repeat(file)), maxlen=0)
    deque(map(_SET_LINE, made, lines), maxlen=0)
    deque(map(_SET_COLUMN, made, repeat(1)), maxlen=0)
    return made


_SET_FILE, _SET_LINE, _SET_COLUMN = (Location.__dict__[name].__set__ for name in ("file", "line", "column"))


_new_tuple: Any = tuple.__new__
"""``_new_tuple(Row, (number, location, id, fields))`` is ``Row(number, location, id, fields)``
without the Python-level ``__new__`` of a named tuple."""


def _checked_row(
    context: Context, location: Location, prefix: str, number: int, given: Any, fields: Fields
) -> Row | None:
    """The row whose id was ``given`` (None: not written), or None if it is unusable (reported)."""
    if "provider" in fields:
        context.error(location, f"{prefix}[{number}].provider", "a row cannot set the provider; it is set for the whole manifest")
        return None
    if given is None:
        return Row(number, location, row_id(fields), fields)
    if not (isinstance(given, str) and context.checks.id_ok(given)):
        found = [i for e in context.checks.row_id.iter_errors(given) for i in issues(e, None)]
        for issue in found:
            context.error(location, f"{prefix}[{number}].id", issue.message)
        if found:
            return None
    return Row(number, location, given, fields)
