"""What a manifest's ``enhance:`` asks for, resolved: the chat model, the instructions' text and
the temperature; and the fingerprint of those that goes into a job's key.

``enhance`` is written under ``defaults:`` or a job. The job's value wins key by key over the
defaults' (``merge_enhance``); ``enhance: false`` turns enhancement off for that job, and
``enhance: true`` (or ``{}``) asks for it with every setting at its default.

``instructions`` is either a file beside the manifest or inline text, by this rule: a value on
one line that ends in ``.txt`` or ``.md`` (any case) is a path, relative to the manifest's
directory and inside it, and the file must exist; anything else is the instructions' text
itself. A misspelt path is therefore an error, never silently sent as instructions.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from batchvid.errors import Location, ManifestError
from batchvid.images import ImageProblem, resolve_inside
from batchvid.yamlload import read_text

DEFAULT_MODEL = "glm-4-flash"
"""The chat model used when ``enhance`` names none: free on BigModel, routed by GeekAI."""

DEFAULT_TEMPERATURE = 0.1
"""Near zero, as CogVideoX's authors rewrite prompts: the same idea gives much the same answer."""

MAX_INSTRUCTIONS_BYTES = 64 * 1024
"""An instructions file larger than this is refused (it goes into every chat request)."""

INSTRUCTION_SUFFIXES = (".txt", ".md")
"""An ``instructions`` value on one line ending in one of these names a file."""

_KEYS = frozenset({"model", "instructions", "temperature", "required"})


@dataclass(frozen=True, slots=True)
class EnhanceSettings:
    """How a job's prompt is rewritten before generation."""

    model: str
    """The chat model, on the job's provider (for example ``glm-4-flash``)."""
    instructions: str
    """The system instructions' text, resolved (file read, or inline, or batchvid's default)."""
    instructions_source: str
    """Where the text came from: ``default``, ``inline``, or the path as the manifest wrote it."""
    temperature: float = DEFAULT_TEMPERATURE
    required: bool = False
    """Fail the job (``enhance_failed``) rather than fall back to the original prompt."""


@functools.cache
def default_instructions() -> str:
    """batchvid's own instructions, shipped in the package as ``enhance/instructions.txt``."""
    text = resources.files("batchvid.enhance").joinpath("instructions.txt").read_text("utf-8")
    return _normalised(text)


def enhance_fingerprint(settings: EnhanceSettings) -> dict[str, Any]:
    """What the job key includes of the enhancement: the model, the sha256 of the instructions'
    text and the temperature.

    Never the chat model's answer (a rerun must find the same key before asking anything), nor
    where the instructions live (moving the file reruns nothing; editing it reruns exactly the
    jobs it applies to), nor ``required`` (it changes what a failure does, not what is asked).
    """
    digest = hashlib.sha256(settings.instructions.encode("utf-8")).hexdigest()
    return {
        "model": settings.model,
        "instructions_sha256": digest,
        "temperature": float(settings.temperature),
    }


def merge_enhance(defaults: Any, job: Any) -> Any:
    """The ``enhance`` value in force for a job: the job's keys over the defaults' keys.

    ``None`` means "not written". A job's ``false`` turns it off whatever the defaults say; a
    job's ``true`` takes the defaults' settings (or all defaults). Returns a dict, ``False`` or
    ``None`` (not written anywhere).
    """
    if job is None:
        return {} if defaults is True else defaults
    if job is False:
        return False
    base = dict(defaults) if isinstance(defaults, Mapping) else {}
    if job is True:
        return base
    if isinstance(job, Mapping):
        return {**base, **job}
    return job  # not a mapping or a boolean: enhance_settings reports it


def enhance_settings(
    value: Any, base_dir: Path, *, location: Location, path: str, display_dir: str = ""
) -> EnhanceSettings | None:
    """Settings from an ``enhance`` value (after ``merge_enhance``), or None when it is off.

    ``base_dir`` is the manifest's directory; ``display_dir`` is how the user spells it, for
    messages. ``location`` and ``path`` (the JSON path of the ``enhance`` value) place the
    errors: a wrong value, or an instructions file that is missing, outside the manifest's
    directory, empty, too large or not UTF-8.
    """
    if value is None or value is False:
        return None
    if value is True:
        value = {}
    if not isinstance(value, Mapping):
        raise ManifestError(
            location, path, "enhance is a mapping (model, instructions, ...) or false"
        )
    unknown = sorted(set(value) - _KEYS)
    if unknown:
        raise ManifestError(
            location, f"{path}.{unknown[0]}", f"unknown enhance setting {unknown[0]!r}"
        )
    model = value.get("model", DEFAULT_MODEL)
    if not isinstance(model, str) or not model.strip():
        raise ManifestError(location, f"{path}.model", "the chat model is a non-empty name")
    temperature = value.get("temperature", DEFAULT_TEMPERATURE)
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, int | float)
        or not (math.isfinite(temperature) and 0 <= temperature <= 1)
    ):
        raise ManifestError(
            location, f"{path}.temperature", "the temperature is a number from 0 to 1"
        )
    required = value.get("required", False)
    if not isinstance(required, bool):
        raise ManifestError(location, f"{path}.required", "required is true or false")
    text, source = _instructions(
        value.get("instructions"), base_dir, location, f"{path}.instructions", display_dir
    )
    return EnhanceSettings(model.strip(), text, source, float(temperature), required)


def names_file(value: str) -> bool:
    """Whether an ``instructions`` value is a file path (one line, ending .txt or .md)."""
    one_line = "\n" not in value and "\r" not in value
    return one_line and value.strip().lower().endswith(INSTRUCTION_SUFFIXES)


def _instructions(
    value: Any, base_dir: Path, location: Location, path: str, display_dir: str
) -> tuple[str, str]:
    if value is None:
        return default_instructions(), "default"
    if not isinstance(value, str) or not value.strip():
        raise ManifestError(location, path, "instructions are a file name or non-empty text")
    if not names_file(value):
        return _normalised(value), "inline"
    reference = value.strip()
    shown = str(Path(display_dir) / reference) if display_dir else reference
    try:
        target = resolve_inside(base_dir, reference, "an instructions file")
    except ImageProblem as problem:
        raise ManifestError(location, path, str(problem)) from None
    if not target.is_file():
        raise ManifestError(
            location,
            path,
            f"instructions file {reference!r} does not exist (looked for {shown!r}); a value on "
            f"one line ending in {' or '.join(INSTRUCTION_SUFFIXES)} names a file beside the manifest",
        )
    text = read_text(target, shown, max_bytes=MAX_INSTRUCTIONS_BYTES, what="instructions file")
    if not text.strip():
        raise ManifestError(location, path, f"instructions file {shown!r} is empty")
    return _normalised(text), reference


def _normalised(text: str) -> str:
    """``text`` stripped, with CRLF and CR line ends as LF: a checkout with Windows line ends
    hashes the same, so it gives the same job keys."""
    return text.replace("\r\n", "\n").replace("\r", "\n").strip()
