"""Several CMA-ES starts at the beginning of a run (``wm.train_controller --starts=K --start_generations=G``).

Whether a short CMA-ES run finds driving at all is a lottery: on the same V and M, 25 generations of
16 x 2 reached 164 with one seed and 564 and 742 with two others (BENCHMARKS.md, "The main job with M frozen
after the first pass"). With ``K`` starts, generations ``1..G`` belong to start 0 (the strategy of a
run without starts, its seed unchanged), ``G+1..2G`` to start 1 (a fresh strategy from the same mean,
another seed), and so on. The CMA-ES mean of each start is evaluated on the evaluation tracks at its
last generation; after the last start, the start whose mean scored best there continues for the rest of
``--generations``.
Every generation still plays ``popsize x trials`` episodes: the starts spend the run's budget, they do
not add to it. The kept controller (``controller.npz``) stays the best evaluated mean of any start.
Each start's strategy samples from a NumPy RandomState of its own, so a parked start continues exactly as
it would have without the others, and a resumed run as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Sequence

# start k's sampling seed: seed + 1 for start 0 (what pycma's own seed option was given before), far apart
# for the others
SEED_SPAN = 100_003


def start_of(generation: int, starts: int, start_generations: int) -> int | None:
    """The 0-based start that plays ``generation`` (1-based), or None with one start and after the starts."""
    if starts <= 1 or generation > starts * start_generations:
        return None
    return (generation - 1) // start_generations


def ends_start(generation: int, starts: int, start_generations: int) -> bool:
    """Whether ``generation`` is the last one of its start (its mean is then evaluated and the start parked)."""
    return start_of(generation, starts, start_generations) is not None and generation % start_generations == 0


def strategy_seed(seed: int, start: int) -> int:
    """The seed of start ``start``'s sampling in a run with ``--seed=seed`` (start 0: the seed of a run
    without starts, whose generations it repeats)."""
    return seed + 1 + SEED_SPAN * start


def best_start(scores: Sequence[float]) -> int:
    """The start to continue: the highest evaluated score (ties: the earlier start)."""
    if not scores:
        raise ValueError("no start was evaluated")
    return max(range(len(scores)), key=lambda k: (scores[k], -k))
