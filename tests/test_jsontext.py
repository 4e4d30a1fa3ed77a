"""batchvid.jsontext: the indented JSON batchvid writes, the same text as json.dumps, faster."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from batchvid.durable import dumps, write_json
from batchvid.jsontext import NotPlain, indented, pieces, reference


def _value(rng: random.Random, depth: int = 0) -> Any:
    kinds = ["str", "int", "float", "none", "bool"] + (["dict", "list", "tuple"] if depth < 4 else [])
    kind = rng.choice(kinds)
    if kind == "str":
        return "".join(rng.choice(['a', 'é', '"', "\\", "\n", "\x00", "<", "\u2028", "😀", " "])
                       for _ in range(rng.randint(0, 6)))
    if kind == "int":
        return rng.choice([0, -1, 7, 2**70, -(2**65)])
    if kind == "float":
        return rng.choice([0.0, -0.5, 1e-7, 1.5e300, 3.14159, 0.1 + 0.2])
    if kind == "none":
        return None
    if kind == "bool":
        return rng.random() < 0.5
    items = [_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    if kind == "list":
        return items
    if kind == "tuple":
        return tuple(items)
    return {str(_value(rng, 5)) if rng.random() < 0.9 else "k": item for item in items}


def test_indented_is_the_standard_librarys_text_for_varied_documents() -> None:
    """Nested dicts, lists, tuples, escapes, unicode, big ints and floats: the same text as json.dumps."""
    rng = random.Random(12)
    for _ in range(2000):
        value = _value(rng)
        assert indented(value) == reference(value)
        if isinstance(value, dict | list | tuple):
            assert "".join(pieces(value)) == reference(value)


@pytest.mark.parametrize(
    "value",
    [{"a": float("nan")}, {1: "x", "b": 2}, {"a": [float("inf")]}, {"a": {"b": b"bytes"}},
     {"a": [1, {"b": {"c": -float("inf")}}]}],
)
def test_values_only_json_dumps_encodes_get_its_text_or_its_error(value: Any) -> None:
    """NaN, infinity, non-string keys and other types: json.dumps's text, or the same error;
    ``pieces`` says NotPlain instead."""
    try:
        expected: str | type[Exception] = reference(value)
    except TypeError:
        expected = TypeError
    if expected is TypeError:
        with pytest.raises(TypeError):
            indented(value)
    else:
        assert indented(value) == expected
    with pytest.raises(NotPlain):
        "".join(pieces(value))


def test_write_json_writes_dumps_text_even_for_a_value_pieces_cannot_encode(tmp_path: Path) -> None:
    """write_json gives durable.dumps's bytes, for a plain report and for one with a NaN."""
    report = {"jobs": [{"id": f"j{i}", "media": {"fps": 30.0, "q": None}} for i in range(50)],
              "timing": {"seconds": 1.5}}
    write_json(tmp_path / "a.json", report)
    assert (tmp_path / "a.json").read_text() == json.dumps(report, sort_keys=True, indent=2) + "\n"
    odd = {"jobs": [{"x": float("nan")}]}
    write_json(tmp_path / "b.json", odd)
    assert (tmp_path / "b.json").read_text() == dumps(odd)
    assert not list(tmp_path.glob(".*.tmp"))
