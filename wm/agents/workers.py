"""Workers that infer for themselves: each owns a slice of the environments and its own V + M + C.

Two layouts play the same episode jobs (parameter row, environment seed):

- ``central`` (:class:`CentralRunner`): environment processes send every frame to this process,
  which runs V + M + C for all of them (:func:`wm.agents.agent.run_episodes` over an
  :class:`~data_gen.envpool.EnvPool`).
- ``workers`` (:class:`WorkerPool`): every worker is one process (a local one, or a Ray actor with
  ``ray_address``) holding its environments in-process and its own agent, loaded once from the
  V/M (or agent) workdirs; it plays whole episodes with the same runner and returns their
  :class:`~wm.agents.agent.EpisodeResult`. Per batch of jobs the driver sends each worker the
  controller parameters once and a list of jobs; frames never cross a process boundary.

Both have ``run(params, jobs, max_steps, early_stop, on_episode, record)``; the same jobs give
the same episodes in both (same batched step, same seeds).

A worker that dies or raises is replaced and its unfinished jobs are played again from their
start on the fresh one; after ``max_restarts`` replacements :class:`WorkerError` (one line) ends
the run. Nothing waits without a timeout that checks whether the worker is still alive.

Here: the layouts (``--layout``, ``--ray_address``), :class:`AgentSpec`, and the two runners. The worker
itself and the engines that run it (local processes, Ray actors) are in :mod:`wm.agents.engines`; what
records chosen episodes (video frames, whole episodes) is in :mod:`wm.agents.recording`.
"""

from __future__ import annotations

import abc
import collections
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from data_gen import ray_engine
from data_gen.envpool import EnvPool
from tfrecords.runtime.errors import OneLineError, UsageError
from wm.agents.agent import EpisodeResult, run_episodes
from wm.agents.engines import Engine, Loadable, LocalEngine, RayEngine
from wm.agents.recording import AfterLastStep, make_recorder

LAYOUTS = ("auto", "central", "workers")
# What ``auto`` picks on one machine, measured by benchmarks/bench_layout.py (see BENCHMARKS.md).
AUTO_LAYOUT = "workers"
LAYOUT_HELP = (
    "Where V + M + C run: central (environment processes send every frame to this process, which infers "
    "for all), workers (each worker process steps its own environments and runs its own V + M + C; only "
    "parameters and returns cross processes), auto: workers (faster on 2 cores, see BENCHMARKS.md), "
    "central for models on ram://. With --ray_address: workers."
)
RAY_HELP = (
    "Run the workers as Ray actors: '' (default) local processes; 'auto' the Ray cluster this machine "
    "is part of; 'local' a new one-machine Ray cluster; else a cluster address (HOST:PORT, ray://HOST:PORT)."
)


class WorkerError(OneLineError, RuntimeError):
    """The workers failed more often than allowed (the message ends with the last failure)."""


@dataclasses.dataclass(frozen=True)
class AgentSpec:
    """How a worker builds its agent: a trained agent workdir (``agent_dir``, as ``wm.evaluate``), or
    V and M workdirs plus a controller kind (as ``wm.train_controller``). ``precision`` is V's."""

    vae: str = ""
    mdnrnn: str = ""
    controller: str = "linear"
    precision: str = "auto"
    agent_dir: str = ""

    def load(self) -> Any:
        """The agent (``wm.agents.agent.Agent`` or a PPO policy), weights loaded from the workdirs."""
        from wm.agents import loading

        if self.agent_dir:
            return loading.load_policy(self.agent_dir, self.precision)[0]
        return loading.load_agent(self.vae, self.mdnrnn, self.controller, self.precision)


def _process_local(paths: Sequence[str]) -> list[str]:
    """The paths that only this process can read (TensorFlow's in-memory ``ram://`` filesystem)."""
    return [p for p in paths if p and str(p).startswith("ram://")]


def resolve_layout(layout: str, ray_address: str = "", paths: Sequence[str] = ()) -> str:
    """``central`` or ``workers`` for a ``--layout`` flag and the model ``paths`` the workers would load.

    ``auto`` is central when a model lives on a filesystem other processes cannot read (``ram://``);
    an explicit workers layout or Ray with such a path, or a central layout on Ray, is a UsageError.
    """
    if layout not in LAYOUTS:
        raise UsageError(f"--layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    local = _process_local(paths)
    if ray_address:
        if layout == "central":
            raise UsageError(
                "--layout=central runs on this machine only; --ray_address needs --layout=workers (or auto)"
            )
        if local:
            raise UsageError(f"Ray actors cannot read {local[0]} (ram:// lives in this process only)")
        return "workers"
    if local:
        if layout == "workers":
            raise UsageError(
                f"--layout=workers: worker processes cannot read {local[0]} (ram:// lives in this process "
                "only); use --layout=central or auto"
            )
        return "central"
    return AUTO_LAYOUT if layout == "auto" else layout


def spec_paths(spec: Any) -> list[str]:
    """The workdirs a worker loads for ``spec`` (empty for specs that name none)."""
    return [getattr(spec, k, "") for k in ("vae", "mdnrnn", "agent_dir")]


def check_ray_address(address: str) -> None:
    """UsageError (one line) for a malformed ``--ray_address``, before anything starts."""
    ray_engine.check_address(address)


# ---------------------------------------------------------------- the driver


@dataclasses.dataclass(frozen=True)
class Batch:
    """One ``run`` call's work, as both runners take it: the controller parameters [rows, n] (float32),
    the jobs (row of ``params``, environment seed), the step limit, ``early_stop`` (see
    :func:`wm.agents.agent.run_episodes`), the jobs to record and how (``record_kind``)."""

    params: np.ndarray
    jobs: list[tuple[int, int]]
    max_steps: int
    early_stop: int
    record: frozenset[int]
    record_kind: str


class EpisodeRunner(abc.ABC):
    """What both layouts offer: ``run`` a batch of episode jobs, their recordings in :attr:`recorded`,
    their processes' ids, ``close`` (also as a context manager)."""

    recorded: dict[int, Any]

    def run(
        self,
        params: np.ndarray,
        jobs: Sequence[tuple[int, int]],
        max_steps: int,
        early_stop: int = 0,
        on_episode: Callable[[EpisodeResult], None] | None = None,
        record: frozenset[int] = frozenset(),
        record_kind: str = "video",
    ) -> list[EpisodeResult]:
        """Plays every job (row of ``params``, environment seed) to its end; returns results in job order.

        ``record``: job indices whose recording ends up in :attr:`recorded` (``record_kind``
        ``"video"``: frames, z and actions; ``"episode"``: ``(schema.Episode, z)``), there before
        ``on_episode`` sees the job's result.
        """
        jobs = [(int(row), int(seed)) for row, seed in jobs]
        batch = Batch(np.asarray(params, np.float32), jobs, max_steps, early_stop, frozenset(record), record_kind)
        return self._play(batch, on_episode or (lambda r: None))

    @abc.abstractmethod
    def _play(self, batch: Batch, on_episode: Callable[[EpisodeResult], None]) -> list[EpisodeResult]:
        """Plays ``batch``, reporting each result to ``on_episode`` as it comes."""

    @property
    @abc.abstractmethod
    def pids(self) -> list[int]:
        """The ids of the processes that step the environments."""

    @abc.abstractmethod
    def close(self) -> None:
        """Stops the runner's processes."""

    def __enter__(self) -> EpisodeRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class WorkerPool(EpisodeRunner):
    """``workers`` workers with ``num_envs`` environments between them, each inferring for its own.

    Args:
      spec: how each worker builds its agent (:class:`AgentSpec`).
      env_id, num_envs, workers, max_steps: the environments (worker w holds every ``workers``-th).
      max_restarts: worker replacements allowed over this pool's life before :class:`WorkerError`.
      ray_address: '' for local processes, else Ray actors on that cluster (see
        :func:`data_gen.ray_engine.connect`).
      threads: TensorFlow threads in each worker.
    """

    def __init__(
        self,
        spec: Loadable,
        env_id: str,
        num_envs: int,
        workers: int,
        max_steps: int,
        max_restarts: int = 3,
        ray_address: str = "",
        threads: int = 1,
    ):
        if num_envs <= 0 or workers <= 0:
            raise ValueError("num_envs and workers must be positive")
        self.num_envs, self.workers = num_envs, min(workers, num_envs)
        self.max_restarts, self.restarts = max_restarts, 0

        def kwargs_of(w: int) -> dict:
            slots = len(range(w, self.num_envs, self.workers))
            return dict(spec=spec, env_id=env_id, num_envs=slots, max_steps=max_steps, threads=threads)

        self.engine: Engine
        if ray_address:
            self.engine = ray = RayEngine(kwargs_of, ray_address, self.workers)
            # an actor asks for one CPU: more actors than CPUs would wait forever for theirs
            self.workers = max(1, min(self.workers, ray.cpus()))
        else:
            self.engine = LocalEngine(kwargs_of)
        self._failures: list[str] = []
        self._run_id = 0
        self.recorded: dict[int, Any] = {}
        for w in range(self.workers):
            self.engine.start(w)

    @property
    def pids(self) -> list[int]:
        """The workers' process ids, in worker order (they change when a worker is replaced)."""
        return self.engine.pids()

    def _play(self, batch: Batch, on_episode: Callable[[EpisodeResult], None]) -> list[EpisodeResult]:
        """Chunks of jobs to the workers, a lost worker's chunks again to its replacement."""
        jobs, record = batch.jobs, batch.record
        shared = self.engine.put(batch.params)
        n = len(jobs)
        size = max(1, -(-n // (self.workers * self.engine.chunks_per_worker)))
        chunks = {i: list(range(lo, min(n, lo + size))) for i, lo in enumerate(range(0, n, size))}
        self._run_id += 1  # a chunk is named (run, index): late messages of an earlier run are ignored
        queue = collections.deque((self._run_id, c) for c in chunks)
        inflight: dict[int, list[tuple[int, int]]] = {w: [] for w in range(self.workers)}
        results: dict[int, EpisodeResult] = {}
        self.recorded = {}

        def dispatch(w: int) -> None:
            while queue and len(inflight[w]) < self.engine.depth:
                c = queue.popleft()
                todo = [j for j in chunks[c[1]] if j not in results]
                if not todo:
                    continue
                payload = [(j, *jobs[j]) for j in todo]
                rec = frozenset(j for j in record if j in todo)
                self.engine.submit(w, c, payload, batch.max_steps, batch.early_stop, rec, batch.record_kind)
                inflight[w].append(c)

        def finish(res: EpisodeResult, rec: dict | None) -> None:
            if res.job in results:
                return
            results[res.job] = res
            if rec is not None:
                self.recorded[res.job] = rec
            on_episode(res)

        for w in range(self.workers):
            self.engine.send_params(w, shared)
            dispatch(w)
        while len(results) < n:
            for kind, w, chunk, payload in self.engine.poll(timeout=5.0):
                if w not in inflight:
                    continue
                if kind == "lost":
                    self._replace(w, payload, inflight, queue, shared)
                    dispatch(w)
                    continue
                if chunk not in inflight[w]:
                    continue  # from an earlier run (its results were all in before this message)
                for res, rec in payload:
                    finish(res, rec)
                if kind == "done":
                    inflight[w].remove(chunk)
                    dispatch(w)
            if len(results) < n and not queue and not any(inflight.values()):
                raise RuntimeError(f"jobs {sorted(set(range(n)) - set(results))[:5]} never finished")  # a bug
        return [results[j] for j in range(n)]

    def _replace(self, w: int, reason: str, inflight: dict, queue: collections.deque, shared: Any) -> None:
        """Replaces a lost worker; its unfinished chunks go first in the queue."""
        self.restarts += 1
        self._failures.append(reason)
        self.engine.kill(w)
        if self.restarts > self.max_restarts:
            raise WorkerError(f"episode workers failed {self.restarts} times, last: {reason}; giving up")
        for c in reversed(inflight[w]):
            queue.appendleft(c)
        inflight[w] = []
        self.engine.start(w)
        self.engine.send_params(w, shared)

    def close(self) -> None:
        """Stops the workers (local processes end; Ray actors are killed; a Ray connection stays)."""
        self.engine.close()


class CentralRunner(EpisodeRunner):
    """Today's layout behind the same ``run`` as :class:`WorkerPool`: an :class:`EnvPool` of environment
    processes stepped in lockstep with ``agent``'s batched inference in this process."""

    def __init__(self, agent: Any, env_id: str, num_envs: int, workers: int, max_steps: int):
        self.agent = agent
        self.pool = EnvPool(env_id, num_envs, workers, max_steps)
        self.recorded: dict[int, Any] = {}

    @property
    def pids(self) -> list[int]:
        """The environment processes' ids."""
        return self.pool.pids

    def _play(self, batch: Batch, on_episode: Callable[[EpisodeResult], None]) -> list[EpisodeResult]:
        """:func:`wm.agents.agent.run_episodes` over the environment pool."""
        record, kind = batch.record, batch.record_kind
        recorder = make_recorder(kind, record, {j: seed for j, (_, seed) in enumerate(batch.jobs)}, batch.max_steps)
        self.recorded = recorder.recorded
        after = AfterLastStep(recorder, record, on_episode)
        out = run_episodes(
            self.pool,
            self.agent,
            batch.params,
            batch.jobs,
            batch.max_steps,
            batch.early_stop,
            on_episode=after.done,
            on_step=after.on_step if record else None,
            raw_jobs=record if kind == "video" else frozenset(),
            record_jobs=record,
        )
        after.flush()
        return out

    def close(self) -> None:
        """Stops the environment processes."""
        self.pool.close()


def make_runner(
    layout: str,
    spec: Loadable,
    env_id: str,
    num_envs: int,
    workers: int,
    max_steps: int,
    ray_address: str = "",
    agent: Any = None,
) -> EpisodeRunner:
    """The episode runner for a ``--layout`` (and ``--ray_address``): central needs ``agent`` (or loads
    it from ``spec``), workers load their own from ``spec``."""
    if resolve_layout(layout, ray_address, spec_paths(spec)) == "central":
        return CentralRunner(agent if agent is not None else spec.load(), env_id, num_envs, workers, max_steps)
    return WorkerPool(spec, env_id, num_envs, workers, max_steps, ray_address=ray_address)
