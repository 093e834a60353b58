"""``--deterministic`` input and noise for V/M training: every global batch and every example's noise the same
whatever the number of workers and replicas, so that a resumed or a multi-worker run continues exactly as a
single-device one (see ``wm.training.supervised.TrainFlags.deterministic``).

:func:`replica_shares` cuts the one global pipeline into this worker's replicas' rows, each with a noise key;
:func:`replica_normal` draws, for such a key, the rows of the whole global batch's noise that a single device
would draw for those examples.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import tensorflow as tf


def replica_shares(global_batches: tf.data.Dataset, seed: int, ctx: tf.distribute.InputContext) -> tf.data.Dataset:
    """``--deterministic`` training input: global batches -> this worker's replicas' rows, each with its noise key.

    ``global_batches`` is the ONE pipeline a single-process run would read: every shard, in the
    single-process order, batched at the GLOBAL batch size B (build it without the input context).
    Every worker builds it in full (the cost of ``--deterministic``: each worker reads all the data)
    and keeps, for global batch n, the rows ``[r * B / R, (r + 1) * B / R)`` of each of its local
    replicas r (global replica ids; R replicas in sync), in replica order: the strategy hands a
    worker's pipeline elements to its local replicas in turn, so replica r trains on exactly those
    rows whatever the number of workers and replicas, and a resumed run skips ``step x local
    replicas`` elements. Each element is ``(rows, key)`` with ``key = [seed, n, r * B / R]`` (int64):
    :func:`replica_normal` draws the noise of the whole global batch from ``[seed, n]`` and keeps the
    same rows, so one device and R replicas use the same epsilon for the same example.
    """
    replicas = ctx.num_replicas_in_sync
    local = replicas // ctx.num_input_pipelines
    first = ctx.input_pipeline_id * local  # the global id of this worker's first replica
    size = tf.nest.flatten(global_batches.element_spec)[0].shape[0]
    if size is None or size % replicas:
        raise ValueError(f"need global batches of a static size divisible by {replicas} replicas, got {size}")
    rows = size // replicas

    def mine(x: tf.Tensor) -> tf.Tensor:
        y = tf.reshape(x[first * rows : (first + local) * rows], tf.concat([[local, rows], tf.shape(x)[1:]], 0))
        y.set_shape([local, rows, *x.shape[1:]])
        return y

    def split(n: tf.Tensor, batch: Any) -> tf.data.Dataset:
        ids = tf.range(first, first + local, dtype=tf.int64)
        keys = tf.stack([tf.fill([local], tf.constant(seed, tf.int64)), tf.fill([local], n), ids * rows], 1)
        return tf.data.Dataset.from_tensor_slices((tf.nest.map_structure(mine, batch), keys))

    return global_batches.enumerate().flat_map(split).prefetch(tf.data.AUTOTUNE)


def replica_normal(
    shape: tf.Tensor | Sequence[int | tf.Tensor], key: tf.Tensor, global_batch: int, dtype: tf.DType = tf.float32
) -> tf.Tensor:
    """Standard normal noise of ``shape`` (this replica's rows first) for a key of :func:`replica_shares`.

    Draws ``[global_batch, *shape[1:]]`` statelessly from ``key[:2]`` and returns the rows from
    ``key[2]`` on: what a single device training on the whole global batch draws for these examples.
    """
    shape = tf.convert_to_tensor(shape, tf.int32)
    full = tf.random.stateless_normal(tf.concat([[global_batch], shape[1:]], 0), key[:2], dtype=dtype)
    begin = tf.concat([[tf.cast(key[2], tf.int32)], tf.zeros_like(shape[1:])], 0)
    return tf.slice(full, begin, shape)
