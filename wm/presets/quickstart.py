"""``quickstart``: the paper's way (no iterations; C in the real environment) on a 2-core CPU's budget.

    python -m wm.pipeline --workdir=runs/quickstart --preset=quickstart

Cost: about 66 min of stage time on a 2-core CPU without GPU, shared with other jobs for most of
the run (measured 2026-11-25; generate 6.5, train_vae 7.5, encode 0.8, train_mdnrnn 6.4,
train_controller 38.6, evaluate 1.0 min).
Reached: 461.1 ± 338.8 over 20 tracks training never saw (min 4, max 876; 2026-11-25), short of
its goal of a mean ≥ 500. That run predates two fixes of 2026-12-02 (V's bfloat16 bias gradient,
M's heads on an episode's last step) and has not been rerun. README "What the quickstart
reaches" and BENCHMARKS.md "The quickstart run" give the stage commands.
"""

from __future__ import annotations

import os

from wm.presets import smoke
from wm.presets.common import Preset, cpu_bf16, derived

# fmt: off
PRESET: Preset = {
    "generate": dict(episodes=120, max_steps=1000, episodes_per_shard=10, workers=os.cpu_count() or 1),
    # bfloat16 where the CPU has bfloat16 units: ~1.7x faster V training on this project's CPU machines
    "train_vae": dict(batch_size=100, steps=2000, log_every=100, checkpoint_every=250, eval_shards=1,
                      eval_batches=20, mixed_precision="bfloat16" if cpu_bf16() else "auto"),
    "encode": dict(),
    "train_mdnrnn": dict(seq_len=999, batch_size=16, steps=300, log_every=25, checkpoint_every=100, eval_shards=1,
                         learning_rate=1e-3),
    "dream": dict(steps=200, temperature=1.15),
    # score_episodes: the kept controller on 8 of wm.evaluate's tracks whenever it changes (score vs real steps)
    "train_controller": dict(popsize=16, trials=2, generations=50, max_steps=1000, eval_every=10, eval_episodes=4,
                             early_stop=50, score_episodes=8),
    "evaluate": dict(episodes=20, max_steps=1000),
    "collect": dict(episodes=40, max_steps=1000, episodes_per_shard=10),
    "iteration": dict(mdnrnn_steps=100, generations=20),
}
# fmt: on

# its settings at the smoke preset's toy sizes (seconds a stage), for tests
SMOKE: Preset = derived(PRESET, smoke.SIZES)
