"""Decide, job by job, what a run would do with an output directory, and why; estimate cost."""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import compress, repeat
from operator import attrgetter, eq
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast, get_args

from batchvid.billing import UNCONFIRMED_KIND, Verdict, unanswered_create
from batchvid.edited import edited_reason
from batchvid.gcpause import paused_gc
from batchvid.jobs import (
    Job,
    JobColumns,
    JobSequence,
    MadeOnUse,
    model_of,
    shared_column,
)
from batchvid.selection import select

if TYPE_CHECKING:  # the providers (httpx), the store (anyio) and the report: only where used, so
    # that planning new jobs (``batchvid plan`` of a fresh output directory) imports none of them
    from batchvid.journal import JobRecord
    from batchvid.report import Status
    from batchvid.videocheck import VideoCheck

T = TypeVar("T")

Action = Literal["submit", "reattach", "download", "skip", "keep-failed"]

STATUS_OF_ACTION: Mapping[Action, Status] = {
    "submit": "pending",
    "reattach": "pending",
    "download": "pending",
    "skip": "skipped",
    "keep-failed": "failed",
}
"""A job's status in the report before the run works on it (and after, if it never gets to):
what it is given ``skip`` or ``keep-failed`` is final; the others are pending until done."""

ACTIVE: tuple[Action, ...] = ("submit", "reattach", "download")
"""The actions a run executes (the others only report)."""

# Price per video in CNY (docs/providers.md, "Prices"). GeekAI publishes its prices only in its console; its
# English page marks cogvideox-flash free. A manifest's ``pricing:`` sets or overrides these.
PRICES: Mapping[str, Mapping[str, float]] = {
    "bigmodel": {"cogvideox-3": 1.0, "cogvideox-2": 0.5, "cogvideox-flash": 0.0},
    "geekai": {"cogvideox-flash": 0.0},
}
CURRENCY = "CNY"
UNANSWERED_CREATE = {
    "kind": UNCONFIRMED_KIND,
    "message": (
        "a create request was in flight when an earlier run stopped and its answer was never "
        "recorded; the provider has no idempotency key, so it was not sent again so as not to "
        "pay twice. --retry-failed submits it again"
    ),
}
"""The error of a job whose create was cut off by a crash, on a provider that cannot refuse a
duplicate (GeekAI): the same policy as for a create whose connection failed mid-request."""

# Generation time is undocumented; the SDK examples wait up to 300 s. Used only for the estimate.
ASSUMED_TASK_SECONDS = 90.0


@dataclass(frozen=True, slots=True)
class Step:
    """What a run does with one job."""

    job: Job
    action: Action
    reason: str
    """Why, for a person (shown by ``plan``)."""
    record: JobRecord | None = None
    """What the journal says about the job's key, if anything."""
    enhance: bool = False
    """The job's prompt is rewritten before its create (``docs/enhance.md``): none is stored."""

    @property
    def pays(self) -> bool:
        return self.action == "submit"


class NewSteps(MadeOnUse[Step]):
    """The steps of jobs that are all new and plain (``submit``, "new job"), kept as the jobs'
    ``JobColumns`` until a step is first asked for: ``batchvid plan`` of a fresh output
    directory counts, prices and shows them from the columns, never making a Job or a Step.
    Then it behaves as the tuple of its steps (``MadeOnUse``)."""

    __slots__ = ("jobs", "columns", "_made")

    def __init__(self, jobs: Sequence[Job], columns: JobColumns) -> None:
        self.jobs, self.columns = jobs, columns
        self._made: tuple[Step, ...] | None = None

    def made(self) -> tuple[Step, ...]:
        if self._made is None:
            with paused_gc():
                self._made = tuple(_new_steps(self.jobs))
        return self._made

    def __len__(self) -> int:
        return len(self.columns.ids)


@dataclass(frozen=True, slots=True)
class Plan:
    steps: Sequence[Step]
    """In job order: a tuple, or a ``NewSteps``."""
    prices: Mapping[str, float]
    currency: str = CURRENCY
    _memo: dict[str, Any] = field(default_factory=dict, init=False, compare=False, repr=False)
    """What ``cost``, ``unpriced``, ``counts`` and the estimate share, made once for ``steps``."""

    def _once(self, name: str, make: Callable[[], T]) -> T:
        """``make()``, kept for these steps (a Plan ``replace``d with other steps makes its own)."""
        if self._memo.get("steps") is not self.steps:
            self._memo.clear()
            self._memo["steps"] = self.steps
        if name not in self._memo:
            self._memo[name] = make()
        return cast(T, self._memo[name])

    def _tally(self) -> Counter[str]:
        if isinstance(self.steps, NewSteps):  # every step a submit
            return self._once("tally", lambda: Counter({"submit": len(self.steps)} if self.steps else {}))
        return self._once("tally", lambda: Counter(map(_ACTION, self.steps)))

    def count(self, action: Action) -> int:
        return self._tally()[action]

    def counts(self) -> dict[str, int]:
        """How many steps take each action, in ``Action`` order, leaving out the zeros."""
        tally = self._tally()
        return {action: tally[action] for action in get_args(Action) if tally[action]}

    def price(self, job: Job) -> float | None:
        return self.prices.get(job.model)

    def _submitted_models(self) -> list[str]:
        """The model of each submit, in order (read once per parameters dict: ``shared_column``)."""

        def models() -> list[str]:
            if isinstance(self.steps, NewSteps):  # the jobs' own dicts, as ``shared_column`` reads
                return self.steps.columns.column(model_of)
            steps: Iterable[Step] = self.steps
            if self._tally()["submit"] != len(self.steps):  # else every step (a new manifest's plan)
                steps = compress(self.steps, map(eq, map(_ACTION, self.steps), repeat("submit")))
            return shared_column(map(_JOB, steps), model_of)

        return self._once("models", models)

    def models(self) -> list[str]:
        """The model of each step, in order: a plan of all submits shares its submits' list."""
        if self._tally()["submit"] == len(self.steps):
            return self._submitted_models()
        return self._once("all models", lambda: shared_column(list(map(_JOB, self.steps)), model_of))

    @property
    def cost(self) -> float:
        """Known cost of the submits (unknown prices count as zero; see ``unpriced``)."""
        models = self._submitted_models()
        price = {model: self.prices.get(model) or 0.0 for model in set(models)}
        return sum(map(price.__getitem__, models))  # the same additions, in the same order

    @property
    def unpriced(self) -> list[str]:
        models = set(self._submitted_models())
        return sorted(model for model in models if model not in self.prices)

    def estimated_seconds(self, max_in_flight: int, rpm: float | None) -> float:
        """Wall time if the provider's limits bind: tasks in waves of ``max_in_flight``, creates
        paced by ``rpm``; whichever is slower."""
        tally = self._tally()
        active = sum(tally[action] for action in ACTIVE)
        if not active:
            return 0.0
        waves = math.ceil(active / max(1, max_in_flight)) * ASSUMED_TASK_SECONDS
        paced = (tally["submit"] / rpm * 60.0) if rpm else 0.0
        return max(waves, paced)


_ACTION, _ENHANCE, _JOB = attrgetter("action"), attrgetter("enhance"), attrgetter("job")


def prices_for(provider: str, overrides: Mapping[str, float]) -> dict[str, float]:
    prices = dict(PRICES.get(provider, {}))
    prices.update({k: float(v) for k, v in overrides.items()})
    return prices


def decide(
    job: Job,
    record: JobRecord | None,
    out_dir: Path,
    *,
    force: bool = False,
    retry_failed: bool = False,
    idempotent: bool = False,
) -> Step:
    """The action for one job given what the journal says about its key.

    A create that got no recorded answer (the run was killed while it was in flight) is judged
    by ``billing.unanswered_create``: sent again under the same key where the provider refuses
    a duplicate by it (``idempotent``, BigModel's ``request_id``); elsewhere the job is kept
    failed (``UNANSWERED_CREATE``) until ``--retry-failed``.
    """
    if record is None or record.state == "enhanced":
        return _new_job(job, record)
    if record.state == "submitted" and record.task_id:
        # In flight on the server: re-attaching never pays, even under --force.
        return Step(job, "reattach", f"submitted earlier as task {record.task_id}", record)
    if force:
        return Step(job, "submit", "--force: regenerate", record)
    if record.state == "refused":
        return Step(job, "submit", "an earlier create was refused; no task was created", record)
    if record.state == "submitting":
        return _unanswered(job, record, retry_failed=retry_failed, idempotent=idempotent)
    if record.state == "failed":
        return _failed(job, record, retry_failed=retry_failed)
    return _done(job, record, out_dir)


def _new_job(job: Job, record: JobRecord | None = None) -> Step:
    return _StepFields(job, record).freeze()


class _StepFields:
    """``Step(job, action, reason, record)`` without the frozen ``__init__``, at a third of the
    cost (``freeze`` makes it the Step it is, as ``jobs.JobFields`` does for a Job): one per new
    job of a plan, and one per verified job of a rerun."""

    __slots__ = ("job", "action", "reason", "record", "enhance")

    def __init__(
        self, job: Job, record: JobRecord | None, action: Action = "submit", reason: str = "new job"
    ) -> None:
        self.job, self.action, self.reason, self.record, self.enhance = job, action, reason, record, False

    def freeze(self) -> Step:
        self.__class__ = Step  # type: ignore[assignment]
        return self  # type: ignore[return-value]


def _unanswered(job: Job, record: JobRecord, *, retry_failed: bool, idempotent: bool) -> Step:
    """A create a killed run sent and never recorded an answer for: the billing verdict."""
    if unanswered_create(idempotent) is Verdict.RESEND:
        return Step(
            job,
            "submit",
            "an earlier create request got no recorded answer; sent again under the same "
            "request_id (the provider refuses a duplicate)",
            record,
        )
    if retry_failed:
        return Step(
            job, "submit", "--retry-failed: an earlier create request got no recorded answer", record
        )
    return Step(
        job,
        "keep-failed",
        "an earlier create request got no recorded answer and may have created a task; "
        "not sent again (no idempotency key); use --retry-failed",
        record,
    )


def _failed(job: Job, record: JobRecord, *, retry_failed: bool) -> Step:
    error = record.error or {}
    why = f"{error.get('kind', 'error')}: {error.get('message', '')}".strip()
    if not retry_failed:
        # The error may already say what --retry-failed does (a timeout, an unconfirmed create).
        advice = "" if "--retry-failed" in why else "; use --retry-failed"
        return Step(job, "keep-failed", f"failed earlier ({why}){advice}", record)
    if error.get("kind") in ("timeout", "download_failed") and record.task_id:
        return Step(
            job, "reattach", f"--retry-failed: task {record.task_id} is polled again", record
        )
    return Step(job, "submit", f"--retry-failed: failed earlier ({why})", record)


def _done(job: Job, record: JobRecord, out_dir: Path) -> Step:
    """A succeeded job: skipped when its video verifies under its id, else fetched again."""
    done = _DoneCheck(out_dir)
    steps: list[Step | None] = []
    done.add(steps, job, record)
    return done.settle(steps)[0]


def _verified(job: Job, record: JobRecord, video: Mapping[str, Any]) -> Step:
    """The step of a done job whose video verified: skipped."""
    return _StepFields(job, record, "skip", f"done; video verified ({video['sha256'][:12]})").freeze()


class _DoneCheck:
    """``_done`` of a plan's succeeded jobs: each video taken as verified by its stat where that
    holds (``videocheck.VideoCheck.unchanged``), the others hashed together once every job is
    planned (``settle``: in threads when large), the checker imported (the store: anyio) at the
    first. ``remember``: the plan is a run's (which holds the directory's lock), and records the
    videos that verify (``.batchvid/verified-videos``)."""

    __slots__ = ("out_dir", "remember", "videos", "pending")

    def __init__(self, out_dir: Path, *, remember: bool = False) -> None:
        self.out_dir, self.remember = out_dir, remember
        self.videos: VideoCheck | None = None
        self.pending: list[tuple[int, Job, JobRecord, bool]] = []
        """(place in the steps, job, record, verified_only) of each video to hash."""

    def add(self, steps: list[Step | None], job: Job, record: JobRecord, *, verified_only: bool = False) -> None:
        """Append the job's step to ``steps``, or a None that ``settle`` replaces once its video
        is hashed. ``verified_only``: a job not chosen, listed only when its video verifies."""
        video, videos = record.video, self.videos
        assert video is not None
        if record.id != job.id:
            if not verified_only:
                steps.append(Step(
                    job,
                    "download",
                    f"done as {record.id!r}; its files move to the new id (fetched again if damaged)",
                    record,
                ))
            return
        if videos is None:
            from batchvid.videocheck import VideoCheck

            videos = self.videos = VideoCheck(self.out_dir, remember=self.remember)
        if videos.unchanged(job.id, video, record.stat):
            steps.append(_verified(job, record, video))
        else:
            self.pending.append((len(steps), job, record, verified_only))
            steps.append(None)

    def settle(self, steps: list[Step | None]) -> list[Step]:
        """``steps`` with each None replaced by its job's step once its video is hashed (or
        left out: a job not chosen whose video does not verify)."""
        if self.videos is None:
            return cast(list[Step], steps)
        try:
            problems = self.videos.hash_videos([(job.id, record.video or {}) for _, job, record, _ in self.pending])
        finally:
            self.close()
        dropped = False
        for (at, job, record, verified_only), problem in zip(self.pending, problems, strict=True):
            video = record.video or {}
            dropped = dropped or (problem is not None and verified_only)
            if problem is None:
                steps[at] = _verified(job, record, video)
            elif not verified_only:
                steps[at] = Step(
                    job,
                    "download",
                    f"done, but video.mp4 does not match its record ({problem}); "
                    f"fetched again from task {record.task_id}",
                    record,
                )
        self.pending = []
        return [step for step in steps if step is not None] if dropped else cast(list[Step], steps)

    def close(self) -> None:
        if self.videos is not None:
            self.videos.close()
            self.videos = None


def make_plan(
    jobs: Sequence[Job],
    records: Mapping[str, JobRecord],
    out_dir: Path,
    *,
    provider: str,
    pricing: Mapping[str, float] | None = None,
    force: bool = False,
    retry_failed: bool = False,
    only: Sequence[str] = (),
    shard: tuple[int, int] | None = None,
    re_enhance: bool = False,
    remember: bool = False,
) -> Plan:
    """The plan: what a run would do with each job of ``jobs`` (all of a manifest's, in order)
    in ``out_dir`` given its journal ``records``. The one planner behind ``run``, ``plan``,
    ``run --dry-run`` and ``status``.

    ``only`` and ``shard`` choose the jobs to work on (``select``); every other job that is
    done and verified here is still listed, as ``skip``: the lock, the dataset index and the
    report keep it. ``re_enhance`` asks for every enhanced job's rewrite again, and so
    regenerates its video.

    ``remember``: the caller holds the directory's lock (a run): the videos it verifies by
    hashing (their journaled stat no longer vouching for them: a copied directory's) are
    recorded in ``.batchvid/verified-videos``, so that the next rerun reads none of them.
    """
    prices = prices_for(provider, pricing or {})
    columns = jobs.columns() if isinstance(jobs, JobSequence) and not records and not only and shard is None else None
    if columns is not None and columns.plain:  # every job new and plain: kept as its columns
        return Plan(NewSteps(jobs, columns), prices)
    with paused_gc():
        steps = _steps(jobs, records, out_dir, provider, force, retry_failed, only, shard, re_enhance, remember)
    return Plan(tuple(steps), prices)


def _steps(
    jobs: Sequence[Job],
    records: Mapping[str, JobRecord],
    out_dir: Path,
    provider: str,
    force: bool,
    retry_failed: bool,
    only: Sequence[str],
    shard: tuple[int, int] | None,
    re_enhance: bool,
    remember: bool = False,
) -> list[Step]:
    # Asked (of the providers: httpx) only when a create's answer is missing (``_unanswered``).
    unanswered = any(record.state == "submitting" for record in records.values())
    idempotent = _idempotent(provider) if unanswered else False
    chosen = {job.key for job in select(jobs, only, shard)} if only or shard is not None else None
    if not records and chosen is None and list(map(_ENHANCE, jobs)).count(None) == len(jobs):
        return _new_steps(jobs)  # every job new and plain (the loop's first branch for each)
    by_id = {record.id: record for record in records.values()}
    done = _DoneCheck(out_dir, remember=remember)
    steps: list[Step | None] = []
    try:
        for job in jobs:
            record = records.get(job.key)
            if chosen is None or job.key in chosen:
                forced = force or (re_enhance and job.enhance is not None)
                if record is None:
                    if job.enhance is None and job.id not in by_id:
                        steps.append(_new_job(job))  # what the lines below decide for it, taken directly
                        continue
                elif record.state == "succeeded" and not forced:
                    done.add(steps, job, record)  # as below: ``decide`` of a done job, not a create
                    continue
                step = decide(
                    job,
                    record,
                    out_dir,
                    force=forced,
                    retry_failed=retry_failed,
                    idempotent=idempotent,
                )
                earlier = by_id.get(job.id)
                if record is None and earlier is not None and earlier.key != job.key:
                    step = Step(job, "submit", edited_reason(job, earlier, out_dir, provider))
                steps.append(mark_enhance(step, re_enhance))
            elif record is not None and record.state == "succeeded":
                done.add(steps, job, record, verified_only=True)
        return done.settle(steps)
    finally:
        done.close()


def _new_steps(jobs: Iterable[Job]) -> list[Step]:
    """``_new_job`` of each job, in C-level passes."""
    fields = list(map(_StepFields, jobs, repeat(None)))
    deque(map(setattr, fields, repeat("__class__"), repeat(Step)), maxlen=0)  # each freeze()d
    return cast(list[Step], fields)


def _idempotent(provider: str) -> bool:
    """Whether the provider refuses a duplicate create by its key (``billing.unanswered_create``)."""
    from batchvid.providers import get_provider

    return get_provider(provider).idempotent


def mark_enhance(step: Step, re_enhance: bool) -> Step:
    """``step``, marked (and its reason extended) when its prompt is to be rewritten first: a
    create of an enhanced job with no usable rewrite in the journal, or ``--re-enhance``."""
    if not step.pays or step.job.enhance is None:
        return step
    from batchvid.enhancing import stored_rewrite  # the chat client: only when a job enhances

    if stored_rewrite(step.record, re_enhance=re_enhance) is not None:
        return step
    if re_enhance and step.reason == "--force: regenerate":
        return replace(step, reason="--re-enhance: regenerate with a new prompt rewrite", enhance=True)
    why = "--re-enhance" if re_enhance else step.job.enhance.model
    return replace(step, reason=f"{step.reason}; prompt rewritten first ({why})", enhance=True)
