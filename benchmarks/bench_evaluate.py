"""Env steps/s per core while evaluating an agent (V + M + C inference included) vs the bare env.

    python benchmarks/bench_evaluate.py --episodes=64 --max_steps=300

Ours: ``wm.agents.agent.run_episodes`` as ``wm.evaluate`` runs it: ``--workers`` environment
processes stepping in lockstep with one batched V + M + C call per step and group in this process, the
paper's model sizes (random weights: speed does not depend on their values). Per core = total
env steps/s divided by the cores used. Bare: one process stepping the same environment with
uniform random actions through the same episodes (seeds and lengths, resets included), so that
both sides draw the same tracks and pay for the same resets and zoom-in frames at episode
starts. Rounds alternate; medians and the ratio are printed.
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("WM_FILTER_NATIVE_LOGS", "1")  # TF's C++ start-up lines filtered, as in the binaries

import numpy as np


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc; NaN elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bare(env_id: str, episodes: list[tuple[int, int]], rng_seed: int) -> tuple[float, float]:
    """(steps/s, CPU ms per step) of one environment in this process playing the given
    (seed, steps) episodes with uniform random actions, resets included."""
    from data_gen import rollout

    env = rollout.make_env(env_id, 1000)
    rng = np.random.default_rng(rng_seed)
    env.reset(seed=0)  # not timed: creating the environment
    total = 0
    t, cpu = time.perf_counter(), time.process_time()
    for seed, steps in episodes:
        env.reset(seed=seed)
        for _ in range(steps):
            total += 1
            _, _, term, trunc, _ = env.step(rng.uniform([-1, 0, 0], [1, 1, 1]).astype(np.float32))
            if term or trunc:
                break
    rate, cpu_ms = total / (time.perf_counter() - t), 1e3 * (time.process_time() - cpu) / total
    env.close()
    return rate, cpu_ms


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env_id", default="CarRacingFast-v3")
    p.add_argument("--episodes", type=int, default=64, help="episodes per round, all in flight at once")
    p.add_argument("--max_steps", type=int, default=500)
    p.add_argument("--workers", type=int, default=os.cpu_count())
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--groups", type=int, default=2)
    p.add_argument("--inference_precision", default="auto", choices=["auto", "float32", "bfloat16"])
    p.add_argument("--inference_threads", type=int, default=0, help="as in wm.evaluate (0: auto)")
    a = p.parse_args()

    from data_gen.envpool import EnvPool
    from wm.agents.agent import Agent, run_episodes
    from wm.core.distribute import inference_policy, set_inference_threads
    from wm.models.controller import Controller
    from wm.models.mdnrnn import MDNRNN
    from wm.models.vae import ConvVAE

    threads = set_inference_threads(min(a.workers, a.episodes), a.inference_threads)  # as wm.evaluate does
    policy = inference_policy(a.inference_precision)
    agent = Agent(ConvVAE(dtype_policy=policy), MDNRNN(), Controller())
    params = np.random.default_rng(0).normal(size=(1, agent.controller.num_params)).astype(np.float32) * 0.1
    cores = os.cpu_count()
    ours, base = [], []
    with EnvPool(a.env_id, a.episodes, a.workers, a.max_steps) as pool:
        # warm up: compile, start the workers and create every slot's environment
        run_episodes(pool, agent, params, [(0, i) for i in range(a.episodes)], 5, groups=a.groups)
        for r in range(a.rounds):
            pids = pool.pids
            w0, m0, t = [cpu_seconds(p) for p in pids], time.process_time(), time.perf_counter()
            res = run_episodes(
                pool,
                agent,
                params,
                [(0, 100 + r * a.episodes + i) for i in range(a.episodes)],
                a.max_steps,
                groups=a.groups,
            )
            steps = sum(x.steps for x in res)
            total = steps / (time.perf_counter() - t)
            main_ms = 1e3 * (time.process_time() - m0) / steps
            workers_ms = 1e3 * sum(cpu_seconds(p) - c for p, c in zip(pids, w0)) / steps
            ours.append(total / cores)
            rate, bare_ms = bare(a.env_id, [(x.seed, x.steps) for x in res], r)
            base.append(rate)
            print(
                f"round {r}: evaluate {total:.0f} steps/s total = {ours[-1]:.0f} per core; bare env "
                f"{rate:.0f} steps/s on one core; "
                f"CPU ms per env step: this process {main_ms:.3f} + workers {workers_ms:.3f}, bare {bare_ms:.3f}",
                flush=True,
            )
    o, b = statistics.median(ours), statistics.median(base)
    print(
        f"evaluate: {o:.0f} env steps/s per core with V+M+C; bare {a.env_id}: {b:.0f} steps/s per core; "
        f"{100 * o / b:.0f}% of bare ({a.episodes} envs in flight, {a.workers} workers, {cores} cores, V in {policy}, "
        f"TF threads: {threads or 'default'})"
    )


if __name__ == "__main__":
    main()
