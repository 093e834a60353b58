"""What ``python -m wm.train_mdnrnn`` trains M with: the latent series' split and size, the device
choices that keep cuDNN and XLA apart, and the per-example loss (z resampled from V's stored
N(mu, exp(logvar)) for every batch, then the sequence NLL of :mod:`wm.models.mdnrnn`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import keras
import tensorflow as tf

from tfrecords.runtime.errors import UsageError
from wm.core import distribute
from wm.training import deterministic
from wm.training.trainer import LossFn


def split_series(series: str, eval_shards: int) -> tuple[list[str], list[str], dict | None, dict[str, dict] | None]:
    """(train shards, held-out shards, manifest of the first directory, every shard's manifest
    entry by path or None) of the latent series; ``series`` may list several directories."""
    import tfrecords
    from tfrecords import schema

    shards = tfrecords.list_shards(series)
    manifest = tfrecords.dataset_manifest(shards)
    if manifest and manifest.get("kind") != schema.KIND_LATENTS:
        raise UsageError(f"{series} holds {manifest.get('kind')}, not latent series: run python -m wm.encode first")
    infos = tfrecords.shard_infos(shards)
    if eval_shards and len(shards) <= eval_shards:
        raise UsageError(f"{series} has {len(shards)} shards: too few to hold out --eval_shards={eval_shards}")
    cut = len(shards) - eval_shards
    return shards[:cut], shards[cut:], manifest, infos


def windows_in(files: list[str], infos: dict[str, dict] | None, window: int) -> int | None:
    """Approximate windows per pass over ``files``: each episode gives ceil(T / window), with T the
    mean episode length of its shard (exact when a shard's episodes are equally long)."""
    if not infos:
        return None
    shards = [infos[f] for f in files if infos[f]["episodes"]]
    return sum(s["episodes"] * math.ceil(s["frames"] / s["episodes"] / window) for s in shards) or None


def resolve_device_choices(setup: distribute.Setup, jit_mode: str) -> tuple[distribute.Setup, bool | str]:
    """(setup with M's XLA choice, the LSTM's use_cudnn) so that every device gets a working pair."""
    if setup.device_type == "GPU":
        if jit_mode == "auto":
            return dataclasses.replace(setup, jit_compile=False), "auto"
        if setup.jit_compile:
            return setup, False  # XLA cannot compile the cuDNN op: use the generic kernel
    return setup, "auto"


def make_loss_fn(batch_size: int, reward_weight: float, terminal_weight: float) -> LossFn:
    """The per-example loss for supervised.run: resample z from (mu, logvar), then the sequence NLL.
    ``batch_size`` is the global batch (``--deterministic`` draws a replica's rows of its noise)."""
    from wm.models import mdnrnn

    def loss_fn(model: keras.Model, batch: Any, training: bool) -> dict[str, tf.Tensor]:
        batch, key = batch if isinstance(batch, tuple) else (batch, None)  # key: --deterministic
        mu, logvar = batch["mu"], batch["logvar"]
        if key is None:
            eps = tf.random.normal(tf.shape(mu))
        else:  # the noise a single device would draw for these rows of the global batch
            eps = deterministic.replica_normal(tf.shape(mu), key, batch_size)
        z = mu + tf.exp(0.5 * logvar) * eps
        return mdnrnn.sequence_loss_terms(
            model,
            z,
            batch["actions"],
            batch["mask"],
            batch["rewards"],
            batch["terminals"],
            reward_weight,
            terminal_weight,
            training=training,
        )

    return loss_fn
