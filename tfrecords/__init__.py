"""Sharded TFRecord episode datasets: the schema, crash-safe writers and tf.data readers.

``frames_dataset``, ``sequence_dataset``, ``episodes_dataset`` and ``list_shards`` are the
public readers (imported lazily, so ``tfrecords.schema`` alone does not load TensorFlow).

This is the lowest layer: it imports nothing from ``data_gen`` or ``wm``. What every binary
shares (flags from configs, one-line errors, file I/O, locks, the process environment) is in its
subpackage ``tfrecords.runtime``.
"""

from typing import Any

from tfrecords.runtime import tf_env as _tf_env

# Every package of the project imports this one first, before TensorFlow loads.
_tf_env.setup()

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


def __getattr__(name: str) -> Any:
    if name in _READERS:
        from tfrecords import reader

        return getattr(reader, name)
    raise AttributeError(f"module 'tfrecords' has no attribute {name!r}")


__all__ = list(_READERS)
