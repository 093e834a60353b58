"""C trained with PPO on World Model features [z, h] in the real environment: the policy and its rollouts.

The pieces ``python -m wm.train_ppo`` puts together that act (the model, :mod:`wm.models.actor_critic`,
and the update, :mod:`wm.training.ppo_update`, are beside the other models and training loops):

* :func:`gae` (NumPy): generalized advantage estimation with episode ends inside the rollout,
  telling terminations (no bootstrap) from truncations (bootstrap from the value of the final
  observation).
* :class:`PPOPolicy`: V + M + the actor-critic as ONE compiled call per environment step for
  all environments, through :class:`wm.agents.agent.Agent`'s ``encode`` and ``advance``. It also has
  ``Agent``'s ``act`` / ``initial_state`` / ``vae`` / ``controller.num_params`` surface (``act``
  plays the deterministic policy, the squashed mean), so :func:`wm.agents.agent.run_episodes` and
  ``wm.evaluate`` run it exactly like a CMA-ES controller.
* :class:`RolloutCollector`: steps an :class:`~data_gen.envpool.EnvPool` for ``rollout_len`` steps
  with M's state carried per environment (zeroed at episode start), resets finished
  environments at once, and drops the partial episode of environments whose worker was lost.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import tensorflow as tf

from data_gen.envpool import WorkerLost
from tfrecords.schema import ACTION_DIM
from wm.models.actor_critic import ActorCritic, log_prob, squash_action

if TYPE_CHECKING:
    from wm.agents.agent import Agent

# ---------------------------------------------------------------- advantages


def gae(
    rewards: np.ndarray,
    values: np.ndarray,
    next_values: np.ndarray,
    terminated: np.ndarray,
    dones: np.ndarray,
    gamma: float,
    lam: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Generalized advantage estimates and value targets, both [T, N].

    Args:
      rewards, values: [T, N]; ``values[t]`` is V(s_t).
      next_values: [T, N], V(s_{t+1}) of the observation after step t (for a truncated
        episode: its final observation; ignored where ``terminated``).
      terminated: [T, N] bool, the episode ended at step t in a terminal state (no bootstrap).
      dones: [T, N] bool, the episode ended at step t for any reason (terminated, truncated,
        dropped): advantages do not flow back across it.
    Returns:
      (advantages, returns = advantages + values).
    """
    rewards, values, next_values = (np.asarray(x, np.float64) for x in (rewards, values, next_values))
    keep = 1.0 - np.asarray(terminated, np.float64)
    cont = 1.0 - np.asarray(dones, np.float64)
    adv = np.zeros_like(rewards)
    last = np.zeros(rewards.shape[1:])
    for t in range(len(rewards) - 1, -1, -1):
        delta = rewards[t] + gamma * keep[t] * next_values[t] - values[t]
        last = delta + gamma * lam * cont[t] * last
        adv[t] = last
    return adv.astype(np.float32), (adv + values).astype(np.float32)


# ---------------------------------------------------------------- policy (V + M + actor-critic)


@dataclasses.dataclass(frozen=True)
class _NoParams:
    """PPO's weights live in the model; ``run_episodes`` gets a dummy [1, 1] params array."""

    num_params: int = 1


class PPOPolicy:
    """V + M + actor-critic, batched over environments, one compiled call per step.

    Args:
      agent: a :class:`wm.agents.agent.Agent` whose V and M are used (its own controller is not).
      model: an :func:`ActorCritic` on [z, h].
    """

    def __init__(self, agent: Agent, model: ActorCritic, seed: int = 0):
        self.agent, self.model, self.vae = agent, model, agent.vae
        self.controller = _NoParams()
        self.z_size, self.hidden = agent.z_size, agent.hidden
        if model.input_dim != self.z_size + self.hidden:
            raise ValueError(f"actor-critic input_dim {model.input_dim} != z + h ({self.z_size} + {self.hidden})")
        self.rng = tf.random.Generator.from_seed(seed)
        frames = tf.TensorSpec([None, 64, 64, 3], tf.uint8)
        state = [tf.TensorSpec([None, self.hidden], tf.float32)] * 2
        self._sample = tf.function(lambda f, h, c: self._step_impl(f, h, c, True), input_signature=[frames, *state])
        self._mean = tf.function(lambda f, h, c: self._step_impl(f, h, c, False), input_signature=[frames, *state])
        self._value = tf.function(self._value_impl, input_signature=[frames, state[0]])

    def _step_impl(self, frames: tf.Tensor, h: tf.Tensor, c: tf.Tensor, stochastic: bool) -> tuple[tf.Tensor, ...]:
        z = self.agent.encode(frames)
        feats = tf.concat([z, h], axis=-1)
        mean, log_std, value = self.model(feats)
        u = mean + tf.exp(log_std) * self.rng.normal(tf.shape(mean)) if stochastic else mean
        a = squash_action(u)
        h2, c2 = self.agent.advance(z, a, (h, c))
        return a, u, log_prob(u, mean, log_std), value, feats, z, h2, c2

    def _value_impl(self, frames: tf.Tensor, h: tf.Tensor) -> tf.Tensor:
        return self.model(tf.concat([self.agent.encode(frames), h], axis=-1))[2]

    def initial_state(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Zero LSTM state for n environments."""
        return self.agent.initial_state(n)

    def sample(self, frames: np.ndarray, state: tuple[np.ndarray, np.ndarray]) -> dict[str, np.ndarray]:
        """One stochastic step: actions, u, logp, value, feats, z and the new state ``h``, ``c``."""
        out = self._sample(frames, state[0], state[1])
        return {k: v.numpy() for k, v in zip(("a", "u", "logp", "value", "feats", "z", "h", "c"), out)}

    def value(self, frames: np.ndarray, h: np.ndarray) -> np.ndarray:
        """V(s) [N] for frames and M hidden states h."""
        return self._value(frames, h).numpy()

    def act(
        self, frames: np.ndarray, state: tuple[np.ndarray, np.ndarray], params: np.ndarray | None = None
    ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray], np.ndarray]:
        """Deterministic (squashed mean) step, ``Agent.act``'s signature: -> (actions [N, 3], new (h, c), z)."""
        a, _, _, _, _, z, h, c = self._mean(frames, state[0], state[1])
        return a.numpy(), (h.numpy(), c.numpy()), z.numpy()


# ---------------------------------------------------------------- rollouts


@dataclasses.dataclass
class Rollout:
    """A flat batch of valid steps (for ``wm.training.ppo_update.PPOTrainer.update``) and the episodes that ended."""

    batch: dict[str, np.ndarray]
    episode_returns: list[float]
    episode_lengths: list[int]
    env_steps: int
    dropped_steps: int


class RolloutCollector:
    """Plays the stochastic policy in every slot of ``pool``; ``collect(T)`` returns one rollout.

    ``seed_of(k)`` gives the track seed of the k-th episode started (``episodes`` continues a
    count from an earlier run). Rewards are multiplied by ``reward_scale`` for learning;
    reported returns are unscaled.
    """

    def __init__(
        self,
        pool: Any,  # a data_gen EnvPool or RayEnvPool: num_envs, reset, step
        policy: PPOPolicy,
        max_steps: int,
        seed_of: Callable[[int], int],
        gamma: float,
        lam: float,
        reward_scale: float = 1.0,
        episodes: int = 0,
    ):
        self.pool, self.policy, self.max_steps, self.seed_of = pool, policy, max_steps, seed_of
        self.gamma, self.lam, self.reward_scale = gamma, lam, reward_scale
        self.episodes = episodes
        self.lost_workers = 0
        n = pool.num_envs
        self.frames = np.zeros((n, 64, 64, 3), np.uint8)
        self.h, self.c = policy.initial_state(n)
        self.ret = np.zeros(n)
        self.len = np.zeros(n, np.int64)
        self._reset(set(range(n)))

    def _reset(self, slots: set[int]) -> set[int]:
        """Resets ``slots`` with fresh tracks; returns the OTHER slots lost meanwhile (reset too)."""
        asked, extra = set(slots), set()
        while slots:
            order = sorted(slots)
            seeds = {s: self.seed_of(self.episodes + i) for i, s in enumerate(order)}
            self.episodes += len(order)
            try:
                out, lost = self.pool.reset(seeds), []
            except WorkerLost as e:
                out, lost = e.partial, e.slots
                self.lost_workers += 1
            for s, st in out.items():
                self.frames[s] = st.frame
                self.h[s], self.c[s], self.ret[s], self.len[s] = 0.0, 0.0, 0.0, 0
            extra |= set(lost) - asked
            asked |= set(lost)
            slots = set(lost)
        return extra

    def collect(self, rollout_len: int) -> Rollout:
        """Steps every environment ``rollout_len`` times; returns the valid steps with advantages."""
        T, N = rollout_len, self.pool.num_envs
        D = self.policy.z_size + self.policy.hidden
        feats = np.zeros((T, N, D), np.float32)
        us = np.zeros((T, N, ACTION_DIM), np.float32)
        logp, values, rewards, final_values = (np.zeros((T, N), np.float32) for _ in range(4))
        terminated, dones = np.zeros((T, N), bool), np.zeros((T, N), bool)
        valid = np.ones((T, N), bool)
        ep_start = np.zeros(N, np.int64)
        returns, lengths = [], []

        def drop(s: int, t: int) -> None:
            valid[ep_start[s] : t + 1, s] = False
            dones[t, s] = True

        for t in range(T):
            out = self.policy.sample(self.frames, (self.h, self.c))
            feats[t], us[t], logp[t], values[t] = out["feats"], out["u"], out["logp"], out["value"]
            try:
                steps, lost = self.pool.step({s: out["a"][s] for s in range(N)}), []
            except WorkerLost as e:
                steps, lost = e.partial, e.slots
                self.lost_workers += 1
            ended, trunc = set(), []
            for s, st in steps.items():
                rewards[t, s] = st.reward * self.reward_scale
                self.ret[s] += st.reward
                self.len[s] += 1
                if st.terminated or st.truncated or self.len[s] >= self.max_steps:
                    dones[t, s], terminated[t, s] = True, st.terminated
                    returns.append(float(self.ret[s]))
                    lengths.append(int(self.len[s]))
                    ended.add(s)
                    if not st.terminated:
                        trunc.append((s, st.frame))
                else:
                    self.frames[s] = st.frame
                    self.h[s], self.c[s] = out["h"][s], out["c"][s]
            for s in lost:
                drop(s, t)
            if trunc:
                rows = [s for s, _ in trunc]
                final_values[t, rows] = self.policy.value(np.stack([f for _, f in trunc]), out["h"][rows])
            for s in self._reset(ended | set(lost)):
                drop(s, t)  # a mid-episode slot whose worker died during the reset
            ep_start[dones[t]] = t + 1

        next_values = np.concatenate([values[1:], self.policy.value(self.frames, self.h)[None]], 0)
        trunc_mask = dones & ~terminated
        next_values[trunc_mask] = final_values[trunc_mask]
        adv, ret = gae(rewards, values, next_values, terminated, dones, self.gamma, self.lam)
        m = valid
        batch = {"feats": feats[m], "u": us[m], "logp": logp[m], "adv": adv[m], "ret": ret[m]}
        return Rollout(batch, returns, lengths, T * N, int((~valid).sum()))
