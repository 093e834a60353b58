"""Score against real environment steps: pipeline runs beside the published agents' budgets (one PNG).

    python benchmarks/plot_score_vs_steps.py --run=long=runs/long [--run=dream=runs/dream] \
        --out=benchmarks/score_vs_steps.png

Each ``--run=LABEL=WORKDIR`` is a ``wm.pipeline`` workdir: its kept controller's held-out score along the
run (``wm.train_controller --score_episodes``, the curve ``report.html`` draws, with every real step the run
played on the x axis) and its final ``wm.evaluate`` score with its std. The anchors are the published
scores whose real-environment budget is stated: Ha & Schmidhuber's (906 ± 21, about 1.7 billion frames),
zacwellmer/WorldModels' (888, 200 generations x 64 x 16 episodes of at most 1,000 steps: at most 2.0e8) and
PPO-LSTM's (862 ± 97 after 4 million steps). The x axis is logarithmic: the budgets span four decades.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# TensorFlow's C++ start-up lines filtered as in the project's binaries (tfrecords.runtime.native_logs)
os.environ.setdefault("WM_FILTER_NATIVE_LOGS", "1")

# (label, real env steps, mean, std or None)
ANCHORS = (
    ("Ha & Schmidhuber 2018", 1.7e9, 906.0, 21.0),
    ("zacwellmer/WorldModels (at most)", 200 * 64 * 16 * 1000, 888.0, None),
    ("PPO-LSTM", 4e6, 862.0, 97.0),
)


def main(argv: list[str] | None = None) -> None:
    """Draws the runs' curves and the anchors into ``--out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from wm.core import layout
    from wm.reporting.curve import score_curve
    from wm.reporting.files import exists, join, read_json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", default=[], help="LABEL=WORKDIR of a wm.pipeline run")
    parser.add_argument("--out", default="benchmarks/score_vs_steps.png")
    args = parser.parse_args(argv)
    fig, ax = plt.subplots(figsize=(8, 4.2), dpi=110)
    for item in args.run:
        label, _, workdir = item.partition("=")
        if not workdir or not exists(workdir):
            raise SystemExit(f"plot_score_vs_steps: --run={item}: give LABEL=WORKDIR of an existing run")
        pipeline_json = layout.Layout(workdir).pipeline_json
        pipeline = read_json(pipeline_json) if exists(pipeline_json) else None
        points = score_curve(workdir, pipeline)
        if not points:
            raise SystemExit(f"plot_score_vs_steps: {workdir} has no held-out scores (--score_episodes)")
        xs, ys = [p["real_env_steps"] for p in points], [p["score"] for p in points]
        (line,) = ax.step(xs, ys, where="post", lw=1.5, label=f"{label}: kept controller, 8 held-out tracks")
        final_path = join(layout.Layout(workdir).controller, "evaluation.json")
        if exists(final_path):
            final = read_json(final_path)
            ax.errorbar(
                [xs[-1]], [final["mean"]], yerr=[final["std"]], fmt="D", ms=6, capsize=3, color=line.get_color(),
                label=f"{label}: wm.evaluate, {final['episodes']} tracks ({final['mean']:.0f} ± {final['std']:.0f})",
            )  # fmt: skip
        print(f"{label}: {len(points)} points, last {ys[-1]:.1f} at {xs[-1]:,} real steps")
    for name, steps, mean, std in ANCHORS:
        ax.errorbar([steps], [mean], yerr=[std] if std else None, fmt="s", ms=6, capsize=3, color="gray")
        ax.annotate(f"{name}\n{mean:.0f}" + (f" ± {std:.0f}" if std else ""), (steps, mean), fontsize=7,
                    xytext=(-4, -22), textcoords="offset points", ha="right")  # fmt: skip
    ax.axhline(900, color="#2ca02c", ls="--", lw=1, label="900")
    ax.set_xscale("log")
    ax.set_xlabel("real environment steps")
    ax.set_ylabel("mean return")
    ax.set_ylim(-100, 1000)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(args.out)
    print(f"plot_score_vs_steps: wrote {args.out}")


if __name__ == "__main__":
    main()
