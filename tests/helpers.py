"""Test-only helpers (some used to live in library modules) and settings that several test files share."""

from __future__ import annotations

import hashlib
import os
import signal
import time

import numpy as np

from wm.core.layout import Layout

# What the pipeline's smoke preset leaves in its workdir (besides pipeline.json and the controller's bookkeeping),
# relative to the workdir (the paths of a Layout of "").
_REL = Layout("")
SMOKE_OUTPUTS = (
    os.path.join(_REL.rollouts, "manifest.json"),
    os.path.join(_REL.vae_export, "encoder.keras"),
    os.path.join(_REL.series, "manifest.json"),
    os.path.join(_REL.mdnrnn, "config.json"),
    _REL.dream_gif,
    _REL.controller_params,
    _REL.evaluation_csv,
    _REL.report,
)

# A CMA-ES agent trained one generation of two candidates, one trial each, for the tests that need a trained
# controller. One central environment process: a worker process of --layout=workers starts TensorFlow and loads V
# and M (~4 s a run); the layouts are compared in tests/wm/test_workers.py and test_ray_workers.py.
TINY_AGENT = dict(
    popsize=2, trials=1, generations=1, workers=1, layout="central", max_steps=10, eval_every=0, progress=False
)

# The loop the train_vae and train_mdnrnn tests run: 5 steps a call, a log every 5 and a checkpoint every 10.
TRAIN_LOOP = dict(steps_per_loop=5, log_every=5, checkpoint_every=10, seed=0, progress=False)


def shard_digests(d) -> dict[str, str]:
    """{shard name: SHA-256} of the shards in ``d`` ({} if it is missing): byte-identical
    directories have equal digests. Compare these, never the bytes: on a failure pytest diffs the two
    sides, and with ``CI`` set (no truncation) a diff of two shards' bytes takes longer than the timeout."""
    d = str(d)
    from tfrecords.schema import SHARD_SUFFIX

    names = sorted(n for n in os.listdir(d) if n.endswith(SHARD_SUFFIX)) if os.path.isdir(d) else []
    return {n: file_digest(os.path.join(d, n)) for n in names}


def file_digest(path) -> str:
    """The SHA-256 of a file's bytes (see :func:`shard_digests`)."""
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def make_config(cls, defaults: dict, **overrides):
    """A config ``cls`` from a dict of (tiny) default settings with ``overrides`` replacing some of them."""
    return cls(**{**defaults, **overrides})


def world_config(cls, world: dict, workdir, defaults: dict, **overrides):
    """A controller-training config on the session's tiny V and M (``world``), writing to ``workdir``."""
    base = {"vae": world["vae"], "mdnrnn": world["mdnrnn"], "workdir": str(workdir), **defaults}
    return make_config(cls, base, **overrides)


def crash_worker(pool, w: int, timeout: float = 10.0) -> None:
    """Kills worker ``w`` of an EnvPool with SIGKILL (as a segfault would end it) and waits until it is gone."""
    pid = pool.pids[w]
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(")")[-1].split()[0] in ("Z", "X"):
                    return
        except FileNotFoundError:
            return
        time.sleep(0.01)
    raise TimeoutError(f"worker {w} (pid {pid}) did not die")


def act_reference(agent, frames, state, params):
    """The agent's step one environment at a time with NumPy control (the batched step's reference)."""
    import tensorflow as tf

    out_a, out_h, out_c = [], [], []
    for i in range(len(frames)):
        z, _ = agent.vae.encode(tf.constant(frames[i : i + 1]))
        z = z.numpy()
        feats = np.concatenate([z, state[0][i : i + 1]], -1) if agent.use_h else z
        a = agent.controller.act(params[i : i + 1], feats)
        h, (h, c) = agent.mdnrnn.cell(z, a, (state[0][i : i + 1], state[1][i : i + 1]))
        out_a.append(a[0])
        out_h.append(h.numpy()[0])
        out_c.append(c.numpy()[0])
    return np.stack(out_a), (np.stack(out_h), np.stack(out_c))


def interrupt_on_call(monkeypatch, owner, name: str, n: int) -> None:
    """Makes the ``n``-th call of ``owner.name`` raise KeyboardInterrupt (a Ctrl-C landing there); the
    calls before it run as usual. ``monkeypatch.undo()`` restores it."""
    real, calls = getattr(owner, name), {"n": 0}

    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapper)
