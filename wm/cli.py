"""What every binary shares: turning expected failures into one clear line and a non-zero exit."""

from __future__ import annotations

import json
import re
import sys
from typing import Callable

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(ValueError):
    """Bad flags or inputs: reported as one line, exit code 2, nothing touched."""


def run_main(fn: Callable[[], object], prog: str) -> None:
    """Calls ``fn`` and exits: 0 on success, 2 with ``prog: error: ...`` on bad input, 130 on Ctrl-C.

    Expected failures (bad flags, missing or foreign data) print one line; anything else
    propagates with its traceback, since it is a bug or an environment problem worth seeing.
    """
    from absl import logging

    logging.set_verbosity(logging.WARNING)  # absl's INFO default would print TensorFlow's chatter
    try:
        fn()
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; rerun the same command to resume", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    except _expected_errors() as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    except Exception as e:
        line = shard_error_line(e)
        if line is None:
            raise
        print(f"{prog}: error: {line}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    sys.exit(0)


def shard_error_line(error: BaseException) -> str | None:
    """The one-line ShardError inside a TensorFlow error raised by an input pipeline, if there is one.

    Errors raised in a ``from_generator`` reader reach the caller as ``tf.errors.UnknownError``
    whose message embeds the original ``ShardError: ...`` line and a Python traceback.
    """
    tf = sys.modules.get("tensorflow")
    if tf is None or not isinstance(error, tf.errors.OpError):
        return None
    m = re.search(r"ShardError: ([^\n]+)", error.message)
    return m.group(1).strip() if m else None


def _expected_errors() -> tuple[type[BaseException], ...]:
    from tfrecords.errors import RunMismatchError, ShardError
    from wm.envpool import PoolError

    errs: list[type[BaseException]] = [UsageError, RunMismatchError, ShardError, PoolError, FileNotFoundError, PermissionError]
    tf = sys.modules.get("tensorflow")
    if tf is not None:
        errs += [tf.errors.PermissionDeniedError, tf.errors.NotFoundError]
    return tuple(errs)


def to_json(obj: object) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, default=str)
