"""Evaluate a trained agent over many random tracks (the paper's protocol: 100).

    python -m wm.evaluate --agent=runs/demo/controller --episodes=100

Prints mean +- std of the return, writes a per-episode CSV (seed, return, steps) to
``AGENT/evaluation.csv`` (or ``--out``) and a summary to the same name with ``.json``. The tracks
come from ``--seed`` through a seed stream that training never uses. ``--video_dir`` writes
videos of the episodes listed in ``--video_episodes``: the real frame, V's reconstruction of
it, and the actions as bars.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from wm import fileio  # noqa: E402
from wm.cli import UsageError, run_main  # noqa: E402

EVAL_SEED_STREAM = 3


@dataclasses.dataclass
class EvaluateConfig:
    """Everything ``run`` needs (the flags of ``python -m wm.evaluate``)."""

    agent: str
    episodes: int = 100
    seed: int = 0
    max_steps: int = 1000
    workers: int = 0  # 0: one per CPU core
    envs: int = 0  # environments in flight; 0: min(episodes, 64)
    inference_threads: int = 0  # TensorFlow CPU threads; 0: auto (one when the workers fill every core)
    out: str = ""
    video_dir: str = ""
    video_episodes: str = "0"
    env_id: str = ""  # default: the one the agent was trained in
    inference_precision: str = ""  # default: the agent's (auto | float32 | bfloat16)
    progress: bool = True


def validate(cfg: EvaluateConfig) -> list[int]:
    """Raises UsageError for bad settings; returns the video episode indices."""
    if not cfg.agent:
        raise UsageError("--agent is required")
    for name in ("episodes", "max_steps"):
        if getattr(cfg, name) <= 0:
            raise UsageError(f"--{name} must be positive, got {getattr(cfg, name)}")
    if cfg.workers < 0 or cfg.envs < 0 or cfg.inference_threads < 0:
        raise UsageError("--workers, --envs and --inference_threads must be >= 0")
    try:
        videos = [int(x) for x in cfg.video_episodes.split(",") if x.strip()] if cfg.video_dir else []
    except ValueError:
        raise UsageError(f"--video_episodes must be comma-separated episode indices, got {cfg.video_episodes!r}") from None
    bad = [v for v in videos if not 0 <= v < cfg.episodes]
    if bad:
        raise UsageError(f"--video_episodes {bad} out of range for {cfg.episodes} episodes")
    return videos


def load_policy(agent_dir: str, precision: str = ""):
    """(agent, params [1, n], config) of a trained controller workdir (CMA-ES or PPO); ``precision`` as in train_controller."""
    import numpy as np

    from wm.train_controller import CONFIG_NAME, PARAMS_NAME, load_agent

    cpath, ppath = os.path.join(agent_dir, CONFIG_NAME), os.path.join(agent_dir, PARAMS_NAME)
    config = fileio.read_json(cpath)
    if config is None:
        raise UsageError(f"{agent_dir} is not an agent workdir (no {CONFIG_NAME})")
    if config.get("model") != "controller":
        raise UsageError(f"{agent_dir} holds a {config.get('model')!r} run, not a trained agent")
    if config.get("algorithm") == "ppo":  # same act/initial_state surface, weights in a checkpoint
        from wm.train_ppo import load_policy as load_ppo

        return load_ppo(agent_dir, config, precision)
    if not fileio.exists(ppath):
        raise UsageError(f"{agent_dir} has no {PARAMS_NAME} yet: train at least one generation")
    precision = precision or config.get("inference_precision", "auto")
    agent = load_agent(config["vae"], config["mdnrnn"], config["spec"]["controller"], precision)
    with fileio.open_read(ppath) as f, np.load(f) as z:
        params = z["params"][None].astype(np.float32)
    if params.shape[1] != agent.controller.num_params:
        raise UsageError(f"{ppath} holds {params.shape[1]} parameters, the agent needs {agent.controller.num_params}")
    return agent, params, config


def _action_bars(a, height: int, width: int):
    """A small panel with steering (centred), gas and brake as bars."""
    import numpy as np

    panel = np.full((height, width, 3), 30, np.uint8)
    third = width // 3
    colours = [(80, 160, 255), (80, 220, 80), (230, 70, 70)]
    for k in range(3):
        x0, x1 = k * third + 4, (k + 1) * third - 4
        if k == 0:
            mid = height // 2
            y = int(mid - a[0] * (height // 2 - 2))
            panel[min(y, mid) : max(y, mid) + 1, x0:x1] = colours[0]
        else:
            y = int(height - 2 - a[k] * (height - 4))
            panel[y : height - 2, x0:x1] = colours[k]
    return panel


def write_video(path: str, raws, recons, actions, fps: int = 25) -> None:
    """Writes real frame | V reconstruction | action bars, 192 px high, as .gif or .mp4."""
    import imageio.v2 as imageio
    import numpy as np

    frames = []
    for raw, rec, a in zip(raws, recons, actions):
        left = np.asarray(raw, np.uint8).repeat(2, 0).repeat(2, 1)
        mid = np.clip(np.asarray(rec) * 255 + 0.5, 0, 255).astype(np.uint8).repeat(3, 0).repeat(3, 1)
        frames.append(np.concatenate([left, mid, _action_bars(a, 192, 96)], axis=1))
    with fileio.LocalTemp(path) as tmp:  # imageio writes local files; then it is copied into place
        if path.endswith(".mp4"):
            imageio.mimsave(tmp.path, frames, fps=fps, format="FFMPEG")
        else:
            imageio.mimsave(tmp.path, frames, duration=1000 / fps, loop=0)
        tmp.commit()


def run(cfg: EvaluateConfig) -> dict:
    """Evaluates the agent; returns the summary (mean, std, episodes, ...)."""
    videos = validate(cfg)
    import numpy as np
    from tqdm import tqdm

    from wm import distribute
    from wm.agent import run_episodes
    from wm.envpool import EnvPool
    from wm.train_controller import track_seeds

    envs = cfg.envs or min(cfg.episodes, 64)
    workers = min(cfg.workers or os.cpu_count() or 1, envs)
    distribute.set_inference_threads(workers, cfg.inference_threads)  # before TensorFlow's first op
    agent, params, config = load_policy(cfg.agent, cfg.inference_precision)
    env_id = cfg.env_id or config.get("env_id", "CarRacingFast-v3")
    seeds = track_seeds(cfg.seed, EVAL_SEED_STREAM, cfg.episodes)
    jobs = [(0, s) for s in seeds]
    recorded: dict[int, dict] = {j: {"raw": [], "z": [], "a": []} for j in videos}

    def on_step(steps, actions, zs, slot_jobs):
        for s, st in steps.items():
            if s not in actions:  # a (re)start: drop anything from an attempt a lost worker cut short
                recorded[slot_jobs[s]] = {"raw": [], "z": [], "a": []}
            rec = recorded[slot_jobs[s]]
            if s in actions:
                rec["z"].append(zs[s])
                rec["a"].append(actions[s])
            rec["raw"].append(st.raw)

    bar = tqdm(total=cfg.episodes, unit="ep", desc="evaluate", disable=not cfg.progress, file=sys.stderr)
    t0 = time.perf_counter()
    with EnvPool(env_id, envs, workers, cfg.max_steps) as pool:
        results = run_episodes(pool, agent, params, jobs, cfg.max_steps, on_episode=lambda r: bar.update(1),
                               on_step=on_step if videos else None, raw_jobs=frozenset(videos))
    bar.close()
    wall = time.perf_counter() - t0
    returns = np.array([r.ret for r in results])
    steps = int(sum(r.steps for r in results))
    summary = {
        "agent": fileio.abspath(cfg.agent), "episodes": cfg.episodes, "seed": cfg.seed, "env_id": env_id,
        "mean": float(returns.mean()), "std": float(returns.std()), "min": float(returns.min()), "max": float(returns.max()),
        "env_steps": steps, "wall_time": wall, "env_steps_per_sec": steps / wall,
    }
    out = cfg.out or os.path.join(cfg.agent, "evaluation.csv")
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
            write_video(os.path.join(cfg.video_dir, f"episode_{j:03d}_seed_{seeds[j]}.gif"), rec["raw"][:n], recon, rec["a"])
    print(f"evaluate: {summary['mean']:.1f} +- {summary['std']:.1f} over {cfg.episodes} episodes "
          f"(min {summary['min']:.1f}, max {summary['max']:.1f}); {summary['env_steps_per_sec']:.0f} env steps/s; per-episode CSV: {out}")
    return summary


# ---------------------------------------------------------------- flags


def define_flags() -> None:
    """Defines this binary's absl flags (only when run as a binary)."""
    d = EvaluateConfig(agent="")
    flags.DEFINE_string("agent", None, "A train_controller workdir.")
    flags.DEFINE_integer("episodes", d.episodes, "Random tracks to evaluate on (the paper: 100).")
    flags.DEFINE_integer("seed", d.seed, "Seed of the evaluation tracks.")
    flags.DEFINE_integer("max_steps", d.max_steps, "Maximum steps per episode.")
    flags.DEFINE_integer("workers", d.workers, "Environment worker processes (0: one per core).")
    flags.DEFINE_integer("envs", d.envs, "Environments in flight (0: min(episodes, 64)).")
    flags.DEFINE_integer("inference_threads", d.inference_threads,
                         "TensorFlow CPU threads for the agent (0: one when the workers fill every core and there is no GPU, else TF's default).")
    flags.DEFINE_string("out", "", "Per-episode CSV path (default: AGENT/evaluation.csv).")
    flags.DEFINE_string("video_dir", "", "Write videos of --video_episodes here (GIF).")
    flags.DEFINE_string("video_episodes", d.video_episodes, "Comma-separated episode indices to record.")
    flags.DEFINE_string("env_id", "", "Environment id (default: the agent's).")
    flags.DEFINE_string("inference_precision", "", "V's encoder while acting: auto, float32 or bfloat16 (default: the agent's).")
    flags.DEFINE_bool("progress", True, "Show a progress bar.")


FLAGS = flags.FLAGS


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    values = {f.name: getattr(FLAGS, f.name) for f in dataclasses.fields(EvaluateConfig)}
    values["agent"] = values["agent"] or ""
    run_main(lambda: run(EvaluateConfig(**values)), "evaluate")


if __name__ == "__main__":
    define_flags()
    app.run(main)
