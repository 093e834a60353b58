"""The expected failures every layer reports as one line and exit status 2 (importable without TensorFlow).

:class:`OneLineError` is the base: ``tfrecords.runtime.cli.run_main`` prints any subclass as
``PROG: error: MESSAGE`` and exits 2, and lets every other exception through with its traceback
(a bug or an environment problem worth seeing). Higher layers subclass it for their own expected
failures (``data_gen.envpool.PoolError``, ``wm.training.supervised.DivergedError``, the readers'
``tfrecords.ShardError``).
"""


class OneLineError(Exception):
    """An expected failure whose message is one complete line for the user."""


class UsageError(OneLineError, ValueError):
    """Bad flags or inputs: reported as one line, exit code 2, nothing touched."""


class RunMismatchError(OneLineError, RuntimeError):
    """The output directory holds data from a run with different settings."""
