"""The command line: the only module that prints or exits."""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    return 0
