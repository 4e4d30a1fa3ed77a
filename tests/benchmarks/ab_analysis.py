"""A/B check of the analysis: this tree's ``batchvid.media.analyse`` (and ``probe``) against
another tree's (main's, say) on a corpus of clips, field for field, floats to the last bit,
posters byte for byte, errors message for message.

Run: .venv/bin/python tests/benchmarks/ab_analysis.py --against /work/main [--cpu]

The corpus (written to a temporary directory): simulator clips of every look, pattern, a range
of sizes, rates, lengths and colours, with and without audio; PyAV-made H.264 clips (B-frames,
keyframe every N frames, full range, odd sizes, one frame, Matroska); and broken files
(truncated at several points, garbage, empty, audio only). Each tree analyses the corpus in a
subprocess of its own (``python -P`` with that tree first on the path), so neither sees the
other's modules. With ``--cpu``, each tree's CPU time for the corpus is printed too.
"""

from __future__ import annotations

import argparse
import pickle
import subprocess
import sys
import tempfile
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import av  # noqa: E402
import numpy as np  # noqa: E402

from batchvid.simulator.video import LOOKS, VideoSpec, render_video  # noqa: E402

# Run in each tree's subprocess: every clip's analysis and probes as plain, exact values.
_ANALYSE = r"""
import pickle, random, sys, time
from batchvid.media import analyse, probe
from batchvid.quality import check_quality

QC = [{"max_black_fraction": 0.5}, {"min_motion": 0.01}, {"max_frozen_fraction": 0.5},
      {"max_black_fraction": 0.0, "min_motion": 0.5, "max_frozen_fraction": 0.0}]

def exact(value):
    if isinstance(value, float):
        return value.hex()
    if isinstance(value, dict):
        return {key: exact(item) for key, item in value.items()}
    return value

def facts(info):
    q = info.quality
    fields = (info.codec, info.width, info.height, info.fps, info.frame_count, info.duration,
              info.has_audio, info.audio_codec)
    signals = None if q is None else (q.motion, q.black_fraction, q.frozen_fraction,
                                      q.luma_mean, q.frames_decoded, q.samples)
    return (exact(list(fields)), exact(list(signals)) if signals else None, exact(info.to_dict()),
            [check_quality(info.to_dict()["quality"], qc) for qc in QC])

def attempt(call):
    try:
        return call()
    except Exception as exc:
        return ("error", type(exc).__name__, str(exc))

paths = sys.argv[1:]
out = []
cpu = time.process_time()
for path in paths:
    one = attempt(lambda: (lambda a: (facts(a.info), a.poster))(analyse(path)))
    out.append(one)
cpu = time.process_time() - cpu
for path in paths:
    out.append(attempt(lambda: facts(probe(path))))
    out.append(attempt(lambda: facts(probe(path, quality=False))))

def analysed(path):
    return attempt(lambda: (lambda a: (facts(a.info), a.poster))(analyse(path)))

def extradata(path):
    try:
        data = open(path, "rb").read()
    except OSError:
        return b""
    at = data.find(b"avcC")
    return data[at : at + 80] if at >= 0 else b""

# Again, in orders where a decoder kept from one clip serves the next: each clip twice in a
# row; clips of the same parameter sets one after another; a shuffle. Results in clip order.
for path in paths:
    out.append(analysed(path))
    out.append(analysed(path))
for order in (sorted(range(len(paths)), key=lambda i: extradata(paths[i])),
              random.Random(12).sample(range(len(paths)), len(paths))):
    again = {}
    for i in order:
        again[i] = analysed(paths[i])
    out.extend(again[i] for i in range(len(paths)))
sys.stdout.buffer.write(pickle.dumps((out, cpu)))
"""


def corpus(root: Path) -> list[Path]:
    """Write the clips; return their paths."""
    paths: list[Path] = []

    def put(name: str, data: bytes) -> None:
        path = root / name
        path.write_bytes(data)
        paths.append(path)

    sizes = ((160, 90), (96, 64), (320, 180), (64, 64), (90, 160), (16, 16), (34, 18), (720, 406))
    rates = (8, 16, 24, 30)
    index = 0
    for look in LOOKS:
        for pattern in (0, 1):
            for width, height in sizes:
                for fps in rates:
                    seconds = (0.5, 1.0, 2.0, 0.1)[index % 4]
                    spec = VideoSpec(width, height, fps, seconds, index % 5 == 0, index % 16,
                                     pattern, look)
                    put(f"sim-{index:03d}.mp4", render_video(spec))
                    index += 1
    made = root / "made"
    made.mkdir()
    for kind in ("moving", "frozen", "black"):
        for frames, gop, preset, width, height in (
            (60, None, "ultrafast", 96, 64), (120, None, "veryfast", 96, 64),
            (300, None, "veryfast", 64, 48), (60, 5, "medium", 96, 64), (90, 10, "fast", 98, 54),
            (1, None, "ultrafast", 96, 64), (2, None, "veryfast", 96, 64),
            (33, None, "veryfast", 130, 66), (40, 1, "ultrafast", 50, 30),
        ):
            path = made / f"{kind}-{frames}-{gop}-{preset}-{width}x{height}.mp4"
            paths.append(make_clip(path, kind, frames, gop, preset, width, height))
    paths.append(make_clip(made / "odd-444.mp4", "moving", 50, None, "veryfast", 97, 55,
                           "yuv444p"))
    paths.append(make_clip(made / "moving.mkv", "moving", 45, None, "ultrafast", 96, 64))
    paths.append(make_clip(made / "bframes.mkv", "moving", 70, None, "veryfast", 96, 64))
    paths.append(make_clip(made / "full-range.mp4", "moving", 40, None, "medium", 96, 64,
                           "yuvj420p"))
    paths.append(make_clip(made / "full-range-frozen.mp4", "frozen", 40, 4, "medium", 96, 64,
                           "yuvj420p"))
    good = render_video(VideoSpec(160, 90, 30, 1.0, True, 3))
    bframes = (made / "moving-120-None-veryfast-96x64.mp4").read_bytes()
    for cut in (0, 8, 40, 200, len(good) // 3, len(good) // 2, len(good) - 200, len(good) - 1):
        put(f"cut-{cut}.mp4", good[:cut])
    for cut in (len(bframes) // 2, len(bframes) - 100):
        put(f"cut-bframes-{cut}.mp4", bframes[:cut])
    put("garbage.mp4", bytes(range(256)) * 40)
    put("garbage-ftyp.mp4", b"\0\0\0\x18ftypisom" + bytes(range(256)) * 40)
    put("text.txt", b"not a video\n")
    audio_only = render_video(VideoSpec(160, 90, 30, 1.0, True, 5))
    paths.append(_audio_only(root / "audio-only.mp4", audio_only))
    paths.append(root / "missing.mp4")
    return paths


def make_clip(path: Path, kind: str, frames: int, gop: int | None, preset: str, width: int,
              height: int, pix_fmt: str = "yuv420p") -> Path:
    """An H.264 clip: ``black``, ``frozen`` (noise, still) or ``moving`` (a bar crossing)."""
    rng = np.random.default_rng(1)
    still = rng.integers(40, 220, (height, width, 3), dtype=np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.codec_context.thread_count = 1
        stream.options = {"preset": preset, "crf": "23", **({"g": str(gop)} if gop else {})}
        for index in range(frames):
            if kind == "black":
                picture = np.zeros((height, width, 3), np.uint8)
            elif kind == "frozen":
                picture = still
            else:
                picture = np.full((height, width, 3), 90, np.uint8)
                x = (index * 7) % width
                picture[:, x : x + 12] = 255
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, 30)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def _audio_only(path: Path, source: bytes) -> Path:
    """The audio track of an MP4 ``source``, alone in an MP4 file."""
    src = path.with_suffix(".src.mp4")
    src.write_bytes(source)
    with av.open(str(src)) as inp, av.open(str(path), "w") as out:
        template = inp.streams.audio[0]
        stream = out.add_stream_from_template(template)
        for packet in inp.demux(template):
            if packet.dts is None:
                continue
            packet.stream = stream
            out.mux(packet)
    return path


def analysed(tree: Path, paths: list[Path]) -> tuple[list[object], float]:
    """``tree``'s results for ``paths`` and its CPU seconds for the analyses."""
    env = {"PYTHONPATH": str(tree), "OPENBLAS_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-P", "-c", _ANALYSE, *map(str, paths)],
                          env=env, capture_output=True, check=True)
    results, cpu = pickle.loads(done.stdout)
    return results, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--against", type=Path, required=True, help="the other tree (a checkout)")
    parser.add_argument("--cpu", action="store_true", help="print each tree's CPU for the corpus")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ab-analysis-") as tmp:
        paths = corpus(Path(tmp))
        ours, our_cpu = analysed(ROOT, paths)
        theirs, their_cpu = analysed(args.against.resolve(), paths)
    count = len(paths)
    names = [p.name for p in paths]
    names = names + [name for name in names for _ in "12"] * 2 + names * 2
    kinds = (["analyse"] * count + ["probe", "probe(quality=False)"] * count
             + ["analyse, first of two in a row", "analyse, second of two in a row"] * count
             + ["analyse, grouped by parameter sets"] * count + ["analyse, shuffled"] * count)
    differ = [(kind, name) for kind, name, a, b in zip(kinds, names, ours, theirs, strict=True)
              if a != b]
    errors = sum(1 for r in ours[: len(paths)] if isinstance(r, tuple) and r[:1] == ("error",))
    print(f"{len(paths)} files ({errors} that do not analyse): "
          f"{len(ours) - len(differ)} of {len(ours)} results equal")
    for kind, name in differ:
        print(f"  DIFFERS: {kind} {name}")
    if args.cpu:
        print(f"CPU for the corpus's analyses: this tree {our_cpu:.3f} s, "
              f"{args.against} {their_cpu:.3f} s")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
