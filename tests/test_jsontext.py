"""batchvid.jsontext: the indented JSON batchvid writes, the same text as json.dumps, faster."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from batchvid.durable import dumps, write_json
from batchvid.jsontext import (
    EncodedItems,
    Holes,
    NotPlain,
    Streamed,
    StreamedItems,
    indented,
    item_text,
    pieces,
    reference,
)


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


def _entry(rng: random.Random, i: int) -> dict[str, Any]:
    """A job entry whose shape varies the way a report's do (and some ways they do not)."""
    entry: dict[str, Any] = {
        "id": f"job-{i}", "index": i, "status": rng.choice(["succeeded", "failed"]),
        "video": {"path": f"jobs/{i}/video.mp4", "sha256": "ab" * 32, "bytes": i},
        "media": {"fps": 30.0, "quality": {"motion": rng.random(), "black": 0.0}, "codec": "h264"},
        "warnings": [], "error": None, "100%": "50% off %s %(x)s", "é\"\\": "\u2028<",
    }
    roll = rng.random()
    if roll < 0.1:
        entry["video"] = None
    elif roll < 0.2:
        entry["error"] = {"kind": "x", "message": rng.choice(["", "{\"a\": [1]}", ': {"', "\x00["])}
    elif roll < 0.3:
        entry["warnings"] = ["one", "two"][: rng.randint(1, 2)]
    elif roll < 0.4:
        entry["media"]["quality"] = {"motion": [1, {"deep": {}}], "black": {"only": 1}}
    elif roll < 0.45:
        entry["media"] = {}
    elif roll < 0.5:
        entry["media"]["quality"] = {"motion": rng.choice([[], {}, (), (1,), [None]])}
    elif roll < 0.55:
        entry["extra"] = {"k": ("t", 1)}
    return entry


def test_entries_of_one_shape_or_of_many_get_the_standard_librarys_text() -> None:
    """A list of job entries whose shapes repeat, alternate and nest containers differently:
    each written through its shape's template is json.dumps's text."""
    rng = random.Random(7)
    report = {"jobs": [_entry(rng, i) for i in range(600)], "timing": {"jobs": {"a": {"s": 1.5}}}}
    assert "".join(pieces(report)) == reference(report)
    lock = {"jobs": {f"j{i}": {"key": "k", "sha256": None, "poster": {"path": "p"} if i % 3 else None}
                     for i in range(300)}}
    assert "".join(pieces(lock)) == reference(lock)


def test_a_nan_inside_an_entry_of_a_known_shape_is_left_to_json_dumps() -> None:
    """An entry with a NaN where its shape's other entries have numbers: pieces says NotPlain."""
    jobs = [{"id": str(i), "media": {"fps": 30.0}} for i in range(3)] + [{"id": "x", "media": {"fps": float("nan")}}]
    with pytest.raises(NotPlain):
        "".join(pieces({"jobs": jobs}))
    assert indented({"jobs": jobs}) == reference({"jobs": jobs})


def test_a_dict_too_big_for_a_template_gets_the_standard_librarys_text() -> None:
    """A bottom-level dict of thousands of keys (a report's per-job timing) is written the long
    way, with the same text."""
    report = {"timing": {"jobs": {f"j{i}": {"attempts": 1, "seconds": i / 7} for i in range(3000)}},
              "jobs": [{"big": {str(i): {"x": i} for i in range(300)}}]}
    assert "".join(pieces(report)) == reference(report)


class _Rows(Streamed):
    def __init__(self, n: int) -> None:
        self.n, self.reads = n, 0

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: Any) -> Any:
        raise AssertionError("read in order, never indexed")

    def __iter__(self) -> Any:
        self.reads += 1
        return ({"id": f"j{i}", "media": {"fps": 30.0, "q": [i]}} for i in range(self.n))


class _Pins(StreamedItems):
    def __init__(self, keys: list[str]) -> None:
        self.keys = keys

    def __len__(self) -> int:
        return len(self.keys)

    def items(self) -> Any:
        return ((k, {"sha256": k * 2}) for k in self.keys)


def test_streamed_lists_and_dicts_are_written_as_the_list_and_dict_they_read_as(tmp_path: Path) -> None:
    """A report whose jobs are made as they are read, and a lock whose pins are: the text of the
    materialised document; empty ones too."""
    rows, pins = _Rows(300), _Pins([f"p{i:04d}" for i in range(3000)])
    doc = {"jobs": rows, "lock": {"jobs": pins}, "none": _Rows(0), "nothing": _Pins([])}
    plain = {"jobs": list(rows), "lock": {"jobs": dict(pins.items())}, "none": [], "nothing": {}}
    assert "".join(pieces(doc)) == reference(plain) == reference(doc) == indented(doc)
    write_json(tmp_path / "doc.json", doc)
    assert (tmp_path / "doc.json").read_text() == dumps(plain)


def test_streamed_items_out_of_key_order_are_left_to_json_dumps() -> None:
    """Pins not in key order: pieces says NotPlain (json.dumps sorts them)."""
    with pytest.raises(NotPlain):
        "".join(pieces({"jobs": _Pins(["b", "a"])}))
    assert reference({"jobs": _Pins(["b", "a"])}) == reference({"jobs": {"a": {"sha256": "aa"}, "b": {"sha256": "bb"}}})


class _EncodedPins(EncodedItems, _Pins):
    def texts(self, nl: str) -> Any:
        return ((key, item_text(value, nl)) for key, value in self.items())


def test_encoded_items_are_written_from_their_texts_and_read_as_the_dict_they_are(tmp_path: Path) -> None:
    """An ``EncodedItems`` is written from the (key, text) pairs it gives, as the dict its
    ``items()`` reads as; out of key order, ``pieces`` says NotPlain and ``write_json`` falls
    back to ``json.dumps``'s text."""
    pins = _EncodedPins([f"p{i:04d}" for i in range(500)])
    plain = {"lock": {"jobs": dict(pins.items())}}
    assert "".join(pieces({"lock": {"jobs": pins}})) == reference(plain) == indented({"lock": {"jobs": pins}})
    with pytest.raises(NotPlain):
        "".join(pieces({"jobs": _EncodedPins(["b", "a"])}))
    write_json(tmp_path / "lock.json", {"jobs": _EncodedPins(["b", "a"])})
    assert (tmp_path / "lock.json").read_text() == dumps({"jobs": {"a": {"sha256": "aa"}, "b": {"sha256": "bb"}}})


def test_holes_fill_as_the_percent_operator_does() -> None:
    """``Holes(template).fill(values)`` is ``template % values`` for ``%s`` holes and ``%%``
    escapes anywhere (first, last, side by side, none), and refuses too few or too many values."""
    rng = random.Random(7)
    for _ in range(2000):
        tokens = [rng.choice(["%s", "%%", "a", "%%s", "é\n", ""]) for _ in range(rng.randint(0, 8))]
        template = "".join(tokens)
        count = template.replace("%%", "").count("%s")
        values = tuple(rng.choice(["", "x", "%s", "%%", "{}"]) for _ in range(count))
        assert Holes(template).fill(values) == template % values, template
        with pytest.raises(ValueError):
            Holes(template).fill((*values, "extra"))
