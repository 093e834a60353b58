"""``dream``, README's main job: the quickstart's first pass, shorter, then two iterations of learning from the agent.

    python -m wm.pipeline --workdir=runs/dream --preset=dream

A first pass as the quickstart's but with 25 generations (M with reward and terminal heads), then
two iterations of collecting 40 episodes with the agent (parameter noise 0.05), M continued on all
data so far (+150 steps) and CMA-ES continued in the real environment (+12 generations each).
CMA-ES samples antithetically (``--mirrored``: pairs m +- d on the same tracks) since 2026-12-08: on
seed 3's first-pass V and M it found driving with seeds 3, 4 and 5 (722.3 / 710.8 / 533.7 over 20 tracks
after 25 generations, against 201.7 / 564.0 / 742.4 without; BENCHMARKS.md "Antithetic sampling").
In M's dream it left the real optimum in every measured iteration (BENCHMARKS.md), so the dream is
kept as a gauge: every evaluated CMA-ES mean is also played in M's dream.
``--set=iteration.env=dream --set=iteration.trials=16 --set=iteration.generations=40`` is the earlier,
dream-trained variant (523.8 ± 205.8 over 20 tracks in 68 min on a shared machine, 2026-12-02).

Cost and reached, on a 2-core CPU without GPU, nothing else on the cores, over the 20 tracks of
``wm.evaluate --episodes=20`` (README "What the dream preset reaches", BENCHMARKS.md "The dream
preset, measured"):

* 2026-12-03, run 2, the preset exactly as it is: 606.2 ± 187.4 in 35.7 min of stage time.
* 2026-12-03, run 1, the same settings before the dream gauge existed: 792.5 ± 142.6 in 53.8 min.
* 2026-12-06, ``--seed=1``: 694.7 ± 246.5 in 46.3 min (BENCHMARKS.md "The main job with --seed=1").
* 2026-12-07, ``--seed=2``: 853.0 ± 86.0 in 58.0 min (BENCHMARKS.md "The main job with --seed=2").
* 2026-12-07, ``--seed=3``: 523.1 ± 227.3 in 49.0 min (BENCHMARKS.md "The main job with --seed=3").
* 2026-12-07, ``--seed=4``: 598.9 ± 253.1 in 36.8 min on a faster CPU (BENCHMARKS.md "The main job with
  --seed=4").
* 2026-12-08, ``--seed=3``, the preset as it is now (antithetic sampling): 705.5 ± 161.2 in 38.1 min on
  that faster CPU (BENCHMARKS.md "The main job with antithetic sampling"). The runs above predate it.
"""

from __future__ import annotations

from wm.presets import quickstart, smoke
from wm.presets.common import Preset, derived

# The quickstart, with these stages' settings changed:
PRESET: Preset = derived(
    quickstart.PRESET,
    {
        "train_mdnrnn": dict(steps=500, reward_head=True, terminal_head=True, dropout=0.05),
        "train_controller": dict(
            generations=25, eval_every=5, eval_episodes=8, temperature=1.15, dream_dropout=0.1, mirrored=True
        ),
        "collect": dict(param_noise=0.05),
        "iteration": dict(mdnrnn_steps=150, generations=12, env="real", trials=2),
        "pipeline": dict(iterations=2),
    },
)

# its settings (heads, dream gauge, two iterations in the real environment) at the smoke preset's toy sizes
SMOKE: Preset = derived(PRESET, smoke.SIZES)
