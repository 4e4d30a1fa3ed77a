"""A job's key: the sha256 of its canonical request (``canonical_json``: an image by its hash)
and its sample, the identity that decides whether a rerun reuses what the journal holds; and the
keys of many requests that differ in their prompt alone, spelled once (``PromptKeys``).

Apart from ``batchvid.jobs`` (the values the keys are of): only the manifest's expansion makes
keys; everything after it reads ``Job.key``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from json.encoder import encode_basestring
from operator import attrgetter
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from batchvid.jobs import Image

_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_json(value: Any) -> str:
    """The one JSON spelling used for hashing: sorted keys, no spaces, UTF-8 kept.

    Exactly ``json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)``;
    mappings of strings, integers, booleans and nulls (every job's request) are spelled here
    directly, which is several times cheaper than the encoder for such small values.
    """
    fast = _flat_json(value)
    return fast if fast is not None else _CANONICAL.encode(value)


def _flat_json(value: Any) -> str | None:
    """``canonical_json`` of a mapping whose values are str, int, bool, None or such mappings;
    None for anything else (floats, lists), left to the encoder."""
    if type(value) is not dict:
        return None
    parts = []
    for name in sorted(value):
        item = value[name]
        kind = type(item)
        if type(name) is not str:
            return None
        if kind is str:
            text = encode_basestring(item)
        elif kind is bool:
            text = "true" if item else "false"
        elif kind is int:
            text = int.__repr__(item)
        elif item is None:
            text = "null"
        else:
            nested = _flat_json(item)
            if nested is None:
                return None
            text = nested
        parts.append(f"{encode_basestring(name)}:{text}")
    return "{" + ",".join(parts) + "}"


def job_key(
    provider: str,
    params: Mapping[str, Any],
    image: Image | None,
    sample: int,
    enhance: Mapping[str, Any] | None = None,
    *,
    enhance_json: str | None = None,
) -> str:
    """The key of a job: sha256 of the canonical request (image by its hash) and the sample,
    plus the enhancement's fingerprint when there is one (so keys without it never change).

    ``enhance_json`` is ``canonical_json(enhance)`` when the caller has it already (a manifest
    job's rows and combinations share one fingerprint)."""
    if enhance is not None and enhance_json is None:
        enhance_json = canonical_json(enhance)
    payload = _key_payload(provider, params, image, sample, enhance_json)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _key_payload(
    provider: str, params: Mapping[str, Any], image: Image | None, sample: int, enhance_json: str | None
) -> str:
    """What ``job_key`` hashes."""
    request = dict(params) if image is None and type(params) is not dict else params
    if image is not None:
        request = {**params, "image": image.describe()}
    flat = _flat_json(request)
    if flat is not None:  # the same bytes as the general spelling below, built directly
        head = "" if enhance_json is None else f'"enhance":{enhance_json},'
        payload = f'{{{head}"provider":{encode_basestring(provider)},"request":{flat},"sample":{int(sample)}}}'
    else:
        document = {"provider": provider, "request": request, "sample": sample}
        payload = canonical_json(document)
        if enhance_json is not None:  # "enhance" sorts first
            payload = f'{{"enhance":{enhance_json},{payload[1:]}'
    return payload


PROMPT_MARK = "\x00prompt\x00"
"""A placeholder prompt: JSON spelled with it, cut around it, spells every prompt's JSON."""
_SPELLED_MARK = encode_basestring(PROMPT_MARK)


def cut_at_prompt(spelled: str) -> tuple[str, str] | None:
    """What JSON spelled with ``PROMPT_MARK`` holds before and after it (the JSON with any
    prompt ``p`` is ``head + encode_basestring(p) + tail``), or None if the mark is not alone."""
    head, found, tail = spelled.partition(_SPELLED_MARK)
    return (head, tail) if found and _SPELLED_MARK not in tail else None


class PromptKeys:
    """``job_key`` of requests that differ in their prompt alone, spelled once.

    The payload is spelled with a placeholder prompt and cut around it; each key then costs one
    string escape and the hash of what follows the head: the head's bytes are hashed once, and
    each key goes on from a copy of that state (``copy`` is several times cheaper than a new
    sha256 object). ``usable`` is False when the placeholder does not stand out (then call
    ``job_key``).
    """

    __slots__ = ("_started", "_tail", "usable")

    def __init__(self, provider: str, params: Mapping[str, Any], sample: int, enhance_json: str | None) -> None:
        payload = _key_payload(provider, {**params, "prompt": PROMPT_MARK}, None, sample, enhance_json)
        head, self._tail = cut_at_prompt(payload) or ("", "")
        self._started = hashlib.sha256(head.encode())
        self.usable = bool(head)

    def key(self, prompt: str) -> str:
        """``job_key(provider, {**params, "prompt": prompt}, None, sample, ...)``."""
        digest = self._started.copy()
        digest.update((encode_basestring(prompt) + self._tail).encode())
        return digest.hexdigest()


_STARTED, _TAIL = attrgetter("_started"), attrgetter("_tail")


def spelled_keys(spellings: Iterable[PromptKeys], prompts: Iterable[str]) -> list[str]:
    """``spelling.key(prompt)`` of each pair (every spelling usable), inline."""
    spellings = list(spellings)
    keys: list[str] = []
    append = keys.append
    for started, tail, prompt in zip(map(_STARTED, spellings), map(_TAIL, spellings), prompts, strict=True):
        digest = started.copy()
        digest.update((encode_basestring(prompt) + tail).encode())
        append(digest.hexdigest())
    return keys
