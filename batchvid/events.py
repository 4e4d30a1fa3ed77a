"""What the runner reports as it goes: small frozen values. The progress display, the log and
the tests subscribe; the runner knows nothing of them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any


@dataclass(frozen=True, slots=True)
class Event:
    def to_dict(self) -> dict[str, Any]:
        return {"event": type(self).__name__, **asdict(self)}


@dataclass(frozen=True, slots=True)
class RunStarted(Event):
    total: int
    actions: dict[str, int]


@dataclass(frozen=True, slots=True)
class JobSubmitted(Event):
    job_id: str
    task_id: str


@dataclass(frozen=True, slots=True)
class JobPolled(Event):
    job_id: str
    task_id: str
    status: str


@dataclass(frozen=True, slots=True)
class JobRetrying(Event):
    job_id: str
    step: str
    attempt: int
    delay: float
    error: str


@dataclass(frozen=True, slots=True)
class JobDownloaded(Event):
    job_id: str
    bytes: int


@dataclass(frozen=True, slots=True)
class JobFinished(Event):
    job_id: str
    status: str
    error_kind: str | None = None
    message: str | None = None


@dataclass(frozen=True, slots=True)
class RunStopping(Event):
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class RunFinished(Event):
    exit_code: int
    summary: dict[str, int]


Subscriber = Callable[[Event], None]


def scrubber(secret: str) -> Callable[[str], str]:
    """A function that blanks ``secret`` out of any text."""
    if len(secret) < 4:
        return lambda text: text
    return lambda text: text.replace(secret, "[REDACTED]")


class Broadcaster:
    """Hands each event to every subscriber, with ``scrub`` applied to its text fields first:
    no subscriber (log, display, report) ever sees the API key."""

    def __init__(self, subscribers: Sequence[Subscriber], scrub: Callable[[str], str]) -> None:
        self.subscribers = list(subscribers)
        self.scrub = scrub

    def __call__(self, event: Event) -> None:
        changes = {
            f.name: self.scrub(value)
            for f in fields(event)
            if isinstance(value := getattr(event, f.name), str)
        }
        event = replace(event, **changes)
        for subscriber in self.subscribers:
            subscriber(event)


@dataclass
class Collector:
    """A subscriber that keeps every event, in order (for tests and embedding programs)."""

    events: list[Event] = field(default_factory=list)

    def __call__(self, event: Event) -> None:
        self.events.append(event)
