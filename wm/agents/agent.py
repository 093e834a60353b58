"""The agent, V + M + C, and the episode runner that drives many environments at once.

Per environment step the agent encodes the frame (z = V's mean), picks the action from
[z, h] with the controller, and advances M's LSTM with (z, a). For a group of N environments
this is ONE compiled call on N-row batches, each row with its own controller parameters
(a batched matmul), never one model call per environment.

:func:`run_episodes` schedules episode jobs (parameter row, environment seed) over the slots
of an :class:`~data_gen.envpool.EnvPool`: whenever a slot's episode ends, the next job starts there.
Jobs of a worker that dies are rerun from their start on the fresh worker.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from data_gen.envpool import EnvPool, InlineEnvs, WorkerLost
from wm.models.controller import ACTION_DIM, Controller

if TYPE_CHECKING:
    import tensorflow as tf

    from wm.models.mdnrnn import MDNRNN
    from wm.models.vae import ConvVAE


@dataclasses.dataclass
class EpisodeResult:
    """One finished episode."""

    job: int
    seed: int
    ret: float
    steps: int
    early_stopped: bool = False


def controller_tf(controller: Controller, params: tf.Tensor, feats: tf.Tensor) -> tf.Tensor:
    """TensorFlow twin of ``Controller.act`` for [N, n] params and [N, D] features -> [N, 3]."""
    import tensorflow as tf

    n = tf.shape(params)[0]
    x = feats[:, None, :]
    i = 0

    def take(shape: list[int]) -> tf.Tensor:
        nonlocal i
        size = int(np.prod(shape))
        out = tf.reshape(params[:, i : i + size], tf.concat([[n], shape], 0))
        i += size
        return out

    if controller.hidden:
        w1, b1 = take([controller.input_dim, controller.hidden]), take([controller.hidden])
        w2, b2 = take([controller.hidden, ACTION_DIM]), take([ACTION_DIM])
        x = tf.tanh(tf.matmul(x, w1) + b1[:, None])
        raw = tf.matmul(x, w2) + b2[:, None]
    else:
        w, b = take([controller.input_dim, ACTION_DIM]), take([ACTION_DIM])
        raw = tf.matmul(x, w) + b[:, None]
    a = tf.tanh(raw[:, 0])
    return tf.stack([a[:, 0], (a[:, 1] + 1.0) / 2.0, tf.clip_by_value(a[:, 2], 0.0, 1.0)], axis=-1)


class Agent:
    """V + M + C with batched inference.

    Args:
      vae: a ``wm.models.vae.ConvVAE`` (float32).
      mdnrnn: a ``wm.models.mdnrnn.MDNRNN`` (float32).
      controller: the controller's shape; ``input_dim`` is z (z only) or z + h.
    """

    def __init__(self, vae: ConvVAE, mdnrnn: MDNRNN, controller: Controller) -> None:
        import tensorflow as tf

        self.vae, self.mdnrnn, self.controller = vae, mdnrnn, controller
        self.z_size, self.hidden = int(mdnrnn.z_size), int(mdnrnn.hidden)
        if controller.input_dim not in (self.z_size, self.z_size + self.hidden):
            raise ValueError(
                f"controller input_dim {controller.input_dim} is neither z ({self.z_size}) nor z + h "
                f"({self.z_size + self.hidden})"
            )
        self.use_h = controller.input_dim == self.z_size + self.hidden
        frame_shape = [None, *vae.frame_shape] if hasattr(vae, "frame_shape") else [None, 64, 64, 3]
        self._step = tf.function(
            self._step_impl,
            input_signature=[
                tf.TensorSpec(frame_shape, tf.uint8),
                tf.TensorSpec([None, self.hidden], tf.float32),
                tf.TensorSpec([None, self.hidden], tf.float32),
                tf.TensorSpec([None, controller.num_params], tf.float32),
            ],
        )
        self._concrete: Any = None

    def _step_impl(
        self, frames: tf.Tensor, h: tf.Tensor, c: tf.Tensor, params: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
        import tensorflow as tf

        z, _ = self.vae.encode(frames)
        z = tf.cast(z, tf.float32)
        feats = tf.concat([z, h], axis=-1) if self.use_h else z
        actions = controller_tf(self.controller, params, feats)
        h2, (h2, c2) = self.mdnrnn.cell(z, actions, (h, c))
        return actions, h2, c2, z

    def encode(self, frames: tf.Tensor) -> tf.Tensor:
        """z = V's mean, float32 [N, Z], for uint8 frames [N, 64, 64, 3] (TF op; callable inside a tf.function)."""
        import tensorflow as tf

        return tf.cast(self.vae.encode(frames)[0], tf.float32)

    def advance(
        self, z: tf.Tensor, actions: tf.Tensor, state: tuple[tf.Tensor, tf.Tensor]
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """M's LSTM step (TF op): (z [N, Z], actions [N, 3], (h, c)) -> new (h, c)."""
        h, (h, c) = self.mdnrnn.cell(z, actions, state)
        return h, c

    def initial_state(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Zero LSTM state for n environments."""
        return np.zeros((n, self.hidden), np.float32), np.zeros((n, self.hidden), np.float32)

    def act(
        self, frames: np.ndarray, state: tuple[np.ndarray, np.ndarray], params: np.ndarray
    ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray], np.ndarray]:
        """(frames [N, 64, 64, 3] uint8, (h, c), params [N, n]) -> (actions [N, 3], new (h, c), z [N, Z])."""
        import tensorflow as tf

        if self._concrete is None:
            # Calling the traced graph directly skips tf.function's per-call argument binding,
            # a millisecond per call on a busy CPU (the inputs are converted here instead).
            self._concrete = self._step.get_concrete_function()
        a, h, c, z = self._concrete(
            tf.constant(frames, tf.uint8),
            tf.constant(state[0], tf.float32),
            tf.constant(state[1], tf.float32),
            tf.constant(params, tf.float32),
        )
        return a.numpy(), (h.numpy(), c.numpy()), z.numpy()


def _groups(num_envs: int, workers: int, groups: int) -> list[list[int]]:
    """``groups`` slot groups, each with an equal share of every worker's slots (slot s is on
    worker s % workers), so one inference call serves all workers."""
    per_round = max(1, min(workers, num_envs))
    k = max(1, min(groups, -(-num_envs // per_round)))
    out = [[s for s in range(num_envs) if (s // per_round) % k == g] for g in range(k)]
    return [g for g in out if g]


@dataclasses.dataclass
class _Slot:
    job: int = -1
    seed: int = 0
    ret: float = 0.0
    steps: int = 0
    best_tiles: int = 0
    since_progress: int = 0
    fresh: bool = False  # reset requested, first frame not yet back


def run_episodes(
    pool: EnvPool | InlineEnvs,
    agent: Agent,
    params: np.ndarray,
    jobs: Sequence[tuple[int, int]],
    max_steps: int,
    early_stop: int = 0,
    on_episode: Callable[[EpisodeResult], None] | None = None,
    on_step: Callable[[dict[int, object], dict[int, np.ndarray], dict[int, np.ndarray], dict[int, int]], None]
    | None = None,
    raw_jobs: frozenset[int] = frozenset(),
    groups: int = 2,
    record_jobs: frozenset[int] | None = None,
) -> list[EpisodeResult]:
    """Plays every job (row of ``params``, environment seed) to its end; returns results in job order.

    The slots are split into ``groups`` groups that take turns, each holding an equal share of
    every worker's slots: while the workers step one group, this process runs the batched
    inference (one call) for another, served in the order the groups come back. Two groups
    measured best on 2 cores (see BENCHMARKS.md): more groups mean more, smaller inference
    calls, and groups confined to one worker left the other's core to the inference.
    ``early_stop`` > 0 ends an episode when no new road tile was reached for that many steps
    (off by default). ``on_step(steps, actions, z, slot_jobs)`` sees every step of the jobs in
    ``raw_jobs`` (their raw frames included; ``actions`` is empty for an episode's first frame),
    e.g. to record videos; ``record_jobs`` (default: ``raw_jobs``) widens what ``on_step`` sees
    without asking the workers for raw frames. Jobs on a worker that dies start again from their
    beginning (``on_step`` then sees their first frame again).
    """
    seen_jobs = raw_jobs if record_jobs is None else raw_jobs | record_jobs
    params = np.asarray(params, np.float32)
    queue = list(range(len(jobs)))[::-1]  # pop() takes the next job
    results: dict[int, EpisodeResult] = {}
    n = pool.num_envs
    slots = [_Slot() for _ in range(n)]
    h, c = agent.initial_state(n)
    frames = np.zeros((n, 64, 64, 3), np.uint8)
    sent_a = np.zeros((n, ACTION_DIM), np.float32)
    sent_z = np.zeros((n, agent.z_size), np.float32)
    slot_groups = _groups(n, pool.workers, groups)
    outstanding: list = [None] * len(slot_groups)

    def process(
        group: set[int], out: dict, lost: list[int], fresh_before: set[int], jobs_before: dict[int, int]
    ) -> None:
        seen: dict[int, object] = {}
        for s, st in out.items():
            sl = slots[s]
            frames[s] = st.frame
            if sl.job in seen_jobs:
                seen[s] = st
            if sl.fresh:
                sl.fresh, sl.best_tiles = False, st.tiles
                continue
            sl.ret += st.reward
            sl.steps += 1
            if st.tiles > sl.best_tiles:
                sl.best_tiles, sl.since_progress = st.tiles, 0
            else:
                sl.since_progress += 1
            stopped = bool(early_stop) and sl.since_progress >= early_stop
            if st.terminated or st.truncated or sl.steps >= max_steps or stopped:
                res = EpisodeResult(sl.job, sl.seed, sl.ret, sl.steps, stopped and not (st.terminated or st.truncated))
                results[sl.job] = res
                if on_episode is not None:
                    on_episode(res)
                slots[s] = _Slot()
        if on_step is not None and seen:
            stepped = [s for s in seen if s not in fresh_before]
            on_step(  # copies: the rows of sent_a and sent_z are overwritten at the slot's next step
                seen,
                {s: sent_a[s].copy() for s in stepped},
                {s: sent_z[s].copy() for s in stepped},
                {s: jobs_before[s] for s in seen},
            )
        for s in lost:
            if s in group and slots[s].job >= 0:
                queue.append(slots[s].job)  # rerun from the start
                slots[s] = _Slot()

    def schedule(gi: int) -> None:
        """Starts new jobs on the group's free slots, infers its actions, and sends them."""
        group = slot_groups[gi]
        resets = {}
        for s in group:
            if slots[s].job < 0 and queue:
                j = queue.pop()
                slots[s] = _Slot(job=j, seed=int(jobs[j][1]), fresh=True)
                h[s], c[s] = 0.0, 0.0
                resets[s] = slots[s].seed
        active = [s for s in group if slots[s].job >= 0 and not slots[s].fresh]
        actions = {}
        if active:
            rows = [jobs[slots[s].job][0] for s in active]
            a, (h_new, c_new), z = agent.act(frames[active], (h[active], c[active]), params[rows])
            h[active], c[active] = h_new, c_new
            sent_a[active], sent_z[active] = a, z
            actions = {s: a[i] for i, s in enumerate(active)}
        if actions or resets:
            raw = frozenset(s for s in group if slots[s].job in raw_jobs)
            outstanding[gi] = pool.send(actions, resets, raw)

    for gi in range(len(slot_groups)):
        schedule(gi)
    while any(o is not None for o in outstanding):
        live = [gi for gi, o in enumerate(outstanding) if o is not None]
        gi = live[pool.wait_any([outstanding[g] for g in live])]  # whichever worker is done first
        group = slot_groups[gi]
        fresh_before = {s for s in group if slots[s].fresh}
        jobs_before = {s: slots[s].job for s in group}
        try:
            out, lost = pool.recv(outstanding[gi]), []
        except WorkerLost as e:
            out, lost = e.partial, e.slots
        outstanding[gi] = None
        process(set(group), out, lost, fresh_before, jobs_before)
        schedule(gi)
    missing = [j for j in range(len(jobs)) if j not in results]
    if missing:
        raise RuntimeError(f"episodes {missing[:5]} never finished")  # a bug, not bad input
    return [results[j] for j in range(len(jobs))]
