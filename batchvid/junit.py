"""junit.xml: one testcase per job; failed jobs are failures, pending jobs are skipped.

Written as text, a testcase at a time, with the bytes ``xml.etree.ElementTree`` gives the whole
suite after ``ET.indent`` (attributes in the order set, ``ET``'s escapes, empty elements as
``<name ... />``): building an element tree per job cost more than the rest of the file.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from batchvid.shorttext import short_message as short_message  # where it lived

# Characters XML 1.0 forbids even escaped; a provider's error body may carry them.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")

_TEXT = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})
"""``ET``'s escapes in an element's text."""
_ATTRIBUTE = str.maketrans(
    {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "\r": "&#13;", "\n": "&#10;", "\t": "&#09;"}
)
"""``ET``'s escapes in an attribute's value."""


def _clean(value: object) -> str:
    return _NOT_XML.sub("\ufffd", str(value))


def _attributes(**values: str) -> str:
    return "".join(f' {name}="{value.translate(_ATTRIBUTE)}"' for name, value in values.items())


def render_junit(report: Mapping[str, Any]) -> str:
    """One testcase per job; failed jobs are failures, pending jobs are skipped."""
    return "".join(junit_pieces(report))


def junit_pieces(report: Mapping[str, Any]) -> Iterator[str]:
    """``render_junit``'s text in pieces, a testcase at a time."""
    jobs = report["jobs"]
    yield junit_start(report, bool(jobs))
    if not jobs:
        return
    opening = testcase_opening(report)
    last = len(jobs) - 1
    for number, j in enumerate(jobs):
        yield testcase(opening, j) + ("\n" if number == last else "\n  ")
    yield JUNIT_END


JUNIT_END = "</testsuite>\n"


def junit_start(report: Mapping[str, Any], jobs: bool) -> str:
    """junit.xml up to its first testcase (the whole file when there are no ``jobs``)."""
    s = report["summary"]
    suite = "<testsuite" + _attributes(
        name=f"batchvid.{report['manifest']['name']}",
        tests=str(s["total"]),
        failures=str(s["failed"]),
        errors="0",
        skipped=str(s["pending"]),
    )
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + suite + (">\n  " if jobs else " />\n")


def testcase_opening(report: Mapping[str, Any]) -> str:
    """The start of every testcase of ``report`` (its class name)."""
    return "<testcase" + _attributes(classname=report["manifest"]["name"])


def testcase(opening: str, j: Mapping[str, Any]) -> str:
    """Job entry ``j``'s testcase (``opening``: ``testcase_opening``), without the whitespace around it."""
    head = f'{opening} name="{j["id"].translate(_ATTRIBUTE)}"'
    status = j["status"]
    if status != "failed" and status != "pending":
        return head + " />"
    err = j["error"] or {}
    message = short_message(str(err.get("message", "")))
    if status == "failed":
        kind = _clean(err.get("kind", "error"))
        text = _clean(f"{err.get('kind')}: {message}").translate(_TEXT)
        child = f"<failure{_attributes(type=kind, message=_clean(message))}>{text}</failure>"
    else:
        child = f"<skipped{_attributes(message=_clean(message or 'not finished'))} />"
    return f"{head}>\n    {child}\n  </testcase>"
