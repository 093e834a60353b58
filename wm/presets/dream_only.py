"""``dream_only``: C never trains in the real environment; the real environment only collects data.

    python -m wm.pipeline --workdir=runs/dream_only --preset=dream_only

The ``dream`` preset's V and M (reward and terminal heads, dropout 0.05 in training), then CMA-ES in
M's dream: 64 members x 16 dream worlds, 100 generations, temperature 1.15, the dream's dropout 0.1
with masks held per world, and endings sampled from the terminal head ("Dropout's Dream Land"'s
settings). Three iterations follow: collect 40 episodes played by the dream-trained C (parameter
noise 0.05), continue M on all data so far (+150 steps), continue CMA-ES in the new dream (+50
generations). Nothing selects on the real environment: with no in-training evaluation the kept
controller is the fittest member in the dream. The kept controller is scored on 8 of
``wm.evaluate``'s tracks whenever it changes (measurement only: the score against real steps), and
the final one on 20.

Cost: not measured yet. Planned from the ``dream`` preset's stage times and the dream's speed on this
project's 2-core machine (about 16 minutes before C, about 5 s per dream generation of 64 x 16
episodes, about 5 minutes of collection and M per iteration): about 50 minutes of stage time.
Reached: not measured yet. The issue's target is 700 over 20 tracks in 60 minutes; the gauge's
``screen_rho`` (BENCHMARKS.md) says the dream does not yet rank the members of one population, which
is what CMA-ES in the dream needs.
"""

from __future__ import annotations

from wm.presets import dream, smoke
from wm.presets.common import Preset, derived

# The dream preset, with these stages' settings changed:
PRESET: Preset = derived(
    dream.PRESET,
    {
        "train_controller": dict(
            env="dream",
            popsize=64,
            trials=16,
            generations=100,
            eval_every=0,
            temperature=1.15,
            dream_dropout=0.1,
            dream_done="sample",
        ),
        "iteration": dict(env="dream", trials=16, generations=50),
        "pipeline": dict(iterations=3),
    },
)

# its settings at the smoke preset's toy sizes
SMOKE: Preset = derived(PRESET, smoke.SIZES)
