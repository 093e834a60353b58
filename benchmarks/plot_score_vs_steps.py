"""Score against real environment steps: pipeline runs beside the published agents' budgets (one PNG).

    python benchmarks/plot_score_vs_steps.py --run=seed1=runs/seed1 [--curve=benchmarks/curves/long.json] \
        --out=benchmarks/score_vs_steps.png

Each ``--run=LABEL=WORKDIR`` is a ``wm.pipeline`` workdir: its kept controller's held-out score along the
run (``wm.train_controller --score_episodes``, the curve ``report.html`` draws, with every real step the run
played on the x axis) and its final ``wm.evaluate`` score with its std. Each run's points are also written
to ``--save_dir`` as ``LABEL.json`` (a run directory is scratch; the curve outlives it), and ``--curve=JSON``
draws such a saved file again. A saved file may hold only a final score (no points) where a run's curve
was never saved. The anchors are the published scores whose real-environment budget is stated: Ha &
Schmidhuber's (906 ± 21, about 1.7 billion frames), zacwellmer/WorldModels' (888, 200 generations x 64 x
16 episodes of at most 1,000 steps: at most 2.0e8) and PPO-LSTM's (862 ± 97 after 4 million steps). The
x axis is logarithmic: the budgets span four decades.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# TensorFlow's C++ start-up lines filtered as in the project's binaries (tfrecords.runtime.native_logs)
os.environ.setdefault("WM_FILTER_NATIVE_LOGS", "1")

# (label, real env steps, mean, std or None)
ANCHORS = (
    ("Ha & Schmidhuber 2018", 1.7e9, 906.0, 21.0),
    ("zacwellmer/WorldModels (at most)", 200 * 64 * 16 * 1000, 888.0, None),
    ("PPO-LSTM", 4e6, 862.0, 97.0),
)


def run_curve(label: str, workdir: str) -> dict[str, Any]:
    """The saved form of a run: ``{label, workdir, points: [{generation, real_env_steps, seconds, score}],
    final: {mean, std, episodes, real_env_steps} or None}``; the final score is placed at the last point."""
    from wm.core import layout
    from wm.reporting.curve import score_curve
    from wm.reporting.files import exists, join, read_json

    if not workdir or not exists(workdir):
        raise SystemExit(f"plot_score_vs_steps: --run={label}={workdir}: give LABEL=WORKDIR of an existing run")
    pipeline_json = layout.Layout(workdir).pipeline_json
    points = score_curve(workdir, read_json(pipeline_json) if exists(pipeline_json) else None)
    if not points:
        raise SystemExit(f"plot_score_vs_steps: {workdir} has no held-out scores (--score_episodes)")
    final_path = join(layout.Layout(workdir).controller, "evaluation.json")
    final = None
    if exists(final_path):
        ev = read_json(final_path)
        final = {k: ev[k] for k in ("mean", "std", "episodes")} | {"real_env_steps": points[-1]["real_env_steps"]}
    return {"label": label, "workdir": workdir, "points": points, "final": final}


def load_curve(path: str) -> dict[str, Any]:
    """A curve saved by ``run_curve`` (or written by hand for a lost run: ``points`` empty, ``final`` set)."""
    try:
        with open(path) as f:
            curve = json.load(f)
        if not curve["points"] and not curve["final"]:
            raise ValueError("neither points nor a final score")
        return curve
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SystemExit(f"plot_score_vs_steps: --curve={path}: not a saved curve ({e})") from None


def main(argv: list[str] | None = None) -> None:
    """Draws the runs' curves and the anchors into ``--out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", default=[], help="LABEL=WORKDIR of a wm.pipeline run")
    parser.add_argument("--curve", action="append", default=[], help="a curve saved by an earlier --run")
    parser.add_argument("--save_dir", default="benchmarks/curves", help="where --run's curves are saved ('': not)")
    parser.add_argument("--out", default="benchmarks/score_vs_steps.png")
    args = parser.parse_args(argv)
    curves = []
    for item in args.run:
        label, _, workdir = item.partition("=")
        curve = run_curve(label, workdir)
        if args.save_dir:
            os.makedirs(args.save_dir, exist_ok=True)
            with open(os.path.join(args.save_dir, f"{label}.json"), "w") as f:
                json.dump(curve, f, indent=1)
        curves.append(curve)
    curves += [load_curve(path) for path in args.curve]
    if not curves:
        raise SystemExit("plot_score_vs_steps: give at least one --run or --curve")
    fig, ax = plt.subplots(figsize=(8, 4.2), dpi=110)
    for curve in curves:
        label, points, final = curve["label"], curve["points"], curve["final"]
        color = None
        if points:
            xs, ys = [p["real_env_steps"] for p in points], [p["score"] for p in points]
            (line,) = ax.step(xs, ys, where="post", lw=1.5, label=f"{label}: kept controller, 8 held-out tracks")
            color = line.get_color()
            print(f"{label}: {len(points)} points, last {ys[-1]:.1f} at {xs[-1]:,} real steps")
        if final:
            score = f"{final['mean']:.0f} ± {final['std']:.0f}"
            ax.errorbar(
                [final["real_env_steps"]], [final["mean"]], yerr=[final["std"]], fmt="D", ms=6, capsize=3,
                color=color, label=f"{label}: wm.evaluate, {final['episodes']} tracks ({score})",
            )  # fmt: skip
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
