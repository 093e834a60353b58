"""Errors the data layer raises for bad data (importable without TensorFlow)."""


class ShardError(RuntimeError):
    """A shard is missing, truncated or corrupted."""


class RunMismatchError(RuntimeError):
    """The output directory holds data from a run with different settings."""
