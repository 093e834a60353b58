"""PPO's model: the squashed Gaussian policy on CarRacing's action box and the actor-critic MLPs on [z, h].

* the squashed Gaussian policy: u ~ N(mean, exp(log_std)) per action dimension, then
  ``a = OFFSET + SCALE * tanh(u)`` maps u into CarRacing's box (steering [-1, 1], gas [0, 1],
  brake [0, 1]). :func:`log_prob` is the density of ``a`` (change of variables, with
  ``log(1 - tanh(u)^2)`` computed as ``2 (log 2 - u - softplus(-2u))`` so it stays finite at the
  bounds). The pre-squash sample u is what the rollout stores, so log-probabilities never go
  through ``atanh`` of a clipped action.
* entropy: the squashed distribution has no closed form; :func:`entropy_estimate` is
  H(a) = H(u) + E[log |det da/du|], the Gaussian's exact entropy plus a one-sample
  reparameterized estimate of the expectation (unbiased, differentiable).
* :class:`ActorCritic`: separate actor and critic MLPs on [z, h], by default 2 hidden layers of
  64 tanh units each (the common PPO default for low-dimensional continuous control: the
  features are already compact, so a small net suffices, and separate nets keep the value
  loss's scale out of the policy's gradient), orthogonal initialization, and a learned
  state-independent ``log_std``. The action head's bias starts at (0, 0, -2): steering 0,
  gas 0.5, brake ~0.02 at the mean, so the first policies drive instead of braking half the
  time.

The update is :mod:`wm.training.ppo_update`'s; the policy that acts with V + M and the rollouts are
:mod:`wm.agents.ppo`'s.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np
import tensorflow as tf

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


def _log_dtanh(u: tf.Tensor) -> tf.Tensor:
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

        def mlp(prefix: str, out: int, gain: float, bias: Any) -> list[keras.layers.Layer]:
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

    def build(self, input_shape: tuple | None) -> None:
        """Builds every layer for ``input_dim`` features (``input_shape`` is ignored)."""
        for net in (self.actor, self.critic):
            dim = self.input_dim
            for layer in net:
                layer.build((None, dim))
                dim = layer.units
        self.built = True

    def call(self, feats: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """Features [N, input_dim] -> (pre-squash mean [N, 3], log_std [N, 3], value [N])."""
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
        """The actor MLP's variables and ``log_std``."""
        return [v for layer in self.actor for v in layer.trainable_variables] + [self.log_std]

    @property
    def critic_variables(self) -> list:
        """The critic MLP's variables."""
        return [v for layer in self.critic for v in layer.trainable_variables]
