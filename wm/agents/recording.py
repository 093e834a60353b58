"""Recording chosen episodes while they play, as ``on_step`` callbacks of :func:`wm.agents.agent.run_episodes`.

Two kinds (``record_kind``): ``"video"`` (:class:`VideoRecorder`: raw frames, z and actions, for the videos
``wm.evaluate`` and ``wm.train_controller`` write) and ``"episode"`` (:class:`EpisodeCollector`: whole episodes
in the public rollout format, for ``wm.collect``). :class:`AfterLastStep` holds a recorded job's result back
until its recording is whole. Used by the episode worker (:mod:`wm.agents.engines`) and the central runner
(:mod:`wm.agents.workers`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from tfrecords import schema
from wm.agents.agent import EpisodeResult

RECORD_KINDS = ("video", "episode")


class StepRecorder:
    """An ``on_step`` callback of ``run_episodes`` that sees each slot's step as :meth:`record` (job, step,
    action, z); ``action`` and ``z`` are None on an episode's first frame, which is also where a job
    restarted after a lost worker starts again."""

    def on_step(
        self,
        steps: dict[int, Any],
        actions: dict[int, np.ndarray],
        zs: dict[int, np.ndarray],
        slot_jobs: dict[int, int],
    ) -> None:
        """``run_episodes``' ``on_step`` callback (``steps``: slot -> ``data_gen.envpool.Step``)."""
        for s, st in steps.items():
            self.record(slot_jobs[s], st, actions.get(s), zs.get(s))

    def record(self, job: int, step: Any, action: np.ndarray | None, z: np.ndarray | None) -> None:
        """Records one step of ``job``."""
        raise NotImplementedError


class VideoRecorder(StepRecorder):
    """Collects raw frames, z and actions of chosen jobs for videos.

    ``recorded[job]`` = {"raw": [uint8 96x96x3 frames], "z": [...], "a": [...]}; an episode that
    starts again (its worker was lost) starts its record again.
    """

    def __init__(self, jobs: Iterable[int] = ()):
        self.recorded: dict[int, dict] = {j: {"raw": [], "z": [], "a": []} for j in jobs}

    def record(self, job: int, step: Any, action: np.ndarray | None, z: np.ndarray | None) -> None:
        """Keeps the raw frame, and the action and z that followed it."""
        if action is None:  # a (re)start: drop anything from an attempt a lost worker cut short
            self.recorded[job] = {"raw": [], "z": [], "a": []}
        rec = self.recorded[job]
        if action is not None:
            rec["z"].append(z)
            rec["a"].append(action)
        rec["raw"].append(step.raw)


class EpisodeCollector(StepRecorder):
    """Whole episodes of chosen jobs in the public rollout format, for ``wm.collect``: ``recorded[job] =
    (episode, z)``, a ``schema.Episode`` and the agent's z_t (V's mean) at every step [T, Z].

    ``seeds`` maps each recorded job to its environment seed (stored with the episode). Steps are kept as
    ``data_gen.generate`` stores them: ``frames[t]`` is the frame the agent saw before ``actions[t]``;
    an episode ends at termination, truncation or ``max_steps``, and the observation after its last
    action is not stored.
    """

    def __init__(self, seeds: dict[int, int], max_steps: int):
        self.seeds, self.max_steps = seeds, max_steps
        self.open: dict[int, dict[str, list]] = {}
        self.recorded: dict[int, tuple[schema.Episode, np.ndarray]] = {}

    def record(self, job: int, step: Any, action: np.ndarray | None, z: np.ndarray | None) -> None:
        """Adds a step to ``job``'s open episode; moves the episode to ``recorded`` when it ends."""
        if action is None:  # the first frame (also of a restarted job)
            self.open[job] = {k: [] for k in ("z", "actions", "rewards", "terminals")}
            self.open[job]["frames"] = [np.array(step.frame)]
            return
        rec = self.open[job]
        rec["actions"].append(np.array(action, np.float32))  # copies, whatever the caller reuses
        rec["z"].append(np.array(z, np.float32))
        rec["rewards"].append(step.reward)
        rec["terminals"].append(int(step.terminated))
        if not (step.terminated or step.truncated or len(rec["actions"]) >= self.max_steps):
            rec["frames"].append(np.array(step.frame))
            return
        del self.open[job]
        n = len(rec["actions"])
        episode = schema.Episode(
            actions=np.stack(rec["actions"]).astype(np.float32),
            rewards=np.asarray(rec["rewards"], np.float32),
            terminals=np.asarray(rec["terminals"], np.int64),
            seed=self.seeds[job],
            frames=np.stack(rec["frames"][:n]),
        )
        self.recorded[job] = (episode, np.stack(rec["z"]))


def make_recorder(
    kind: str, want: frozenset[int], seeds: dict[int, int], max_steps: int
) -> VideoRecorder | EpisodeCollector:
    """The recorder of ``kind`` (one of :data:`RECORD_KINDS`) for the jobs in ``want``; ``seeds`` maps
    every job to its environment seed."""
    if kind not in RECORD_KINDS:
        raise ValueError(f"record kind must be one of {RECORD_KINDS}, got {kind!r}")
    if kind == "episode":
        return EpisodeCollector({j: seeds[j] for j in want}, max_steps)
    return VideoRecorder(want)


class AfterLastStep:
    """Reports a recorded job's result only once its recording is whole: ``run_episodes`` reports an
    episode's end before the ``on_step`` that carries its last frame."""

    def __init__(self, recorder: StepRecorder, want: frozenset[int], report: Callable[[EpisodeResult], None]):
        self.recorder, self.want, self.report = recorder, want, report
        self.held: list[EpisodeResult] = []

    def done(self, r: EpisodeResult) -> None:
        """``run_episodes``' ``on_episode`` callback: reports ``r`` now, or holds it if its job is recorded."""
        (self.held.append if r.job in self.want else self.report)(r)

    def on_step(self, *step_args: Any) -> None:
        """``run_episodes``' ``on_step`` callback: records the step (:meth:`StepRecorder.on_step`), then
        reports what was held."""
        self.recorder.on_step(*step_args)
        self.flush()

    def flush(self) -> None:
        """Reports every held result."""
        while self.held:
            self.report(self.held.pop())
