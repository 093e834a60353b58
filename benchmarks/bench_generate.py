"""Data generation overhead: data_gen's per-episode pipeline against a bare gymnasium loop.

    python benchmarks/bench_generate.py --env_id=CarRacing-v3 --episodes=3

One process (= one worker). Bare: reset, then step the same Brownian policy, nothing else.
Ours: data_gen's episode loop plus frame preprocessing, tf.train.Example encoding and GZIP
shard writing, with each of --writers ("isal": ISA-L level 3, the default when installed;
"tf": TensorFlow's zlib level 6). Episodes alternate between all of them so machine noise hits
each; the medians are reported, with the shard bytes per frame.
"""

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("WM_FILTER_NATIVE_LOGS", "1")  # TF's C++ start-up lines filtered, as in the binaries

from rounds import latest, medians  # benchmarks/ is on sys.path when run as a script

from data_gen import policies, rollout
from tfrecords import writer


def bare_episode(env, policy, index, max_steps):
    env_seed, rng = rollout.episode_seeds(0, index)
    obs, _ = env.reset(seed=env_seed)
    policy.reset(rng)
    n = 0
    while n < max_steps:
        n += 1
        obs, _, term, trunc, _ = env.step(policy.act(obs))
        if term or trunc:
            break
    return n


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env_id", default="CarRacing-v3")
    p.add_argument("--episodes", type=int, default=3, help="episodes per side")
    p.add_argument("--max_steps", type=int, default=1000)
    p.add_argument("--writers", default="isal,tf", help="shard writers to time, comma-separated")
    a = p.parse_args()
    env = rollout.make_env(a.env_id, a.max_steps)
    policy = policies.make_policy("brownian", env.action_space)
    kinds = [k for k in a.writers.split(",") if k]
    bare, ours, size = [], {k: [] for k in kinds}, {k: [] for k in kinds}
    with tempfile.TemporaryDirectory() as out:
        for i in range(a.episodes):
            t = time.perf_counter()
            n = bare_episode(env, policy, i, a.max_steps)
            bare.append(n / (time.perf_counter() - t))
            for kind in kinds:
                plan = writer.ShardPlan(i, a.episodes, (i,), f"bench-{kind}")
                run = writer.ShardedRun(out, "rollouts", {"bench": True}, [plan])
                run.prepare()
                steps = []

                def episodes(i=i, steps=steps):
                    env_seed, rng = rollout.episode_seeds(0, i)
                    ep = rollout.run_episode(env, policy, env_seed, rng, a.max_steps)
                    steps.append(len(ep))
                    yield ep

                t = time.perf_counter()
                stats = writer.write_shard(out, plan, episodes(), writer=kind)
                ours[kind].append(steps[0] / (time.perf_counter() - t))
                size[kind].append(stats["bytes"] / stats["frames"])
            print(f"episode {i}: bare {bare[-1]:.0f} steps/s, " + latest("data_gen", kinds, ours, ".0f"))
    for k, o, b in medians(bare, kinds, ours):
        print(
            f"data_gen[{k}]: {o:.0f} env steps/s per worker; bare gymnasium loop: {b:.0f} steps/s; "
            f"overhead {100 * (1 - o / b):.1f}%; {statistics.mean(size[k]):.0f} shard bytes/frame "
            f"({a.env_id}, {a.max_steps}-step episodes)"
        )


if __name__ == "__main__":
    main()
