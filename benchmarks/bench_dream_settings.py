"""The real score of a C trained only in M's dream, one dream setting at a time.

    python benchmarks/bench_dream_settings.py --vae=W/vae --mdnrnn=W/mdnrnn \
        --series=W/series,W/iter_1/series,W/iter_2/series --out=/tmp/dream_settings [--generations=40] \
        [--setting=NAME:KEY=VALUE,...]... [--reference=W/controller]

For each dream setting (``--setting``; the default list is the run's own dream, τ 1.0, done sampled,
dream dropout 0.1 and "Dropout's Dream Land"'s combination), ``wm.train_controller --env=dream`` trains C
from zero in that dream on the same V and M (``--popsize`` members x ``--trials`` dream worlds,
``--generations`` generations, no real-environment evaluation: the kept controller is the fittest member
in the dream), and ``wm.evaluate`` then scores the kept controller on ``--eval_episodes`` of its held-out
tracks, and the final CMA-ES mean on the same tracks. Nothing in training touches the real environment
(``--score_episodes=N`` adds the kept controller's score on N held-out tracks whenever it changes:
measurement only, and costly early on). ``KEY`` is one of ``wm.fidelity``'s variant keys that
``wm.train_controller`` takes (temperature, dream_dropout, dream_done, dream_start, dream_horizon); a
setting starts from the base (τ 1.15, M's training dropout, done thresholded, episodes from the series'
starts). The baseline in the same run is ``--reference``: a controller trained in the real environment on
the same V and M (the run's own), scored on the same tracks. Prints one row per setting (the kept member's
dream fitness, its and the mean's real score, training minutes) and writes ``OUT/settings.json``.
"""

from __future__ import annotations

import json
import os
import sys
import time

# TensorFlow's native start-up lines are not this benchmark's output (set before the project's packages load).
os.environ.setdefault("WM_FILTER_NATIVE_LOGS", "1")

from absl import app, flags

DEFAULT_SETTINGS = (
    "base:temperature=1.15",
    "tau1.0:temperature=1.0",
    "done_sampled:dream_done=sample",
    "dropout0.1:dream_dropout=0.1",
    "ddl:temperature=1.0,dream_dropout=0.1,dream_done=sample",
)
TRAIN_KEYS = ("temperature", "dream_dropout", "dream_done", "dream_start", "dream_horizon")

flags.DEFINE_string("vae", None, "train_vae workdir.", required=True)
flags.DEFINE_string("mdnrnn", None, "train_mdnrnn workdir with reward and terminal heads.", required=True)
flags.DEFINE_string("series", None, "Latent series (comma-separated) whose z's start the dreams.", required=True)
flags.DEFINE_string("out", None, "Directory for one controller workdir per setting and settings.json.", required=True)
flags.DEFINE_multi_string("setting", list(DEFAULT_SETTINGS), "NAME:KEY=VALUE,... a dream setting to train C in.")
flags.DEFINE_string("reference", "", "A controller workdir on the same V and M to score on the same tracks.")
flags.DEFINE_integer("seed", 1, "Seed of CMA-ES and the dream worlds.")
flags.DEFINE_integer("generations", 40, "CMA-ES generations in each dream.")
flags.DEFINE_integer("popsize", 64, "CMA-ES population.")
flags.DEFINE_integer("trials", 16, "Dream worlds per member.")
flags.DEFINE_integer("eval_episodes", 20, "wm.evaluate's held-out tracks for each kept controller.")
flags.DEFINE_integer("score_episodes", 0, "Score the kept controller on N held-out tracks whenever it changes.")
FLAGS = flags.FLAGS


def parse_setting(text: str) -> tuple[str, dict]:
    """``"ddl:temperature=1.0,dream_done=sample"`` -> ("ddl", {...}); ValueError (one line) if malformed."""
    from wm.agents import fidelity

    name, sep, body = text.partition(":")
    if not sep or not name:
        raise ValueError(f"--setting {text!r}: give NAME:KEY=VALUE,...")
    keys = fidelity.parse_variant(body)
    extra = sorted(set(keys) - set(TRAIN_KEYS))
    if extra:
        raise ValueError(f"--setting {text!r}: wm.train_controller takes only {', '.join(TRAIN_KEYS)}, not {extra}")
    return name, keys


def _mean_agent(wd: str) -> str:
    """A copy of controller workdir ``wd`` (``WD-mean``) whose controller.npz holds the final CMA-ES mean."""
    import shutil

    import numpy as np

    from tfrecords.runtime import fileio
    from wm.training.cma_es import CONFIG_NAME, PARAMS_NAME
    from wm.training.cma_state import STATE_NAME, CmaState

    out = wd + "-mean"
    os.makedirs(out, exist_ok=True)
    shutil.copy(os.path.join(wd, CONFIG_NAME), os.path.join(out, CONFIG_NAME))
    state = CmaState.loads(fileio.read_bytes(os.path.join(wd, STATE_NAME)))
    with np.load(os.path.join(wd, PARAMS_NAME)) as z:
        kept = dict(z)  # the controller's shape keys as the run wrote them; only the parameters change
    kept.update(params=state.mean_of(state.generation), source="mean", generation=state.generation)
    np.savez(os.path.join(out, PARAMS_NAME), **kept)
    return out


def train_and_score(name: str, keys: dict) -> dict:
    """C trained from zero in one dream, then its kept controller scored on the held-out tracks."""
    from wm import evaluate
    from wm import train_controller as tc

    wd = os.path.join(FLAGS.out, name)
    cfg = tc.TrainControllerConfig(
        vae=FLAGS.vae,
        mdnrnn=FLAGS.mdnrnn,
        workdir=wd,
        env="dream",
        series=FLAGS.series,
        popsize=FLAGS.popsize,
        trials=FLAGS.trials,
        generations=FLAGS.generations,
        eval_every=0,
        score_episodes=FLAGS.score_episodes,
        seed=FLAGS.seed,
        progress=False,
        **{"temperature": 1.15, **keys},
    )
    t0 = time.perf_counter()
    summary = tc.run(cfg)
    train_s = time.perf_counter() - t0
    final_csv = os.path.join(wd, "final.csv")
    ev = evaluate.run(evaluate.EvaluateConfig(agent=wd, episodes=FLAGS.eval_episodes, progress=False, out=final_csv))
    mean_ev = evaluate.run(evaluate.EvaluateConfig(agent=_mean_agent(wd), episodes=FLAGS.eval_episodes, progress=False))
    recs = [json.loads(line) for line in open(os.path.join(wd, "metrics.jsonl"))]
    curve = [(r["generation"], round(r["heldout_score"], 1)) for r in recs if "heldout_score" in r]
    return {
        "name": name,
        "setting": keys,
        "train_s": train_s,
        "generations": summary["generation"],
        "real": {k: ev[k] for k in ("mean", "std", "min", "max")},
        "real_of_mean": {k: mean_ev[k] for k in ("mean", "std", "min", "max")},
        "curve": curve,
        "kept_dream_fitness": summary["best_fitness"],
    }


def main(argv: list[str]) -> None:
    del argv
    try:
        settings = [parse_setting(s) for s in FLAGS.setting]
    except ValueError as e:
        sys.exit(f"bench_dream_settings: {e}")
    os.makedirs(FLAGS.out, exist_ok=True)
    rows = []
    if FLAGS.reference:
        from wm import evaluate

        out = os.path.join(FLAGS.out, "reference.csv")  # not the reference run's own evaluation.csv
        cfg = evaluate.EvaluateConfig(agent=FLAGS.reference, episodes=FLAGS.eval_episodes, progress=False, out=out)
        ev = evaluate.run(cfg)
        rows.append({"name": "reference (trained in the real environment)", "real": ev})
        print(f"reference {FLAGS.reference}: {ev['mean']:.1f} ± {ev['std']:.1f}", flush=True)
    for name, keys in settings:
        row = train_and_score(name, keys)
        rows.append(row)
        real = row["real"]
        print(f"{name}: real {real['mean']:.1f} ± {real['std']:.1f}; scored along: {row['curve']}", flush=True)
        with open(os.path.join(FLAGS.out, "settings.json"), "w") as f:
            json.dump(rows, f, indent=1, default=str)
    tracks = f"kept, real ({FLAGS.eval_episodes} tracks)"
    print(f"{'setting':<14} {'kept, dream':>11} {tracks:>26} {'mean, real':>18} {'train min':>9}")
    for row in rows:
        if "setting" not in row:
            continue
        dm = row["kept_dream_fitness"]
        real, mr = row["real"], row["real_of_mean"]
        print(
            f"{row['name']:<14} {dm:>11.1f} {real['mean']:>17.1f} ± {real['std']:6.1f} "
            f"{mr['mean']:>9.1f} ± {mr['std']:6.1f} {row['train_s'] / 60:>9.1f}"
        )


if __name__ == "__main__":
    app.run(main)
