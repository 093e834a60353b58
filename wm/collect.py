"""Rollouts played by a trained agent, for iterative training (the paper's "iterative training procedure").

    python -m wm.collect --agent=runs/demo/controller --out_dir=runs/demo/iter1/rollouts \\
        --episodes=40 --param_noise=0.05 [--seed=1]

The data is in the public rollout format (``data_gen.generate``'s), written by the same
crash-safe writer: shards are renamed into place only when complete and ``manifest.json`` is
written last, so rerunning the same command after a kill keeps the finished shards and redoes
the rest; a directory holding another run is refused. Episode i's track and its exploration
noise come from ``(--seed, i)`` (:mod:`wm.agents.collect`: per-episode Gaussian noise of
standard deviation ``--param_noise`` on the controller's parameters; 0 plays the agent itself),
so the same flags give the same episodes. The manifest records the policy: the agent's workdir,
its algorithm, the hash and provenance of its parameters, and the noise; and ``model_errors``:
how well the agent's M, before training on this data, predicts it (z_{t+1} NLL, reward-head
squared error, and the error of the return M predicts along each real episode; episode means).
PPO agents play their mean action and take no parameter noise.

Episodes are played as ``wm.evaluate`` plays them (``--layout``: worker processes that each run
their own copy of the agent, by default; ``--ray_address``: those workers as Ray actors), and
every layout writes the same bytes for the same flags.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from typing import TYPE_CHECKING, Any

from data_gen import rollout
from tfrecords import schema, writer
from tfrecords.runtime import fileio
from tfrecords.runtime.cli import UsageError, check, option, run_binary
from wm.agents import loading, pretrained
from wm.agents import workers as workers_lib
from wm.core import distribute

if TYPE_CHECKING:
    from wm.agents.agent import EpisodeResult

SHARD_PREFIX = "rollouts"


@dataclasses.dataclass
class CollectConfig:
    """Everything ``run`` needs (the flags of ``python -m wm.collect``)."""

    agent: str = option(help="A trained controller workdir (wm.train_controller or wm.train_ppo).", required=True)
    out_dir: str = option(help="Directory for the shards and manifest.json.", required=True)
    episodes: int = option(16, help="Number of episodes.", min=1)
    max_steps: int = option(1000, help="Maximum steps per episode.", min=1)
    param_noise: float = option(
        0.05, help="Standard deviation of per-episode Gaussian noise on the controller's parameters.", min=0
    )
    seed: int = option(1, help="Run seed; episode i's track and noise come from (seed, i).")
    episodes_per_shard: int = option(8, help="Episodes per TFRecord shard.", min=1)
    workers: int = option(0, help="Environment worker processes (0: one per core).", min=0)
    envs: int = option(0, help="Environments in flight (0: all episodes, at most 16).", min=0)
    env_id: str = option("", help="Gymnasium environment id (default: the one the agent trained on).")
    writer: str = option("auto", help="Shard compression (as data_gen.generate's --writer).", choices=writer.WRITERS)
    layout: str = option("auto", help=workers_lib.LAYOUT_HELP, choices=workers_lib.LAYOUTS)
    ray_address: str = option("", help=workers_lib.RAY_HELP)
    progress: bool = option(True, help="Show a progress bar.")


def validate(cfg: CollectConfig) -> None:
    """Raises UsageError with a one-line message for bad settings."""
    check(cfg)
    workers_lib.check_ray_address(cfg.ray_address)
    workers_lib.resolve_layout(cfg.layout, cfg.ray_address, [cfg.agent])
    if cfg.env_id:
        rollout.check_env_id(cfg.env_id)


def run(cfg: CollectConfig) -> dict:
    """Collects (or finishes) the dataset; returns its manifest."""
    cfg = dataclasses.replace(cfg, agent=pretrained.resolve(cfg.agent))
    validate(cfg)
    import numpy as np
    from tqdm import tqdm

    from data_gen import ray_engine
    from wm.agents.collect import PendingShards, agent_policy, episode_rows, model_errors

    config = loading.load_policy_config(cfg.agent)
    algorithm = config.get("algorithm", "cma-es")
    if algorithm == "ppo" and cfg.param_noise:
        raise UsageError("--param_noise applies to CMA-ES controllers; give --param_noise=0 for a PPO agent")
    env_id = cfg.env_id or config.get("env_id", rollout.DEFAULT_ENV_ID)
    policy = agent_policy(cfg.agent, algorithm, cfg.param_noise)
    spec: Any = {  # the run's spec here, the agent's below
        "episodes": cfg.episodes,
        "max_steps": cfg.max_steps,
        "policy": policy,
        "seed": cfg.seed,
        "episodes_per_shard": cfg.episodes_per_shard,
        "env_id": env_id,
        "full_frame": False,
    }
    plans = writer.plan_shards(cfg.episodes, cfg.episodes_per_shard, SHARD_PREFIX)
    out = writer.ShardedRun(cfg.out_dir, schema.KIND_ROLLOUTS, spec, plans)
    finished = out.open()
    if finished is not None:
        print(f"collect: {cfg.out_dir} is already complete ({finished['episodes']} episodes)", file=sys.stderr)
        return finished
    pending = out.pending()
    items = [i for p in pending for i in p.items]
    envs = cfg.envs or min(len(items), 16)
    workers = min(cfg.workers or os.cpu_count() or 1, envs)
    if cfg.ray_address:  # an unreachable cluster is one line now, before the agent loads
        ray_engine.connect(cfg.ray_address, workers)
    distribute.set_inference_threads(workers)  # before TensorFlow's first op
    agent, params, _ = loading.load_policy(cfg.agent)

    rows, seeds = episode_rows(params, cfg.param_noise if algorithm != "ppo" else 0.0, cfg.seed, items)
    shards = PendingShards(cfg.out_dir, pending, cfg.writer)
    bar = tqdm(
        total=cfg.episodes,
        initial=cfg.episodes - len(items),
        unit="ep",
        desc="collect",
        file=sys.stderr,
        disable=not cfg.progress,  # (set after construction, tqdm would already have drawn the empty bar)
    )
    returns: list[float] = []
    m_model = getattr(agent, "mdnrnn", None)

    def on_episode(res: EpisodeResult) -> None:
        ep, z = runner.recorded.pop(res.job)
        errors = model_errors(m_model, z, ep) if m_model is not None else None
        returns.append(ep.total_reward)
        bar.update(1)
        bar.set_postfix_str(f"return {np.mean(returns):.0f}")
        shards.add(items[res.job], ep, errors)  # writes the shard it completes

    spec = workers_lib.AgentSpec(agent_dir=fileio.abspath(cfg.agent), precision="")  # the agent's own, as above
    t0 = time.perf_counter()
    try:
        with workers_lib.make_runner(
            cfg.layout, spec, env_id, envs, workers, cfg.max_steps, cfg.ray_address, agent
        ) as runner:
            results = runner.run(
                np.stack(rows),
                [(job, seeds[job]) for job in range(len(items))],
                cfg.max_steps,
                on_episode=on_episode,
                record=frozenset(range(len(items))),
                record_kind="episode",
            )
    finally:
        bar.close()
    steps = sum(r.steps for r in results)
    extra: dict[str, Any] = {}
    if shards.errors:  # M's error on this data before training on it, averaged over episodes
        extra["model_errors"] = {**shards.mean_errors(), "mdnrnn": config.get("mdnrnn")}
    manifest = out.finalize(
        {
            "env_id": env_id,
            "frame_shape": list(schema.FRAME_SHAPE),
            "policy": policy,
            "agent_source": {k: config.get(k) for k in ("vae", "mdnrnn", "algorithm")},
            "flags": dataclasses.asdict(cfg),
            "versions": writer.package_versions(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **extra,
        }
    )
    rate = steps / max(time.perf_counter() - t0, 1e-9)
    print(
        f"collect: wrote {manifest['episodes']} episodes, {manifest['frames']} frames in {len(plans)} shards to "
        f"{cfg.out_dir} (mean return {manifest['mean_return']:.1f}, noise {cfg.param_noise:g}); "
        f"{rate:.0f} env steps/s"
        + "".join(f"; M's {k} on it {v:.3g}" for k, v in extra.get("model_errors", {}).items() if k != "mdnrnn"),
        file=sys.stderr,
    )
    return manifest


if __name__ == "__main__":
    run_binary(CollectConfig, run, "collect")
