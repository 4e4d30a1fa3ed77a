"""The enhance step of a job: its prompt rewritten by a chat model before its create.

``Enhancer.prepare`` runs on a step that creates a task, after the budget admitted it and before
the create writes ``request.json``. A rewrite the journal holds for the job's key is reused (a
rerun or a resume never asks again) unless ``--re-enhance``; otherwise the chat model is asked
(``batchvid.enhance.enhance_prompt``) under the run's create-rate limiter, retry policy and
stop handling, and the answer is journaled (fsynced) before the create that sends it. The
job's prompt is then the rewritten one; its key stays the manifest's. See ``docs/enhance.md``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from batchvid.enhance import EnhanceResult, Guard, enhance_prompt, retrying
from batchvid.errors import ProviderError
from batchvid.events import Effects, JobRetrying
from batchvid.jobs import Job
from batchvid.journal import Enhanced, JobRecord
from batchvid.lifecycle import JobLife
from batchvid.providers.base import Provider
from batchvid.ratelimit import RateLimiter
from batchvid.retry import RetryPolicy
from batchvid.stopping import Stopper

if TYPE_CHECKING:
    from batchvid.plan import Step


def stored_rewrite(record: JobRecord | None, *, re_enhance: bool = False) -> EnhanceResult | None:
    """The rewrite the next create of a key sends, when the journal holds a usable one.

    A create a killed run left unanswered is sent again as it was (under the same request id),
    never with another prompt. Otherwise a rewrite journaled since the latest create is used
    (``batchvid enhance``, or a run killed between its rewrite and its create), and an older one
    too unless ``--re-enhance`` asks again.
    """
    if record is None:
        return None
    if record.state == "submitting":
        data = record.sent
    elif record.fresh or not re_enhance:
        data = record.enhanced
    else:
        return None
    return EnhanceResult.from_record(data) if data is not None else None


def sent_rewrite(record: JobRecord | None) -> EnhanceResult | None:
    """The rewrite the key's latest task was created with, if any."""
    if record is None or record.sent is None:
        return None
    return EnhanceResult.from_record(record.sent)


FREE_CHAT_MODELS = frozenset({"glm-4-flash"})
"""Chat models that cost nothing (BigModel's GLM-4-Flash). Other chat models are priced by the
token, which batchvid does not know, so ``--max-cost`` refuses a run that would call one."""


def unpriced_chat_models(steps: Iterable[Step]) -> list[str]:
    """The chat models of the rewrites a plan's creates are due (``Step.enhance``) that are not
    known to be free."""
    return sorted(
        {s.job.enhance.model for s in steps if s.enhance and s.job.enhance is not None}
        - FREE_CHAT_MODELS
    )


@dataclass(frozen=True, slots=True)
class Rewrite:
    """One enhanced job's line in ``batchvid enhance``."""

    job: Job
    result: EnhanceResult | None
    """The rewrite (asked now, or the journal's), or None when it failed (``error``)."""
    asked: bool = False
    """The chat model was asked in this run (else the journal's rewrite is shown)."""
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The line of ``batchvid enhance --json``."""
        result, settings = self.result, self.job.enhance
        return {
            "id": self.job.id,
            "key": self.job.key,
            "prompt_original": self.job.params.get("prompt"),
            "prompt": result.prompt if result else None,
            "status": result.status if result else "failed",
            "warning": result.warning if result else None,
            "model": settings.model if settings else None,
            "asked": self.asked,
            "error": self.error,
        }

    def as_text(self) -> str:
        """The lines of ``batchvid enhance``: the prompt as written and as it will be sent."""
        data = self.as_json()
        where = ", journal" if not self.asked and self.result else ""
        lines = [f"{data['id']} [{data['status']}{where}]", f"  written: {data['prompt_original']}"]
        if self.result is None:
            lines.append(f"  error:   {self.error or 'no rewrite recorded yet'}")
        else:
            lines.append(f"  sent:    {data['prompt']}")
        if data["warning"]:
            lines.append(f"  warning: {data['warning']}")
        return "\n".join(lines)


def rewrite_summary(rows: Sequence[Rewrite], out_dir: str) -> str:
    """The last line of ``batchvid enhance``: the rewrites made now, those the journal had, and
    the jobs left without one (a failed rewrite, or a stop before it was asked)."""
    now = sum(1 for row in rows if row.asked and row.result is not None)
    recorded = sum(1 for row in rows if not row.asked and row.result is not None)
    missing = len(rows) - now - recorded
    without = f", {missing} without a rewrite" if missing else ""
    return (
        f"{len(rows)} enhanced job(s): {now} rewritten now, {recorded} from the journal of "
        f"{out_dir}{without}; no video was requested"
    )


def entry_of(job: Job, result: EnhanceResult) -> Enhanced:
    """The journal entry recording ``result`` as the rewrite of ``job``'s key."""
    return Enhanced(job.key, job.id, **result.record())


def needs_rewrite(job: Job) -> bool:
    """Whether the job has enhancement on and a prompt to rewrite."""
    prompt = job.params.get("prompt")
    return job.enhance is not None and isinstance(prompt, str) and bool(prompt.strip())


@dataclass
class Enhancer:
    provider: Provider
    api: httpx.AsyncClient
    api_key: str
    limiter: RateLimiter
    policy: RetryPolicy
    stopper: Stopper
    fx: Effects
    re_enhance: bool = False

    async def prepare(self, life: JobLife, record: JobRecord | None) -> None:
        """Give the job its prompt to send: reused from the journal, or asked for and journaled.
        Raises ``EnhanceError`` (required, and it failed), ``RunFatalError`` or ``Stopped``."""
        if not needs_rewrite(life.job):
            return
        result = stored_rewrite(record, re_enhance=self.re_enhance)
        if result is not None:
            life.enhanced(result, journal=False)
            return
        self.stopper.check()
        result = await self.rewrite(life.job)
        life.enhanced(result, journal=True)

    async def rewrite(self, job: Job) -> EnhanceResult:
        """Ask the chat model for the job's rewrite (nothing journaled)."""
        assert job.enhance is not None
        with self.stopper.interruptible():
            return await enhance_prompt(
                self.api,
                self.provider.name,
                job.enhance,
                str(job.params["prompt"]),
                api_key=self.api_key,
                first_frame=job.image is not None,
                guard=self._guard(job.id),
            )

    def _guard(self, job_id: str) -> Guard:
        async def before() -> None:
            self.stopper.check()
            await self.limiter.acquire()

        def on_retry(failures: int, delay: float, exc: ProviderError) -> None:
            if exc.retry_after:
                self.limiter.penalize(exc.retry_after)
            self.fx.emit(JobRetrying(job_id, "enhance", failures, delay, str(exc)))

        return retrying(self.policy, sleep=self.fx.sleep, before=before, on_retry=on_retry)
