"""What each provider accepts in a create request, per ``docs/api-notes.md`` sections 1 and 3.

A JSON ``null`` counts as absent (zai-sdk sends every unset parameter as ``null``). Keys the
docs do not list for the provider are refused, as are the parameters GeekAI lists as
unsupported for CogVideoX.
"""

from __future__ import annotations

import binascii
import re
from base64 import b64decode
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

PROMPT_MAX = 512
IMAGE_MAX_BYTES = 5 * 1024 * 1024

SIZES_COGVIDEOX_3 = frozenset(
    {"1280x720", "720x1280", "1024x1024", "1920x1080", "1080x1920", "2048x1080", "3840x2160"}
)
SIZES_COGVIDEOX_2 = frozenset(
    {
        "720x480",
        "1024x1024",
        "1280x960",
        "960x1280",
        "1920x1080",
        "1080x1920",
        "2048x1080",
        "3840x2160",
    }
)
GEEKAI_MODELS = {
    "cogvideox": SIZES_COGVIDEOX_2,
    "cogvideox-2": SIZES_COGVIDEOX_2,
    "cogvideox-flash": SIZES_COGVIDEOX_2,
    "cogvideox-3": SIZES_COGVIDEOX_3,
}
BIGMODEL_MODELS = {
    "cogvideox-2": SIZES_COGVIDEOX_2,
    "cogvideox-flash": SIZES_COGVIDEOX_2,
    "cogvideox-3": SIZES_COGVIDEOX_3,
}
DEFAULT_SIZE = "1920x1080"
"""Used for rendering when ``size`` is absent (the docs: short side 1080)."""

GEEKAI_FIELDS = frozenset(
    {
        "model",
        "prompt",
        "image",
        "image_url",
        "async",
        "with_audio",
        "size",
        "quality",
        "duration",
        "fps",
        "watermark",
        "retries",
        "extra_body",
    }
)
GEEKAI_UNSUPPORTED = frozenset({"negative_prompt", "image_tail", "resolution", "aspect_ratio"})
BIGMODEL_FIELDS = frozenset(
    {
        "model",
        "prompt",
        "image_url",
        "quality",
        "with_audio",
        "watermark_enabled",
        "size",
        "fps",
        "duration",
        "request_id",
        "user_id",
        # only in the SDKs (api-notes section 1); accepted and ignored
        "sensitive_word_check",
        "off_peak",
    }
)

_DATA_URI = re.compile(r"data:image/(png|jpeg|jpg);base64,(.*)", re.DOTALL)


class Rejected(Exception):
    """A create request the provider refuses: ``reason`` is ``params``, ``model`` or ``prompt``."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        self.message = message
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class Request:
    """The parts of an accepted create request the simulator needs."""

    model: str
    prompt: str
    width: int
    height: int
    fps: int
    with_audio: bool
    duration: int | None
    request_id: str | None = None
    user_id: str | None = None
    wait: bool = False
    """GeekAI ``async: false``: answer only when the task is done."""


def present(body: Mapping[str, Any]) -> dict[str, Any]:
    """The body without ``null`` values."""
    return {k: v for k, v in body.items() if v is not None}


def _check_image(value: Any, model: str, name: str) -> None:
    images = value if isinstance(value, list) else [value]
    if isinstance(value, list) and (model != "cogvideox-3" or len(value) != 2):
        raise Rejected(
            "params",
            f"{name}: an array of 2 images (first, last frame) is only accepted by cogvideox-3",
        )
    for image in images:
        if not isinstance(image, str) or not image:
            raise Rejected("params", f"{name}: must be an image URL or a base64 data URI")
        if image.startswith(("http://", "https://")):
            continue
        match = _DATA_URI.fullmatch(image)
        if match is None:
            raise Rejected(
                "params", f"{name}: must be an http(s) URL or data:image/png|jpeg;base64,..."
            )
        try:
            data = b64decode(match.group(2), validate=True)
        except (binascii.Error, ValueError):
            raise Rejected("params", f"{name}: invalid base64 data") from None
        if len(data) > IMAGE_MAX_BYTES:
            raise Rejected("params", f"{name}: image larger than 5 MB")


def _common(
    body: dict[str, Any], models: Mapping[str, frozenset[str]], image_key: str | None
) -> Request:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise Rejected("params", "model: required")
    if model not in models:
        raise Rejected("model", f"model not found: {model}")
    prompt = body.get("prompt", "")
    if not isinstance(prompt, str):
        raise Rejected("params", "prompt: must be a string")
    if len(prompt) > PROMPT_MAX:
        raise Rejected(
            "prompt", f"prompt is {len(prompt)} characters; at most {PROMPT_MAX} are allowed"
        )
    if image_key is not None:
        _check_image(body[image_key], model, image_key)
    if not prompt and image_key is None:
        raise Rejected("params", "prompt and image cannot both be empty")
    size = body.get("size", DEFAULT_SIZE)
    if not isinstance(size, str) or size not in models[model]:
        allowed = ", ".join(sorted(models[model]))
        raise Rejected("params", f"size: {size!r} is not supported by {model} (allowed: {allowed})")
    fps = body.get("fps", 30)
    if isinstance(fps, bool) or fps not in (30, 60):
        raise Rejected("params", f"fps: must be 30 or 60, not {fps!r}")
    with_audio = body.get("with_audio", False)
    if not isinstance(with_audio, bool):
        raise Rejected("params", "with_audio: must be a boolean")
    quality = body.get("quality", "speed")
    if quality not in ("speed", "quality"):
        raise Rejected("params", f"quality: must be 'speed' or 'quality', not {quality!r}")
    duration = body.get("duration")
    if duration is not None:
        if model != "cogvideox-3":
            raise Rejected("params", f"duration: not supported by {model}")
        if isinstance(duration, bool) or duration not in (5, 10):
            raise Rejected("params", f"duration: must be 5 or 10, not {duration!r}")
    width, height = (int(part) for part in size.split("x"))
    return Request(model, prompt, width, height, int(fps), with_audio, duration)


def check_geekai(raw: Mapping[str, Any]) -> Request:
    """Validate a GeekAI create body; raises ``Rejected``."""
    body = present(raw)
    unsupported = sorted(GEEKAI_UNSUPPORTED & body.keys())
    if unsupported:
        raise Rejected(
            "params", f"parameters not supported by CogVideoX models: {', '.join(unsupported)}"
        )
    unknown = sorted(body.keys() - GEEKAI_FIELDS)
    if unknown:
        raise Rejected("params", f"unknown parameters: {', '.join(unknown)}")
    if "image" in body and "image_url" in body:
        raise Rejected("params", "give either image or image_url, not both")
    image_key = "image" if "image" in body else "image_url" if "image_url" in body else None
    wait = body.get("async", False)
    if not isinstance(wait, bool):
        raise Rejected("params", "async: must be a boolean")
    for name in ("watermark",):
        if name in body and not isinstance(body[name], bool):
            raise Rejected("params", f"{name}: must be a boolean")
    retries = body.get("retries", 0)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise Rejected("params", "retries: must be a non-negative integer")
    if "extra_body" in body and not isinstance(body["extra_body"], dict):
        raise Rejected("params", "extra_body: must be an object")
    request = _common(body, GEEKAI_MODELS, image_key)
    return replace(request, wait=not wait)


def check_bigmodel(raw: Mapping[str, Any]) -> Request:
    """Validate a BigModel create body; raises ``Rejected``."""
    body = present(raw)
    unknown = sorted(body.keys() - BIGMODEL_FIELDS)
    if unknown:
        raise Rejected("params", f"unknown parameters: {', '.join(unknown)}")
    if "watermark_enabled" in body and not isinstance(body["watermark_enabled"], bool):
        raise Rejected("params", "watermark_enabled: must be a boolean")
    request_id = body.get("request_id")
    if request_id is not None and (not isinstance(request_id, str) or not request_id):
        raise Rejected("params", "request_id: must be a non-empty string")
    user_id = body.get("user_id")
    if user_id is not None and (not isinstance(user_id, str) or not 6 <= len(user_id) <= 128):
        raise Rejected("params", "user_id: must be a string of 6 to 128 characters")
    request = _common(body, BIGMODEL_MODELS, "image_url" if "image_url" in body else None)
    return replace(request, request_id=request_id, user_id=user_id)
