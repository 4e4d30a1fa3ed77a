"""What every loading stage reads: the manifest's file, its positions and the collector.

These are values handed from stage to stage; the only thing a stage changes is the
``Diagnostics`` it reports into.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from batchvid.errors import Location
from batchvid.manifest.diagnostics import Diagnostics
from batchvid.manifest.messages import Validators, validators
from batchvid.yamlload import PathKey, Positions

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Context:
    """One manifest's file: how the user named it, where its values were written."""

    display: str
    """The path as given: every message names the file this way."""
    path: Path
    positions: Positions
    root: Path
    """Files the manifest names (images, prompts files) must resolve inside this directory."""
    diagnostics: Diagnostics = field(default_factory=Diagnostics)
    checks: Validators = field(default_factory=validators)

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def at(self, path: PathKey, *, key: bool = False) -> Location:
        return self.positions.of_key(path) if key else self.positions.of_value(path)

    def error(self, location: Location, path: PathKey | str, message: str) -> None:
        self.diagnostics.error(location, path, message)


@dataclass(frozen=True, slots=True)
class Scope:
    """What the manifest sets for every job, once its shape is known to be sound."""

    provider: str
    defaults: Mapping[str, Any]
    request_issues: dict[Any, Any] = field(default_factory=dict)
    """Schema issues of each distinct request seen so far (memo; see ``expand.check_request``)."""


class Claims(dict[str, T]):
    """First come, first served: the one rule behind every uniqueness check of a load
    (ids as written, ids as expanded, requests by key). A name's first holder is ``self[name]``.
    """

    def claim(self, name: str, holder: T) -> T | None:
        """None if ``name`` was free (``holder`` now holds it), else its first holder."""
        if name in self:
            return self[name]
        self[name] = holder
        return None
