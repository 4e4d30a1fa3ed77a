"""Journal.replay decodes runs of lines at once: the records are those a line at a time gives."""

from __future__ import annotations

import json
import random
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from batchvid import journal as journal_module
from batchvid.errors import OutputDirError
from batchvid.journal import (
    Enhanced,
    Failed,
    JobRecord,
    Journal,
    Refused,
    Submitted,
    Submitting,
    Succeeded,
    encode,
    entry_from_dict,
    read_entries,
    replay_entries,
)

VIDEO = {"path": "jobs/a/video.mp4", "sha256": "ab" * 32, "bytes": 10}
MEDIA = {"codec": "h264", "fps": 16.0, "width": 1440, "height": 960,
         "quality": {"motion": 0.08, "black_fraction": 0.0, "frozen_fraction": 0.0}}
STAT = {"bytes": 10, "ino": 7, "mtime_ns": 1_795_999_908_052_144_764}
POSTER = {"path": "jobs/a/poster.jpg", "sha256": "cd" * 32, "bytes": 372}

LINES = b"".join(
    [
        encode(Submitting("k1", "a", "bv-1")),
        encode(Refused("k1", "a")),
        encode(Submitting("k1", "a", None)),
        encode(Submitted("k1", "a", "t1")),
        encode(Succeeded("k1", "a", "t1", VIDEO, None, MEDIA, POSTER, None, STAT)),
        b"\n",  # a blank line is skipped
        encode(Failed("k2", "b", None, {"kind": "content_filter", "message": "no"})),
        encode(Enhanced("k3", "c", "A fox, golden hour.", "A fox.", "enhanced", None, "glm-4-flash", 1, 40)),
        encode(Submitting("k3", "c", "bv-3")),
        encode(Submitted("k3", "c", "t3")),
        encode(Enhanced("k3", "c", "A fox at dusk.", "A fox.", "truncated", "cut", "glm-4-flash", 2, 90)),
        # The same job done twice (a --force rerun): the latest line wins.
        encode(Succeeded("k1", "a", "t1b", dict(VIDEO, sha256="ef" * 32), {"path": "jobs/a/cover.jpg"},
                         dict(MEDIA, fps=8.0), None, {"revised_prompt": "é, ünïcode", "provider_duration": 5},
                         STAT)),
        encode(Failed("k5", "e", "t5", {"kind": "qc_failed", "message": "dark"}, VIDEO, MEDIA)),
        # Lines of an older version (fields missing) and of a newer one (fields unknown).
        b'{"event":"submitting","id":"f","key":"k6"}\n',
        b'{"event":"succeeded","id":"f","key":"k6","task_id":"t6","video":{"path":"v","sha256":"00","bytes":1}}\n',
        b'{"event":"submitted","id":"g","key":"k7","task_id":"t7","later":{"id":"x","key":"y"}}\n',
        # Not compact (a hand edit): still one entry.
        b' { "event" : "refused", "id" : "h", "key" : "k8" }\r\n',
        b'{"event":"enhanced","id":"i","key":"k9","model":"m","original":"o","prompt":"p","status":"fallback"}\n',
    ]
)


def _reference(data: bytes) -> dict[str, JobRecord]:
    """The records of the previous implementation: each line decoded on its own, then folded."""
    lines = [line for line in data.split(b"\n") if line.strip()]
    return replay_entries(entry_from_dict(json.loads(line)) for line in lines)


def _as_fields(records: dict[str, JobRecord]) -> dict[str, dict[str, object]]:
    return {key: {f.name: getattr(r, f.name) for f in fields(r)} for key, r in records.items()}


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 64])
def test_replay_gives_the_records_a_line_at_a_time_gives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    """Every field of every record (all entry kinds, a job done twice, older and newer lines,
    a blank and a hand-edited line) equals the line-at-a-time replay's, wherever runs of lines
    begin and end."""
    monkeypatch.setattr(journal_module, "CHUNK_LINES", chunk)
    path = tmp_path / "journal.jsonl"
    path.write_bytes(LINES)
    records = Journal(path).replay()
    assert _as_fields(records) == _as_fields(_reference(LINES))
    assert records["k1"].task_id == "t1b" and records["k1"].media == dict(MEDIA, fps=8.0)
    assert list(read_entries(path)) == [
        entry_from_dict(json.loads(line)) for line in LINES.split(b"\n") if line.strip()
    ]


@pytest.mark.parametrize("chunk", [1, 3, 64])
def test_a_torn_tail_is_ignored_wherever_the_run_of_lines_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    """A last line cut mid-write is dropped and every line before it replays, whether it ends
    a run of lines or not."""
    monkeypatch.setattr(journal_module, "CHUNK_LINES", chunk)
    path = tmp_path / "journal.jsonl"
    for cut in (b'{"event":"succ', b'{"event":"refused","id":"z","key":"kz"', b"{"):
        path.write_bytes(LINES + cut)
        assert _as_fields(Journal(path).replay()) == _as_fields(_reference(LINES))


@pytest.mark.parametrize("chunk", [1, 4, 64])
@pytest.mark.parametrize(
    "bad",
    [
        b'{"event":"teleported","id":"a","key":"k1"}',
        b'{"event":"refused","id":"a","key":"k1"},{"event":"refused","id":"b","key":"k2"}',
        b'{"event":"refused","id":"a","key":"k1","x":[{}',
        b'{"event":"refused","id":"a"',
        b'{"event":"submitted","id":"a","key":"k1"}',  # without its task_id
        b'{"event":1,"id":"a","key":"k1"}',
        b'{"event":["refused"],"id":"a","key":"k1"}',
        b'{"event":"teleported","id":"a","key":"k1","\\u0000":null,"null":null}',
        b'{"id":"a","key":"k1"}',
        b'["event","id","key"]',
        b'{"event":"refused","id":"a","key":"k1"}\xff',
    ],
)
def test_a_bad_line_in_any_run_of_lines_is_named_by_its_number(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int, bad: bytes
) -> None:
    """An unknown event, two objects on one line or a cut line that is not the last one is an
    error naming that line, as when every line was decoded on its own."""
    monkeypatch.setattr(journal_module, "CHUNK_LINES", chunk)
    path = tmp_path / "journal.jsonl"
    lines = LINES.split(b"\n")
    path.write_bytes(b"\n".join([*lines[:6], bad, *lines[6:]]))
    with pytest.raises(OutputDirError, match=r"journal.jsonl:7: the journal is corrupt"):
        Journal(path).replay()


def test_merged_shard_journals_replay_as_their_lines_do(tmp_path: Path) -> None:
    """Shard journals read back and appended into one (as ``merge`` does) replay to the records
    their concatenated lines give."""
    first, second = LINES.split(b"\n")[:9], LINES.split(b"\n")[9:]
    merged = Journal(tmp_path / "merged.jsonl")
    merged.open()
    for number, part in enumerate((first, second)):
        shard = tmp_path / f"shard{number}.jsonl"
        shard.write_bytes(b"\n".join(part) + b"\n")
        for entry in read_entries(shard):
            merged.append(entry)
    merged.close()
    assert _as_fields(Journal(merged.path).replay()) == _as_fields(_reference(LINES))


def test_decoded_lines_share_their_key_strings(tmp_path: Path) -> None:
    """Two jobs' decoded records hold one copy of each dict key, not one per line (the memory
    a 100,000-job rerun keeps)."""
    path = tmp_path / "journal.jsonl"
    path.write_bytes(
        encode(Succeeded("k1", "a", "t1", VIDEO, None, MEDIA, POSTER, None, STAT))
        + encode(Succeeded("k2", "b", "t2", VIDEO, None, MEDIA, POSTER, None, STAT))
    )
    records = Journal(path).replay()
    first, second = records["k1"].media, records["k2"].media
    assert first is not None and second is not None and first == second
    assert all(a is b for a, b in zip(first, second, strict=True))


def test_a_last_line_that_lost_only_its_newline_is_kept_on_open(tmp_path: Path) -> None:
    """A whole last entry without its newline, which replay reads, is completed (not dropped)
    when the journal is opened, so the next line follows it and both replay."""
    path = tmp_path / "journal.jsonl"
    done = Succeeded("k1", "a", "t1", VIDEO, None, MEDIA, POSTER, None, STAT)
    path.write_bytes(encode(Submitted("k1", "a", "t1")) + encode(done)[:-1])
    assert Journal(path).replay()["k1"].state == "succeeded"
    journal = Journal(path)
    journal.open()
    journal.append(Refused("k2", "b"))
    journal.close()
    assert list(read_entries(path)) == [Submitted("k1", "a", "t1"), done, Refused("k2", "b")]


def test_a_record_keeps_the_key_string_its_dict_holds(tmp_path: Path) -> None:
    """A job's later lines do not keep another copy of its key: the record's key is the dict's."""
    path = tmp_path / "journal.jsonl"
    path.write_bytes(encode(Submitting("k" * 64, "a", "bv-1")) + encode(Submitted("k" * 64, "a", "t1")))
    records = Journal(path).replay()
    (key, record), = records.items()
    assert record.key is key and record.state == "submitted"


def _random_entries(rng: random.Random, count: int, enhanced: bool) -> list[Any]:
    """``count`` entries of a few keys in a random order of every kind (``enhanced`` ones only
    when asked), ids changing now and then."""
    made: list[Any] = []
    for _ in range(count):
        key = f"k{rng.randrange(6)}"
        job_id = rng.choice("abc")
        kinds = ["submitting", "refused", "submitted", "succeeded", "failed"] + (["enhanced"] if enhanced else [])
        kind = rng.choice(kinds)
        if kind == "submitting":
            made.append(Submitting(key, job_id, rng.choice([None, f"bv-{rng.randrange(9)}"])))
        elif kind == "refused":
            made.append(Refused(key, job_id))
        elif kind == "submitted":
            made.append(Submitted(key, job_id, f"t{rng.randrange(9)}"))
        elif kind == "succeeded":
            made.append(Succeeded(key, job_id, rng.choice([None, "t1"]), dict(VIDEO, bytes=rng.randrange(99)),
                                  rng.choice([None, {"path": "c"}]), MEDIA, rng.choice([None, POSTER]),
                                  rng.choice([None, {"revised_prompt": "r"}]), rng.choice([None, STAT])))
        elif kind == "failed":
            made.append(Failed(key, job_id, rng.choice([None, "t2"]), {"kind": "timeout", "message": "m"},
                               rng.choice([None, VIDEO]), rng.choice([None, MEDIA])))
        else:
            made.append(Enhanced(key, job_id, f"p{rng.randrange(9)}", "o", "enhanced", None, "glm-4-flash", 1, 2))
    return made


@pytest.mark.parametrize("seed", range(40))
def test_replay_of_random_journals_gives_the_records_a_line_at_a_time_gives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    """Random journals (every kind of line, keys done, failed, refused and created again in
    any order, rewrites from some line on or none) replay to the records, and their order, that
    the typed entries folded one at a time give, wherever runs of lines begin and end and
    however many keys' lines are held before their records are made (``SETTLE_KEYS``)."""
    rng = random.Random(seed)
    monkeypatch.setattr(journal_module, "CHUNK_LINES", rng.choice([1, 2, 7, 64]))
    monkeypatch.setattr(journal_module, "SETTLE_KEYS", rng.choice([1, 2, 5, 4096]))
    entries = _random_entries(rng, rng.randrange(1, 60), enhanced=seed % 2 == 0)
    path = tmp_path / "journal.jsonl"
    path.write_bytes(b"".join(map(encode, entries)))
    records = Journal(path).replay()
    expected = replay_entries(entries)
    assert list(records) == list(expected)
    assert _as_fields(records) == _as_fields(expected)
    assert all(record.key is key for key, record in records.items())
