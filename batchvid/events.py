"""What the runner reports as it goes: small frozen values. The progress display, the log and
the tests subscribe; the runner knows nothing of them."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any


@dataclass(frozen=True, slots=True)
class Event:
    def to_dict(self) -> dict[str, Any]:
        return {"event": type(self).__name__, **asdict(self)}


@dataclass(frozen=True, slots=True)
class RunStarted(Event):
    """The run begins: how many jobs it reports on, and how many take each action."""

    total: int
    actions: dict[str, int]


@dataclass(frozen=True, slots=True)
class JournalLineSetAside(Event):
    """The journal's last line was no entry (a crash cut it, or it is damaged): its ``bytes``
    bytes from ``offset`` were moved to the end of ``path`` (kept: it may name a paid task)
    and the journal goes on without it."""

    path: str
    offset: int
    bytes: int

    def message(self) -> str:
        return (f"the journal's last line was not a whole entry ({self.bytes} bytes at offset "
                f"{self.offset}): moved to {self.path}; the journal goes on without it")


@dataclass(frozen=True, slots=True)
class JobSubmitted(Event):
    """A create was accepted: the job has a task id (journaled before this is emitted)."""

    job_id: str
    task_id: str


@dataclass(frozen=True, slots=True)
class JobPolled(Event):
    """A task was polled; ``status`` is the word the provider used."""

    job_id: str
    task_id: str
    status: str


@dataclass(frozen=True, slots=True)
class JobRetrying(Event):
    """A step (create, poll, download) failed and is tried again after ``delay`` seconds."""

    job_id: str
    step: str
    attempt: int
    delay: float
    error: str


@dataclass(frozen=True, slots=True)
class JobDownloaded(Event):
    """The video is in place, hashed and journaled."""

    job_id: str
    bytes: int


@dataclass(frozen=True, slots=True)
class JobFinished(Event):
    """A job ended in this run (``succeeded``, ``failed``, or ``pending`` when stopped)."""

    job_id: str
    status: str
    error_kind: str | None = None
    message: str | None = None


@dataclass(frozen=True, slots=True)
class RunStopping(Event):
    """The run stops early (budget, interrupt or a run-fatal error); the first reason."""

    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class RunFinished(Event):
    """The report is written; ``exit_code`` is the run's."""

    exit_code: int
    summary: dict[str, int]


Subscriber = Callable[[Event], None]


def scrubber(secret: str) -> Callable[[str], str]:
    """A function that blanks ``secret`` out of any text."""
    if len(secret) < 4:
        return lambda text: text
    return lambda text: text.replace(secret, "[REDACTED]")


_NAMES: dict[type[Event], tuple[str, ...]] = {}


def _names(kind: type[Event]) -> tuple[str, ...]:
    """The field names of an event class (looked up once per class)."""
    names = _NAMES.get(kind)
    if names is None:
        names = _NAMES[kind] = tuple(f.name for f in fields(kind))
    return names


class Broadcaster:
    """Hands each event to every subscriber, with ``scrub`` applied to its text fields first:
    no subscriber (log, display, report) ever sees the API key."""

    def __init__(self, subscribers: Sequence[Subscriber], scrub: Callable[[str], str]) -> None:
        self.subscribers = list(subscribers)
        self.scrub = scrub

    def __call__(self, event: Event) -> None:
        scrub, changes = self.scrub, {}
        for name in _names(type(event)):
            value = getattr(event, name)
            if isinstance(value, str) and (scrubbed := scrub(value)) != value:
                changes[name] = scrubbed
        if changes:  # a new event only when the key was in one of its texts
            event = replace(event, **changes)
        for subscriber in self.subscribers:
            subscriber(event)


@dataclass
class Collector:
    """A subscriber that keeps every event, in order (for tests and embedding programs)."""

    events: list[Event] = field(default_factory=list)

    def __call__(self, event: Event) -> None:
        self.events.append(event)


@dataclass(frozen=True)
class Effects:
    """What the run's components do to the world besides HTTP, injected so tests control it:
    events out (scrubbed), secret scrubbing, the clock, sleeping and randomness."""

    emit: Callable[[Event], None]
    scrub: Callable[[str], str]
    clock: Callable[[], float]
    sleep: Callable[[float], Awaitable[None]]
    rng: random.Random
