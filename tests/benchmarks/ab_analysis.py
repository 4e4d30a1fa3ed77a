"""A/B check of the analysis: this tree's ``batchvid.media.analyse`` (and ``probe``) against
another tree's (main's, say) on a corpus of clips, field for field, floats to the last bit,
posters byte for byte, errors message for message.

Run: .venv/bin/python tests/benchmarks/ab_analysis.py --against /work/main [--cpu] [--bframes]

The corpus (written to a temporary directory): simulator clips of every look, pattern, a range
of sizes, rates, lengths and colours, with and without audio; PyAV-made H.264 clips (B-frames,
keyframe every N frames, full range, odd sizes, one frame, Matroska); and broken files
(truncated at several points, garbage, empty, audio only). Each tree analyses the corpus in a
subprocess of its own (``python -P`` with that tree first on the path), so neither sees the
other's modules. With ``--cpu``, each tree's CPU time for the corpus is printed too. With
``--bframes``, 49 H.264 clips with B-frames of many shapes (``bframe_corpus``) are added.
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


def bframe_corpus(root: Path) -> list[Path]:
    """H.264 clips with B-frames, of many shapes (``--bframes``): CogVideoX's sizes; reorder
    depths 1-16, pyramids, adaptive or fixed B-frames, open GOPs, interlaced coding (MBAFF),
    CAVLC, slices, in-band parameter sets, 4:4:4 and 4:2:2 at odd sizes, 10 bits, grey;
    Matroska and MOV; remuxed to start at a later keyframe of an open GOP (leading pictures
    shown before it), mid-GOP, or with presentation times equal to decoding times; cut short
    at points in their first packets; and HEVC with B-frames."""
    made = root / "bframes"
    made.mkdir()
    paths: list[Path] = []
    shapes: list[tuple[str, int, int, int, str, str]] = [
        ("cogvideox-720x480.mp4", 720, 480, 49, "yuv420p", "bframes=3"),
        ("cogvideox-1360x768.mp4", 1360, 768, 20, "yuv420p", "bframes=3"),
        ("yuvj420p.mp4", 160, 96, 30, "yuvj420p", "bframes=3"),
        ("odd-444.mp4", 97, 55, 30, "yuv444p", "bframes=3"),
        ("odd-422.mp4", 98, 54, 30, "yuv422p", "bframes=2"),
        ("tenbit.mp4", 160, 96, 30, "yuv420p10le", "bframes=3"),
        ("grey.mp4", 160, 96, 30, "gray", "bframes=3"),
        ("bframes.mkv", 160, 96, 40, "yuv420p", "bframes=3"),
        ("bframes.mov", 160, 96, 40, "yuv420p", "bframes=3"),
    ]
    for depth in (1, 2, 3, 8, 16):
        for pyramid in ("none", "normal", "strict"):
            shapes.append((f"b{depth}-{pyramid}.mp4", 160, 96, 40, "yuv420p",
                           f"bframes={depth}:b-pyramid={pyramid}:b-adapt=0:ref={min(depth + 1, 16)}"))
    for name, params in (
        ("adaptive.mp4", "bframes=16:b-adapt=2"), ("open-gop.mp4", "bframes=3:keyint=12:open-gop=1"),
        ("mbaff-tff.mp4", "bframes=3:interlaced=1:tff=1"), ("mbaff-bff.mp4", "bframes=3:interlaced=1:bff=1"),
        ("fake-interlaced.mp4", "bframes=3:fake-interlaced=1"), ("cavlc.mp4", "bframes=3:cabac=0:weightb=0"),
        ("slices.mp4", "bframes=3:slices=4"), ("inband.mp4", "bframes=3:keyint=10:repeat-headers=1:aud=1"),
        ("keyint-1.mp4", "bframes=3:keyint=1"), ("short-gop.mp4", "bframes=3:keyint=4:min-keyint=4"),
    ):
        shapes.append((name, 160, 96, 40, "yuv420p", params))
    for name, width, height, frames, pix_fmt, params in shapes:
        paths.append(_encoded(made / name, width, height, frames, pix_fmt, "libx264", params))
    for frames in (1, 2, 3):
        paths.append(_encoded(made / f"frames-{frames}.mp4", 160, 96, frames, "yuv420p", "libx264", "bframes=3"))
    paths.append(_encoded(made / "hevc.mp4", 160, 96, 30, "yuv420p", "libx265", "bframes=4:log-level=none"))
    gop = made / "open-gop.mp4"
    paths.append(_remuxed(gop, made / "from-second-keyframe.mp4", skip_keyframes=1))
    paths.append(_remuxed(gop, made / "leading-pictures.mp4", skip_keyframes=2))  # shown before it
    paths.append(_remuxed(gop, made / "mid-gop.mp4", skip_packets=5))
    paths.append(_remuxed(made / "b3-normal.mp4", made / "pts-as-dts.mp4", pts_as_dts=True))
    paths.append(_remuxed(made / "b8-strict.mp4", made / "b8-strict.mkv"))
    whole = _encoded(made / "faststart.mp4", 160, 96, 30, "yuv420p", "libx264", "bframes=3", faststart=True)
    paths.append(whole)
    data = whole.read_bytes()
    mdat = data.index(b"mdat")
    for cut in (mdat + 100, mdat + 600, mdat + 1500, mdat + 3000, (mdat + len(data)) // 2):
        clip = made / f"faststart-cut-{cut}.mp4"
        clip.write_bytes(data[:cut])
        paths.append(clip)
    return paths


def _encoded(path: Path, width: int, height: int, frames: int, pix_fmt: str, codec: str, params: str,
             *, faststart: bool = False) -> Path:
    """A clip of a moving gradient and bar, ``codec`` with its ``params``."""
    options = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream(codec, rate=16)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.codec_context.thread_count = 1
        key = "x265-params" if codec == "libx265" else "x264-params"
        stream.options = {"preset": "veryfast", key: params}
        rows, columns = np.mgrid[0:height, 0:width]
        for index in range(frames):
            picture = np.stack([(columns * 3 + index * 7) % 256, (rows * 2 + index * 5) % 256,
                                ((columns + rows) // 2 + index * 11) % 256], -1).astype(np.uint8)
            x = (index * 9) % width
            picture[:, x : x + 10] = 255
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, 16)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def _remuxed(source: Path, path: Path, *, skip_keyframes: int = 0, skip_packets: int = 0,
             pts_as_dts: bool = False) -> Path:
    """``source``'s video packets in another file: from its ``skip_keyframes``-th keyframe after
    the first on, or without its first ``skip_packets``, or with each packet's presentation
    time set to its decoding time."""
    with av.open(str(source)) as inp, av.open(str(path), "w") as out:
        template = inp.streams.video[0]
        stream = out.add_stream_from_template(template)
        keyframes = skipped = 0
        for packet in inp.demux(template):
            if packet.dts is None:
                continue
            keyframes += packet.is_keyframe
            skipped += 1
            if keyframes <= skip_keyframes or skipped <= skip_packets:
                continue
            if pts_as_dts:
                packet.pts = packet.dts
            packet.stream = stream
            out.mux(packet)
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
    parser.add_argument("--bframes", action="store_true",
                        help="add H.264 clips with B-frames of many shapes (bframe_corpus) to the corpus")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ab-analysis-") as tmp:
        paths = corpus(Path(tmp)) + (bframe_corpus(Path(tmp)) if args.bframes else [])
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
