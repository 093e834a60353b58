"""Sharded TFRecord episode datasets: the schema, crash-safe writers and tf.data readers.

``frames_dataset``, ``sequence_dataset``, ``episodes_dataset`` and ``list_shards`` are the
public readers (imported lazily, so ``tfrecords.schema`` alone does not load TensorFlow).

This is the lowest layer: it imports nothing from ``data_gen`` or ``wm``, and it also holds what
every binary shares (``tfrecords.cli``: flags from configs, one-line errors; ``tfrecords.fileio``:
paths and atomic writes on any ``tf.io.gfile`` filesystem; ``tfrecords.errors``).
"""

import os as _os
import platform as _platform

# The one place these are set: every package of the project imports this one before TensorFlow
# (and worker processes inherit the environment).
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TensorFlow turns oneDNN on by default only on x86 CPUs with AVX-512 VNNI/BF16 or AMX; on
# AVX2-only x86 CPUs (AMD EPYC Zen 3, many cloud VMs) its own kernels train V 5.7x and M 1.8x
# slower (BENCHMARKS.md, "oneDNN on AVX2-only CPUs"). An explicit TF_ENABLE_ONEDNN_OPTS wins.
if _platform.machine().lower() in ("x86_64", "amd64"):
    _os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

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
