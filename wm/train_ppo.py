"""Stage 4, the alternative: train C with PPO in the real environment on V and M's features.

    python -m wm.train_ppo --vae=runs/demo/vae --mdnrnn=runs/demo/mdnrnn \\
        --workdir=runs/demo/ppo --envs=16 --env_steps=1000000

The policy sees the same [z, h] as the CMA-ES controller and acts through the same batched
V + M step (``wm.ppo.PPOPolicy``), in ``--envs`` environments stepped by ``--workers``
processes (``wm.envpool``). Each update collects ``--rollout_len`` steps from every environment,
then runs ``--epochs`` passes of ``--minibatch_size`` minibatches (see ``wm.ppo`` for the
model, the squashed Gaussian and the losses). Training tracks come from the training seed
stream of ``wm.train_controller.track_seeds``, so ``wm.evaluate``'s tracks are unseen.

Resume: after every update the actor-critic, the optimizer, both random generators and the
counters are checkpointed (``WORKDIR/checkpoints``, ``tf.train.CheckpointManager``: the index is
written last, so a half-written checkpoint is never loaded). ``--env_steps`` is the TOTAL
budget: rerunning with a larger value continues (episodes in flight when the run stopped are
not resumed; new tracks start). Each update adds ``envs x rollout_len`` steps, so the last
one may overshoot the budget by less than that.

``python -m wm.evaluate --agent=WORKDIR`` plays the deterministic policy (the squashed mean).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from wm import fileio  # noqa: E402
from wm.cli import UsageError, run_main  # noqa: E402

CONFIG_NAME = "config.json"
METRICS_NAME = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"


@dataclasses.dataclass
class TrainPPOConfig:
    """Everything ``run`` needs (the flags of ``python -m wm.train_ppo``)."""

    vae: str
    mdnrnn: str
    workdir: str
    envs: int = 16
    env_steps: int = 1_000_000
    rollout_len: int = 128
    epochs: int = 4
    minibatch_size: int = 256
    learning_rate: float = 3e-4
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_ratio: float = 0.2
    entropy_coef: float = 1e-3
    value_coef: float = 0.5
    max_grad_norm: float = 0.5
    reward_scale: float = 0.1
    hidden: str = "64,64"
    workers: int = 0  # 0: one per CPU core
    max_steps: int = 1000
    env_id: str = "CarRacingFast-v3"
    inference_precision: str = "auto"  # V's encoder while acting: auto | float32 | bfloat16 (as train_controller)
    seed: int = 0
    progress: bool = True

    def spec(self) -> dict:
        """Settings a resumed run must share with the one it continues."""
        return {k: getattr(self, k) for k in ("hidden", "seed", "max_steps", "gamma", "reward_scale")}

    def hidden_sizes(self) -> tuple[int, ...]:
        return tuple(int(x) for x in self.hidden.split(",") if x.strip())


def validate(cfg: TrainPPOConfig) -> None:
    """Raises UsageError with a one-line message for bad settings."""
    for name in ("vae", "mdnrnn", "workdir"):
        if not getattr(cfg, name):
            raise UsageError(f"--{name} is required")
    for name in ("envs", "env_steps", "rollout_len", "epochs", "minibatch_size", "max_steps"):
        if getattr(cfg, name) <= 0:
            raise UsageError(f"--{name} must be positive, got {getattr(cfg, name)}")
    for name in ("learning_rate", "clip_ratio", "reward_scale", "max_grad_norm"):
        if not getattr(cfg, name) > 0:
            raise UsageError(f"--{name} must be positive, got {getattr(cfg, name)}")
    if cfg.workers < 0 or cfg.entropy_coef < 0 or cfg.value_coef < 0:
        raise UsageError("--workers, --entropy_coef and --value_coef must be >= 0")
    if not 0 < cfg.gamma <= 1 or not 0 <= cfg.gae_lambda <= 1:
        raise UsageError(f"--gamma must be in (0, 1] and --gae_lambda in [0, 1], got {cfg.gamma} and {cfg.gae_lambda}")
    if cfg.inference_precision not in ("auto", "float32", "bfloat16"):
        raise UsageError(f"--inference_precision must be auto, float32 or bfloat16, got {cfg.inference_precision!r}")
    try:
        sizes = cfg.hidden_sizes()
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) <= 0:
        raise UsageError(f"--hidden must be comma-separated positive layer sizes, got {cfg.hidden!r}")
    from data_gen import rollout

    try:
        rollout.check_env_id(cfg.env_id)
    except ValueError as e:
        raise UsageError(str(e)) from None


def _check_workdir(cfg: TrainPPOConfig) -> None:
    from wm import train_lib

    old = train_lib.read_config(cfg.workdir)
    if old is None:
        if train_lib.latest_checkpoint(cfg.workdir):
            raise UsageError(f"{cfg.workdir} holds checkpoints but no {CONFIG_NAME}; choose another --workdir")
        return
    if old.get("model") != "controller" or old.get("algorithm") != "ppo":
        raise UsageError(f"{cfg.workdir} holds a {old.get('model')!r} run ({old.get('algorithm')}), not a PPO controller; choose another --workdir")
    now = {"spec": cfg.spec(), "vae": fileio.abspath(cfg.vae), "mdnrnn": fileio.abspath(cfg.mdnrnn)}
    diff = [k for k in now if old.get(k) != now[k]]
    if diff:
        detail = ", ".join(f"{k}: {old.get(k)!r} there, {now[k]!r} now" for k in diff)
        raise UsageError(f"{cfg.workdir} holds a PPO run with other settings ({detail}); choose another --workdir")


def build_policy(vae: str, mdnrnn: str, hidden: tuple[int, ...], seed: int = 0, precision: str = "auto"):
    """V and M from their workdirs plus a fresh actor-critic on [z, h] -> ``wm.ppo.PPOPolicy``."""
    from wm import ppo
    from wm.train_controller import load_agent

    agent = load_agent(vae, mdnrnn, "linear", precision)
    return ppo.PPOPolicy(agent, ppo.ActorCritic(agent.z_size + agent.hidden, hidden), seed=seed)


def load_policy(workdir: str, config: dict, precision: str = ""):
    """(policy, dummy params [1, 1], config) of a PPO workdir, for ``wm.evaluate`` (``precision``: V's encoder's)."""
    import numpy as np
    import tensorflow as tf

    from wm import train_lib

    path = train_lib.latest_checkpoint(workdir)
    if not path:
        raise UsageError(f"{workdir} has no PPO checkpoint yet: train at least one update")
    arch = config["arch"]
    policy = build_policy(config["vae"], config["mdnrnn"], tuple(arch["hidden"]), precision=precision or config.get("inference_precision", "auto"))
    tf.train.Checkpoint(model=policy.model).restore(path).expect_partial().assert_existing_objects_matched()
    return policy, np.zeros((1, 1), np.float32), config


# ---------------------------------------------------------------- training


def run(cfg: TrainPPOConfig) -> dict:
    """Trains (or resumes) the PPO controller; returns ``{"env_steps", "updates", "records"}``."""
    validate(cfg)
    _check_workdir(cfg)
    import keras
    import numpy as np
    import tensorflow as tf
    from tqdm import tqdm

    from wm import ppo, train_lib
    from wm.envpool import EnvPool
    from wm.train_controller import track_seeds

    keras.utils.set_random_seed(cfg.seed)
    policy = build_policy(cfg.vae, cfg.mdnrnn, cfg.hidden_sizes(), seed=cfg.seed, precision=cfg.inference_precision)
    hyper = ppo.PPOHyper(cfg.learning_rate, cfg.epochs, cfg.minibatch_size, cfg.clip_ratio, cfg.entropy_coef,
                         cfg.value_coef, cfg.max_grad_norm)
    trainer = ppo.PPOTrainer(policy.model, hyper, seed=cfg.seed + 1)
    counters = {k: tf.Variable(0, dtype=tf.int64, name=k) for k in ("env_steps", "updates", "episodes")}
    ckpt = tf.train.Checkpoint(model=policy.model, optimizer=trainer.optimizer, policy_rng=policy.rng, train_rng=trainer.rng, **counters)
    manager = tf.train.CheckpointManager(ckpt, os.path.join(cfg.workdir, CHECKPOINT_DIR), max_to_keep=2)
    if manager.latest_checkpoint:
        ckpt.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        print(f"train_ppo: resuming at {int(counters['env_steps'])} env steps (update {int(counters['updates'])})", file=sys.stderr)
    train_lib.write_config(cfg.workdir, {
        "model": "controller", "algorithm": "ppo", "spec": cfg.spec(), "arch": policy.model.arch(),
        "vae": fileio.abspath(cfg.vae), "mdnrnn": fileio.abspath(cfg.mdnrnn), "env_id": cfg.env_id, "inference_precision": cfg.inference_precision, "flags": dataclasses.asdict(cfg),
    })
    metrics_path = os.path.join(cfg.workdir, METRICS_NAME)
    records = [r for r in train_lib.read_metrics(cfg.workdir) if r.get("update", 0) <= int(counters["updates"])]
    # exactly the checkpointed updates (a killed run may have left more)
    fileio.write_text_atomic(metrics_path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
    if int(counters["env_steps"]) >= cfg.env_steps:
        print(f"train_ppo: {cfg.workdir} is already at {int(counters['env_steps'])} env steps; nothing to do", file=sys.stderr)
        return {"env_steps": int(counters["env_steps"]), "updates": int(counters["updates"]), "records": records}

    writer = tf.summary.create_file_writer(os.path.join(cfg.workdir, "tensorboard"))
    bar = tqdm(total=cfg.env_steps, initial=int(counters["env_steps"]), unit="step", unit_scale=True, desc="ppo",
               disable=not cfg.progress, file=sys.stderr)
    try:
        with EnvPool(cfg.env_id, cfg.envs, cfg.workers or os.cpu_count() or 1, cfg.max_steps) as pool:
            collector = ppo.RolloutCollector(pool, policy, cfg.max_steps, lambda k: track_seeds(cfg.seed, 1, 1, offset=k)[0],
                                             cfg.gamma, cfg.gae_lambda, cfg.reward_scale, episodes=int(counters["episodes"]))
            while int(counters["env_steps"]) < cfg.env_steps:
                t0 = time.perf_counter()
                ro = collector.collect(cfg.rollout_len)
                t1 = time.perf_counter()
                update = int(counters["updates"]) + 1
                stats = trainer.update(ro.batch, np.random.default_rng([cfg.seed, update]))
                counters["env_steps"].assign_add(ro.env_steps)
                counters["updates"].assign(update)
                counters["episodes"].assign(collector.episodes)
                manager.save(checkpoint_number=update)
                wall = time.perf_counter() - t0
                rets = ro.episode_returns
                record = {
                    "update": update, "env_steps": int(counters["env_steps"]), "episodes": len(rets),
                    "mean_return": float(np.mean(rets)) if rets else None,
                    "mean_length": float(np.mean(ro.episode_lengths)) if rets else None,
                    "dropped_steps": ro.dropped_steps, "steps_per_sec": ro.env_steps / wall,
                    "collect_time": t1 - t0, "update_time": wall - (t1 - t0), **stats,
                }
                records.append(record)
                fileio.append_text(metrics_path, json.dumps(record, sort_keys=True) + "\n")
                with writer.as_default(step=record["env_steps"]):
                    for k, v in record.items():
                        if k not in ("update", "env_steps") and v is not None:
                            tf.summary.scalar(k if k != "mean_return" else "return/mean", v)
                bar.update(ro.env_steps)
                bar.set_postfix_str(f"return={record['mean_return'] if rets else float('nan'):.1f} {record['steps_per_sec']:.0f} steps/s")
    finally:
        bar.close()
        writer.close()
    done = [r["mean_return"] for r in records if r["mean_return"] is not None]
    print(f"train_ppo: {int(counters['env_steps'])} env steps in {int(counters['updates'])} updates"
          + (f", last mean return {done[-1]:.1f}" if done else "") + f"; checkpoints in {manager.directory}", file=sys.stderr)
    return {"env_steps": int(counters["env_steps"]), "updates": int(counters["updates"]), "records": records}


# ---------------------------------------------------------------- flags


def define_flags() -> None:
    """Defines this binary's absl flags (only when run as a binary)."""
    d = TrainPPOConfig(vae="", mdnrnn="", workdir="")
    flags.DEFINE_string("vae", None, "A train_vae workdir.")
    flags.DEFINE_string("mdnrnn", None, "A train_mdnrnn workdir.")
    flags.DEFINE_string("workdir", None, "Run directory (checkpoints, metrics, TensorBoard).")
    flags.DEFINE_integer("envs", d.envs, "Parallel environments.")
    flags.DEFINE_integer("env_steps", d.env_steps, "TOTAL environment steps (rerun with more to continue).")
    flags.DEFINE_integer("rollout_len", d.rollout_len, "Steps per environment per update.")
    flags.DEFINE_integer("epochs", d.epochs, "Passes over each rollout.")
    flags.DEFINE_integer("minibatch_size", d.minibatch_size, "Steps per gradient step.")
    flags.DEFINE_float("learning_rate", d.learning_rate, "Adam learning rate.")
    flags.DEFINE_float("gamma", d.gamma, "Discount.")
    flags.DEFINE_float("gae_lambda", d.gae_lambda, "GAE lambda.")
    flags.DEFINE_float("clip_ratio", d.clip_ratio, "PPO clip epsilon.")
    flags.DEFINE_float("entropy_coef", d.entropy_coef, "Entropy bonus weight.")
    flags.DEFINE_float("value_coef", d.value_coef, "Value loss weight.")
    flags.DEFINE_float("max_grad_norm", d.max_grad_norm, "Gradient clipping (global norm, actor and critic separately).")
    flags.DEFINE_float("reward_scale", d.reward_scale, "Rewards are multiplied by this for learning (reported returns are not).")
    flags.DEFINE_string("hidden", d.hidden, "Hidden tanh layer sizes of the actor and of the critic.")
    flags.DEFINE_integer("workers", d.workers, "Environment worker processes (0: one per core).")
    flags.DEFINE_integer("max_steps", d.max_steps, "Maximum steps per episode.")
    flags.DEFINE_string("env_id", d.env_id, "Gymnasium environment id (CarRacing-v3 for the stock one).")
    flags.DEFINE_enum("inference_precision", d.inference_precision, ["auto", "float32", "bfloat16"], "V's encoder while acting.")
    flags.DEFINE_integer("seed", d.seed, "Seed for the model, sampling and the training tracks.")
    flags.DEFINE_bool("progress", True, "Show a progress bar.")


FLAGS = flags.FLAGS


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    values = {f.name: getattr(FLAGS, f.name) for f in dataclasses.fields(TrainPPOConfig)}
    for k in ("vae", "mdnrnn", "workdir"):
        values[k] = values[k] or ""
    run_main(lambda: run(TrainPPOConfig(**values)), "train_ppo")


if __name__ == "__main__":
    define_flags()
    app.run(main)
