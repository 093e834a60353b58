"""Environments in worker processes, stepped in lockstep with batched inference in the caller.

An :class:`EnvPool` holds ``num_envs`` environment slots spread over ``workers`` processes.
The caller resets slots with seeds and steps all active slots at once; each worker steps its
own slots and sends back preprocessed 64 x 64 frames (and, on request, the raw frame for
videos). Workers import no TensorFlow: they start in about a second.

A worker that dies or raises does not hang the caller: the pool starts a fresh worker for
those slots and raises :class:`WorkerLost` naming them, so the caller can rerun their
episodes; after ``max_restarts`` restarts it raises :class:`PoolError` instead.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import signal
import traceback
from multiprocessing.connection import wait as mp_wait
from typing import Any

import numpy as np


class PoolError(RuntimeError):
    """The pool cannot go on (too many worker failures)."""


class WorkerLost(RuntimeError):
    """A worker died or raised; its slots are empty again and must be reset."""

    def __init__(self, slots: list[int], reason: str):
        super().__init__(f"environment worker lost ({reason}); slots {slots} will be rerun")
        self.slots = slots
        self.reason = reason


@dataclasses.dataclass
class Step:
    """What one slot returns for one step."""

    frame: np.ndarray  # uint8 [64, 64, 3] (preprocessed)
    reward: float
    terminated: bool
    truncated: bool
    tiles: int  # road tiles visited so far (CarRacing), for early stopping
    raw: np.ndarray | None = None  # uint8 [96, 96, 3] when asked for


# ---------------------------------------------------------------- worker process


def _tiles(env) -> int:
    return int(getattr(env.unwrapped, "tile_visited_count", 0))


def _worker(conn, env_id: str, max_steps: int, n_slots: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    from data_gen import rollout
    from data_gen.preprocess import preprocess_frame

    envs: list[Any] = [None] * n_slots
    try:
        while True:
            cmd, payload = conn.recv()
            if cmd == "close":
                break
            out = []
            if cmd == "reset":
                for i, seed, want_raw in payload:
                    if envs[i] is None:
                        envs[i] = rollout.make_env(env_id, max_steps)
                    obs, _ = envs[i].reset(seed=int(seed))
                    out.append((i, Step(preprocess_frame(obs), 0.0, False, False, _tiles(envs[i]), obs if want_raw else None)))
            elif cmd == "step":
                for i, action, want_raw in payload:
                    obs, r, term, trunc, _ = envs[i].step(action)
                    out.append((i, Step(preprocess_frame(obs), float(r), bool(term), bool(trunc), _tiles(envs[i]), obs if want_raw else None)))
            elif cmd == "crash":  # for tests: die like a segfault would
                os._exit(1)
            conn.send(("ok", out))
    except (EOFError, KeyboardInterrupt):
        pass
    except BaseException:
        try:
            conn.send(("error", traceback.format_exc(limit=3)))
        except OSError:
            pass
    finally:
        for e in envs:
            if e is not None:
                e.close()


# ---------------------------------------------------------------- pool


class EnvPool:
    """``num_envs`` slots over ``workers`` processes (slot s lives on worker s % workers)."""

    def __init__(self, env_id: str, num_envs: int, workers: int, max_steps: int, max_restarts: int = 3):
        if num_envs <= 0 or workers <= 0:
            raise ValueError("num_envs and workers must be positive")
        self.env_id, self.max_steps = env_id, max_steps
        self.num_envs = num_envs
        self.workers = min(workers, num_envs)
        self.max_restarts = max_restarts
        self.restarts = 0
        self._ctx = mp.get_context("spawn")
        self._procs: list[Any] = [None] * self.workers
        self._conns: list[Any] = [None] * self.workers
        for w in range(self.workers):
            self._start(w)

    def _slots_of(self, w: int) -> list[int]:
        return list(range(w, self.num_envs, self.workers))

    def _start(self, w: int) -> None:
        parent, child = self._ctx.Pipe()
        p = self._ctx.Process(target=_worker, args=(child, self.env_id, self.max_steps, len(self._slots_of(w))), daemon=True)
        p.start()
        child.close()
        self._procs[w], self._conns[w] = p, parent

    def _restart(self, w: int, reason: str) -> WorkerLost:
        self.restarts += 1
        try:
            self._procs[w].kill()
            self._procs[w].join(5)
        except Exception:  # noqa: BLE001  (already gone)
            pass
        if self.restarts > self.max_restarts:
            raise PoolError(f"environment workers failed {self.restarts} times, last: {reason}; giving up")
        self._start(w)
        return WorkerLost(self._slots_of(w), reason)

    def _call(self, cmd: str, per_slot: dict[int, tuple]) -> dict[int, Step]:
        """Sends ``cmd`` to every worker with slots in ``per_slot``, then gathers all replies."""
        jobs: dict[int, list] = {}
        for s, args in per_slot.items():
            jobs.setdefault(s % self.workers, []).append((s // self.workers, *args))
        lost: list[WorkerLost] = []
        sent = []
        for w, payload in jobs.items():
            try:
                self._conns[w].send((cmd, payload))
                sent.append(w)
            except (BrokenPipeError, OSError) as e:
                lost.append(self._restart(w, f"send failed: {e}"))
        results: dict[int, Step] = {}
        for w in sent:
            conn = self._conns[w]
            while True:  # poll so that a dead worker is noticed instead of waited on forever
                if mp_wait([conn, self._procs[w].sentinel], timeout=60):
                    break
            try:
                status, out = conn.recv() if conn.poll() else ("dead", f"exit code {self._procs[w].exitcode}")
            except (EOFError, OSError):
                status, out = "dead", f"exit code {self._procs[w].exitcode}"
            if status != "ok":
                lost.append(self._restart(w, out.strip().splitlines()[-1] if status == "error" else f"worker died ({out})"))
                continue
            for local, step in out:
                results[local * self.workers + w] = step
        if lost:
            err = lost[0]
            err.slots = sorted(s for e in lost for s in e.slots)
            err.partial = results  # steps of the healthy workers, still valid
            raise err
        return results

    def reset(self, seeds: dict[int, int], raw: frozenset[int] = frozenset()) -> dict[int, Step]:
        """Resets slots with the given environment seeds; returns their first frames."""
        return self._call("reset", {s: (seed, s in raw) for s, seed in seeds.items()})

    def step(self, actions: dict[int, np.ndarray], raw: frozenset[int] = frozenset()) -> dict[int, Step]:
        """Steps the given slots with their actions."""
        return self._call("step", {s: (np.asarray(a, np.float32), s in raw) for s, a in actions.items()})

    def crash_worker(self, w: int) -> None:
        """Makes worker ``w`` exit abruptly (for tests of failure handling)."""
        self._conns[w].send(("crash", None))

    def close(self) -> None:
        for conn, p in zip(self._conns, self._procs):
            try:
                conn.send(("close", None))
            except (BrokenPipeError, OSError):
                pass
        for p in self._procs:
            p.join(5)
            if p.is_alive():
                p.kill()

    def __enter__(self) -> "EnvPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
