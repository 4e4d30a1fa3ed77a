"""Which jobs a run works on: those ``--only`` names, in the ``--shard`` chosen.

A shard is chosen by the job's key, not its place, so adding or removing a job in a manifest
moves no other job to another shard (a CI split stays stable as the manifest grows)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from batchvid.errors import UsageError
from batchvid.jobs import Job, matches


def shard_of(job: Job, count: int) -> int:
    """The shard (0-based) a job belongs to: by its key, so adding a job moves no other job."""
    return int.from_bytes(hashlib.sha256(job.key.encode("ascii")).digest()[:8], "big") % count


def parse_shard(text: str) -> tuple[int, int]:
    """``I/N`` with 1 <= I <= N, as on the command line; returns (I, N)."""
    try:
        index_text, count_text = text.split("/")
        index, count = int(index_text), int(count_text)
    except ValueError:
        raise UsageError(f"--shard {text!r}: expected I/N, for example 1/4") from None
    if count < 1:
        raise UsageError(f"--shard {text!r}: N, the number of shards, must be 1 or more")
    if not 1 <= index <= count:
        raise UsageError(f"--shard {text!r}: I must be between 1 and N ({count})")
    return index, count


def select(
    jobs: Sequence[Job], only: Sequence[str] = (), shard: tuple[int, int] | None = None
) -> list[Job]:
    """The jobs a run works on: those any ``--only`` glob names (by id, or by the manifest job
    they were expanded from), in the chosen shard."""
    chosen = [j for j in jobs if not only or any(matches(j, p) for p in only)]
    if shard is not None:
        index, count = shard
        chosen = [j for j in chosen if shard_of(j, count) == index - 1]
    return chosen
