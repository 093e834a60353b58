"""Recording chosen episodes while they play, as ``on_step`` callbacks of :func:`wm.agents.agent.run_episodes`.

Two kinds (``record_kind``): ``"video"`` (:class:`VideoRecorder`: raw frames, z and actions, for the videos
``wm.evaluate`` and ``wm.train_controller`` write) and ``"episode"`` (:class:`EpisodeCollector`: whole episodes
in the public rollout format, for ``wm.collect``). :class:`AfterLastStep` holds a recorded job's result back
until its recording is whole. Used by the episode worker (:mod:`wm.agents.engines`) and the central runner
(:mod:`wm.agents.workers`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from wm.agents.agent import EpisodeResult

if TYPE_CHECKING:
    from tfrecords import schema

RECORD_KINDS = ("video", "episode")


class VideoRecorder:
    """Collects raw frames, z and actions of chosen jobs for videos: ``on_step`` for ``run_episodes``.

    ``recorded[job]`` = {"raw": [uint8 96x96x3 frames], "z": [...], "a": [...]}; an episode that
    starts again (its worker was lost) starts its record again.
    """

    def __init__(self, jobs: Iterable[int] = ()):
        self.recorded: dict[int, dict] = {j: {"raw": [], "z": [], "a": []} for j in jobs}

    def on_step(
        self,
        steps: dict[int, Any],
        actions: dict[int, np.ndarray],
        zs: dict[int, np.ndarray],
        slot_jobs: dict[int, int],
    ) -> None:
        """``run_episodes``' ``on_step`` callback."""
        for s, st in steps.items():
            if s not in actions:  # a (re)start: drop anything from an attempt a lost worker cut short
                self.recorded[slot_jobs[s]] = {"raw": [], "z": [], "a": []}
            rec = self.recorded[slot_jobs[s]]
            if s in actions:
                rec["z"].append(zs[s])
                rec["a"].append(actions[s])
            rec["raw"].append(st.raw)


class EpisodeCollector:
    """Whole episodes of chosen jobs, in the public rollout format: ``recorded[job] = (episode, z)``
    (``wm.agents.collect.EpisodeRecorder``'s ``schema.Episode`` and the agent's z [T, Z]), for
    ``wm.collect``. ``seeds`` maps each recorded job to its environment seed."""

    def __init__(self, seeds: dict[int, int], max_steps: int):
        from wm.agents.collect import EpisodeRecorder

        self.recorded: dict[int, tuple[schema.Episode, np.ndarray]] = {}
        self._assembler = EpisodeRecorder(seeds, max_steps, lambda job, ep, z: self.recorded.__setitem__(job, (ep, z)))

    def on_step(
        self,
        steps: dict[int, Any],
        actions: dict[int, np.ndarray],
        zs: dict[int, np.ndarray],
        slot_jobs: dict[int, int],
    ) -> None:
        """``run_episodes``' ``on_step`` callback."""
        self._assembler.on_step(steps, actions, zs, slot_jobs)


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

    def __init__(
        self, recorder: VideoRecorder | EpisodeCollector, want: frozenset[int], report: Callable[[EpisodeResult], None]
    ):
        self.recorder, self.want, self.report = recorder, want, report
        self.held: list[EpisodeResult] = []

    def done(self, r: EpisodeResult) -> None:
        """``run_episodes``' ``on_episode`` callback: reports ``r`` now, or holds it if its job is recorded."""
        (self.held.append if r.job in self.want else self.report)(r)

    def on_step(
        self,
        steps: dict[int, Any],
        actions: dict[int, np.ndarray],
        zs: dict[int, np.ndarray],
        slot_jobs: dict[int, int],
    ) -> None:
        """``run_episodes``' ``on_step`` callback: records the step, then reports what was held."""
        self.recorder.on_step(steps, actions, zs, slot_jobs)
        self.flush()

    def flush(self) -> None:
        """Reports every held result."""
        while self.held:
            self.report(self.held.pop())
