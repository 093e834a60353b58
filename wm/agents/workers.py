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
"""

from __future__ import annotations

import collections
import dataclasses
import multiprocessing as mp
import os
import signal
import time
import traceback
from collections.abc import Callable, Sequence
from multiprocessing.connection import wait as mp_wait
from typing import Any, Protocol

import numpy as np

from data_gen import ray_engine
from data_gen.envpool import EnvPool, InlineEnvs
from tfrecords.runtime.errors import OneLineError, UsageError
from wm.agents.agent import EpisodeResult, run_episodes

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


class Loadable(Protocol):
    """What a worker builds its agent from: picklable, with ``load() -> agent``."""

    def load(self) -> Any: ...


@dataclasses.dataclass(frozen=True)
class AgentSpec:
    """How a worker builds its agent: a trained agent workdir (``agent_dir``, as ``wm.evaluate``), or
    V and M workdirs plus a controller kind (as ``wm.train_controller``). ``precision`` is V's."""

    vae: str = ""
    mdnrnn: str = ""
    controller: str = "linear"
    precision: str = "auto"
    agent_dir: str = ""

    def load(self):
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


# ---------------------------------------------------------------- recording (videos)


class EpisodeRecorder:
    """Collects raw frames, z and actions of chosen jobs for videos: ``on_step`` for ``run_episodes``.

    ``recorded[job]`` = {"raw": [uint8 96x96x3 frames], "z": [...], "a": [...]}; an episode that
    starts again (its worker was lost) starts its record again.
    """

    def __init__(self, jobs: Sequence[int] = ()):
        self.recorded: dict[int, dict] = {j: {"raw": [], "z": [], "a": []} for j in jobs}

    def on_step(self, steps, actions, zs, slot_jobs) -> None:
        """``run_episodes``' ``on_step`` callback."""
        for s, st in steps.items():
            if s not in actions:  # a (re)start: drop anything from an attempt a lost worker cut short
                self.recorded[slot_jobs[s]] = {"raw": [], "z": [], "a": []}
            rec = self.recorded[slot_jobs[s]]
            if s in actions:
                rec["z"].append(zs[s])
                rec["a"].append(actions[s])
            rec["raw"].append(st.raw)


RECORD_KINDS = ("video", "episode")


class EpisodeCollector:
    """Whole episodes of chosen jobs, in the public rollout format: ``recorded[job] = (episode, z)``
    (``wm.agents.collect.EpisodeRecorder``'s ``schema.Episode`` and the agent's z [T, Z]), for
    ``wm.collect``. ``seeds`` maps each recorded job to its environment seed."""

    def __init__(self, seeds: dict[int, int], max_steps: int):
        from wm.agents.collect import EpisodeRecorder as _Assembler

        self.recorded: dict[int, tuple] = {}
        self._assembler = _Assembler(seeds, max_steps, lambda job, ep, z: self.recorded.__setitem__(job, (ep, z)))

    def on_step(self, steps, actions, zs, slot_jobs) -> None:
        """``run_episodes``' ``on_step`` callback."""
        self._assembler.on_step(steps, actions, zs, slot_jobs)


def _recorder(kind: str, want: frozenset[int], seeds: dict[int, int], max_steps: int):
    if kind not in RECORD_KINDS:
        raise ValueError(f"record kind must be one of {RECORD_KINDS}, got {kind!r}")
    if kind == "episode":
        return EpisodeCollector({j: seeds[j] for j in want}, max_steps)
    return EpisodeRecorder(want)


class _AfterLastStep:
    """Reports a recorded job's result only once its recording is whole: ``run_episodes`` reports an
    episode's end before the ``on_step`` that carries its last frame."""

    def __init__(self, recorder, want: frozenset[int], report: Callable[[EpisodeResult], None]):
        self.recorder, self.want, self.report = recorder, want, report
        self.held: list[EpisodeResult] = []

    def done(self, r: EpisodeResult) -> None:
        (self.held.append if r.job in self.want else self.report)(r)

    def on_step(self, *args) -> None:
        self.recorder.on_step(*args)
        self.flush()

    def flush(self) -> None:
        while self.held:
            self.report(self.held.pop())


# ---------------------------------------------------------------- the worker (any process)


class EpisodeWorker:
    """One worker's environments (in this process) and its own agent; the same class runs in a local
    worker process and as a Ray actor.

    Args:
      spec: builds the agent (:class:`AgentSpec`), once, here.
      env_id, num_envs, max_steps: this worker's environments.
      threads: TensorFlow's intra- and inter-op threads in this process (set before its first op).
    """

    def __init__(self, spec: Loadable, env_id: str, num_envs: int, max_steps: int, threads: int = 1):
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
        from wm.core import distribute

        distribute.set_inference_threads(1, threads)
        self.agent = spec.load()
        self.envs = InlineEnvs(env_id, num_envs, max_steps)
        self.params: np.ndarray | None = None

    def pid(self) -> int:
        """This worker's process id."""
        return os.getpid()

    def set_params(self, params: np.ndarray) -> int:
        """Keeps the controller parameters [P, n] the next jobs' rows index; returns P."""
        self.params = np.asarray(params, np.float32)
        return len(self.params)

    def run(
        self,
        jobs: Sequence[tuple[int, int, int]],
        max_steps: int,
        early_stop: int = 0,
        record: frozenset[int] = frozenset(),
        on_episode: Callable[[EpisodeResult, Any], None] | None = None,
        record_kind: str = "video",
    ) -> list[tuple[EpisodeResult, Any]]:
        """Plays jobs (global job index, parameter row, environment seed) to their ends on this worker's
        environments; returns (result with the global index, recording or None) per job, in order.
        ``record`` holds the global indices to record: their raw frames, z and actions
        (``record_kind="video"``), or the whole episode and its z (``"episode"``, see
        :class:`EpisodeCollector`)."""
        if self.params is None:
            raise RuntimeError("set_params before run")
        local = {j: i for i, (j, _, _) in enumerate(jobs)}
        want = frozenset(local[j] for j in record if j in local)
        recorder = _recorder(record_kind, want, {i: seed for i, (_, _, seed) in enumerate(jobs)}, max_steps)

        def report(r: EpisodeResult):
            if on_episode is not None:
                on_episode(dataclasses.replace(r, job=jobs[r.job][0]), recorder.recorded.get(r.job))

        after = _AfterLastStep(recorder, want, report)
        res = run_episodes(
            self.envs,
            self.agent,
            self.params,
            [(row, seed) for _, row, seed in jobs],
            max_steps,
            early_stop,
            on_episode=after.done,
            on_step=after.on_step if want else None,
            raw_jobs=want if record_kind == "video" else frozenset(),
            groups=1,
            record_jobs=want,
        )
        after.flush()
        return [(dataclasses.replace(r, job=jobs[i][0]), recorder.recorded.get(i)) for i, r in enumerate(res)]

    def close(self) -> None:
        """Closes the environments."""
        self.envs.close()


def _serve(conn, kwargs: dict) -> None:
    """A local worker process: builds an :class:`EpisodeWorker`, then serves the driver's requests."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver decides when to stop
    worker = None
    try:
        worker = EpisodeWorker(**kwargs)
        while True:
            cmd, payload = conn.recv()
            if cmd == "close":
                break
            if cmd == "params":
                worker.set_params(payload)
            elif cmd == "run":
                chunk, jobs, max_steps, early_stop, record, kind = payload
                worker.run(
                    jobs,
                    max_steps,
                    early_stop,
                    record,
                    on_episode=lambda r, rec, c=chunk: conn.send(("episode", c, [(r, rec)])),
                    record_kind=kind,
                )
                conn.send(("done", chunk, []))
    except (EOFError, KeyboardInterrupt, BrokenPipeError):
        pass
    except BaseException:
        try:
            conn.send(("error", None, traceback.format_exc(limit=4)))
        except OSError:
            pass
    finally:
        if worker is not None:
            worker.close()


# ---------------------------------------------------------------- engines: local processes, Ray actors


def _last_line(text: str) -> str:
    lines = [x for x in str(text).strip().splitlines() if x.strip()]
    return lines[-1].strip() if lines else "unknown failure"


class _LocalEngine:
    """Worker processes of this machine (spawned), one pipe each; results stream back per episode."""

    chunks_per_worker, depth = 1, 1

    def __init__(self, kwargs_of: Callable[[int], dict]):
        self._ctx = mp.get_context("spawn")  # never fork a process that holds TensorFlow threads
        self._kwargs_of = kwargs_of
        self.procs: dict[int, Any] = {}
        self.conns: dict[int, Any] = {}

    def start(self, w: int) -> None:
        parent, child = self._ctx.Pipe()
        p = self._ctx.Process(target=_serve, args=(child, self._kwargs_of(w)), daemon=True)
        p.start()
        child.close()
        self.procs[w], self.conns[w] = p, parent

    def pids(self) -> list[int]:
        return [self.procs[w].pid for w in sorted(self.procs)]

    def send_params(self, w: int, params: np.ndarray) -> None:
        self.conns[w].send(("params", params))

    def submit(
        self, w: int, chunk: tuple, jobs: list, max_steps: int, early_stop: int, record: frozenset, kind: str
    ) -> None:
        self.conns[w].send(("run", (chunk, jobs, max_steps, early_stop, record, kind)))

    def poll(self, timeout: float) -> list[tuple]:
        """Events: ("episode" | "done", w, chunk, [(result, recording)]) or ("lost", w, None, reason)."""
        handles = {}
        for w in self.conns:
            handles[self.conns[w]] = w
            handles[self.procs[w].sentinel] = w
        events, ready = [], {handles[h] for h in mp_wait(list(handles), timeout=timeout)}
        for w in sorted(ready):
            conn = self.conns[w]
            try:
                while conn.poll():
                    kind, chunk, payload = conn.recv()
                    if kind == "error":
                        events.append(("lost", w, None, _last_line(payload)))
                        break
                    events.append((kind, w, chunk, payload))
                else:
                    if not self.procs[w].is_alive():
                        events.append(("lost", w, None, f"worker died (exit code {self.procs[w].exitcode})"))
            except (EOFError, OSError):
                events.append(("lost", w, None, f"worker died (exit code {self.procs[w].exitcode})"))
        return events

    def kill(self, w: int) -> None:
        p = self.procs.pop(w, None)
        conn = self.conns.pop(w, None)
        if conn is not None:
            conn.close()
        if p is not None:
            p.kill()
            p.join(5)

    def close(self) -> None:
        for conn in list(self.conns.values()):
            try:
                conn.send(("close", None))
            except (BrokenPipeError, OSError):
                pass
        for p in list(self.procs.values()):
            p.join(5)
            if p.is_alive():
                p.kill()
        self.procs.clear()
        self.conns.clear()


class _RayEngine:
    """Ray actors (one CPU each); results come back per call, a batch of jobs at a time."""

    # One call per actor and batch, as the local engine's one chunk per worker: the same jobs meet in the same
    # inference batches, so Ray plays bit for bit the episodes local processes play.
    chunks_per_worker, depth = 1, 1

    def __init__(self, kwargs_of: Callable[[int], dict], ray_address: str, num_cpus: int):
        self.ray = ray_engine.connect(ray_address, num_cpus)
        self._cls = self.ray.remote(num_cpus=1, max_restarts=0)(EpisodeWorker)
        self._kwargs_of = kwargs_of
        self.actors: dict[int, Any] = {}
        self._refs: dict[Any, tuple[int, int]] = {}  # ObjectRef -> (worker, chunk)

    def start(self, w: int) -> None:
        self.actors[w] = self._cls.remote(**self._kwargs_of(w))

    def pids(self) -> list[int]:
        return self.ray.get([self.actors[w].pid.remote() for w in sorted(self.actors)])

    def send_params(self, w: int, params) -> None:
        self.actors[w].set_params.remote(params)  # calls run in order: before the jobs that follow

    def put(self, params: np.ndarray):
        return self.ray.put(params)  # one copy in the object store for every actor

    def submit(
        self, w: int, chunk: tuple, jobs: list, max_steps: int, early_stop: int, record: frozenset, kind: str
    ) -> None:
        ref = self.actors[w].run.remote(jobs, max_steps, early_stop, record, record_kind=kind)
        self._refs[ref] = (w, chunk)

    def poll(self, timeout: float) -> list[tuple]:
        if not self._refs:
            time.sleep(min(timeout, 0.05))
            return []
        ready, _ = self.ray.wait(list(self._refs), num_returns=1, timeout=timeout)
        events = []
        for ref in ready:
            w, chunk = self._refs.pop(ref)
            try:
                events.append(("done", w, chunk, self.ray.get(ref)))
            except self.ray.exceptions.RayActorError as e:
                events.append(("lost", w, None, f"Ray actor died: {_last_line(e)}"))
            except self.ray.exceptions.RayTaskError as e:
                events.append(("lost", w, None, _last_line(e)))
        return events

    def kill(self, w: int) -> None:
        for ref, (ww, _) in list(self._refs.items()):
            if ww == w:
                del self._refs[ref]
        actor = self.actors.pop(w, None)
        if actor is not None:
            try:
                self.ray.kill(actor, no_restart=True)
            except Exception:  # noqa: BLE001  (already gone)
                pass

    def close(self) -> None:
        for w in list(self.actors):
            self.kill(w)


# ---------------------------------------------------------------- the driver


class WorkerPool:
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

        self.engine = _RayEngine(kwargs_of, ray_address, self.workers) if ray_address else _LocalEngine(kwargs_of)
        if ray_address:  # an actor asks for one CPU: more actors than CPUs would wait forever for theirs
            cpus = int(self.engine.ray.cluster_resources().get("CPU", 1))
            self.workers = max(1, min(self.workers, cpus))
        self._failures: list[str] = []
        self._run_id = 0
        self.recorded: dict[int, dict] = {}
        for w in range(self.workers):
            self.engine.start(w)

    @property
    def pids(self) -> list[int]:
        """The workers' process ids, in worker order (they change when a worker is replaced)."""
        return self.engine.pids()

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
        params = np.asarray(params, np.float32)
        shared = self.engine.put(params) if hasattr(self.engine, "put") else params
        n = len(jobs)
        size = max(1, -(-n // (self.workers * self.engine.chunks_per_worker)))
        chunks = {c: list(range(lo, min(n, lo + size))) for c, lo in enumerate(range(0, n, size))}
        self._run_id += 1  # a chunk is named (run, index): late messages of an earlier run are ignored
        queue = collections.deque((self._run_id, c) for c in chunks)
        inflight: dict[int, list[tuple[int, int]]] = {w: [] for w in range(self.workers)}
        results: dict[int, EpisodeResult] = {}
        self.recorded: dict[int, dict] = {}

        def dispatch(w: int) -> None:
            while queue and len(inflight[w]) < self.engine.depth:
                c = queue.popleft()
                todo = [j for j in chunks[c[1]] if j not in results]
                if not todo:
                    continue
                payload = [(j, int(jobs[j][0]), int(jobs[j][1])) for j in todo]
                rec = frozenset(j for j in record if j in todo)
                self.engine.submit(w, c, payload, max_steps, early_stop, rec, record_kind)
                inflight[w].append(c)

        def finish(res: EpisodeResult, rec: dict | None) -> None:
            if res.job in results:
                return
            results[res.job] = res
            if rec is not None:
                self.recorded[res.job] = rec
            if on_episode is not None:
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

    def _replace(self, w: int, reason: str, inflight: dict, queue: collections.deque, shared) -> None:
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

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class CentralRunner:
    """Today's layout behind the same ``run`` as :class:`WorkerPool`: an :class:`EnvPool` of environment
    processes stepped in lockstep with ``agent``'s batched inference in this process."""

    def __init__(self, agent, env_id: str, num_envs: int, workers: int, max_steps: int):
        self.agent = agent
        self.pool = EnvPool(env_id, num_envs, workers, max_steps)
        self.recorded: dict[int, dict] = {}

    @property
    def pids(self) -> list[int]:
        """The environment processes' ids."""
        return self.pool.pids

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
        """As :meth:`WorkerPool.run`, with :func:`wm.agents.agent.run_episodes`."""
        record = frozenset(record)
        recorder = _recorder(record_kind, record, {j: int(seed) for j, (_, seed) in enumerate(jobs)}, max_steps)
        self.recorded = recorder.recorded
        after = _AfterLastStep(recorder, record, on_episode or (lambda r: None))
        out = run_episodes(
            self.pool,
            self.agent,
            params,
            jobs,
            max_steps,
            early_stop,
            on_episode=after.done,
            on_step=after.on_step if record else None,
            raw_jobs=record if record_kind == "video" else frozenset(),
            record_jobs=record,
        )
        after.flush()
        return out

    def close(self) -> None:
        """Stops the environment processes."""
        self.pool.close()

    def __enter__(self) -> CentralRunner:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def make_runner(
    layout: str,
    spec: Loadable,
    env_id: str,
    num_envs: int,
    workers: int,
    max_steps: int,
    ray_address: str = "",
    agent: Any = None,
) -> CentralRunner | WorkerPool:
    """The episode runner for a ``--layout`` (and ``--ray_address``): central needs ``agent`` (or loads
    it from ``spec``), workers load their own from ``spec``."""
    if resolve_layout(layout, ray_address, spec_paths(spec)) == "central":
        return CentralRunner(agent if agent is not None else spec.load(), env_id, num_envs, workers, max_steps)
    return WorkerPool(spec, env_id, num_envs, workers, max_steps, ray_address=ray_address)
