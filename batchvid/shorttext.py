"""A provider's message as one short, clean line: for report.md, junit.xml and the text log.

The whole message stays in report.json, the job's files and the JSON log; a person reading a
table cell or a log line gets a line of text, never a gateway's HTML page.
"""

from __future__ import annotations

import html
import re

# Markup in a provider's error body (an HTML 502 page): the hidden parts, then any tag.
_HIDDEN = re.compile(r"<(script|style|head)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<!--.*?-->|</?[A-Za-z!][^<>]*>", re.DOTALL)
_LOOKS_HTML = re.compile(r"<(!doctype|html|head|body|title|h[1-6]|p|div|center|hr|br|pre)\b", re.I)
_TITLE = re.compile(r"<title\b[^>]*>(.*?)</title\s*>", re.IGNORECASE | re.DOTALL)
_WHERE = re.compile(r"\s\((?:HTTP \d{3}|code [^()]*)(?:, code [^()]*)?\)\s*$")
"""The ``(HTTP 504, code 1234)`` a ``ProviderError`` ends its text with."""

SHORT_MESSAGE_CHARS = 200
LOG_MESSAGE_CHARS = 200


def short_message(text: str) -> str:
    """A message as one short, clean line for report.md and junit.xml: an HTML page's markup
    stripped and entities decoded (other text keeps its ``<`` and ``&``), whitespace collapsed,
    at most ``SHORT_MESSAGE_CHARS`` characters. The whole message stays in report.json and the
    job's files."""
    plain = html.unescape(_TAG.sub(" ", _HIDDEN.sub(" ", text))) if _LOOKS_HTML.search(text) else text
    return _bounded(" ".join(plain.split()), SHORT_MESSAGE_CHARS)


def log_message(text: str) -> str:
    """An error's text as one line for the text log, at most ``LOG_MESSAGE_CHARS`` characters:
    an HTML page in it stands as its ``<title>`` (or its text, markup stripped, when it has
    none), and the closing ``(HTTP 504, code ...)`` is kept even when the rest is cut."""
    where = _WHERE.search(text)
    suffix = " " + where.group(0).strip() if where else ""
    body = text[: where.start()] if where else text
    page = _LOOKS_HTML.search(body)
    if page is not None:
        end = body.rfind(">") + 1
        if end <= page.start():  # the page was cut inside its first tag
            end = len(body)
        title = _TITLE.search(body, page.start(), end)
        shown = html.unescape(title.group(1)) if title and title.group(1).strip() else short_message(body[page.start():end])
        body = body[: page.start()] + " " + shown + " " + body[end:]
    return _bounded(" ".join(body.split()), LOG_MESSAGE_CHARS - len(suffix)) + suffix


def _bounded(line: str, limit: int) -> str:
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"
