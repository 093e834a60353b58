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
    """Assembles whole episodes from ``run_episodes``' ``on_step`` and hands each to ``on_episode``.

    ``seeds`` maps a job to its environment seed (stored with the episode). An episode ends at
    termination, truncation or ``max_steps``; a job restarted after a lost worker starts over.
    """

    def __init__(self, seeds: dict[int, int], max_steps: int, on_episode: Callable[[int, schema.Episode], None]):
        self.seeds, self.max_steps, self.on_episode = seeds, max_steps, on_episode
        self.open: dict[int, dict[str, list]] = {}

    def on_step(self, steps, actions, zs, slot_jobs) -> None:
        for s, st in steps.items():
            job = slot_jobs[s]
            if s not in actions:  # the first frame (also of a restarted job)
                self.open[job] = {"frames": [np.array(st.frame)], "actions": [], "rewards": [], "terminals": []}
                continue
            rec = self.open[job]
            rec["actions"].append(np.asarray(actions[s], np.float32))
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
                )
            else:
                rec["frames"].append(np.array(st.frame))
