"""Readable messages from schema errors, and the compiled validators they come from.

``schemas/manifest.schema.json`` holds the wording of most messages (its ``x-messages`` keys);
this module turns a jsonschema ``ValidationError`` into ``Issue`` values a person can act on.
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from batchvid.manifest.quickcheck import Check, compile_check
from batchvid.schemas import load_schema
from batchvid.yamlload import PathKey

if TYPE_CHECKING:  # jsonschema (half of a small validate's time) only to find and word an error
    from jsonschema.exceptions import ValidationError
    from jsonschema.protocols import Validator

DEFAULT_MODEL = "cogvideox-flash"


class Validators:
    """The manifest schema compiled once, whole and for the parts checked one by one.

    ``manifest_ok`` and ``request_ok`` answer True only for a value jsonschema finds no error
    in (``quickcheck``); ``manifest``, ``request`` and ``row_id``, jsonschema's validators, are
    made (and jsonschema imported) the first time one is asked for: to locate and word errors.
    """

    manifest_ok: Check
    """``quickcheck`` of the whole manifest: True only if jsonschema finds no error."""
    request_ok: Check
    """Likewise for ``$defs/request``."""
    prompt_ok: Callable[[str], bool]
    """Whether a string passes ``$defs/prompt``: checked per row, so without jsonschema's cost."""
    id_ok: Callable[[str], bool]
    """Whether a string passes ``$defs/id``, likewise."""
    prompts_ok: Callable[[Sequence[str]], bool]
    """Whether every string of a list passes ``$defs/prompt`` (``prompt_ok`` of each, in C-level passes)."""
    ids_ok: Callable[[Sequence[str]], bool]
    """Whether every string of a list passes ``$defs/id``, likewise."""
    integral: frozenset[str]
    """Request parameters whose accepted values are all integers (30.0 is sent as 30)."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        self.schema = schema
        defs = schema["$defs"]
        self.manifest_ok = compile_check(schema, schema)
        self.request_ok = compile_check(defs["request"], schema)
        self.prompt_ok = _string_check(lambda: self.manifest.evolve(schema=defs["prompt"]), defs["prompt"])
        self.id_ok = _string_check(lambda: self.row_id, defs["id"])
        self.prompts_ok = _strings_check(lambda: self.manifest.evolve(schema=defs["prompt"]), defs["prompt"])
        self.ids_ok = _strings_check(lambda: self.row_id, defs["id"])
        self.integral = _integral(schema)

    @functools.cached_property
    def manifest(self) -> Validator:
        from jsonschema import Draft202012Validator

        return Draft202012Validator(self.schema)

    @functools.cached_property
    def request(self) -> Validator:
        return self.manifest.evolve(schema=self.schema["$defs"]["request"])

    @functools.cached_property
    def row_id(self) -> Validator:
        return self.manifest.evolve(schema=self.schema["$defs"]["id"])


_STRING_RULES = frozenset({"type", "minLength", "maxLength", "pattern", "title", "description", "x-messages"})


def _string_check(validator: Callable[[], Validator], schema: Mapping[str, Any]) -> Callable[[str], bool]:
    """A fast predicate equal to ``validator().is_valid`` for strings under ``schema``."""
    if not set(schema) <= _STRING_RULES or schema.get("type") != "string":
        return lambda text: bool(validator().is_valid(text))
    low = int(schema.get("minLength", 0))
    high = int(schema.get("maxLength", sys.maxsize))
    search = re.compile(schema.get("pattern", "")).search
    return lambda text: low <= len(text) <= high and search(text) is not None


def _strings_check(
    validator: Callable[[], Validator], schema: Mapping[str, Any]
) -> Callable[[Sequence[str]], bool]:
    """``_string_check(validator, schema)`` of every string of a list at once: the lengths by
    ``min`` and ``max``, the pattern by ``map``, with no Python call per string."""
    if not set(schema) <= _STRING_RULES or schema.get("type") != "string":
        return lambda texts: all(map(validator().is_valid, texts))
    low = int(schema.get("minLength", 0))
    high = int(schema.get("maxLength", sys.maxsize))
    pattern = schema.get("pattern", "")
    search = re.compile(pattern).search

    def every(texts: Sequence[str]) -> bool:
        if not texts:
            return True
        lengths = list(map(len, texts))
        if not (low <= min(lengths) and max(lengths) <= high):
            return False
        if pattern == NOT_BLANK:  # re's \s is str.isspace's whitespace: a sixth of the cost
            return not any(map(str.isspace, texts))
        joined = "/".join(texts) if whole is not None else ""
        if whole is not None and joined.count("/") == len(texts) - 1 and whole(joined):
            return True  # one match for all, no text holding a "/" itself: each matches
        return all(map(search, texts))

    whole = _joined_match(pattern)
    return every


def _joined_match(pattern: str) -> Callable[[str], Any] | None:
    """For a pattern ``^[CLASS][CLASS]*$`` whose classes leave out "/": a match of the texts
    joined by "/" that succeeds only if each text matches the pattern (a text that matches only
    thanks to ``$`` before a final newline fails it, and is then checked on its own)."""
    found = re.fullmatch(r"\^(\[[^\]/\\]*\])(\[[^\]/\\]*\])\*\$", pattern)
    if found is None:
        return None
    first, rest = found.groups()
    return re.compile(f"{first}{rest}*(?:/{first}{rest}*)*").fullmatch


NOT_BLANK = r"^$|\S"
"""The prompt's pattern: empty, or not whitespace alone (``not text.isspace()``)."""


def _integral(schema: Mapping[str, Any]) -> frozenset[str]:
    defs = schema["$defs"]
    names = set()
    for name, spec in defs["request"]["properties"].items():
        target = defs.get(str(spec.get("$ref", "")).rpartition("/")[2], spec)
        values = target.get("enum")
        if target.get("type") == "integer" or (
            values and all(isinstance(v, int) and not isinstance(v, bool) for v in values)
        ):
            names.add(name)
    return frozenset(names)


@functools.cache
def validators() -> Validators:
    return Validators(load_schema("manifest"))


@dataclass(frozen=True, slots=True)
class Issue:
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


def show(value: Any) -> str:
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


def spell(value: Any) -> str:
    """A matrix value as text, the way YAML writes it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def suggest(word: str, candidates: Iterable[str]) -> str:
    import difflib  # only for a manifest with a misspelt name

    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _normal(text: str) -> str:
    return re.sub(r"\s+", "", text.lower()).replace("×", "x").replace("*", "x")


def suggest_spelling(value: Any, choices: Any) -> str:
    """A did-you-mean when ``value`` is one of ``choices`` in another case or spacing (1280X960)."""
    if not isinstance(value, str) or not isinstance(choices, list):
        return ""
    for choice in choices:
        if isinstance(choice, str) and choice != value and _normal(choice) == _normal(value):
            return f"; did you mean {choice!r}?"
    return ""


def _known_keys(schema: Mapping[str, Any]) -> list[str]:
    properties = schema.get("properties", {})
    return [k for k, v in properties.items() if "not" not in v and v.get("$ref") != "#/$defs/unsupported"]


def issues(error: ValidationError, model: str | None) -> Iterator[Issue]:
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
        yield Issue(path, _templated(template, error, path, model), at_key=on_name or keyword == "not")
        return
    if keyword == "additionalProperties" and isinstance(instance, dict):
        known = _known_keys(schema)
        allowed = set(schema.get("properties", {}))
        for key in instance:
            if key not in allowed:
                yield Issue((*path, key), f"unknown key {key!r}{suggest(key, known)}", at_key=True)
        return
    if keyword == "required" and isinstance(instance, dict):
        for key in error.validator_value:  # type: ignore[union-attr]
            if key not in instance:
                yield Issue(path, f"missing required key {key!r}")
        return
    if keyword in ("anyOf", "oneOf") and error.context:
        from jsonschema.exceptions import best_match

        yield from issues(best_match(error.context), model)
        return
    yield Issue(path, _generic_message(error, keyword, instance), at_key=on_name)


def _templated(template: str, error: ValidationError, path: PathKey, model: str | None) -> str:
    instance = error.instance
    choices = error.validator_value
    fields = {
        "value": show(instance),
        "key": str(path[-1]) if path else "",
        "model": model or DEFAULT_MODEL,
        "length": len(instance) if isinstance(instance, str) else 0,
        "enum": ", ".join(str(v) for v in choices) if isinstance(choices, list) else "",
    }
    hint = suggest_spelling(instance, choices) if error.validator == "enum" else ""
    return template.format(**fields) + hint


def _generic_message(error: ValidationError, keyword: str, instance: Any) -> str:
    expected = error.validator_value
    if keyword == "type":
        types = expected if isinstance(expected, list) else [expected]
        wanted = " or ".join(_TYPE_NAMES.get(str(t), str(t)) for t in types)
        return f"{show(instance)} is not {wanted}"
    if keyword == "enum":
        listed = ", ".join(show(v) for v in expected)  # type: ignore[union-attr]
        return f"{show(instance)} is not one of {listed}{suggest_spelling(instance, expected)}"
    if keyword == "const":
        return f"must be {show(expected)}"
    if keyword == "minimum":
        return f"{show(instance)} is less than the minimum, {expected}"
    if keyword == "maximum":
        return f"{show(instance)} is more than the maximum, {expected}"
    if keyword == "exclusiveMinimum":
        return f"{show(instance)} must be greater than {expected}"
    if keyword in ("minLength", "minItems", "minProperties"):
        return "must not be empty"
    if keyword == "maxLength":
        return f"is {len(instance)} characters long; the limit is {expected}"
    if keyword == "pattern":
        return f"{show(instance)} does not have the expected form ({expected})"
    message = str(error.message)
    return message if len(message) <= 200 else message[:197] + "…"
