"""Turning a chat model's answer into a prompt: cleaning, refusal detection, cutting to a limit.

Chat models wrap what was asked in things a video model should not see: a "Here is the
enhanced prompt:" preamble (or "以下是优化后的提示词："), quotation marks, markdown, line breaks,
sometimes a ``<think>`` block. ``clean_answer`` removes them and leaves one line of prose.

Lengths are counted in characters (Unicode code points), as the manifest schema's ``maxLength``
and the providers' 512-character limit count them.
"""

from __future__ import annotations

import re

SENTENCE_ENDS = ".!?。！？"
_CJK_ENDS = "。！？"
_CLOSERS = "\"'”’」』)）»"
_QUOTE_PAIRS = {'"': '"', "'": "'", "“": "”", "‘": "’", "「": "」", "『": "』", "«": "»", "`": "`"}

_THINK = re.compile(r"<think>.*?(</think>|\Z)", re.DOTALL | re.IGNORECASE)
_FENCE = re.compile(r"^\s*```[^\n]*$", re.MULTILINE)
_HEADING = re.compile(r"^\s*#{1,6}\s.*$", re.MULTILINE)
_LINE_MARKUP = re.compile(r"^\s*(?:#{1,6}\s+|>\s*|[-*+•]\s+|\d{1,2}[.)]\s+)", re.MULTILINE)
_EMPHASIS = re.compile(r"(\*\*|__|~~|\*(?=\S)|(?<=\S)\*)")
_CJK = r"\u3000-\u303f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uff00-\uffef"
_CJK_BREAK = re.compile(rf"(?<=[{_CJK}])\s*\n\s*(?=[{_CJK}])")

# A lead-in that announces the answer and ends in a colon: "Here is…:", "Sure! Enhanced prompt:",
# "以下是优化后的提示词：". Only the first 120 characters are looked at.
_PREAMBLE = re.compile(
    r"""^\s*(?:
        (?:sure|okay|ok|certainly|of\ course|absolutely)[,!.]\s*[^:：\n]{0,100}
      | (?:here\ is|here's|here\ are|below\ is)\b[^:：\n]{0,100}
      | (?:the\ |an?\ |my\ )?(?:enhanced|improved|rewritten|refined|revised|expanded|optimi[sz]ed
          |final|detailed)\s+(?:video\ )?(?:prompt|description|caption|version)\b[^:：\n.]{0,30}
      | (?:video\ )?(?:prompt|description|caption)\b[^:：\n.]{0,30}
      | (?:好的|当然|没问题)[，,！!。][^:：\n]{0,60}
      | (?:以下是|以下为|下面是|这里是)[^:：\n]{0,60}
      | 这是[^:：\n。]{0,30}(?:提示|描述)[^:：\n。]{0,10}
      | (?:优化|增强|改写|扩写|润色|丰富)后的?[^:：\n。]{0,10}(?:提示词?|描述|版本)[^:：\n。]{0,10}
      | (?:视频)?(?:提示词|描述)[^:：\n。]{0,10}
    )[:：]\s*""",
    re.IGNORECASE | re.VERBOSE,
)

_REFUSAL = re.compile(
    r"""^\s*(?:
        i'?m\ sorry | i\ am\ sorry | sorry[,!.] | i\ apologi[sz]e
      | i\ (?:can\ ?not|can't|won't|am\ unable\ to|'m\ unable\ to)
      | as\ an\ ai\b | unfortunately,?\ i
      | 抱歉 | 很抱歉 | 对不起 | 我无法 | 我不能 | 无法(?:为您|帮您|完成|满足)
    )""",
    re.IGNORECASE | re.VERBOSE,
)


def clean_answer(text: str) -> str:
    """The answer as one line of prose: no thinking block, preamble, markdown, quotes or breaks."""
    text = _THINK.sub("", text)
    text = _FENCE.sub("", text)
    without_titles = _HEADING.sub("", text)
    if without_titles.strip():  # a title over the description; a lone heading is the answer
        text = without_titles
    text = _LINE_MARKUP.sub("", text)
    text = _EMPHASIS.sub("", text)
    text = text.strip()
    for _ in range(3):  # "Sure! Here is the prompt: Prompt: «…»" peels in a few rounds
        before = text
        match = _PREAMBLE.match(text[:120])
        if match and match.end() < len(text):
            text = text[match.end() :]
        text = _unquote(text.strip())
        if text == before:
            break
    text = _CJK_BREAK.sub("", text)
    return " ".join(text.split())


def _unquote(text: str) -> str:
    """``text`` without quotation marks that wrap all of it (repeatedly: ``"'x'"`` is ``x``)."""
    while len(text) >= 2 and _QUOTE_PAIRS.get(text[0]) == text[-1]:
        inner = text[1:-1].strip()
        if text[0] in inner:  # '"a" and "b"' is not one quoted string
            break
        text = inner
    return text


def looks_like_refusal(text: str) -> bool:
    """Whether a cleaned answer opens like a refusal ("I'm sorry, …", "抱歉，…")."""
    return bool(_REFUSAL.match(text))


def cut_to_limit(text: str, limit: int) -> str:
    """``text`` if it fits in ``limit`` characters; else cut at the last sentence end within
    the limit, or at the last word boundary when no sentence ends there, or hard at the limit
    when there is neither (a long run of unpunctuated CJK text).

    The result is never longer than ``limit`` and never empty for a non-empty ``text``.
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit!r}")
    text = text.strip()
    if len(text) <= limit:
        return text
    end = _last_sentence_end(text, limit)
    if end is None:
        space = text.rfind(" ", 0, limit + 1)
        end = space if space > 0 else limit
    cut = text[:end].rstrip(" ,;:，、；：—-")
    return cut if cut else text[:limit]


def ends_sentence(text: str) -> bool:
    """Whether ``text`` ends with a sentence end (closing quotes after it allowed)."""
    return text.rstrip(_CLOSERS)[-1:] in tuple(SENTENCE_ENDS)


def _last_sentence_end(text: str, limit: int) -> int | None:
    """The index just past the last sentence end (with any closing quotes) in ``text[:limit]``."""
    for index in range(min(limit, len(text)) - 1, -1, -1):
        char = text[index]
        if char not in SENTENCE_ENDS:
            continue
        after = index + 1
        while after < len(text) and after < limit and text[after] in _CLOSERS:
            after += 1
        at_break = after >= len(text) or text[after].isspace()
        if char in _CJK_ENDS or at_break:  # "3.5" or "e.g." inside a sentence are not ends
            return after
    return None
