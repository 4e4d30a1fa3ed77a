"""Jobs as values (batchvid.jobs): --only selection, the canonical JSON spelling, keys."""

from __future__ import annotations

import hashlib
import json

import pytest

from batchvid.errors import UsageError
from batchvid.jobkey import canonical_json, job_key
from batchvid.jobs import Job, select_jobs


def job(job_id: str, source: str) -> Job:
    return Job(id=job_id, key=job_id, index=0, provider="geekai", params={}, source=source)


JOBS = [job("coffee-a", "coffee"), job("coffee-b", "coffee"), job("tea", "tea"), job("rows-1f2e3d4c", "rows")]


def test_a_manifest_job_id_selects_every_job_expanded_from_it() -> None:
    """--only coffee selects the coffee-* jobs a matrix expanded from job coffee."""
    assert [j.id for j in select_jobs(JOBS, ["coffee"])] == ["coffee-a", "coffee-b"]


def test_globs_match_expanded_ids_as_before() -> None:
    """Case-sensitive globs on expanded ids still work, in manifest order, each job once."""
    assert [j.id for j in select_jobs(JOBS, ["*-b", "t?a", "coffee-*"])] == ["coffee-a", "coffee-b", "tea"]
    with pytest.raises(UsageError):
        select_jobs(JOBS, ["COFFEE"])


def test_no_patterns_selects_everything() -> None:
    """Without patterns every job is selected."""
    assert select_jobs(JOBS, []) == JOBS


def test_a_pattern_that_selects_nothing_is_an_error_with_did_you_mean() -> None:
    """A pattern naming no job raises UsageError naming it, with the closest manifest job id."""
    with pytest.raises(UsageError) as caught:
        select_jobs(JOBS, ["tea", "cofee"])
    assert str(caught.value) == "--only cofee: no job id matches; did you mean 'coffee'? (see `batchvid plan`)"


@pytest.mark.parametrize(
    "value",
    [
        {"b": 1, "a": "x", "c": True, "d": None, "e": False},
        {"prompt": 'quote " backslash \\ newline \n tab \t é 猫 \u2028 \x00 \x1f', "fps": 30},
        {"provider": "geekai", "request": {"image": {"sha256": "ab", "bytes": 3}, "z": -7}, "sample": 2},
        {"fps": 30.0, "x": 1e100, "l": [1, "a", {"k": None}]},
        {"nested": {"deep": {"deeper": {"v": 10**30}}}},
        "just a string",
        [1, 2],
    ],
)
def test_canonical_json_is_exactly_the_json_dumps_spelling(value: object) -> None:
    """canonical_json's fast path spells every value byte for byte as json.dumps(sort_keys, compact, UTF-8)."""
    expected = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert canonical_json(value) == expected


def test_job_key_is_the_hash_of_the_canonical_payload() -> None:
    """job_key equals sha256 of canonical_json({provider, request, sample}), with the image by hash."""
    params = {"model": "cogvideox-flash", "prompt": "a \"cat\" é", "fps": 60}
    payload = json.dumps(
        {"provider": "bigmodel", "request": params, "sample": 3}, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    assert job_key("bigmodel", params, None, 3) == hashlib.sha256(payload.encode()).hexdigest()
