"""CMA-ES screened in M's dream (``wm.train_controller --screen=N``): every generation's population is
ranked by its dream fitness, and only the ``N`` best play in the real environment.

pycma's update uses only the order of the population. The played members are ordered by their real
fitness, and every other member ranks below all of them, in its dream order
(:func:`combined`), so the real steps buy the top of the ranking and the dream orders the rest. That is
pre-screening with a surrogate, M's dream being the surrogate.
"""

from __future__ import annotations

import numpy as np


def pick(dream_fitness: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` members with the highest dream fitness, in index order (ties: the lower index)."""
    order = np.argsort(-np.asarray(dream_fitness, np.float64), kind="stable")
    return np.sort(order[:n])


def combined(real: np.ndarray, played: np.ndarray, dream_fitness: np.ndarray) -> np.ndarray:
    """The fitness told to CMA-ES: the real fitness ``real`` of the members ``played``; every other member
    below the worst of them, one step apart in their dream order."""
    dream_fitness = np.asarray(dream_fitness, np.float64)
    out = np.empty(len(dream_fitness), np.float64)
    out[played] = real
    rest = np.setdiff1d(np.arange(len(dream_fitness)), played)
    rest = rest[np.argsort(-dream_fitness[rest], kind="stable")]
    floor = float(np.min(real)) if len(played) else 0.0
    out[rest] = floor - 1.0 - np.arange(len(rest))
    return out
