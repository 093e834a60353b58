"""PPO's update: the clipped objective and :class:`PPOTrainer` (Adam on the actor-critic).

* :func:`clipped_surrogate_loss`: PPO's clipped objective.
* :class:`PPOTrainer`: the update (clipped surrogate + value loss - entropy bonus,
  advantages normalized over the whole batch, gradients clipped by global norm separately for
  actor and critic), one compiled ``tf.function`` per minibatch.

The model and the squashed Gaussian are :mod:`wm.models.actor_critic`'s; the rollouts (with their
advantages, :func:`wm.agents.ppo.gae`) are :mod:`wm.agents.ppo`'s; the loop that alternates them is
:mod:`wm.training.ppo`.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from tfrecords.schema import ACTION_DIM
from wm.models.actor_critic import ActorCritic, entropy_estimate, log_prob


def clipped_surrogate_loss(logp: tf.Tensor, old_logp: tf.Tensor, advantages: tf.Tensor, clip_ratio: float) -> tf.Tensor:
    """PPO's clipped objective as a loss: -mean(min(r A, clip(r, 1 - eps, 1 + eps) A)), r = exp(logp - old_logp)."""
    ratio = tf.exp(logp - old_logp)
    clipped = tf.clip_by_value(ratio, 1.0 - clip_ratio, 1.0 + clip_ratio)
    return -tf.reduce_mean(tf.minimum(ratio * advantages, clipped * advantages))


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

    def _step_impl(
        self, feats: tf.Tensor, u: tf.Tensor, old_logp: tf.Tensor, adv: tf.Tensor, ret: tf.Tensor
    ) -> dict[str, tf.Tensor]:
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
