"""How every binary is written: flags generated from a config dataclass, one-line errors, exit codes.

A binary declares its settings once, as a dataclass whose fields carry their help, choices and
bounds (:func:`option`)::

    @dataclasses.dataclass
    class EncodeConfig:
        vae: str = option(help="A train_vae workdir.", required=True)
        batch_size: int = option(1000, help="Frames per encoder call.", min=1)

    def run(cfg: EncodeConfig) -> dict:
        check(cfg)          # bounds, choices, required fields: one line each
        ...                 # the binary's own cross-field checks, then the work

    if __name__ == "__main__":
        run_binary(EncodeConfig, run, "encode")

:func:`run_binary` defines the absl flags from the fields (name, default, help, enum choices),
parses the command line, builds the config, calls ``run`` and turns expected failures into one
line and exit status 2 (:func:`run_main`). Tests and the pipeline call ``run(config)`` directly;
``wm.pipeline``'s ``--set=STAGE.FLAG=VALUE`` parses values with :func:`parse_value`, so the same
metadata types and checks them.

This module sits in the lowest layer (``tfrecords``) because ``tfrecords.inspect`` is a binary
too; it imports nothing from ``data_gen`` or ``wm`` and does not import TensorFlow.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import signal
import sys
import threading
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NoReturn

from tfrecords.runtime.errors import OneLineError, UsageError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143

__all__ = [
    "EXIT_INTERRUPTED",
    "EXIT_USAGE",
    "UsageError",
    "check",
    "config_from_flags",
    "define_flags",
    "flags_parser",
    "option",
    "parse_value",
    "run_binary",
    "run_main",
    "shard_error_line",
    "stop_signals",
    "Terminated",
]


# ---------------------------------------------------------------- declaring settings


def option(
    default: Any = dataclasses.MISSING,
    *,
    help: str,  # the absl and argparse name
    choices: Sequence[Any] | Callable[[], Sequence[Any]] | None = None,
    min: float | None = None,
    max: float | None = None,
    above: float | None = None,
    required: bool = False,
    flag: str | None = None,
    default_factory: Callable[[], Any] | Any = dataclasses.MISSING,
) -> Any:
    """A dataclass field that is also a command-line flag.

    Args:
      default: the default of the field and of its flag. Required string fields default to "".
      help: the flag's help text.
      choices: the allowed values (or a function returning them, for registries filled at import);
        ``--help`` lists them.
      min, max: inclusive bounds; ``above``: an exclusive lower bound (``above=0``: positive).
      required: the value must not be empty.
      flag: the flag's name when it differs from the field's (``--set`` for ``overrides``).
      default_factory: as in ``dataclasses.field`` (a list field's default).
    """
    meta = {
        "help": help,
        "choices": choices,
        "min": min,
        "max": max,
        "above": above,
        "required": required,
        "flag": flag,
    }
    if default is dataclasses.MISSING and default_factory is dataclasses.MISSING:
        default = "" if required else dataclasses.MISSING
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _choices(f: dataclasses.Field) -> tuple | None:
    c = f.metadata.get("choices")
    if c is None:
        return None
    return tuple(c() if callable(c) else c)


def _flag_name(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or f.name


def _base_type(hint: Any) -> Any:
    """``int | None`` -> int; ``list[str]`` -> list."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    origin = typing.get_origin(hint)
    if origin in (list, tuple):
        return list
    if args and origin is not None:
        return _base_type(args[0])
    return hint


def _options(config_cls: type) -> list[tuple[dataclasses.Field, Any]]:
    hints = typing.get_type_hints(config_cls)
    return [(f, _base_type(hints[f.name])) for f in dataclasses.fields(config_cls) if "help" in f.metadata]


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


# ---------------------------------------------------------------- checking


def _bound_error(name: str, value: Any, meta: Mapping[str, Any]) -> str | None:
    lo, hi, above = meta.get("min"), meta.get("max"), meta.get("above")
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if value != value or value in (float("inf"), float("-inf")):  # NaN or inf
        return f"--{name} must be finite, got {value}"
    if above is not None and not value > above:
        return f"--{name} must be {'positive' if above == 0 else f'> {above}'}, got {value}"
    if lo is not None and value < lo:
        if hi is not None:
            return f"--{name} must be in [{lo}, {hi}], got {value}"
        return f"--{name} must be {'positive' if lo == 1 and isinstance(value, int) else f'at least {lo}'}, got {value}"
    if hi is not None and value > hi:
        return f"--{name} must be {f'in [{lo}, {hi}]' if lo is not None else f'<= {hi}'}, got {value}"
    return None


def check(cfg: Any) -> None:
    """The generic checks of a config built from :func:`option` fields: required values, choices
    and bounds, in field order. Raises UsageError with one line for the first failure."""
    for f in dataclasses.fields(cfg):
        if "help" not in f.metadata:
            continue
        value, name = getattr(cfg, f.name), _flag_name(f)
        if f.metadata.get("required") and not value:
            raise UsageError(f"--{name} is required")
        choices = _choices(f)
        if choices is not None and value not in choices and not (value == "" and "" == _default(f)):
            raise UsageError(f"--{name} must be one of {', '.join(map(str, choices))}, got {value!r}")
        err = _bound_error(name, value, f.metadata)
        if err:
            raise UsageError(err)


def parse_value(config_cls: type, field_name: str, raw: str) -> Any:
    """A flag's text value typed (and its choices and bounds checked) as the config field says;
    UsageError naming the field otherwise. Used by ``wm.pipeline --set``."""
    fields = {f.name: (f, t) for f, t in _options(config_cls)}
    if field_name not in fields:
        raise UsageError(f"has no flag {field_name!r}; it has: {', '.join(sorted(fields))}")
    f, base = fields[field_name]
    try:
        if base is bool:
            if raw.lower() not in ("true", "false", "1", "0"):
                raise ValueError
            value: Any = raw.lower() in ("true", "1")
        elif base is int:
            value = int(raw)
        elif base is float:
            value = float(raw)
        elif base is list:
            value = [x for x in raw.split(",") if x]
        else:
            value = raw
    except ValueError:
        raise UsageError(f"{field_name}={raw!r} is not a valid {getattr(base, '__name__', base)}") from None
    choices = _choices(f)
    if choices is not None and value not in choices:
        raise UsageError(f"{field_name} must be one of {', '.join(map(str, choices))}, got {value!r}")
    err = _bound_error(field_name, value, f.metadata)
    if err:
        raise UsageError(err)
    return value


# ---------------------------------------------------------------- flags


def define_flags(config_cls: type, flag_values: Any = None) -> None:
    """Defines one absl flag per :func:`option` field of ``config_cls`` (call only under ``__main__``,
    so that several binaries can be imported into one process)."""
    from absl import flags

    fv = flags.FLAGS if flag_values is None else flag_values
    kw: dict[str, Any] = {"flag_values": fv, "module_name": sys.argv[0]}  # absl's --help lists the main module's flags
    for f, base in _options(config_cls):
        name, help_, default = _flag_name(f), f.metadata["help"], _default(f)
        if f.metadata.get("required"):
            default = None
        choices = _choices(f)
        if base is bool:
            flags.DEFINE_bool(name, default, help_, **kw)
        elif base is int:
            flags.DEFINE_integer(name, default, help_, **kw)
        elif base is float:
            flags.DEFINE_float(name, default, help_, **kw)
        elif base is list:
            flags.DEFINE_multi_string(name, default, help_, **kw)
        else:  # choices are checked by check(), so a bad value is one line and exit 2, like every bad flag
            if choices is not None:
                help_ = f"<{'|'.join(map(str, choices))}>: {help_}"
            flags.DEFINE_string(name, default, help_, **kw)


def config_from_flags(config_cls: type, flag_values: Any = None) -> Any:
    """The config dataclass built from parsed absl flags (an unset required flag gives "")."""
    from absl import flags

    fv = flags.FLAGS if flag_values is None else flag_values
    values = {}
    for f, base in _options(config_cls):
        v = getattr(fv, _flag_name(f))
        if f.metadata.get("required") and v is None:
            v = ""
        if base is list:
            v = list(v or [])
        values[f.name] = v
    return config_cls(**values)


def run_binary(config_cls: type, run: Callable[[Any], object], prog: str, lock: bool = True) -> None:
    """The whole ``__main__`` of a binary: flags from ``config_cls``, parse, :func:`check`, ``run(config)``, exit.

    With ``lock``, ``run`` holds the lock of the directories the config writes into (its ``--workdir``
    or ``--out_dir``, :mod:`tfrecords.runtime.lock`): a second run on one of them is refused at once."""
    from absl import app

    from tfrecords.runtime import lock as lock_lib

    define_flags(config_cls)

    def main(argv: list[str]) -> None:
        def checked_run() -> object:
            if len(argv) > 1:
                raise UsageError(f"unexpected argument(s) {' '.join(argv[1:])}: every setting is a --flag")
            cfg = config_from_flags(config_cls)
            check(cfg)
            with stop_signals():  # SIGTERM stops every binary like Ctrl-C: one line, exit 143, resumable
                with lock_lib.hold(lock_lib.locked_dirs(cfg) if lock else [], prog):
                    return run(cfg)

        run_main(checked_run, prog)

    app.run(main, flags_parser=flags_parser(prog))


def flags_parser(prog: str) -> Callable[[list[str]], list[str]]:
    """absl's flag parsing for ``app.run(main, flags_parser=...)`` under the binaries' contract: a command
    line absl cannot parse (an unknown flag, a malformed value) is one line ``PROG: error: ...`` and exit
    status 2, where absl's own parser prints two lines and exits with 1."""

    def parse(argv: list[str]) -> list[str]:
        from absl import flags

        try:
            return flags.FLAGS(argv)
        except flags.Error as e:
            _fail(f"{prog}: error: {' '.join(str(e).split())}")

    return parse


# ---------------------------------------------------------------- running


class Terminated(KeyboardInterrupt):
    """SIGTERM (how spot machines and TPU VMs are preempted), raised like Ctrl-C inside :func:`stop_signals`."""


@contextlib.contextmanager
def stop_signals() -> Iterator[None]:
    """While inside, SIGTERM raises :class:`Terminated` (a KeyboardInterrupt) as SIGINT raises
    KeyboardInterrupt, so that one ``except KeyboardInterrupt`` saves the work done for both.
    The previous handler comes back on exit. A no-op outside the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum: int, frame: Any) -> NoReturn:
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_main(fn: Callable[[], object], prog: str) -> None:
    """Calls ``fn`` and exits: 0 on success, 2 with ``prog: error: ...`` on an expected failure
    (:class:`~tfrecords.runtime.errors.OneLineError`, a missing file or permission), 130 on Ctrl-C, 143 on
    a SIGTERM caught by :func:`stop_signals`.

    Anything else propagates with its traceback, since it is a bug or an environment problem
    worth seeing.
    """
    from absl import flags, logging

    fv = flags.FLAGS
    if not (fv.is_parsed() and "verbosity" in fv and fv["verbosity"].present):
        logging.set_verbosity(logging.WARNING)  # absl's INFO default would print TensorFlow's chatter
    try:
        fn()
    except Terminated:
        print(f"{prog}: terminated; rerun the same command to resume", file=sys.stderr)
        sys.exit(EXIT_TERMINATED)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; rerun the same command to resume", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    except _expected_errors() as e:
        _fail(f"{prog}: error: {e}")
    except Exception as e:
        line = shard_error_line(e)
        if line is None:
            raise
        _fail(f"{prog}: error: {line}")
    sys.exit(0)


def _fail(line: str) -> NoReturn:
    """Prints the one line and exits with status 2 at once, skipping the interpreter's teardown.

    Tearing down after a failed input pipeline can deadlock: seen once in CI, a damaged shard's
    tf.data iterator waited forever in ParallelMap's destructor during finalization. Whatever the
    run finished is on disk already (every write is atomic), so nothing is lost.
    """
    print(line, file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_USAGE)


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
    errs: list[type[BaseException]] = [
        OneLineError,
        FileNotFoundError,
        PermissionError,
        IsADirectoryError,
        NotADirectoryError,
    ]
    tf = sys.modules.get("tensorflow")
    if tf is not None:
        errs += [tf.errors.PermissionDeniedError, tf.errors.NotFoundError]
    return tuple(errs)
