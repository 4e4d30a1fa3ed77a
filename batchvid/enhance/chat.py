"""The chat request that rewrites a prompt, and what its answer becomes.

Both providers serve OpenAI-compatible chat completions at the video API's root, with the same
key: ``POST chat/completions`` (GeekAI ``https://geekai.co/api/v1``, BigModel
``https://open.bigmodel.cn/api/paas/v4``), body ``{model, messages, temperature, stream}``,
answer ``choices[0].message.content``. Only text is sent: an image job's image never is.

``enhance_prompt`` asks once; an answer over the length limit is asked for again, once, with a
stricter instruction, and one still over is cut at a sentence end (status ``truncated``). An
empty answer, a refusal or a failed request gives the original prompt back (status ``fallback``)
with a warning, or raises ``EnhanceError`` when the settings say ``required``. An account-level
failure (``RunFatalError``: key refused, no balance) is raised as is: the video requests would
meet it too.

The rate limiter and the retry loop are the runner's: it passes a ``Guard``, which runs one
attempt (one HTTP request) as often as its policy allows; ``retrying`` builds one from a
``RetryPolicy``. Every error that leaves this module has the API key blanked out.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import anyio
import httpx

from batchvid.enhance.clean import clean_answer, cut_to_limit, ends_sentence, looks_like_refusal
from batchvid.enhance.settings import EnhanceSettings
from batchvid.errors import JobFatalError, ProviderError, RunFatalError, UsageError
from batchvid.providers import get_provider
from batchvid.providers.base import ErrorClass, RawResponse, classify, error_fields, read_object
from batchvid.providers.base import send as send_request
from batchvid.providers.bigmodel import CODES as BIGMODEL_CODES
from batchvid.retry import RetryPolicy

CHAT_PATH = "chat/completions"
"""Relative to the provider's API root, like the video paths."""

PROMPT_LIMIT = 512
"""The longest prompt CogVideoX takes on both providers, in characters."""

FIRST_FRAME_NOTE = (
    "The video starts from a first-frame image that you cannot see. Describe the motion, the "
    "change over time and the camera; do not invent the subject's look, colours or setting "
    "beyond what the idea states, since the image already fixes them."
)
"""Added to the system message for a job with an image (the chat model never sees it)."""

Status = Literal["enhanced", "truncated", "fallback"]


@dataclass(frozen=True, slots=True)
class ChatAnswer:
    """One chat completion, as far as enhancement needs it."""

    content: str
    finish_reason: str | None = None
    tokens: int = 0
    """``usage.total_tokens``, or 0 when the provider does not say."""


Attempt = Callable[[], Awaitable[ChatAnswer]]
"""One chat request; raises a classified ``ProviderError`` (key already blanked out)."""

Guard = Callable[[Attempt], Awaitable[ChatAnswer]]
"""Runs an attempt under the caller's rate limiter and retry policy; returns its answer or
raises its last error."""


async def once(attempt: Attempt) -> ChatAnswer:
    """The plainest guard: one attempt, no limiter, no retry."""
    return await attempt()


def retrying(
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    before: Callable[[], Awaitable[None]] | None = None,
    on_retry: Callable[[int, float, ProviderError], None] | None = None,
) -> Guard:
    """A guard that retries as ``policy`` says (``TransientError`` only, honouring
    ``Retry-After``). ``before`` runs ahead of every attempt (the runner's
    ``limiter.acquire``); ``on_retry(failures, delay, error)`` is told of each retry (the
    runner's ``JobRetrying`` event and ``limiter.penalize``)."""

    async def guard(attempt: Attempt) -> ChatAnswer:
        failures = 0
        while True:
            if before is not None:
                await before()
            try:
                return await attempt()
            except ProviderError as exc:
                failures += 1
                delay = policy.delay(failures, exc)
                if delay is None:
                    raise
                if on_retry is not None:
                    on_retry(failures, delay, exc)
                await sleep(delay)

    return guard


@dataclass(frozen=True, slots=True)
class EnhanceResult:
    """What became of one prompt."""

    prompt: str
    """The prompt to send: the rewrite, or the original on ``fallback``."""
    original: str
    status: Status
    warning: str | None
    """Why the rewrite was cut or not used (for the report), else None."""
    model: str
    requests: int = 0
    """Chat requests made (retries included)."""
    tokens: int = 0

    def record(self) -> dict[str, Any]:
        """The JSON fields a journal entry, ``metadata.jsonl`` or the report keep of it."""
        return {
            "prompt": self.prompt,
            "original": self.original,
            "status": self.status,
            "warning": self.warning,
            "model": self.model,
            "requests": self.requests,
            "tokens": self.tokens,
        }

    def journal_entry(self, job_id: str, key: str) -> dict[str, Any]:
        """The journal line recording this rewrite for a job key, appended (fsynced) before the
        create request that sends it; ``from_record`` reads it back on a later run."""
        return {"event": "enhanced", "key": key, "id": job_id, **self.record()}

    @classmethod
    def from_record(cls, data: Mapping[str, Any]) -> EnhanceResult | None:
        """The result a journal entry holds, or None when it is not a usable one."""
        prompt, original, status = data.get("prompt"), data.get("original"), data.get("status")
        warning, model = data.get("warning"), data.get("model")
        if not (isinstance(prompt, str) and prompt and isinstance(original, str)):
            return None
        if status not in ("enhanced", "truncated", "fallback") or not isinstance(model, str):
            return None
        if warning is not None and not isinstance(warning, str):
            return None
        requests, tokens = data.get("requests", 0), data.get("tokens", 0)
        return cls(
            prompt, original, status, warning, model,
            requests if isinstance(requests, int) else 0,
            tokens if isinstance(tokens, int) else 0,
        )  # fmt: skip


class EnhanceError(JobFatalError):
    """The prompt could not be rewritten and the settings say ``required``: the job fails with
    ``error.kind: enhance_failed`` before any video is requested."""

    def __init__(self, message: str) -> None:
        super().__init__("enhance_failed", message)


class _Unusable(Exception):
    """The chat model gave nothing usable; the argument says why."""


async def enhance_prompt(
    client: httpx.AsyncClient,
    provider: str,
    settings: EnhanceSettings,
    prompt: str,
    *,
    api_key: str,
    limit: int = PROMPT_LIMIT,
    first_frame: bool = False,
    guard: Guard = once,
) -> EnhanceResult:
    """Rewrite ``prompt`` with the chat model ``settings`` name, to at most ``limit`` characters.

    ``client`` is the video API's client: ``base_url`` the provider's API root, carrying the
    ``Authorization`` header. ``api_key`` is only used to blank the key out of answers and
    errors. ``first_frame``: the job has an image, which the chat model is told it cannot see
    (so it does not invent a look the image contradicts); the image itself is never sent.
    Raises ``EnhanceError`` (required and failed) or ``RunFatalError``; any other failure
    falls back to ``prompt`` with a warning.
    """
    if not prompt.strip():
        raise ValueError("there is no prompt to enhance")
    chat = _Chat(client, provider, settings, api_key)
    try:
        system = system_message(settings.instructions, limit, first_frame=first_frame)
        text, status, warning = await _rewrite(chat, guard, system, prompt, limit)
    except (_Unusable, ProviderError) as exc:
        if isinstance(exc, RunFatalError):
            raise
        reason = str(exc)
        if settings.required:
            raise EnhanceError(
                f"prompt enhancement with {settings.model} failed ({reason}); enhance.required "
                "is true, so no video was requested. Fix the cause, or set required: false to "
                "fall back to the original prompt"
            ) from None
        text, status = prompt, "fallback"
        warning = (
            f"prompt enhancement with {settings.model} failed ({reason}); "
            "the original prompt was used"
        )
    return EnhanceResult(text, prompt, status, warning, settings.model, chat.requests, chat.tokens)


async def _rewrite(
    chat: _Chat, guard: Guard, system: str, prompt: str, limit: int
) -> tuple[str, Status, str | None]:
    """The cleaned rewrite, asking a second time when the first is too long."""
    messages = [
        {"role": "system", "content": system},
        {"role": "user", "content": prompt},
    ]
    text = chat.usable(await guard(lambda: chat.ask(messages)))
    if len(text) <= limit:
        return text, "enhanced", None
    first_length = len(text)
    retry_messages = [
        *messages,
        {"role": "assistant", "content": text},
        {"role": "user", "content": stricter_request(first_length, limit)},
    ]
    try:
        shorter = chat.usable(await guard(lambda: chat.ask(retry_messages)))
    except (_Unusable, ProviderError) as exc:  # keep the first answer and cut it below
        if isinstance(exc, RunFatalError):
            raise
        second = f"asking for a shorter one failed ({exc})"
        shorter = text
    else:
        if len(shorter) <= limit:
            return shorter, "enhanced", None
        second = f"then {len(shorter)} when asked for a shorter one"
    cut = cut_to_limit(shorter, limit)
    where = "a sentence end" if ends_sentence(cut) else "a word boundary"
    warning = (
        f"the rewritten prompt was {first_length} characters, over the {limit}-character "
        f"limit; {second}; it was cut at {where} to {len(cut)} characters"
    )
    return cut, "truncated", warning


def system_message(instructions: str, limit: int, *, first_frame: bool = False) -> str:
    """The instructions, then the length limit (batchvid states it; instructions need not),
    then, for a job with a first-frame image, what that means for the description."""
    parts = [
        instructions.strip(),
        f"The description must be at most {limit} characters long, counting every letter, "
        f"space and punctuation mark; aim for about {limit * 4 // 5} characters.",
    ]
    if first_frame:
        parts.append(FIRST_FRAME_NOTE)
    return "\n\n".join(parts)


def stricter_request(length: int, limit: int) -> str:
    """The second request's text, for an answer of ``length`` characters over ``limit``."""
    return (
        f"That description is {length} characters long; the limit is {limit}. Rewrite it in at "
        f"most {limit * 3 // 4} characters: keep the subject, the action, the setting and the "
        "camera, drop lesser details, same language. Answer with the description only."
    )


class _Chat:
    """One prompt's chat requests: builds them, reads the answers, counts them."""

    def __init__(
        self, client: httpx.AsyncClient, provider: str, settings: EnhanceSettings, key: str
    ) -> None:
        self.client = client
        self.settings = settings
        self.label, self.codes = _dialect(provider)
        self.env = get_provider(provider).key_env_vars[0]
        self.key = key if len(key) >= 4 else ""
        self.requests = 0
        self.tokens = 0

    def scrub(self, text: str) -> str:
        return text.replace(self.key, "[REDACTED]") if self.key else text

    async def ask(self, messages: list[dict[str, str]]) -> ChatAnswer:
        """One request; errors classified like video requests, with the key blanked out."""
        body = {
            "model": self.settings.model,
            "messages": messages,
            "temperature": self.settings.temperature,
            "stream": False,
        }
        self.requests += 1
        try:
            raw = await send_request(self.client, "POST", CHAT_PATH, json_body=body)
            answer = self._answer(raw)
        except ProviderError as exc:
            raise self._scrubbed(exc) from exc.__cause__
        self.tokens += answer.tokens
        return answer

    def usable(self, answer: ChatAnswer) -> str:
        """The cleaned answer, or ``_Unusable`` saying why it cannot be the prompt."""
        text = clean_answer(answer.content)
        if answer.finish_reason in ("sensitive", "content_filter"):
            raise _Unusable(f"{self.label}'s content filter stopped the answer")
        if not text:
            raise _Unusable(f"{self.label} gave an empty answer")
        if looks_like_refusal(text):
            raise _Unusable(f"{self.label} declined: {self.scrub(text[:120])}")
        if self.scrub(text) != text:
            raise _Unusable(f"{self.label}'s answer contains the API key")
        return text

    def _answer(self, raw: RawResponse) -> ChatAnswer:
        if not raw.ok:
            raise classify(raw, label=self.label, env=self.env, codes=self.codes)
        payload = read_object(raw)
        choices = payload.get("choices") if payload is not None else None
        first = choices[0] if isinstance(choices, list) and choices else None
        message = first.get("message") if isinstance(first, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(message, dict) and content is None:
            content = ""  # no text at all (only reasoning_content, say): an empty answer
        if not isinstance(content, str):
            code, _ = error_fields(payload)
            if code is not None and self.codes is not None and code in self.codes:
                raise classify(raw, label=self.label, env=self.env, codes=self.codes)
            raise JobFatalError(
                "bad_response",
                f"{self.label} answered without choices[0].message.content: {raw.excerpt()}",
                status=raw.status,
            )
        assert isinstance(first, dict)
        reason = first.get("finish_reason")
        usage = payload.get("usage") if payload is not None else None
        tokens = usage.get("total_tokens") if isinstance(usage, dict) else None
        return ChatAnswer(
            content,
            reason if isinstance(reason, str) else None,
            tokens if isinstance(tokens, int) and not isinstance(tokens, bool) else 0,
        )

    def _scrubbed(self, exc: ProviderError) -> ProviderError:
        """The same error with the key blanked out of its message."""
        return type(exc)(
            exc.kind,
            self.scrub(exc.message),
            status=exc.status,
            code=exc.code,
            retry_after=exc.retry_after,
        )


def _dialect(provider: str) -> tuple[str, Mapping[str, tuple[ErrorClass, str]] | None]:
    """How a provider's chat errors read: its label and its business codes, if any."""
    if provider == "geekai":
        return "GeekAI chat", None
    if provider == "bigmodel":
        return "BigModel chat", BIGMODEL_CODES
    raise UsageError(f"prompt enhancement does not know the provider {provider!r}")
