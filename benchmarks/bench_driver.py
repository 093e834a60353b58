"""The CMA-ES driver's cost per generation, per-worker env steps/s, and the scaling limit they predict.

    python benchmarks/bench_driver.py                # popsize 16, 64, 256, 1024; local processes and Ray
    python benchmarks/bench_driver.py --quick        # fewer popsizes, generations and rounds

Three measured parts, all in one run:

1. **CMA-ES in the driver** (``wm.training.cma_es`` calls pycma directly, so this does too, with
   the same options): ``es.ask()``, ``es.tell()`` for the paper's 867 parameters, and the
   per-generation checkpoint ``train_controller`` writes (``pickle.dumps`` of the state holding
   the CMA-ES object, then ``tfrecords.runtime.fileio.write_bytes_atomic``), mean ms per generation over
   ``--generations`` generations after one untimed one (pycma's eigendecomposition is lazy: the
   mean amortizes it).
2. **Dispatch and result gathering** through the engine the driver uses
   (``wm.agents.workers.WorkerPool``, its engines in ``wm.agents.engines``: local worker processes, and Ray actors on
   ``ray.init(num_cpus=--workers)``): ``popsize x --trials`` jobs of one step each on a tiny
   in-memory environment (registered in each worker, 96x96x3 zero frames) with a do-nothing agent,
   so the time is the driver's and the plumbing's, not the environment's or V + M + C's. Each job
   is still a whole episode to the engine (reset, step, one result back). ``driver CPU`` is this
   process's CPU time during ``WorkerPool.run`` (the serial part); ``wall`` includes the
   workers' trivial work and the pipes/Ray latency.
3. **Per-worker env steps/s with worker-side inference**: ``WorkerPool`` with the paper's
   V + M + C (``bench_layout.RandomAgentSpec``, random weights), CarRacingFast-v3, with 16 and
   with 2 episodes in flight per worker (what the paper's 1,024 episodes give each worker on 64
   and on 512 cores), as env steps per worker CPU second (the workers' CPU from /proc, as in
   ``bench_layout``: the rate of a worker on a core of its own, which a shared machine's wall
   clock does not show) and per wall second. Baseline in the same run: one bare environment in
   this process, random actions, the same episode length, per CPU and per wall second.

The prediction, for the paper's population (64 members x 16 trials = 1,024 episodes of up to
1,000 steps) on C cores::

    generation time = max(driver, workers)
    driver  = ask + tell (CPU) + checkpoint (wall) at popsize 64 + gathering (per episode) x 1,024
              + dispatch (per worker, measured) x C
    workers = ceil(1,024 / C) x 1,000 steps / (per-worker CPU rate, nearest measured episodes in flight)

and env steps/s = 1,024,000 / generation time. Assumptions: one worker per core and the
driver on its own core; environments and inference scale perfectly with cores (no shared
memory bandwidth or turbo effects); every episode lasts all 1,000 steps (no early stop, no
stragglers; a generation waits for its slowest worker); the driver's serial parts add up
(the ``serial`` columns add ask + tell + checkpoint to the workers' time, since
``train_controller`` runs them while the workers wait; ``gen s`` is the max() above); the
per-episode gathering cost is the slope of driver CPU against episodes over the popsizes; the
per-worker dispatch cost is the driver CPU of a run of one one-step job per worker, less those
jobs' gathering, divided by --workers (an upper bound: the whole per-run cost is charged to the
workers), and grows linearly with workers; the network (parameters out, results back, Ray's
object store across machines) and Ray's own daemons are not modeled; pycma's linear algebra
runs with ``OPENBLAS_NUM_THREADS=1`` (the driver's own core) unless the environment sets it.
``train_controller`` caps ``--envs`` at 256 by default and ``WorkerPool`` uses at most ``--envs``
workers: on 512 cores the run needs ``--envs=1024`` (or at least 512) to use every core, which
the prediction assumes.
"""

import argparse
import dataclasses
import math
import os
import pickle
import statistics
import sys
import tempfile
import time

os.environ.setdefault("WM_FILTER_NATIVE_LOGS", "1")  # TF's C++ start-up lines filtered, as in the binaries

# The driver on a core of its own: NumPy's BLAS (pycma's eigendecomposition and updates) on one thread,
# set before NumPy loads. OPENBLAS_NUM_THREADS=2 in the environment measures OpenBLAS's default here
# (a thread per core), which on a busy machine spins and costs several times more.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import gymnasium as gym
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench_layout, for the rate

NUM_PARAMS = 867  # the paper's linear C on [z(32), h(256)] -> 3 actions
TINY_ENV = "BenchDriverTiny-v0"
PAPER_POP, PAPER_TRIALS, PAPER_STEPS = 64, 16, 1000


# ---------------------------------------------------------------- a tiny environment and agent (plumbing only)


class TinyEnv(gym.Env):
    """A gymnasium environment of zero frames: costs next to nothing to reset or step."""

    metadata = {"render_modes": []}

    def __init__(self, **kwargs):
        self.observation_space = gym.spaces.Box(0, 255, (96, 96, 3), np.uint8)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
        self._obs = np.zeros((96, 96, 3), np.uint8)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        return self._obs.copy(), {}

    def step(self, action):
        return self._obs.copy(), 0.0, False, False, {}

    def close(self):
        pass


class NullAgent:
    """The agent surface ``run_episodes`` needs, doing nothing: zero actions, unchanged state."""

    z_size, hidden = 32, 256

    def initial_state(self, n: int):
        return np.zeros((n, self.hidden), np.float32), np.zeros((n, self.hidden), np.float32)

    def act(self, frames, state, params):
        n = len(frames)
        return np.zeros((n, 3), np.float32), state, np.zeros((n, self.z_size), np.float32)


@dataclasses.dataclass(frozen=True)
class TinySpec:
    """Built in each worker: registers the tiny environment there, returns the do-nothing agent."""

    def load(self):
        if TINY_ENV not in gym.registry:
            gym.register(id=TINY_ENV, entry_point=TinyEnv)
        return NullAgent()


# ---------------------------------------------------------------- the parts


def cma_cost(popsize: int, generations: int, tmpdir: str) -> dict:
    """Mean ms per generation of ask, tell and train_controller's checkpoint (pickle + atomic write), wall
    and (ask, tell) CPU time of this process's threads, and the median generation's wall total."""
    import cma

    from tfrecords.runtime import fileio

    es = cma.CMAEvolutionStrategy(np.zeros(NUM_PARAMS), 0.1, {"popsize": popsize, "seed": 1, "verbose": -9})
    rng = np.random.default_rng(0)
    state = {"es": es, "generation": 0, "best_fitness": -np.inf, "best_eval": None, "records": []}
    path = os.path.join(tmpdir, f"cma_state_{popsize}.pkl")
    t = {"ask": [], "tell": [], "checkpoint": []}
    cpu = {"ask": [], "tell": []}
    for g in range(generations + 1):
        c0, t0 = time.process_time(), time.perf_counter()
        sol = es.ask()
        np.stack(sol)  # as train_controller hands the population to the pool
        c1, t1 = time.process_time(), time.perf_counter()
        es.tell(sol, list(rng.normal(size=popsize)))  # fitness values do not change the cost
        c2, t2 = time.process_time(), time.perf_counter()
        state["generation"] = g
        state["records"].append({"generation": g, "mean": 0.0, "sigma": float(es.sigma)})
        state["np_random"] = np.random.get_state()
        fileio.write_bytes_atomic(path, pickle.dumps(state))
        t3 = time.perf_counter()
        if g:  # the first generation is untimed
            t["ask"].append(t1 - t0)
            t["tell"].append(t2 - t1)
            t["checkpoint"].append(t3 - t2)
            cpu["ask"].append(c1 - c0)
            cpu["tell"].append(c2 - c1)
    out = {k: 1e3 * float(np.mean(v)) for k, v in t.items()}  # the mean amortizes the lazy eigendecomposition
    out.update({f"{k}_cpu": 1e3 * float(np.mean(v)) for k, v in cpu.items()})
    out["median"] = 1e3 * statistics.median(x + y + z for x, y, z in zip(t["ask"], t["tell"], t["checkpoint"]))
    out["state_mb"] = os.path.getsize(path) / 1e6
    os.remove(path)
    return out


def plumbing(pool, popsize: int, trials: int) -> tuple[float, float]:
    """(wall ms, driver CPU ms) of one generation of one-step jobs through ``pool``."""
    params = np.random.default_rng(popsize).normal(size=(popsize, NUM_PARAMS)).astype(np.float32)
    jobs = [(m, 1000 + s) for m in range(popsize) for s in range(trials)]
    c0, t0 = time.process_time(), time.perf_counter()
    res = pool.run(params, jobs, 1)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert len(res) == len(jobs) and all(r.steps == 1 for r in res)
    return 1e3 * wall, 1e3 * cpu


def bare_rate(env_id: str, steps: int, seed: int) -> tuple[float, float]:
    """(steps per CPU second, steps per wall second) of one environment in this process, random actions,
    resets included (one episode)."""
    from data_gen import rollout

    env = rollout.make_env(env_id, steps)
    env.reset(seed=0)  # not timed: creating the environment
    rng = np.random.default_rng(seed)
    c, t, n = time.process_time(), time.perf_counter(), 0
    env.reset(seed=seed)
    for _ in range(steps):
        a = rng.uniform([-1, 0, 0], [1, 1, 1]).astype(np.float32)
        _, _, term, trunc, _ = env.step(a)
        n += 1
        if term or trunc:
            break
    out = n / (time.process_time() - c), n / (time.perf_counter() - t)
    env.close()
    return out


def fit_line(x: list[float], y: list[float]) -> tuple[float, float]:
    """(intercept, slope) of the least-squares line y = a + b x."""
    b, a = np.polyfit(np.asarray(x, float), np.asarray(y, float), 1)
    return float(a), float(b)


# ---------------------------------------------------------------- main


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--popsizes", default="16,64,256,1024")
    p.add_argument("--trials", type=int, default=PAPER_TRIALS, help="episodes per member")
    p.add_argument("--generations", type=int, default=8, help="timed CMA-ES generations per popsize")
    p.add_argument("--engines", default="local,ray", help="comma-separated: local, ray")
    p.add_argument("--workers", type=int, default=os.cpu_count())
    p.add_argument("--rounds", type=int, default=3, help="plumbing rounds per popsize and engine (median)")
    p.add_argument("--env_id", default="CarRacingFast-v3", help="for the per-worker rate")
    p.add_argument("--rate_steps", type=int, default=300, help="episode length for the per-worker rate")
    p.add_argument("--rate_in_flight", default="16,2", help="episodes in flight per worker for the rate")
    p.add_argument("--rate_rounds", type=int, default=2)
    p.add_argument("--cores", default="64,512", help="core counts to predict for")
    p.add_argument("--quick", action="store_true", help="popsize 16,64,256, 4 generations, 2 rounds, 1 rate round")
    a = p.parse_args()
    if a.quick:
        a.popsizes, a.generations, a.rounds, a.rate_rounds = "16,64,256", 4, 2, 1
    popsizes = [int(x) for x in a.popsizes.split(",")]
    engines = [x.strip() for x in a.engines.split(",") if x.strip()]
    in_flight = [int(x) for x in a.rate_in_flight.split(",")]
    cores_list = [int(x) for x in a.cores.split(",")]
    if PAPER_POP not in popsizes:
        p.error(f"--popsizes must include the paper's {PAPER_POP}")
    host_cores = os.cpu_count()
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # inherited by the workers (and Ray's): quiet logs

    from wm.agents import workers as wk

    # 1. CMA-ES ask / tell / checkpoint, in this process only
    cma_ms = {}
    with tempfile.TemporaryDirectory() as tmp:
        for pop in popsizes:
            cma_ms[pop] = c = cma_cost(pop, a.generations, tmp)
            print(
                f"cma popsize {pop:5d} ({NUM_PARAMS} params), ms per generation: ask {c['ask']:7.1f} (CPU "
                f"{c['ask_cpu']:7.1f}), tell {c['tell']:7.1f} (CPU {c['tell_cpu']:7.1f}), checkpoint "
                f"{c['checkpoint']:6.1f} ({c['state_mb']:.1f} MB); wall total "
                f"{c['ask'] + c['tell'] + c['checkpoint']:7.1f} "
                f"(median {c['median']:.1f}), model {c['ask_cpu'] + c['tell_cpu'] + c['checkpoint']:7.1f} "
                f"(OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', '')})",
                flush=True,
            )

    # 2. dispatch + gathering, engines alternating within each round
    envs = min(max(popsizes) * a.trials, 256)  # train_controller's default --envs for these populations
    pools = {}
    for name in engines:
        pools[name] = wk.WorkerPool(TinySpec(), TINY_ENV, envs, a.workers, 1, ray_address="local" * (name == "ray"))
    plumb = {(e, pop): [] for e in engines for pop in popsizes}
    n_workers = {name: pool.workers for name, pool in pools.items()}
    small = {e: [] for e in engines}  # one one-step job per worker: the per-run and per-worker costs
    try:
        for pool in pools.values():  # start the workers, make every slot's environment
            plumbing(pool, 16, envs // 16)
        for pop in popsizes:
            for rnd in range(a.rounds):
                for name in engines if rnd % 2 == 0 else engines[::-1]:
                    plumb[(name, pop)].append(plumbing(pools[name], pop, a.trials))
                    small[name].append(plumbing(pools[name], n_workers[name], 1)[1])
            eps = pop * a.trials
            line = []
            for name in engines:
                wall = statistics.median(x[0] for x in plumb[(name, pop)])
                cpu = statistics.median(x[1] for x in plumb[(name, pop)])
                line.append(
                    f"{name}: wall {wall:7.1f} ms ({1e3 * wall / eps:5.1f} us/episode), "
                    f"driver CPU {cpu:7.1f} ms ({1e3 * cpu / eps:5.1f} us/episode)"
                )
            print(f"dispatch+gather popsize {pop:5d} ({eps:6d} one-step episodes): " + "; ".join(line), flush=True)
    finally:
        for pool in pools.values():
            pool.close()
        if "ray" in pools:
            import ray

            ray.shutdown()
    fits = {}
    for name in engines:
        x = [pop * a.trials for pop in popsizes]
        y = [statistics.median(v[1] for v in plumb[(name, pop)]) for pop in popsizes]
        icpt, slope = fit_line(x, y)
        slope = max(slope, 0.0)
        w = n_workers[name]
        one_each = statistics.median(small[name])
        # everything a run costs beyond its episodes, charged to the workers it dispatches to (an upper bound)
        per_worker = max(one_each - slope * w, 0.0) / w
        fits[name] = (per_worker, slope)  # (ms per worker, ms per episode)
        print(
            f"driver CPU ({name}, {w} workers): line over popsizes {icpt:.2f} ms + {1e3 * slope:.1f} us/episode; "
            f"a run of one job per worker {one_each:.2f} ms -> dispatch {per_worker:.2f} ms per worker",
            flush=True,
        )

    # 3. per-worker env steps/s with worker-side inference (paper's V + M + C), and the bare env
    from bench_layout import RandomAgentSpec, cpu_seconds

    from wm.core.distribute import inference_policy

    k_max = max(in_flight)
    rate = {k: [] for k in in_flight}
    rate_wall = {k: [] for k in in_flight}
    bare, bare_wall = [], []
    with wk.WorkerPool(RandomAgentSpec(), a.env_id, a.workers * k_max, a.workers, a.rate_steps) as pool:
        params = np.random.default_rng(0).normal(size=(1, NUM_PARAMS)).astype(np.float32) * 0.1
        pool.run(params, [(0, i) for i in range(a.workers * k_max)], 5)  # load, compile, make the environments
        for rnd in range(a.rate_rounds):
            line = []
            for k in in_flight if rnd % 2 == 0 else in_flight[::-1]:
                jobs = [(0, 5000 + 100 * rnd + i) for i in range(a.workers * k)]
                pids = pool.pids
                w0, t = [cpu_seconds(q) for q in pids], time.perf_counter()
                res = pool.run(params, jobs, a.rate_steps)
                steps = sum(x.steps for x in res)
                rate_wall[k].append(steps / (time.perf_counter() - t) / a.workers)
                rate[k].append(steps / sum(cpu_seconds(q) - c for q, c in zip(pids, w0)))
                line.append(
                    f"{k} in flight/worker {rate[k][-1]:.0f} steps per worker CPU second "
                    f"(wall {rate_wall[k][-1]:.0f} steps/s per worker)"
                )
            b, bw = bare_rate(a.env_id, a.rate_steps, 7000 + rnd)
            bare.append(b)
            bare_wall.append(bw)
            print(f"rate round {rnd}: " + "; ".join(line) + f"; bare env {b:.0f} per CPU second (wall {bw:.0f})")
    rate = {k: statistics.median(v) for k, v in rate.items()}
    rate_wall = {k: statistics.median(v) for k, v in rate_wall.items()}
    bare_med, bare_wall_med = statistics.median(bare), statistics.median(bare_wall)
    print(
        f"per-worker env steps per CPU second (worker-side V+M+C, {inference_policy('auto')} V): "
        + ", ".join(f"{k} in flight {v:.0f} ({v / bare_med:.2f}x bare)" for k, v in rate.items())
        + f"; bare {a.env_id} {bare_med:.0f}. Wall steps/s per worker: "
        + ", ".join(f"{k} in flight {v:.0f} ({v / bare_wall_med:.2f}x bare)" for k, v in rate_wall.items())
        + f"; bare {bare_wall_med:.0f} ({a.workers} workers, {host_cores} cores, {a.rate_steps}-step episodes)",
        flush=True,
    )

    # 4. the prediction for the paper's population
    episodes = PAPER_POP * PAPER_TRIALS
    c = cma_ms[PAPER_POP]
    serial_cma = c["ask_cpu"] + c["tell_cpu"] + c["checkpoint"]
    print(
        f"\npredicted, paper's population ({PAPER_POP} x {PAPER_TRIALS} = {episodes} episodes x {PAPER_STEPS} steps, "
        f"{NUM_PARAMS} params); driver = ask+tell+checkpoint {serial_cma:.0f} ms + gathering + dispatch:"
    )
    print(
        f"{'engine':>6} {'cores':>5} {'eps/worker':>10} {'rate/worker':>11} {'driver ms':>9} {'workers ms':>10} "
        f"{'gen s':>7} {'env steps/s':>11} {'driver/workers':>14} {'bound':>7} {'serial gen s':>12} {'steps/s':>9}"
    )
    for name in engines:
        per_worker, per_episode = fits[name]
        for cores in cores_list:
            k = math.ceil(episodes / cores)
            kr = min(in_flight, key=lambda x: abs(math.log(x / k)))  # the nearest measured in-flight count
            driver = serial_cma + per_episode * episodes + per_worker * cores
            work = 1e3 * k * PAPER_STEPS / rate[kr]
            gen = max(driver, work)
            serial = serial_cma + max(driver - serial_cma, work)  # train_controller: ask, episodes, tell, save
            print(
                f"{name:>6} {cores:5d} {k:10d} {rate[kr]:11.0f} {driver:9.0f} {work:10.0f} {gen / 1e3:7.2f} "
                f"{episodes * PAPER_STEPS / (gen / 1e3):11,.0f} {driver / work:14.3f} "
                + f"{'driver' if driver > work else 'workers':>8} {serial / 1e3:12.2f} "
                f"{episodes * PAPER_STEPS / (serial / 1e3):9,.0f}"
            )
    print(
        "(driver: CPU ms of ask and tell, wall ms of the checkpoint, CPU ms of gathering and dispatch; rate/worker: "
        "env steps per worker CPU second, i.e. on a core of its own, measured with "
        f"{', '.join(map(str, in_flight))} episodes in flight per worker, the nearest "
        "used. gen s = max(driver, workers), the model; serial gen s = ask+tell+checkpoint + max(gathering + "
        "dispatch, workers): train_controller runs ask, tell and the checkpoint while the workers wait)"
    )


if __name__ == "__main__":
    main()
