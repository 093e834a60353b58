"""C trained with PPO in the real environment on V and M's features: the loop behind ``python -m wm.train_ppo``.

The policy sees the same [z, h] as the CMA-ES controller and acts through the same batched
V + M step (``wm.agents.ppo.PPOPolicy``), in ``envs`` environments stepped by ``workers``
processes (``data_gen.envpool``) or, with ``ray_address``, Ray actors (``data_gen.ray_envpool``: the
same central layout, every step's frames sent to this process, which runs V + M + the policy and
the update; the same seeds give the same rollouts and weights as local processes). Each update
collects ``rollout_len`` steps from every environment, then runs ``epochs`` passes of
``minibatch_size`` minibatches (see ``wm.agents.ppo`` for the model, the squashed Gaussian and
the losses). Training tracks come from the training seed stream of
``wm.agents.loading.track_seeds``, so ``wm.evaluate``'s tracks are unseen.

Resume: after every update the actor-critic, the optimizer, both random generators and the
counters are checkpointed (``WORKDIR/checkpoints``, ``tf.train.CheckpointManager``: the index is
written last, so a half-written checkpoint is never loaded). ``env_steps`` is the TOTAL budget:
rerunning with a larger value continues (episodes in flight when the run stopped are not
resumed; new tracks start). Each update adds ``envs x rollout_len`` steps, so the last one may
overshoot the budget by less than that.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time

from data_gen import ray_engine, rollout
from tfrecords.runtime import fileio
from tfrecords.runtime.cli import UsageError, check, option
from wm.agents import loading
from wm.agents.ppo import PPOHyper
from wm.core import distribute, workdir
from wm.training.loop import RunLog, stopping

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


def _env_pool(cfg: TrainPPOConfig):
    """The environments: ``workers`` local processes, or Ray actors (one per cluster CPU by default)."""
    if cfg.ray_address:
        from data_gen.ray_envpool import RayEnvPool

        return RayEnvPool(cfg.env_id, cfg.envs, cfg.workers or cfg.envs, cfg.max_steps, cfg.ray_address)
    from data_gen.envpool import EnvPool

    return EnvPool(cfg.env_id, cfg.envs, cfg.workers or os.cpu_count() or 1, cfg.max_steps)


def run(cfg: TrainPPOConfig) -> dict:
    """Trains (or resumes) the PPO controller; returns ``{"env_steps", "updates", "records"}``."""
    validate(cfg)
    if cfg.ray_address:  # an unreachable cluster is one line now, before the workdir or the models
        ray_engine.connect(cfg.ray_address, cfg.workers or None)
    keep = {"spec": cfg.spec(), "vae": fileio.abspath(cfg.vae), "mdnrnn": fileio.abspath(cfg.mdnrnn)}
    workdir.guard(
        cfg.workdir,
        {"model": "controller", "algorithm": "ppo"},
        keep,
        "PPO controller",
        has_state=bool(workdir.latest_checkpoint(cfg.workdir)),
    )
    import keras
    import numpy as np
    import tensorflow as tf

    from wm.agents import ppo

    keras.utils.set_random_seed(cfg.seed)
    policy = loading.build_ppo_policy(
        cfg.vae, cfg.mdnrnn, cfg.hidden_sizes(), seed=cfg.seed, precision=cfg.inference_precision
    )
    trainer = ppo.PPOTrainer(policy.model, cfg.hyper(), seed=cfg.seed + 1)
    counters = {k: tf.Variable(0, dtype=tf.int64, name=k) for k in ("env_steps", "updates", "episodes")}
    ckpt = tf.train.Checkpoint(
        model=policy.model, optimizer=trainer.optimizer, policy_rng=policy.rng, train_rng=trainer.rng, **counters
    )
    manager = tf.train.CheckpointManager(ckpt, workdir.checkpoint_dir(cfg.workdir), max_to_keep=2)
    if manager.latest_checkpoint:
        ckpt.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        print(
            f"train_ppo: resuming at {int(counters['env_steps'])} env steps (update {int(counters['updates'])})",
            file=sys.stderr,
        )
    workdir.write_config(
        cfg.workdir,
        {
            "model": "controller",
            "algorithm": "ppo",
            "arch": policy.model.arch(),
            "env_id": cfg.env_id,
            "inference_precision": cfg.inference_precision,
            "flags": dataclasses.asdict(cfg),
            **keep,
        },
    )
    env_steps = lambda: int(counters["env_steps"])  # noqa: E731
    log = RunLog(
        "ppo",
        cfg.workdir,
        total=cfg.env_steps,
        initial=env_steps(),
        unit="step",
        unit_scale=True,
        progress=cfg.progress,
    )
    # exactly the checkpointed updates (a killed run may have left more)
    records = log.keep_only(lambda r: r.get("update", 0) <= int(counters["updates"]))
    if env_steps() >= cfg.env_steps:
        log.close()
        print(f"train_ppo: {cfg.workdir} is already at {env_steps()} env steps; nothing to do", file=sys.stderr)
        return {"env_steps": env_steps(), "updates": int(counters["updates"]), "records": records}

    with log, stopping(), _env_pool(cfg) as pool:
        seed_of = lambda k: loading.track_seeds(cfg.seed, loading.TRAIN_STREAM, 1, offset=k)[0]  # noqa: E731
        collector = ppo.RolloutCollector(
            pool,
            policy,
            cfg.max_steps,
            seed_of,
            cfg.gamma,
            cfg.gae_lambda,
            cfg.reward_scale,
            episodes=int(counters["episodes"]),
        )
        while env_steps() < cfg.env_steps:
            t0 = time.perf_counter()
            ro = collector.collect(cfg.rollout_len)
            t1 = time.perf_counter()
            update = int(counters["updates"]) + 1
            stats = trainer.update(ro.batch, np.random.default_rng([cfg.seed, update]))
            counters["env_steps"].assign_add(ro.env_steps)
            counters["updates"].assign(update)
            counters["episodes"].assign(collector.episodes)
            wall = time.perf_counter() - t0
            rets = ro.episode_returns
            record = {
                "update": update,
                "env_steps": env_steps(),
                "episodes": len(rets),
                "mean_return": float(np.mean(rets)) if rets else None,
                "mean_length": float(np.mean(ro.episode_lengths)) if rets else None,
                "dropped_steps": ro.dropped_steps,
                "steps_per_sec": ro.env_steps / wall,
                "collect_time": t1 - t0,
                "update_time": wall - (t1 - t0),
                **stats,
            }
            records.append(record)
            scalars = {
                ("return/mean" if k == "mean_return" else k): v
                for k, v in record.items()
                if k not in ("update", "env_steps") and v is not None
            }
            # the metrics line before the checkpoint: a stop between them redoes this update, whose line the
            # resume drops (keep_only); the other way round, it would keep the update and lose its line
            log.record(record, step=record["env_steps"], scalars=scalars)
            manager.save(checkpoint_number=update)
            shown = record["mean_return"] if rets else float("nan")
            log.advance(ro.env_steps, f"return={shown:.1f} {record['steps_per_sec']:.0f} steps/s")
    done = [r["mean_return"] for r in records if r["mean_return"] is not None]
    print(
        f"train_ppo: {env_steps()} env steps in {int(counters['updates'])} updates"
        + (f", last mean return {done[-1]:.1f}" if done else "")
        + f"; checkpoints in {manager.directory}",
        file=sys.stderr,
    )
    return {"env_steps": env_steps(), "updates": int(counters["updates"]), "records": records}
