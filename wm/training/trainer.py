"""What a model contributes to V/M training (:class:`Task`), how long to train (:class:`LoopConfig`), and the
compiled update (:class:`Trainer`): model, optimizer and step functions under one ``tf.distribute`` strategy.

:func:`wm.training.supervised.run` drives a :class:`Trainer` through a run (resume, logging, checkpoints,
evaluation, stops); benchmarks and tests call :meth:`Trainer.train_steps` directly. What the update does:

* variables, optimizer slots and the step counter are created under ``strategy.scope()``;
  the optimizer is built explicitly before the first ``strategy.run``;
* the loss is summed per replica and divided by the GLOBAL batch, so gradients summed over
  replicas equal the single-device gradient of the batch mean;
* ``steps_per_loop`` steps run inside one ``tf.function`` call; the per-replica gradient
  computation is XLA-compiled when ``Setup.jit_compile``;
* float16 uses Keras 3's ``LossScaleOptimizer`` (``scale_loss`` before the tape,
  ``apply`` unscales and skips non-finite steps);
* optional global-norm clipping of the all-reduced gradient (``LoopConfig.clip_norm``).

Library code stays eager-debuggable: nothing here is compiled until :class:`Trainer` wraps it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import keras
import tensorflow as tf

from tfrecords.runtime.errors import UsageError
from wm.core.distribute import Setup

LossFn = Callable[[keras.Model, Any, bool], Mapping[str, tf.Tensor]]
DatasetFn = Callable[[tf.distribute.InputContext], tf.data.Dataset]


@dataclasses.dataclass
class Task:
    """What a model contributes to training.

    Attributes:
      name: the model type, stored as ``"model"`` in ``config.json`` (a workdir holds one type).
      arch: the settings that determine the variables; a rerun with different ones is refused.
      model_fn: ``dtype_policy -> keras.Model`` with all variables built (called in scope).
      loss_fn: ``(model, per_replica_batch, training) -> {name: float32 [B]}``, per-example
        terms; ``"loss"`` is optimized, the others are logged.
      train_data: ``InputContext -> tf.data.Dataset`` of per-replica batches, repeating.
      eval_data: same, one pass over held-out data (``drop_remainder`` batches), or None.
      summary_fn: ``(model, step) -> None``, called eagerly inside the train summary writer at
        every evaluation (e.g. images); or None.
      optimizer_fn: ``learning_rate -> keras Optimizer``; default Adam.
    """

    name: str
    arch: dict
    model_fn: Callable[[str], keras.Model]
    loss_fn: LossFn
    train_data: DatasetFn
    eval_data: DatasetFn | None = None
    summary_fn: Callable[[keras.Model, int], None] | None = None
    optimizer_fn: Callable[[float], keras.optimizers.Optimizer] | None = None


@dataclasses.dataclass
class LoopConfig:
    """How long and how to train; all step counts are global optimizer steps.

    ``eval_every=0`` evaluates only at the end; ``profile_steps=(10, 15)`` traces steps 10..15.
    """

    workdir: str
    steps: int
    batch_size: int
    learning_rate: float = 1e-4
    steps_per_loop: int = 10
    log_every: int = 100
    checkpoint_every: int = 1000
    eval_every: int = 0
    eval_batches: int | None = None
    clip_norm: float | None = None
    profile_steps: tuple[int, int] | None = None
    keep_checkpoints: int = 3
    progress: bool = True
    deterministic: bool = False  # resume skips the batches already trained on (see TrainFlags.deterministic)


# ---------------------------------------------------------------- model, optimizer, update step


class Trainer:
    """Model, optimizer and compiled step functions under one strategy.

    ``train_steps(iterator, n)`` runs ``n`` optimizer steps in one call and returns the mean of
    each loss term over them (float32 scalars; NaN if any step was NaN). ``evaluate(dataset)``
    averages the terms over one pass of a distributed dataset.
    """

    def __init__(self, task: Task, setup: Setup, cfg: LoopConfig):
        self.task, self.setup, self.cfg = task, setup, cfg
        self.strategy = setup.strategy
        n = setup.num_replicas
        if cfg.batch_size % n:
            lower = cfg.batch_size - cfg.batch_size % n
            near = " or ".join(str(b) for b in (lower, lower + n) if b > 0)
            raise UsageError(f"--batch_size {cfg.batch_size} is not divisible by the {n} replicas; use {near}")
        with self.strategy.scope():
            self.model = task.model_fn(setup.dtype_policy)
            opt = (
                task.optimizer_fn(cfg.learning_rate) if task.optimizer_fn else keras.optimizers.Adam(cfg.learning_rate)
            )
            if setup.loss_scaling:
                opt = keras.optimizers.LossScaleOptimizer(opt)
            # Slots must exist before the first strategy.run (lazy creation fails under Mirrored).
            opt.build(self.model.trainable_variables)
            self.optimizer = opt
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")  # host-side counter
        grads = self._replica_grads
        self._grads = tf.function(grads, jit_compile=True) if setup.jit_compile else grads
        self.train_steps = tf.function(self._train_steps)
        self._eval_step = tf.function(self._distributed_eval_step)

    # One replica's share of one step.
    def _replica_grads(self, batch: Any) -> tuple[dict[str, tf.Tensor], list[tf.Tensor]]:
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            terms = self.task.loss_fn(self.model, batch, True)
            means = {k: tf.reduce_sum(tf.cast(v, tf.float32)) / self.cfg.batch_size for k, v in terms.items()}
            scaled = self.optimizer.scale_loss(means["loss"])
        return means, tape.gradient(scaled, variables)

    def _clip(self, grads: list[tf.Tensor]) -> list[tf.Tensor]:
        """Scales every replica's gradient so the all-reduced one has norm <= clip_norm.

        (Keras clips before its own all-reduce, i.e. per replica, hence this extra all-reduce.)
        """
        ctx = tf.distribute.get_replica_context()
        total = ctx.all_reduce(tf.distribute.ReduceOp.SUM, grads) if self.setup.num_replicas > 1 else grads
        norm = tf.linalg.global_norm(total)
        limit = tf.constant(self.cfg.clip_norm, tf.float32)
        if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
            limit = limit * tf.cast(self.optimizer.dynamic_scale, tf.float32)
        factor = tf.minimum(1.0, limit / tf.maximum(norm, 1e-30))
        return [None if g is None else g * tf.cast(factor, g.dtype) for g in grads]

    def _agree_on_finite(self, grads: list[tf.Tensor]) -> list[tf.Tensor]:
        """float16 with several replicas: if any replica's gradient is not finite, makes every replica's so.

        Keras' LossScaleOptimizer decides "finite, apply" or "overflow, skip and halve the scale" from
        the first replica's gradients, before they are summed: an overflow on another replica would
        then reach the weights through the all-reduce. With the flag all-reduced first, every replica
        skips the step and the scale drops once.
        """
        local = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads if g is not None])
        ctx = tf.distribute.get_replica_context()
        overflows = ctx.all_reduce(tf.distribute.ReduceOp.SUM, 1.0 - tf.cast(local, tf.float32))  # replicas
        everywhere = tf.equal(overflows, 0.0)
        return [None if g is None else tf.where(everywhere, g, tf.constant(float("inf"), g.dtype)) for g in grads]

    def _replica_step(self, batch: Any) -> dict[str, tf.Tensor]:
        means, grads = self._grads(batch)
        if self.setup.loss_scaling and self.setup.num_replicas > 1:
            grads = self._agree_on_finite(grads)
        if self.cfg.clip_norm:
            grads = self._clip(grads)
        self.optimizer.apply(grads, self.model.trainable_variables)
        return means

    def _distributed_step(self, batch: Any) -> dict[str, tf.Tensor]:
        per_replica = self.strategy.run(self._replica_step, args=(batch,))
        return {k: self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for k, v in per_replica.items()}

    def _train_steps(self, iterator: Any, n: tf.Tensor) -> dict[str, tf.Tensor]:
        terms = self._distributed_step(next(iterator))
        for _ in tf.range(n - 1):
            new = self._distributed_step(next(iterator))
            terms = {k: terms[k] + new[k] for k in terms}
        return {k: v / tf.cast(n, tf.float32) for k, v in terms.items()}

    def _distributed_eval_step(self, batch: Any) -> dict[str, tf.Tensor]:
        def replica(batch: Any) -> dict[str, tf.Tensor]:
            terms = self.task.loss_fn(self.model, batch, False)
            sums = {k: tf.reduce_sum(tf.cast(v, tf.float32)) for k, v in terms.items()}
            sums["_count"] = tf.cast(tf.shape(terms["loss"])[0], tf.float32)
            return sums

        per_replica = self.strategy.run(replica, args=(batch,))
        return {k: self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for k, v in per_replica.items()}

    def evaluate(self, dataset: Any, max_batches: int | None = None) -> dict[str, float]:
        """Mean loss terms over one pass of a distributed dataset (at most ``max_batches`` global batches)."""
        totals: dict[str, float] = {}
        for i, batch in enumerate(dataset):
            if max_batches is not None and i >= max_batches:
                break
            for k, v in self._eval_step(batch).items():
                totals[k] = totals.get(k, 0.0) + float(v)
        count = totals.pop("_count", 0.0)
        return {k: v / count for k, v in totals.items()} if count else {}
