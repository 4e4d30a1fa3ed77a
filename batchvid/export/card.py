"""The dataset card (README.md) of an export: Hub front matter and a body made from the run.

A pure function of the run, the format and the exported files' hashes: no dates, so the same
output directory gives the same card.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from typing import Any

import yaml

from batchvid import __version__
from batchvid.export import Run

_SIZES = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
          (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")]
_MAX_VALUES = 8


def size_category(count: int) -> str:
    """The Hub's ``size_categories`` value for ``count`` rows."""
    return next((label for limit, label in _SIZES if count < limit), "n>10M")


def front_matter(run: Run, fmt: str, files: Mapping[str, str], license_: str | None) -> dict[str, Any]:
    if fmt == "webdataset":
        paths: Any = sorted(name for name in files if name.endswith(".tar"))
        # one pattern, not the list, when there are many shards
        paths = paths if len(paths) <= 4 else [paths[0].rsplit("-", 1)[0] + "-*.tar"]
    elif any(name.startswith("videos/") for name in files):
        paths = ["metadata.parquet", "videos/*.mp4"]
    else:
        paths = ["metadata.parquet"]
    manifest = run.report["manifest"]
    data: dict[str, Any] = {
        "pretty_name": manifest["name"],
        "configs": [{"config_name": "default",
                     "data_files": [{"split": "train", "path": paths}]}],
        "task_categories": _tasks(run),
        "size_categories": [size_category(len(run.rows))],
        "tags": ["batchvid", "synthetic", "cogvideox", manifest["provider"], fmt],
    }
    if license_:
        data["license"] = license_
    return data


def _from_image(run: Run) -> int:
    """How many exported clips were generated from a first-frame image."""
    return sum(1 for row in run.rows if (row.get("parameters") or {}).get("image") is not None)


def _tasks(run: Run) -> list[str]:
    """The Hub's task categories: text-to-video and/or image-to-video, as the clips were made."""
    images = _from_image(run)
    tasks = ["text-to-video"] if images < len(run.rows) or not run.rows else []
    return [*tasks, "image-to-video"] if images else tasks


def _what(run: Run) -> str:
    """The clips, as the card's first sentence counts them."""
    images, total = _from_image(run), len(run.rows)
    if not images:
        return f"{total} text-to-video clips"
    if images == total:
        return f"{total} image-to-video clips (each from a first-frame image and its prompt, if any)"
    return (f"{total} clips ({total - images} text-to-video, {images} image-to-video from a "
            "first-frame image)")


def _scope(report: Mapping[str, Any]) -> list[str]:
    """What part of the manifest's jobs the run holds, when it is not all of them."""
    shard, shards = report.get("shard"), report.get("shards")
    if shard:
        return [f"This run is shard {shard['index']}/{shard['count']} of the manifest "
                "(`--shard`): the other shards' jobs are not in this dataset; `batchvid merge` "
                "the shards' output directories and export the merged one for all of them.", ""]
    if shards and shards.get("missing"):
        missing = ", ".join(f"{i}/{shards['count']}" for i in shards["missing"])
        which = (f"shard {missing} is missing, and its jobs are" if len(shards["missing"]) == 1
                 else f"shards {missing} are missing, and their jobs are")
        return [f"Merged from an incomplete set of shards (`merge --partial`): {which} not in "
                "this dataset.", ""]
    return []


def render_card(run: Run, fmt: str, files: Mapping[str, str], license_: str | None) -> str:
    """README.md of the export."""
    yaml_text = yaml.safe_dump(front_matter(run, fmt, files, license_), sort_keys=False,
                               allow_unicode=True)
    manifest, summary = run.report["manifest"], run.report["summary"]
    lines = [
        "---", yaml_text.rstrip("\n"), "---", "",
        f"# {manifest['name']}", "",
        f"{_what(run)} generated with CogVideoX through "
        f"`{manifest['provider']}`, from the batchvid manifest `{manifest['name']}` "
        f"(run with batchvid {run.report['batchvid_version']}, exported with batchvid "
        f"{__version__}).", "",
        "## Contents", "",
        "| jobs in the run | exported | failed | pending |", "|---|---|---|---|",
        f"| {summary['total']} | {len(run.rows)} | {summary['failed']} | {summary['pending']} |",
        "",
    ]
    lines += _scope(run.report)
    if run.failed:
        where = "failed.jsonl" if fmt == "webdataset" else (
            "rows whose `status` is `failed` or `pending` (a clip's row says `succeeded`, or "
            "`skipped` when an earlier run made it)")
        lines += [f"{len(run.failed)} failed or pending jobs are listed for audit, without "
                  f"media, in {where}.", ""]
    lines += _parameters(run) + _prompts(run) + _fields(run, fmt) + _quality(run)
    lines += _loading(fmt, files) + _hashes(files)
    return "\n".join(lines) + "\n"


def _parameters(run: Run) -> list[str]:
    values: dict[str, Counter[str]] = {}
    for row in run.rows:
        for name, value in sorted(row.get("parameters", {}).items()):
            if name != "prompt":
                values.setdefault(name, Counter())[_show(value)] += 1
    lines = ["## Models and parameters", "", "| parameter | values (clips) |", "|---|---|"]
    for name, counter in sorted(values.items()):
        shown = sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))
        cell = ", ".join(f"`{v}` ({n})" for v, n in shown[:_MAX_VALUES])
        if len(shown) > _MAX_VALUES:
            cell += f", … {len(shown) - _MAX_VALUES} more"
        lines.append(f"| {name} | {cell} |")
    return [*lines, ""]


def _show(value: Any) -> str:
    """A parameter's value in a table cell: an image by its sha256 (12 digits) or its URL,
    anything else as JSON writes it (``true``, ``30``), pipes escaped."""
    if isinstance(value, dict):
        text = str(value["sha256"])[:12] if "sha256" in value else str(value.get("url", value))
    else:
        text = value if isinstance(value, str) else json.dumps(value)
    return text.replace("|", "\\|").replace("`", "'")


def _prompts(run: Run) -> list[str]:
    """Which prompt is which, and how many a chat model rewrote (``enhance:``)."""
    rewritten = [row for row in run.rows if row.get("prompt_original") is not None]
    if not rewritten:
        return []
    models = Counter(str((run.job(row["id"]).get("enhance") or {}).get("model") or "a chat model")
                     for row in rewritten)
    by = ", ".join(f"`{m}` ({n})" for m, n in sorted(models.items()))
    return ["## Prompts", "",
            f"{len(rewritten)} of {len(run.rows)} prompts were rewritten by a chat model before "
            f"the video was requested (batchvid's `enhance:`; by {by}). `prompt` is the prompt "
            "sent to CogVideoX; `prompt_original` the one written in the manifest (absent or "
            "null for a prompt sent as written); `parameters.prompt` is always the one written.",
            ""]


def _fields(run: Run, fmt: str) -> list[str]:
    """What each sample holds."""
    if fmt == "webdataset":
        lines = ["## Fields", "",
                 "Each sample is keyed by the job id (a `.` written `%2e`) and holds `mp4` (the "
                 "video), `txt` (the prompt sent), `jpg` (its first frame, when a poster was "
                 "made) and `json`:", ""]
    else:
        lines = ["## Fields", "", "Each row of `metadata.parquet`:", ""]
    lines += ["| field | meaning |", "|---|---|"]
    if fmt != "webdataset":
        lines.append("| file_name / video | `videos/<id>.mp4`, or the video's bytes "
                     "(`--embed-video`) |")
    lines += [
        "| id | the job id in the manifest |",
        "| key | sha256 of the request sent (with the sample index): the job's identity |",
        "| prompt | the prompt sent |",
    ]
    if any(row.get("prompt_original") is not None for row in run.rows):
        lines.append("| prompt_original | the prompt as written, when a chat model rewrote it |")
    lines += [
        "| parameters | the generation parameters sent (an image by its sha256, or its URL) |",
        "| sha256 | the video file's sha256 |",
        "| width, height, fps, duration | probed from the video file |",
        "| quality | signals measured on the clip (below) |",
    ]
    if fmt == "webdataset":
        lines.append("| file_name | the video's path in the batchvid output directory |")
    elif run.failed:
        lines.append("| status | `succeeded` or `skipped` (a clip; `skipped`: made by an earlier run), "
                     "`failed` or `pending` (no video) |")
        lines.append("| error | why a failed or pending job has no video (`kind`, `message`) |")
    return [*lines, ""]


def _quality(run: Run) -> list[str]:
    signals = [row["quality"] for row in run.rows if row.get("quality")]
    if not signals:
        return []
    lines = ["## Quality signals", "",
             "Per clip in `quality` (batchvid samples at most 32 small grey frames):", "",
             "| signal | min | mean | max |", "|---|---|---|---|"]
    for name in ("motion", "black_fraction", "frozen_fraction", "luma_mean"):
        column = [float(q[name]) for q in signals]
        lines.append(f"| {name} | {min(column):.4f} | {sum(column) / len(column):.4f} | "
                     f"{max(column):.4f} |")
    return [*lines, ""]


def _loading(fmt: str, files: Mapping[str, str]) -> list[str]:
    if not any(name.endswith((".tar", ".parquet")) for name in files):
        return ["## Loading", "", "Nothing to load: the run has no finished videos.", ""]
    if fmt == "webdataset":
        shards = sorted(name for name in files if name.endswith(".tar"))
        first, last = shards[0].rsplit("-", 1)[0] if shards else "data", len(shards) - 1
        code = [
            "import webdataset as wds",
            f'ds = wds.WebDataset("{first}-{{000000..{last:06d}}}.tar", shardshuffle=False)',
            "for sample in ds:  # keys: __key__, mp4, json, txt (and jpg when a poster exists)",
            "    video_bytes, prompt = sample['mp4'], sample['txt'].decode()",
        ]
        hub = ['ds = load_dataset("webdataset", data_files={"train": "*.tar"}, split="train")',
               'ds = ds.cast_column("mp4", Video(decode=False))  # decoding needs torchcodec']
    else:
        code = ["import pyarrow.parquet as pq", 'table = pq.read_table("metadata.parquet")']
        hub = ['ds = load_dataset("parquet", data_files="metadata.parquet", split="train")']
    return ["## Loading", "", "```python", *code, "",
            "from datasets import Video, load_dataset" if fmt == "webdataset"
            else "from datasets import load_dataset", *hub, "```", ""]


def _hashes(files: Mapping[str, str]) -> list[str]:
    listed = sorted(name for name in files if not name.startswith("videos/"))
    lines = ["## Files and hashes", "",
             "`SHA256SUMS` holds the sha256 of every file (check with `sha256sum -c SHA256SUMS`); "
             "each clip's own sha256 is in its `sha256` field.", "",
             "| file | sha256 |", "|---|---|"]
    lines += [f"| {name} | `{files[name]}` |" for name in listed if name != "README.md"]
    videos = sum(name.startswith("videos/") for name in files)
    if videos:
        lines.append(f"| videos/ ({videos} files) | see SHA256SUMS |")
    return [*lines, ""]
