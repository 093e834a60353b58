"""The report's figures, drawn with matplotlib's Agg canvas (no display, no pyplot state) and returned as PNG bytes."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

PAPER_SCORE = (906.0, 21.0)  # Ha & Schmidhuber (2018), CarRacing-v0, 100 random tracks
SOLVED = 900.0  # CarRacing counts as solved at an average of 900 over 100 tracks


def _figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)  # the Agg canvas: no display, no global pyplot state
    return fig


def _integer_locator() -> MaxNLocator:
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def plot_controller(records: list[dict]) -> bytes:
    """PNG of the CMA-ES population's mean, max and min return per generation, with eval points.

    A run whose M can dream (``dream_eval_mean`` in its records, in the dream or in the real
    environment) also shows the CMA-ES mean's return in the dream beside its real return: the gap
    between the two is what C exploits in M when it trains in the dream.
    """
    gens = [r["generation"] for r in records]
    fig = _figure(8, 3.6)
    ax = fig.add_subplot()
    ax.fill_between(
        gens, [r["min"] for r in records], [r["max"] for r in records], color="#1f77b4", alpha=0.15, label="min–max"
    )
    ax.plot(gens, [r["max"] for r in records], color="#1f77b4", lw=1, alpha=0.7, label="max")
    ax.plot(gens, [r["mean"] for r in records], color="#1f77b4", lw=2, label="mean")
    ax.plot(gens, [r["min"] for r in records], color="#1f77b4", lw=1, ls=":", alpha=0.7, label="min")
    ev = [(r["generation"], r["eval_mean"]) for r in records if r.get("eval_mean") is not None]
    if ev:
        ax.plot(*zip(*ev), "o-", color="#d62728", ms=4, lw=1, label="eval (mean params)")
    dream_ev = [(r["generation"], r["dream_eval_mean"]) for r in records if r.get("dream_eval_mean") is not None]
    if dream_ev:
        ax.plot(*zip(*dream_ev), "s--", color="#9467bd", ms=4, lw=1, label="mean params in the dream")
    top = max(r["max"] for r in records)
    if top > 0.5 * SOLVED:
        ax.axhline(SOLVED, color="#2ca02c", ls="--", lw=1, label=f"solved ({SOLVED:.0f})")
    ax.set_xlabel("generation")
    ax.xaxis.set_major_locator(_integer_locator())
    ax.set_ylabel("return (mean over trials)")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return _png(fig)


def _loss_terms(rows: list[dict], preferred: tuple[str, ...]) -> list[str]:
    present = [k for k in preferred if any(isinstance(r.get(k), (int, float)) for r in rows)]
    loss = [r.get("loss") for r in rows]
    # Drop a term that is the loss itself (M's loss is z_nll when it predicts nothing else).
    return [k for k in present if k == "loss" or [r.get(k) for r in rows] != loss]


_SPLIT_STYLES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("train", dict(color="#1f77b4", lw=1.5)),
    ("eval", dict(color="#d62728", marker="o", ms=4, lw=1)),
)


def plot_losses(rows: list[dict], preferred: tuple[str, ...]) -> bytes | None:
    """PNG with one panel per loss term, train and eval curves against the step; None if no data."""
    terms = _loss_terms(rows, preferred)
    if not terms:
        return None
    fig = _figure(3.4 * len(terms), 2.8)
    for i, term in enumerate(terms):
        ax = fig.add_subplot(1, len(terms), i + 1)
        for split, style in _SPLIT_STYLES:
            pts = [
                (r["step"], r[term]) for r in rows if r.get("split") == split and isinstance(r.get(term), (int, float))
            ]
            if pts:
                ax.plot(*zip(*pts), label=split, **style)
        ax.set_title(term, fontsize=10)
        ax.set_xlabel("step", fontsize=9)
        ax.xaxis.set_major_locator(_integer_locator())
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _png(fig)


def plot_fidelity(rows: list[dict], rho: float) -> bytes:
    """PNG scatter of the fidelity gauge's controllers: real mean return (x) against dream mean return (y)."""
    fig = _figure(5, 4)
    ax = fig.add_subplot()
    real = [r["real_mean"] for r in rows]
    dream = [r["dream_mean"] for r in rows]
    ax.scatter(real, dream, color="#1f77b4", zorder=3)
    for r in rows:
        ax.annotate(r["name"], (r["real_mean"], r["dream_mean"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    lo, hi = min(real + dream), max(real + dream)
    ax.plot([lo, hi], [lo, hi], color="#999999", ls="--", lw=1, label="dream = real")
    ax.set_xlabel("real mean return")
    ax.set_ylabel("dream mean return")
    ax.set_title(f"Spearman rho = {rho:.2f} ({len(rows)} controllers)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def plot_score_curve(points: list[dict], final: dict | None = None) -> bytes:
    """PNG of the kept controller's held-out score against real environment steps (left) and stage time
    (right); ``final`` (evaluation.json) is drawn at the end of each."""
    fig = _figure(9, 3.4)
    steps = [p["real_env_steps"] / 1e6 for p in points]
    minutes = [p["seconds"] / 60 for p in points]
    scores = [p["score"] for p in points]
    for i, (xs, label) in enumerate(((steps, "real environment steps (millions)"), (minutes, "stage time (minutes)"))):
        ax = fig.add_subplot(1, 2, i + 1)
        ax.step(xs, scores, where="post", color="#1f77b4", lw=1.5)
        ax.plot(xs, scores, "o", color="#1f77b4", ms=3, label="kept controller, held-out tracks")
        if final and isinstance(final.get("mean"), (int, float)):
            ax.errorbar(
                [xs[-1]],
                [final["mean"]],
                yerr=[final.get("std") or 0],
                fmt="D",
                color="#d62728",
                ms=5,
                capsize=3,
                label=f"wm.evaluate, {final.get('episodes', '?')} tracks",
            )
        ax.axhline(PAPER_SCORE[0], color="#2ca02c", ls="--", lw=1, label=f"paper ({PAPER_SCORE[0]:.0f})")
        ax.set_xlabel(label)
        ax.set_ylabel("mean return")
        ax.grid(alpha=0.3)
        if i == 0:
            ax.legend(fontsize=7, loc="lower right")
    return _png(fig)


def plot_returns_histogram(returns: list[float]) -> bytes:
    """PNG histogram of evaluation returns, with the mean (and the paper's score when in range)."""
    import numpy as np

    fig = _figure(6, 3.2)
    ax = fig.add_subplot()
    ax.hist(returns, bins=min(30, max(5, len(returns) // 3)), color="#1f77b4", alpha=0.8, edgecolor="white")
    mean = float(np.mean(returns))
    ax.axvline(mean, color="#d62728", lw=2, label=f"mean {mean:.1f}")
    if max(returns) > 0.5 * PAPER_SCORE[0]:
        ax.axvline(PAPER_SCORE[0], color="#2ca02c", ls="--", lw=1.5, label=f"paper {PAPER_SCORE[0]:.0f}")
    ax.set_xlabel("return")
    ax.set_ylabel("episodes")
    ax.yaxis.set_major_locator(_integer_locator())
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def plot_reconstructions(inputs: np.ndarray, recons: np.ndarray) -> bytes:
    """PNG grid: input frames (HxWx3 arrays) on the top row, V's reconstructions below."""
    n = len(inputs)
    fig = _figure(1.3 * n, 3.0)
    for row, (images, label) in enumerate(((inputs, "input"), (recons, "reconstruction"))):
        for i, im in enumerate(images):
            ax = fig.add_subplot(2, n, row * n + i + 1)
            ax.imshow(im, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_ylabel(label, fontsize=9)
    return _png(fig)
