"""Benchmark ``CarRacingFast-v3`` against gymnasium's stock ``CarRacing-v3``.

Usage::

    python benchmarks/bench_fast_env.py [--steps N] [--block B] [--seed S]

Both environments run in this one process (so on one core), with the same
seeded random actions.  Measurements are interleaved in blocks of ``B``
steps (fast, stock, fast, stock, ...), so that load from other processes on
the machine hits both alike.  Prints the steps/s of each and their ratio.
Episode resets are not timed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import gymnasium as gym
import numpy as np

from data_gen.fast_car_racing import ENV_ID, register


class _Runner:
    """Steps one environment with its own seeded action stream."""

    def __init__(self, env_id: str, seed: int) -> None:
        self.env = gym.make(env_id)
        self.rng = np.random.default_rng(seed)
        self.seed = seed
        self.episode = 0
        self.env.reset(seed=seed)
        self.steps = 0
        self.seconds = 0.0

    def run(self, n: int) -> None:
        """Take ``n`` timed steps (resets in between are not timed)."""
        env, rng = self.env, self.rng
        actions = rng.uniform([-1.0, 0.0, 0.0], [1.0, 1.0, 1.0], size=(n, 3))
        actions = actions.astype(np.float32)
        for a in actions:
            t0 = time.perf_counter()
            _, _, terminated, truncated, _ = env.step(a)
            self.seconds += time.perf_counter() - t0
            self.steps += 1
            if terminated or truncated:
                self.episode += 1
                env.reset(seed=self.seed + self.episode)


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, run the interleaved benchmark and print results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2000, help="steps per env")
    parser.add_argument("--block", type=int, default=50, help="steps per turn")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    register()
    fast = _Runner(ENV_ID, args.seed)
    stock = _Runner("CarRacing-v3", args.seed)
    done = 0
    while done < args.steps:
        n = min(args.block, args.steps - done)
        fast.run(n)
        stock.run(n)
        done += n
    f_sps = fast.steps / fast.seconds
    s_sps = stock.steps / stock.seconds
    print(f"steps per env: {args.steps} (interleaved blocks of {args.block})")
    print(f"stock CarRacing-v3     : {s_sps:8.1f} steps/s")
    print(f"fast  {ENV_ID}: {f_sps:8.1f} steps/s")
    print(f"speed-up (fast/stock)  : {f_sps / s_sps:8.2f}x")


if __name__ == "__main__":
    main()
