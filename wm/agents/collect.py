"""Rollouts played by a trained agent, in the public rollout format (for iterative training).

Exploration is **per-episode parameter noise**: episode i plays the agent's controller
parameters plus ``noise`` x N(0, I), drawn once per episode from the episode's own generator
(``data_gen.rollout.episode_seeds(seed, i)``, which also gives its track), so every episode is
a slightly different, consistent driver rather than one driver with jittery actions. ``noise=0``
records the agent itself. Steps are recorded as ``data_gen.generate`` stores them: ``frames[t]``
is the 64x64 frame the agent saw before ``actions[t]``; ``rewards[t]`` and ``terminals[t]``
follow that action; the observation after the last action is not stored
(:class:`wm.agents.recording.EpisodeCollector` assembles them).
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from data_gen import rollout
from tfrecords import schema, writer
from tfrecords.runtime import fileio
from wm.agents import loading


def episode_params(params: np.ndarray, noise: float, seed: int, index: int) -> tuple[int, np.ndarray]:
    """(environment seed, parameters [n]) of episode ``index``: the agent's parameters plus its own noise."""
    env_seed, rng = rollout.episode_seeds(seed, index)
    base = np.asarray(params, np.float32).reshape(-1)
    if noise:
        base = base + np.float32(noise) * rng.standard_normal(base.shape).astype(np.float32)
    return env_seed, base


def model_errors(mdnrnn: Any, z: np.ndarray, episode: schema.Episode) -> dict[str, float]:
    """How well M (before it trains on this data) predicts one real episode, from the agent's z's:
    ``z_nll`` of z_{t+1} (per dimension), ``reward_mse`` of its reward head, and ``return_error``,
    M's predicted return along the real trajectory minus the real return (what the dream's
    fitness gets wrong). Keys for heads M lacks are left out."""
    import tensorflow as tf

    from wm.models.mdnrnn import Mixture, mixture_log_prob

    x = tf.constant(np.concatenate([z, episode.actions], -1)[None], tf.float32)
    _, mix, extras = mdnrnn(x, training=False)
    out = {}
    if len(z) > 1:
        head = Mixture(*(t[:, :-1] for t in mix))
        out["z_nll"] = float(-tf.reduce_mean(mixture_log_prob(head, z[None, 1:])))
    if "reward" in extras:
        pred = extras["reward"].numpy()[0].astype(np.float64)
        out["reward_mse"] = float(np.mean((pred - episode.rewards) ** 2))
        out["return_error"] = float(pred.sum() - episode.total_reward)
    return out


# ------------------------------------------------------------ wm.collect's run: the policy record and the shards


def params_sha(agent_dir: str) -> str:
    """The first 16 hex digits of the SHA-256 of the agent's parameters file ("" without one)."""
    data = fileio.read_bytes(fileio.join(agent_dir, loading.PARAMS_NAME))
    return hashlib.sha256(data).hexdigest()[:16] if data is not None else ""


def agent_policy(agent_dir: str, algorithm: str, param_noise: float) -> dict[str, Any]:
    """The manifest's record of the policy that plays: the agent's workdir, its algorithm, the hash
    of its parameters and the per-episode parameter noise."""
    return {
        "kind": "agent",
        "agent": fileio.abspath(agent_dir),
        "algorithm": algorithm,
        "params_sha256": params_sha(agent_dir),
        "param_noise": param_noise,
    }


def episode_rows(
    params: np.ndarray, noise: float, seed: int, items: list[int]
) -> tuple[list[np.ndarray], dict[int, int]]:
    """(parameters [n] of every job, environment seed by job) for the jobs that play episodes
    ``items`` (job j plays episode ``items[j]``; :func:`episode_params`)."""
    rows, seeds = [], {}
    for job, index in enumerate(items):
        seeds[job], p = episode_params(params, noise, seed, index)
        rows.append(p)
    return rows, seeds


class PendingShards:
    """The shards still to write, filled episode by episode: a shard is written as soon as its last
    episode is in, M's errors so far first (``model_errors.json`` in the run's ``.incomplete``
    directory, read back on a rerun, so they survive a kill)."""

    def __init__(self, out_dir: str, pending: list[writer.ShardPlan], writer_name: str) -> None:
        self.out_dir, self.writer_name = out_dir, writer_name
        self.shard_of = {index: p for p in pending for index in p.items}
        self.done: dict[int, schema.Episode] = {}
        self.errors_path = fileio.join(out_dir, writer.INCOMPLETE_DIR, "model_errors.json")
        self.errors: dict[int, dict] = {int(k): v for k, v in (fileio.read_json(self.errors_path) or {}).items()}

    def add(self, index: int, episode: schema.Episode, errors: dict[str, float] | None = None) -> None:
        """Episode ``index`` is in (with M's errors on it, if any); writes its shard if that completes it."""
        self.done[index] = episode
        if errors is not None:
            self.errors[index] = errors
        plan = self.shard_of[index]
        if all(i in self.done for i in plan.items):
            fileio.write_json_atomic(self.errors_path, {str(k): v for k, v in sorted(self.errors.items())})
            writer.write_shard(self.out_dir, plan, [self.done.pop(i) for i in plan.items], writer=self.writer_name)

    def mean_errors(self) -> dict[str, float]:
        """M's errors on the run's episodes (those of earlier attempts too), averaged over episodes."""
        keys = sorted({k for e in self.errors.values() for k in e})
        return {k: float(np.mean([e[k] for e in self.errors.values() if k in e])) for k in keys}
