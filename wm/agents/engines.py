"""The episode worker and the engines that run it for :class:`wm.agents.workers.WorkerPool`.

:class:`EpisodeWorker` holds a worker's environments (in its own process) and its own agent, and plays
whole episode jobs with :func:`wm.agents.agent.run_episodes`. An engine starts, feeds, watches and kills
such workers: :class:`LocalEngine` as spawned processes of this machine (one pipe each, results streamed
back per episode), :class:`RayEngine` as Ray actors (results back per call). Both speak :class:`Engine`:
``poll`` turns whatever the workers did into events, a dead or failing worker into a ``"lost"`` event
(its last line as the reason); the pool decides what to do about it.
"""

from __future__ import annotations

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
from data_gen.envpool import InlineEnvs
from wm.agents.agent import EpisodeResult, run_episodes
from wm.agents.recording import AfterLastStep, make_recorder

# What a worker sends back: (kind, worker, chunk, payload); kind "episode" | "done" with payload
# [(result, recording)], or "lost" with chunk None and payload the reason (one line).
Event = tuple[str, int, Any, Any]


class Loadable(Protocol):
    """What a worker builds its agent from: picklable, with ``load() -> agent``."""

    def load(self) -> Any: ...


class EpisodeWorker:
    """One worker's environments (in this process) and its own agent; the same class runs in a local
    worker process and as a Ray actor.

    Args:
      spec: builds the agent (:class:`wm.agents.workers.AgentSpec`), once, here.
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
        :class:`wm.agents.recording.EpisodeCollector`)."""
        if self.params is None:
            raise RuntimeError("set_params before run")
        local = {j: i for i, (j, _, _) in enumerate(jobs)}
        want = frozenset(local[j] for j in record if j in local)
        recorder = make_recorder(record_kind, want, {i: seed for i, (_, _, seed) in enumerate(jobs)}, max_steps)

        def report(r: EpisodeResult) -> None:
            if on_episode is not None:
                on_episode(dataclasses.replace(r, job=jobs[r.job][0]), recorder.recorded.get(r.job))

        after = AfterLastStep(recorder, want, report)
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


def _serve(conn: Any, kwargs: dict) -> None:
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

                def send_episode(r: EpisodeResult, rec: Any, c: tuple = chunk) -> None:
                    conn.send(("episode", c, [(r, rec)]))

                worker.run(jobs, max_steps, early_stop, record, on_episode=send_episode, record_kind=kind)
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


def _last_line(text: Any) -> str:
    lines = [x for x in str(text).strip().splitlines() if x.strip()]
    return lines[-1].strip() if lines else "unknown failure"


class Engine(Protocol):
    """What :class:`wm.agents.workers.WorkerPool` asks of its workers, wherever they run."""

    chunks_per_worker: int  # chunks of a batch of jobs per worker
    depth: int  # chunks in flight per worker

    def start(self, w: int) -> None: ...
    def pids(self) -> list[int]: ...
    def put(self, params: np.ndarray) -> Any: ...
    def send_params(self, w: int, params: Any) -> None: ...
    def submit(
        self, w: int, chunk: tuple, jobs: list, max_steps: int, early_stop: int, record: frozenset, kind: str
    ) -> None: ...
    def poll(self, timeout: float) -> list[Event]: ...
    def kill(self, w: int) -> None: ...
    def close(self) -> None: ...


class LocalEngine:
    """Worker processes of this machine (spawned), one pipe each; results stream back per episode."""

    chunks_per_worker, depth = 1, 1

    def __init__(self, kwargs_of: Callable[[int], dict]):
        self._ctx = mp.get_context("spawn")  # never fork a process that holds TensorFlow threads
        self._kwargs_of = kwargs_of
        self.procs: dict[int, Any] = {}
        self.conns: dict[int, Any] = {}

    def start(self, w: int) -> None:
        """Starts worker ``w``'s process."""
        parent, child = self._ctx.Pipe()
        p = self._ctx.Process(target=_serve, args=(child, self._kwargs_of(w)), daemon=True)
        p.start()
        child.close()
        self.procs[w], self.conns[w] = p, parent

    def pids(self) -> list[int]:
        """The workers' process ids, in worker order."""
        return [self.procs[w].pid for w in sorted(self.procs)]

    def put(self, params: np.ndarray) -> np.ndarray:
        """The parameters as sent to every worker: the array itself, down each pipe."""
        return params

    def send_params(self, w: int, params: np.ndarray) -> None:
        """Sends worker ``w`` the controller parameters the next jobs index."""
        self.conns[w].send(("params", params))

    def submit(
        self, w: int, chunk: tuple, jobs: list, max_steps: int, early_stop: int, record: frozenset, kind: str
    ) -> None:
        """Sends worker ``w`` a chunk of jobs to play (see :meth:`EpisodeWorker.run`)."""
        self.conns[w].send(("run", (chunk, jobs, max_steps, early_stop, record, kind)))

    def poll(self, timeout: float) -> list[Event]:
        """Events: ("episode" | "done", w, chunk, [(result, recording)]) or ("lost", w, None, reason)."""
        handles = {}
        for w in self.conns:
            handles[self.conns[w]] = w
            handles[self.procs[w].sentinel] = w
        events: list[Event] = []
        ready = {handles[h] for h in mp_wait(list(handles), timeout=timeout)}
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
        """Kills worker ``w``'s process (if it still runs) and forgets it."""
        p = self.procs.pop(w, None)
        conn = self.conns.pop(w, None)
        if conn is not None:
            conn.close()
        if p is not None:
            p.kill()
            p.join(5)

    def close(self) -> None:
        """Asks every worker to stop; kills those still running after 5 s."""
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


class RayEngine:
    """Ray actors (one CPU each); results come back per call, a batch of jobs at a time."""

    # One call per actor and batch, as the local engine's one chunk per worker: the same jobs meet in the same
    # inference batches, so Ray plays bit for bit the episodes local processes play.
    chunks_per_worker, depth = 1, 1

    def __init__(self, kwargs_of: Callable[[int], dict], ray_address: str, num_cpus: int):
        self.ray = ray_engine.connect(ray_address, num_cpus)
        self._cls = self.ray.remote(num_cpus=1, max_restarts=0)(EpisodeWorker)
        self._kwargs_of = kwargs_of
        self.actors: dict[int, Any] = {}
        self._refs: dict[Any, tuple[int, tuple]] = {}  # ObjectRef -> (worker, chunk)

    def cpus(self) -> int:
        """The cluster's CPUs (an actor asks for one)."""
        return int(self.ray.cluster_resources().get("CPU", 1))

    def start(self, w: int) -> None:
        """Starts worker ``w``'s actor."""
        self.actors[w] = self._cls.remote(**self._kwargs_of(w))

    def pids(self) -> list[int]:
        """The actors' process ids, in worker order."""
        return self.ray.get([self.actors[w].pid.remote() for w in sorted(self.actors)])

    def put(self, params: np.ndarray) -> Any:
        """The parameters in the object store: one copy for every actor."""
        return self.ray.put(params)

    def send_params(self, w: int, params: Any) -> None:
        """Sends actor ``w`` the controller parameters (an array or an object reference)."""
        self.actors[w].set_params.remote(params)  # calls run in order: before the jobs that follow

    def submit(
        self, w: int, chunk: tuple, jobs: list, max_steps: int, early_stop: int, record: frozenset, kind: str
    ) -> None:
        """Asks actor ``w`` to play a chunk of jobs (see :meth:`EpisodeWorker.run`)."""
        ref = self.actors[w].run.remote(jobs, max_steps, early_stop, record, record_kind=kind)
        self._refs[ref] = (w, chunk)

    def poll(self, timeout: float) -> list[Event]:
        """Events: ("done", w, chunk, [(result, recording)]) or ("lost", w, None, reason)."""
        if not self._refs:
            time.sleep(min(timeout, 0.05))
            return []
        ready, _ = self.ray.wait(list(self._refs), num_returns=1, timeout=timeout)
        events: list[Event] = []
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
        """Kills actor ``w`` and forgets its calls in flight."""
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
        """Kills every actor (the Ray connection stays)."""
        for w in list(self.actors):
            self.kill(w)
