"""A job's ``request.json`` made again from the journal when a run finishes a job an earlier run
submitted (``download.Downloader._finish``) and finds that record missing or damaged.

``request.json`` is written beside the ``submitting`` journal line without an fsync of its own
(``submit._write_request``): after a power cut it may be missing, empty or zero-filled, or its
folder gone, while the journal holds the create. The body it records is the provider's
``recorded_body`` of the job (with the rewrite of its prompt the task was created with, for an
enhanced job) under the request id of the job's latest create, which only that create's
``submitting`` line holds (the replay keeps it only while the create is unanswered): it is
looked for from the journal's end, where the lines of the tasks still running when the earlier
run ended are. A readable ``request.json`` (a JSON object) is never written over.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from batchvid.durable import dumps, write_atomic
from batchvid.jobs import Job
from batchvid.journal import JobRecord

REQUEST_NAME = "request.json"
_RECORD_READ = 1 << 16
_BLOCK = 1 << 20
"""The bytes of the journal read at a time, from its end (``latest_request_id``)."""


MISSING = "missing"
LOST = (MISSING, "empty", "damaged")
"""How ``readable_record``'s answer begins for a record known to be lost (not one that could
not be read: it may be a good one, and is never written over)."""


def readable_record(path: str | Path) -> str | None:
    """What is wrong with the JSON record at ``path`` (missing, unreadable, not an object), or
    None when it is a JSON object. Read with ``os.read`` (``batchvid verify`` reads two a job:
    a third of ``Path.read_bytes``'s cost)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return MISSING
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    try:
        pieces = [os.read(fd, _RECORD_READ)]
        while len(pieces[-1]) == _RECORD_READ:
            pieces.append(os.read(fd, _RECORD_READ))
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    finally:
        os.close(fd)
    data = b"".join(pieces)
    try:
        value = json.loads(data)
    except ValueError:
        return "empty" if not data.strip(b"\0 \n") else "damaged (not JSON)"
    return None if isinstance(value, dict) else "damaged (not a JSON object)"


def mend_request(root: Path, job: Job, record: JobRecord) -> bool:
    """Write ``jobs/<id>/request.json`` of ``job`` (``record``: the journal's record of its key
    as the run found it) again when it is missing or damaged; returns whether it was written.
    Nothing is written when the journal does not say what was sent (no ``submitting`` line
    naming the key's request id, or an enhanced job without its rewrite), nor over a file that
    could not be read (it may be a good one). A record for the reader: failing to write it
    never fails the job, whose video is downloaded (``batchvid verify`` names it)."""
    path = root / "jobs" / job.id / REQUEST_NAME
    problem = readable_record(path)
    if problem is None or not problem.startswith(LOST):
        return False
    body = expected_request(root, job, record)
    if body is None:
        return False
    try:
        write_atomic(path, dumps(body))  # fsynced: a record made again is not lost again
    except OSError:
        return False
    return True


def expected_request(root: Path, job: Job, record: JobRecord) -> dict[str, Any] | None:
    """The body ``request.json`` records for the latest create of ``job``'s key, from the
    journal at ``root``; None when the journal does not say."""
    from batchvid.enhancing import sent_rewrite
    from batchvid.providers import get_provider

    if job.enhance is not None:
        rewrite = sent_rewrite(record)
        if rewrite is None:
            return None
        job = replace(job, params={**job.params, "prompt": rewrite.prompt})
    body = get_provider(job.provider).recorded_body(job)
    if "request_id" not in body:  # a provider without an idempotency key
        return body
    from batchvid.store import JOURNAL, STATE_DIR

    request_id = record.request_id or latest_request_id(root / STATE_DIR / JOURNAL, job.key)
    if request_id is None:
        return None
    body["request_id"] = request_id  # (as ``recorded_body(job, request_id=…)`` has it)
    return body


def latest_request_id(journal: Path, key: str) -> str | None:
    """The ``request_id`` of the latest ``submitting`` line of ``key`` in ``journal``, read
    back from its end a block at a time (only the lines that name the key are decoded), or
    None when it has none."""
    needle = key.encode("utf-8")
    try:
        fd = os.open(journal, os.O_RDONLY)
    except OSError:
        return None
    try:
        end = os.fstat(fd).st_size
        carry = b""  # the start of the line the later block began within
        while end > 0:
            start = max(0, end - _BLOCK)
            block = os.pread(fd, end - start, start) + carry
            if len(block) != end - start + len(carry):
                return None  # cut while read
            if start > 0:
                cut = block.find(b"\n") + 1
                if cut == 0:  # no line ends here: a line longer than a block
                    carry, end = block, start
                    continue
                carry, block = block[:cut], block[cut:]
            found = _request_id_in(block, needle, key)
            if found is not False:
                return found
            end = start
    except OSError:
        return None
    finally:
        os.close(fd)
    return None


def _request_id_in(block: bytes, needle: bytes, key: str) -> str | None | Literal[False]:
    """The request id of the last ``submitting`` line of ``key`` among the whole lines of
    ``block``: None when that line holds none (an older create's is not this one's), False
    when the block has no such line."""
    at = len(block)
    while (at := block.rfind(needle, 0, at)) >= 0:
        first = block.rfind(b"\n", 0, at) + 1
        last = block.find(b"\n", at)
        try:
            line = json.loads(block[first:last if last >= 0 else len(block)])
        except ValueError:
            line = None
        if isinstance(line, dict) and line.get("event") == "submitting" and line.get("key") == key:
            request_id = line.get("request_id")
            return request_id if isinstance(request_id, str) else None
        at = first
    return False
