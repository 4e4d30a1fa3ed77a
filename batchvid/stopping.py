"""Stopping a run early: why it stopped, no more creates, and the waits an interrupt ends.

A stop has a reason (``budget``, ``interrupted``, or a run-fatal error kind such as ``auth``);
the first one is the one reported. A halting stop lets no create leave that has not been sent.
An interrupt (the first SIGINT/SIGTERM) also ends every wait on a task at once (the tasks are
journaled and re-attached next run) and gives downloads under way ``grace`` seconds; a second
signal cancels the jobs at once.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator

import anyio

from batchvid.events import Event, RunStopping

RUN_STOPPING = "finishing downloads under way"
"""What ``run`` does once interrupted: no new creates, no more waiting on tasks (journaled,
re-attached next run), downloads under way get ``grace`` seconds."""
ENHANCE_STOPPING = "asking for no more rewrites (the one under way is dropped and asked again next time)"
"""What ``enhance`` does once interrupted: it downloads nothing; the chat request under way is
cancelled (an ``interruptible`` wait) and the rewrites already made are in the journal."""


class Stopped(Exception):
    """The run is stopping; this job goes no further."""


class Stopper:
    def __init__(
        self, emit: Callable[[Event], None], scrub: Callable[[str], str], grace: float
    ) -> None:
        self._emit = emit
        self._scrub = scrub
        self._grace = grace
        self.reason: dict[str, str] | None = None
        self._halt = anyio.Event()
        self._interrupted = False
        self._waits: set[anyio.CancelScope] = set()
        self.jobs_scope: anyio.CancelScope | None = None
        """The scope of the job tasks, once the run is executing (a CancelScope needs a loop)."""

    @property
    def halted(self) -> bool:
        """Whether creates not yet sent must stay unsent."""
        return self._halt.is_set()

    @property
    def interrupted(self) -> bool:
        """Whether a signal (SIGINT, SIGTERM) or ``interrupt`` asked the run to stop."""
        return self._interrupted

    def stop(self, reason: str, message: str, *, halt: bool = True) -> None:
        """Record why the run stops early and, with ``halt``, stop every create not yet sent.
        A budget stop does not halt: jobs already admitted within the budget go on."""
        if self.reason is None:
            self.reason = {"reason": reason, "message": self._scrub(message)}
            self._emit(RunStopping(reason, self.reason["message"]))
        if halt:
            self._halt.set()

    def check(self) -> None:
        """Raise ``Stopped`` when creates are halted."""
        if self.halted:
            raise Stopped

    def interrupt(self, message: str) -> None:
        """Stop submitting and stop waiting on tasks; downloads get ``grace`` seconds."""
        self._interrupted = True
        self.stop("interrupted", message)
        for scope in list(self._waits):
            scope.cancel()
        if self.jobs_scope is not None:
            self.jobs_scope.deadline = min(self.jobs_scope.deadline, anyio.current_time() + self._grace)

    @contextlib.contextmanager
    def interruptible(self) -> Iterator[None]:
        """A stretch of waiting that an interrupt ends at once, as ``Stopped``. Never wrap a
        create request in it: cancelling one mid-flight could lose a paid task's id."""
        scope = anyio.CancelScope()
        if self._interrupted:
            scope.cancel()
        self._waits.add(scope)
        try:
            with scope:
                yield
        finally:
            self._waits.discard(scope)
        if scope.cancelled_caught:
            raise Stopped

    async def watch_signals(self, doing: str = RUN_STOPPING) -> None:
        """Interrupt on the first SIGINT/SIGTERM, saying ``doing`` (what the command does as it
        stops: ``RUN_STOPPING``, ``ENHANCE_STOPPING``); cancel the jobs on the next one."""
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            count = 0
            async for signum in signals:
                count += 1
                name = signal.Signals(signum).name
                if count == 1:
                    self.interrupt(f"{name} received; {doing}")
                elif self.jobs_scope is not None:
                    # Stop at once, and keep receiving: a later signal must not turn into a
                    # KeyboardInterrupt inside a shielded create and lose its task id.
                    self.jobs_scope.cancel()
