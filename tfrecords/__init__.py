"""Sharded TFRecord episode datasets: the schema, crash-safe writers and tf.data readers.

``frames_dataset``, ``sequence_dataset``, ``episodes_dataset`` and ``list_shards`` are the
public readers (imported lazily, so ``tfrecords.schema`` alone does not load TensorFlow).

This is the lowest layer: it imports nothing from ``data_gen`` or ``wm``, and it also holds what
every binary shares (``tfrecords.cli``: flags from configs, one-line errors; ``tfrecords.fileio``:
paths and atomic writes on any ``tf.io.gfile`` filesystem; ``tfrecords.errors``).
"""

import os as _os
import sys as _sys

from tfrecords import native_logs as _native_logs

# While Python locates a ``python -m`` module, sys.argv[0] is "-m": a binary of this project is
# starting (each package imports this one first). Its C++ log lines are filtered from here on
# (tfrecords.native_logs), before TensorFlow loads; its worker processes filter theirs too.
if (_sys.argv[:1] == ["-m"] or _os.environ.get(_native_logs.ENV) == "1") and _native_logs.wanted():
    _native_logs.install()
# The one place this is set: every package of the project imports this one before TensorFlow
# (and worker processes inherit the environment).
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TF_ENABLE_ONEDNN_OPTS is left to TensorFlow's own default (on for x86 CPUs with AVX-512
# VNNI/BF16 or AMX, off elsewhere). Forcing it on for AVX2-only CPUs trains V 5.7x faster there,
# but its convolutions then give results that depend on the batch they run in, so a resumed
# wm.collect no longer writes the uninterrupted run's bytes (BENCHMARKS.md, "oneDNN on AVX2-only
# CPUs"): it stays an opt-in for users who value the speed over bit-exact resumes.

_READERS = (
    "frames_dataset",
    "sequence_dataset",
    "episodes_dataset",
    "episode_records",
    "list_shards",
    "dataset_manifest",
    "shard_infos",
    "ShardError",
)


def __getattr__(name):
    if name in _READERS:
        from tfrecords import reader

        return getattr(reader, name)
    raise AttributeError(f"module 'tfrecords' has no attribute {name!r}")


__all__ = list(_READERS)
