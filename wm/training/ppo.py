"""C trained with PPO in the real environment on V and M's features: the loop behind ``python -m wm.train_ppo``.

The policy sees the same [z, h] as the CMA-ES controller and acts through the same batched
V + M step (``wm.agents.ppo.PPOPolicy``), in ``envs`` environments stepped by ``workers``
processes (``data_gen.envpool``) or, with ``ray_address``, Ray actors (``data_gen.ray_envpool``: the
same central layout, every step's frames sent to this process, which runs V + M + the policy and
the update; the same seeds give the same rollouts and weights as local processes). Each update
collects ``rollout_len`` steps from every environment, then runs ``epochs`` passes of
``minibatch_size`` minibatches (the model and the squashed Gaussian are ``wm.models.actor_critic``'s,
the losses and the update ``wm.training.ppo_update``'s, the rollouts ``wm.agents.ppo``'s). Training
tracks come from the training seed stream of ``wm.agents.loading.track_seeds``, so ``wm.evaluate``'s
tracks are unseen. :class:`PPORunner` is the loop, in phases.

Resume: after every update the actor-critic, the optimizer, both random generators and the
counters are checkpointed (``WORKDIR/checkpoints``, ``tf.train.CheckpointManager``: the index is
written last, so a half-written checkpoint is never loaded). ``env_steps`` is the TOTAL budget:
rerunning with a larger value continues (episodes in flight when the run stopped are not
resumed; new tracks start). Each update adds ``envs x rollout_len`` steps, so the last one may
overshoot the budget by less than that.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from data_gen import ray_engine, rollout
from tfrecords.runtime import fileio
from tfrecords.runtime.cli import UsageError, check, option
from wm.agents import loading
from wm.agents.ppo import Rollout, RolloutCollector
from wm.core import distribute, workdir
from wm.training.loop import RunLog, stopping
from wm.training.ppo_update import PPOHyper, PPOTrainer

CONFIG_NAME = workdir.CONFIG_NAME
METRICS_NAME = workdir.METRICS_NAME
CHECKPOINT_DIR = workdir.CHECKPOINT_DIR

_H = PPOHyper()  # the update's defaults are written once, in PPOHyper


@dataclasses.dataclass
class TrainPPOConfig(loading.WorldFlags):
    """Everything :func:`run` needs (the flags of ``python -m wm.train_ppo``)."""

    workdir: str = option(help="Run directory (checkpoints, metrics, TensorBoard).", required=True)
    # collection
    envs: int = option(16, help="Parallel environments.", min=1)
    env_steps: int = option(1_000_000, help="TOTAL environment steps (rerun with more to continue).", min=1)
    rollout_len: int = option(128, help="Steps per environment per update.", min=1)
    # the update
    epochs: int = option(_H.epochs, help="Passes over each rollout.", min=1)
    minibatch_size: int = option(_H.minibatch_size, help="Steps per gradient step.", min=1)
    learning_rate: float = option(_H.learning_rate, help="Adam learning rate.", above=0)
    # returns and advantages
    gamma: float = option(0.99, help="Discount.", above=0, max=1)
    gae_lambda: float = option(0.95, help="GAE lambda.", min=0, max=1)
    # the losses
    clip_ratio: float = option(_H.clip_ratio, help="PPO clip epsilon.", above=0)
    entropy_coef: float = option(_H.entropy_coef, help="Entropy bonus weight.", min=0)
    value_coef: float = option(_H.value_coef, help="Value loss weight.", min=0)
    max_grad_norm: float = option(
        _H.max_grad_norm, help="Gradient clipping (global norm, actor and critic separately).", above=0
    )
    reward_scale: float = option(
        0.1, help="Rewards are multiplied by this for learning (reported returns are not).", above=0
    )
    hidden: str = option("64,64", help="Hidden tanh layer sizes of the actor and of the critic.")
    # environments
    workers: int = option(
        0, help="Environment worker processes, or Ray actors with --ray_address (0: one per core / cluster CPU).", min=0
    )
    ray_address: str = option(
        "",
        help="Step the environments in Ray actors: '' (default) local processes; 'auto' the Ray cluster this "
        "machine is part of; 'local' a new one-machine cluster; else HOST:PORT or ray://HOST:PORT. V, M and "
        "the policy stay in this process (every step's frames travel to it).",
    )
    max_steps: int = option(1000, help="Maximum steps per episode.", min=1)
    env_id: str = option(rollout.DEFAULT_ENV_ID, help="Gymnasium environment id (CarRacing-v3 for the stock one).")
    inference_precision: str = option("auto", help="V's encoder while acting.", choices=distribute.INFERENCE_PRECISIONS)
    seed: int = option(0, help="Seed for the model, sampling and the training tracks.")
    progress: bool = option(True, help="Show a progress bar.")

    def spec(self) -> dict:
        """Settings a resumed run must share with the one it continues."""
        return {k: getattr(self, k) for k in ("hidden", "seed", "max_steps", "gamma", "reward_scale")}

    def hidden_sizes(self) -> tuple[int, ...]:
        """``"64,64"`` -> ``(64, 64)``."""
        return tuple(int(x) for x in self.hidden.split(",") if x.strip())

    def hyper(self) -> PPOHyper:
        """The update's hyperparameters, by name."""
        return PPOHyper(**{f.name: getattr(self, f.name) for f in dataclasses.fields(PPOHyper)})


def validate(cfg: TrainPPOConfig) -> None:
    """Raises UsageError with a one-line message for bad settings."""
    check(cfg)
    try:
        sizes = cfg.hidden_sizes()
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) <= 0:
        raise UsageError(f"--hidden must be comma-separated positive layer sizes, got {cfg.hidden!r}")
    rollout.check_env_id(cfg.env_id)
    ray_engine.check_address(cfg.ray_address)


def _env_pool(cfg: TrainPPOConfig) -> Any:
    """The environments: ``workers`` local processes, or Ray actors (one per cluster CPU by default)."""
    if cfg.ray_address:
        from data_gen.ray_envpool import RayEnvPool

        return RayEnvPool(cfg.env_id, cfg.envs, cfg.workers or cfg.envs, cfg.max_steps, cfg.ray_address)
    from data_gen.envpool import EnvPool

    return EnvPool(cfg.env_id, cfg.envs, cfg.workers or os.cpu_count() or 1, cfg.max_steps)


class PPORunner:
    """One run of :func:`run`, in phases (dopamine's ``Runner``) that a subclass can override or a test call alone::

        setup()                    flags, the Ray cluster, the workdir's owner; the policy and the trainer
        restore()                  the counters and the checkpoint manager, from the last checkpoint if any
        write_config()             config.json
        open_log()                 self.log and self.records: metrics.jsonl cut back to the checkpointed updates
        with session():            Ctrl-C and SIGTERM, self.pool (the environments), self.collector
            run_one_update()       until --env_steps: a rollout, the update on it, then
                log_update(record) metrics.jsonl, TensorBoard (before the checkpoint: see there)
                checkpoint(update) checkpoints/
        finish() -> dict           the closing line and the result

    Resume state is the checkpoint (the actor-critic, the optimizer, both random generators and the
    ``env_steps``, ``updates``, ``episodes`` counters); the phases share it through ``self``.
    """

    keep: dict  # what a resumed run must share with this one (set by setup)
    policy: Any  # wm.agents.ppo.PPOPolicy (set by setup)
    trainer: PPOTrainer
    counters: dict[str, tf.Variable]  # set by restore
    manager: tf.train.CheckpointManager
    log: RunLog  # set by open_log
    records: list[dict]
    pool: Any  # set by session
    collector: RolloutCollector

    def __init__(self, cfg: TrainPPOConfig):
        self.cfg = cfg

    @property
    def env_steps(self) -> int:
        """Environment steps trained on so far (all runs)."""
        return int(self.counters["env_steps"])

    def run(self) -> dict:
        """Trains (or resumes) the PPO controller; returns ``{"env_steps", "updates", "records"}``."""
        cfg = self.cfg
        self.setup()
        self.restore()
        self.write_config()
        self.open_log()
        if self.env_steps >= cfg.env_steps:
            self.log.close()
            print(f"train_ppo: {cfg.workdir} is already at {self.env_steps} env steps; nothing to do", file=sys.stderr)
            return self.result()
        with self.session():
            while self.env_steps < cfg.env_steps:
                self.run_one_update()
        return self.finish()

    def setup(self) -> None:
        """Checks the flags, the Ray cluster (an unreachable one is one line now) and the workdir; seeds Keras;
        builds the policy (V + M + a fresh actor-critic) and its trainer."""
        cfg = self.cfg
        validate(cfg)
        if cfg.ray_address:  # an unreachable cluster is one line now, before the workdir or the models
            ray_engine.connect(cfg.ray_address, cfg.workers or None)
        self.keep = {"spec": cfg.spec(), "vae": fileio.abspath(cfg.vae), "mdnrnn": fileio.abspath(cfg.mdnrnn)}
        workdir.guard(
            cfg.workdir,
            {"model": "controller", "algorithm": "ppo"},
            self.keep,
            "PPO controller",
            has_state=bool(workdir.latest_checkpoint(cfg.workdir)),
        )
        keras.utils.set_random_seed(cfg.seed)
        self.policy = loading.build_ppo_policy(
            cfg.vae, cfg.mdnrnn, cfg.hidden_sizes(), seed=cfg.seed, precision=cfg.inference_precision
        )
        self.trainer = PPOTrainer(self.policy.model, cfg.hyper(), seed=cfg.seed + 1)

    def restore(self) -> None:
        """The counters and the checkpoint manager; restores the last checkpoint if there is one."""
        policy, trainer = self.policy, self.trainer
        counters = self.counters = {
            k: tf.Variable(0, dtype=tf.int64, name=k) for k in ("env_steps", "updates", "episodes")
        }
        ckpt = tf.train.Checkpoint(
            model=policy.model, optimizer=trainer.optimizer, policy_rng=policy.rng, train_rng=trainer.rng, **counters
        )
        self.manager = tf.train.CheckpointManager(ckpt, workdir.checkpoint_dir(self.cfg.workdir), max_to_keep=2)
        if self.manager.latest_checkpoint:
            ckpt.restore(self.manager.latest_checkpoint).assert_existing_objects_matched()
            print(
                f"train_ppo: resuming at {self.env_steps} env steps (update {int(counters['updates'])})",
                file=sys.stderr,
            )

    def write_config(self) -> None:
        """``config.json``: the kind of run, the model's shape, the settings a resume must keep, the flags."""
        cfg = self.cfg
        workdir.write_config(
            cfg.workdir,
            {
                "model": "controller",
                "algorithm": "ppo",
                "arch": self.policy.model.arch(),
                "env_id": cfg.env_id,
                "inference_precision": cfg.inference_precision,
                "flags": dataclasses.asdict(cfg),
                **self.keep,
            },
        )

    def open_log(self) -> None:
        """``self.log`` (metrics.jsonl, TensorBoard, the bar) and ``self.records``, the metrics of exactly the
        checkpointed updates (a killed run may have left more)."""
        cfg = self.cfg
        self.log = RunLog(
            "ppo",
            cfg.workdir,
            total=cfg.env_steps,
            initial=self.env_steps,
            unit="step",
            unit_scale=True,
            progress=cfg.progress,
        )
        self.records = self.log.keep_only(lambda r: r.get("update", 0) <= int(self.counters["updates"]))

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """The updates' surroundings: the log (closed at the end), Ctrl-C and SIGTERM (the update in progress
        is redone on the next run), ``self.pool`` and ``self.collector`` (new tracks: the episodes in flight
        when a run stopped are not resumed)."""
        cfg = self.cfg
        with self.log, stopping(), _env_pool(cfg) as pool:
            seed_of = lambda k: loading.track_seeds(cfg.seed, loading.TRAIN_STREAM, 1, offset=k)[0]  # noqa: E731
            self.pool = pool
            self.collector = RolloutCollector(
                pool,
                self.policy,
                cfg.max_steps,
                seed_of,
                cfg.gamma,
                cfg.gae_lambda,
                cfg.reward_scale,
                episodes=int(self.counters["episodes"]),
            )
            yield

    def run_one_update(self) -> dict:
        """Collects ``rollout_len`` steps in every environment, runs the update on them and counts them; then the
        metrics line, the checkpoint and the bar. Returns the update's record."""
        cfg, counters = self.cfg, self.counters
        t0 = time.perf_counter()
        ro = self.collector.collect(cfg.rollout_len)
        t1 = time.perf_counter()
        update = int(counters["updates"]) + 1
        stats = self.trainer.update(ro.batch, np.random.default_rng([cfg.seed, update]))
        counters["env_steps"].assign_add(ro.env_steps)
        counters["updates"].assign(update)
        counters["episodes"].assign(self.collector.episodes)
        record = self._record(ro, update, stats, collect_time=t1 - t0, wall=time.perf_counter() - t0)
        self.records.append(record)
        self.log_update(record)
        self.checkpoint(update)
        shown = record["mean_return"] if ro.episode_returns else float("nan")
        self.log.advance(ro.env_steps, f"return={shown:.1f} {record['steps_per_sec']:.0f} steps/s")
        return record

    def _record(self, ro: Rollout, update: int, stats: dict, collect_time: float, wall: float) -> dict:
        """The update's metrics line."""
        rets = ro.episode_returns
        return {
            "update": update,
            "env_steps": self.env_steps,
            "episodes": len(rets),
            "mean_return": float(np.mean(rets)) if rets else None,
            "mean_length": float(np.mean(ro.episode_lengths)) if rets else None,
            "dropped_steps": ro.dropped_steps,
            "steps_per_sec": ro.env_steps / wall,
            "collect_time": collect_time,
            "update_time": wall - collect_time,
            **stats,
        }

    def log_update(self, record: dict) -> None:
        """The record to metrics.jsonl and its numbers to TensorBoard (at its ``env_steps``).

        The metrics line comes before the checkpoint: a stop between them redoes this update, whose line the
        resume drops (``keep_only``); the other way round, it would keep the update and lose its line.
        """
        scalars = {
            ("return/mean" if k == "mean_return" else k): v
            for k, v in record.items()
            if k not in ("update", "env_steps") and v is not None
        }
        self.log.record(record, step=record["env_steps"], scalars=scalars)

    def checkpoint(self, update: int) -> None:
        """``checkpoints/ckpt-UPDATE``: the model, the optimizer, the random generators and the counters."""
        self.manager.save(checkpoint_number=update)

    def result(self) -> dict:
        """``{"env_steps", "updates", "records"}``."""
        return {"env_steps": self.env_steps, "updates": int(self.counters["updates"]), "records": self.records}

    def finish(self) -> dict:
        """The closing line; returns :meth:`result`."""
        done = [r["mean_return"] for r in self.records if r["mean_return"] is not None]
        print(
            f"train_ppo: {self.env_steps} env steps in {int(self.counters['updates'])} updates"
            + (f", last mean return {done[-1]:.1f}" if done else "")
            + f"; checkpoints in {self.manager.directory}",
            file=sys.stderr,
        )
        return self.result()


def run(cfg: TrainPPOConfig) -> dict:
    """Trains (or resumes) the PPO controller; returns ``{"env_steps", "updates", "records"}``."""
    return PPORunner(cfg).run()
