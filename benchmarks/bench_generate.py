"""Data generation overhead: data_gen's per-episode pipeline against a bare gymnasium loop.

    python benchmarks/bench_generate.py --env_id=CarRacing-v3 --episodes=3

One process (= one worker). Bare: reset, then step the same Brownian policy, nothing else.
Ours: data_gen's episode loop plus frame preprocessing, tf.train.Example encoding and GZIP
shard writing. Episodes alternate between the two so machine noise hits both.
"""

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from data_gen import policies, rollout  # noqa: E402
from tfrecords import writer  # noqa: E402


def bare_episode(env, policy, index, max_steps):
    env_seed, rng = rollout.episode_seeds(0, index)
    obs, _ = env.reset(seed=env_seed)
    policy.reset(rng)
    for n in range(1, max_steps + 1):
        obs, _, term, trunc, _ = env.step(policy.act(obs))
        if term or trunc:
            break
    return n


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env_id", default="CarRacing-v3")
    p.add_argument("--episodes", type=int, default=3, help="episodes per side")
    p.add_argument("--max_steps", type=int, default=1000)
    a = p.parse_args()
    env = rollout.make_env(a.env_id, a.max_steps)
    policy = policies.make_policy("brownian", env.action_space)
    bare, ours = [], []
    with tempfile.TemporaryDirectory() as out:
        plans = writer.plan_shards(a.episodes, 1, "bench")
        run = writer.ShardedRun(out, "rollouts", {"bench": True}, plans)
        run.prepare()
        for i, plan in enumerate(plans):
            t = time.perf_counter()
            n = bare_episode(env, policy, i, a.max_steps)
            bare.append(n / (time.perf_counter() - t))
            t = time.perf_counter()
            steps = []

            def episodes():
                env_seed, rng = rollout.episode_seeds(0, i)
                ep = rollout.run_episode(env, policy, env_seed, rng, a.max_steps)
                steps.append(len(ep))
                yield ep

            writer.write_shard(out, plan, episodes())
            ours.append(steps[0] / (time.perf_counter() - t))
            print(f"episode {i}: bare {bare[-1]:.0f} steps/s, data_gen {ours[-1]:.0f} steps/s")
    b, o = statistics.median(bare), statistics.median(ours)
    print(f"data_gen: {o:.0f} env steps/s per worker; bare gymnasium loop: {b:.0f} steps/s; "
          f"overhead {100 * (1 - o / b):.1f}% ({a.env_id}, {a.max_steps}-step episodes)")


if __name__ == "__main__":
    main()
