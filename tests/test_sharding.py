"""`--shard I/N` then `merge` gives the directory one unsharded run gives, on the simulator.

The comparison is fair because the simulator derives task ids from the request (seed, body,
BigModel request_id, how many tasks that body already has), not from creation order: the same
requests get the same task ids whether they arrive in one run or spread over two shards. The
videos already depend only on the request and the seed.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from batchvid.cli import main
from batchvid.simulator import BIGMODEL_PREFIX, GEEKAI_PREFIX, Simulator, SimulatorConfig

ROOT = Path(__file__).parent.parent
FAST = ["--simulate", "--no-progress", "--sim-latency", "0.05", "--poll-interval", "0.01:0.05",
        "--rpm", "6000", "--max-in-flight", "8"]
CASES = {
    "quickstart": ("quickstart.yaml", []),
    "bigmodel": ("bigmodel.yaml", []),
    # matrix x samples: samples send identical bodies, told apart by BigModel's request_id
    "sweep-samples": ("sweep.yaml", ["--provider", "bigmodel"]),
}


@dataclass(frozen=True)
class Runs:
    single: Path
    shards: tuple[Path, Path]
    merged: Path
    manifest: Path
    extra: list[str]


@pytest.fixture(scope="module", params=sorted(CASES))
def runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Runs:
    """One unsharded run, shards 1/2 and 2/2 in their own directories, and their merge."""
    name, extra = CASES[request.param]
    base = tmp_path_factory.mktemp(request.param)
    manifest = ROOT / "manifests" / name
    for sub in ("manifests/images", "manifests/prompts"):
        if (ROOT / sub).is_dir():
            shutil.copytree(ROOT / sub, base / sub)
    shutil.copy(manifest, base / "manifests" / name)
    manifest = base / "manifests" / name
    single, one, two, merged = (base / d for d in ("single", "shard-1", "shard-2", "merged"))
    assert main(["run", str(manifest), "--out", str(single), *FAST, *extra]) == 0
    assert main(["run", str(manifest), "--out", str(one), "--shard", "1/2", *FAST, *extra]) == 0
    assert main(["run", str(manifest), "--out", str(two), "--shard", "2/2", *FAST, *extra]) == 0
    assert main(["merge", str(one), str(two), "--into", str(merged)]) == 0
    return Runs(single, (one, two), merged, manifest, extra)


def _ids(out: Path) -> list[str]:
    return [j["id"] for j in json.loads((out / "report.json").read_text())["jobs"]]


def _without_timing(out: Path) -> dict[str, Any]:
    report: dict[str, Any] = json.loads((out / "report.json").read_text(encoding="utf-8"))
    report.pop("timing")
    return report


def test_shards_split_the_jobs_without_overlap(runs: Runs) -> None:
    """Every job runs in exactly one of the two shards, and both shards get work."""
    one, two = (set(_ids(s)) for s in runs.shards)
    assert one and two
    assert not one & two
    assert one | two == set(_ids(runs.single))


def test_merged_lock_is_byte_identical_to_one_run(runs: Runs) -> None:
    """batchvid.lock of the merge equals the unsharded run's, byte for byte."""
    assert (runs.merged / "batchvid.lock").read_bytes() == (runs.single / "batchvid.lock").read_bytes()


def test_merged_metadata_is_byte_identical_to_one_run(runs: Runs) -> None:
    """metadata.jsonl of the merge equals the unsharded run's, byte for byte."""
    merged = (runs.merged / "metadata.jsonl").read_bytes()
    assert merged == (runs.single / "metadata.jsonl").read_bytes()


def test_merged_report_equals_one_run_outside_timing(runs: Runs) -> None:
    """report.json of the merge equals the unsharded run's except its timing section."""
    assert _without_timing(runs.merged) == _without_timing(runs.single)


def test_merged_request_files_are_byte_identical(runs: Runs) -> None:
    """Every jobs/<id>/request.json and video.mp4 in the merge equals the unsharded run's."""
    for job_id in _ids(runs.single):
        for name in ("request.json", "video.mp4"):
            merged = (runs.merged / "jobs" / job_id / name).read_bytes()
            assert merged == (runs.single / "jobs" / job_id / name).read_bytes(), (job_id, name)


def test_merged_directory_verifies(runs: Runs, capsys: pytest.CaptureFixture[str]) -> None:
    """`verify` accepts the merged directory."""
    assert main(["verify", str(runs.merged)]) == 0
    assert capsys.readouterr().err == ""


def test_run_in_the_merged_directory_generates_nothing(
    runs: Runs, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The merged directory resumes like any other: a run there skips every job."""
    copy = shutil.copytree(runs.merged, tmp_path / "merged")
    assert main(["run", str(runs.manifest), "--out", str(copy), *FAST, *runs.extra]) == 0
    summary = json.loads((copy / "report.json").read_text())["summary"]
    assert summary["succeeded"] == 0 and summary["skipped"] == summary["total"]


@pytest.mark.anyio
@pytest.mark.parametrize("provider", ["geekai", "bigmodel"])
async def test_simulator_task_ids_do_not_depend_on_arrival_order(provider: str) -> None:
    """Two simulators with one seed give each request the same task id, in any order."""
    prefix = GEEKAI_PREFIX if provider == "geekai" else BIGMODEL_PREFIX
    bodies: list[dict[str, Any]] = [
        {"model": "cogvideox-flash", "prompt": f"scene {i}"} for i in range(3)
    ]
    if provider == "bigmodel":
        for i, body in enumerate(bodies):
            body["request_id"] = f"req-{i}"
    else:
        for body in bodies:
            body["async"] = True

    async def ids(order: list[int]) -> dict[int, str]:
        sim = Simulator(SimulatorConfig(latency=0, seed=5))
        found = {}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.app),
                                     base_url="http://sim") as client:
            for i in order:
                r = await client.post(f"{prefix}/videos/generations", json=bodies[i],
                                      headers={"Authorization": "Bearer k"})
                data = r.json()
                found[i] = data["task_id"] if provider == "geekai" else data["id"]
        return found

    forward, backward = await ids([0, 1, 2]), await ids([2, 1, 0])
    assert forward == backward
    assert len(set(forward.values())) == 3


@pytest.mark.anyio
async def test_simulator_gives_a_resubmitted_body_a_new_task_id() -> None:
    """The same body sent twice makes two tasks with different ids (duplicates stay visible)."""
    sim = Simulator(SimulatorConfig(latency=0))
    body = {"model": "cogvideox-flash", "prompt": "twice", "async": True}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.app),
                                 base_url="http://sim") as client:
        first, second = [
            (await client.post(f"{GEEKAI_PREFIX}/videos/generations", json=body,
                               headers={"Authorization": "Bearer k"})).json()["task_id"]
            for _ in range(2)
        ]
    assert first != second
