"""Env steps/s while training C with PPO (rollouts + updates) vs the bare environment.

    python benchmarks/bench_ppo.py [--envs 8] [--rollout_len 64] [--rounds 3]

Ours: what ``wm.train_ppo`` does per update, with the paper's V and M sizes (random weights:
speed does not depend on their values): ``wm.agents.ppo.RolloutCollector`` steps ``--envs``
environments in ``--workers`` processes with one batched V + M + actor-critic call per step,
then ``wm.training.ppo_update.PPOTrainer`` runs the update (4 epochs of 256-step minibatches). Env steps/s =
rollout steps / (collect + update time). Bare: one process stepping the same environment with
random actions (one core). Rounds alternate with the bare measurement so machine load hits
both alike; medians, per-core rates and their ratio are printed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("WM_FILTER_NATIVE_LOGS", "1")  # TF's C++ start-up lines filtered, as in the binaries

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np
from bench_evaluate import bare  # benchmarks/ is on sys.path when run as a script


def main() -> None:
    """Parse arguments, run the alternating rounds, print the results."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env_id", default="CarRacingFast-v3")
    p.add_argument("--envs", type=int, default=8)
    p.add_argument("--rollout_len", type=int, default=64)
    p.add_argument("--workers", type=int, default=os.cpu_count())
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--max_steps", type=int, default=1000)
    p.add_argument("--inference_precision", default="auto", choices=["auto", "float32", "bfloat16"])
    a = p.parse_args()

    from data_gen.envpool import EnvPool
    from wm.agents import ppo
    from wm.agents.agent import Agent
    from wm.core.distribute import inference_policy
    from wm.models import actor_critic
    from wm.models.controller import Controller
    from wm.models.mdnrnn import MDNRNN
    from wm.models.vae import ConvVAE
    from wm.training import ppo_update

    dtype = inference_policy(a.inference_precision)
    agent = Agent(ConvVAE(dtype_policy=dtype), MDNRNN(), Controller())
    policy = ppo.PPOPolicy(agent, actor_critic.ActorCritic(agent.z_size + agent.hidden), seed=0)
    trainer = ppo_update.PPOTrainer(policy.model, ppo_update.PPOHyper(), seed=1)
    cores = os.cpu_count()
    ours, base, split = [], [], []
    with EnvPool(a.env_id, a.envs, a.workers, a.max_steps) as pool:
        col = ppo.RolloutCollector(pool, policy, a.max_steps, lambda k: 1000 + k, 0.99, 0.95, 0.1)
        trainer.update(col.collect(4).batch, np.random.default_rng(0))  # warm up: compile, start the workers
        for r in range(a.rounds):
            t0 = time.perf_counter()
            ro = col.collect(a.rollout_len)
            t1 = time.perf_counter()
            trainer.update(ro.batch, np.random.default_rng(r))
            t2 = time.perf_counter()
            total = ro.env_steps / (t2 - t0)
            ours.append(total)
            split.append((t1 - t0, t2 - t1))
            base.append(bare(a.env_id, [(1000 + r, 500)], r)[0])  # one 500-step episode
            print(
                f"round {r}: PPO {total:.0f} env steps/s total ({ro.env_steps} steps: collect "
                f"{t1 - t0:.1f} s, update {t2 - t1:.1f} s); "
                f"bare env {base[-1]:.0f} steps/s on one core"
            )
    o, b = statistics.median(ours), statistics.median(base)
    c, u = (statistics.median(x) for x in zip(*split))
    print(
        f"ppo: {o:.0f} env steps/s total = {o / cores:.0f} per core while training (collect {c:.1f} s "
        f"+ update {u:.1f} s per "
        f"{a.envs * a.rollout_len}-step rollout); bare {a.env_id}: {b:.0f} steps/s per core; "
        f"ratio {o / cores / b:.2f} per core, "
        f"{o / b:.2f} total ({a.envs} envs, {a.workers} workers, {cores} cores, V in {dtype})"
    )


if __name__ == "__main__":
    main()
