"""C trained with CMA-ES, in the real environment (the paper's way) or in M's dream: the loop behind
``python -m wm.train_controller``.

Every generation pycma proposes ``popsize`` parameter vectors; each plays ``trials`` episodes on
the same random tracks (common random numbers: the tracks change every generation) and its
fitness is the mean return. All popsize x trials episodes run together over ``workers``
processes, laid out by ``layout`` (:mod:`wm.agents.workers`): each worker steps its share of the
environments and runs its own batched V + M + C, receiving the generation's parameters once
and returning episode returns (``workers``, local processes or, with ``ray_address``, Ray
actors), or the environments step in lockstep with one batched V + M + C call per step and
group in this process (``central``, :func:`wm.agents.agent.run_episodes`). Every ``eval_every``
generations the CMA-ES mean is evaluated on a fixed set of ``eval_episodes`` tracks (disjoint
from ``wm.evaluate``'s); the best evaluated parameters (or, with evaluation off, the fittest
member so far) go to ``WORKDIR/controller.npz``.

In the dream (``env="dream"``), fitness is the mean return over ``trials`` dream episodes
(:class:`wm.agents.dream.DreamEnv`, all popsize x trials rows in one compiled call): every
generation draws ``trials`` dream worlds (a start z from ``series``, sampling noise and dropout
masks), shared by all members. Evaluation of the CMA-ES mean stays in the **real** environment
(``eval_mean``), and the same mean is also played on ``eval_episodes`` fixed dream worlds
(``dream_eval_mean``), so the exploitation gap is logged every time it evaluates. A run in the
real environment whose M can dream (a reward head, and ``series`` given) logs ``dream_eval_mean``
too: how far M's dream is from the real return of the controller being trained. ``init_from``
starts a fresh run's CMA-ES mean at another controller workdir's ``controller.npz`` (a
dream-trained C fine-tuned in the real environment, or the reverse).

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
from tfrecords.runtime import fileio
from tfrecords.runtime.cli import UsageError, check, option
from wm.agents import loading
from wm.agents import workers as workers_lib
from wm.agents.dream import START_MODES, can_dream, check_dreamer
from wm.core import distribute, workdir
from wm.training.loop import RunLog, due, stopping

STATE_NAME = "cma_state.pkl"
PARAMS_NAME = loading.PARAMS_NAME
CONFIG_NAME = workdir.CONFIG_NAME
METRICS_NAME = workdir.METRICS_NAME
ENVS = ("real", "dream")
DREAM_STREAM = 4  # the dream worlds' seed stream (track_seeds' streams are 1-3)


@dataclasses.dataclass
class TrainControllerConfig(loading.WorldFlags):
    """Everything :func:`run` needs (the flags of ``python -m wm.train_controller``)."""

    workdir: str = option(help="Run directory (CMA-ES state, controller.npz, metrics, TensorBoard).", required=True)
    env: str = option("real", help="Where fitness episodes run: the real environment or M's dream.", choices=ENVS)
    series: str = option(
        "",
        help="Latent series (wm.encode) whose z's start dream episodes (--env=dream; with --env=real and an M "
        "with a reward head, the evaluated means are also played in the dream to log the gap).",
    )
    temperature: float = option(1.0, help="Dream sampling temperature tau (--env=dream).", min=0)
    dream_dropout: float = option(
        -1.0, help="Dream dropout rate, masks fixed per dream episode (-1: M's training --dropout).", min=-1, max=0.95
    )
    dream_start: str = option(
        "first", help="Dream episodes start at the series' episode starts or random steps.", choices=START_MODES
    )
    jit_compile: str = option(
        "auto",
        help="XLA for the dream rollout (--env=dream); auto: on (1.4x faster on CPU, see BENCHMARKS.md).",
        choices=distribute.JIT_MODES,
    )
    init_from: str = option("", help="A controller workdir whose controller.npz is a fresh run's CMA-ES start.")
    # CMA-ES
    popsize: int = option(64, help="CMA-ES population size.", min=2)
    trials: int = option(16, help="Episodes per population member; fitness is their mean return.", min=1)
    sigma0: float = option(0.1, help="CMA-ES initial step size.", above=0)
    generations: int = option(100, help="Total generations (rerun with more to continue).", min=1)
    # episodes
    workers: int = option(0, help="Environment worker processes (0: one per core).", min=0)
    envs: int = option(0, help="Environments in flight (0: popsize x trials, at most 256).", min=0)
    layout: str = option("auto", help=workers_lib.LAYOUT_HELP, choices=workers_lib.LAYOUTS)
    ray_address: str = option("", help=workers_lib.RAY_HELP)
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
        "and there is no GPU, else TF's default; with --env=dream, TF's default).",
        min=0,
    )
    env_id: str = option(rollout.DEFAULT_ENV_ID, help="Gymnasium environment id (CarRacing-v3 for the stock one).")
    seed: int = option(0, help="Seed for CMA-ES and the training tracks.")
    progress: bool = option(True, help="Show a progress bar.")

    def spec(self) -> dict:
        """Settings a resumed run must share with the one it continues."""
        # Where fitness comes from (--env, --trials and the dream's settings) may change between runs:
        # iterative training continues one CMA-ES, trained in the real environment, in M's dream.
        keys = ("popsize", "sigma0", "max_steps", "early_stop", "controller", "seed")
        if self.init_from:
            keys += ("init_from",)
        return {k: getattr(self, k) for k in keys}


def validate(cfg: TrainControllerConfig) -> None:
    """Raises UsageError with a one-line message for bad settings."""
    check(cfg)
    rollout.check_env_id(cfg.env_id)
    if cfg.env == "dream" and not cfg.series:
        raise UsageError("--env=dream needs --series=DIR (the latent series whose z's start the dream episodes)")
    if cfg.env == "dream":
        check_dreamer(cfg.mdnrnn)
    workers_lib.check_ray_address(cfg.ray_address)
    workers_lib.resolve_layout(cfg.layout, cfg.ray_address, [cfg.vae, cfg.mdnrnn])


# keys that earlier versions kept in the spec: a run written then still resumes
_FORMER_SPEC_KEYS = ("trials", "env", "temperature", "dream_dropout", "dream_start")


def _guard(cfg: TrainControllerConfig) -> None:
    old_spec = (workdir.read_config(cfg.workdir) or {}).get("spec") or {}
    spec = {**{k: v for k, v in old_spec.items() if k in _FORMER_SPEC_KEYS}, **cfg.spec()}
    keep = {"spec": spec, "vae": fileio.abspath(cfg.vae), "mdnrnn": fileio.abspath(cfg.mdnrnn)}
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


def _init_mean(cfg: TrainControllerConfig, num_params: int):
    """The CMA-ES start: zeros, or ``--init_from``'s parameters (UsageError if missing or of another shape)."""
    import numpy as np

    if not cfg.init_from:
        return np.zeros(num_params)
    config = workdir.read_config(cfg.init_from)
    if not config or config.get("model") != "controller" or config.get("algorithm") == "ppo":
        raise UsageError(f"--init_from={cfg.init_from} is not a CMA-ES controller workdir")
    return loading.read_params(fileio.join(cfg.init_from, PARAMS_NAME), num_params)[0].astype(np.float64)


class _Dream:
    """The dream side of a run: the environment, its start latents and the worlds of each generation."""

    def __init__(self, cfg: TrainControllerConfig, agent):
        from wm.agents.dream import DreamEnv, start_latents

        m = agent.mdnrnn
        dropout = m.dropout if cfg.dream_dropout < 0 else cfg.dream_dropout
        # unlike V's and M's train steps, the dream loop is faster under XLA on CPUs too
        jit = cfg.jit_compile != "off"
        self.env = DreamEnv(m, agent.controller, cfg.max_steps, cfg.temperature, dropout, jit)
        self.starts = start_latents(cfg.series, cfg.dream_start, seed=cfg.seed)
        self.cfg, self.dropout = cfg, dropout

    def worlds(self, key: list[int], n: int):
        """(start latents [n, Z], rollout seed) of ``n`` worlds named by ``key``."""
        import numpy as np

        rng = np.random.default_rng([self.cfg.seed, DREAM_STREAM, *key])
        idx = rng.choice(len(self.starts), n, replace=len(self.starts) < n)
        return self.starts[idx], int(rng.integers(1 << 62))

    def play(self, params, trials: int, key: list[int]):
        """Every row of ``params`` on the same ``trials`` worlds -> (returns [P, trials], steps played)."""
        import numpy as np

        starts, seed = self.worlds(key, trials)
        rows = np.repeat(np.asarray(params, np.float32), trials, axis=0)
        worlds = np.tile(np.arange(trials, dtype=np.int32), len(params))
        res = self.env.rollout(rows, starts, worlds, seed)
        return res.returns.reshape(len(params), trials), int(res.steps.sum())


def _rescore_best(cfg: TrainControllerConfig, state: dict, pool, eval_seeds, m_checkpoint: str, log) -> None:
    """M changed since the kept parameters were evaluated (iterative training continues M): C acts on
    M's h, so they are another agent now. Evaluates them again with this M on the same tracks (or,
    with evaluation off, forgets them), so that ``controller.npz`` and ``best_eval`` describe the
    agent ``wm.evaluate`` will play."""
    import numpy as np

    old = state["best_eval"]
    was = old.get("mdnrnn_checkpoint") or "an unrecorded checkpoint"  # (state written before this check)
    state.pop("best_member", None)  # fitness under another M is not comparable either
    state["best_fitness"] = -np.inf
    if pool is None or not cfg.eval_every:
        state["best_eval"] = None
        log.say(f"train_controller: M changed ({was} -> {m_checkpoint}): best eval reset")
        return
    ev = pool.run(old["params"][None], [(0, s) for s in eval_seeds], cfg.max_steps)
    score = float(np.mean([r.ret for r in ev]))
    state["best_eval"] = {**old, "score": score, "mdnrnn_checkpoint": m_checkpoint}
    log.say(
        f"train_controller: M changed ({was} -> {m_checkpoint}): the kept parameters "
        f"(generation {old['generation']}) score {score:.1f} with it on the evaluation tracks (were {old['score']:.1f})"
    )


def run(cfg: TrainControllerConfig) -> dict:
    """Trains (or resumes) the controller; returns :func:`state_summary`."""
    validate(cfg)
    import contextlib

    import cma
    import numpy as np

    from data_gen import ray_engine

    dreaming = cfg.env == "dream"
    n_jobs = cfg.eval_episodes if dreaming else cfg.popsize * cfg.trials
    envs = cfg.envs or min(n_jobs, 256)
    workers = min(cfg.workers or os.cpu_count() or 1, envs)
    if cfg.ray_address:  # an unreachable cluster is one line now, before the workdir or the agent
        ray_engine.connect(cfg.ray_address, workers)
    _guard(cfg)
    if not dreaming or cfg.inference_threads:  # before TensorFlow's first op
        # (the dream is this process's own heavy compute: it keeps TensorFlow's full thread pool)
        distribute.set_inference_threads(workers, cfg.inference_threads)
    agent = loading.load_agent(cfg.vae, cfg.mdnrnn, cfg.controller, cfg.inference_precision)
    ctrl = agent.controller
    dream = _Dream(cfg, agent) if dreaming else None
    # a real-environment run whose M can dream plays its evaluated means in the dream too (the gap, logged)
    gauge = dream or (_Dream(cfg, agent) if cfg.series and cfg.eval_every and can_dream(cfg.mdnrnn) else None)
    state_path = fileio.join(cfg.workdir, STATE_NAME)
    params_path = fileio.join(cfg.workdir, PARAMS_NAME)
    state_bytes = fileio.read_bytes(state_path)
    x0 = _init_mean(cfg, ctrl.num_params) if state_bytes is None else None  # checked before any write
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
            **({"dream": {"dropout": dream.dropout, "starts": len(dream.starts)}} if dream else {}),
        },
    )

    if state_bytes is not None:
        state = pickle.loads(state_bytes)
        np.random.set_state(state["np_random"])
        print(f"train_controller: resuming after generation {state['generation']}", file=sys.stderr)
    else:
        np.random.seed(cfg.seed)
        es = cma.CMAEvolutionStrategy(x0, cfg.sigma0, {"popsize": cfg.popsize, "seed": cfg.seed + 1, "verbose": -9})
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
        "cma-es",
        cfg.workdir,
        total=cfg.generations,
        initial=state["generation"],
        unit="gen",
        splits=(None, "dream", "real") if gauge else (None,),
        progress=cfg.progress,
    )
    need_pool = not dreaming or cfg.eval_every > 0
    spec = workers_lib.AgentSpec(
        fileio.abspath(cfg.vae), fileio.abspath(cfg.mdnrnn), cfg.controller, cfg.inference_precision
    )
    pool_cm = (
        workers_lib.make_runner(cfg.layout, spec, cfg.env_id, envs, workers, cfg.max_steps, cfg.ray_address, agent)
        if need_pool
        else contextlib.nullcontext()
    )
    m_checkpoint = os.path.basename(workdir.latest_checkpoint(cfg.mdnrnn) or "")
    with log, stopping(), pool_cm as pool:
        if state["best_eval"] is not None and state["best_eval"].get("mdnrnn_checkpoint") != m_checkpoint:
            _rescore_best(cfg, state, pool, eval_seeds, m_checkpoint, log)
            _write_best(params_path, state, ctrl)
        while state["generation"] < cfg.generations:
            gen = state["generation"] + 1
            t0 = time.perf_counter()
            solutions = es.ask()
            if dreaming:
                returns, steps = dream.play(np.stack(solutions), cfg.trials, [gen])
                fitness = returns.mean(axis=1)
            else:
                seeds = loading.track_seeds(cfg.seed, loading.TRAIN_STREAM, cfg.trials, offset=(gen - 1) * cfg.trials)
                jobs = [(m, s) for m in range(cfg.popsize) for s in seeds]
                results = pool.run(np.stack(solutions), jobs, cfg.max_steps, cfg.early_stop)
                fitness = np.array([r.ret for r in results]).reshape(cfg.popsize, cfg.trials).mean(axis=1)
                steps = sum(r.steps for r in results)
            es.tell(solutions, list(-fitness))
            record = {
                "generation": gen,
                "mean": float(fitness.mean()),
                "max": float(fitness.max()),
                "min": float(fitness.min()),
                "sigma": float(es.sigma),
                ("dream_steps" if dreaming else "env_steps"): int(steps),
                "wall_time": time.perf_counter() - t0,
            }
            if fitness.max() > state["best_fitness"]:
                state["best_fitness"] = float(fitness.max())
                state["best_member"] = np.asarray(solutions[int(fitness.argmax())], np.float32)
            if cfg.eval_every and due(gen, cfg.eval_every, gen == cfg.generations):
                mean_params = np.asarray(es.mean, np.float32)[None]
                ev = pool.run(mean_params, [(0, s) for s in eval_seeds], cfg.max_steps)
                score = float(np.mean([r.ret for r in ev]))
                record["eval_mean"] = score
                record["eval_env_steps"] = int(sum(r.steps for r in ev))
                if gauge:  # the same parameters on fixed dream worlds: the dream-vs-real gap
                    record["dream_eval_mean"] = float(gauge.play(mean_params, cfg.eval_episodes, [0, 0])[0].mean())
                if state["best_eval"] is None or score > state["best_eval"]["score"]:
                    state["best_eval"] = {
                        "score": score,
                        "params": mean_params[0],
                        "generation": gen,
                        "mdnrnn_checkpoint": m_checkpoint,
                    }
                record["best_eval"] = state["best_eval"]["score"]
            state["generation"] = gen
            state["records"].append(record)
            state["np_random"] = np.random.get_state()
            fileio.write_bytes_atomic(state_path, pickle.dumps(state))
            _write_best(params_path, state, ctrl)
            rate = steps / max(record["wall_time"], 1e-9)
            scalars = {
                (f"return/{k}" if k in ("mean", "max", "min") else k): record[k]
                for k in ("mean", "max", "min", "sigma", "eval_mean", "best_eval", "dream_eval_mean")
                if k in record
            }
            log.record(record, step=gen, scalars={**scalars, ("dream" if dreaming else "env") + "_steps_per_sec": rate})
            if "eval_mean" in record and gauge:  # one TensorBoard chart: the mean's return, dream and real
                log.record(None, step=gen, scalars={"mean_params_return": record["dream_eval_mean"]}, split="dream")
                log.record(None, step=gen, scalars={"mean_params_return": record["eval_mean"]}, split="real")
            unit = "dream steps/s" if dreaming else "steps/s"
            log.advance(1, f"mean={record['mean']:.1f} max={record['max']:.1f} {rate:.0f} {unit}")
    summary = state_summary(state)
    print(
        f"train_controller: generation {state['generation']}, best fitness {summary['best_fitness']:.1f}"
        + (f", best eval {summary['best_eval']:.1f}" if summary["best_eval"] is not None else "")
        + f"; parameters in {params_path}",
        file=sys.stderr,
    )
    return summary
