"""Selecting jobs by --only patterns (batchvid.jobs.select_jobs)."""

from __future__ import annotations

import pytest

from batchvid.errors import UsageError
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
