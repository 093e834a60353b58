"""CMA-ES screened in M's dream against real-only CMA-ES, at equal real-environment steps.

    python benchmarks/bench_screen.py --vae=W/vae --mdnrnn=W/mdnrnn --series=W/series,W/iter_1/series \
        --out=/tmp/screen [--seed=1] [--generations=30]

Both arms train C from zero on the same V and M (``wm.train_controller``, fitness in the real
environment, early stop 50):

* **real-only**: population 16 x 2 trials for ``--generations`` generations, the CMA-ES mean evaluated
  on 8 tracks every 5 generations (the ``dream`` preset's first pass);
* **screened**: population 64 ranked in M's dream (16 worlds each, the agent's temperature 1.15, M's
  own dropout), its best 8 played x 2 trials, for twice the generations, evaluated every 10: the same
  real fitness episodes (16 x 2 = 8 x 2 x 2 per two generations) and the same number of evaluations.

Each arm scores its kept controller on 8 of ``wm.evaluate``'s tracks whenever it changes
(``--score_episodes``: the score against real steps, not counted in them) and the final one over
``--eval_episodes`` of them. Prints both curves' points and a table of the final scores, real steps
and wall times, and writes ``OUT/screen_vs_real.png``. The baseline is the real-only arm, run in the
same invocation.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

from absl import app, flags

# TensorFlow's C++ start-up lines filtered as in the project's binaries (tfrecords.runtime.native_logs)
os.environ.setdefault("WM_FILTER_NATIVE_LOGS", "1")

flags.DEFINE_string("vae", None, "train_vae workdir.", required=True)
flags.DEFINE_string("mdnrnn", None, "train_mdnrnn workdir with a reward head.", required=True)
flags.DEFINE_string("series", None, "Latent series (comma-separated) whose z's start the dreams.", required=True)
flags.DEFINE_string("out", None, "Directory for the two controller workdirs and the plot.", required=True)
flags.DEFINE_integer("seed", 1, "Seed of both arms (tracks, CMA-ES).")
flags.DEFINE_integer("generations", 30, "Real-only generations (the screened arm runs twice as many).")
flags.DEFINE_integer("eval_episodes", 20, "Tracks of the final evaluation of each arm's kept controller.")
FLAGS = flags.FLAGS


def _arm(name: str, **kw: object) -> dict:
    from wm import evaluate
    from wm import train_controller as tc

    wd = os.path.join(FLAGS.out, name)
    cfg = tc.TrainControllerConfig(
        vae=FLAGS.vae,
        mdnrnn=FLAGS.mdnrnn,
        workdir=wd,
        series=FLAGS.series,
        temperature=1.15,
        trials=2,
        early_stop=50,
        eval_episodes=8,
        score_episodes=8,
        seed=FLAGS.seed,
        progress=False,
        **kw,  # type: ignore[arg-type]
    )
    t0 = time.perf_counter()
    tc.run(cfg)
    train = time.perf_counter() - t0
    final_csv = os.path.join(wd, "final.csv")
    ev = evaluate.run(evaluate.EvaluateConfig(agent=wd, episodes=FLAGS.eval_episodes, progress=False, out=final_csv))
    recs = [json.loads(line) for line in open(os.path.join(wd, "metrics.jsonl"))]
    curve = [(r["real_env_steps"], r["heldout_score"]) for r in recs if "heldout_score" in r]
    return {"name": name, "config": dataclasses.asdict(cfg), "train_s": train, "final": ev, "curve": curve}


def _plot(arms: list[dict], path: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for arm, color in zip(arms, ("#1f77b4", "#d62728"), strict=False):
        xs, ys = zip(*arm["curve"]) if arm["curve"] else ((), ())
        ax.step([x / 1e6 for x in xs], ys, where="post", color=color, label=arm["name"])
        ax.plot([x / 1e6 for x in xs], ys, "o", color=color, ms=3)
    ax.set_xlabel("real environment steps of CMA-ES (millions)")
    ax.set_ylabel("kept controller, 8 held-out tracks")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def main(argv: list[str]) -> None:
    del argv
    os.makedirs(FLAGS.out, exist_ok=True)
    g = FLAGS.generations
    arms = [
        _arm("real-only", popsize=16, generations=g, eval_every=5),
        _arm("screened", popsize=64, screen=8, screen_worlds=16, generations=2 * g, eval_every=10),
    ]
    for arm in arms:
        print(f"{arm['name']}: curve (real steps, held-out score): {[(s, round(v, 1)) for s, v in arm['curve']]}")
    print(f"{'arm':<10} {'final (' + str(FLAGS.eval_episodes) + ' tracks)':>22} {'real steps':>11} {'train s':>8}")
    for arm in arms:
        f = arm["final"]
        steps = arm["curve"][-1][0] if arm["curve"] else 0
        print(f"{arm['name']:<10} {f['mean']:>12.1f} ± {f['std']:6.1f} {steps:>11,} {arm['train_s']:>8.0f}")
    ratio = arms[1]["final"]["mean"] / arms[0]["final"]["mean"] if arms[0]["final"]["mean"] else float("nan")
    print(f"screened / real-only final score: {ratio:.2f}")
    _plot(arms, os.path.join(FLAGS.out, "screen_vs_real.png"))


if __name__ == "__main__":
    app.run(main)
