"""Prompt enhancement: a chat model rewrites a short prompt into the long, detailed description
CogVideoX renders best, reproducibly.

``settings`` turns a manifest's ``enhance:`` value into ``EnhanceSettings`` and gives the
fingerprint that goes into a job's key; ``chat`` makes the request (``enhance_prompt``) under
the caller's rate limiter and retry policy; ``clean`` turns the answer into a prompt that fits
the model's limit. The user's documentation is ``docs/enhance.md``.
"""

from __future__ import annotations

from batchvid.enhance.chat import (
    PROMPT_LIMIT,
    ChatAnswer,
    EnhanceError,
    EnhanceResult,
    Guard,
    enhance_prompt,
    once,
    retrying,
)
from batchvid.enhance.clean import clean_answer, cut_to_limit, looks_like_refusal
from batchvid.enhance.settings import (
    DEFAULT_MODEL,
    EnhanceSettings,
    default_instructions,
    enhance_fingerprint,
    enhance_settings,
    merge_enhance,
)

__all__ = [
    "DEFAULT_MODEL",
    "PROMPT_LIMIT",
    "ChatAnswer",
    "EnhanceError",
    "EnhanceResult",
    "EnhanceSettings",
    "Guard",
    "clean_answer",
    "cut_to_limit",
    "default_instructions",
    "enhance_fingerprint",
    "enhance_prompt",
    "enhance_settings",
    "looks_like_refusal",
    "merge_enhance",
    "once",
    "retrying",
]
