"""Stage 4, the alternative: train C with PPO in the real environment on V and M's features.

    python -m wm.train_ppo --vae=runs/demo/vae --mdnrnn=runs/demo/mdnrnn \\
        --workdir=runs/demo/ppo --envs=16 --env_steps=1000000

The loop, its resume and its files are :mod:`wm.training.ppo`'s; the policy and the rollout
collector are :mod:`wm.agents.ppo`'s, the actor-critic :mod:`wm.models.actor_critic`'s, the update
:mod:`wm.training.ppo_update`'s. ``python -m wm.evaluate --agent=WORKDIR`` plays the deterministic
policy (the squashed mean).
"""

from tfrecords.runtime.cli import run_binary
from wm.training.ppo import CHECKPOINT_DIR, CONFIG_NAME, METRICS_NAME, TrainPPOConfig, run  # noqa: F401

if __name__ == "__main__":
    run_binary(TrainPPOConfig, run, "train_ppo")
