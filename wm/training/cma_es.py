"""C trained with CMA-ES in the real environment (the paper's way): the loop behind ``python -m wm.train_controller``.

Every generation pycma proposes ``popsize`` parameter vectors; each plays ``trials`` episodes on
the same random tracks (common random numbers: the tracks change every generation) and its
fitness is the mean return. All popsize x trials episodes run together: environments step in
``workers`` processes, in lockstep with one batched V + M + C call per step and group of
environments in this process (see :func:`wm.agents.agent.run_episodes`). Every ``eval_every``
generations the CMA-ES mean is evaluated on a fixed set of ``eval_episodes`` tracks (disjoint
from ``wm.evaluate``'s); the best evaluated parameters (or, with evaluation off, the fittest
member so far) go to ``WORKDIR/controller.npz``.

Resume: after every generation the CMA-ES state, NumPy's RNG state and the best parameters are
saved atomically to ``WORKDIR/cma_state.pkl``; rerunning continues from the last finished
generation (``generations`` is the total). A stop (Ctrl-C, SIGTERM) ends at once; the generation
in progress is redone on the next run.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import sys
import time

from data_gen import rollout
from tfrecords import fileio
from tfrecords.cli import check, option
from wm.agents import loading
from wm.core import distribute, workdir
from wm.training.loop import RunLog, due, stopping

STATE_NAME = "cma_state.pkl"
PARAMS_NAME = loading.PARAMS_NAME
CONFIG_NAME = workdir.CONFIG_NAME
METRICS_NAME = workdir.METRICS_NAME


@dataclasses.dataclass
class TrainControllerConfig(loading.WorldFlags):
    """Everything :func:`run` needs (the flags of ``python -m wm.train_controller``)."""

    workdir: str = option(help="Run directory (CMA-ES state, controller.npz, metrics, TensorBoard).", required=True)
    # CMA-ES
    popsize: int = option(64, help="CMA-ES population size.", min=2)
    trials: int = option(16, help="Episodes per population member; fitness is their mean return.", min=1)
    sigma0: float = option(0.1, help="CMA-ES initial step size.", above=0)
    generations: int = option(100, help="Total generations (rerun with more to continue).", min=1)
    # episodes
    workers: int = option(0, help="Environment worker processes (0: one per core).", min=0)
    envs: int = option(0, help="Environments in flight (0: popsize x trials, at most 256).", min=0)
    max_steps: int = option(1000, help="Maximum steps per episode.", min=1)
    # evaluation of the CMA-ES mean
    eval_every: int = option(25, help="Evaluate the CMA-ES mean every N generations (0: never).", min=0)
    eval_episodes: int = option(16, help="Tracks per in-training evaluation.", min=1)
    early_stop: int = option(0, help="End an episode after N steps without a new tile (0: off).", min=0)
    # the agent
    controller: str = option("linear", help="linear on [z, h] or 40 tanh units on z.", choices=loading.CONTROLLERS)
    inference_precision: str = option(
        "auto",
        help="V's encoder while acting; auto: bfloat16 on CPUs with bfloat16 units (~3x faster), else float32.",
        choices=distribute.INFERENCE_PRECISIONS,
    )
    inference_threads: int = option(
        0,
        help="TensorFlow CPU threads for the agent (0: one when the workers fill every core "
        "and there is no GPU, else TF's default).",
        min=0,
    )
    env_id: str = option(rollout.DEFAULT_ENV_ID, help="Gymnasium environment id (CarRacing-v3 for the stock one).")
    seed: int = option(0, help="Seed for CMA-ES and the training tracks.")
    progress: bool = option(True, help="Show a progress bar.")

    def spec(self) -> dict:
        """Settings a resumed run must share with the one it continues."""
        keys = ("popsize", "trials", "sigma0", "max_steps", "early_stop", "controller", "seed")
        return {k: getattr(self, k) for k in keys}


def validate(cfg: TrainControllerConfig) -> None:
    """Raises UsageError with a one-line message for bad settings."""
    check(cfg)
    rollout.check_env_id(cfg.env_id)


def _guard(cfg: TrainControllerConfig) -> None:
    keep = {"spec": cfg.spec(), "vae": fileio.abspath(cfg.vae), "mdnrnn": fileio.abspath(cfg.mdnrnn)}
    workdir.guard(
        cfg.workdir,
        {"model": "controller"},
        keep,
        "controller",
        has_state=fileio.exists(fileio.join(cfg.workdir, STATE_NAME)),
    )


def state_summary(state: dict) -> dict:
    """What :func:`run` returns: the generation reached, the best fitness and evaluation, the records."""
    return {
        "generation": state["generation"],
        "best_fitness": state["best_fitness"],
        "best_eval": state["best_eval"]["score"] if state["best_eval"] else None,
        "records": state["records"],
    }


def _write_best(path: str, state: dict, ctrl) -> None:
    if state["best_eval"] is not None:
        b = state["best_eval"]
        loading.save_params(path, b["params"], ctrl, "eval", b["generation"], b["score"])
    elif "best_member" in state:
        loading.save_params(path, state["best_member"], ctrl, "fitness", state["generation"], state["best_fitness"])


def run(cfg: TrainControllerConfig) -> dict:
    """Trains (or resumes) the controller; returns :func:`state_summary`."""
    validate(cfg)
    import cma
    import numpy as np

    from data_gen.envpool import EnvPool
    from wm.agents.agent import run_episodes

    _guard(cfg)
    n_jobs = cfg.popsize * cfg.trials
    envs = cfg.envs or min(n_jobs, 256)
    workers = min(cfg.workers or os.cpu_count() or 1, envs)
    distribute.set_inference_threads(workers, cfg.inference_threads)  # before TensorFlow's first op
    agent = loading.load_agent(cfg.vae, cfg.mdnrnn, cfg.controller, cfg.inference_precision)
    ctrl = agent.controller
    workdir.write_config(
        cfg.workdir,
        {
            "model": "controller",
            "algorithm": "cma-es",
            "spec": cfg.spec(),
            "vae": fileio.abspath(cfg.vae),
            "mdnrnn": fileio.abspath(cfg.mdnrnn),
            "controller_shape": {"input_dim": ctrl.input_dim, "hidden": ctrl.hidden, "num_params": ctrl.num_params},
            "env_id": cfg.env_id,
            "flags": dataclasses.asdict(cfg),
            "inference_precision": cfg.inference_precision,
        },
    )

    state_path = fileio.join(cfg.workdir, STATE_NAME)
    params_path = fileio.join(cfg.workdir, PARAMS_NAME)
    state_bytes = fileio.read_bytes(state_path)
    if state_bytes is not None:
        state = pickle.loads(state_bytes)
        np.random.set_state(state["np_random"])
        print(f"train_controller: resuming after generation {state['generation']}", file=sys.stderr)
    else:
        np.random.seed(cfg.seed)
        es = cma.CMAEvolutionStrategy(
            np.zeros(ctrl.num_params), cfg.sigma0, {"popsize": cfg.popsize, "seed": cfg.seed + 1, "verbose": -9}
        )
        state = {"es": es, "generation": 0, "best_fitness": -np.inf, "best_eval": None, "records": []}
    # metrics.jsonl = exactly the finished generations' records (a killed run may have left more or fewer)
    workdir.MetricsLog(cfg.workdir).rewrite(state["records"])
    es = state["es"]
    if state["generation"] >= cfg.generations:
        print(
            f"train_controller: {cfg.workdir} is already at generation {state['generation']}; nothing to do",
            file=sys.stderr,
        )
        return state_summary(state)

    eval_seeds = loading.track_seeds(cfg.seed, loading.IN_TRAINING_EVAL_STREAM, cfg.eval_episodes)
    log = RunLog(
        "cma-es", cfg.workdir, total=cfg.generations, initial=state["generation"], unit="gen", progress=cfg.progress
    )
    with log, stopping(), EnvPool(cfg.env_id, envs, workers, cfg.max_steps) as pool:
        while state["generation"] < cfg.generations:
            gen = state["generation"] + 1
            t0 = time.perf_counter()
            solutions = es.ask()
            seeds = loading.track_seeds(cfg.seed, loading.TRAIN_STREAM, cfg.trials, offset=(gen - 1) * cfg.trials)
            jobs = [(m, s) for m in range(cfg.popsize) for s in seeds]
            results = run_episodes(pool, agent, np.stack(solutions), jobs, cfg.max_steps, cfg.early_stop)
            fitness = np.array([r.ret for r in results]).reshape(cfg.popsize, cfg.trials).mean(axis=1)
            es.tell(solutions, list(-fitness))
            steps = sum(r.steps for r in results)
            record = {
                "generation": gen,
                "mean": float(fitness.mean()),
                "max": float(fitness.max()),
                "min": float(fitness.min()),
                "sigma": float(es.sigma),
                "env_steps": int(steps),
                "wall_time": time.perf_counter() - t0,
            }
            if fitness.max() > state["best_fitness"]:
                state["best_fitness"] = float(fitness.max())
                state["best_member"] = np.asarray(solutions[int(fitness.argmax())], np.float32)
            if cfg.eval_every and due(gen, cfg.eval_every, gen == cfg.generations):
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
            fileio.write_bytes_atomic(state_path, pickle.dumps(state))
            _write_best(params_path, state, ctrl)
            rate = steps / max(record["wall_time"], 1e-9)
            scalars = {
                (f"return/{k}" if k in ("mean", "max", "min") else k): record[k]
                for k in ("mean", "max", "min", "sigma", "eval_mean", "best_eval")
                if k in record
            }
            log.record(record, step=gen, scalars={**scalars, "env_steps_per_sec": rate})
            log.advance(1, f"mean={record['mean']:.1f} max={record['max']:.1f} {rate:.0f} steps/s")
    summary = state_summary(state)
    print(
        f"train_controller: generation {state['generation']}, best fitness {summary['best_fitness']:.1f}"
        + (f", best eval {summary['best_eval']:.1f}" if summary["best_eval"] is not None else "")
        + f"; parameters in {params_path}",
        file=sys.stderr,
    )
    return summary
