"""Environments in worker processes, stepped in lockstep with batched inference in the caller.

An :class:`EnvPool` holds ``num_envs`` environment slots spread over ``workers`` processes.
The caller resets slots with seeds and steps all active slots at once; each worker steps its
own slots and sends back preprocessed 64 x 64 frames (and, on request, the raw frame for
videos). Workers import no TensorFlow: they start in about a second.

A worker that dies or raises does not hang the caller: the pool starts a fresh worker for
those slots and raises :class:`WorkerLost` naming them, so the caller can rerun their
episodes; after ``max_restarts`` restarts it raises :class:`PoolError` instead.

:class:`InlineEnvs` has the same surface with the environments in the calling process, for a
worker that infers for its own environments (``wm.agents.engines.EpisodeWorker``).
"""

from __future__ import annotations

import collections
import dataclasses
import multiprocessing as mp
import os
import signal
import traceback
from collections.abc import Callable
from multiprocessing.connection import wait as mp_wait
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from tfrecords.runtime.errors import OneLineError


class PoolError(OneLineError, RuntimeError):
    """The pool cannot go on (too many worker failures)."""


class WorkerLost(RuntimeError):
    """A worker died or raised; its slots are empty again and must be reset."""

    partial: dict[int, Step]  # set by gather(): the steps of the healthy workers

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


def _tiles(env: Any) -> int:
    return int(getattr(env.unwrapped, "tile_visited_count", 0))


def apply_ops(envs: list[Any], payload: list, env_id: str, max_steps: int) -> list[tuple[int, Step]]:
    """Runs ``(slot, "reset" | "step", seed | action, want_raw)`` requests, in order, on ``envs``
    (a slot's environment is made at its first reset); returns ``(slot, Step)`` per request."""
    from data_gen import rollout
    from data_gen.preprocess import preprocess_frame

    out = []
    for i, op, arg, want_raw in payload:
        if op == "reset":
            if envs[i] is None:
                envs[i] = rollout.make_env(env_id, max_steps)
            obs, _ = envs[i].reset(seed=int(arg))
            r, term, trunc = 0.0, False, False
        else:
            obs, r, term, trunc, _ = envs[i].step(arg)
        raw = obs if want_raw else None
        out.append((i, Step(preprocess_frame(obs), float(r), bool(term), bool(trunc), _tiles(envs[i]), raw)))
    return out


def _worker(conn: Any, env_id: str, max_steps: int, n_slots: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    envs: list[Any] = [None] * n_slots
    try:
        while True:
            cmd, payload = conn.recv()
            if cmd == "close":
                break
            conn.send(("ok", apply_ops(envs, payload, env_id, max_steps)))  # cmd == "run"
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


@dataclasses.dataclass
class Ticket:
    """An outstanding :meth:`EnvPool.send`: the workers asked, and failures met while asking."""

    sent: list = dataclasses.field(default_factory=list)  # (worker, its generation when asked)
    lost: list = dataclasses.field(default_factory=list)  # WorkerLost from failed sends
    replies: dict = dataclasses.field(default_factory=dict)  # worker -> (status, payload), once read


_Pool = TypeVar("_Pool", bound="PoolSurface")


class PoolSurface:
    """What every pool builds on its ``send``/``recv``/``close``: blocking ``reset``/``step`` and a context manager."""

    if TYPE_CHECKING:  # what each pool defines

        def send(
            self, steps: dict[int, np.ndarray], resets: dict[int, int] | None = None, raw: frozenset[int] = frozenset()
        ) -> Ticket: ...

        def recv(self, ticket: Any) -> dict[int, Step]: ...

        def close(self) -> None: ...

    def reset(self, seeds: dict[int, int], raw: frozenset[int] = frozenset()) -> dict[int, Step]:
        """Resets slots with the given environment seeds; returns their first frames."""
        return self.recv(self.send({}, seeds, raw))

    def step(self, actions: dict[int, np.ndarray], raw: frozenset[int] = frozenset()) -> dict[int, Step]:
        """Steps the given slots with their actions."""
        return self.recv(self.send(actions, None, raw))

    def __enter__(self: _Pool) -> _Pool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def gather(ticket: Ticket, workers: int, slots_of: Callable[[int], list[int]]) -> dict[int, Step]:
    """A ticket's replies as slot -> Step (slot = local slot x ``workers`` + worker); raises one
    WorkerLost naming every lost worker's slots (``slots_of(w)``), the healthy ones' steps in ``partial``."""
    lost, results = list(ticket.lost), {}
    for w, _generation in ticket.sent:
        status, out = ticket.replies.get(w, ("lost", None))
        if status == "lost":  # restarted before answering: the request died with it
            lost.append(WorkerLost(slots_of(w), "worker restarted"))
            continue
        if status != "ok":
            continue  # its WorkerLost is in ticket.lost already
        for local, step in out:
            results[local * workers + w] = step
    if lost:
        err = lost[0]
        err.slots = sorted({s for e in lost for s in e.slots})
        err.partial = results  # steps of the healthy workers, still valid
        raise err
    return results


class EnvPool(PoolSurface):
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
        self._generation = [0] * self.workers  # bumped at every restart of a worker
        # Tickets waiting on each worker, oldest first: a worker answers in the order it was asked.
        self._inflight: list[collections.deque] = [collections.deque() for _ in range(self.workers)]
        for w in range(self.workers):
            self._start(w)

    @property
    def pids(self) -> list[int]:
        """The workers' process ids, in worker order (they change when a worker is restarted)."""
        return [p.pid for p in self._procs]

    def _slots_of(self, w: int) -> list[int]:
        return list(range(w, self.num_envs, self.workers))

    def _start(self, w: int) -> None:
        parent, child = self._ctx.Pipe()
        p = self._ctx.Process(
            target=_worker, args=(child, self.env_id, self.max_steps, len(self._slots_of(w))), daemon=True
        )
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
        self._generation[w] += 1
        self._inflight[w].clear()  # their requests died with the worker; recv() sees the generation
        return WorkerLost(self._slots_of(w), reason)

    def send(
        self, steps: dict[int, np.ndarray], resets: dict[int, int] | None = None, raw: frozenset[int] = frozenset()
    ) -> Ticket:
        """Starts resets (slot -> seed) and steps (slot -> action) on the workers; returns at once.

        Collect the results with :meth:`recv`. Requests to one worker are served in order, so
        the caller may compute while the workers step; :meth:`wait_any` says which request is done.
        """
        jobs: dict[int, list] = {}
        for sl, seed in (resets or {}).items():
            jobs.setdefault(sl % self.workers, []).append((sl // self.workers, "reset", seed, sl in raw))
        for sl, a in steps.items():
            jobs.setdefault(sl % self.workers, []).append(
                (sl // self.workers, "step", np.asarray(a, np.float32), sl in raw)
            )
        ticket = Ticket()
        for w, payload in jobs.items():
            try:
                self._conns[w].send(("run", payload))
                ticket.sent.append((w, self._generation[w]))
                self._inflight[w].append(ticket)
            except (BrokenPipeError, OSError) as e:
                ticket.lost.append(self._restart(w, f"send failed: {e}"))
        return ticket

    def _read(self, w: int) -> None:
        """Reads worker w's next reply (blocking) into the oldest ticket waiting on it."""
        conn = self._conns[w]
        while not mp_wait([conn, self._procs[w].sentinel], timeout=60):
            pass  # a dead worker wakes us through its sentinel instead of hanging
        try:
            reply = conn.recv() if conn.poll() else ("dead", f"exit code {self._procs[w].exitcode}")
        except (EOFError, OSError):
            reply = ("dead", f"exit code {self._procs[w].exitcode}")
        ticket = self._inflight[w].popleft()
        ticket.replies[w] = reply
        if reply[0] != "ok":
            # Later tickets on w are lost too: the restart bumps the generation they hold.
            ticket.lost.append(
                self._restart(
                    w, reply[1].strip().splitlines()[-1] if reply[0] == "error" else f"worker died ({reply[1]})"
                )
            )

    def _complete(self, ticket: Ticket) -> bool:
        return all(w in ticket.replies or g != self._generation[w] for w, g in ticket.sent)

    def wait_any(self, tickets: list[Ticket]) -> int:
        """Blocks until one of ``tickets`` can be received without waiting; returns its index.

        With requests to different workers in flight this lets the caller serve whichever
        worker finished first instead of a fixed order.
        """
        if not tickets:
            raise ValueError("wait_any needs at least one ticket")
        while True:
            for i, t in enumerate(tickets):
                if self._complete(t):
                    return i
            waiting = {w for t in tickets for w, g in t.sent if w not in t.replies and g == self._generation[w]}
            handles = {}
            for w in waiting:
                handles[self._conns[w]] = w
                handles[self._procs[w].sentinel] = w
            for h in mp_wait(list(handles), timeout=60):
                w = handles[h]
                if w in waiting:
                    waiting.discard(w)
                    self._read(w)

    def recv(self, ticket: Ticket) -> dict[int, Step]:
        """Waits for a :meth:`send`'s results. Raises WorkerLost (with ``partial`` results) if a worker died."""
        for w, generation in ticket.sent:
            while w not in ticket.replies and generation == self._generation[w]:
                self._read(w)  # may first read replies that older tickets are waiting for
        return gather(ticket, self.workers, self._slots_of)

    def close(self) -> None:
        """Asks every worker to stop, then ends those that do not within 5 s."""
        for conn in self._conns:
            try:
                conn.send(("close", None))
            except (BrokenPipeError, OSError):
                pass
        for p in self._procs:
            p.join(5)
            if p.is_alive():
                p.kill()


class InlineEnvs(PoolSurface):
    """``num_envs`` environments in this process, with :class:`EnvPool`'s surface (``send``/``recv``/
    ``wait_any``/``reset``/``step``, one "worker") so the same episode runner drives them.

    A request runs at once, inside :meth:`send`: for a process that owns its environments and
    infers for them itself (``wm.agents.engines``), with no pipes or frames between processes.
    """

    def __init__(self, env_id: str, num_envs: int, max_steps: int):
        if num_envs <= 0:
            raise ValueError("num_envs must be positive")
        self.env_id, self.max_steps, self.num_envs = env_id, max_steps, num_envs
        self.workers = 1
        self.restarts = 0
        self._envs: list[Any] = [None] * num_envs

    def send(
        self, steps: dict[int, np.ndarray], resets: dict[int, int] | None = None, raw: frozenset[int] = frozenset()
    ) -> Ticket:
        """Resets (slot -> seed), then steps (slot -> action), now; the ticket holds the results."""
        payload: list[tuple[int, str, Any, bool]]
        payload = [(sl, "reset", seed, sl in raw) for sl, seed in (resets or {}).items()]
        payload += [(sl, "step", np.asarray(a, np.float32), sl in raw) for sl, a in steps.items()]
        ticket = Ticket(sent=[(0, 0)])
        ticket.replies[0] = ("ok", apply_ops(self._envs, payload, self.env_id, self.max_steps))
        return ticket

    def wait_any(self, tickets: list[Ticket]) -> int:
        """Every ticket is done when it is made: the first one."""
        if not tickets:
            raise ValueError("wait_any needs at least one ticket")
        return 0

    def recv(self, ticket: Ticket) -> dict[int, Step]:
        """The results of a :meth:`send`."""
        return dict(ticket.replies[0][1])

    def close(self) -> None:
        """Closes the environments."""
        for i, e in enumerate(self._envs):
            if e is not None:
                e.close()
                self._envs[i] = None
