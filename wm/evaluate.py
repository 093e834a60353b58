"""Evaluate a trained agent over many random tracks (the paper's protocol: 100).

    python -m wm.evaluate --agent=runs/demo/controller --episodes=100

Prints mean +- std of the return, writes a per-episode CSV (seed, return, steps) to
``AGENT/evaluation.csv`` (or ``--out``) and a summary to the same name with ``.json``. The tracks
come from ``--seed`` through a seed stream that training never uses. ``--video_dir`` writes
videos of the episodes listed in ``--video_episodes``: the real frame, V's reconstruction of
it, and the actions as bars.

``--layout`` says where V + M + C run (each worker for its own environments, or this process for
all); ``--ray_address`` runs the workers as Ray actors on a cluster (see ``wm.agents.workers``).
The same ``--seed`` gives the same episodes in every layout.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import sys
import time

from data_gen import ray_engine, rollout
from tfrecords.runtime import fileio
from tfrecords.runtime.cli import UsageError, check, option, run_binary
from wm.agents import loading, pretrained
from wm.agents import workers as workers_lib
from wm.core import distribute, layout, video

EVAL_SEED_STREAM = loading.EVAL_STREAM


@dataclasses.dataclass
class EvaluateConfig:
    """Everything ``run`` needs (the flags of ``python -m wm.evaluate``)."""

    agent: str = option(help="A train_controller (or train_ppo) workdir.", required=True)
    episodes: int = option(100, help="Random tracks to evaluate on (the paper: 100).", min=1)
    seed: int = option(0, help="Seed of the evaluation tracks.")
    max_steps: int = option(1000, help="Maximum steps per episode.", min=1)
    workers: int = option(0, help="Environment worker processes (0: one per core).", min=0)
    envs: int = option(0, help="Environments in flight (0: min(episodes, 64)).", min=0)
    layout: str = option("auto", help=workers_lib.LAYOUT_HELP, choices=workers_lib.LAYOUTS)
    ray_address: str = option("", help=workers_lib.RAY_HELP)
    inference_threads: int = option(
        0,
        help="TensorFlow CPU threads for the agent (0: one when the workers fill every "
        "core and there is no GPU, else TF's default).",
        min=0,
    )
    out: str = option("", help="Per-episode CSV path (default: AGENT/evaluation.csv).")
    video_dir: str = option("", help="Write videos of --video_episodes here (GIF).")
    video_episodes: str = option("0", help="Comma-separated episode indices to record.")
    env_id: str = option("", help="Environment id (default: the agent's).")
    inference_precision: str = option(
        "", help="V's encoder while acting (default: the agent's).", choices=distribute.INFERENCE_PRECISIONS
    )
    progress: bool = option(True, help="Show a progress bar.")


def validate(cfg: EvaluateConfig) -> list[int]:
    """Raises UsageError for bad settings; returns the video episode indices."""
    check(cfg)
    try:
        videos = [int(x) for x in cfg.video_episodes.split(",") if x.strip()] if cfg.video_dir else []
    except ValueError:
        raise UsageError(
            f"--video_episodes must be comma-separated episode indices, got {cfg.video_episodes!r}"
        ) from None
    bad = [v for v in videos if not 0 <= v < cfg.episodes]
    if bad:
        raise UsageError(f"--video_episodes {bad} out of range for {cfg.episodes} episodes")
    if cfg.out and fileio.gfile().isdir(cfg.out):
        raise UsageError(f"--out {cfg.out} is a directory; give the CSV's file name")
    if cfg.env_id:
        rollout.check_env_id(cfg.env_id)
    workers_lib.check_ray_address(cfg.ray_address)
    workers_lib.resolve_layout(cfg.layout, cfg.ray_address, [cfg.agent])
    return videos


def run(cfg: EvaluateConfig) -> dict:
    """Evaluates the agent; returns the summary (mean, std, episodes, ...)."""
    cfg = dataclasses.replace(cfg, agent=pretrained.resolve(cfg.agent))
    videos = validate(cfg)
    import numpy as np
    from tqdm import tqdm

    envs = cfg.envs or min(cfg.episodes, 64)
    workers = min(cfg.workers or os.cpu_count() or 1, envs)
    if cfg.ray_address:  # an unreachable cluster is one line now, not after loading the agent
        ray_engine.connect(cfg.ray_address, workers)
    distribute.set_inference_threads(workers, cfg.inference_threads)  # before TensorFlow's first op
    agent, params, config = loading.load_policy(cfg.agent, cfg.inference_precision)
    env_id = cfg.env_id or config.get("env_id", rollout.DEFAULT_ENV_ID)
    seeds = loading.track_seeds(cfg.seed, EVAL_SEED_STREAM, cfg.episodes)
    jobs = [(0, s) for s in seeds]
    spec = workers_lib.AgentSpec(agent_dir=fileio.abspath(cfg.agent), precision=cfg.inference_precision)

    bar = tqdm(total=cfg.episodes, unit="ep", desc="evaluate", disable=not cfg.progress, file=sys.stderr)
    t0 = time.perf_counter()
    with workers_lib.make_runner(
        cfg.layout, spec, env_id, envs, workers, cfg.max_steps, cfg.ray_address, agent=agent
    ) as runner:
        results = runner.run(params, jobs, cfg.max_steps, on_episode=lambda r: bar.update(1), record=frozenset(videos))
        recorded = {j: runner.recorded.get(j, {"raw": [], "z": [], "a": []}) for j in videos}
    bar.close()
    wall = time.perf_counter() - t0
    returns = np.array([r.ret for r in results])
    steps = int(sum(r.steps for r in results))
    summary = {
        "agent": fileio.abspath(cfg.agent),
        "episodes": cfg.episodes,
        "seed": cfg.seed,
        "env_id": env_id,
        "mean": float(returns.mean()),
        "std": float(returns.std()),
        "min": float(returns.min()),
        "max": float(returns.max()),
        "env_steps": steps,
        "wall_time": wall,
        "env_steps_per_sec": steps / wall,
    }
    # the shipped agent's directory is read-only: its results go to the current directory
    here = os.curdir if pretrained.is_packaged(cfg.agent) else cfg.agent
    out = cfg.out or fileio.join(here, layout.EVALUATION_CSV)
    fileio.makedirs(fileio.dirname(out))
    table = io.StringIO(newline="")
    w = csv.writer(table)
    w.writerow(["episode", "seed", "return", "steps"])
    for i, r in enumerate(results):
        w.writerow([i, r.seed, f"{r.ret:.4f}", r.steps])
    fileio.write_text_atomic(out, table.getvalue())
    fileio.write_text_atomic(os.path.splitext(out)[0] + ".json", json.dumps(summary, indent=2, sort_keys=True))
    if videos:
        fileio.makedirs(cfg.video_dir)
        for j, rec in recorded.items():
            n = len(rec["a"])
            recon = agent.vae.decode(np.stack(rec["z"])).numpy() if n else []
            path = fileio.join(cfg.video_dir, f"episode_{j:03d}_seed_{seeds[j]}.gif")
            video.write(path, video.agent_frames(rec["raw"][:n], recon, rec["a"]))
    print(
        f"evaluate: {summary['mean']:.1f} +- {summary['std']:.1f} over {cfg.episodes} episodes "
        f"(min {summary['min']:.1f}, max {summary['max']:.1f}); {summary['env_steps_per_sec']:.0f} "
        f"env steps/s; per-episode CSV: {out}"
    )
    return summary


if __name__ == "__main__":
    run_binary(EvaluateConfig, run, "evaluate")
