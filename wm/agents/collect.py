"""Rollouts played by a trained agent, in the public rollout format (for iterative training).

Exploration is **per-episode parameter noise**: episode i plays the agent's controller
parameters plus ``noise`` x N(0, I), drawn once per episode from the episode's own generator
(``data_gen.rollout.episode_seeds(seed, i)``, which also gives its track), so every episode is
a slightly different, consistent driver rather than one driver with jittery actions. ``noise=0``
records the agent itself. Steps are recorded as ``data_gen.generate`` stores them: ``frames[t]``
is the 64x64 frame the agent saw before ``actions[t]``; ``rewards[t]`` and ``terminals[t]``
follow that action; the observation after the last action is not stored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from data_gen import rollout
from tfrecords import schema


def episode_params(params: np.ndarray, noise: float, seed: int, index: int) -> tuple[int, np.ndarray]:
    """(environment seed, parameters [n]) of episode ``index``: the agent's parameters plus its own noise."""
    env_seed, rng = rollout.episode_seeds(seed, index)
    base = np.asarray(params, np.float32).reshape(-1)
    if noise:
        base = base + np.float32(noise) * rng.standard_normal(base.shape).astype(np.float32)
    return env_seed, base


class EpisodeRecorder:
    """Assembles whole episodes from ``run_episodes``' ``on_step`` and hands each to ``on_episode(job,
    episode, z)``, z [T, Z] being the agent's z_t (V's mean) at every step.

    ``seeds`` maps a job to its environment seed (stored with the episode). An episode ends at
    termination, truncation or ``max_steps``; a job restarted after a lost worker starts over. The
    runners use it through :class:`wm.agents.recording.EpisodeCollector` (``record_kind="episode"``).
    """

    def __init__(
        self, seeds: dict[int, int], max_steps: int, on_episode: Callable[[int, schema.Episode, np.ndarray], None]
    ):
        self.seeds, self.max_steps, self.on_episode = seeds, max_steps, on_episode
        self.open: dict[int, dict[str, list]] = {}

    def on_step(
        self,
        steps: dict[int, Any],
        actions: dict[int, np.ndarray],
        zs: dict[int, np.ndarray],
        slot_jobs: dict[int, int],
    ) -> None:
        """``run_episodes``' ``on_step`` callback (``steps``: slot -> ``data_gen.envpool.Step``)."""
        for s, st in steps.items():
            job = slot_jobs[s]
            if s not in actions:  # the first frame (also of a restarted job)
                self.open[job] = {k: [] for k in ("z", "actions", "rewards", "terminals")}
                self.open[job]["frames"] = [np.array(st.frame)]
                continue
            rec = self.open[job]
            rec["actions"].append(np.array(actions[s], np.float32))  # copies, whatever the caller reuses
            rec["z"].append(np.array(zs[s], np.float32))
            rec["rewards"].append(st.reward)
            rec["terminals"].append(int(st.terminated))
            if st.terminated or st.truncated or len(rec["actions"]) >= self.max_steps:
                del self.open[job]
                n = len(rec["actions"])
                self.on_episode(
                    job,
                    schema.Episode(
                        actions=np.stack(rec["actions"]).astype(np.float32),
                        rewards=np.asarray(rec["rewards"], np.float32),
                        terminals=np.asarray(rec["terminals"], np.int64),
                        seed=self.seeds[job],
                        frames=np.stack(rec["frames"][:n]),
                    ),
                    np.stack(rec["z"]),
                )
            else:
                rec["frames"].append(np.array(st.frame))


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
