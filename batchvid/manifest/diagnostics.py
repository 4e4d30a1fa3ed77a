"""The explicit collector every loading stage reports into.

Stages do not raise on a problem they can describe: they record it here and go on, so a user
sees every error of a manifest at once. ``raise_if_errors`` ends the load where going on would
only mislead.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from batchvid.errors import Location, ManifestError, ManifestErrors
from batchvid.yamlload import PathKey, format_path


@dataclass(slots=True)
class Diagnostics:
    """Errors (each reported once) and warnings of one manifest's load."""

    _errors: dict[tuple[Location, str, str], ManifestError] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def error(self, location: Location, path: PathKey | str, message: str) -> None:
        """Record one problem at ``location`` and JSON path ``path``."""
        shown = path if isinstance(path, str) else format_path(path)
        self._errors.setdefault((location, shown, message), ManifestError(location, shown, message))

    def extend(self, errors: ManifestErrors) -> None:
        for e in errors.errors:
            self.error(e.location, e.path, e.message)

    def warn(self, location: Location, path: PathKey, message: str) -> None:
        """Record something worth a look that does not stop the load."""
        self.warnings.append(f"{location}: {format_path(path)}: warning: {message}")

    def __bool__(self) -> bool:
        """Whether any error was recorded."""
        return bool(self._errors)

    def raise_if_errors(self) -> None:
        if self._errors:
            raise ManifestErrors(self._errors.values())
