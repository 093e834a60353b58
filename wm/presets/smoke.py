"""``smoke``: every stage at toy sizes, for tests.

    python -m wm.pipeline --workdir=runs/smoke --preset=smoke
    python -m wm.pipeline --workdir=runs/smoke --preset=smoke --iterations=1

Cost: not measured as a benchmark; seconds per stage on a 2-core CPU (the end-to-end tests in
tests/wm/test_pipeline.py run it). Reached: nothing; its agent is untrained. It exists so that the
whole pipeline, iterations included, runs in a test.

:data:`SIZES` are its toy sizes, which the other presets' ``SMOKE`` variants put over their own
settings; the smoke preset adds that its iterations train C in M's dream (so that tests cover that path).
"""

from __future__ import annotations

from wm.presets.common import Preset, derived

# A table, one stage per line, laid out by hand:
# fmt: off
SIZES: Preset = {
    "generate": dict(episodes=4, max_steps=40, episodes_per_shard=2, workers=1),
    "train_vae": dict(batch_size=8, steps=4, steps_per_loop=2, log_every=2, checkpoint_every=4, eval_shards=1,
                      eval_batches=2),
    "encode": dict(),
    "train_mdnrnn": dict(seq_len=15, batch_size=2, steps=4, steps_per_loop=2, log_every=2, checkpoint_every=4,
                         eval_shards=0, hidden=32),
    "dream": dict(steps=10, scale=2),
    "train_controller": dict(popsize=2, trials=1, generations=2, workers=1, max_steps=20, eval_every=0,
                             score_episodes=1),
    "evaluate": dict(episodes=2, max_steps=20, workers=1),
    "collect": dict(episodes=2, max_steps=20, episodes_per_shard=1, workers=1),
    "iteration": dict(mdnrnn_steps=2, generations=1, trials=2),
}
# fmt: on

PRESET: Preset = derived(SIZES, {"iteration": dict(env="dream")})
SMOKE: Preset = PRESET
