"""The exceptions batchvid raises.

Every expected failure is a ``BatchvidError``; the CLI turns it into a message and an exit code.

::

    BatchvidError
     ├── UsageError             bad command-line arguments or settings (exit 2)
     ├── ConfigError            missing API key, unusable base URL (exit 2)
     ├── ManifestError          one problem at FILE:LINE:COL $.path (exit 2)
     │    └── ManifestErrors    all problems of a manifest at once (exit 2)
     ├── OutputDirError         the output directory is unusable
     │    └── OutputDirLocked   another run holds the output directory
     └── ProviderError          an HTTP or protocol failure, classified
          ├── TransientError    retry after a delay
          ├── JobFatalError     this job fails; others go on
          └── RunFatalError     stop submitting; the run can be resumed later (exit 3)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

Reach = Literal["not_sent", "maybe_delivered", "answered"]
"""How far a request got before it failed (see ``batchvid.billing``)."""


class BatchvidError(Exception):
    """Root of every error batchvid raises on purpose."""


class UsageError(BatchvidError):
    """The command line or the settings are wrong."""


class ConfigError(BatchvidError):
    """The environment is not set up for the run (for example, no API key)."""


@dataclass(frozen=True, slots=True)
class Location:
    """A place in a file, 1-based, as editors count."""

    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


class ManifestError(BatchvidError):
    """One problem in a manifest, at a place and a JSON path."""

    def __init__(self, location: Location, path: str, message: str) -> None:
        self.location = location
        self.path = path
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"{self.location}: {self.path}: {self.message}"

    def sort_key(self) -> tuple[str, int, int, str]:
        loc = self.location
        return (loc.file, loc.line, loc.column, self.path)


class ManifestErrors(ManifestError):
    """Every problem found in one or more manifests, in file order."""

    def __init__(self, errors: Iterable[ManifestError]) -> None:
        self.errors: Sequence[ManifestError] = sorted(errors, key=ManifestError.sort_key)
        if not self.errors:
            raise ValueError("ManifestErrors needs at least one error")
        first = self.errors[0]
        super().__init__(first.location, first.path, first.message)

    def __str__(self) -> str:
        return "\n".join(ManifestError.__str__(e) for e in self.errors)


class OutputDirError(BatchvidError):
    """The output directory cannot be used as asked."""


class OutputDirLocked(OutputDirError):
    """Another batchvid process is writing into the output directory."""


class ProviderError(BatchvidError):
    """A failure talking to a provider, with what it means for the run.

    ``kind`` is a short, stable word that lands in ``report.json`` as ``error.kind``
    (for example ``rate_limited``, ``content_filter``, ``invalid_request``, ``task_failed``).
    ``reach`` says how far the request got: the provider layer sets ``not_sent`` or
    ``maybe_delivered`` where it translates a transport failure; an error built from an answer
    is ``answered``.
    """

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        reach: Reach = "answered",
    ) -> None:
        self.kind = kind
        self.reach: Reach = reach
        self.message = message
        self.status = status
        self.code = code
        self.retry_after = retry_after
        super().__init__(message)

    @property
    def detail(self) -> str:
        """The message with the HTTP status and provider code, without the kind."""
        where = ", ".join(
            part
            for part in (
                f"HTTP {self.status}" if self.status is not None else "",
                f"code {self.code}" if self.code else "",
            )
            if part
        )
        return self.message + (f" ({where})" if where else "")

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}"


class TransientError(ProviderError):
    """Worth retrying after ``retry_after`` seconds (or a backoff delay)."""


class JobFatalError(ProviderError):
    """This job cannot succeed as written; it is marked failed and not retried."""


class RunFatalError(ProviderError):
    """The account or key cannot go on (auth refused, out of balance, daily quota)."""
