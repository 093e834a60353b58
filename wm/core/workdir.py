"""The run directory every training stage shares: ``config.json``, ``metrics.jsonl``, ``checkpoints/``.

::

    WORKDIR/config.json        what kind of run this is and the settings it must keep (guarded)
    WORKDIR/metrics.jsonl      one JSON object per logged step or generation
    WORKDIR/checkpoints/       tf.train.CheckpointManager (V, M, PPO)
    WORKDIR/tensorboard/       summaries

Paths go through ``tfrecords.runtime.fileio``, so a workdir can be local or on any ``tf.io.gfile``
filesystem. Every failure a user can cause (a workdir of another kind or with other settings)
is a one-line :class:`~tfrecords.runtime.errors.UsageError`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from tfrecords.runtime import fileio
from tfrecords.runtime.errors import UsageError

CONFIG_NAME = "config.json"
METRICS_NAME = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"

# The binary that makes each kind of workdir, for messages.
MAKERS = {"vae": "train_vae", "mdnrnn": "train_mdnrnn", "controller": "train_controller"}


def read_config(workdir: str) -> dict | None:
    """The workdir's ``config.json``, or None if there is none."""
    return fileio.read_json(fileio.join(workdir, CONFIG_NAME))


def write_config(workdir: str, config: Mapping[str, Any]) -> None:
    """Writes ``config.json`` atomically (creating the workdir)."""
    fileio.makedirs(workdir)
    fileio.write_json_atomic(fileio.join(workdir, CONFIG_NAME), dict(config))


def _plain(x: Any) -> Any:
    """JSON round trip, so that tuples and lists, or numpy and Python numbers, compare equal."""
    return json.loads(json.dumps(x, default=str))


def guard(
    workdir: str,
    identity: Mapping[str, Any],
    keep: Mapping[str, Any],
    what: str,
    *,
    has_state: bool,
    per_key: str | None = None,
    not_what: str | None = None,
) -> dict | None:
    """Refuses a workdir made by another kind of run, or by this kind with other settings.

    Args:
      workdir: the run directory.
      identity: ``config.json`` entries that name the kind of run (``{"model": "vae"}``).
      keep: entries a resumed run must share with the one it continues (architecture, spec,
        the V and M it was trained on).
      what: the kind of run in messages ("vae", "controller", "PPO controller").
      has_state: whether the workdir already holds checkpoints or state (refused without a config).
      per_key: the one entry of ``keep`` whose dict is compared key by key in the message
        ("arch": "z_size: 32 there, 16 now"); otherwise whole entries are named.
      not_what: how a foreign workdir's message names the expected kind (default: "a WHAT").

    Returns the old config, or None for a new workdir. Raises UsageError (one line).
    """
    old = read_config(workdir)
    if old is None:
        if has_state:
            raise UsageError(f"{workdir} holds checkpoints or state but no {CONFIG_NAME}; choose another --workdir")
        return None
    if any(old.get(k) != v for k, v in identity.items()):
        found = old.get("model")
        if "algorithm" in identity or "algorithm" in old:
            found = f"{found!r} run ({old.get('algorithm')})"
        else:
            found = f"{found!r} run"
        not_what = not_what or f"{'an' if what[0] in 'aeiou' else 'a'} {what}"
        raise UsageError(f"{workdir} holds a {found}, not {not_what}; choose another --workdir")
    if per_key is not None:
        a, b = _plain(old.get(per_key)) or {}, _plain(keep[per_key]) or {}
        diff = ", ".join(
            f"{k}: {a.get(k)!r} there, {b.get(k)!r} now" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)
        )
        if diff:
            raise UsageError(
                f"{workdir} holds a {what} run with another architecture ({diff}); choose another --workdir"
            )
    changed = [k for k in keep if k != per_key and _plain(old.get(k)) != _plain(keep[k])]
    if changed:
        detail = ", ".join(f"{k}: {old.get(k)!r} there, {keep[k]!r} now" for k in changed)
        raise UsageError(f"{workdir} holds a {what} run with other settings ({detail}); choose another --workdir")
    return old


def require(workdir: str, model: str) -> dict:
    """The config of a finished-enough workdir of ``model`` ("vae", "mdnrnn"); UsageError otherwise."""
    config = read_config(workdir)
    if not config or config.get("model") != model:
        found = f"a {config.get('model')!r} run" if config else f"no {CONFIG_NAME}"
        raise UsageError(f"{workdir} is not a {MAKERS.get(model, model)} workdir ({found})")
    return config


# ---------------------------------------------------------------- metrics.jsonl


class MetricsLog:
    """``WORKDIR/metrics.jsonl``: one JSON object per line, appended as a run goes.

    Reading is tolerant: a line cut short by a kill is skipped. On resume, :meth:`keep_only`
    rewrites the file with exactly the entries of the work that was checkpointed.
    """

    def __init__(self, workdir: str):
        self.path = fileio.join(workdir, METRICS_NAME)

    def read(self) -> list[dict]:
        """Every complete entry, in order."""
        data = fileio.read_bytes(self.path)
        if data is None:
            return []
        out = []
        for line in data.decode("utf-8", errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict):
                out.append(entry)
        return out

    def keep_only(self, keep: Callable[[dict], bool]) -> list[dict]:
        """Rewrites the file (atomically) with the entries ``keep`` accepts; returns them."""
        entries = self.read()
        kept = [e for e in entries if keep(e)]
        if kept != entries:
            self.rewrite(kept)
        return kept

    def rewrite(self, entries: list[dict]) -> None:
        """Replaces the file's contents with ``entries`` (atomically)."""
        fileio.write_text_atomic(self.path, "".join(json.dumps(e, sort_keys=True) + "\n" for e in entries))

    def write(self, entry: Mapping[str, Any]) -> None:
        """Appends one entry."""
        fileio.append_text(self.path, json.dumps(dict(entry), sort_keys=True) + "\n")


def read_metrics(workdir: str) -> list[dict]:
    """All complete entries of ``WORKDIR/metrics.jsonl`` (for tests, plots and the report)."""
    return MetricsLog(workdir).read()


# ---------------------------------------------------------------- checkpoints


def checkpoint_dir(workdir: str) -> str:
    """``WORKDIR/checkpoints``."""
    return fileio.join(workdir, CHECKPOINT_DIR)


def latest_checkpoint(workdir: str) -> str | None:
    """The newest checkpoint prefix in ``WORKDIR/checkpoints``, or None."""
    import tensorflow as tf

    return tf.train.latest_checkpoint(checkpoint_dir(workdir))


def restore_model(workdir: str, model: Any) -> int:
    """Loads the model weights of the newest checkpoint in ``workdir``; returns its step.

    Raises UsageError if there is no checkpoint.
    """
    import tensorflow as tf

    path = latest_checkpoint(workdir)
    if not path:
        raise UsageError(f"{workdir} has no checkpoint in {CHECKPOINT_DIR}/; train first")
    step = tf.Variable(0, dtype=tf.int64)
    tf.train.Checkpoint(step=step, model=model).restore(path).expect_partial().assert_existing_objects_matched()
    return int(step.numpy())
