"""Env steps/s per core: worker-side inference vs central inference (and Ray actors), same run.

    python benchmarks/bench_layout.py --episodes=64 --max_steps=300 --rounds=4
    python benchmarks/bench_layout.py --layouts=workers,ray --ray_address=local   # Ray overhead

central: ``wm.agents.workers.CentralRunner``, today's ``wm.evaluate``/``wm.train_controller`` path:
``--workers`` environment processes send every frame to this process, which runs V + M + C for
all. workers: ``wm.agents.workers.WorkerPool``, each of ``--workers`` processes steps its share
of the environments and runs its own V + M + C. ray: the same workers as Ray actors. Paper
model sizes with random weights (speed does not depend on their values), the same jobs for
every layout in a round, layouts alternating within each round, rounds with fresh tracks.
Per core = total env steps/s / cores. The CPU columns (ms per env step, from /proc) split the
cost between this process and the workers.
"""

import argparse
import dataclasses
import os
import statistics
import time

os.environ.setdefault("WM_FILTER_NATIVE_LOGS", "1")  # TF's C++ start-up lines filtered, as in the binaries

import numpy as np
from bench_evaluate import cpu_seconds  # benchmarks/ is on sys.path when run as a script


@dataclasses.dataclass(frozen=True)
class RandomAgentSpec:
    """The paper's V + M + C with random weights, built in whichever process loads it."""

    precision: str = "auto"

    def load(self):
        import keras

        from wm.agents.agent import Agent
        from wm.core.distribute import inference_policy
        from wm.models.controller import Controller
        from wm.models.mdnrnn import MDNRNN
        from wm.models.vae import ConvVAE

        keras.utils.set_random_seed(0)  # the same weights in every process: the layouts' returns must agree
        return Agent(ConvVAE(dtype_policy=inference_policy(self.precision)), MDNRNN(), Controller())


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env_id", default="CarRacingFast-v3")
    p.add_argument("--episodes", type=int, default=64, help="episodes per round and layout")
    p.add_argument("--envs", type=int, default=0, help="environments in flight (0: --episodes)")
    p.add_argument("--rows", type=int, default=1, help="parameter rows (CMA-ES members) the episodes cycle over")
    p.add_argument("--max_steps", type=int, default=300)
    p.add_argument("--workers", type=int, default=os.cpu_count())
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--layouts", default="central,workers", help="comma-separated: central, workers, ray")
    p.add_argument("--ray_address", default="local", help="for the ray layout (local: a one-machine cluster)")
    p.add_argument("--inference_precision", default="auto", choices=["auto", "float32", "bfloat16"])
    a = p.parse_args()

    from wm.agents import workers as wk
    from wm.core.distribute import inference_policy, set_inference_threads

    layouts = [x.strip() for x in a.layouts.split(",") if x.strip()]
    envs = a.envs or a.episodes
    cores = os.cpu_count()
    threads = set_inference_threads(min(a.workers, envs))  # as wm.evaluate does: one thread beside busy workers
    spec = RandomAgentSpec(a.inference_precision)
    runners = {}
    for name in layouts:
        if name == "central":
            runners[name] = wk.CentralRunner(spec.load(), a.env_id, envs, a.workers, a.max_steps)
        else:
            ray = a.ray_address if name == "ray" else ""
            runners[name] = wk.WorkerPool(spec, a.env_id, envs, a.workers, a.max_steps, ray_address=ray)
    num_params = 867
    params = np.random.default_rng(0).normal(size=(a.rows, num_params)).astype(np.float32) * 0.1
    warm = [(i % a.rows, i) for i in range(envs)]
    for r in runners.values():  # compile, start the workers, create every slot's environment
        r.run(params, warm, 5)
    rates = {k: [] for k in runners}
    try:
        for rnd in range(a.rounds):
            jobs = [(i % a.rows, 1000 + rnd * a.episodes + i) for i in range(a.episodes)]
            order = list(runners) if rnd % 2 == 0 else list(runners)[::-1]
            line, ref = [], None
            for name in order:
                runner = runners[name]
                pids = runner.pids
                w0, m0, t = [cpu_seconds(q) for q in pids], time.process_time(), time.perf_counter()
                res = runner.run(params, jobs, a.max_steps)
                wall = time.perf_counter() - t
                steps = sum(x.steps for x in res)
                rets = [x.ret for x in res]
                if ref is None:
                    ref = rets
                elif not np.allclose(rets, ref, atol=1e-3):
                    line.append("(returns differ between layouts!)")
                main_ms = 1e3 * (time.process_time() - m0) / steps
                work_ms = 1e3 * sum(cpu_seconds(q) - c for q, c in zip(pids, w0)) / steps
                rates[name].append(steps / wall / cores)
                line.append(
                    f"{name} {rates[name][-1]:.0f}/core (CPU ms/step: driver {main_ms:.3f} + workers {work_ms:.3f})"
                )
            print(f"round {rnd}: " + "; ".join(line), flush=True)
    finally:
        for r in runners.values():
            r.close()
    med = {k: statistics.median(v) for k, v in rates.items()}
    base = layouts[0]
    print(
        "median env steps/s per core: "
        + ", ".join(f"{k} {v:.0f}" for k, v in med.items())
        + "; "
        + ", ".join(f"{k}/{base} {med[k] / med[base]:.3f}" for k in med if k != base)
        + f" ({a.episodes} episodes x {a.max_steps} steps, {envs} envs in flight, {a.rows} parameter rows, "
        f"{a.workers} workers, {cores} cores, V in {inference_policy(a.inference_precision)}, "
        f"driver TF threads: {threads or 'default'})"
    )


if __name__ == "__main__":
    main()
