"""``paper``: the paper's settings, for accelerators and many cores.

    python -m wm.pipeline --workdir=gs://BUCKET/wm --preset=paper --strategy=tpu --tpu=local
    python -m wm.pipeline --workdir=runs/paper --preset=paper --strategy=mirrored

10,000 rollouts; V for 10 epochs; M for 20 epochs of 999-step sequences; CMA-ES with population
64 x 16 trials for 2,000 generations; evaluation over 100 tracks. launch/README.md has the scripts
for one GPU, several GPUs, a Cloud TPU VM, Colab and a Ray cluster.

Cost: not measured end to end (many hours; many Colab sessions). Reached: not measured.
"""

from __future__ import annotations

import os

from wm.presets import smoke
from wm.presets.common import Preset, derived

# batches of 104, the multiple of 8 nearest the paper's 100: 8-replica TPUs (v2-8, v3-8, Colab's,
# 8-chip v5e/v6e) split it evenly, as they split every multiple of 8
PRESET: Preset = {
    "generate": dict(episodes=10_000, max_steps=1000, episodes_per_shard=50, workers=os.cpu_count() or 1),
    "train_vae": dict(batch_size=104, epochs=10, steps=0),
    "encode": dict(),
    "train_mdnrnn": dict(seq_len=999, batch_size=104, epochs=20, steps=0),
    "dream": dict(steps=300, temperature=1.15),
    "train_controller": dict(
        popsize=64, trials=16, generations=2000, eval_every=25, eval_episodes=1024, score_episodes=16
    ),
    "evaluate": dict(episodes=100, max_steps=1000),
    "collect": dict(episodes=1000, max_steps=1000, episodes_per_shard=50),
    "iteration": dict(mdnrnn_epochs=2, generations=200),
}

# its settings at the smoke preset's toy sizes (steps, which override its epochs), for tests
SMOKE: Preset = derived(PRESET, smoke.SIZES)
