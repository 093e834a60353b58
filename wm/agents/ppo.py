"""C trained with PPO on World Model features [z, h] in the real environment.

The pieces ``python -m wm.train_ppo`` puts together, each usable (and tested) on its own:

* the squashed Gaussian policy: u ~ N(mean, exp(log_std)) per action dimension, then
  ``a = OFFSET + SCALE * tanh(u)`` maps u into CarRacing's box (steering [-1, 1], gas [0, 1],
  brake [0, 1]). :func:`log_prob` is the density of ``a`` (change of variables, with
  ``log(1 - tanh(u)^2)`` computed as ``2 (log 2 - u - softplus(-2u))`` so it stays finite at the
  bounds). The pre-squash sample u is what the rollout stores, so log-probabilities never go
  through ``atanh`` of a clipped action.
* entropy: the squashed distribution has no closed form; :func:`entropy_estimate` is
  H(a) = H(u) + E[log |det da/du|], the Gaussian's exact entropy plus a one-sample
  reparameterized estimate of the expectation (unbiased, differentiable).
* :func:`gae` (NumPy): generalized advantage estimation with episode ends inside the rollout,
  telling terminations (no bootstrap) from truncations (bootstrap from the value of the final
  observation).
* :func:`clipped_surrogate_loss`: PPO's clipped objective.
* :class:`ActorCritic`: separate actor and critic MLPs on [z, h], by default 2 hidden layers of
  64 tanh units each (the common PPO default for low-dimensional continuous control: the
  features are already compact, so a small net suffices, and separate nets keep the value
  loss's scale out of the policy's gradient), orthogonal initialization, and a learned
  state-independent ``log_std``. The action head's bias starts at (0, 0, -2): steering 0,
  gas 0.5, brake ~0.02 at the mean, so the first policies drive instead of braking half the
  time.
* :class:`PPOTrainer`: the update (clipped surrogate + value loss - entropy bonus,
  advantages normalized over the whole batch, gradients clipped by global norm separately for
  actor and critic), one compiled ``tf.function`` per minibatch.
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
import math
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from data_gen.envpool import WorkerLost
from tfrecords.schema import ACTION_DIM

ACTION_LOW = np.array([-1.0, 0.0, 0.0], np.float32)
ACTION_HIGH = np.array([1.0, 1.0, 1.0], np.float32)
SCALE = (ACTION_HIGH - ACTION_LOW) / 2
OFFSET = (ACTION_HIGH + ACTION_LOW) / 2
INITIAL_ACTION_BIAS = (0.0, 0.0, -2.0)
_LOG_2PI = math.log(2 * math.pi)


# ---------------------------------------------------------------- distribution


def squash_action(u: tf.Tensor) -> tf.Tensor:
    """Pre-squash samples u [..., 3] -> actions in CarRacing's box (a TF op)."""
    return OFFSET + SCALE * tf.tanh(u)


def _log_dtanh(u):
    """log(1 - tanh(u)^2), finite for any u."""
    return 2.0 * (math.log(2.0) - u - tf.nn.softplus(-2.0 * u))


def log_prob(u: tf.Tensor, mean: tf.Tensor, log_std: tf.Tensor) -> tf.Tensor:
    """log density [...] of the action ``squash_action(u)`` when u ~ N(mean, exp(log_std)^2).

    Gaussian log-density of u minus log |det da/du| = sum(log SCALE + log(1 - tanh(u)^2)).
    """
    z = (u - mean) * tf.exp(-log_std)
    gauss = -0.5 * tf.square(z) - log_std - 0.5 * _LOG_2PI
    return tf.reduce_sum(gauss - np.log(SCALE) - _log_dtanh(u), axis=-1)


def entropy_estimate(mean: tf.Tensor, log_std: tf.Tensor, eps: tf.Tensor) -> tf.Tensor:
    """One-sample estimate [...] of the squashed action's entropy, with noise ``eps`` ~ N(0, 1).

    H(a) = H(u) + E[log |det da/du|]; H(u) is exact, the expectation is estimated at
    ``u = mean + exp(log_std) * eps`` (reparameterized, so it is differentiable).
    """
    u = mean + tf.exp(log_std) * eps
    gauss = tf.reduce_sum(log_std + 0.5 * (1.0 + _LOG_2PI), axis=-1)
    return gauss + tf.reduce_sum(np.log(SCALE) + _log_dtanh(u), axis=-1)


# ---------------------------------------------------------------- advantages and objective


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


def clipped_surrogate_loss(logp: tf.Tensor, old_logp: tf.Tensor, advantages: tf.Tensor, clip_ratio: float) -> tf.Tensor:
    """PPO's clipped objective as a loss: -mean(min(r A, clip(r, 1 - eps, 1 + eps) A)), r = exp(logp - old_logp)."""
    ratio = tf.exp(logp - old_logp)
    clipped = tf.clip_by_value(ratio, 1.0 - clip_ratio, 1.0 + clip_ratio)
    return -tf.reduce_mean(tf.minimum(ratio * advantages, clipped * advantages))


# ---------------------------------------------------------------- model


class ActorCritic(keras.Model):
    """Actor and critic MLPs (tanh) on features [N, input_dim] -> (mean [N, 3], log_std [N, 3], value [N]).

    The actor's mean is the pre-squash Gaussian mean; ``log_std`` is a learned state-independent
    vector broadcast over the batch.
    """

    def __init__(self, input_dim: int, hidden: tuple[int, ...] = (64, 64), init_log_std: float = -0.5):
        super().__init__(name="actor_critic")
        self.input_dim, self.hidden_sizes, self.init_log_std = (
            int(input_dim),
            tuple(int(h) for h in hidden),
            float(init_log_std),
        )
        orth = keras.initializers.Orthogonal

        def mlp(prefix, out, gain, bias):
            layers = [
                keras.layers.Dense(h, activation="tanh", kernel_initializer=orth(math.sqrt(2)), name=f"{prefix}_{i}")
                for i, h in enumerate(self.hidden_sizes)
            ]
            return layers + [
                keras.layers.Dense(out, kernel_initializer=orth(gain), bias_initializer=bias, name=f"{prefix}_out")
            ]

        self.actor = mlp("actor", ACTION_DIM, 0.01, keras.initializers.Constant(list(INITIAL_ACTION_BIAS)))
        self.critic = mlp("critic", 1, 1.0, "zeros")
        # tf.train.Checkpoint does not follow Keras 3's layer lists: name every layer as an attribute,
        # or checkpoints hold log_std alone and a restored policy acts with fresh weights.
        for layer in self.actor + self.critic:
            setattr(self, layer.name, layer)
        self.log_std = self.add_weight(
            shape=(ACTION_DIM,), initializer=keras.initializers.Constant(self.init_log_std), name="log_std"
        )
        self.build((None, self.input_dim))

    def build(self, input_shape):
        for net in (self.actor, self.critic):
            dim = self.input_dim
            for layer in net:
                layer.build((None, dim))
                dim = layer.units
        self.built = True

    def call(self, feats: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        x = y = feats
        for layer in self.actor:
            x = layer(x)
        for layer in self.critic:
            y = layer(y)
        return x, tf.broadcast_to(self.log_std, tf.shape(x)), y[:, 0]

    def arch(self) -> dict:
        """Constructor arguments (for config.json)."""
        return {"input_dim": self.input_dim, "hidden": list(self.hidden_sizes), "init_log_std": self.init_log_std}

    @property
    def actor_variables(self) -> list:
        return [v for layer in self.actor for v in layer.trainable_variables] + [self.log_std]

    @property
    def critic_variables(self) -> list:
        return [v for layer in self.critic for v in layer.trainable_variables]


# ---------------------------------------------------------------- update


@dataclasses.dataclass
class PPOHyper:
    """The update's hyperparameters."""

    learning_rate: float = 3e-4
    epochs: int = 4
    minibatch_size: int = 256
    clip_ratio: float = 0.2
    entropy_coef: float = 1e-3
    value_coef: float = 0.5
    max_grad_norm: float = 0.5


class PPOTrainer:
    """Adam on the actor-critic; ``update(batch)`` runs ``epochs`` passes of shuffled minibatches."""

    def __init__(self, model: ActorCritic, hyper: PPOHyper, seed: int = 0):
        self.model, self.hyper = model, hyper
        self.optimizer = keras.optimizers.Adam(hyper.learning_rate, epsilon=1e-5)
        self.optimizer.build(model.trainable_variables)
        self.rng = tf.random.Generator.from_seed(seed)
        d = model.input_dim
        self._step = tf.function(
            self._step_impl,
            input_signature=[
                tf.TensorSpec([None, d], tf.float32),
                tf.TensorSpec([None, ACTION_DIM], tf.float32),
                tf.TensorSpec([None], tf.float32),
                tf.TensorSpec([None], tf.float32),
                tf.TensorSpec([None], tf.float32),
            ],
        )

    def _step_impl(self, feats, u, old_logp, adv, ret):
        h = self.hyper
        eps = self.rng.normal(tf.shape(u))
        actor_vars, critic_vars = self.model.actor_variables, self.model.critic_variables
        with tf.GradientTape() as tape:
            mean, log_std, value = self.model(feats)
            logp = log_prob(u, mean, log_std)
            policy_loss = clipped_surrogate_loss(logp, old_logp, adv, h.clip_ratio)
            value_loss = 0.5 * tf.reduce_mean(tf.square(value - ret))
            entropy = tf.reduce_mean(entropy_estimate(mean, log_std, eps))
            loss = policy_loss + h.value_coef * value_loss - h.entropy_coef * entropy
        grads = tape.gradient(loss, actor_vars + critic_vars)
        ga, _ = tf.clip_by_global_norm(grads[: len(actor_vars)], h.max_grad_norm)
        gc, _ = tf.clip_by_global_norm(grads[len(actor_vars) :], h.max_grad_norm)
        self.optimizer.apply(ga + gc, actor_vars + critic_vars)
        ratio = tf.exp(logp - old_logp)
        return {
            "policy_loss": policy_loss,
            "value_loss": value_loss,
            "entropy": entropy,
            "approx_kl": tf.reduce_mean((ratio - 1.0) - (logp - old_logp)),
            "clip_frac": tf.reduce_mean(tf.cast(tf.abs(ratio - 1.0) > h.clip_ratio, tf.float32)),
        }

    def update(self, batch: dict[str, np.ndarray], np_rng: np.random.Generator) -> dict[str, float]:
        """One PPO update on a flat batch (``feats``, ``u``, ``logp``, ``adv``, ``ret``); returns mean metrics."""
        n = len(batch["adv"])
        if n == 0:
            return {}
        adv = batch["adv"].astype(np.float64)
        adv = ((adv - adv.mean()) / (adv.std() + 1e-8)).astype(np.float32)
        sums: dict[str, float] = {}
        count = 0
        mb = min(self.hyper.minibatch_size, n)
        for _ in range(self.hyper.epochs):
            perm = np_rng.permutation(n)
            for i in range(0, n, mb):
                idx = perm[i : i + mb]
                out = self._step(batch["feats"][idx], batch["u"][idx], batch["logp"][idx], adv[idx], batch["ret"][idx])
                for k, v in out.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
                count += 1
        return {k: v / count for k, v in sums.items()}


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

    def __init__(self, agent, model: ActorCritic, seed: int = 0):
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

    def _step_impl(self, frames, h, c, stochastic: bool):
        z = self.agent.encode(frames)
        feats = tf.concat([z, h], axis=-1)
        mean, log_std, value = self.model(feats)
        u = mean + tf.exp(log_std) * self.rng.normal(tf.shape(mean)) if stochastic else mean
        a = squash_action(u)
        h2, c2 = self.agent.advance(z, a, (h, c))
        return a, u, log_prob(u, mean, log_std), value, feats, z, h2, c2

    def _value_impl(self, frames, h):
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

    def act(self, frames: np.ndarray, state: tuple[np.ndarray, np.ndarray], params: np.ndarray | None = None):
        """Deterministic (squashed mean) step, ``Agent.act``'s signature: -> (actions [N, 3], new (h, c), z)."""
        a, _, _, _, _, z, h, c = self._mean(frames, state[0], state[1])
        return a.numpy(), (h.numpy(), c.numpy()), z.numpy()


# ---------------------------------------------------------------- rollouts


@dataclasses.dataclass
class Rollout:
    """A flat batch of valid steps (for :meth:`PPOTrainer.update`) and the episodes that ended."""

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
        pool,
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
