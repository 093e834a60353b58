"""M: the MDN-RNN of World Models, an LSTM whose mixture-density head predicts z_{t+1}.

The LSTM (256 units) reads [z_t, a_t]; its arguments are the ones for which Keras picks the
fused cuDNN kernel on GPUs (tanh, sigmoid recurrent activation, no recurrent dropout, no
unroll, bias on). The head gives, for **each** of the 32 latent dimensions separately, a
mixture of 5 Gaussians: 5 logits, 5 means, 5 log standard deviations (the paper's
parameterization; 422,368 parameters with defaults).

Optional heads, off by default, let M stand in for the environment: a reward regression
(squared error, weight ``reward_weight``, 1.0 by default) and a terminal Bernoulli logit
(cross-entropy, weight ``terminal_weight``, 1.0 by default).

Dropout (``dropout`` > 0, off by default; "Dropout's Dream Land", Wellmer & Kwok 2021) drops
units of the LSTM's input [z_t, a_t] and of its output h_t where the heads read it (the mixture,
reward and terminal heads; the LSTM's recurrent state and the h the controller sees are never
dropped). Masks are drawn once per sequence and held for all its steps, as the dream holds one
mask per dream episode (:mod:`wm.agents.dream`).

Numerics: log standard deviations are clipped to [LOG_STD_MIN, LOG_STD_MAX] and the mixture
likelihood is a log-sum-exp of log-softmax weights plus Gaussian log-densities, so extreme
logits and tiny sigmas give finite losses. Under a mixed policy (bfloat16 on TPUs and bfloat16
CPUs, float16 on GPUs) the LSTM computes in the policy's 16-bit type with float32 weights; the
mixture, reward and terminal heads, the loss and every output are float32. Acting (``step``) is
float32 throughout.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import keras
import tensorflow as tf

from tfrecords.schema import ACTION_DIM

Z_SIZE = 32
ACTION_SIZE = ACTION_DIM
HIDDEN = 256
MIXTURES = 5
LOG_STD_MIN = -7.0
LOG_STD_MAX = 4.0
_LOG_2PI = math.log(2.0 * math.pi)


class Mixture(NamedTuple):
    """Per-dimension Gaussian mixture parameters, each [..., Z, K] (float32)."""

    logits: tf.Tensor
    mu: tf.Tensor
    log_std: tf.Tensor


class MDNRNN(keras.Model):
    """The MDN-RNN. ``call`` takes [B, T, Z + A] inputs and returns (h [B, T, H], Mixture, extras).

    ``extras`` holds ``reward`` [B, T] and/or ``terminal_logit`` [B, T] when those heads are on.
    ``use_cudnn=False`` forces the generic LSTM kernel, which XLA can compile (the fused cuDNN
    op cannot be).
    """

    def __init__(
        self,
        z_size: int = Z_SIZE,
        action_size: int = ACTION_SIZE,
        hidden: int = HIDDEN,
        mixtures: int = MIXTURES,
        reward_head: bool = False,
        terminal_head: bool = False,
        dropout: float = 0.0,
        dtype_policy: str | None = None,
        use_cudnn: bool | str = "auto",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.z_size, self.action_size, self.hidden, self.mixtures = z_size, action_size, hidden, mixtures
        self.reward_head, self.terminal_head = reward_head, terminal_head
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.dropout = float(dropout)
        # one mask per sequence: the noise shape broadcasts over time
        self.input_dropout = keras.layers.Dropout(dropout, noise_shape=(None, 1, z_size + action_size))
        self.output_dropout = keras.layers.Dropout(dropout, noise_shape=(None, 1, hidden))
        self.lstm = keras.layers.LSTM(
            hidden,
            activation="tanh",
            recurrent_activation="sigmoid",
            recurrent_dropout=0.0,
            unroll=False,
            use_bias=True,
            return_sequences=True,
            return_state=True,
            use_cudnn=use_cudnn,
            dtype=dtype_policy,
            name="lstm",
        )
        # The heads compute in float32 under any policy (as V's do): the mixture's logits, means and
        # log standard deviations, the reward and the terminal logit keep float32's precision.
        self.mdn = keras.layers.Dense(3 * mixtures * z_size, dtype="float32", name="mdn")
        self.reward = keras.layers.Dense(1, dtype="float32", name="reward") if reward_head else None
        self.terminal = keras.layers.Dense(1, dtype="float32", name="terminal") if terminal_head else None
        self.build((None, None, z_size + action_size))

    def build(self, input_shape: Any) -> None:
        self.lstm.build(input_shape)
        self.mdn.build((None, self.hidden))
        for head in (self.reward, self.terminal):
            if head is not None:
                head.build((None, self.hidden))
        self.built = True

    @property
    def arch(self) -> dict:
        """The settings that determine the variables."""
        return {
            "z_size": self.z_size,
            "action_size": self.action_size,
            "hidden": self.hidden,
            "mixtures": self.mixtures,
            "reward_head": self.reward_head,
            "terminal_head": self.terminal_head,
            "dropout": self.dropout,
        }

    def get_config(self) -> dict:
        return {**super().get_config(), **self.arch}

    def heads(self, h: tf.Tensor) -> tuple[Mixture, dict]:
        """Applies the output heads to hidden states h [..., H]."""
        out = tf.cast(self.mdn(h), tf.float32)
        out = tf.reshape(out, tf.concat([tf.shape(out)[:-1], [self.z_size, 3 * self.mixtures]], 0))
        logits, mu, log_std = tf.split(out, 3, axis=-1)
        mix = Mixture(logits, mu, tf.clip_by_value(log_std, LOG_STD_MIN, LOG_STD_MAX))
        extras = {}
        if self.reward is not None:
            extras["reward"] = tf.cast(self.reward(h), tf.float32)[..., 0]
        if self.terminal is not None:
            extras["terminal_logit"] = tf.cast(self.terminal(h), tf.float32)[..., 0]
        return mix, extras

    def call(
        self, inputs: tf.Tensor, initial_state: Any = None, training: bool = False
    ) -> tuple[tf.Tensor, Mixture, dict]:
        if self.dropout:
            inputs = self.input_dropout(inputs, training=training)
        h, state_h, state_c = self.lstm(inputs, initial_state=initial_state, training=training)
        mix, extras = self.heads(self.output_dropout(h, training=training) if self.dropout else h)
        return h, mix, extras

    # ------------------------------------------------------------ step API

    def initial_state(self, batch_size: int) -> tuple[tf.Tensor, tf.Tensor]:
        """Zero (h, c) for ``batch_size`` sequences."""
        zeros = tf.zeros([batch_size, self.hidden], tf.float32)
        return zeros, zeros

    def step(
        self, z: tf.Tensor, action: tf.Tensor, state: tuple[tf.Tensor, tf.Tensor]
    ) -> tuple[tf.Tensor, tuple[tf.Tensor, tf.Tensor], Mixture]:
        """One step for a batch of environments: (z_t [B, Z], a_t [B, A], (h, c)) -> (h_t, (h_t, c_t), Mixture).

        Equal to the full-sequence forward pass (see :meth:`cell`).
        """
        h, state = self.cell(z, action, state)
        mix, _ = self.heads(h)
        return h, state, mix

    def cell(
        self, z: tf.Tensor, action: tf.Tensor, state: tuple[tf.Tensor, tf.Tensor]
    ) -> tuple[tf.Tensor, tuple[tf.Tensor, tf.Tensor]]:
        """The LSTM update alone: (z_t, a_t, (h, c)) -> (h_t, (h_t, c_t)), without the heads.

        Computed directly from the layer's weights (gate order i, f, c, o, as Keras stores
        them), in float32.
        """
        h, c = state
        x = tf.concat([tf.cast(z, tf.float32), tf.cast(action, tf.float32)], axis=-1)
        cell = self.lstm.cell
        gates = (
            tf.matmul(x, tf.cast(cell.kernel, tf.float32))
            + tf.matmul(h, tf.cast(cell.recurrent_kernel, tf.float32))
            + tf.cast(cell.bias, tf.float32)
        )
        i, f, g, o = tf.split(gates, 4, axis=-1)
        c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
        h = tf.sigmoid(o) * tf.tanh(c)
        return h, (h, c)


# ---------------------------------------------------------------- likelihood and sampling


def mixture_log_prob(mix: Mixture, z: tf.Tensor) -> tf.Tensor:
    """log p(z) per dimension: [..., Z] for z [..., Z] under the per-dimension mixtures."""
    z = tf.cast(z, tf.float32)[..., None]
    log_w = tf.nn.log_softmax(mix.logits, axis=-1)
    log_std = tf.clip_by_value(mix.log_std, LOG_STD_MIN, LOG_STD_MAX)
    log_n = -0.5 * tf.square((z - mix.mu) * tf.exp(-log_std)) - log_std - 0.5 * _LOG_2PI
    return tf.reduce_logsumexp(log_w + log_n, axis=-1)


def sequence_loss_terms(
    model: MDNRNN,
    z: tf.Tensor,
    actions: tf.Tensor,
    mask: tf.Tensor,
    rewards: tf.Tensor | None = None,
    terminals: tf.Tensor | None = None,
    reward_weight: float = 1.0,
    terminal_weight: float = 1.0,
    training: bool = True,
) -> dict[str, tf.Tensor]:
    """Per-sequence loss terms [B] for windows of T + 1 steps (z [B, T+1, Z], actions [B, T+1, A], mask [B, T+1]).

    Inputs are (z_t, a_t) for t < T, targets z_{t+1}. For ``z_nll`` a step counts where its
    target z_{t+1} is a real step (``mask[:, t+1]``); the reward and terminal targets are those of
    step t (they follow a_t), so they count where step t is real (``mask[:, t]``): an episode's
    last step, whose z_{t+1} does not exist, still trains the reward head (the -100 of leaving the
    playfield) and the terminal head (its only positive). ``loss`` averages each term over the
    window's T steps (padding contributes zero); the reported ``z_nll`` (per latent dimension) is
    the mean over the window's real steps instead.
    """
    x = tf.concat([z[:, :-1], tf.cast(actions[:, :-1], z.dtype)], axis=-1)
    target = z[:, 1:]
    m = tf.cast(mask[:, 1:], tf.float32)  # z_{t+1} is real
    m_now = tf.cast(mask[:, :-1], tf.float32)  # step t is real
    steps = tf.cast(tf.shape(m)[1], tf.float32)
    _, mix, extras = model(x, training=training)
    nll = -tf.reduce_mean(mixture_log_prob(mix, target), axis=-1)  # [B, T]
    # optimized: summed over the real steps, over the window length (a padded window weighs less);
    # reported: the mean over the real steps, so that padding does not pull it toward 0
    loss = tf.reduce_sum(nll * m, axis=1) / steps
    terms = {"z_nll": tf.reduce_sum(nll * m, axis=1) / tf.maximum(tf.reduce_sum(m, axis=1), 1.0)}
    if model.reward is not None and rewards is not None:
        err = tf.square(extras["reward"] - tf.cast(rewards[:, :-1], tf.float32))
        terms["reward_mse"] = tf.reduce_sum(err * m_now, axis=1) / steps
        loss = loss + reward_weight * terms["reward_mse"]
    if model.terminal is not None and terminals is not None:
        ce = tf.nn.sigmoid_cross_entropy_with_logits(tf.cast(terminals[:, :-1], tf.float32), extras["terminal_logit"])
        terms["terminal_ce"] = tf.reduce_sum(ce * m_now, axis=1) / steps
        loss = loss + terminal_weight * terms["terminal_ce"]
    terms["loss"] = loss
    return terms


def sample_z(mix: Mixture, temperature: float = 1.0, seed: tf.Tensor | None = None) -> tf.Tensor:
    """Samples z [..., Z] with the paper's temperature: logits / tau, standard deviations * sqrt(tau).

    ``temperature == 0`` returns the mean of each dimension's most likely component.
    ``seed``: an optional stateless seed (shape [2] int) for reproducible draws.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    shape = tf.shape(mix.mu)[:-1]
    if seed is None:
        u, eps = tf.random.uniform(shape), tf.random.normal(shape)
    else:
        seeds = tf.random.experimental.stateless_split(seed, 2)
        u, eps = tf.random.stateless_uniform(shape, seeds[0]), tf.random.stateless_normal(shape, seeds[1])
    return sample_z_from_noise(mix, temperature, u, eps)


def sample_z_from_noise(mix: Mixture, temperature: float, u: tf.Tensor, eps: tf.Tensor) -> tf.Tensor:
    """:func:`sample_z` given its noise: u ~ U[0, 1) [..., Z] picks the component (inverse CDF of the
    tempered weights), eps ~ N(0, 1) [..., Z] the Gaussian draw. Deterministic in (mix, u, eps), so a
    compiled dream and a step-by-step reference fed the same noise agree; XLA-compilable.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    batch_dims = len(mix.mu.shape) - 1
    if temperature == 0:
        k = tf.argmax(mix.logits, axis=-1)
        return tf.gather(mix.mu, k, axis=-1, batch_dims=batch_dims)
    cdf = tf.cumsum(tf.nn.softmax(mix.logits / temperature, axis=-1), axis=-1)
    k = tf.reduce_sum(tf.cast(cdf <= tf.cast(u, tf.float32)[..., None], tf.int32), axis=-1)
    k = tf.minimum(k, tf.shape(mix.logits)[-1] - 1)  # cdf[-1] may round below u
    mu = tf.gather(mix.mu, k, axis=-1, batch_dims=batch_dims)
    log_std = tf.gather(mix.log_std, k, axis=-1, batch_dims=batch_dims)
    return mu + tf.exp(log_std) * math.sqrt(temperature) * tf.cast(eps, tf.float32)
