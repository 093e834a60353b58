"""Stage 4: train C with CMA-ES in the real environment (the paper's way).

    python -m wm.train_controller --vae=runs/demo/vae --mdnrnn=runs/demo/mdnrnn \\
        --workdir=runs/demo/controller --popsize=16 --trials=4 --generations=50

Every generation pycma proposes ``--popsize`` parameter vectors; each plays ``--trials``
episodes on the same random tracks (common random numbers: the tracks change every
generation) and its fitness is the mean return. All popsize x trials episodes run together:
environments step in ``--workers`` processes, in lockstep with one batched V + M + C call per
step and group of environments in this process (two groups take turns; see
:func:`wm.agent.run_episodes`). Every ``--eval_every`` generations the CMA-ES mean is evaluated on a fixed
set of ``--eval_episodes`` tracks (disjoint from ``wm.evaluate``'s); the best evaluated
parameters (or, with evaluation off, the fittest member so far) go to
``WORKDIR/controller.npz``, which ``wm.evaluate --agent=WORKDIR`` loads.

Resume: after every generation the CMA-ES state, NumPy's RNG state and the best parameters
are saved atomically to ``WORKDIR/cma_state.pkl``; rerunning the same command continues from
the last finished generation (``--generations`` is the total). Ctrl-C stops at once; the
generation in progress is redone on the next run.

``--early_stop=N`` ends an episode after N steps without reaching a new road tile (off by
default): it speeds up early generations, whose cars mostly stand still or leave the track,
and changes fitness only for episodes that had stopped making progress.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import pickle
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from wm import fileio  # noqa: E402
from wm.cli import UsageError, run_main  # noqa: E402

STATE_NAME = "cma_state.pkl"
PARAMS_NAME = "controller.npz"
CONFIG_NAME = "config.json"
METRICS_NAME = "metrics.jsonl"


@dataclasses.dataclass
class TrainControllerConfig:
    """Everything ``run`` needs (the flags of ``python -m wm.train_controller``)."""

    vae: str
    mdnrnn: str
    workdir: str
    popsize: int = 64
    trials: int = 16
    sigma0: float = 0.1
    generations: int = 100
    workers: int = 0  # 0: one per CPU core
    envs: int = 0  # environments in flight; 0: popsize x trials, at most 256
    max_steps: int = 1000
    eval_every: int = 25
    eval_episodes: int = 16
    early_stop: int = 0
    controller: str = "linear"  # linear on [z, h] (867 params) | hidden: 40 tanh units on z (1,443)
    inference_precision: str = "auto"  # V's encoder while acting: auto | float32 | bfloat16
    inference_threads: int = 0  # TensorFlow CPU threads; 0: auto (one when the workers fill every core)
    env_id: str = "CarRacingFast-v3"
    seed: int = 0
    progress: bool = True

    def spec(self) -> dict:
        """Settings a resumed run must share with the one it continues."""
        keys = ("popsize", "trials", "sigma0", "max_steps", "early_stop", "controller", "seed")
        return {k: getattr(self, k) for k in keys}


def validate(cfg: TrainControllerConfig) -> None:
    """Raises UsageError with a one-line message for bad settings."""
    for name in ("vae", "mdnrnn", "workdir"):
        if not getattr(cfg, name):
            raise UsageError(f"--{name} is required")
    for name in ("popsize", "trials", "generations", "max_steps", "eval_episodes"):
        if getattr(cfg, name) <= 0:
            raise UsageError(f"--{name} must be positive, got {getattr(cfg, name)}")
    if cfg.popsize < 2:
        raise UsageError("--popsize must be at least 2 for CMA-ES")
    for name in ("workers", "envs", "eval_every", "early_stop", "inference_threads"):
        if getattr(cfg, name) < 0:
            raise UsageError(f"--{name} must be >= 0, got {getattr(cfg, name)}")
    if not cfg.sigma0 > 0:
        raise UsageError(f"--sigma0 must be positive, got {cfg.sigma0}")
    if cfg.controller not in ("linear", "hidden"):
        raise UsageError(f"--controller must be linear or hidden, got {cfg.controller!r}")
    if cfg.inference_precision not in ("auto", "float32", "bfloat16"):
        raise UsageError(f"--inference_precision must be auto, float32 or bfloat16, got {cfg.inference_precision!r}")
    from data_gen import rollout

    try:
        rollout.check_env_id(cfg.env_id)
    except ValueError as e:
        raise UsageError(str(e)) from None


def track_seeds(seed: int, purpose: int, n: int, offset: int = 0) -> list[int]:
    """Environment seeds for a purpose (1: training generations, 2: in-training evaluation,
    3: wm.evaluate), disjoint streams derived from ``SeedSequence([seed, purpose, i])``."""
    import numpy as np

    return [int(np.random.SeedSequence([seed, purpose, offset + i]).generate_state(1, np.uint32)[0]) for i in range(n)]


def make_controller(kind: str, z_size: int, hidden_size: int):
    from wm.controller import Controller

    return Controller(input_dim=z_size + hidden_size) if kind == "linear" else Controller(input_dim=z_size, hidden=40)


def load_agent(vae_dir: str, mdnrnn_dir: str, controller_kind: str, precision: str = "auto"):
    """Builds the agent from V and M workdirs; ``precision`` is V's encoder's while acting."""
    from wm import distribute, train_mdnrnn, train_vae
    from wm.agent import Agent

    v = train_vae.load(vae_dir, distribute.inference_policy(precision))
    m = train_mdnrnn.load(mdnrnn_dir)
    return Agent(v, m, make_controller(controller_kind, int(m.z_size), int(m.hidden)))


# ---------------------------------------------------------------- workdir files


def _save_bytes(path: str, data: bytes) -> None:
    fileio.write_bytes_atomic(path, data)


def save_params(path: str, params, controller, source: str, generation: int, score: float) -> None:
    """Writes the controller's parameters and shape atomically (a small .npz)."""
    import numpy as np

    buf = io.BytesIO()
    np.savez(buf, params=np.asarray(params, np.float32), input_dim=controller.input_dim, hidden=controller.hidden,
             source=source, generation=generation, score=score)
    _save_bytes(path, buf.getvalue())


def _check_workdir(cfg: TrainControllerConfig) -> dict | None:
    old = fileio.read_json(os.path.join(cfg.workdir, CONFIG_NAME))
    if old is None:
        if fileio.exists(os.path.join(cfg.workdir, STATE_NAME)):
            raise UsageError(f"{cfg.workdir} holds a CMA-ES state but no {CONFIG_NAME}; choose another --workdir")
        return None
    if old.get("model") != "controller":
        raise UsageError(f"{cfg.workdir} holds a {old.get('model')!r} run, not a controller; choose another --workdir")
    now = {"spec": cfg.spec(), "vae": fileio.abspath(cfg.vae), "mdnrnn": fileio.abspath(cfg.mdnrnn)}
    diff = [k for k in ("spec", "vae", "mdnrnn") if old.get(k) != now[k]]
    if diff:
        detail = ", ".join(f"{k}: {old.get(k)!r} there, {now[k]!r} now" for k in diff)
        raise UsageError(f"{cfg.workdir} holds a controller run with other settings ({detail}); choose another --workdir")
    return old


# ---------------------------------------------------------------- training


def run(cfg: TrainControllerConfig) -> dict:
    """Trains (or resumes) the controller; returns the final state summary."""
    validate(cfg)
    import cma
    import numpy as np
    import tensorflow as tf
    from tqdm import tqdm

    from wm import distribute
    from wm.agent import run_episodes
    from wm.envpool import EnvPool

    _check_workdir(cfg)
    n_jobs = cfg.popsize * cfg.trials
    envs = cfg.envs or min(n_jobs, 256)
    workers = min(cfg.workers or os.cpu_count() or 1, envs)
    distribute.set_inference_threads(workers, cfg.inference_threads)  # before TensorFlow's first op
    agent = load_agent(cfg.vae, cfg.mdnrnn, cfg.controller, cfg.inference_precision)
    ctrl = agent.controller
    fileio.makedirs(cfg.workdir)
    config = {
        "model": "controller", "algorithm": "cma-es", "spec": cfg.spec(),
        "vae": fileio.abspath(cfg.vae), "mdnrnn": fileio.abspath(cfg.mdnrnn),
        "controller_shape": {"input_dim": ctrl.input_dim, "hidden": ctrl.hidden, "num_params": ctrl.num_params},
        "env_id": cfg.env_id, "flags": dataclasses.asdict(cfg),
        "inference_precision": cfg.inference_precision,
    }
    _save_bytes(os.path.join(cfg.workdir, CONFIG_NAME), (json.dumps(config, indent=2, sort_keys=True) + "\n").encode())

    state_path = os.path.join(cfg.workdir, STATE_NAME)
    metrics_path = os.path.join(cfg.workdir, METRICS_NAME)
    state_bytes = fileio.read_bytes(state_path)
    if state_bytes is not None:
        state = pickle.loads(state_bytes)
        np.random.set_state(state["np_random"])
        print(f"train_controller: resuming after generation {state['generation']}", file=sys.stderr)
    else:
        np.random.seed(cfg.seed)
        es = cma.CMAEvolutionStrategy(np.zeros(ctrl.num_params), cfg.sigma0, {"popsize": cfg.popsize, "seed": cfg.seed + 1, "verbose": -9})
        state = {"es": es, "generation": 0, "best_fitness": -np.inf, "best_eval": None, "records": []}
    _rewrite_metrics(metrics_path, state["records"])
    es = state["es"]
    if state["generation"] >= cfg.generations:
        print(f"train_controller: {cfg.workdir} is already at generation {state['generation']}; nothing to do", file=sys.stderr)
        return state_summary(state)

    writer = tf.summary.create_file_writer(os.path.join(cfg.workdir, "tensorboard"))
    eval_seeds = track_seeds(cfg.seed, 2, cfg.eval_episodes)
    bar = tqdm(total=cfg.generations, initial=state["generation"], unit="gen", desc="cma-es", disable=not cfg.progress, file=sys.stderr)
    try:
        with EnvPool(cfg.env_id, envs, workers, cfg.max_steps) as pool:
            while state["generation"] < cfg.generations:
                gen = state["generation"] + 1
                t0 = time.perf_counter()
                solutions = es.ask()
                seeds = track_seeds(cfg.seed, 1, cfg.trials, offset=(gen - 1) * cfg.trials)
                jobs = [(m, s) for m in range(cfg.popsize) for s in seeds]
                results = run_episodes(pool, agent, np.stack(solutions), jobs, cfg.max_steps, cfg.early_stop)
                returns = np.array([r.ret for r in results]).reshape(cfg.popsize, cfg.trials)
                fitness = returns.mean(axis=1)
                es.tell(solutions, list(-fitness))
                steps = sum(r.steps for r in results)
                record = {
                    "generation": gen, "mean": float(fitness.mean()), "max": float(fitness.max()), "min": float(fitness.min()),
                    "sigma": float(es.sigma), "env_steps": int(steps), "wall_time": time.perf_counter() - t0,
                }
                if fitness.max() > state["best_fitness"]:
                    state["best_fitness"] = float(fitness.max())
                    state["best_member"] = np.asarray(solutions[int(fitness.argmax())], np.float32)
                if cfg.eval_every and (gen % cfg.eval_every == 0 or gen == cfg.generations):
                    mean_params = np.asarray(es.mean, np.float32)[None]
                    ev = run_episodes(pool, agent, mean_params, [(0, s) for s in eval_seeds], cfg.max_steps)
                    score = float(np.mean([r.ret for r in ev]))
                    record["eval_mean"] = score
                    if state["best_eval"] is None or score > state["best_eval"]["score"]:
                        state["best_eval"] = {"score": score, "params": mean_params[0], "generation": gen}
                    record["best_eval"] = state["best_eval"]["score"]
                state["generation"] = gen
                state["records"].append(record)
                state["np_random"] = np.random.get_state()
                _save_state(state_path, state)
                _write_best(cfg.workdir, state, ctrl)
                _append(metrics_path, record)
                with writer.as_default(step=gen):
                    for k in ("mean", "max", "min", "sigma", "eval_mean", "best_eval"):
                        if k in record:
                            tf.summary.scalar(f"return/{k}" if k in ("mean", "max", "min") else k, record[k])
                    tf.summary.scalar("env_steps_per_sec", steps / max(record["wall_time"], 1e-9))
                bar.update(1)
                bar.set_postfix_str(f"mean={record['mean']:.1f} max={record['max']:.1f} {steps / max(record['wall_time'], 1e-9):.0f} steps/s")
    finally:
        bar.close()
        writer.close()
    summary = state_summary(state)
    print(f"train_controller: generation {state['generation']}, best fitness {summary['best_fitness']:.1f}"
          + (f", best eval {summary['best_eval']:.1f}" if summary["best_eval"] is not None else "")
          + f"; parameters in {os.path.join(cfg.workdir, PARAMS_NAME)}", file=sys.stderr)
    return summary


def state_summary(state: dict) -> dict:
    return {
        "generation": state["generation"],
        "best_fitness": state["best_fitness"],
        "best_eval": state["best_eval"]["score"] if state["best_eval"] else None,
        "records": state["records"],
    }


def _save_state(path: str, state: dict) -> None:
    _save_bytes(path, pickle.dumps(state))


def _write_best(workdir: str, state: dict, ctrl) -> None:
    if state["best_eval"] is not None:
        b = state["best_eval"]
        save_params(os.path.join(workdir, PARAMS_NAME), b["params"], ctrl, "eval", b["generation"], b["score"])
    elif "best_member" in state:
        save_params(os.path.join(workdir, PARAMS_NAME), state["best_member"], ctrl, "fitness", state["generation"], state["best_fitness"])


def _append(path: str, record: dict) -> None:
    fileio.append_text(path, json.dumps(record, sort_keys=True) + "\n")


def _rewrite_metrics(path: str, records: list[dict]) -> None:
    """metrics.jsonl = exactly the finished generations' records (a killed run may have left more or fewer)."""
    _save_bytes(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode())


# ---------------------------------------------------------------- flags


def define_flags() -> None:
    """Defines this binary's absl flags (only when run as a binary)."""
    d = TrainControllerConfig(vae="", mdnrnn="", workdir="")
    flags.DEFINE_string("vae", None, "A train_vae workdir.")
    flags.DEFINE_string("mdnrnn", None, "A train_mdnrnn workdir.")
    flags.DEFINE_string("workdir", None, "Run directory (CMA-ES state, controller.npz, metrics, TensorBoard).")
    flags.DEFINE_integer("popsize", d.popsize, "CMA-ES population size.")
    flags.DEFINE_integer("trials", d.trials, "Episodes per population member; fitness is their mean return.")
    flags.DEFINE_float("sigma0", d.sigma0, "CMA-ES initial step size.")
    flags.DEFINE_integer("generations", d.generations, "Total generations (rerun with more to continue).")
    flags.DEFINE_integer("workers", d.workers, "Environment worker processes (0: one per core).")
    flags.DEFINE_integer("envs", d.envs, "Environments in flight (0: popsize x trials, at most 256).")
    flags.DEFINE_integer("max_steps", d.max_steps, "Maximum steps per episode.")
    flags.DEFINE_integer("eval_every", d.eval_every, "Evaluate the CMA-ES mean every N generations (0: never).")
    flags.DEFINE_integer("eval_episodes", d.eval_episodes, "Tracks per in-training evaluation.")
    flags.DEFINE_integer("early_stop", d.early_stop, "End an episode after N steps without a new tile (0: off).")
    flags.DEFINE_enum("controller", d.controller, ["linear", "hidden"], "linear on [z, h] or 40 tanh units on z.")
    flags.DEFINE_integer("inference_threads", d.inference_threads,
                         "TensorFlow CPU threads for the agent (0: one when the workers fill every core and there is no GPU, else TF's default).")
    flags.DEFINE_enum("inference_precision", d.inference_precision, ["auto", "float32", "bfloat16"],
                      "V's encoder while acting; auto: bfloat16 on CPUs with bfloat16 units (~3x faster), else float32.")
    flags.DEFINE_string("env_id", d.env_id, "Gymnasium environment id (CarRacing-v3 for the stock one).")
    flags.DEFINE_integer("seed", d.seed, "Seed for CMA-ES and the training tracks.")
    flags.DEFINE_bool("progress", True, "Show a progress bar.")


FLAGS = flags.FLAGS


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    values = {f.name: getattr(FLAGS, f.name) for f in dataclasses.fields(TrainControllerConfig)}
    for k in ("vae", "mdnrnn", "workdir"):
        values[k] = values[k] or ""
    run_main(lambda: run(TrainControllerConfig(**values)), "train_controller")


if __name__ == "__main__":
    define_flags()
    app.run(main)
