"""V: the convolutional VAE of World Models (Ha & Schmidhuber 2018), in Keras 3.

Encoder: uint8 frames ``[B, 64, 64, 3]`` -> scaled to [0, 1] -> 4 convolutions (32, 64, 128,
256 filters, 4x4, stride 2, ReLU, 'valid') -> flatten (2x2x256 = 1024) -> two dense heads, the
mean and the log-variance of ``z`` (32 dims). Decoder: ``z`` -> dense 1024 -> ``1x1x1024`` -> 4
transposed convolutions (128 5x5, 64 5x5, 32 6x6, 3 6x6, stride 2; ReLU, sigmoid at the end)
-> ``[B, 64, 64, 3]`` in [0, 1]. 4,348,547 parameters with the defaults.

Both halves are plain functional Keras models made of standard layers, so
``model.encoder.save("encoder.keras")`` loads with ``keras.models.load_model`` and nothing
from this package. The heads, the last transposed convolution and the final sigmoid run in
float32 under any mixed-precision policy, so outputs and losses are float32.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf

Z_SIZE = 32
KL_TOLERANCE = 0.5
FRAME_SHAPE = (64, 64, 3)


def build_encoder(
    z_size: int = Z_SIZE, frame_shape: Sequence[int] = FRAME_SHAPE, dtype_policy: str | None = None
) -> keras.Model:
    """The encoder: uint8 frames -> ``[mu, logvar]``, each float32 ``[B, z_size]``."""
    frames = keras.Input(tuple(frame_shape), dtype="uint8", name="frames")
    x = keras.layers.Rescaling(1.0 / 255.0, name="scale", dtype=dtype_policy)(frames)
    for i, filters in enumerate((32, 64, 128, 256)):
        x = keras.layers.Conv2D(
            filters, 4, strides=2, padding="valid", activation="relu", name=f"conv{i + 1}", dtype=dtype_policy
        )(x)
    x = keras.layers.Flatten(name="flatten", dtype=dtype_policy)(x)
    mu = keras.layers.Dense(z_size, name="mu", dtype="float32")(x)
    logvar = keras.layers.Dense(z_size, name="logvar", dtype="float32")(x)
    return keras.Model(frames, [mu, logvar], name="encoder")


def build_decoder(z_size: int = Z_SIZE, dtype_policy: str | None = None) -> keras.Model:
    """The decoder: ``z`` ``[B, z_size]`` -> float32 images ``[B, 64, 64, 3]`` in [0, 1]."""
    z = keras.Input((z_size,), dtype="float32", name="z")
    x = keras.layers.Dense(1024, name="fc", dtype=dtype_policy)(z)
    x = keras.layers.Reshape((1, 1, 1024), name="reshape", dtype=dtype_policy)(x)
    specs = ((128, 5, "relu"), (64, 5, "relu"), (32, 6, "relu"), (3, 6, None))
    for i, (filters, kernel, act) in enumerate(specs):
        # The last one computes in float32: its bias gradient sums 64 x 64 x B pixel gradients, which a
        # 16-bit accumulation (bfloat16 on CPUs without XLA) gets several times too small.
        policy = "float32" if i == len(specs) - 1 else dtype_policy
        x = keras.layers.Conv2DTranspose(
            filters, kernel, strides=2, padding="valid", activation=act, name=f"deconv{i + 1}", dtype=policy
        )(x)
    images = keras.layers.Activation("sigmoid", name="sigmoid", dtype="float32")(x)
    return keras.Model(z, images, name="decoder")


class ConvVAE(keras.Model):
    """The World Models VAE.

    Args:
      z_size: latent dimensions.
      kl_tolerance: free bits: the KL term of each example is clamped from below at
        ``kl_tolerance * z_size`` nats.
      frame_shape: input frame shape; the architecture needs 64 x 64 x 3.
      dtype_policy: a Keras dtype policy name ("float32", "mixed_float16", "mixed_bfloat16", or
        "bfloat16" for inference only); None uses the global policy.
    """

    def __init__(
        self,
        z_size: int = Z_SIZE,
        kl_tolerance: float = KL_TOLERANCE,
        frame_shape: Sequence[int] = FRAME_SHAPE,
        dtype_policy: str | None = None,
        name: str = "conv_vae",
        **kwargs: Any,
    ) -> None:
        super().__init__(name=name, **kwargs)
        if tuple(frame_shape) != FRAME_SHAPE:
            raise ValueError(f"the paper's VAE needs {FRAME_SHAPE} frames, got {tuple(frame_shape)}")
        self.z_size = int(z_size)
        self.kl_tolerance = float(kl_tolerance)
        self.frame_shape = tuple(frame_shape)
        self.encoder = build_encoder(self.z_size, self.frame_shape, dtype_policy)
        self.decoder = build_decoder(self.z_size, dtype_policy)
        self.built = True

    def arch(self) -> dict:
        """The settings that determine the variables (checkpoints are only compatible within one)."""
        return {"z_size": self.z_size, "kl_tolerance": self.kl_tolerance, "frame_shape": list(self.frame_shape)}

    def get_config(self) -> dict:
        return {"name": self.name, **self.arch()}

    def encode(self, frames: tf.Tensor, training: bool = False) -> tuple[tf.Tensor, tf.Tensor]:
        """uint8 frames ``[B, 64, 64, 3]`` -> (mu, logvar), float32 ``[B, z_size]``."""
        mu, logvar = self.encoder(frames, training=training)
        return mu, logvar

    def decode(self, z: tf.Tensor, training: bool = False) -> tf.Tensor:
        """``z`` ``[B, z_size]`` -> float32 reconstructions ``[B, 64, 64, 3]`` in [0, 1]."""
        return self.decoder(z, training=training)

    @staticmethod
    def sample(
        mu: tf.Tensor, logvar: tf.Tensor, seed: tf.Tensor | None = None, eps: tf.Tensor | None = None
    ) -> tf.Tensor:
        """The reparameterized sample ``mu + exp(logvar / 2) * eps``; ``eps`` given (shaped like ``mu``),
        or drawn statelessly from ``seed`` (shape [2] int: reproducible), else from TensorFlow's
        stateful generator."""
        if eps is not None:
            eps = tf.cast(eps, mu.dtype)
        elif seed is None:
            eps = tf.random.normal(tf.shape(mu), dtype=mu.dtype)
        else:
            eps = tf.cast(tf.random.stateless_normal(tf.shape(mu), seed), mu.dtype)
        return mu + tf.exp(0.5 * logvar) * eps

    def call(self, frames: tf.Tensor, training: bool = False) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """Returns (reconstruction, mu, logvar); ``z`` is sampled when training, else ``z = mu``."""
        mu, logvar = self.encode(frames, training=training)
        z = self.sample(mu, logvar) if training else mu
        return self.decode(z, training=training), mu, logvar


def loss_terms(
    model: ConvVAE,
    frames: tf.Tensor,
    training: bool = True,
    sample: bool = True,
    seed: tf.Tensor | None = None,
    eps: tf.Tensor | None = None,
) -> dict[str, tf.Tensor]:
    """The VAE loss of each example, the function the training loop averages.

    Returns float32 ``[B]`` tensors:

    * ``reconstruction``: squared error summed over pixels (images in [0, 1]);
    * ``kl``: ``KL(q(z|x) || N(0, I))`` clamped from below at ``kl_tolerance * z_size``;
    * ``kl_raw``: the same before clamping (for monitoring);
    * ``loss``: ``reconstruction + kl`` (what is optimized).

    ``sample=False`` decodes ``z = mu`` (deterministic, for tests and evaluation plots); ``seed``
    draws the sample statelessly, ``eps`` ``[B, z_size]`` gives its noise (see :meth:`ConvVAE.sample`).
    """
    mu, logvar = model.encode(frames, training=training)
    z = model.sample(mu, logvar, seed, eps) if sample else mu
    recon = model.decode(z, training=training)
    target = tf.cast(frames, tf.float32) / 255.0
    r_loss = tf.reduce_sum(tf.square(target - recon), axis=[1, 2, 3])
    kl_raw = -0.5 * tf.reduce_sum(1.0 + logvar - tf.square(mu) - tf.exp(logvar), axis=-1)
    kl = tf.maximum(kl_raw, model.kl_tolerance * model.z_size)
    return {"loss": r_loss + kl, "reconstruction": r_loss, "kl": kl, "kl_raw": kl_raw}
