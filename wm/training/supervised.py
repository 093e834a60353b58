"""The one training loop for V and M: a model, a per-example loss, a strategy; everything else here.

A model-specific binary describes its job as a :class:`Task` (how to build the model, the
per-example loss terms, the input pipelines, optional summaries) and calls :func:`run` with a
:class:`wm.core.distribute.Setup` and a :class:`LoopConfig`. This module owns the rest (the
logging, triggers and stop handling through the skeleton in :mod:`wm.training.loop`, shared with
CMA-ES and PPO; the workdir files through :mod:`wm.core.workdir`):

* variables, optimizer slots and the step counter are created under ``strategy.scope()``;
  the optimizer is built explicitly before the first ``strategy.run``;
* the loss is summed per replica and divided by the GLOBAL batch, so gradients summed over
  replicas equal the single-device gradient of the batch mean;
* input comes from ``strategy.distribute_datasets_from_function`` (each pipeline gets an
  ``InputContext`` and yields per-replica batches);
* ``steps_per_loop`` steps run inside one ``tf.function`` call; the per-replica gradient
  computation is XLA-compiled when ``Setup.jit_compile``;
* float16 uses Keras 3's ``LossScaleOptimizer`` (``scale_loss`` before the tape,
  ``apply`` unscales and skips non-finite steps);
* optional global-norm clipping of the all-reduced gradient (``LoopConfig.clip_norm``);
* checkpoints (step, model, optimizer) through ``tf.train.CheckpointManager`` in
  ``WORKDIR/checkpoints``, resumed automatically; ``steps`` is the total, so rerunning with a
  larger value continues;
* a non-finite loss stops the run with :class:`DivergedError` before anything is saved: the
  last checkpoint is the last good state;
* ``WORKDIR/metrics.jsonl`` (one JSON object per logged step: ``step``, ``split``, ``loss``
  and every other term), TensorBoard in ``WORKDIR/tensorboard/{train,eval}``, a profiler trace
  for a ``(first, last)`` step window, a tqdm bar with items/s, an evaluation pass every
  ``eval_every`` steps and at the end, and the task's summary hook (images for V).

Library code stays eager-debuggable: nothing here is compiled until :class:`Trainer` wraps it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

import keras
import tensorflow as tf

from tfrecords.runtime import fileio
from tfrecords.runtime.cli import option
from tfrecords.runtime.errors import OneLineError, UsageError
from wm.core import distribute
from wm.core import workdir as workdir_lib
from wm.core.distribute import Setup
from wm.core.workdir import latest_checkpoint, write_config
from wm.training.loop import RunLog, due, stopping

LossFn = Callable[[keras.Model, Any, bool], Mapping[str, tf.Tensor]]
DatasetFn = Callable[[tf.distribute.InputContext], tf.data.Dataset]


class DivergedError(UsageError):
    """The loss became NaN or infinite; the run stopped without saving a checkpoint."""


class WorkerLostError(OneLineError, RuntimeError):
    """Another worker of a multi-worker run stopped (killed, crashed, its host gone) mid-step."""


# what a collective raises when a peer is gone (TensorFlow's coordination service reports it)
_PEER_ERRORS = (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.CancelledError)


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


@dataclasses.dataclass
class TrainFlags:
    """The settings (and flags) ``python -m wm.train_vae`` and ``wm.train_mdnrnn`` share."""

    workdir: str = option(help="Run directory (config, checkpoints, TensorBoard, metrics.jsonl).", required=True)
    strategy: str = option("default", help="Distribution strategy.", choices=distribute.STRATEGIES)
    tpu: str = option("", help="TPU name or address for --strategy=tpu.")
    batch_size: int = option(100, help="Global batch size.", min=1)
    learning_rate: float = option(1e-4, help="Adam learning rate.", above=0)
    steps: int = option(0, help="Total training steps (overrides --epochs; rerun with more to continue).", min=0)
    epochs: int = option(10, help="Epochs over the training shards, if --steps is 0.", min=0)
    mixed_precision: str = option(
        "auto", help="auto: float16 on GPU, bfloat16 on TPU, off on CPU.", choices=distribute.PRECISIONS
    )
    jit_compile: str = option("auto", help="XLA; auto: on for GPU/TPU, off on CPU.", choices=distribute.JIT_MODES)
    steps_per_loop: int = option(10, help="Steps per compiled call.", min=1)
    profile_steps: str = option("", help="Profile steps FIRST,LAST (e.g. 10,15) into TensorBoard.")
    eval_shards: int = option(1, help="Last shards held out for the per-epoch eval loss (0: none).", min=0)
    log_every: int = option(100, help="Log metrics every N steps.", min=1)
    checkpoint_every: int = option(1000, help="Checkpoint every N steps.", min=1)
    seed: int | None = option(None, help="Seed for initialization, sampling and shuffling (default: random).")
    deterministic: bool = option(
        False,
        help="With --seed: the same global batches and sampling noise in the same order on every run and "
        "whatever the number of workers and replicas, so that a resumed run continues exactly as an "
        "uninterrupted one (same weights) and matches a single-device run within float tolerance. Slower "
        "input: one reader thread, ordered maps, every worker reads all the training data (keeping its "
        "replicas' rows of each global batch), a resume reads through the batches already trained on.",
    )
    progress: bool = option(True, help="Show a progress bar.")


def total_steps(cfg: TrainFlags, steps_per_epoch: int, source: str, sized: bool) -> int:
    """``--steps``, or ``--epochs`` epochs of ``steps_per_epoch``; UsageError if ``source`` has no
    manifest to size an epoch with (``sized`` False)."""
    if cfg.steps:
        return cfg.steps
    if not sized:
        raise UsageError(f"{source} has no manifest to size an epoch; pass --steps")
    return cfg.epochs * steps_per_epoch


def setup_from_flags(cfg: TrainFlags) -> Setup:
    """The strategy, precision and XLA choice the flags ask for; seeds Keras when ``--seed`` is set."""
    setup = distribute.setup(cfg.strategy, cfg.tpu or None, cfg.mixed_precision, cfg.jit_compile)
    if cfg.seed is not None:
        keras.utils.set_random_seed(cfg.seed)
    return setup


def check_train_flags(cfg: TrainFlags) -> None:
    """The cross-field checks V and M share (after ``tfrecords.runtime.cli.check``)."""
    if not cfg.steps and not cfg.epochs:
        raise UsageError("set --steps or --epochs")
    if cfg.deterministic and cfg.seed is None:
        raise UsageError("--deterministic needs --seed")
    parse_profile_steps(cfg.profile_steps)


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

    def mine(x):
        y = tf.reshape(x[first * rows : (first + local) * rows], tf.concat([[local, rows], tf.shape(x)[1:]], 0))
        y.set_shape([local, rows, *x.shape[1:]])
        return y

    def split(n, batch):
        ids = tf.range(first, first + local, dtype=tf.int64)
        keys = tf.stack([tf.fill([local], tf.constant(seed, tf.int64)), tf.fill([local], n), ids * rows], 1)
        return tf.data.Dataset.from_tensor_slices((tf.nest.map_structure(mine, batch), keys))

    return global_batches.enumerate().flat_map(split).prefetch(tf.data.AUTOTUNE)


def replica_normal(shape, key: tf.Tensor, global_batch: int, dtype=tf.float32) -> tf.Tensor:
    """Standard normal noise of ``shape`` (this replica's rows first) for a key of :func:`replica_shares`.

    Draws ``[global_batch, *shape[1:]]`` statelessly from ``key[:2]`` and returns the rows from
    ``key[2]`` on: what a single device training on the whole global batch draws for these examples.
    """
    shape = tf.convert_to_tensor(shape, tf.int32)
    full = tf.random.stateless_normal(tf.concat([[global_batch], shape[1:]], 0), key[:2], dtype=dtype)
    begin = tf.concat([[tf.cast(key[2], tf.int32)], tf.zeros_like(shape[1:])], 0)
    return tf.slice(full, begin, shape)


def parse_profile_steps(text: str | None) -> tuple[int, int] | None:
    """``"10,15"`` -> ``(10, 15)``; empty -> None. Raises UsageError on bad input."""
    if not text:
        return None
    try:
        first, last = (int(x) for x in text.split(","))
    except ValueError:
        raise UsageError(f"--profile_steps must be 'FIRST,LAST', got {text!r}") from None
    if not 0 < first <= last:
        raise UsageError(f"--profile_steps needs 0 < FIRST <= LAST, got {text!r}")
    return first, last


def validate_loop(cfg: LoopConfig) -> None:
    """Raises UsageError for impossible loop settings."""
    if not cfg.workdir:
        raise UsageError("--workdir is required")
    for name in ("steps", "batch_size", "steps_per_loop", "log_every", "checkpoint_every", "keep_checkpoints"):
        if getattr(cfg, name) <= 0:
            raise UsageError(f"--{name} must be positive, got {getattr(cfg, name)}")
    if cfg.learning_rate <= 0 or not math.isfinite(cfg.learning_rate):
        raise UsageError(f"--learning_rate must be positive, got {cfg.learning_rate}")
    if cfg.eval_every < 0:
        raise UsageError(f"eval_every must be >= 0, got {cfg.eval_every}")
    if cfg.clip_norm is not None and cfg.clip_norm <= 0:
        raise UsageError(f"clip_norm must be positive, got {cfg.clip_norm}")


def check_workdir(workdir: str, name: str, arch: dict) -> None:
    """Refuses a workdir made for another model type or another architecture (UsageError)."""
    workdir_lib.guard(
        workdir,
        {"model": name},
        {"arch": arch},
        name,
        has_state=bool(latest_checkpoint(workdir)),
        per_key="arch",
        not_what=repr(name),
    )


def already_trained(workdir: str, name: str, arch: dict, steps: int) -> int | None:
    """The step of a workdir already trained to ``steps`` or more, else None; refuses a foreign workdir.

    Binaries check this before they build a strategy. On a multi-worker run every worker then
    skips a finished stage alone, without joining collectives that the chief (which skips it
    too) never starts.
    """
    check_workdir(workdir, name, arch)
    last = workdir_lib.latest_checkpoint(workdir)
    if not last:
        return None
    done = int(last.rsplit("-", 1)[1])
    if done < steps:
        return None
    print(f"{name}: {workdir} is already at step {done} >= --steps {steps}; nothing to do", file=sys.stderr)
    return done


def _preemption_handler(setup: Setup, manager, step: tf.Variable):
    """TensorFlow's own preemption support for a multi-worker run, or None for other strategies.

    ``tf.distribute.experimental.PreemptionCheckpointHandler`` watches SIGTERM on every worker
    (and GCE maintenance notices); when any worker receives one, all of them save at the same
    step (the chief into ``checkpoints/``, the others into their temporary directories) and
    then stop through :class:`tfrecords.runtime.cli.Terminated`, like a local SIGTERM: exit 143,
    rerun to resume. Single-host strategies (default, mirrored, a one-host TPU VM) keep the
    loop's own handler (:func:`_save_on_interrupt`). Its restore reads the manager's directory:
    on a non-chief worker that is its temporary directory, emptied first so that it cannot
    override the restore from the chief's checkpoint.
    """
    if not isinstance(setup.strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return None
    from tfrecords.runtime.cli import Terminated

    if not setup.is_chief and tf.io.gfile.exists(manager.directory):
        tf.io.gfile.rmtree(manager.directory)

    def stop() -> None:
        if setup.is_chief:
            print(f"preempted: every worker saved a checkpoint at step {int(step.numpy())}", file=sys.stderr)
        raise Terminated()

    config = tf.distribute.experimental.TerminationConfig(exit_fn=stop)
    return tf.distribute.experimental.PreemptionCheckpointHandler(
        setup.strategy.cluster_resolver, manager, termination_config=config
    )


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
    def _replica_grads(self, batch):
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            terms = self.task.loss_fn(self.model, batch, True)
            means = {k: tf.reduce_sum(tf.cast(v, tf.float32)) / self.cfg.batch_size for k, v in terms.items()}
            scaled = self.optimizer.scale_loss(means["loss"])
        return means, tape.gradient(scaled, variables)

    def _clip(self, grads):
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

    def _agree_on_finite(self, grads):
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

    def _replica_step(self, batch):
        means, grads = self._grads(batch)
        if self.setup.loss_scaling and self.setup.num_replicas > 1:
            grads = self._agree_on_finite(grads)
        if self.cfg.clip_norm:
            grads = self._clip(grads)
        self.optimizer.apply(grads, self.model.trainable_variables)
        return means

    def _distributed_step(self, batch):
        per_replica = self.strategy.run(self._replica_step, args=(batch,))
        return {k: self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for k, v in per_replica.items()}

    def _train_steps(self, iterator, n):
        terms = self._distributed_step(next(iterator))
        for _ in tf.range(n - 1):
            new = self._distributed_step(next(iterator))
            terms = {k: terms[k] + new[k] for k in terms}
        return {k: v / tf.cast(n, tf.float32) for k, v in terms.items()}

    def _distributed_eval_step(self, batch):
        def replica(batch):
            terms = self.task.loss_fn(self.model, batch, False)
            sums = {k: tf.reduce_sum(tf.cast(v, tf.float32)) for k, v in terms.items()}
            sums["_count"] = tf.cast(tf.shape(terms["loss"])[0], tf.float32)
            return sums

        per_replica = self.strategy.run(replica, args=(batch,))
        return {k: self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for k, v in per_replica.items()}

    def evaluate(self, dataset, max_batches: int | None = None) -> dict[str, float]:
        """Mean loss terms over one pass of a distributed dataset (at most ``max_batches`` global batches)."""
        totals: dict[str, float] = {}
        for i, batch in enumerate(dataset):
            if max_batches is not None and i >= max_batches:
                break
            for k, v in self._eval_step(batch).items():
                totals[k] = totals.get(k, 0.0) + float(v)
        count = totals.pop("_count", 0.0)
        return {k: v / count for k, v in totals.items()} if count else {}


# ---------------------------------------------------------------- the loop


def _next_boundary(step: int, cfg: LoopConfig, every: list[int], marks: list[int]) -> int:
    """The step after which control must return to Python (log, checkpoint, eval, profile, end)."""
    nxt = min(step + cfg.steps_per_loop, cfg.steps)
    for e in every:
        if e > 0:
            nxt = min(nxt, (step // e + 1) * e)
    for m in marks:
        if m > step:
            nxt = min(nxt, m)
    return nxt


def _save_on_interrupt(name: str, setup: Setup, trainer: Trainer, manager, step: int, start: int) -> None:
    """Ctrl-C: checkpoints the steps done since the last checkpoint, so that a rerun loses none.

    The interrupt arrives between Python statements, so the weights are at a step boundary
    (if it lands just after a training call returned, that call's steps are counted again on
    resume: harmless). Nothing is saved from non-finite weights, by a multi-worker run (its
    save is collective) or by a non-chief worker.
    """
    last = manager.latest_checkpoint
    if step <= start or not setup.is_chief or isinstance(setup.strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return
    if last and last.endswith(f"-{step}"):  # the stop came just after a scheduled checkpoint
        print(f"{name}: interrupted; every step done is in the checkpoint at step {step}", file=sys.stderr)
        return
    if not all(
        bool(tf.reduce_all(tf.math.is_finite(v))) for v in trainer.model.weights if tf.as_dtype(v.dtype).is_floating
    ):
        print(f"{name}: interrupted with non-finite weights; not saving them", file=sys.stderr)
        return
    trainer.step.assign(step)
    manager.save(checkpoint_number=step)
    print(f"{name}: interrupted; saved a checkpoint at step {step}", file=sys.stderr)


def run(task: Task, setup: Setup, cfg: LoopConfig, extra_config: dict | None = None) -> dict:
    """Trains ``task`` to ``cfg.steps`` total steps, resuming from ``cfg.workdir``.

    Returns ``{"step": ..., "train": last logged train terms, "eval": last eval terms}``.
    Raises UsageError for a foreign or incompatible workdir and DivergedError on NaN/inf loss.
    """
    validate_loop(cfg)
    workdir = cfg.workdir
    check_workdir(workdir, task.name, task.arch)
    chief = setup.is_chief

    # ---- config.json
    config = {
        "model": task.name,
        "arch": task.arch,
        "loop": dataclasses.asdict(cfg),
        "setup": setup.describe(),
        **(extra_config or {}),
    }
    if chief:
        write_config(workdir, config)

    # ---- model, optimizer, checkpoint; resume
    trainer = Trainer(task, setup, cfg)
    ckpt = tf.train.Checkpoint(step=trainer.step, model=trainer.model, optimizer=trainer.optimizer)
    worker_dir = None if chief else fileio.join(workdir, "tmp", f"worker_{setup.strategy.cluster_resolver.task_id}")
    manager = tf.train.CheckpointManager(
        ckpt, worker_dir or workdir_lib.checkpoint_dir(workdir), max_to_keep=cfg.keep_checkpoints
    )
    # Every worker resumes from the chief's checkpoints (non-chief workers only write to their own
    # temporary directories, which are removed at the end): all replicas start at the same step.
    resume_from = workdir_lib.latest_checkpoint(workdir)
    if resume_from:
        try:
            ckpt.restore(resume_from).assert_existing_objects_matched()
        except (ValueError, AssertionError, tf.errors.InvalidArgumentError) as e:
            first = str(e).strip().splitlines()[0][:200]
            raise UsageError(f"cannot resume from {resume_from}: incompatible checkpoint ({first})") from None
    start = int(trainer.step.numpy())
    result = {"step": start, "train": {}, "eval": {}}
    if start >= cfg.steps:
        print(
            f"{task.name}: {workdir} is already at step {start} >= --steps {cfg.steps}; nothing to do", file=sys.stderr
        )
        return result
    if start:
        print(f"{task.name}: resuming from step {start}", file=sys.stderr)

    # ---- input
    train_data = task.train_data
    if cfg.deterministic and start:
        # a deterministic pipeline (replica_shares) holds one element per local replica and global
        # batch, taken in turn by the worker's replicas: skipping start x local replicas elements
        # skips the first `start` global batches on every worker
        def train_data(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
            local_replicas = ctx.num_replicas_in_sync // ctx.num_input_pipelines
            return task.train_data(ctx).skip(start * local_replicas)

    train_ds = setup.strategy.distribute_datasets_from_function(train_data)
    iterator = iter(train_ds)
    eval_ds = setup.strategy.distribute_datasets_from_function(task.eval_data) if task.eval_data else None

    # ---- summaries, progress
    log = RunLog(
        task.name,
        workdir,
        total=cfg.steps * cfg.batch_size,
        initial=start * cfg.batch_size,
        unit="item",
        unit_scale=True,
        splits=("train", "eval"),
        chief=chief,
        progress=cfg.progress,
    )
    log.keep_only(lambda e: e.get("step", 0) <= start)
    profile = cfg.profile_steps
    marks = [profile[0] - 1, profile[1]] if profile else []
    profiling = False

    def do_eval(step: int) -> None:
        if eval_ds is not None:
            terms = trainer.evaluate(eval_ds, cfg.eval_batches)
            if not terms:
                log.say(f"{task.name} step {step}: the held-out split gave no full batch; no eval loss")
            else:
                result["eval"] = terms
                log.record({"step": step, "split": "eval", **terms}, step=step, scalars=terms, split="eval")
                log.say(f"{task.name} step {step}: eval " + " ".join(f"{k}={v:.4g}" for k, v in terms.items()))
        if task.summary_fn is not None and chief:
            with log.writer("train").as_default(step=step):
                task.summary_fn(trainer.model, step)
            log.writer("train").flush()

    # ---- loop
    step = start
    try:
        with stopping(lambda: _save_on_interrupt(task.name, setup, trainer, manager, step, start)):
            # made inside, as its SIGTERM handler must replace stopping's
            preemption = _preemption_handler(setup, manager, trainer.step)
            while step < cfg.steps:
                if profile and step == profile[0] - 1 and not profiling:
                    tf.profiler.experimental.start(fileio.join(workdir, "tensorboard", "train"))
                    profiling = True
                n = _next_boundary(step, cfg, [cfg.log_every, cfg.checkpoint_every, cfg.eval_every], marks) - step
                try:
                    terms = {k: float(v) for k, v in trainer.train_steps(iterator, tf.constant(n, tf.int64)).items()}
                except _PEER_ERRORS as e:
                    if not isinstance(setup.strategy, tf.distribute.MultiWorkerMirroredStrategy):
                        raise
                    last = manager.latest_checkpoint if chief else workdir_lib.latest_checkpoint(workdir)
                    lines = (getattr(e, "message", "") or str(e)).strip().splitlines()
                    peer = next((ln.strip() for ln in lines if "unhealthy" in ln or "Socket closed" in ln), "")
                    cause = f"{type(e).__name__}{': ' + peer[:120] if peer else ''}"
                    raise WorkerLostError(
                        f"a worker of the multi-worker run stopped during steps {step + 1}..{step + n} ({cause}); "
                        f"rerun the same command on every worker to resume from "
                        f"{os.path.basename(last) if last else 'the start'}"
                    ) from None
                step += n
                if not math.isfinite(terms["loss"]):
                    last = manager.latest_checkpoint
                    kept = (
                        f"the last checkpoint ({os.path.basename(last)}) is kept" if last else "no checkpoint was saved"
                    )
                    raise DivergedError(
                        f"loss is {terms['loss']} at step {step}: training diverged; stopped without saving, "
                        f"{kept}; try a lower --learning_rate"
                    )
                trainer.step.assign(step)
                log.advance(n * cfg.batch_size)
                if profiling and step >= profile[1]:
                    tf.profiler.experimental.stop()
                    profiling = False
                finished = step == cfg.steps
                if due(step, cfg.log_every, finished):
                    rate = log.rate(step * cfg.batch_size)
                    result["train"] = terms
                    log.advance(0, f"loss={terms['loss']:.4g}")
                    log.record(
                        {"step": step, "split": "train", "items_per_sec": rate, **terms},
                        step=step,
                        scalars={**terms, "items_per_sec": rate},
                        split="train",
                    )
                if due(step, cfg.eval_every) or finished:
                    do_eval(step)
                if due(step, cfg.checkpoint_every, finished):
                    manager.save(checkpoint_number=step)
                elif preemption is not None:
                    # every worker calls this once per loop iteration: they agree on the step to save at
                    preemption.save_checkpoint_if_preempted(checkpoint_number=step)
        result["step"] = step
        return result
    finally:
        if profiling:
            tf.profiler.experimental.stop()
        log.close()
        if worker_dir is not None and tf.io.gfile.exists(worker_dir):
            tf.io.gfile.rmtree(worker_dir)


def run_stage(
    task: Task,
    setup: Setup,
    cfg: TrainFlags,
    steps: int,
    steps_per_epoch: int,
    split: tuple[list[str], list[str]],
    **loop: Any,
) -> dict:
    """:func:`run` with the loop settings of a V/M binary's flags, evaluating once an epoch when there
    is a held-out split. ``split`` is (training shards, held-out shards); ``config.json`` records it
    with the flags. ``loop`` sets the other :class:`LoopConfig` fields (``eval_batches``, ``clip_norm``)."""
    train_files, eval_files = split
    loop_cfg = LoopConfig(
        workdir=cfg.workdir,
        steps=steps,
        batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        steps_per_loop=cfg.steps_per_loop,
        log_every=cfg.log_every,
        checkpoint_every=cfg.checkpoint_every,
        eval_every=steps_per_epoch if eval_files else 0,
        profile_steps=parse_profile_steps(cfg.profile_steps),
        progress=cfg.progress,
        deterministic=cfg.deterministic,
        **loop,
    )
    extra = {
        "flags": dataclasses.asdict(cfg),
        "train_shards": train_files,
        "eval_shards": eval_files,
        "steps_per_epoch": steps_per_epoch,
    }
    return run(task, setup, loop_cfg, extra)
