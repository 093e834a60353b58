"""The state a CMA-ES run resumes from: :class:`CmaState`, and its file ``WORKDIR/cma_state.pkl``.

On disk the state is what it has always been, a pickled dict of string keys::

    es             pycma's CMAEvolutionStrategy
    generation     finished generations
    best_fitness   the best member's fitness so far (-inf: none yet)
    best_eval      None, or {score, params, generation, mdnrnn_checkpoint, tracks}: the best evaluated mean
    records        the finished generations' metrics.jsonl entries
    best_member    (once there is one) the fittest member's parameters
    np_random      NumPy's global RNG state after the last finished generation
    means          (once there is one) the CMA-ES mean after each finished generation, [generations, n]
                   float32: the controllers along the run that ``wm.fidelity`` plays
    best_member_mdnrnn  (once known) M's checkpoint the best member's fitness was measured with
    best_member_generation  (once known) the generation the best member came from
    starts         (while --starts runs) the finished starts: [{"es", "score", "generation"}], each start's
                   strategy parked with its mean's evaluated score, until the best one continues

:meth:`CmaState.to_dict` and :meth:`CmaState.from_dict` are the only boundary. Keeping the dict (rather
than pickling the dataclass) lets a workdir move between versions both ways: this code resumes a file
written before the dataclass existed, and that code resumes a file written by this one. The pickle never
names a class of this package either, so moving this module cannot break old files.
"""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import cma

STATE_NAME = "cma_state.pkl"
# a record's real-environment steps: fitness episodes, evaluations of the mean, the kept one's re-evaluation
# and the confirmation of a new best on more tracks (--eval_confirm)
REAL_STEP_KEYS = ("env_steps", "eval_env_steps", "recheck_env_steps", "confirm_env_steps")
_KEYS = (
    "es",
    "generation",
    "best_fitness",
    "best_eval",
    "records",
    "best_member",
    "np_random",
    "means",
    "best_member_mdnrnn",
    "best_member_generation",
    "starts",
)


@dataclasses.dataclass
class BestEval:
    """The best CMA-ES mean evaluated so far: what ``controller.npz`` holds while evaluation is on."""

    score: float
    """Its mean return on the in-training evaluation tracks."""
    params: np.ndarray
    """The parameters (float32, ``[num_params]``)."""
    generation: int
    """The generation whose mean they were."""
    mdnrnn_checkpoint: str | None = None
    """M's checkpoint (file name) they were scored with; None in states written before it was recorded."""
    tracks: int | None = None
    """How many tracks ``score`` is the mean over (``eval_episodes`` + ``eval_confirm``); None in states
    written before it was recorded."""

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BestEval:
        """From the file's ``best_eval`` dict."""
        return cls(d["score"], d["params"], d["generation"], d.get("mdnrnn_checkpoint"), d.get("tracks"))

    def to_dict(self) -> dict[str, Any]:
        """The file's ``best_eval`` dict (without ``mdnrnn_checkpoint`` or ``tracks`` when never recorded)."""
        d = {"score": self.score, "params": self.params, "generation": self.generation}
        if self.mdnrnn_checkpoint is not None:
            d["mdnrnn_checkpoint"] = self.mdnrnn_checkpoint
        if self.tracks is not None:
            d["tracks"] = self.tracks
        return d


@dataclasses.dataclass
class CmaState:
    """Everything a CMA-ES run needs to continue after its last finished generation."""

    es: cma.CMAEvolutionStrategy
    """pycma's strategy: mean, step size, covariance and its own RNG position."""
    generation: int = 0
    """Generations finished (the next one is ``generation + 1``)."""
    best_fitness: float = -np.inf
    """The best population member's fitness (mean return over its trials) so far; -inf before any."""
    best_eval: BestEval | None = None
    """The best evaluated mean so far; None before the first evaluation or with evaluation off."""
    records: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    """The finished generations' entries of ``metrics.jsonl``, in order."""
    best_member: np.ndarray | None = None
    """The fittest member's parameters (float32): ``controller.npz`` while nothing is evaluated."""
    np_random: tuple[Any, ...] | dict[str, Any] | None = None
    """``np.random.get_state()`` after the last finished generation (None before the first)."""
    means: list[np.ndarray] = dataclasses.field(default_factory=list)
    """The CMA-ES mean (float32) after each finished generation, in order; empty in files written before it
    was kept (then only the generations run since are there: see :meth:`mean_of`)."""
    best_member_mdnrnn: str | None = None
    """M's checkpoint (file name) ``best_fitness`` was measured with (fitness in M's dream, or by an agent acting
    on M's h, depends on M); None until known."""
    best_member_generation: int | None = None
    """The generation ``best_member`` came from (None in files written before it was kept)."""
    starts: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    """The finished starts of ``--starts`` ({"es", "score", "generation"}), until the best one continues
    (:mod:`wm.training.starts`); empty otherwise."""
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Keys of the file this version does not know (a newer version's), written back unchanged."""

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CmaState:
        """From the dict pickled in ``cma_state.pkl`` (today's, or any earlier version's)."""
        best_eval = d.get("best_eval")
        return cls(
            es=d["es"],
            generation=d["generation"],
            best_fitness=d["best_fitness"],
            best_eval=None if best_eval is None else BestEval.from_dict(best_eval),
            records=d["records"],
            best_member=d.get("best_member"),
            np_random=d.get("np_random"),
            means=list(d["means"]) if d.get("means") is not None else [],
            best_member_mdnrnn=d.get("best_member_mdnrnn"),
            best_member_generation=d.get("best_member_generation"),
            starts=list(d.get("starts") or []),
            extra={k: v for k, v in d.items() if k not in _KEYS},
        )

    def to_dict(self) -> dict[str, Any]:
        """The dict pickled in ``cma_state.pkl``; ``best_member``, ``np_random``, ``means``,
        ``best_member_mdnrnn``, ``best_member_generation`` and ``starts`` only once set."""
        d: dict[str, Any] = {
            "es": self.es,
            "generation": self.generation,
            "best_fitness": self.best_fitness,
            "best_eval": None if self.best_eval is None else self.best_eval.to_dict(),
            "records": self.records,
        }
        if self.best_member is not None:
            d["best_member"] = self.best_member
        if self.np_random is not None:
            d["np_random"] = self.np_random
        if self.means:
            d["means"] = np.stack(self.means)
        if self.best_member_mdnrnn is not None:
            d["best_member_mdnrnn"] = self.best_member_mdnrnn
        if self.best_member_generation is not None:
            d["best_member_generation"] = self.best_member_generation
        if self.starts:
            d["starts"] = self.starts
        return {**d, **self.extra}

    @classmethod
    def loads(cls, data: bytes) -> CmaState:
        """From the bytes of a ``cma_state.pkl``."""
        return cls.from_dict(pickle.loads(data))

    def dumps(self) -> bytes:
        """The bytes of ``cma_state.pkl``."""
        return pickle.dumps(self.to_dict())

    def keep_mean(self) -> None:
        """Keeps the strategy's mean after the generation just finished (call once per generation)."""
        self.means.append(np.asarray(self.es.mean, np.float32))

    def mean_of(self, generation: int) -> np.ndarray | None:
        """The CMA-ES mean after ``generation`` (1-based), or None if this state does not hold it."""
        first = self.generation - len(self.means) + 1  # a state from before means were kept holds the last ones
        return self.means[generation - first] if first <= generation <= self.generation else None

    def kept(self) -> np.ndarray | None:
        """The parameters ``controller.npz`` holds: the best evaluated mean, else the fittest member (or None)."""
        return self.best_eval.params if self.best_eval is not None else self.best_member

    def real_env_steps(self) -> int:
        """Real-environment steps of the finished generations (fitness, evaluations, re-evaluations)."""
        return sum(int(r.get(k, 0)) for r in self.records for k in REAL_STEP_KEYS)

    def train_time(self) -> float:
        """Seconds the finished generations took, evaluations included (their ``wall_time`` in older records)."""
        if not self.records:
            return 0.0
        last = self.records[-1]
        return float(last["train_time"]) if "train_time" in last else sum(r.get("wall_time", 0.0) for r in self.records)

    def last_heldout(self) -> dict[str, Any] | None:
        """The latest record with a held-out score of the kept controller."""
        return next((r for r in reversed(self.records) if "heldout_score" in r), None)

    def keep_fittest(self, solutions: list[np.ndarray], fitness: np.ndarray, generation: int) -> None:
        """Keeps generation ``generation``'s fittest member if it beats every earlier one."""
        if fitness.max() > self.best_fitness:
            self.best_fitness = float(fitness.max())
            self.best_member = np.asarray(solutions[int(fitness.argmax())], np.float32)
            self.best_member_generation = generation

    def summary(self) -> dict[str, Any]:
        """What a run returns: the generation reached, the best fitness and evaluation, the records."""
        return {
            "generation": self.generation,
            "best_fitness": self.best_fitness,
            "best_eval": None if self.best_eval is None else self.best_eval.score,
            "records": self.records,
        }
