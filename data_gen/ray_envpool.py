"""Environments in Ray actors, stepped in lockstep with batched inference in the caller.

:class:`RayEnvPool` has :class:`~data_gen.envpool.EnvPool`'s surface (``num_envs``, ``send`` /
``wait_any`` / ``recv`` / ``reset`` / ``step`` / ``close``, a context manager) with its
``num_envs`` slots spread over ``workers`` Ray actors instead of local processes (slot s lives
on actor s % workers). Each actor holds an :class:`~data_gen.envpool.InlineEnvs` for its share
of the slots; it imports no TensorFlow.

This is the **central layout on Ray**: the caller (``wm.train_ppo``'s driver) runs V + M + the
policy for every environment, so every step's 64 x 64 frames travel from the actors to the
driver and the actions back, one Ray call per actor per step. PPO needs it that way: its
policy samples every step with the driver's random generator, and the update runs where the
rollout is, so the same seeds give exactly the same rollouts, losses and weights as a local
:class:`EnvPool` run (tested). What a Ray call per actor and step costs against a pipe message
is not measured yet.

Faults, as :class:`EnvPool`'s: an actor that dies (or raises, or does not answer within
``timeout`` seconds) is replaced by a fresh one and its slots are reported in a
:class:`~data_gen.envpool.WorkerLost` (with the healthy actors' results in ``partial``), so the
caller resets them; after ``max_restarts`` replacements :class:`~data_gen.envpool.PoolError`
(one line) instead. Actors ask Ray for one CPU each, so ``workers`` is capped at the cluster's
CPUs (more actors would wait forever for theirs).

Ray is imported only here, when a pool is made (``data_gen.ray_engine.connect``).
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import numpy as np

from data_gen import ray_engine
from data_gen.envpool import InlineEnvs, PoolError, PoolSurface, Step, Ticket, WorkerLost, gather


class EnvActor:
    """One actor's environments (an :class:`InlineEnvs` of its slots); ``run`` serves one request."""

    def __init__(self, env_id: str, num_envs: int, max_steps: int):
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
        self.envs = InlineEnvs(env_id, num_envs, max_steps)

    def pid(self) -> int:
        """This actor's process id."""
        return os.getpid()

    def run(self, steps: dict, resets: dict, raw: frozenset) -> list[tuple[int, Step]]:
        """Resets (local slot -> seed), then steps (local slot -> action); returns (local slot, Step)s."""
        return list(self.envs.recv(self.envs.send(steps, resets, raw)).items())

    def close(self) -> None:
        """Closes the environments."""
        self.envs.close()


@dataclasses.dataclass
class RayTicket(Ticket):
    """An outstanding :meth:`RayEnvPool.send`: :class:`Ticket` plus each asked actor's ObjectRef."""

    refs: dict = dataclasses.field(default_factory=dict)  # worker -> ObjectRef of its reply
    sent_at: float = 0.0


class RayEnvPool(PoolSurface):
    """``num_envs`` slots over ``workers`` Ray actors on the cluster at ``ray_address`` (see
    :func:`data_gen.ray_engine.connect`); slot s lives on actor s % workers.

    Args:
      max_restarts: actor replacements allowed over the pool's life before :class:`PoolError`.
      timeout: seconds a request may take before its actor counts as lost (a wedged node or an
        actor that cannot be placed must not hang the run).
    """

    def __init__(
        self,
        env_id: str,
        num_envs: int,
        workers: int,
        max_steps: int,
        ray_address: str,
        max_restarts: int = 3,
        timeout: float = 300.0,
    ):
        if num_envs <= 0 or workers <= 0:
            raise ValueError("num_envs and workers must be positive")
        self.ray = ray_engine.connect(ray_address, workers)
        cpus = int(self.ray.cluster_resources().get("CPU", 1))
        self.env_id, self.max_steps = env_id, max_steps
        self.num_envs = num_envs
        self.workers = max(1, min(workers, num_envs, cpus))
        self.max_restarts, self.restarts = max_restarts, 0
        self.timeout = timeout
        self._cls = self.ray.remote(num_cpus=1, max_restarts=0)(EnvActor)
        self.actors: list[Any] = [None] * self.workers
        self._generation = [0] * self.workers  # bumped at every replacement of an actor
        for w in range(self.workers):
            self._start(w)

    @property
    def pids(self) -> list[int]:
        """The actors' process ids, in worker order (they change when an actor is replaced)."""
        return self.ray.get([a.pid.remote() for a in self.actors], timeout=self.timeout)

    def _slots_of(self, w: int) -> list[int]:
        return list(range(w, self.num_envs, self.workers))

    def _start(self, w: int) -> None:
        self.actors[w] = self._cls.remote(self.env_id, len(self._slots_of(w)), self.max_steps)

    def _kill(self, w: int) -> None:
        try:
            self.ray.kill(self.actors[w], no_restart=True)
        except Exception:  # noqa: BLE001  (already gone)
            pass

    def _restart(self, w: int, reason: str) -> WorkerLost:
        self.restarts += 1
        self._kill(w)
        if self.restarts > self.max_restarts:
            raise PoolError(f"environment actors failed {self.restarts} times, last: {reason}; giving up")
        self._start(w)
        self._generation[w] += 1  # requests still in flight on w are lost: recv() sees the generation
        return WorkerLost(self._slots_of(w), reason)

    def send(
        self, steps: dict[int, np.ndarray], resets: dict[int, int] | None = None, raw: frozenset[int] = frozenset()
    ) -> RayTicket:
        """Starts resets (slot -> seed) and steps (slot -> action) on the actors; returns at once."""
        jobs: dict[int, tuple[dict, dict, set]] = {}
        for sl, seed in (resets or {}).items():
            job = jobs.setdefault(sl % self.workers, ({}, {}, set()))
            job[1][sl // self.workers] = int(seed)
            if sl in raw:
                job[2].add(sl // self.workers)
        for sl, a in steps.items():
            job = jobs.setdefault(sl % self.workers, ({}, {}, set()))
            job[0][sl // self.workers] = np.asarray(a, np.float32)
            if sl in raw:
                job[2].add(sl // self.workers)
        ticket = RayTicket(sent_at=time.monotonic())
        for w, (st, rs, rw) in jobs.items():
            try:
                ticket.refs[w] = self.actors[w].run.remote(st, rs, frozenset(rw))
                ticket.sent.append((w, self._generation[w]))
            except Exception as e:  # noqa: BLE001  (a handle Ray no longer accepts)
                ticket.lost.append(self._restart(w, f"send failed: {ray_engine._first_line(e)}"))
        return ticket

    def _pending(self, ticket: RayTicket) -> dict:
        """ObjectRef -> worker for the replies ``ticket`` still waits on (not read, actor not replaced)."""
        return {ticket.refs[w]: w for w, g in ticket.sent if w not in ticket.replies and g == self._generation[w]}

    def _read(self, ticket: RayTicket, w: int, wait: float) -> None:
        """Reads actor w's reply to ``ticket`` (waiting up to ``wait`` s); a failure replaces the actor."""
        ray = self.ray
        try:
            ticket.replies[w] = ("ok", ray.get(ticket.refs[w], timeout=max(wait, 0.0)))
            return
        except ray.exceptions.GetTimeoutError:
            reason = f"no reply in {self.timeout:.0f} s"
        except ray.exceptions.RayActorError as e:
            reason = f"Ray actor died: {_last_line(e)}"
        except ray.exceptions.RayError as e:  # the actor raised (RayTaskError), its node was lost, ...
            reason = _last_line(e)
        ticket.replies[w] = ("dead", reason)
        ticket.lost.append(self._restart(w, reason))

    def _remaining(self, ticket: RayTicket) -> float:
        return ticket.sent_at + self.timeout - time.monotonic()

    def wait_any(self, tickets: list[RayTicket]) -> int:
        """Blocks until one of ``tickets`` can be received without waiting; returns its index."""
        if not tickets:
            raise ValueError("wait_any needs at least one ticket")
        while True:
            owner: dict = {}
            for i, t in enumerate(tickets):
                pending = self._pending(t)
                if not pending:
                    return i
                for ref, w in pending.items():
                    owner[ref] = (t, w)
            soonest = min(self._remaining(t) for t, _ in owner.values())
            ready, _ = self.ray.wait(list(owner), num_returns=1, timeout=max(min(soonest, 60.0), 0.0))
            for ref in ready:
                t, w = owner[ref]
                self._read(t, w, 0.0)
            if not ready and soonest <= 0:  # the oldest request is past its time: its actor is lost
                for t, w in owner.values():
                    if self._remaining(t) <= 0 and w not in t.replies and t.refs[w] in self._pending(t):
                        self._read(t, w, 0.0)

    def recv(self, ticket: RayTicket) -> dict[int, Step]:
        """Waits for a :meth:`send`'s results. Raises WorkerLost (with ``partial`` results) if an actor was lost."""
        for w, generation in ticket.sent:
            if w not in ticket.replies and generation == self._generation[w]:
                self._read(ticket, w, self._remaining(ticket))
        return gather(ticket, self.workers, self._slots_of)

    def close(self) -> None:
        """Ends the actors (the Ray connection stays, for whoever made it)."""
        for w in range(self.workers):
            if self.actors[w] is not None:
                self._kill(w)
                self.actors[w] = None


def _last_line(e: BaseException) -> str:
    lines = [x for x in str(e).strip().splitlines() if x.strip()]
    return lines[-1].strip() if lines else type(e).__name__
