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
member so far) go to ``WORKDIR/controller.npz``. With ``eval_confirm``, a mean that beats the kept score on
those tracks is played on ``eval_confirm`` more and kept only if its mean over all of them still beats it:
the maximum of many noisy 8-track scores is optimistic, and a lucky one would otherwise hold the kept place.
With ``starts`` (:mod:`wm.training.starts`), the first ``starts x start_generations`` generations are
spent on that many independent CMA-ES starts, and the start whose mean evaluates best continues.
With ``screen`` (:mod:`wm.training.screen`), the
population is first ranked in M's dream and only its ``screen`` best play on the generation's tracks.
With ``score_episodes``, the parameters in ``controller.npz`` are also played on ``wm.evaluate``'s
first ``score_episodes`` tracks whenever they or M changed: each
record's ``heldout_score`` against its ``real_env_steps`` (every real step the run played so far) is
the run's score against real-environment steps (TensorBoard ``heldout_score_by_real_env_steps``).

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
saved atomically to ``WORKDIR/cma_state.pkl`` (:class:`wm.training.cma_state.CmaState`); rerunning
continues from the last finished generation (``generations`` is the total). A stop (Ctrl-C, SIGTERM)
ends at once; the generation in progress is redone on the next run. The loop's phases (set up, restore,
one generation, one evaluation, one checkpoint) are the methods of :class:`CmaEsTrainer`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import threadpoolctl

from data_gen import rollout
from tfrecords.runtime import fileio
from tfrecords.runtime.cli import UsageError, check, option
from wm.agents import loading
from wm.agents import workers as workers_lib
from wm.agents.dream import DONE_MODES, ENSEMBLE_REWARDS, START_MODES, can_dream, check_dreamer
from wm.agents.fidelity import spearman
from wm.core import distribute, workdir
from wm.training import screen, starts
from wm.training.cma_state import REAL_STEP_KEYS, STATE_NAME, BestEval, CmaState
from wm.training.loop import RunLog, due, stopping

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
        "first",
        help="Dream episodes start at the series' episode starts, at random steps (M's state zero) or branch from "
        "random steps with M's state there.",
        choices=START_MODES,
    )
    dream_horizon: int = option(0, help="Dream episodes' steps at most (0: --max_steps).", min=0)
    dream_ensemble: str = option(
        "", help="More M workdirs (comma-separated, M's sizes and heads) dreaming beside --mdnrnn as an ensemble."
    )
    ensemble_reward: str = option(
        "mean", help="An ensemble's step reward: the members' mean or min.", choices=ENSEMBLE_REWARDS
    )
    dream_disagreement: float = option(
        0.0, help="An ensemble's penalty per unit of its members' reward standard deviation.", min=0
    )
    dream_done: str = option(
        "threshold",
        help="How M's terminal head ends a dream episode: threshold (probability above 1/2) or sample (a coin "
        "with that probability, per world and step).",
        choices=DONE_MODES,
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
    mirrored: bool = option(
        False,
        help="Antithetic sampling: the population is popsize/2 pairs m + d, m - d (pycma's unconditional mirrors; "
        "--popsize even).",
    )
    generations: int = option(100, help="Total generations (rerun with more to continue).", min=1)
    starts: int = option(
        1,
        help="Independent CMA-ES starts (same start mean, other seeds), --start_generations each, at the run's "
        "beginning; the start whose mean scores best on the evaluation tracks then continues (1: one start).",
        min=1,
    )
    start_generations: int = option(0, help="Generations of each start (--starts > 1).", min=0)
    # episodes
    workers: int = option(0, help="Environment worker processes (0: one per core).", min=0)
    envs: int = option(0, help="Environments in flight (0: popsize x trials, at most 256).", min=0)
    layout: str = option("auto", help=workers_lib.LAYOUT_HELP, choices=workers_lib.LAYOUTS)
    ray_address: str = option("", help=workers_lib.RAY_HELP)
    max_steps: int = option(1000, help="Maximum steps per episode.", min=1)
    # evaluation of the CMA-ES mean
    eval_every: int = option(25, help="Evaluate the CMA-ES mean every N generations (0: never).", min=0)
    eval_episodes: int = option(16, help="Tracks per in-training evaluation.", min=1)
    eval_confirm: int = option(
        0,
        help="A mean whose evaluation beats the kept controller's score is played on N more tracks and kept only "
        "if its mean over both sets still beats it (the kept score is then over both sets; 0: off).",
        min=0,
    )
    early_stop: int = option(0, help="End an episode after N steps without a new tile (0: off).", min=0)
    screen: int = option(
        0,
        help="--env=real: rank the population in M's dream first (needs --series and M's reward head) and play "
        "only its N best in the real environment; the rest rank below them in their dream order (0: play all).",
        min=0,
    )
    screen_worlds: int = option(16, help="Dream worlds each member plays when screening (--screen).", min=1)
    score_episodes: int = option(
        0,
        help="Score the kept controller (controller.npz) on wm.evaluate's first N held-out tracks (its --seed=0) "
        "whenever it or M changed: the score against real env steps (0: off).",
        min=0,
    )
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
    tracks_seed: int = option(
        -1,
        help="Seed of the training tracks alone (-1: --seed): CMA-ES's samples and the tracks it trains on, "
        "varied one at a time.",
        min=-1,
    )
    progress: bool = option(True, help="Show a progress bar.")

    def spec(self) -> dict:
        """Settings a resumed run must share with the one it continues."""
        # Where fitness comes from (--env, --trials and the dream's settings) may change between runs:
        # iterative training continues one CMA-ES, trained in the real environment, in M's dream.
        keys: tuple[str, ...] = ("popsize", "sigma0", "max_steps", "early_stop", "controller", "seed")
        if self.init_from:
            keys += ("init_from",)
        if self.starts > 1:
            keys += ("starts", "start_generations")
        if self.tracks_seed >= 0:
            keys += ("tracks_seed",)
        if self.mirrored:
            keys += ("mirrored",)
        return {k: getattr(self, k) for k in keys}


def validate(cfg: TrainControllerConfig) -> None:
    """Raises UsageError with a one-line message for bad settings."""
    check(cfg)
    rollout.check_env_id(cfg.env_id)
    if cfg.env == "dream" and not cfg.series:
        raise UsageError("--env=dream needs --series=DIR (the latent series whose z's start the dream episodes)")
    if cfg.env == "dream":
        check_dreamer(cfg.mdnrnn)
    if cfg.screen and (cfg.env != "real" or not cfg.series):
        raise UsageError("--screen ranks a real-environment population in the dream: it needs --env=real and --series")
    if cfg.screen > cfg.popsize:
        raise UsageError(f"--screen={cfg.screen} plays more members than --popsize={cfg.popsize} has")
    if cfg.screen:
        check_dreamer(cfg.mdnrnn)
    if cfg.mirrored and cfg.popsize % 2:
        raise UsageError(f"--mirrored pairs the population: --popsize={cfg.popsize} must be even")
    if cfg.starts > 1 and not cfg.start_generations:
        raise UsageError(f"--starts={cfg.starts} needs --start_generations=N (the generations of each start)")
    if cfg.starts > 1 and not cfg.eval_every:
        raise UsageError("--starts chooses the start to continue by its evaluated mean: it needs --eval_every > 0")
    for member in (d.strip() for d in cfg.dream_ensemble.split(",") if d.strip()):
        check_dreamer(member)  # an ensemble member must dream rewards too (its sizes are checked on loading)
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


def _init_mean(cfg: TrainControllerConfig, num_params: int) -> np.ndarray:
    """The CMA-ES start: zeros, or ``--init_from``'s parameters (UsageError if missing or of another shape)."""
    if not cfg.init_from:
        return np.zeros(num_params)
    config = workdir.read_config(cfg.init_from)
    if not config or config.get("model") != "controller" or config.get("algorithm") == "ppo":
        raise UsageError(f"--init_from={cfg.init_from} is not a CMA-ES controller workdir")
    return loading.read_params(fileio.join(cfg.init_from, PARAMS_NAME), num_params)[0].astype(np.float64)


class _Dream:
    """The dream side of a run: the environment, its starts and the worlds of each generation."""

    def __init__(self, cfg: TrainControllerConfig, agent: Any):
        from wm.agents.dream import DreamEnv, dream_starts
        from wm.models.loading import load_mdnrnn

        m = agent.mdnrnn
        dropout = m.dropout if cfg.dream_dropout < 0 else cfg.dream_dropout
        # unlike V's and M's train steps, the dream loop is faster under XLA on CPUs too
        jit = cfg.jit_compile != "off"
        ensemble = [load_mdnrnn(d.strip()) for d in cfg.dream_ensemble.split(",") if d.strip()]
        self.env = DreamEnv(
            m,
            agent.controller,
            cfg.dream_horizon or cfg.max_steps,
            cfg.temperature,
            dropout,
            jit,
            cfg.dream_done,
            ensemble,
            cfg.ensemble_reward,
            cfg.dream_disagreement,
        )
        self.starts, self.states = dream_starts(cfg.series, cfg.dream_start, self.env.members, seed=cfg.seed)
        self.cfg, self.dropout = cfg, dropout

    def worlds(self, key: list[int], n: int) -> tuple[np.ndarray, np.ndarray | None, int]:
        """(start latents [n, Z], start states [n, K, 2, H] or None, rollout seed) of ``n`` worlds named by
        ``key``."""
        rng = np.random.default_rng([self.cfg.seed, DREAM_STREAM, *key])
        idx = rng.choice(len(self.starts), n, replace=len(self.starts) < n)
        states = None if self.states is None else self.states[idx]
        return self.starts[idx], states, int(rng.integers(1 << 62))

    def play(self, params: np.ndarray, trials: int, key: list[int]) -> tuple[np.ndarray, int]:
        """Every row of ``params`` on the same ``trials`` worlds -> (returns [P, trials], steps played)."""
        starts, states, seed = self.worlds(key, trials)
        return self.env.rollout_on_worlds(params, starts, seed, states)


class CmaEsTrainer:
    """One run of :func:`run`, in phases (dopamine's ``Runner``) that a subclass can override or a test call alone::

        setup()                        flags, workdir, agent (and dream), evaluation tracks
        restore() -> CmaState          cma_state.pkl, or a fresh CMA-ES (a bad --init_from fails before any write)
        write_config()                 config.json
        with session(state):           self.log (metrics.jsonl, TensorBoard, bar), Ctrl-C, self.pool (episodes)
            check_m(state)             the kept parameters scored again if M changed
            run_one_generation(state)  until --generations:
                fitness(...)           ask's population played on the generation's tracks or dream worlds
                evaluate(state, gen)   the CMA-ES mean on the evaluation tracks, every --eval_every
                checkpoint(state)      cma_state.pkl, controller.npz
                log_generation(record) metrics.jsonl, TensorBoard, the bar
        finish(state) -> dict          the summary

    A class rather than functions over a context: the phases share a dozen values (the config, agent,
    dream, runner, log, evaluation tracks, M's checkpoint), which a subclass keeps while replacing one phase.
    """

    agent: Any  # wm.agents.agent.Agent (set by setup)
    dream: _Dream | None  # the fitness episodes' dream (--env=dream)
    gauge: _Dream | None  # the dream the evaluated means are also played in (the dream-vs-real gap)
    envs: int  # environments in flight
    workers: int  # environment worker processes
    eval_seeds: list[int]  # the in-training evaluation tracks
    m_checkpoint: str  # M's checkpoint the agent acts with (file name)
    log: RunLog  # set by session
    pool: Any  # the episode runner (make_runner), or None (set by session)

    def __init__(self, cfg: TrainControllerConfig):
        self.cfg = cfg
        self.dreaming = cfg.env == "dream"
        self.state_path = fileio.join(cfg.workdir, STATE_NAME)
        self.params_path = fileio.join(cfg.workdir, PARAMS_NAME)

    def run(self) -> dict:
        """Trains (or resumes) the controller; returns :meth:`CmaState.summary`."""
        self.setup()
        state = self.restore()
        self.write_config()
        # metrics.jsonl = exactly the finished generations' records (a killed run may have left more or fewer)
        workdir.MetricsLog(self.cfg.workdir).rewrite(state.records)
        if state.generation >= self.cfg.generations:
            print(
                f"train_controller: {self.cfg.workdir} is already at generation {state.generation}; nothing to do",
                file=sys.stderr,
            )
            return state.summary()
        with self.session(state):
            self.check_m(state)
            while state.generation < self.cfg.generations:
                self.run_one_generation(state)
        return self.finish(state)

    def setup(self) -> None:
        """Checks the flags and the workdir, sizes the runner, loads the agent (and the dream)."""
        from data_gen import ray_engine

        cfg = self.cfg
        validate(cfg)
        n_jobs = (
            max(cfg.eval_episodes, cfg.score_episodes) if self.dreaming else (cfg.screen or cfg.popsize) * cfg.trials
        )
        self.envs = cfg.envs or min(n_jobs, 256)
        self.workers = min(cfg.workers or os.cpu_count() or 1, self.envs)
        if cfg.ray_address:  # an unreachable cluster is one line now, before the workdir or the agent
            ray_engine.connect(cfg.ray_address, self.workers)
        _guard(cfg)
        # pycma's linear algebra on one BLAS thread: OpenBLAS's default (a thread per core) cost 15-20% of a
        # generation's wall time on 2 cores, competing with the workers (BENCHMARKS.md, "The CMA-ES driver's BLAS")
        threadpoolctl.threadpool_limits(limits=1, user_api="blas")
        if not self.dreaming or cfg.inference_threads:  # before TensorFlow's first op
            # (the dream is this process's own heavy compute: it keeps TensorFlow's full thread pool)
            distribute.set_inference_threads(self.workers, cfg.inference_threads)
        self.agent = loading.load_agent(cfg.vae, cfg.mdnrnn, cfg.controller, cfg.inference_precision)
        self.dream = _Dream(cfg, self.agent) if self.dreaming else None
        # a real-environment run whose M can dream plays its evaluated means in the dream too (the gap, logged)
        can_gauge = cfg.series and cfg.eval_every and can_dream(cfg.mdnrnn)
        self.gauge = self.dream or (_Dream(cfg, self.agent) if can_gauge or cfg.screen else None)
        self.screened: dict[str, Any] = {}  # the last screened generation's dream side (--screen)
        self.eval_seeds = loading.track_seeds(cfg.seed, loading.IN_TRAINING_EVAL_STREAM, cfg.eval_episodes)
        # --eval_confirm's tracks: the same stream, after the evaluation tracks
        self.confirm_seeds = loading.track_seeds(
            cfg.seed, loading.IN_TRAINING_EVAL_STREAM, cfg.eval_confirm, offset=cfg.eval_episodes
        )
        # wm.evaluate's own tracks at its default seed: never trained or selected on, the same for every run
        self.score_seeds = loading.track_seeds(0, loading.EVAL_STREAM, cfg.score_episodes)
        self.recheck_steps = 0  # check_m's real steps, counted in the next record
        self.m_checkpoint = os.path.basename(workdir.latest_checkpoint(cfg.mdnrnn) or "")

    def restore(self) -> CmaState:
        """``cma_state.pkl``'s state with NumPy's RNG where it was, or a fresh CMA-ES at ``_init_mean``."""
        cfg = self.cfg
        data = fileio.read_bytes(self.state_path)
        if data is not None:
            state = CmaState.loads(data)
            if state.np_random is not None:
                np.random.set_state(state.np_random)
            print(f"train_controller: resuming after generation {state.generation}", file=sys.stderr)
            return state
        np.random.seed(cfg.seed)
        return CmaState(self.strategy(0))

    def strategy(self, start: int) -> Any:
        """A fresh pycma strategy at ``_init_mean`` for start ``start`` (0: the run's first, or only, one)."""
        import cma

        cfg = self.cfg
        x0 = _init_mean(cfg, self.agent.controller.num_params)
        # Each strategy samples from a RandomState of its own (the same numbers as pycma's "seed" option, which
        # seeds NumPy's global one): pickled, pycma's np.random.randn becomes a private copy anyway, so strategies
        # sharing the global one would sample differently live and after a resume.
        randn = np.random.RandomState(starts.strategy_seed(cfg.seed, start)).randn
        opts = {"popsize": cfg.popsize, "seed": float("nan"), "randn": randn, "verbose": -9}
        if cfg.mirrored:  # every sample paired with its mirror through the mean
            opts.update(CMA_mirrors=cfg.popsize // 2, CMA_mirrormethod=0)
        return cma.CMAEvolutionStrategy(x0, cfg.sigma0, opts)

    def write_config(self) -> None:
        """``config.json``: the kind of run, the settings a resume must keep, the flags."""
        cfg, ctrl, dream = self.cfg, self.agent.controller, self.dream
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
                **(
                    {
                        "dream": {
                            "dropout": dream.dropout,
                            "done": cfg.dream_done,
                            "starts": len(dream.starts),
                            "horizon": dream.env.max_steps,
                            "members": len(dream.env.members),
                        }
                    }
                    if dream
                    else {}
                ),
            },
        )

    @contextlib.contextmanager
    def session(self, state: CmaState) -> Iterator[None]:
        """The generations' surroundings: ``self.log``, Ctrl-C and SIGTERM (the generation in progress is
        redone on the next run) and ``self.pool``, the episode runner (None: a dream run that never evaluates)."""
        cfg = self.cfg
        log = RunLog(
            "cma-es",
            cfg.workdir,
            total=cfg.generations,
            initial=state.generation,
            unit="gen",
            splits=(None, "dream", "real") if self.gauge is not None else (None,),
            progress=cfg.progress,
        )
        spec = workers_lib.AgentSpec(
            fileio.abspath(cfg.vae), fileio.abspath(cfg.mdnrnn), cfg.controller, cfg.inference_precision
        )
        need_pool = not self.dreaming or cfg.eval_every > 0 or cfg.score_episodes > 0
        pool_cm = (
            workers_lib.make_runner(
                cfg.layout, spec, cfg.env_id, self.envs, self.workers, cfg.max_steps, cfg.ray_address, self.agent
            )
            if need_pool
            else contextlib.nullcontext()
        )
        with log, stopping(), pool_cm as pool:
            self.log, self.pool = log, pool
            yield

    def check_m(self, state: CmaState) -> None:
        """Makes ``controller.npz`` and ``best_eval`` describe the agent ``wm.evaluate`` will play, before the
        generations. M changed since the kept parameters were scored (iterative training continues M): C acts
        on M's h, so they are another agent now, scored again with this M on the evaluation tracks (or, with
        evaluation off, the fittest member is forgotten: its fitness was under the old M). The evaluation
        tracks changed (a resume with another ``--eval_episodes`` or ``--eval_confirm``): scored again."""
        old, tracks = state.best_eval, self.cfg.eval_episodes + self.cfg.eval_confirm
        if old is None:
            was = state.best_member_mdnrnn
            if state.best_member is not None and was is not None and was != self.m_checkpoint:
                state.best_member, state.best_fitness = None, -np.inf
                self.log.say(
                    f"train_controller: M changed ({was} -> {self.m_checkpoint}): the fittest member so far "
                    "is forgotten (its fitness was under the old M)"
                )
            return
        m_changed = old.mdnrnn_checkpoint != self.m_checkpoint
        if not m_changed and old.tracks in (None, tracks):
            return
        if m_changed:
            state.best_member = None  # fitness under another M is not comparable either
            state.best_fitness = -np.inf
        why = (
            f"M changed ({old.mdnrnn_checkpoint or 'an unrecorded checkpoint'} -> {self.m_checkpoint})"
            if m_changed
            else f"the evaluation tracks changed ({old.tracks} -> {tracks})"
        )
        if self.pool is None or not self.cfg.eval_every:
            state.best_eval = None
            self.log.say(f"train_controller: {why}: best eval reset")
        else:
            again = self.play_eval_tracks(old.params, confirm=True)
            score = float(np.mean([r.ret for r in again]))
            self.recheck_steps = int(sum(r.steps for r in again))
            state.best_eval = dataclasses.replace(old, score=score, mdnrnn_checkpoint=self.m_checkpoint, tracks=tracks)
            self.log.say(
                f"train_controller: {why}: the kept parameters (generation {old.generation}) score {score:.1f} "
                f"on {tracks} evaluation tracks (were {old.score:.1f})"
            )
        self.write_best(state)

    def run_one_generation(self, state: CmaState) -> dict:
        """Ask, play, tell; the CMA-ES mean evaluated when due; the checkpoint and the logs. Returns the record."""
        cfg = self.cfg
        gen = state.generation + 1
        t0 = time.perf_counter()
        solutions = state.es.ask()
        fitness, steps = self.fitness(np.stack(solutions), gen)
        state.es.tell(solutions, list(-fitness))
        shown = fitness[self.screened["played"]] if cfg.screen else fitness  # the returns played, not the ranks
        record = {
            "generation": gen,
            "mean": float(shown.mean()),
            "max": float(shown.max()),
            "min": float(shown.min()),
            "sigma": float(state.es.sigma),
            ("dream_steps" if self.dreaming else "env_steps"): int(steps),
            "wall_time": time.perf_counter() - t0,
        }
        if cfg.screen:
            dream_fitness, played = self.screened["dream_fitness"], self.screened["played"]
            record.update(dream_steps=self.screened["dream_steps"], dream_fitness_mean=float(dream_fitness.mean()))
            rho = spearman(dream_fitness[played], shown) if len(played) > 1 else float("nan")
            if np.isfinite(rho):  # how the dream ranked the members it let through (undefined if all tie)
                record["screen_rho"] = rho
        state.keep_fittest(solutions, fitness, gen)
        state.best_member_mdnrnn = self.m_checkpoint  # (check_m forgot a fittest member of another M)
        state.keep_mean()
        start = starts.start_of(gen, cfg.starts, cfg.start_generations)
        start_ends = starts.ends_start(gen, cfg.starts, cfg.start_generations)
        if cfg.eval_every and (start_ends or due(gen, cfg.eval_every, gen == cfg.generations)):
            record.update(self.evaluate(state, gen))
        if start is not None:
            record["start"] = start
        if start_ends:
            record.update(self.next_start(state, gen, record["eval_mean"]))
        if self.recheck_steps:
            record["recheck_env_steps"], self.recheck_steps = self.recheck_steps, 0
        if cfg.score_episodes:
            record.update(self.score_kept(state, record))
        record["train_time"] = state.train_time() + time.perf_counter() - t0
        state.generation = gen
        state.records.append(record)
        self.checkpoint(state)
        self.log_generation(record)
        return record

    def next_start(self, state: CmaState, gen: int, score: float) -> dict:
        """After the last generation ``gen`` of a start whose mean scored ``score``: the start parked and the
        next one begun, or, after the last start, the best one continued. Returns the record's entries."""
        cfg = self.cfg
        k = len(state.starts)
        state.starts.append({"es": state.es, "score": score, "generation": gen})
        if k + 1 < cfg.starts:
            state.es = self.strategy(k + 1)
            self.log.say(f"train_controller: start {k + 1} scored {score:.1f}; start {k + 2} of {cfg.starts} begins")
            return {}
        scores = [float(s["score"]) for s in state.starts]
        best = starts.best_start(scores)
        state.es, state.starts = state.starts[best]["es"], []
        self.log.say(
            f"train_controller: starts scored {', '.join(f'{x:.1f}' for x in scores)}; start {best + 1} continues"
        )
        return {"start_scores": scores, "start_continued": best}

    def fitness(self, population: np.ndarray, gen: int) -> tuple[np.ndarray, int]:
        """Each member's mean return over ``trials`` episodes on generation ``gen``'s tracks (or dream worlds),
        the same for every member; and the steps played."""
        cfg = self.cfg
        if self.dream is not None:
            returns, steps = self.dream.play(population, cfg.trials, [gen])
            return returns.mean(axis=1), steps
        if cfg.screen:  # the population ranked in the dream; only its best cfg.screen play on the tracks
            assert self.gauge is not None  # set up for --screen
            dream, dream_steps = self.gauge.play(population, cfg.screen_worlds, [gen, 1])
            dream_fitness = dream.mean(axis=1)
            played = screen.pick(dream_fitness, cfg.screen)
            real, steps = self.real_fitness(population[played], gen)
            self.screened = {"played": played, "dream_fitness": dream_fitness, "dream_steps": dream_steps}
            return screen.combined(real, played, dream_fitness), steps
        return self.real_fitness(population, gen)

    def real_fitness(self, population: np.ndarray, gen: int) -> tuple[np.ndarray, int]:
        """Each row's mean return over ``trials`` episodes on generation ``gen``'s tracks, and the steps played."""
        cfg = self.cfg
        tracks_seed = cfg.seed if cfg.tracks_seed < 0 else cfg.tracks_seed
        seeds = loading.track_seeds(tracks_seed, loading.TRAIN_STREAM, cfg.trials, offset=(gen - 1) * cfg.trials)
        jobs = [(m, s) for m in range(len(population)) for s in seeds]
        results = self.pool.run(population, jobs, cfg.max_steps, cfg.early_stop)
        fitness = np.array([r.ret for r in results]).reshape(len(population), cfg.trials).mean(axis=1)
        return fitness, sum(r.steps for r in results)

    def play_tracks(self, params: np.ndarray, seeds: list[int]) -> list:
        """``params`` ([num_params]) played on the tracks ``seeds`` -> the episode results."""
        return self.pool.run(params[None], [(0, s) for s in seeds], self.cfg.max_steps)

    def play_eval_tracks(self, params: np.ndarray, confirm: bool = False) -> list:
        """``params`` played on the fixed in-training evaluation tracks (and, with ``confirm``,
        ``--eval_confirm``'s tracks after them) -> the episode results."""
        return self.play_tracks(params, self.eval_seeds + (self.confirm_seeds if confirm else []))

    def evaluate(self, state: CmaState, gen: int) -> dict:
        """The CMA-ES mean on the evaluation tracks (and on fixed dream worlds, with a gauge), kept if it is the
        best so far. Returns the record's evaluation entries."""
        mean_params = np.asarray(state.es.mean, np.float32)
        ev = self.play_eval_tracks(mean_params)
        score = float(np.mean([r.ret for r in ev]))
        out = {"eval_mean": score, "eval_env_steps": int(sum(r.steps for r in ev))}
        if self.gauge is not None:  # the same parameters on fixed dream worlds: the dream-vs-real gap
            out["dream_eval_mean"] = float(self.gauge.play(mean_params[None], self.cfg.eval_episodes, [0, 0])[0].mean())
        kept = score
        if (state.best_eval is None or score > state.best_eval.score) and self.confirm_seeds:
            more = self.play_tracks(mean_params, self.confirm_seeds)
            out["confirm_mean"] = float(np.mean([r.ret for r in more]))
            out["confirm_env_steps"] = int(sum(r.steps for r in more))
            kept = float(np.mean([r.ret for r in ev + more]))
            out["confirmed_mean"] = kept
        if state.best_eval is None or kept > state.best_eval.score:
            tracks = len(self.eval_seeds) + (len(self.confirm_seeds) if "confirm_mean" in out else 0)
            state.best_eval = BestEval(kept, mean_params, gen, self.m_checkpoint, tracks)
        out["best_eval"] = state.best_eval.score
        return out

    def score_kept(self, state: CmaState, record: dict) -> dict:
        """The kept controller's mean return on the held-out tracks, played again only when its parameters or
        M changed since the last score, and the real-environment steps so far: one point of the score against
        real steps (the scoring's own episodes are measurement, not counted)."""
        out: dict[str, Any] = {"real_env_steps": state.real_env_steps() + sum(record.get(k, 0) for k in REAL_STEP_KEYS)}
        params = state.kept()
        if params is None:
            return out
        key = f"{hashlib.sha1(np.asarray(params, np.float32).tobytes()).hexdigest()[:16]}@{self.m_checkpoint}"
        last = state.last_heldout()
        if last is not None and last.get("heldout_key") == key:
            return {**out, "heldout_score": last["heldout_score"], "heldout_key": key}
        played = self.play_tracks(params, self.score_seeds)
        return {**out, "heldout_score": float(np.mean([r.ret for r in played])), "heldout_key": key}

    def checkpoint(self, state: CmaState) -> None:
        """Saves the finished generation: ``cma_state.pkl`` (atomically, with NumPy's RNG state), ``controller.npz``."""
        state.np_random = np.random.get_state()
        fileio.write_bytes_atomic(self.state_path, state.dumps())
        self.write_best(state)

    def write_best(self, state: CmaState) -> None:
        """``controller.npz``: the best evaluated mean, or (none evaluated) the fittest member so far."""
        ctrl = self.agent.controller
        if state.best_eval is not None:
            b = state.best_eval
            loading.save_params(self.params_path, b.params, ctrl, "eval", b.generation, b.score)
        elif state.best_member is not None:  # (a state from before the member's generation was kept: the latest)
            gen = state.best_member_generation or state.generation
            loading.save_params(self.params_path, state.best_member, ctrl, "fitness", gen, state.best_fitness)

    def log_generation(self, record: dict) -> None:
        """The generation's record to metrics.jsonl and TensorBoard, and the bar moved on."""
        gen, kind = record["generation"], "dream" if self.dreaming else "env"
        rate = record[f"{kind}_steps"] / max(record["wall_time"], 1e-9)
        scalars = {
            (f"return/{k}" if k in ("mean", "max", "min") else k): record[k]
            for k in ("mean", "max", "min", "sigma", "eval_mean", "best_eval", "dream_eval_mean", "heldout_score")
            if k in record
        }
        self.log.record(record, step=gen, scalars={**scalars, f"{kind}_steps_per_sec": rate})
        if "heldout_score" in record:  # x: real env steps (TensorBoard's relative/wall axis gives the time)
            steps = record["real_env_steps"]
            self.log.record(None, step=steps, scalars={"heldout_score_by_real_env_steps": record["heldout_score"]})
        if "eval_mean" in record and self.gauge is not None:  # one TensorBoard chart: the mean's return, dream and real
            self.log.record(None, step=gen, scalars={"mean_params_return": record["dream_eval_mean"]}, split="dream")
            self.log.record(None, step=gen, scalars={"mean_params_return": record["eval_mean"]}, split="real")
        unit = "dream steps/s" if self.dreaming else "steps/s"
        self.log.advance(1, f"mean={record['mean']:.1f} max={record['max']:.1f} {rate:.0f} {unit}")

    def finish(self, state: CmaState) -> dict:
        """The closing line; returns :meth:`CmaState.summary`."""
        summary = state.summary()
        print(
            f"train_controller: generation {state.generation}, best fitness {summary['best_fitness']:.1f}"
            + (f", best eval {summary['best_eval']:.1f}" if summary["best_eval"] is not None else "")
            + f"; parameters in {self.params_path}",
            file=sys.stderr,
        )
        return summary


def run(cfg: TrainControllerConfig) -> dict:
    """Trains (or resumes) the controller; returns :meth:`CmaState.summary`."""
    return CmaEsTrainer(cfg).run()
