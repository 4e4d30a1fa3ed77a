"""Instructions per simulator clip of each stage of the analysis (``batchvid.media.analyse``),
counted exactly with valgrind's cachegrind, for this tree and optionally another one.

Run: .venv/bin/python tests/benchmarks/analysis_stages.py [--against TREE] [--stages a,b]
[--libraries]

Each stage is the ones before it and one more step, on 8 simulator clips (160x90, 30 fps,
1 s, as the client-cost and throughput benchmarks download) analysed in turn, so a stage's
figure less the one before is that step's cost:

- ``open``: ``av.open`` and close, as the tree's analysis opens the clip (FFmpeg reads the
  header and runs ``avformat_find_stream_info``, which, unless the tree opens H.264 MP4 clips
  unprobed (``media._UNPROBED``), opens a decoder of its own and feeds it the first packet;
  PyAV makes a codec context for each stream);
- ``demux``: every packet read (PyAV's ``demux``);
- ``scan``: ``quality._scan`` keeping the packets, and the in-band parameter-set check;
- ``decode``: the sampled frames decoded (the kept decoder);
- ``shrink``: those frames scaled to small grey pictures;
- ``measure``: ``quality.measure`` (the signals' numpy work added);
- ``analyse``: the whole analysis (the poster's first frame and JPEG, the facts);
- ``handoff``: this process's side of a clip analysed by an ``AnalysisPool`` worker, one
  clip a request, on uvloop (the worker's own instructions are not counted).

Each figure is (instructions of 40 clips - those of 8) / 32, so start-up and imports are out.
Instructions, not time: the machine's load does not move them. No target: the figures go to
issue 12's client-CPU budget (tests/benchmarks/README.md).

``--libraries``: instead, the whole analysis (the ``analyse`` stage) by where its instructions
run, with valgrind's callgrind: each shared library's own instructions per clip (FFmpeg's
libavcodec, libswscale, libavformat, libavutil; the C library's memset, malloc and printf
that FFmpeg calls; the interpreter, which runs batchvid's and PyAV's Python-level code;
numpy; PyAV's compiled wrappers), the same (40 - 8) / 32 difference. It shows how much of a
clip is Python code that batchvid could make cheaper and how much is FFmpeg's and numpy's
own work on the frames.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STAGES = ("open", "demux", "scan", "decode", "shrink", "measure", "analyse", "handoff")

# Run under valgrind in a child, with the measured tree first on the path.
_CHILD = r"""
import sys
from pathlib import Path
import av
from batchvid import media, poster, quality

stage, count, paths = sys.argv[1], int(sys.argv[2]), sys.argv[3:]

def opened(path):
    # As the tree's analysis opens a simulator clip (unprobed where the tree has that).
    container = av.open(path, format="mp4", container_options=getattr(media, "_UNPROBED", None))
    video = container.streams.video[0]
    video.codec_context.thread_count = 1
    return container, video

def upto(path, step):
    container, video = opened(path)
    with container:
        if step == "open":
            return
        if step == "demux":
            for _ in container.demux(video):
                pass
            return
        kept = []
        times, _ = quality._scan(container, video, None, kept)
        sets = poster.sets_in_band
        try:
            sets(kept, video.codec_context.extradata)
        except TypeError:  # a tree whose check takes one packet
            any(sets(packet, video.codec_context.extradata) for packet in kept)
        if step == "scan":
            return
        frames = quality._sequential_samples(container, video, times, kept)
        if step == "decode":
            for _ in frames:
                pass
        else:
            quality._shrinker().stack(frames)

def handoff(count):
    import anyio
    async def main():
        pool = media.AnalysisPool(workers=1)
        pool.start()
        for path in paths:
            await pool.analyse(Path(path))
        for index in range(count):
            await pool.analyse(Path(paths[index % len(paths)]))
        pool.close()
    anyio.run(main, backend_options={"use_uvloop": True})

if stage == "handoff":
    handoff(count)
else:
    def measured(path):
        container, video = opened(path)
        with container:
            quality.measure(container, video)
    one = {"measure": measured, "analyse": media.analyse}.get(stage) or (lambda p: upto(p, stage))
    for path in paths:
        one(path)
    for index in range(count):
        one(paths[index % len(paths)])
"""


def _child_env(tree: Path) -> dict[str, str]:
    """The child's environment: ``tree`` first on the path, and what a worker sets
    (``batchvid.media_pool.worker_env``)."""
    return dict(os.environ, PYTHONPATH=str(tree), OPENBLAS_NUM_THREADS="1",
                MALLOC_MMAP_THRESHOLD_=str(32 << 20), MALLOC_TRIM_THRESHOLD_=str(64 << 20))


def instructions(tree: Path, stage: str, count: int, paths: list[Path]) -> int:
    """Instructions of the child process for ``stage`` on ``count`` clips after a warm-up."""
    done = subprocess.run(
        ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
         sys.executable, "-P", "-c", _CHILD, stage, str(count), *map(str, paths)],
        env=_child_env(tree), capture_output=True, text=True, check=True,
    )
    found = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
    if found is None:
        raise SystemExit(f"no instruction count from valgrind:\n{done.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def per_clip(tree: Path, stage: str, paths: list[Path]) -> float:
    return (instructions(tree, stage, 40, paths) - instructions(tree, stage, 8, paths)) / 32


def by_library(tree: Path, stage: str, count: int, paths: list[Path], out: Path) -> Counter[str]:
    """Instructions of the child process for ``stage`` on ``count`` clips after a warm-up, by
    the shared object they ran in (each function's own cost in callgrind's profile)."""
    subprocess.run(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, "-P", "-c",
         _CHILD, stage, str(count), *map(str, paths)],
        env=_child_env(tree), capture_output=True, text=True, check=True,
    )
    return _own_costs(out.read_text())


def _own_costs(profile: str) -> Counter[str]:
    """A callgrind profile's instructions by object: the cost lines of each function (``fn=``)
    go to the object named last (``ob=``; names are compressed, ``(id) name`` where an object
    is first mentioned, by ``ob=`` or a call's ``cob=``, then ``(id)``); a call's line (after
    ``calls=``) is the callee's cost, counted where the callee is."""
    names: dict[str, str] = {}
    costs: Counter[str] = Counter()
    current = "?"
    call = False
    for line in profile.splitlines():
        if line.startswith(("ob=", "cob=")):
            found = re.match(r"c?ob=(\(\d+\))?\s*(.*)", line)
            assert found is not None
            key, name = found.groups()
            if key and name:
                names[key] = name  # an object's first mention, by a function or a call
            if line.startswith("ob="):
                current = names.get(key, name) if key else name
        elif line.startswith("calls="):
            call = True
        elif line[:1].isdigit() or line[:1] in "+-*":
            if call:
                call = False
                continue
            parts = line.split()
            if len(parts) > 1:
                costs[_library(current)] += int(parts[1])
    return costs


def _library(path: str) -> str:
    """A shared object's name without its directory, version and wheel hash; PyAV's compiled
    modules (``av/**/*.abi3.so``) as one."""
    if "/site-packages/av/" in path:
        return "PyAV's compiled wrappers"
    name = Path(path).name
    name = re.sub(r"-[0-9a-f]{8}(?=\.so)", "", name)
    return re.sub(r"(\.so)[\d.]*$|\.cpython-\S+\.so$", r"\1", name) or path


def libraries_per_clip(tree: Path, paths: list[Path]) -> dict[str, float]:
    """``by_library`` of the whole analysis, (40 clips - 8) / 32."""
    with tempfile.TemporaryDirectory(prefix="analysis-libraries-") as tmp:
        few = by_library(tree, "analyse", 8, paths, Path(tmp) / "few.out")
        many = by_library(tree, "analyse", 40, paths, Path(tmp) / "many.out")
    return {name: (many[name] - few[name]) / 32 for name in many.keys() | few.keys()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--against", type=Path, help="another tree (a checkout) to compare")
    parser.add_argument("--stages", default=",".join(STAGES), help="comma-separated, of " + ", ".join(STAGES))
    parser.add_argument("--libraries", action="store_true",
                        help="instead, the whole analysis's instructions per clip by shared library (callgrind)")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from batchvid.simulator.video import VideoSpec, render_video

    trees = {"this tree": ROOT, **({str(args.against): args.against.resolve()} if args.against else {})}
    with tempfile.TemporaryDirectory(prefix="analysis-stages-") as tmp:
        paths = []
        for colour in range(8):
            path = Path(tmp) / f"sim{colour}.mp4"
            path.write_bytes(render_video(VideoSpec(160, 90, 30, 1.0, False, colour, colour % 2)))
            paths.append(path)
        if args.libraries:
            show_libraries(trees, paths)
            return 0
        print("instructions per simulator clip (cachegrind; 40 clips less 8, / 32):")
        for stage in args.stages.split(","):
            figures = [f"{label} {per_clip(tree, stage, paths) / 1e6:6.3f} M" for label, tree in trees.items()]
            print(f"  {stage:8s} " + "   ".join(figures), flush=True)
    return 0


def show_libraries(trees: dict[str, Path], paths: list[Path]) -> None:
    figures = {label: libraries_per_clip(tree, paths) for label, tree in trees.items()}
    names = sorted(set().union(*figures.values()), key=lambda name: -max(f.get(name, 0.0) for f in figures.values()))
    print("instructions per simulator clip of the whole analysis, by shared library (callgrind; "
          "40 clips less 8, / 32):")
    print(f"  {'':34s}" + "".join(f"{label:>16s}" for label in figures))
    for name in names:
        if max(abs(f.get(name, 0.0)) for f in figures.values()) >= 5_000:
            print(f"  {name[:34]:34s}" + "".join(f"{f.get(name, 0.0) / 1e6:14.3f} M" for f in figures.values()))
    print(f"  {'total':34s}" + "".join(f"{sum(f.values()) / 1e6:14.3f} M" for f in figures.values()))


if __name__ == "__main__":
    sys.exit(main())
