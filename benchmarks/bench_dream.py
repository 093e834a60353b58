"""Dream steps/s of ``wm.agents.dream.DreamEnv`` against the real environment's, and their FLOP bound, same run.

    python benchmarks/bench_dream.py                     # the paper's population: 64 x 16 rows, 1000 steps
    python benchmarks/bench_dream.py --rows=64 --max_steps=50 --env_steps=200 --rounds=1 --real_episodes=0

Dream: one ``DreamEnv.rollout`` call plays ``--rows`` episodes at once (the paper's CMA-ES generation:
64 members x 16 trials = 1024 rows, each row its own controller parameters, 16 worlds shared by 64
rows each) with the paper's M (LSTM 256, 5 Gaussians per latent dimension, z 32, reward and terminal
heads) and C (linear on [z, h], 867 parameters), untrained, with the terminal head's bias at -20 so
that no episode ends before ``--max_steps`` (checked and printed). Dream steps/s = rows x steps played
/ seconds of the call, timed after a warm-up call of the same shapes (tracing and XLA compilation are
not timed), without XLA and with it (``jit_compile``).

Baseline: the bare stock ``gymnasium.make("CarRacing-v3")`` in this process (one core), uniform random
actions, resets included when episodes end. Rounds alternate dream without XLA, dream with XLA, env,
and a 2048 x 2048 float32 ``tf.matmul`` (the CPU's practical matmul bound); medians are printed.

FLOPs per dream step (one row) are counted from the matmuls alone (2 per multiply-add): the LSTM's
x @ W [Z + A, 4H] and h @ U [H, 4H], the mixture head [H, 3 K Z], the reward and terminal heads
[H, 1] each, the controller [Z + H, 3]; biases, activations, sampling and the loop's bookkeeping are
elementwise and not counted.

One generation: the dream's is one call (measured); the real environment's is extrapolated from
``benchmarks/bench_evaluate.py`` run here once after the rounds (V + M + C acting in
``--real_episodes`` environments on all cores, ``wm.train_controller``'s way), or, with
``--real_episodes=0``, from the bare stock env's rate times the cores (an optimistic bound).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time

os.environ.setdefault("WM_FILTER_NATIVE_LOGS", "1")  # TF's C++ start-up lines filtered, as in the binaries

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import gymnasium as gym
import numpy as np

__import__("tfrecords")  # installs that filter now: TensorFlow loads below, before any wm import

import tensorflow as tf
from rounds import latest, medians  # benchmarks/ is on sys.path when run as a script

from wm.agents.dream import DreamEnv
from wm.models.controller import Controller
from wm.models.mdnrnn import MDNRNN

POPSIZE, TRIALS = 64, 16  # the paper's CMA-ES population: 64 members x 16 episodes each
Z, A, H, K = 32, 3, 256, 5  # the paper's M: z, action, LSTM units, mixtures per latent dimension
TERMINAL_BIAS = -20.0  # untrained M: no episode ends before max_steps
MATMUL_N, MATMUL_REPEATS = 2048, 10
VARIANTS = ("plain", "xla")


def flops_per_step() -> dict[str, int]:
    """Matmul FLOPs of one dream step of one row (2 per multiply-add)."""
    ctrl = Controller(input_dim=Z + H)
    return {
        "LSTM x @ W [35 x 1024]": 2 * (Z + A) * 4 * H,
        "LSTM h @ U [256 x 1024]": 2 * H * 4 * H,
        "mixture head [256 x 480]": 2 * H * 3 * K * Z,
        "reward head [256 x 1]": 2 * H,
        "terminal head [256 x 1]": 2 * H,
        "controller [288 x 3]": 2 * ctrl.input_dim * 3,
    }


def peak_gflops() -> tuple[float | None, str]:
    """The CPU's theoretical float32 peak from /proc/cpuinfo: (GFLOP/s or None, how it was derived)."""
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return None, "no /proc/cpuinfo"
    first = text.split("\n\n")[0]
    field = lambda k: (re.search(rf"^{k}\s*:\s*(.*)$", first, re.M) or [None, ""])[1]  # noqa: E731
    flags, vendor, family, model = field("flags").split(), field("vendor_id"), field("cpu family"), field("model name")
    mhz = float(field("cpu MHz") or 0)
    if not mhz:
        return None, "no cpu MHz in /proc/cpuinfo"
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    fma = 2  # FMA pipes per core: an assumption (not in cpuinfo); 2 x 512-bit on Zen 5 (family 26), most Xeons
    cores = os.cpu_count()
    peak = cores * fma * lanes * 2 * mhz / 1e3
    isa = "AVX-512" if lanes == 16 else "AVX2" if lanes == 8 else "SSE"
    how = (
        f"{cores} cores x {fma} FMA units (assumed) x {lanes} float32 lanes ({isa}) x 2 FLOPs x {mhz / 1e3:.2f} GHz "
        f"(cpuinfo's MHz; a VM's nominal clock, boost unknown); {model}, {vendor} family {family}"
    )
    return peak, how


class Dream:
    """One DreamEnv and its fixed inputs; ``run()`` plays one timed rollout and returns dream steps/s."""

    def __init__(self, m: MDNRNN, rows: int, max_steps: int, jit: bool) -> None:
        self.env = DreamEnv(m, Controller(input_dim=Z + H), max_steps, temperature=1.0, jit_compile=jit)
        rng = np.random.default_rng(0)
        self.params = (0.1 * rng.normal(size=(rows, self.env.controller.num_params))).astype(np.float32)
        self.starts = rng.normal(size=(TRIALS, Z)).astype(np.float32)
        self.worlds = np.arange(rows, dtype=np.int32) % TRIALS  # 16 worlds, each shared by rows / 16 members
        self.rows, self.max_steps, self.calls = rows, max_steps, 0
        t = time.perf_counter()
        self.last = self.env.rollout(self.params, self.starts, self.worlds, seed=0)  # warm up: trace, compile
        self.warmup = time.perf_counter() - t

    def run(self) -> float:
        self.calls += 1
        t = time.perf_counter()
        self.last = self.env.rollout(self.params, self.starts, self.worlds, seed=self.calls)
        return int(self.last.steps.sum()) / (time.perf_counter() - t)


class Env:
    """The stock CarRacing-v3, stepped with uniform random actions; ``run(n)`` returns steps/s, resets included."""

    def __init__(self) -> None:
        self.env = gym.make("CarRacing-v3")
        self.rng = np.random.default_rng(0)
        self.episodes = 0
        self.env.reset(seed=0)  # not timed: creating the environment

    def run(self, n: int) -> float:
        actions = self.rng.uniform([-1, 0, 0], [1, 1, 1], size=(n, 3)).astype(np.float32)
        t = time.perf_counter()
        for a in actions:
            _, _, term, trunc, _ = self.env.step(a)
            if term or trunc:
                self.episodes += 1
                self.env.reset(seed=self.episodes)
        return n / (time.perf_counter() - t)


def matmul_gflops() -> float:
    """GFLOP/s of MATMUL_REPEATS float32 MATMUL_N x MATMUL_N matmuls (TensorFlow's default CPU kernel)."""
    x = tf.random.normal([MATMUL_N, MATMUL_N], seed=0)
    y = tf.random.normal([MATMUL_N, MATMUL_N], seed=1)
    f = tf.function(lambda a, b: tf.reduce_sum(tf.matmul(a, b)))
    float(f(x, y))  # warm up
    t = time.perf_counter()
    for _ in range(MATMUL_REPEATS):
        float(f(x, y))
    return MATMUL_REPEATS * 2 * MATMUL_N**3 / (time.perf_counter() - t) / 1e9


def real_agent_rate(episodes: int, max_steps: int) -> tuple[float, int, str]:
    """(total env steps/s, steps measured, its output) of benchmarks/bench_evaluate.py, one round, in a subprocess
    (it sets TensorFlow's thread pools, which this process has fixed already)."""
    from data_gen.rollout import DEFAULT_ENV_ID

    script = os.path.join(ROOT, "benchmarks", "bench_evaluate.py")
    cmd = [sys.executable, script, f"--episodes={episodes}", f"--max_steps={max_steps}", "--rounds=1"]
    cmd.append(f"--env_id={DEFAULT_ENV_ID}")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))}
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    total = float(re.search(r"round 0: evaluate (\d+) steps/s total", out)[1])
    return total, episodes * max_steps, out.strip()


def busy() -> int:
    """How many pytest processes are running on the machine now (other jobs sharing the cores)."""
    return len(subprocess.run(["pgrep", "-f", "pytest"], capture_output=True, text=True).stdout.split())


def fmt_time(seconds: float) -> str:
    return f"{seconds:,.1f} s" if seconds < 120 else f"{seconds / 60:,.1f} min"


def main() -> None:
    """Parse arguments, run the alternating rounds, print the results."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=POPSIZE * TRIALS, help="dream episodes per call (population x trials)")
    p.add_argument("--max_steps", type=int, default=1000, help="steps per dream episode")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--env_steps", type=int, default=2000, help="stock env steps per round")
    p.add_argument(
        "--real_episodes",
        type=int,
        default=64,
        help="environments in flight for bench_evaluate.py's V+M+C rate (0: use the bare env x cores bound)",
    )
    p.add_argument("--real_max_steps", type=int, default=300, help="steps per bench_evaluate.py episode")
    a = p.parse_args()
    print(f"cores: {os.cpu_count()}; TensorFlow {tf.__version__}; pytest processes running: {busy()}", flush=True)

    m = MDNRNN(z_size=Z, action_size=A, hidden=H, mixtures=K, reward_head=True, terminal_head=True)
    m.terminal.bias.assign([TERMINAL_BIAS])
    dreams = {k: Dream(m, a.rows, a.max_steps, jit) for k, jit in zip(VARIANTS, (False, True))}
    env = Env()
    rates: dict[str, list[float]] = {k: [] for k in VARIANTS}
    base, gemm = [], []
    for r in range(a.rounds):
        for k in VARIANTS:
            rates[k].append(dreams[k].run())
        base.append(env.run(a.env_steps))
        gemm.append(matmul_gflops())
        print(
            f"round {r}: {latest('dream', VARIANTS, rates, ',.0f')} steps/s; stock env {base[-1]:.0f} steps/s; "
            f"matmul {gemm[-1]:.1f} GFLOP/s; pytest processes running: {busy()}",
            flush=True,
        )

    for k, d in dreams.items():
        steps, ended = d.last.steps, d.last.terminated
        print(
            f"dream[{k}]: {d.rows} rows, steps per row {steps.min()}-{steps.max()} of {d.max_steps}, "
            f"{int(ended.sum())} ended by M's terminal head (bias {TERMINAL_BIAS:g}: none should); "
            f"warm-up call (tracing{', XLA compilation' if d.env.jit_compile else ''} and one rollout) {d.warmup:.1f} s"
        )
    env_rate = statistics.median(base)
    dream_rate = {}
    for k, d, b in medians(base, VARIANTS, rates):
        dream_rate[k] = d
        print(f"dream[{k}]: {d:,.0f} dream steps/s (2 cores); stock CarRacing-v3: {b:.0f} steps/s (1 core); "
              f"ratio {d / b:,.0f}x (target >= 100x)")  # fmt: skip
    fast, slow = sorted(VARIANTS, key=lambda k: -dream_rate[k])
    print(f"faster: dream[{fast}], {dream_rate[fast] / dream_rate[slow]:.2f}x dream[{slow}]")

    flops = flops_per_step()
    per_step = sum(flops.values())
    print("matmul FLOPs per dream step (one row): " + ", ".join(f"{k} {v:,}" for k, v in flops.items()))
    print(f"  total {per_step:,} FLOPs per dream step (elementwise ops not counted)")
    practical = max(gemm)
    print(
        f"practical bound: {practical:.1f} GFLOP/s ({MATMUL_N} x {MATMUL_N} float32 tf.matmul, best round; "
        f"median {statistics.median(gemm):.1f})"
    )
    peak, how = peak_gflops()
    print(f"theoretical peak: {f'{peak:.1f} GFLOP/s' if peak else 'unknown'} ({how})")
    if peak and practical > peak:
        ghz = practical / (peak / float(re.search(r"x ([\d.]+) GHz", how)[1]))
        print(f"  the matmul beats that peak: the cores run at >= {ghz:.2f} GHz under load (or have more FMA units)")
    for k in VARIANTS:
        g = per_step * dream_rate[k] / 1e9
        frac = f", {100 * g / peak:.1f}% of the theoretical peak" if peak else ""
        print(f"dream[{k}]: {g:.1f} GFLOP/s achieved, {100 * g / practical:.1f}% of the practical bound{frac}")

    gen_steps = POPSIZE * TRIALS * 1000
    dream_gen = a.rows * a.max_steps / dream_rate[fast]
    scaled = "" if (a.rows, a.max_steps) == (POPSIZE * TRIALS, 1000) else " (scaled from the measured call)"
    dream_gen *= gen_steps / (a.rows * a.max_steps)
    print(f"one generation ({POPSIZE} x {TRIALS} episodes x 1000 steps = {gen_steps:,} steps):")
    print(f"  dream[{fast}]: {fmt_time(dream_gen)}{scaled}")
    if a.real_episodes:
        total, n, out = real_agent_rate(a.real_episodes, a.real_max_steps)
        print("  " + out.replace("\n", "\n  ") + f"\n  pytest processes running after it: {busy()}")
        what = (
            f"extrapolated from up to {n:,} measured steps at {total:.0f} steps/s (bench_evaluate.py: V+M+C, "
            f"{a.real_episodes} envs in flight, all cores)"
        )
    else:
        total = env_rate * os.cpu_count()
        what = (
            f"optimistic bound: the bare stock env's {env_rate:.0f} steps/s x {os.cpu_count()} cores = {total:.0f} "
            f"steps/s, without V+M+C"
        )
    real_gen = gen_steps / total
    print(f"  real env: {fmt_time(real_gen)} if every episode runs 1000 steps ({what})")
    print(f"  real / dream: {real_gen / dream_gen:,.0f}x")


if __name__ == "__main__":
    main()
