"""Done jobs whose id changed in the manifest: their verified files move to the new id.

Ids can swap (a <-> b), and a new job may take a renamed job's old id, so every such job's
files are first copied aside into ``.batchvid/relocate/<key>`` before any job writes; a job
then takes its staged copy instead of downloading again. A staged copy left by an interrupted
run is used as is.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from batchvid.durable import fsync_dir, make_dir
from batchvid.jobs import Job
from batchvid.journal import JobRecord
from batchvid.store import verify_file


class Relocations:
    def __init__(self, root: Path, state_dir: Path) -> None:
        self.root = root
        self.dir = state_dir / "relocate"
        self._staged: dict[str, Path] = {}

    def stage(self, jobs: Sequence[Job], records: Mapping[str, JobRecord]) -> None:
        """Copy aside the verified files of every done job whose id changed (all jobs of the
        manifest: ``--only`` may write where another job was)."""
        for job in jobs:
            record = records.get(job.key)
            if record is None or record.state != "succeeded" or record.video is None:
                continue
            if record.id == job.id:
                continue
            staged = self.dir / job.key
            if verify_file(staged / "video.mp4", record.video) is None:
                self._staged[job.key] = staged  # copied by an interrupted earlier run
                continue
            old = self.root / "jobs" / record.id
            if verify_file(old / "video.mp4", record.video) is not None:
                continue  # gone or damaged: fetched again from the task
            partial = staged.with_name(staged.name + ".tmp")
            shutil.rmtree(partial, ignore_errors=True)
            shutil.copytree(old, partial)
            shutil.rmtree(staged, ignore_errors=True)
            os.replace(partial, staged)
            fsync_dir(staged.parent)
            self._staged[job.key] = staged

    def take(
        self, job: Job, record: JobRecord
    ) -> tuple[dict[str, Any], dict[str, Any] | None, dict[str, Any] | None] | None:
        """Move the job's staged files to its new id; returns its (video, cover, poster)
        entries, or None when nothing is staged (the video is downloaded again)."""
        assert record.video is not None
        staged = self._staged.pop(job.key, None)
        if staged is None:
            return None
        new = self.root / "jobs" / job.id
        shutil.rmtree(new, ignore_errors=True)
        make_dir(new.parent)
        os.replace(staged, new)
        fsync_dir(new.parent)  # the journal is about to call the files done under the new id
        video = dict(record.video, path=f"jobs/{job.id}/video.mp4")
        cover, poster = (
            dict(entry, path=f"jobs/{job.id}/{Path(entry['path']).name}") if entry else None
            for entry in (record.cover, record.poster)
        )
        return video, cover, poster

    def cleanup(self) -> None:
        """Remove the staging area once every staged copy has been taken."""
        if not self._staged:
            shutil.rmtree(self.dir, ignore_errors=True)
