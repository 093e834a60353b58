"""The one training run for V and M: a model, a per-example loss, a strategy; everything else here.

A model-specific binary describes its job as a :class:`wm.training.trainer.Task` (how to build the
model, the per-example loss terms, the input pipelines, optional summaries) and calls :func:`run`
with a :class:`wm.core.distribute.Setup` and a :class:`wm.training.trainer.LoopConfig` (or
:func:`run_stage` with its :class:`TrainFlags`). The update itself is
:class:`wm.training.trainer.Trainer`'s; the ``--deterministic`` input is
:mod:`wm.training.deterministic`'s. This module owns the run, in the phases of
:class:`SupervisedRunner` (the logging, triggers and stop handling through the skeleton in
:mod:`wm.training.loop`, shared with CMA-ES and PPO; the workdir files through :mod:`wm.core.workdir`):

* input comes from ``strategy.distribute_datasets_from_function`` (each pipeline gets an
  ``InputContext`` and yields per-replica batches);
* checkpoints (step, model, optimizer) through ``tf.train.CheckpointManager`` in
  ``WORKDIR/checkpoints``, resumed automatically; ``steps`` is the total, so rerunning with a
  larger value continues;
* a non-finite loss stops the run with :class:`DivergedError` before anything is saved: the
  last checkpoint is the last good state;
* ``WORKDIR/metrics.jsonl`` (one JSON object per logged step: ``step``, ``split``, ``loss``
  and every other term), TensorBoard in ``WORKDIR/tensorboard/{train,eval}``, a profiler trace
  for a ``(first, last)`` step window, a tqdm bar with items/s, an evaluation pass every
  ``eval_every`` steps and at the end, and the task's summary hook (images for V).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import sys
from collections.abc import Iterator
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
from wm.training.trainer import DatasetFn, LoopConfig, Task, Trainer


class DivergedError(UsageError):
    """The loss became NaN or infinite; the run stopped without saving a checkpoint."""


class WorkerLostError(OneLineError, RuntimeError):
    """Another worker of a multi-worker run stopped (killed, crashed, its host gone) mid-step."""


# what a collective raises when a peer is gone (TensorFlow's coordination service reports it)
_PEER_ERRORS = (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.CancelledError)


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


def _preemption_handler(setup: Setup, manager: tf.train.CheckpointManager, step: tf.Variable) -> Any:
    """TensorFlow's own preemption support for a multi-worker run, or None for other strategies.

    ``tf.distribute.experimental.PreemptionCheckpointHandler`` watches SIGTERM on every worker
    (and GCE maintenance notices); when any worker receives one, all of them save at the same
    step (the chief into ``checkpoints/``, the others into their temporary directories) and
    then stop through :class:`tfrecords.runtime.cli.Terminated`, like a local SIGTERM: exit 143,
    rerun to resume. Single-host strategies (default, mirrored, a one-host TPU VM) keep the
    loop's own handler (:meth:`SupervisedRunner.save_on_interrupt`). Its restore reads the manager's directory:
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


# ---------------------------------------------------------------- the run, in phases


class SupervisedRunner:
    """One run of :func:`run`, in phases (dopamine's ``Runner``) that a subclass can override or a test call alone::

        prepare()                    the loop settings and the workdir checked, config.json
        restore() -> int             the Trainer, the checkpoint manager, the resume; the step to start at
        open_input()                 the distributed pipelines (a --deterministic resume skips what it trained on)
        with session():              self.log (metrics.jsonl, TensorBoard, bar), Ctrl-C (save_on_interrupt),
                                     a multi-worker run's preemption handler; the cleanup
            run_one_segment()        until --steps:
                next_boundary()      the next step that logs, evaluates, checkpoints, profiles or ends
                train_segment(n)     the steps up to it, in one compiled call
                log_train(terms)     metrics.jsonl, TensorBoard, the bar (every --log_every)
                evaluate()           the held-out loss and the task's summaries (every eval_every, at the end)
                checkpoint(finished) checkpoints/ (every --checkpoint_every, at the end; or when preempted)
        finish() -> dict             the result

    The phases share the trainer, the checkpoint manager, the step counters and the log: ``restore`` sets
    ``trainer``, ``manager``, ``start``, ``step`` (global steps done) and ``result`` (what :func:`run`
    returns); ``open_input`` sets ``iterator`` and ``eval_ds``; ``session`` sets ``log`` and ``preemption``.
    """

    trainer: Trainer
    manager: tf.train.CheckpointManager
    start: int
    step: int
    result: dict[str, Any]
    iterator: Iterator[Any]
    eval_ds: Any  # a distributed dataset, or None
    log: RunLog
    preemption: Any  # tf.distribute.experimental.PreemptionCheckpointHandler, or None

    def __init__(self, task: Task, setup: Setup, cfg: LoopConfig, extra_config: dict | None = None):
        self.task, self.setup, self.cfg, self.extra_config = task, setup, cfg, extra_config
        self.chief = setup.is_chief
        profile = cfg.profile_steps
        self.marks = [profile[0] - 1, profile[1]] if profile else []  # where the profiler starts and stops
        self.profiling = False
        self.worker_dir: str | None = None  # a non-chief worker's temporary checkpoint directory

    def run(self) -> dict:
        """Trains to ``cfg.steps`` total steps, resuming from ``cfg.workdir``; returns :meth:`finish`'s result."""
        name, cfg = self.task.name, self.cfg
        self.prepare()
        start = self.restore()
        if start >= cfg.steps:
            print(
                f"{name}: {cfg.workdir} is already at step {start} >= --steps {cfg.steps}; nothing to do",
                file=sys.stderr,
            )
            return self.result
        if start:
            print(f"{name}: resuming from step {start}", file=sys.stderr)
        self.open_input()
        with self.session():
            while self.step < cfg.steps:
                self.run_one_segment()
        return self.finish()

    def prepare(self) -> None:
        """Checks the loop settings and that the workdir is this model's (UsageError); the chief writes config.json."""
        task, cfg = self.task, self.cfg
        validate_loop(cfg)
        check_workdir(cfg.workdir, task.name, task.arch)
        config = {
            "model": task.name,
            "arch": task.arch,
            "loop": dataclasses.asdict(cfg),
            "setup": self.setup.describe(),
            **(self.extra_config or {}),
        }
        if self.chief:
            write_config(cfg.workdir, config)

    def restore(self) -> int:
        """Model, optimizer and checkpoint manager, restored from the last checkpoint if there is one (UsageError
        if it does not fit); returns the step to start at."""
        cfg, setup = self.cfg, self.setup
        trainer = self.trainer = Trainer(self.task, setup, cfg)
        ckpt = tf.train.Checkpoint(step=trainer.step, model=trainer.model, optimizer=trainer.optimizer)
        if not self.chief:
            self.worker_dir = fileio.join(cfg.workdir, "tmp", f"worker_{setup.strategy.cluster_resolver.task_id}")
        self.manager = tf.train.CheckpointManager(
            ckpt, self.worker_dir or workdir_lib.checkpoint_dir(cfg.workdir), max_to_keep=cfg.keep_checkpoints
        )
        # Every worker resumes from the chief's checkpoints (non-chief workers only write to their own
        # temporary directories, which are removed at the end): all replicas start at the same step.
        resume_from = workdir_lib.latest_checkpoint(cfg.workdir)
        if resume_from:
            try:
                ckpt.restore(resume_from).assert_existing_objects_matched()
            except (ValueError, AssertionError, tf.errors.InvalidArgumentError) as e:
                first = str(e).strip().splitlines()[0][:200]
                raise UsageError(f"cannot resume from {resume_from}: incompatible checkpoint ({first})") from None
        self.start = self.step = int(trainer.step.numpy())
        self.result = {"step": self.start, "train": {}, "eval": {}}
        return self.start

    def open_input(self) -> None:
        """The distributed training iterator and held-out dataset (None without ``Task.eval_data``)."""
        task, start, strategy = self.task, self.start, self.setup.strategy
        train_data: DatasetFn = task.train_data
        if self.cfg.deterministic and start:
            # a deterministic pipeline (replica_shares) holds one element per local replica and global
            # batch, taken in turn by the worker's replicas: skipping start x local replicas elements
            # skips the first `start` global batches on every worker
            def skipped(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
                local_replicas = ctx.num_replicas_in_sync // ctx.num_input_pipelines
                return task.train_data(ctx).skip(start * local_replicas)

            train_data = skipped
        self.iterator = iter(strategy.distribute_datasets_from_function(train_data))
        self.eval_ds = strategy.distribute_datasets_from_function(task.eval_data) if task.eval_data else None

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """The segments' surroundings: ``self.log`` (metrics past the restored step dropped), Ctrl-C and SIGTERM
        (the steps done are saved first, :meth:`save_on_interrupt`), a multi-worker run's preemption handler;
        on the way out, the profiler stopped and a non-chief worker's temporary directory removed."""
        cfg, start = self.cfg, self.start
        self.log = log = RunLog(
            self.task.name,
            cfg.workdir,
            total=cfg.steps * cfg.batch_size,
            initial=start * cfg.batch_size,
            unit="item",
            unit_scale=True,
            splits=("train", "eval"),
            chief=self.chief,
            progress=cfg.progress,
        )
        log.keep_only(lambda e: e.get("step", 0) <= start)
        try:
            with stopping(self.save_on_interrupt):
                # made inside, as its SIGTERM handler must replace stopping's
                self.preemption = _preemption_handler(self.setup, self.manager, self.trainer.step)
                yield
        finally:
            if self.profiling:
                tf.profiler.experimental.stop()
            log.close()
            if self.worker_dir is not None and tf.io.gfile.exists(self.worker_dir):
                tf.io.gfile.rmtree(self.worker_dir)

    def run_one_segment(self) -> dict[str, float]:
        """The steps up to the next boundary, then the log line, evaluation and checkpoint that are due there.
        Returns the segment's mean loss terms."""
        cfg = self.cfg
        terms = self.train_segment(self.next_boundary() - self.step)
        finished = self.step == cfg.steps
        if due(self.step, cfg.log_every, finished):
            self.log_train(terms)
        if due(self.step, cfg.eval_every) or finished:
            self.evaluate()
        self.checkpoint(finished)
        return terms

    def next_boundary(self) -> int:
        """The step after which control must return to Python (log, checkpoint, eval, profile, end)."""
        cfg, step = self.cfg, self.step
        nxt = min(step + cfg.steps_per_loop, cfg.steps)
        for e in (cfg.log_every, cfg.checkpoint_every, cfg.eval_every):
            if e > 0:
                nxt = min(nxt, (step // e + 1) * e)
        for m in self.marks:
            if m > step:
                nxt = min(nxt, m)
        return nxt

    def train_segment(self, n: int) -> dict[str, float]:
        """``n`` optimizer steps in one compiled call (traced when inside ``profile_steps``); their mean loss terms.

        Raises WorkerLostError when a peer of a multi-worker run is gone, DivergedError on a non-finite loss
        (before anything is saved: the last checkpoint is the last good state).
        """
        profile = self.cfg.profile_steps
        if profile and self.step == profile[0] - 1 and not self.profiling:
            tf.profiler.experimental.start(fileio.join(self.cfg.workdir, "tensorboard", "train"))
            self.profiling = True
        try:
            terms = {k: float(v) for k, v in self.trainer.train_steps(self.iterator, tf.constant(n, tf.int64)).items()}
        except _PEER_ERRORS as e:
            if not isinstance(self.setup.strategy, tf.distribute.MultiWorkerMirroredStrategy):
                raise
            raise self._worker_lost(e, n) from None
        self.step += n
        if not math.isfinite(terms["loss"]):
            raise self._diverged(terms["loss"])
        self.trainer.step.assign(self.step)
        self.log.advance(n * self.cfg.batch_size)
        if self.profiling and profile and self.step >= profile[1]:
            tf.profiler.experimental.stop()
            self.profiling = False
        return terms

    def _worker_lost(self, e: Exception, n: int) -> WorkerLostError:
        """The one-line error for a collective that failed because a peer stopped during the next ``n`` steps."""
        workdir = self.cfg.workdir
        last = self.manager.latest_checkpoint if self.chief else workdir_lib.latest_checkpoint(workdir)
        lines = (getattr(e, "message", "") or str(e)).strip().splitlines()
        peer = next((ln.strip() for ln in lines if "unhealthy" in ln or "Socket closed" in ln), "")
        cause = f"{type(e).__name__}{': ' + peer[:120] if peer else ''}"
        return WorkerLostError(
            f"a worker of the multi-worker run stopped during steps {self.step + 1}..{self.step + n} ({cause}); "
            f"rerun the same command on every worker to resume from "
            f"{os.path.basename(last) if last else 'the start'}"
        )

    def _diverged(self, loss: float) -> DivergedError:
        """The one-line error for a non-finite loss at the current step."""
        last = self.manager.latest_checkpoint
        kept = f"the last checkpoint ({os.path.basename(last)}) is kept" if last else "no checkpoint was saved"
        return DivergedError(
            f"loss is {loss} at step {self.step}: training diverged; stopped without saving, "
            f"{kept}; try a lower --learning_rate"
        )

    def log_train(self, terms: dict[str, float]) -> None:
        """The segment's loss terms and the items/s since the last line: metrics.jsonl, TensorBoard, the bar."""
        step, log = self.step, self.log
        rate = log.rate(step * self.cfg.batch_size)
        self.result["train"] = terms
        log.advance(0, f"loss={terms['loss']:.4g}")
        log.record(
            {"step": step, "split": "train", "items_per_sec": rate, **terms},
            step=step,
            scalars={**terms, "items_per_sec": rate},
            split="train",
        )

    def evaluate(self) -> None:
        """The mean loss terms over the held-out split (metrics.jsonl, TensorBoard ``eval``), then the task's
        summaries (chief only)."""
        task, step, log = self.task, self.step, self.log
        if self.eval_ds is not None:
            terms = self.trainer.evaluate(self.eval_ds, self.cfg.eval_batches)
            if not terms:
                log.say(f"{task.name} step {step}: the held-out split gave no full batch; no eval loss")
            else:
                self.result["eval"] = terms
                log.record({"step": step, "split": "eval", **terms}, step=step, scalars=terms, split="eval")
                log.say(f"{task.name} step {step}: eval " + " ".join(f"{k}={v:.4g}" for k, v in terms.items()))
        if task.summary_fn is not None and self.chief:
            with log.writer("train").as_default(step=step):
                task.summary_fn(self.trainer.model, step)
            log.writer("train").flush()

    def checkpoint(self, finished: bool) -> None:
        """``checkpoints/`` every ``checkpoint_every`` steps and at the end; between them, on a multi-worker run,
        the collective save of a preempted run."""
        if due(self.step, self.cfg.checkpoint_every, finished):
            self.manager.save(checkpoint_number=self.step)
        elif self.preemption is not None:
            # every worker calls this once per loop iteration: they agree on the step to save at
            self.preemption.save_checkpoint_if_preempted(checkpoint_number=self.step)

    def save_on_interrupt(self) -> None:
        """Ctrl-C: checkpoints the steps done since the last checkpoint, so that a rerun loses none.

        The interrupt arrives between Python statements, so the weights are at a step boundary
        (if it lands just after a training call returned, that call's steps are counted again on
        resume: harmless). Nothing is saved from non-finite weights, by a multi-worker run (its
        save is collective) or by a non-chief worker.
        """
        name, trainer, manager, step = self.task.name, self.trainer, self.manager, self.step
        last = manager.latest_checkpoint
        if (
            step <= self.start
            or not self.chief
            or isinstance(self.setup.strategy, tf.distribute.MultiWorkerMirroredStrategy)
        ):
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

    def finish(self) -> dict:
        """``{"step": ..., "train": last logged train terms, "eval": last eval terms}``."""
        self.result["step"] = self.step
        return self.result


def run(task: Task, setup: Setup, cfg: LoopConfig, extra_config: dict | None = None) -> dict:
    """Trains ``task`` to ``cfg.steps`` total steps, resuming from ``cfg.workdir`` (:class:`SupervisedRunner`).

    Returns ``{"step": ..., "train": last logged train terms, "eval": last eval terms}``.
    Raises UsageError for a foreign or incompatible workdir and DivergedError on NaN/inf loss.
    """
    return SupervisedRunner(task, setup, cfg, extra_config).run()


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
