"""The process environment every binary sets up before TensorFlow loads (called by ``tfrecords``)."""

from __future__ import annotations

import os
import sys

from tfrecords.runtime import native_logs

_done = False


def setup() -> None:
    """Filter TensorFlow's C++ log lines in binaries and set ``TF_CPP_MIN_LOG_LEVEL``; idempotent.

    While Python locates a ``python -m`` module, ``sys.argv[0]`` is ``"-m"``: a binary of this
    project is starting (each package imports ``tfrecords`` first). Its C++ log lines are
    filtered from here on (:mod:`tfrecords.runtime.native_logs`), before TensorFlow loads; its
    worker processes filter theirs too. ``TF_CPP_MIN_LOG_LEVEL`` is set here only, and worker
    processes inherit it.

    ``TF_ENABLE_ONEDNN_OPTS`` is left to TensorFlow's own default (on for x86 CPUs with AVX-512
    VNNI/BF16 or AMX, off elsewhere). Forcing it on for AVX2-only CPUs trains V 5.7x faster there,
    but its convolutions then give results that depend on the batch they run in, so a resumed
    wm.collect no longer writes the uninterrupted run's bytes (BENCHMARKS.md, "oneDNN on
    AVX2-only CPUs"): it stays an opt-in for users who value the speed over bit-exact resumes.
    """
    global _done
    if _done:
        return
    _done = True
    if (sys.argv[:1] == ["-m"] or os.environ.get(native_logs.ENV) == "1") and native_logs.wanted():
        native_logs.install()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
