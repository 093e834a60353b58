"""Sharded TFRecord episode datasets: the schema, crash-safe writers and tf.data readers.

``frames_dataset``, ``sequence_dataset``, ``episodes_dataset`` and ``list_shards`` are the
public readers (imported lazily, so ``tfrecords.schema`` alone does not load TensorFlow).
"""

_READERS = ("frames_dataset", "sequence_dataset", "episodes_dataset", "episode_records", "list_shards", "dataset_manifest", "ShardError")


def __getattr__(name):
    if name in _READERS:
        from tfrecords import reader

        return getattr(reader, name)
    raise AttributeError(f"module 'tfrecords' has no attribute {name!r}")


__all__ = list(_READERS)
