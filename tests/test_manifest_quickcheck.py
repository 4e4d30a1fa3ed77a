"""The schema pre-check (``batchvid.manifest.quickcheck``) never contradicts jsonschema: True
only for a value it finds no error in, False only for one it finds an error in; and a valid
manifest is loaded without importing jsonschema at all."""

from __future__ import annotations

import copy
import math
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from batchvid.manifest.quickcheck import compile_check
from batchvid.schemas import load_schema
from batchvid.yamlload import load_yaml

REPO = Path(__file__).resolve().parents[1]
SCHEMA = load_schema("manifest")
ROOT = Draft202012Validator(SCHEMA)
DEFS = SCHEMA["$defs"]
NAMES = sorted(
    {name for spec in DEFS.values() if isinstance(spec, dict) for name in spec.get("properties", {})}
    | set(SCHEMA["properties"])
    | {"unknown", "ID"}
)
REQUEST_NAMES = sorted(DEFS["request"]["properties"])
SCALARS: list[Any] = [
    *(value for spec in DEFS.values() if isinstance(spec, dict) for value in spec.get("enum", [])),
    1, 0, -1, 2, 30, 30.0, 30.5, 60, 5, 10, 100, 101, 0.5, 1.5, math.nan, math.inf, True, False, None,
    "", " ", "a", "A b", "bigmodel", "geekai", "rows.jsonl", "x.txt", "p" * 513, "1", "id-1", "Id",
    "0.5:2", "cogvideox-3", "1280X720",
]  # fmt: skip


def _bases() -> list[Any]:
    """Every manifest in the repository that parses (valid ones and the invalid examples)."""
    found = []
    for path in sorted([*REPO.glob("manifests/*.yaml"), *REPO.glob("tests/invalid_manifests/*.yaml")]):
        try:
            found.append(load_yaml(path.read_text(encoding="utf-8"), str(path)).data)
        except Exception:  # not YAML, or not UTF-8: nothing for the schema
            continue
    return found


def _value(rng: random.Random, depth: int) -> Any:
    if depth > 3 or rng.random() < 0.6:
        return rng.choice(SCALARS)
    if rng.random() < 0.5:
        return [_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {rng.choice(NAMES): _value(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def _containers(value: Any, out: list[Any]) -> list[Any]:
    if isinstance(value, dict | list):
        out.append(value)
        for item in value.values() if isinstance(value, dict) else value:
            _containers(item, out)
    return out


def _mutated(rng: random.Random, value: Any) -> Any:
    """``value`` with up to three keys or items deleted, replaced or added."""
    value = copy.deepcopy(value)
    for _ in range(rng.randint(0, 3)):
        spot = rng.choice(_containers(value, []) or [None])
        new = rng.choice(SCALARS) if rng.random() < 0.8 else _value(rng, 2)
        if isinstance(spot, dict):
            if spot and rng.random() < 0.3:
                del spot[rng.choice(list(spot))]
            elif spot and rng.random() < 0.5:
                spot[rng.choice(list(spot))] = new
            else:
                spot[rng.choice(NAMES)] = new
        elif isinstance(spot, list) and spot:
            spot[rng.randrange(len(spot))] = new
    return value


def _request(rng: random.Random) -> dict[str, Any]:
    request: dict[str, Any] = {
        "provider": rng.choice(["geekai", "bigmodel", "other"]),
        "model": rng.choice(["cogvideox-flash", "cogvideox-3", "cogvideox-2", "cogvideox", 3]),
        rng.choice(["prompt", "image"]): rng.choice(["p", "i"]),
    }
    for _ in range(rng.randint(0, 3)):
        request[rng.choice([*REQUEST_NAMES, rng.choice(NAMES)])] = rng.choice(SCALARS)
    return request


def _agree(schema: Any, values: list[Any]) -> dict[bool | None, int]:
    """How often the pre-check answered True, False and None; fails at its first contradiction."""
    validator = ROOT if schema is SCHEMA else ROOT.evolve(schema=schema)
    check = compile_check(schema, SCHEMA)
    tally: dict[bool | None, int] = {True: 0, False: 0, None: 0}
    for value in values:
        answer = check(value)
        tally[answer] += 1
        if answer is not None:
            assert answer == validator.is_valid(value), value
    return tally


@pytest.mark.parametrize("seed", range(3))
def test_the_manifest_precheck_agrees_with_jsonschema(seed: int) -> None:
    """Over the repository's manifests, randomly edited: never a wrong True or False, and
    most valid ones are known valid without jsonschema."""
    rng, bases = random.Random(seed), _bases()
    tally = _agree(SCHEMA, [_mutated(rng, rng.choice(bases)) for _ in range(3000)])
    assert tally[True] > 500 and tally[False] > 500


@pytest.mark.parametrize("seed", range(3))
def test_the_request_precheck_agrees_with_jsonschema(seed: int) -> None:
    """Likewise for $defs/request, which each distinct request of a load goes through."""
    rng = random.Random(seed)
    tally = _agree(DEFS["request"], [_request(rng) for _ in range(3000)])
    assert tally[True] > 50 and tally[False] > 500


@pytest.mark.parametrize(
    "request_",
    [
        {"provider": "geekai", "model": "cogvideox-3", "prompt": "p", "fps": 30.0},  # an integral float
        {"provider": "geekai", "model": "cogvideox-3", "prompt": "p", "with_audio": 1},  # 1 is not true
        {"provider": "geekai", "model": "cogvideox-3", "prompt": "p", "fps": True},  # true is not 1
        {"provider": "geekai", "model": "cogvideox-3", "prompt": "p", "fps": math.nan},
        {"provider": "bigmodel", "model": "cogvideox", "prompt": "p"},
        {"provider": "geekai", "model": "cogvideox-flash", "image": "i", "duration": 10},
        {"provider": "geekai", "model": "cogvideox-3", "image": "i", "duration": 10, "size": "1280x720"},
    ],
)
def test_the_precheck_is_careful_with_look_alike_values(request_: dict[str, Any]) -> None:
    """Values Python equates but JSON Schema tells apart get no wrong answer."""
    _agree(DEFS["request"], [request_])


def _load_in_child(manifest: Path) -> str:
    code = (
        "import sys\nfrom batchvid.errors import ManifestErrors\nfrom batchvid.manifest import load_manifest\n"
        f"try:\n    load_manifest({str(manifest)!r})\nexcept ManifestErrors as exc:\n    print(exc)\n"
        "print('jsonschema' in sys.modules)\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout


def test_a_valid_manifest_loads_without_jsonschema(tmp_path: Path) -> None:
    """jsonschema is imported only to word an error: a valid manifest never needs it."""
    (tmp_path / "p.jsonl").write_text('{"id": "a", "prompt": "x"}\n{"prompt": "y", "fps": 60}\n', encoding="utf-8")
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        "version: 1\nprovider: bigmodel\ndefaults:\n  model: cogvideox-3\n  size: 1280x720\nlimits:\n"
        "  max_in_flight: 3\n  poll_interval: '2:10'\njobs:\n  - id: rows\n    prompts_file: p.jsonl\n"
        "  - id: sweep\n    prompt: a ${x}\n    matrix:\n      x: [cat, dog]\n      fps: [30, 60]\n",
        encoding="utf-8",
    )
    assert _load_in_child(manifest) == "False\n"
    manifest.write_text(manifest.read_text(encoding="utf-8").replace("size: 1280x720", "size: 720x480"), encoding="utf-8")
    output = _load_in_child(manifest)
    assert "$.defaults.size" in output and output.endswith("True\n")
