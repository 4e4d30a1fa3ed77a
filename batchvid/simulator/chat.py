"""Chat completions of both providers (api-notes section 13), for prompt enhancement.

``POST {GEEKAI_PREFIX}/chat/completions`` and ``POST {BIGMODEL_PREFIX}/chat/completions`` answer
an OpenAI chat completion object (BigModel's adds ``request_id``), behind the same key checks,
rate limit and faults as creates. The answer is a rewrite of the first user message (the
prompt; a follow-up asking for a shorter one gets it again, at the usual length): one vivid
paragraph that starts with the prompt itself (so video markers such as ``[fail]`` survive it)
and adds setting, light and camera chosen deterministically from the prompt, in English or,
when the prompt has CJK characters, in Chinese. Chat markers (``config.CHAT_MARKERS``) are
removed from the rewrite and change the answer: over-long, empty, refused, or wrapped in a
preamble. ``stream: true`` is refused (batchvid never streams).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import uuid
from collections.abc import Sequence
from typing import Any

from batchvid.simulator.config import (
    CHAT_EMPTY_MARKER,
    CHAT_ERROR_MARKER,
    CHAT_LONG_MARKER,
    CHAT_MARKERS,
    CHAT_PREAMBLE_MARKER,
)
from batchvid.simulator.core import Routes
from batchvid.simulator.replies import Reply, Scope, error, json_reply

_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")

_EN = {
    "setting": (
        "a quiet city street just after rain",
        "a wide open meadow under drifting clouds",
        "a cosy room full of warm, lived-in details",
        "a misty forest where tall trees fade into the distance",
        "a coastline where waves roll slowly onto the sand",
        "a busy market alive with colour and movement",
    ),
    "light": (
        "soft golden-hour",
        "cool blue morning",
        "warm lamp",
        "gentle diffused",
        "dramatic low-angle",
        "silvery moon",
    ),
    "camera": (
        "glides forward in a slow dolly shot",
        "circles the subject in a smooth orbit",
        "holds a steady medium shot, then eases into a close-up",
        "tracks alongside at walking pace",
        "rises slowly in a gentle crane move",
        "pans softly from left to right",
    ),
    "mood": (
        "the air feels calm and unhurried",
        "every small movement carries quiet energy",
        "fine dust and light particles hang in the air",
        "the colours stay rich and natural",
        "the background melts into a shallow depth of field",
        "the whole scene breathes with a dreamy stillness",
    ),
}
_ZH = {
    "setting": (
        "雨后安静的城市街道",
        "白云缓缓飘过的开阔草地",
        "充满温暖生活气息的房间",
        "薄雾笼罩的森林",
        "海浪轻拍沙滩的海岸",
        "色彩缤纷、人来人往的集市",
    ),
    "light": (
        "柔和的金色夕阳",
        "清冷的清晨蓝光",
        "温暖的灯光",
        "柔和的漫射光",
        "戏剧性的低角度光线",
        "银色的月光",
    ),
    "camera": (
        "以缓慢的推轨镜头向前滑行",
        "围绕主体平稳环绕",
        "先保持稳定的中景，再缓缓推近特写",
        "以步行速度跟拍",
        "以轻柔的升降镜头缓缓上升",
        "从左向右轻轻摇摄",
    ),
    "mood": (
        "空气安静而从容",
        "每一个细微动作都充满生机",
        "细小的光尘漂浮在空中",
        "色彩浓郁而自然",
        "背景在浅景深中柔和虚化",
        "整个画面带着梦幻般的宁静",
    ),
}
_EN_EXTRA = (
    " Details stay crisp from the foreground to the horizon, textures read clearly, and the"
    " motion remains smooth and natural throughout, with no cuts, no text on screen and a"
    " consistent, realistic style from the first frame to the last."
)
_ZH_EXTRA = "从前景到远方细节清晰，质感分明，动作自始至终流畅自然，没有剪辑，没有屏幕文字，从第一帧到最后一帧风格统一而写实。"


def _pick(options: Sequence[str], digest: bytes, index: int) -> str:
    return options[digest[index] % len(options)]


def rewrite(prompt: str, seed: int = 0, *, long: bool = False) -> str:
    """The simulated enhancement of ``prompt``: deterministic, in the prompt's language, about
    200 to 450 characters for English (over 512 with ``long``)."""
    text = " ".join(prompt.split())
    digest = hashlib.sha256(f"chat:{seed}:{text}".encode()).digest()
    chinese = _CJK.search(text) is not None
    words = _EN if not chinese else _ZH
    setting, light, camera, mood = (
        _pick(words[part], digest, i)
        for i, part in enumerate(("setting", "light", "camera", "mood"))
    )
    if chinese:
        subject = text.rstrip("。.!！?？ ") or "一个安静的场景"
        answer = f"{subject}。画面发生在{setting}，{light}洒满整个场景。镜头{camera}，{mood}。"
        extra = _ZH_EXTRA
    else:
        subject = text.rstrip(".!? ") or "A quiet scene"
        subject = subject[:1].upper() + subject[1:]
        answer = (
            f"{_clip(subject, 220)}. The scene unfolds in {setting}, bathed in {light} light."
            f" The camera {camera}, and {mood}."
        )
        extra = _EN_EXTRA
    if long:
        while len(answer) <= 512:
            answer += extra if chinese else extra.replace(" Details", " Again, details", 1)
    elif len(answer) < 200:
        answer += extra.strip() if chinese else extra
    return answer


def _clip(text: str, limit: int) -> str:
    """``text`` cut at a word boundary to at most ``limit`` characters."""
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0].rstrip(",;:")


def _user_text(messages: Any, *, first: bool = False) -> str | None:
    """The text of the last (or ``first``) user message, or None when ``messages`` is
    malformed."""
    if not isinstance(messages, list) or not messages:
        return None
    text = None
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            return None
        content = message.get("content")
        if isinstance(content, list):
            parts = [p.get("text") for p in content if isinstance(p, dict)]
            content = "".join(p for p in parts if isinstance(p, str))
        if not isinstance(content, str):
            return None
        if message["role"] == "user" and (text is None or not first):
            text = content
    return text


class ChatRoutes(Routes):
    """The chat completion route of either provider; counts ``chat_requests``."""

    async def complete(self, provider: str, scope: Scope, body: Any, now: float) -> Reply:
        """Answer a chat completion request whose ``body`` (parsed JSON, or None) arrived at
        ``now``."""
        core = self.core
        _, refusal = core.admission(provider, scope, now)
        if refusal is not None:
            return refusal
        problem, prompt = _check(provider, body)
        if problem is not None:
            return problem
        assert isinstance(body, dict) and prompt is not None
        if CHAT_ERROR_MARKER in prompt:
            code: str | int = "1301" if provider == "bigmodel" else 400
            message = "the input contains unsafe or sensitive content (simulated chat error)"
            return error(provider, 400, code, message)
        return json_reply(200, self._answer(provider, body, prompt))

    def _answer(self, provider: str, body: dict[str, Any], prompt: str) -> dict[str, Any]:
        core = self.core
        # A follow-up (batchvid asking for a shorter rewrite) is answered as a model would: the
        # first user message's idea rewritten again, not the follow-up's own words.
        cleaned = _user_text(body["messages"], first=True) or prompt
        for marker in CHAT_MARKERS:
            cleaned = cleaned.replace(marker, " ")
        content = rewrite(cleaned, core.config.seed, long=CHAT_LONG_MARKER in prompt)
        if CHAT_EMPTY_MARKER in prompt:
            content = ""
        elif CHAT_PREAMBLE_MARKER in prompt:
            content = f'Here is the enhanced prompt: "{content}"'
        canonical = json.dumps(body, sort_keys=True, ensure_ascii=False)
        identity = hashlib.sha256(f"{provider}:{core.config.seed}:{canonical}".encode()).hexdigest()
        with core.lock:
            nth = core.chats[identity]
            core.chats[identity] += 1
        digest = hashlib.sha256(f"{identity}:{nth}".encode()).digest()
        sent = sum(
            len(m.get("content") or "")
            for m in body["messages"]
            if isinstance(m.get("content"), str)
        )
        prompt_tokens, completion_tokens = math.ceil(sent / 4), math.ceil(len(content) / 4)
        answer: dict[str, Any] = {
            "id": f"chatcmpl-{digest[:12].hex()}",
            "object": "chat.completion",
            "created": int(core.wall_clock()),
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
        if provider == "bigmodel":
            answer["id"] = str(int.from_bytes(digest[:8], "big"))
            request_id = body.get("request_id")
            answer["request_id"] = (
                request_id
                if isinstance(request_id, str)
                else str(uuid.UUID(bytes=digest[16:32], version=4))
            )
        return answer


def _check(provider: str, body: Any) -> tuple[Reply | None, str | None]:
    """A refusal for a malformed chat body, else the last user message's text."""
    invalid: str | int = "1214" if provider == "bigmodel" else 400
    if not isinstance(body, dict):
        return error(
            provider,
            400,
            "1210" if provider == "bigmodel" else 400,
            "the body must be a JSON object",
        ), None
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return error(provider, 400, invalid, "model: required"), None
    if provider == "bigmodel" and not model.startswith("glm-"):
        return error(provider, 400, "1211", f"model not found: {model}"), None
    if body.get("stream"):
        return error(
            provider, 400, invalid, "stream: the simulator answers only stream=false"
        ), None
    temperature = body.get("temperature")
    if temperature is not None and (
        isinstance(temperature, bool) or not isinstance(temperature, (int, float))
    ):
        return error(provider, 400, invalid, "temperature: must be a number"), None
    prompt = _user_text(body.get("messages"))
    if prompt is None:
        return error(
            provider, 400, invalid, "messages: a list of {role, content} with a user message"
        ), None
    return None, prompt
