"""A three-valued pre-check of a value against the manifest schema, without jsonschema.

``compile_check(schema, root)`` gives ``check(value)``: True only when jsonschema (Draft
2020-12) would find no error, False only when it would find one, None when this checker does
not know (a keyword or a type it does not handle exactly). A load asks jsonschema only when the
answer is not True: a valid manifest is then never validated twice, and ``import jsonschema``
(more than half of a small ``batchvid validate``) happens only to locate and word an error.

It is sound by construction, not complete: every rule answers True or False only for the plain
JSON types it knows exactly (``type(value) is str``, ...), and None otherwise; ``not`` and
``if`` use the False answers, so those are as careful as the True ones. Keywords it does not
know make their schema's answer None (``tests/test_manifest_fast.py`` compares it with
jsonschema over the schema's own examples and over generated values).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

Check = Callable[[Any], "bool | None"]

_ANNOTATIONS = frozenset({"$schema", "$id", "$defs", "title", "description", "default", "examples", "x-messages"})
_PLAIN = (str, int, float, bool, type(None), dict, list)
_TYPES: Mapping[str, tuple[type, ...]] = {
    "string": (str,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
    "null": (type(None),),
}
_SCALARS = (str, int, bool, type(None))


def compile_check(schema: Any, root: Mapping[str, Any]) -> Check:
    """The three-valued check of ``schema`` (``$ref``s resolved in ``root``'s ``$defs``)."""
    return _Compiler(root).compile(schema)


class _Compiler:
    """Subschemas into checks, keyword by keyword; ``$ref``s shared by name."""

    def __init__(self, root: Mapping[str, Any]) -> None:
        self.root = root
        self.refs: dict[str, Check] = {}

    def compile(self, schema: Any) -> Check:
        if schema is True or schema == {}:
            return _always(True)
        if schema is False:
            return _always(False)
        if not isinstance(schema, dict):
            return _always(None)
        rules: list[Check] = []
        for keyword, value in schema.items():
            if keyword in _ANNOTATIONS or keyword in ("then", "else"):
                continue
            rule = self._rule(keyword, value, schema)
            rules.append(rule if rule is not None else _always(None))
        return _all_of(rules)

    def ref(self, target: str) -> Check:
        """The check of ``#/$defs/NAME``, compiled once (a reference may recur)."""
        name, defs = target.removeprefix("#/$defs/"), self.root.get("$defs", {})
        if not target.startswith("#/$defs/") or name not in defs:
            return _always(None)
        if target not in self.refs:
            self.refs[target] = _always(None)  # while it compiles: a reference back to it
            self.refs[target] = self.compile(defs[name])
        refs = self.refs
        return lambda value: refs[target](value)

    def _rule(self, keyword: str, value: Any, schema: Mapping[str, Any]) -> Check | None:
        if keyword == "$ref":
            return self.ref(str(value))
        if keyword == "type":
            names = [value] if isinstance(value, str) else list(value)
            if not all(name in _TYPES or name == "integer" for name in names):
                return None
            return _type(tuple(kind for name in names for kind in _TYPES.get(name, ())), "integer" in names)
        if keyword in ("enum", "const"):
            choices = value if keyword == "enum" else [value]
            return _enum(choices) if all(type(c) in _SCALARS for c in choices) else None
        if keyword in ("minimum", "maximum", "exclusiveMinimum"):
            return _bound(keyword, value) if type(value) in (int, float) else None
        if keyword in ("minLength", "maxLength", "minItems", "minProperties"):
            return _size(keyword, value) if type(value) is int else None
        if keyword == "pattern":
            search = re.compile(value).search
            return _on(str, lambda text: search(text) is not None)
        if keyword == "required":
            return _on(dict, lambda found: all(name in found for name in value))
        if keyword in ("properties", "additionalProperties", "propertyNames"):
            return self._object(keyword, value, schema)
        if keyword == "items":
            each = self.compile(value)
            return _on(list, lambda found: _every(map(each, found)))
        if keyword in ("allOf", "anyOf", "oneOf"):
            parts = [self.compile(part) for part in value]
            return {"allOf": _all_of, "anyOf": _any_of, "oneOf": _one_of}[keyword](parts)
        if keyword == "not":
            inner = self.compile(value)
            return lambda found: _negate(inner(found))
        if keyword == "if":
            return _if(self.compile(value), self.compile(schema.get("then", True)), self.compile(schema.get("else", True)))
        return None

    def _object(self, keyword: str, value: Any, schema: Mapping[str, Any]) -> Check | None:
        if keyword == "properties":
            checks = {name: self.compile(part) for name, part in value.items()}
            return _on(dict, lambda found: _every(checks[name](found[name]) for name in checks if name in found))
        if "patternProperties" in schema:
            return None
        each = self.compile(value)
        if keyword == "propertyNames":
            return _on(dict, lambda found: _every(map(each, found)))
        known = schema.get("properties", {})
        return _on(dict, lambda found: _every(each(item) for name, item in found.items() if name not in known))


def _always(answer: bool | None) -> Check:
    return lambda value: answer


def _negate(answer: bool | None) -> bool | None:
    return None if answer is None else not answer


def _every(answers: Any) -> bool | None:
    """False if any answer is False, else None if any is None, else True."""
    unknown = False
    for answer in answers:
        if answer is False:
            return False
        unknown = unknown or answer is None
    return None if unknown else True


def _all_of(rules: list[Check]) -> Check:
    if len(rules) == 1:
        return rules[0]
    return lambda value: _every(rule(value) for rule in rules)


def _any_of(rules: list[Check]) -> Check:
    return lambda value: _negate(_every(_negate(rule(value)) for rule in rules))


def _one_of(rules: list[Check]) -> Check:
    def check(value: Any) -> bool | None:
        answers = [rule(value) for rule in rules]
        passed = answers.count(True)
        if passed > 1:
            return False
        if None in answers:
            return None
        return passed == 1

    return check


def _if(condition: Check, then: Check, otherwise: Check) -> Check:
    def check(value: Any) -> bool | None:
        holds = condition(value)
        if holds is None:  # whichever applies must pass
            return _every((then(value), otherwise(value))) or None
        return then(value) if holds else otherwise(value)

    return check


def _on(kind: type, test: Callable[[Any], bool | None]) -> Check:
    """A rule of one JSON type: ``test`` for a value of that type, True for the other plain
    types (which the rule does not constrain), None for anything else."""

    def check(value: Any) -> bool | None:
        if type(value) is kind:
            return test(value)
        return True if type(value) in _PLAIN else None

    return check


def _type(kinds: tuple[type, ...], integer: bool) -> Check:
    """``type``: exact types, so True is a bool and never a number, as in jsonschema. An integer
    is an int, or for jsonschema also an integral float (30.0): that one is left unknown."""

    def check(value: Any) -> bool | None:
        if type(value) not in _PLAIN:
            return None
        if type(value) in kinds or (integer and type(value) is int):
            return True
        return None if integer and type(value) is float and value.is_integer() else False

    return check


def _enum(choices: list[Any]) -> Check:
    def check(value: Any) -> bool | None:
        if any(type(choice) is type(value) and choice == value for choice in choices):
            return True
        return False if type(value) is str else None  # other types: jsonschema's equality is subtler

    return check


def _bound(keyword: str, limit: float) -> Check:
    def check(value: Any) -> bool | None:
        if type(value) is int or type(value) is float:
            if value != value:  # NaN
                return None
            return value > limit if keyword == "exclusiveMinimum" else value >= limit if keyword == "minimum" else value <= limit
        return True if type(value) in _PLAIN else None

    return check


def _size(keyword: str, limit: int) -> Check:
    kind = {"minLength": str, "maxLength": str, "minItems": list, "minProperties": dict}[keyword]
    if keyword == "maxLength":
        return _on(kind, lambda value: len(value) <= limit)
    return _on(kind, lambda value: len(value) >= limit)
