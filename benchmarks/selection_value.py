"""What a rule that picks the kept controller is worth in expectation, from a selection replay's returns.

    python benchmarks/selection_value.py --replay=sel.json [--draws=20000] [--pool=16]

Reads the JSON that ``benchmarks/bench_selection.py --out`` writes (K CMA-ES means, each played on the
same T tracks) and, in each of ``--draws`` random splits of the T tracks into ``--pool`` a rule may select
on and the rest that score its pick, replays over the candidates a run evaluates (every 1st, 3rd and 5th
mean, always ending with the last):

* ``8 fixed``: keep a candidate when its mean over 8 fixed tracks beats the kept one's (today's rule);
* ``16 fixed``: the same over the whole pool;
* ``8 fresh, paired``: at each candidate, 8 tracks drawn afresh from the pool are played by the candidate
  and the kept controller; the better of the two on them is kept;
* ``last``: the last mean; ``oracle``: the best on the scoring tracks.

Prints the mean scoring-track return of each rule's pick beside the candidates' average (the baseline: a
pick at random). No episodes are played; the replay's own noise is the only noise.
"""

from __future__ import annotations

import json

import numpy as np
from absl import app, flags

flags.DEFINE_string("replay", None, "bench_selection.py's --out JSON.", required=True)
flags.DEFINE_integer("draws", 20000, "Random splits of the tracks.")
flags.DEFINE_integer("pool", 16, "Tracks a rule may select on (the rest score its pick).")
flags.DEFINE_integer("seed", 0, "Seed of the splits.")
FLAGS = flags.FLAGS
RULES = ("average", "8 fixed", "16 fixed", "8 fresh, paired", "last", "oracle")


def keep_if_better(returns: np.ndarray, candidates: list[int], tracks: np.ndarray) -> int:
    """The candidate kept when each one replaces the kept one if its mean over ``tracks`` is higher."""
    kept, best = candidates[0], -np.inf
    for k in candidates:
        s = returns[k, tracks].mean()
        if s > best:
            kept, best = k, s
    return kept


def paired(returns: np.ndarray, candidates: list[int], pool: np.ndarray, n: int, rng: np.random.Generator) -> int:
    """The candidate kept when each challenges the kept one on ``n`` tracks drawn afresh from ``pool``."""
    kept = candidates[0]
    for k in candidates[1:]:
        tracks = rng.choice(pool, n, replace=False)
        if returns[k, tracks].mean() > returns[kept, tracks].mean():
            kept = k
    return kept


def value(returns: np.ndarray, every: int, draws: int, pool_size: int, seed: int) -> dict[str, float]:
    """Each rule's expected scoring-track return over ``draws`` splits, candidates every ``every``-th mean."""
    k_all, t_all = returns.shape
    candidates = list(range(0, k_all, every))
    if candidates[-1] != k_all - 1:
        candidates.append(k_all - 1)
    rng = np.random.default_rng(seed)
    out: dict[str, list[float]] = {r: [] for r in RULES}
    for _ in range(draws):
        perm = rng.permutation(t_all)
        pool, scoring = perm[:pool_size], perm[pool_size:]
        truth = returns[:, scoring].mean(axis=1)
        out["average"].append(truth[candidates].mean())
        out["8 fixed"].append(truth[keep_if_better(returns, candidates, pool[:8])])
        out["16 fixed"].append(truth[keep_if_better(returns, candidates, pool)])
        out["8 fresh, paired"].append(truth[paired(returns, candidates, pool, 8, rng)])
        out["last"].append(truth[k_all - 1])
        out["oracle"].append(truth[candidates].max())
    return {r: float(np.mean(v)) for r, v in out.items()}


def main(argv: list[str]) -> None:
    del argv
    with open(FLAGS.replay) as f:
        data = json.load(f)
    returns = np.concatenate([np.asarray(data[k], np.float64) for k in ("eval", "confirm", "truth")], axis=1)
    k_all, t_all = returns.shape
    if FLAGS.pool < 8 or FLAGS.pool >= t_all:
        raise app.UsageError(f"--pool={FLAGS.pool} must be at least 8 and below the replay's {t_all} tracks")
    print(f"selection_value: {k_all} means x {t_all} tracks, {FLAGS.draws} splits ({FLAGS.pool} to select on)")
    print(f"{'candidates':>12s} " + " ".join(f"{r:>16s}" for r in RULES))
    for every in (1, 3, 5):
        v = value(returns, every, FLAGS.draws, FLAGS.pool, FLAGS.seed)
        print(f"{'every ' + str(every):>12s} " + " ".join(f"{v[r]:16.1f}" for r in RULES))


if __name__ == "__main__":
    app.run(main)
