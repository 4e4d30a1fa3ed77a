"""An analysis worker process's side (``batchvid.media_pool.AnalysisPool`` starts it): read lists
of paths, analyse each (``batchvid.media.analyse``), send back the results as plain values.
Imported only by the workers, which load PyAV and numpy; the run's process never does."""

from __future__ import annotations

import os
import pickle
import signal
import sys
import time
from typing import Any

from batchvid.media import Analysis, analyse
from batchvid.media_pool import HEADER


def serve() -> None:
    """A worker's loop (``_Worker``): analyse each path read from stdin until it closes.
    PyAV and numpy are loaded first, so a worker started early is ready for its first clip."""
    import av.video.reformatter  # noqa: F401
    import numpy  # noqa: F401

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    requests = sys.stdin.buffer
    # Replies go to a copy of stdout; stdout itself becomes stderr, so that nothing printed,
    # by Python or by FFmpeg, can corrupt them.
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    while True:
        try:
            paths = pickle.load(requests)
        except EOFError:
            return
        data = pickle.dumps([_served(path) for path in paths], pickle.HIGHEST_PROTOCOL)
        replies.write(HEADER.pack(len(data)) + data)
        replies.flush()


def _served(path: str) -> tuple[bool, Any, float]:
    """A worker's reply for ``path``: ``(True, the _packed analysis, CPU seconds)``, or its
    error in place of the analysis, as an error that pickles."""
    cpu = time.process_time()
    try:
        return (True, _packed(analyse(path)), time.process_time() - cpu)
    except Exception as exc:  # every error goes back to the caller
        error: Exception = exc
    try:
        pickle.dumps(error, pickle.HIGHEST_PROTOCOL)
    except Exception as unpicklable:  # an error that does not pickle
        error = RuntimeError(f"{error!r} ({unpicklable})")
    return (False, error, time.process_time() - cpu)


def _packed(analysis: Analysis) -> tuple[Any, ...]:
    """``analysis`` as plain values, the form a worker sends it in: pickled and read back in
    ~10 us, against ~28 us for the dataclasses (whose pickling runs Python code per object)."""
    info, quality = analysis.info, analysis.info.quality
    signals = None if quality is None else (
        quality.motion, quality.black_fraction, quality.frozen_fraction, quality.luma_mean,
        quality.frames_decoded, quality.samples,
    )
    return (
        analysis.poster, signals, info.codec, info.width, info.height, info.fps,
        info.frame_count, info.duration, info.has_audio, info.audio_codec,
    )
