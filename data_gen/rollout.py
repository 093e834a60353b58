"""Running one episode of a policy in the environment, reproducibly from (run seed, episode index)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from data_gen import fast_car_racing
from data_gen.policies import Policy
from data_gen.preprocess import preprocess_frame
from tfrecords.runtime.errors import UsageError
from tfrecords.schema import Episode


def episode_seeds(seed: int, index: int) -> tuple[int, np.random.Generator]:
    """The environment seed and the policy's random generator of episode ``index`` of a run.

    Both come from ``SeedSequence([seed, index])``: independent of worker count and order.
    """
    ss = np.random.SeedSequence([int(seed), int(index)])
    env_seed = int(ss.generate_state(1, np.uint32)[0])
    return env_seed, np.random.default_rng(ss.spawn(1)[0])


DEFAULT_ENV_ID = fast_car_racing.ENV_ID  # registered by this package; "CarRacing-v3" for the stock one


def check_env_id(env_id: str) -> None:
    """Raises UsageError (a ValueError) with a one-line message if gymnasium does not know ``env_id``."""
    import data_gen  # noqa: F401  (registers this package's environments)

    try:
        gym.spec(env_id)
    except gym.error.Error as e:
        raise UsageError(f"unknown environment {env_id!r}: {e}") from None


def make_env(env_id: str, max_steps: int, **kwargs: Any) -> gym.Env:
    """Creates the environment with its time limit set to ``max_steps``."""
    import data_gen  # noqa: F401

    return gym.make(env_id, max_episode_steps=max_steps, **kwargs)


PREPROCESS_BLOCK = 64  # observations kept raw before resizing (~1.8 MB)


def run_episode(
    env: gym.Env, policy: Policy, env_seed: int, rng: np.random.Generator, max_steps: int, full_frame: bool = False
) -> Episode:
    """Plays one episode and returns it in storage form.

    ``frames[t]`` is the preprocessed observation the policy saw before ``actions[t]``;
    ``rewards[t]`` and ``terminals[t]`` follow that action. The final observation (after the
    last action) is not stored. Stops at termination, truncation or ``max_steps``.
    """
    obs, _ = env.reset(seed=env_seed)
    policy.reset(rng)
    raw: list[np.ndarray] = []
    frames: list[np.ndarray] = []
    actions: list[np.ndarray] = []
    rewards: list[Any] = []  # the env's SupportsFloat
    terminals: list[int] = []
    for _ in range(max_steps):
        action = policy.act(obs)
        # Preprocessed in blocks rather than between steps: resizing right after rendering ran
        # about half as fast (caches), 2-3% of the step time (BENCHMARKS.md, rollout generation).
        raw.append(np.array(obs))  # a copy: an env may reuse its observation buffer
        if len(raw) == PREPROCESS_BLOCK:
            frames.extend(preprocess_frame(o, full_frame) for o in raw)
            raw.clear()
        obs, reward, terminated, truncated, _ = env.step(action)
        actions.append(np.asarray(action, np.float32).reshape(-1))
        rewards.append(reward)
        terminals.append(int(terminated))
        if terminated or truncated:
            break
    frames.extend(preprocess_frame(o, full_frame) for o in raw)
    n_act = actions[0].shape[0]
    acts = np.stack(actions).astype(np.float32)
    if n_act == 1:  # discrete actions are stored in the first of the three slots
        acts = np.concatenate([acts, np.zeros((len(acts), 2), np.float32)], axis=1)
    return Episode(
        frames=np.stack(frames),
        actions=acts,
        rewards=np.asarray(rewards, np.float32),
        terminals=np.asarray(terminals, np.int64),
        seed=env_seed,
    )
