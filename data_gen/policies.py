"""Exploration policies for rollouts, and a registry so that new ones (e.g. a trained controller) plug in.

A policy is built once per worker and reset at the start of every episode with that episode's
own random generator, which keeps episodes reproducible whatever the worker count.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, cast

import gymnasium as gym
import numpy as np


class Policy(Protocol):
    """What data_gen needs of a policy."""

    def reset(self, rng: np.random.Generator) -> None:
        """Starts a new episode; all randomness must come from ``rng``."""

    def act(self, obs: np.ndarray) -> np.ndarray:
        """Returns the action for the (raw, 96 x 96 x 3) observation."""


class RandomPolicy:
    """I.i.d. uniform actions from the action space."""

    def __init__(self, action_space: gym.Space):
        self.space = action_space
        self.rng = np.random.default_rng(0)

    def reset(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def act(self, obs: np.ndarray) -> np.ndarray:
        if isinstance(self.space, gym.spaces.Discrete):
            return np.int64(self.rng.integers(self.space.n))  # type: ignore[return-value]  # a discrete action is a scalar
        space = cast(gym.spaces.Box, self.space)
        return self.rng.uniform(space.low, space.high).astype(np.float32)


class BrownianPolicy:
    """A Brownian walk in the action box: a_{t+1} = clip(a_t + sqrt(dt) * N(0, I)).

    Smoother than i.i.d. noise, so the car holds a course long enough to cover more of the
    track. a_0 is uniform in the box; ``dt`` = 1/50 (CarRacing runs at 50 FPS).
    """

    def __init__(self, action_space: gym.Space, dt: float = 1.0 / 50.0):
        if not isinstance(action_space, gym.spaces.Box):
            raise ValueError("the brownian policy needs a continuous (Box) action space")
        self.low, self.high = action_space.low.astype(np.float64), action_space.high.astype(np.float64)
        self.scale = float(np.sqrt(dt))
        self.rng = np.random.default_rng(0)
        self.action = np.zeros_like(self.low)

    def reset(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.action = rng.uniform(self.low, self.high)

    def act(self, obs: np.ndarray) -> np.ndarray:
        out = self.action.astype(np.float32)
        self.action = np.clip(self.action + self.scale * self.rng.standard_normal(self.low.shape), self.low, self.high)
        return out


POLICIES: dict[str, Callable[[gym.Space], Policy]] = {"random": RandomPolicy, "brownian": BrownianPolicy}


def register_policy(name: str, factory: Callable[[gym.Space], Policy]) -> None:
    """Makes ``--policy=name`` available; ``factory(action_space)`` builds it inside each worker."""
    POLICIES[name] = factory


def make_policy(name: str, action_space: gym.Space) -> Policy:
    """Builds a registered policy; raises ValueError naming the known ones."""
    if name not in POLICIES:
        raise ValueError(f"unknown policy {name!r}; known: {', '.join(sorted(POLICIES))}")
    return POLICIES[name](action_space)
