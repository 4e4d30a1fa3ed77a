"""The shipped JSON Schemas (batchvid.schemas, schemas/manifest.schema.json)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator

from batchvid.schemas import load_schema, schema_text

REPO = Path(__file__).resolve().parent.parent


def test_manifest_schema_is_valid_draft_2020_12() -> None:
    """The manifest schema passes the 2020-12 metaschema and has an $id."""
    schema = load_schema("manifest")
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"].endswith("manifest.schema.json")


def test_load_schema_is_cached() -> None:
    """The same parsed dict is returned on every call."""
    assert load_schema("manifest") is load_schema("manifest")


def test_schema_text_matches_repository_file() -> None:
    """In a checkout, the schema text is the repository's schemas/ file."""
    expected = (REPO / "schemas" / "manifest.schema.json").read_text(encoding="utf-8")
    assert schema_text("manifest") == expected


def test_unknown_schema_name() -> None:
    """Asking for a schema that does not exist is a ValueError naming the known ones."""
    with pytest.raises(ValueError, match="manifest, report"):
        load_schema("nope")


@pytest.mark.parametrize("path", sorted((REPO / "manifests").glob("*.yaml")), ids=lambda p: p.name)
def test_examples_pass_the_plain_schema(path: Path) -> None:
    """An editor using only the JSON Schema finds no error in any example."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    errors = list(Draft202012Validator(load_schema("manifest")).iter_errors(data))
    assert errors == []


def test_size_lists_match_the_api_notes() -> None:
    """The per-model size lists are the ones BigModel documents."""
    defs = load_schema("manifest")["$defs"]
    assert defs["sizesCogvideox3"]["enum"] == [
        "1280x720", "720x1280", "1024x1024", "1920x1080", "1080x1920", "2048x1080", "3840x2160",
    ]
    assert defs["sizesCogvideox2"]["enum"] == [
        "720x480", "1024x1024", "1280x960", "960x1280", "1920x1080", "1080x1920", "2048x1080", "3840x2160",
    ]
    assert defs["bigmodelModel"]["enum"] == ["cogvideox-flash", "cogvideox-2", "cogvideox-3"]


def test_every_property_has_help() -> None:
    """Top-level and job properties carry a title or description for editors."""
    schema = load_schema("manifest")
    for name, sub in schema["properties"].items():
        target = schema["$defs"][sub["$ref"].split("/")[-1]] if "$ref" in sub and len(sub) == 1 else sub
        assert "title" in target or "description" in target, name
    json.dumps(schema)  # plain JSON all the way down
