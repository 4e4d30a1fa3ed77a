"""YAML loading with positions (batchvid.yamlload)."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchvid.errors import ManifestErrors
from batchvid.yamlload import format_path, load_yaml, read_text


def fails(text: str) -> ManifestErrors:
    with pytest.raises(ManifestErrors) as caught:
        load_yaml(text, "f.yaml")
    return caught.value


def test_positions_are_one_based_for_values_and_keys() -> None:
    """Each value and each key is located at its 1-based line and column."""
    document = load_yaml("a: 1\nb:\n  - x\n  - {c: 2}\n", "f.yaml")
    assert document.data == {"a": 1, "b": ["x", {"c": 2}]}
    assert document.positions.values[("b", 1, "c")] == (4, 9)
    assert document.positions.keys[("b",)] == (2, 1)
    assert str(document.positions.of_key(("b", 1, "c"))) == "f.yaml:4:6"


def test_missing_path_falls_back_to_parent() -> None:
    """A path that does not exist (a missing key) is located at its nearest parent."""
    document = load_yaml("jobs:\n  - id: a\n", "f.yaml")
    assert str(document.positions.of_value(("jobs", 0, "prompt"))) == "f.yaml:2:5"


def test_duplicate_key_is_refused() -> None:
    """A repeated key is an error at the second one, naming the first line."""
    error = fails("a: 1\nb: 2\na: 3\n")
    assert str(error) == (
        "f.yaml:3:1: $.a: duplicate key 'a' (first written at line 1); "
        "YAML would silently keep only the last one"
    )


def test_alias_is_refused_at_the_alias() -> None:
    """Aliases are refused, located at the alias rather than the anchor."""
    error = fails("a: &x [1, 2]\nb: *x\n")
    assert str(error).startswith("f.yaml:2:4: $.b: YAML aliases (*x) are not supported")


def test_alias_bomb_is_refused_quickly() -> None:
    """A billion-laughs document fails with one error instead of expanding."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 12)]
    error = fails("\n".join(lines) + "\n")
    assert len(error.errors) == 1
    assert "(110 aliases in the file)" in error.message


def test_tab_indentation_gets_a_hint() -> None:
    """A tab used for indentation is a syntax error that says to use spaces."""
    error = fails("a:\n\tb: 1\n")
    assert error.location.line == 2 and "use spaces" in error.message


def test_syntax_error_has_position() -> None:
    """A YAML syntax error carries its line and column."""
    error = fails("a: [1, 2\nb: 3\n")
    assert error.location.line == 2 and error.message.startswith("YAML syntax error")


def test_multiple_documents_are_refused() -> None:
    """A second YAML document is refused clearly."""
    assert "one YAML document" in fails("a: 1\n---\nb: 2\n").message


def test_unsupported_tag_is_refused() -> None:
    """Tags without a JSON meaning (!!binary, custom) are refused."""
    assert "unsupported YAML tag" in fails("a: !!binary aGk=\n").message


def test_merge_key_is_refused() -> None:
    """The << merge key is refused with a pointer to defaults."""
    assert "merge keys" in fails("<<: {a: 1}\n").message


def test_timestamps_stay_text() -> None:
    """A date-like scalar stays the string written (JSON has no dates)."""
    assert load_yaml("d: 2024-01-01\n", "f.yaml").data == {"d": "2024-01-01"}


def test_non_utf8_names_offset_and_line(tmp_path: Path) -> None:
    """Bytes that are not UTF-8 are reported at their line, column and byte offset."""
    path = tmp_path / "bad.yaml"
    path.write_bytes(b"a: 1\nb: caf\xe9\n")
    with pytest.raises(ManifestErrors) as caught:
        read_text(path, "bad.yaml", max_bytes=1000)
    assert str(caught.value).startswith("bad.yaml:2:7: $: the file is not UTF-8: byte 0xe9 at offset 11")


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    """A UTF-8 byte-order mark is allowed and dropped."""
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbfa: 1\n")
    assert read_text(path, "bom.yaml", max_bytes=1000) == "a: 1\n"


def test_size_limit_names_the_limit(tmp_path: Path) -> None:
    """A file over the limit is refused before reading, naming the limit."""
    path = tmp_path / "big.yaml"
    path.write_bytes(b"#" * 2048)
    with pytest.raises(ManifestErrors, match="the limit is 1,024 bytes"):
        read_text(path, "big.yaml", max_bytes=1024)


def test_format_path() -> None:
    """JSON paths use dots for names and brackets for indices and odd keys."""
    assert format_path(("jobs", 2, "size")) == "$.jobs[2].size"
    assert format_path(("pricing", "cogvideox-2")) == "$.pricing['cogvideox-2']"
    assert format_path(()) == "$"


def test_colon_in_an_unquoted_value_gets_a_hint() -> None:
    """A 'mapping values are not allowed' error says to check indentation and to quote values with ': '."""
    (error,) = fails("jobs:\n  - id: a\n    prompt: Scene: a cat\n").errors
    assert (error.location.line, error.location.column) == (3, 18)
    assert "mapping values are not allowed" in error.message
    assert "check the indentation" in error.message and "quote a value that holds ': '" in error.message


def test_base60_is_the_text_written_wherever_it_is_and_numbers_stay_numbers() -> None:
    """A plain `10:30` is the text in a block value, a flow sequence, a flow mapping and with
    CRLF breaks (YAML 1.1 read 630, `1:30.5` 90.5); quoted, block-scalar and commented ones
    are untouched; plain numbers, `010` and `0x10` keep YAML's value."""
    text = (
        "a: 10:30\r\n"
        "b: [1:30.5, '10:30', 7, 2.5] # at 10:30\r\n"
        "c: {d: -1:05}\r\n"
        "e: |\r\n  at 10:30\r\n"
        "f: [010, 0x10, 5]\r\n"
    )
    data = load_yaml(text, "m.yaml").data
    assert data == {"a": "10:30", "b": ["1:30.5", "10:30", 7, 2.5], "c": {"d": "-1:05"},
                    "e": "at 10:30\n", "f": [8, 16, 5]}


def test_scalars_only_yaml_1_1_reads_as_booleans_or_integers_keep_their_text() -> None:
    """`NO`, `on`, `010`, `1_000` keep the text written beside the value YAML 1.1 gives;
    `true`, `5`, `-3`, `0`, `0x10` and quoted ones are the same in YAML 1.2: none kept."""
    document = load_yaml("v: [NO, on, 010, 1_000, true, 5, -3, 0, 0x10, 'off', +07]\n", "m.yaml")
    assert document.data["v"][:4] == [False, True, 8, 1000]
    assert document.positions.yaml11 == {
        ("v", 0): "NO", ("v", 1): "on", ("v", 2): "010", ("v", 3): "1_000", ("v", 10): "+07"}
