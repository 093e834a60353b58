"""How faithfully M's dream ranks controllers: the library side of ``python -m wm.fidelity``.

A set of controllers of clearly different quality (the agent's own parameters, the zero controller,
CMA-ES means along the run, and the agent's parameters plus Gaussian noise at growing scales) plays the
same real tracks and the same dream worlds; the gauge is Spearman's rank correlation between their real
and dream mean returns, with the mean dream - real gap beside it. A dream that ranks controllers as
reality does (rho near 1) can select them; one whose rho is near 0 or negative only rewards exploiting M.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from wm.agents.dream import DONE_MODES, ENSEMBLE_REWARDS, START_MODES

FIDELITY_STREAM = 4  # track and dream-world seeds of the gauge (wm.agents.loading's streams are 1-3)


def ranks(x: Sequence[float] | np.ndarray) -> np.ndarray:
    """1-based ranks of ``x`` (ascending), ties given the mean of the ranks they span."""
    x = np.asarray(x, np.float64)
    order = np.argsort(x, kind="stable")
    out = np.empty(len(x), np.float64)
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and x[order[j + 1]] == x[order[i]]:
            j += 1
        out[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return out


def spearman(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Spearman's rank correlation of two equally long sequences (Pearson's r of their ranks, ties
    averaged); NaN when either side has fewer than two distinct values."""
    if len(x) != len(y):
        raise ValueError(f"spearman needs sequences of one length, got {len(x)} and {len(y)}")
    rx, ry = ranks(x), ranks(y)
    dx, dy = rx - rx.mean(), ry - ry.mean()
    denom = math.sqrt(float(np.sum(dx * dx)) * float(np.sum(dy * dy)))
    return float(np.sum(dx * dy)) / denom if denom > 0 else float("nan")


def spaced(first: int, last: int, n: int) -> list[int]:
    """Up to ``n`` evenly spaced integers from ``first`` to ``last`` (both included when n >= 2)."""
    if n <= 0 or last < first:
        return []
    return sorted({int(round(v)) for v in np.linspace(first, last, min(n, last - first + 1))})


def parse_scales(text: str) -> list[float]:
    """``"0.25,0.5,1"`` -> [0.25, 0.5, 1.0]; ValueError unless every scale is a positive number."""
    try:
        scales = [float(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"scales must be comma-separated numbers, got {text!r}") from None
    if not scales or any(not s > 0 for s in scales):
        raise ValueError(f"scales must be positive numbers, got {text!r}")
    return scales


VARIANT_KEYS = (
    "temperature",
    "dream_dropout",
    "dream_done",
    "dream_start",
    "dream_horizon",
    "members",
    "ensemble_reward",
    "dream_disagreement",
)
# the keys whose values are words, and the words each takes
_CHOICES = {"dream_done": ("threshold", "sample"), "dream_start": START_MODES, "ensemble_reward": ENSEMBLE_REWARDS}
_COUNTS = ("dream_horizon", "members")  # whole numbers >= 1


def parse_variant(text: str, done_modes: Sequence[str] = DONE_MODES) -> dict[str, float | int | str]:
    """``"temperature=1.5,dream_done=sample"`` -> {"temperature": 1.5, "dream_done": "sample"}: one setting of the
    dream to gauge beside the base one; ValueError (one line) for an unknown key or a value out of range.
    ``members=N`` dreams with the first N members of the ensemble (1: M alone), ``dream_horizon=N`` ends dream
    episodes after N steps."""
    out: dict[str, float | int | str] = {}
    choices = {**_CHOICES, "dream_done": tuple(done_modes)}
    for item in (p.strip() for p in text.split(",")):
        key, sep, raw = item.partition("=")
        if not sep or key not in VARIANT_KEYS:
            raise ValueError(f"variant {text!r}: give KEY=VALUE pairs with keys {', '.join(VARIANT_KEYS)}")
        if key in choices:
            if raw not in choices[key]:
                raise ValueError(f"variant {text!r}: {key} is one of {', '.join(choices[key])}")
            out[key] = raw
            continue
        try:
            value = int(raw) if key in _COUNTS else float(raw)
        except ValueError:
            kind = "a whole number" if key in _COUNTS else "a number"
            raise ValueError(f"variant {text!r}: {key} must be {kind}, got {raw!r}") from None
        if value < (1 if key in _COUNTS else 0) or (key == "dream_dropout" and value >= 1):
            raise ValueError(f"variant {text!r}: {key} out of range ({raw})")
        out[key] = value
    return out


def dream_returns(
    agent: Any,
    rows: np.ndarray,
    worlds: dict[str, tuple[np.ndarray, np.ndarray | None]],
    seed: int,
    settings: Sequence[dict[str, Any]],
    max_steps: int,
    jit_compile: str = "auto",
    ensemble: Sequence[Any] = (),
) -> tuple[list[np.ndarray], int]:
    """Every controller of ``rows`` [K, n] on every world in each dream setting (temperature, dream_dropout,
    dream_done, and optionally dream_start, dream_horizon, members, ensemble_reward, dream_disagreement; the
    worlds' noise from ``seed`` the same in all): (returns [K, W] per setting, dream steps played).
    ``worlds`` maps a dream start mode to its (start latents [W, Z], start states [W, 1 + len(ensemble), 2, H]
    or None); ``ensemble`` holds the M's that may dream beside the agent's."""
    from wm.agents.dream import DreamEnv

    out, steps = [], 0
    for s in settings:
        members = list(ensemble)[: int(s.get("members", 1 + len(ensemble))) - 1]
        env = DreamEnv(
            agent.mdnrnn,
            agent.controller,
            int(s.get("dream_horizon", max_steps)),
            float(s["temperature"]),
            float(s["dream_dropout"]),
            jit_compile != "off",
            str(s["dream_done"]),
            members,
            str(s.get("ensemble_reward", "mean")),
            float(s.get("dream_disagreement", 0.0)),
        )
        starts, states = worlds[str(s.get("dream_start", "first"))]
        states = None if states is None else states[:, : len(env.members)]
        returns, n = env.rollout_on_worlds(rows, starts, seed, states)
        out.append(returns)
        steps += n
    return out, steps


def controller_set(
    params: np.ndarray, scales: Sequence[float], per_scale: int, seed: int, along: Sequence[tuple[str, np.ndarray]] = ()
) -> tuple[np.ndarray, list[str]]:
    """(parameters [K, n], names) of the controllers the gauge plays: the agent (``agent``), the zero
    controller (``zero``), the controllers ``along`` the run ((name, parameters): the CMA-ES means of
    some generations), and for every scale s, ``per_scale`` perturbations ``agent + s * rms * N(0, I)``
    (``noise s #i``), rms being the agent's root-mean-square parameter (1 for an all-zero agent)."""
    base = np.asarray(params, np.float64).reshape(-1)
    rms = float(np.sqrt(np.mean(base * base))) or 1.0
    rng = np.random.default_rng([seed, FIDELITY_STREAM])
    rows, names = [base, np.zeros_like(base)], ["agent", "zero"]
    for name, p in along:
        rows.append(np.asarray(p, np.float64).reshape(base.shape))
        names.append(name)
    for s in scales:
        for i in range(per_scale):
            rows.append(base + s * rms * rng.standard_normal(base.shape))
            names.append(f"noise {s:g} #{i + 1}")
    return np.stack(rows).astype(np.float32), names


@dataclasses.dataclass
class Gauge:
    """The gauge's result: per controller, its real and dream returns [K, N]; and the summary."""

    names: list[str]
    real: np.ndarray
    dream: np.ndarray

    @property
    def rho(self) -> float:
        """Spearman's rho between the controllers' real and dream mean returns."""
        return spearman(self.real.mean(axis=1), self.dream.mean(axis=1))

    @property
    def mean_gap(self) -> float:
        """The controllers' mean dream - real return."""
        return float(np.mean(self.dream.mean(axis=1) - self.real.mean(axis=1)))

    def rows(self) -> list[dict]:
        """One dict per controller: name, real and dream mean and std, and their ranks (1 = best)."""
        real, dream = self.real.mean(axis=1), self.dream.mean(axis=1)
        real_rank, dream_rank = len(real) + 1 - ranks(real), len(dream) + 1 - ranks(dream)
        return [
            {
                "name": n,
                "real_mean": float(real[k]),
                "real_std": float(self.real[k].std()),
                "dream_mean": float(dream[k]),
                "dream_std": float(self.dream[k].std()),
                "real_rank": float(real_rank[k]),
                "dream_rank": float(dream_rank[k]),
            }
            for k, n in enumerate(self.names)
        ]

    def table(self) -> str:
        """The per-controller table as text, best real controller first."""
        lines = [f"{'controller':<14} {'real':>16} {'dream':>16} {'rank real':>9} {'rank dream':>10}"]
        for r in sorted(self.rows(), key=lambda r: r["real_rank"]):
            lines.append(
                f"{r['name']:<14} {r['real_mean']:8.1f} ± {r['real_std']:5.1f} {r['dream_mean']:8.1f} ± "
                f"{r['dream_std']:5.1f} {r['real_rank']:9g} {r['dream_rank']:10g}"
            )
        return "\n".join(lines)
