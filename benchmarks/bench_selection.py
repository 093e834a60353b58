"""Selection of the kept controller by a few noisy tracks, replayed on one finished run.

    python benchmarks/bench_selection.py --agent=W/controller --from_generation=38 \
        [--every=1] [--confirm=8] [--truth=32] [--out=FILE.json]

Plays the CMA-ES means the run's ``cma_state.pkl`` holds (every ``--every``-th generation from
``--from_generation``), with the run's final V and M, on three sets of tracks: the run's own
in-training evaluation tracks (its ``--eval_episodes`` and ``--seed``: what selected its controller),
``--eval_confirm``'s tracks (the next ``--confirm`` of that stream), and ``--truth`` tracks that nothing
trains or selects on (``wm.evaluate``'s stream after its first 100). Then replays, over the candidates in
generation order, the rules that pick the kept controller and prints each one's pick with its truth
score and the real steps its selection played:

* ``eval (today)``: a mean is kept when its score on the evaluation tracks beats the kept one's;
* ``eval_confirm``: the same, and a mean that beats it is played on the confirmation tracks too and kept
  only if its mean over both sets still beats the kept score (``wm.train_controller --eval_confirm``);
* ``both sets``: every candidate scored on both sets (twice today's evaluation steps);
* ``last``: the last mean; ``oracle``: the best truth score (the ceiling no rule can pass).

The baseline is today's rule, replayed in the same run. Only the means of one M are a faithful replay:
start ``--from_generation`` after the run's last change of M (the first generation of its last
iteration); earlier means were selected under earlier M's.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
from absl import app, flags

# TensorFlow's C++ start-up lines filtered as in the project's binaries (tfrecords.runtime.native_logs)
os.environ.setdefault("WM_FILTER_NATIVE_LOGS", "1")

flags.DEFINE_string("agent", None, "A finished train_controller (CMA-ES) workdir.", required=True)
flags.DEFINE_integer("from_generation", 1, "First generation whose mean is a candidate.")
flags.DEFINE_integer("every", 1, "Every N-th generation is a candidate (the run evaluated every --eval_every).")
flags.DEFINE_integer("confirm", 8, "Confirmation tracks (--eval_confirm).")
flags.DEFINE_integer("truth", 32, "Held-out tracks that score each pick.")
flags.DEFINE_string("out", "", "Result JSON (default: none).")
FLAGS = flags.FLAGS


def keep_if_better(
    first: np.ndarray, second: np.ndarray | None, second_steps: np.ndarray | None = None
) -> tuple[int, int]:
    """The candidate a run keeps when each beats the kept score on ``first`` ([K, E] returns), confirmed on
    ``second`` ([K, C], or None: no confirmation) as ``wm.train_controller --eval_confirm`` confirms it, and the
    steps of the confirmations played (``second_steps`` [K] of each candidate's; 0 without)."""
    kept, score, played = -1, -np.inf, 0
    for k in range(len(first)):
        s = first[k].mean()
        if s <= score:
            continue
        if second is not None:
            played += 0 if second_steps is None else int(second_steps[k])
            s = np.concatenate([first[k], second[k]]).mean()
            if s <= score:
                continue
        kept, score = k, s
    return kept, played


def main(argv: list[str]) -> None:
    del argv
    from tqdm import tqdm

    from data_gen import rollout
    from tfrecords.runtime import fileio
    from wm.agents import loading
    from wm.agents import workers as workers_lib
    from wm.core import distribute, workdir
    from wm.training.cma_state import STATE_NAME, CmaState

    config = workdir.read_config(FLAGS.agent) or {}
    run_flags = config.get("flags", {})
    data = fileio.read_bytes(fileio.join(FLAGS.agent, STATE_NAME))
    if data is None:
        sys.exit(f"bench_selection: {FLAGS.agent} has no {STATE_NAME}: not a CMA-ES controller workdir")
    state = CmaState.loads(data)
    gens = [g for g in range(FLAGS.from_generation, state.generation + 1, FLAGS.every) if state.mean_of(g) is not None]
    if len(gens) < 2:
        sys.exit(f"bench_selection: fewer than 2 means held from generation {FLAGS.from_generation}")
    rows = np.stack([state.mean_of(g) for g in gens])
    n_eval, seed = int(run_flags.get("eval_episodes", 8)), int(run_flags.get("seed", 0))
    eval_seeds = loading.track_seeds(seed, loading.IN_TRAINING_EVAL_STREAM, n_eval)
    confirm_seeds = loading.track_seeds(seed, loading.IN_TRAINING_EVAL_STREAM, FLAGS.confirm, offset=n_eval)
    truth_seeds = loading.track_seeds(0, loading.EVAL_STREAM, FLAGS.truth, offset=100)
    seeds = eval_seeds + confirm_seeds + truth_seeds
    jobs = [(k, s) for k in range(len(rows)) for s in seeds]
    workers = os.cpu_count() or 1
    distribute.set_inference_threads(workers)  # before TensorFlow's first op
    agent, _, _ = loading.load_policy(FLAGS.agent)
    spec = workers_lib.AgentSpec(agent_dir=fileio.abspath(FLAGS.agent), precision="")
    max_steps = int(run_flags.get("max_steps", 1000))
    env_id = config.get("env_id", rollout.DEFAULT_ENV_ID)
    print(f"bench_selection: {len(gens)} means (generations {gens[0]}..{gens[-1]}) x {len(seeds)} tracks")
    bar = tqdm(total=len(jobs), unit="ep", desc="selection", file=sys.stderr, mininterval=10)
    with workers_lib.make_runner("auto", spec, env_id, min(64, len(jobs)), workers, max_steps, agent=agent) as runner:
        results = runner.run(rows, jobs, max_steps, on_episode=lambda r: bar.update(1))
    bar.close()
    ret = np.array([r.ret for r in results]).reshape(len(rows), len(seeds))
    steps = np.array([r.steps for r in results]).reshape(len(rows), len(seeds))
    ev, conf, truth = ret[:, :n_eval], ret[:, n_eval : n_eval + FLAGS.confirm], ret[:, n_eval + FLAGS.confirm :]
    ev_steps, conf_steps = steps[:, :n_eval].sum(1), steps[:, n_eval : n_eval + FLAGS.confirm].sum(1)

    confirmed = keep_if_better(ev, conf, conf_steps)
    picks = {
        "eval (today)": (keep_if_better(ev, None)[0], int(ev_steps.sum())),
        "eval_confirm": (confirmed[0], int(ev_steps.sum()) + confirmed[1]),
        "both sets": (keep_if_better(np.concatenate([ev, conf], 1), None)[0], int(ev_steps.sum() + conf_steps.sum())),
        "last": (len(gens) - 1, 0),
        "oracle": (int(np.argmax(truth.mean(1))), 0),
    }
    print("generation  eval  confirm  truth")
    for k, g in enumerate(gens):
        print(f"{g:10d} {ev[k].mean():6.1f} {conf[k].mean():8.1f} {truth[k].mean():6.1f}")
    print(f"{'rule':14s} {'kept gen':>8s} {'its eval':>8s} {'truth':>6s} {'selection steps':>15s}")
    out = {"generations": gens, "eval": ev.tolist(), "confirm": conf.tolist(), "truth": truth.tolist(), "rules": {}}
    for name, (k, cost) in picks.items():
        print(f"{name:14s} {gens[k]:8d} {ev[k].mean():8.1f} {truth[k].mean():6.1f} {cost:15,d}")
        out["rules"][name] = {"generation": gens[k], "truth": float(truth[k].mean()), "selection_steps": cost}
    base = out["rules"]["eval (today)"]["truth"]
    print(f"eval_confirm - today on {FLAGS.truth} truth tracks: {out['rules']['eval_confirm']['truth'] - base:+.1f}")
    if FLAGS.out:
        with open(FLAGS.out, "w") as f:
            json.dump(out, f)


if __name__ == "__main__":
    app.run(main)
